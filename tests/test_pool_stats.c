/* What a pool tells about itself: mp_pool_get_stats (tasks and map items
 * done and failed, restarts, queued and running) and mp_pool_worker_pid,
 * on process and thread pools (MPI pools: the pool contract). */
// labels: unit
#include <mproc.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "mp_test.h"
#include "test_pool_common.h"

static mp_pool *make(mp_pool_kind kind, unsigned workers)
{
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = workers, .kind = kind}), 0);
    return p;
}

static mp_pool_stats stats(mp_pool *p)
{
    mp_pool_stats st;
    mp_expect_rc(mp_pool_get_stats(p, &st), 0);
    return st;
}

static void finish(mp_pool *p)
{
    mp_expect_rc(mp_pool_close(p), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(30)), 0);
    mp_pool_free(p);
}

/* Tasks and map items counted as they end, failed ones in both totals. */
static void counts_tasks_and_items(mp_pool_kind kind)
{
    mp_pool *p = make(kind, 2);
    mp_pool_stats st = stats(p);
    cr_assert_eq(st.workers, 2);
    cr_assert_eq(st.tasks_done, 0);
    cr_assert_eq(st.tasks_failed, 0);
    for (int i = 0; i < 30; i++)
        mp_expect_rc(mp_pool_apply(p, run_op, &(task_arg){.op = OP_SQUARE, .value = i},
                                   sizeof(task_arg), NULL, NULL),
                     0);
    for (int i = 0; i < 4; i++)
        mp_expect_rc(mp_pool_apply(p, run_op, &(task_arg){.op = OP_FAIL, .value = 5},
                                   sizeof(task_arg), NULL, NULL),
                     MP_ETASK);
    st = stats(p);
    cr_assert_eq(st.tasks_done, 34);
    cr_assert_eq(st.tasks_failed, 4);

    enum { N = 10000 };
    int *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
    for (int i = 0; i < N; i++)
        in[i] = i % 1000 == 7 ? ITEM_FAIL : i; /* 10 fail */
    mp_expect_rc(mp_pool_map(p, map_item, in, N, sizeof *in, out, sizeof *out, 64), MP_ETASK);
    st = stats(p);
    cr_assert_eq(st.tasks_done, 34 + N, "%llu", (unsigned long long)st.tasks_done);
    cr_assert_eq(st.tasks_failed, 4 + 10, "%llu", (unsigned long long)st.tasks_failed);
    /* imap: each item once, as it ends, before the iterator gives it */
    mp_iter *it;
    mp_expect_rc(mp_pool_imap(p, map_item, in, N, sizeof *in, sizeof *out, 100, true, &it), 0);
    int v, got = 0;
    size_t idx;
    int rc;
    while ((rc = mp_iter_next(it, &v, &idx, MP_TMO(30))) != MP_EDONE) {
        cr_assert(rc == 0 || rc == MP_ETASK, "%s", mp_errname(rc));
        got++;
    }
    mp_iter_free(it);
    cr_assert_eq(got, N);
    st = stats(p);
    cr_assert_eq(st.tasks_done, 34 + 2 * N);
    cr_assert_eq(st.tasks_failed, 4 + 20);
    free(in);
    free(out);
    finish(p);
}

Test(pool_stats, counts_tasks_and_items, .timeout = MP_TMO(60))
{
    counts_tasks_and_items(MP_POOL_PROCESS);
}

Test(pool_stats, counts_tasks_and_items_threads, .timeout = MP_TMO(60))
{
    counts_tasks_and_items(MP_POOL_THREAD);
}

/* Queued and running: both workers held, five more behind them. */
static void queued_and_running(mp_pool_kind kind)
{
    mp_pool *p = make(kind, 2);
    mp_event *ev;
    mp_expect_rc(mp_event_new(&ev), 0);
    mp_result *held[2], *rs[5];
    for (int i = 0; i < 2; i++)
        mp_expect_rc(submit_running(p, ev, &held[i]), 0);
    for (int i = 0; i < 5; i++)
        mp_expect_rc(submit(p, OP_SQUARE, i, NULL, NULL, &rs[i]), 0);
    mp_pool_stats st = stats(p);
    cr_assert_eq(st.running, 2);
    cr_assert_eq(st.queued, 5);
    mp_expect_rc(mp_event_set(ev), 0);
    mp_expect_rc(mp_result_wait_all(held, 2, MP_TMO(30)), 0);
    mp_expect_rc(mp_result_wait_all(rs, 5, MP_TMO(30)), 0);
    /* A worker leaves its task a moment after the task's end is seen. */
    double end = mp_test_now() + 10;
    while (((st = stats(p)).running || st.queued) && mp_test_now() < end)
        sched_yield();
    cr_assert_eq(st.running, 0);
    cr_assert_eq(st.queued, 0);
    cr_assert_eq(st.tasks_done, 7);
    for (int i = 0; i < 2; i++)
        mp_result_free(held[i]);
    for (int i = 0; i < 5; i++)
        mp_result_free(rs[i]);
    mp_event_free(ev);
    finish(p);
}

Test(pool_stats, queued_and_running, .timeout = MP_TMO(60)) { queued_and_running(MP_POOL_PROCESS); }

Test(pool_stats, queued_and_running_threads, .timeout = MP_TMO(60))
{
    queued_and_running(MP_POOL_THREAD);
}

/* More queued than the ring holds: the pending ones count too. */
Test(pool_stats, queued_counts_pending, .timeout = MP_TMO(60))
{
    enum { N = 20000 };
    mp_pool *p = make(MP_POOL_THREAD, 1);
    mp_event *ev;
    mp_expect_rc(mp_event_new(&ev), 0);
    mp_result *held;
    mp_expect_rc(submit_running(p, ev, &held), 0);
    for (int i = 0; i < N; i++)
        mp_expect_rc(submit(p, OP_SQUARE, i, NULL, NULL, NULL), 0);
    mp_pool_stats st = stats(p);
    cr_assert_eq(st.queued, N);
    cr_assert_eq(st.running, 1);
    mp_expect_rc(mp_event_set(ev), 0);
    mp_expect_rc(mp_result_wait(held, MP_TMO(30)), 0);
    mp_result_free(held);
    finish(p); /* join: every task has run */
    mp_event_free(ev);
}

/* Worker pids: each worker's, as the task sees it; a crashed worker's slot
 * gets another pid, and the replacement is counted. */
Test(pool_stats, worker_pids_and_restarts, .timeout = MP_TMO(60))
{
    mp_pool *p = make(MP_POOL_PROCESS, 2);
    /* Started asynchronously: wait until both have pids. */
    double end = mp_test_now() + 20;
    while ((mp_pool_worker_pid(p, 0) < 0 || mp_pool_worker_pid(p, 1) < 0) && mp_test_now() < end)
        sched_yield();
    pid_t a = mp_pool_worker_pid(p, 0), b = mp_pool_worker_pid(p, 1);
    cr_assert_gt(a, 0);
    cr_assert_gt(b, 0);
    cr_assert_neq(a, b);
    cr_assert_neq(a, getpid());
    mp_expect_rc(mp_pool_worker_pid(p, 2), -EINVAL);
    mp_expect_rc(mp_pool_worker_pid(NULL, 0), -EINVAL);
    for (int i = 0; i < 20; i++) {
        void *res;
        mp_expect_rc(mp_pool_apply(p, run_op, &(task_arg){.op = OP_PID}, sizeof(task_arg), &res,
                                   NULL),
                     0);
        pid_t w = *(int *)res;
        free(res);
        cr_assert(w == a || w == b, "task ran in %d, workers are %d and %d", (int)w, (int)a,
                  (int)b);
    }
    cr_assert_eq(stats(p).worker_restarts, 0);
    /* One crash: its worker is replaced. */
    mp_expect_rc(mp_pool_apply(p, run_op, &(task_arg){.op = OP_SEGV}, sizeof(task_arg), NULL, NULL),
                 MP_EWORKER);
    end = mp_test_now() + 20;
    while (stats(p).worker_restarts < 1 && mp_test_now() < end)
        sched_yield();
    mp_pool_stats st = stats(p);
    cr_assert_eq(st.worker_restarts, 1);
    cr_assert_eq(st.tasks_done, 21);
    cr_assert_eq(st.tasks_failed, 1);
    end = mp_test_now() + 20;
    while ((mp_pool_worker_pid(p, 0) < 0 || mp_pool_worker_pid(p, 1) < 0) && mp_test_now() < end)
        sched_yield();
    pid_t a2 = mp_pool_worker_pid(p, 0), b2 = mp_pool_worker_pid(p, 1);
    cr_assert((a2 == a) != (b2 == b), "one of %d, %d replaced: now %d, %d", (int)a, (int)b,
              (int)a2, (int)b2);
    cr_assert_gt(a2, 0);
    cr_assert_gt(b2, 0);
    finish(p);
}

/* Between a worker's death and its replacement: -ESRCH.  A pool whose
 * workers die at start-up (the initializer) is replaced only after a
 * back-off, which leaves the slot empty long enough to see. */
static void die_at_start(void *arg)
{
    (void)arg;
    _exit(3);
}

Test(pool_stats, worker_pid_between_death_and_replacement, .timeout = MP_TMO(60))
{
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 1, .initializer = die_at_start}), 0);
    double end = mp_test_now() + 20;
    pid_t pid;
    while ((pid = mp_pool_worker_pid(p, 0)) != -ESRCH && mp_test_now() < end)
        sched_yield();
    mp_expect_rc(pid, -ESRCH);
    end = mp_test_now() + 20;
    while (stats(p).worker_restarts < 2 && mp_test_now() < end)
        sched_yield();
    cr_assert_geq(stats(p).worker_restarts, 2);
    mp_expect_rc(mp_pool_terminate(p), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(30)), 0);
    mp_pool_free(p);
}

Test(pool_stats, thread_pool_pids_are_ours, .timeout = MP_TMO(30))
{
    mp_pool *p = make(MP_POOL_THREAD, 3);
    for (unsigned i = 0; i < 3; i++)
        cr_assert_eq(mp_pool_worker_pid(p, i), getpid());
    mp_expect_rc(mp_pool_worker_pid(p, 3), -EINVAL);
    finish(p);
}

Test(pool_stats, bad_input, .timeout = MP_TMO(30))
{
    mp_pool_stats st;
    mp_expect_rc(mp_pool_get_stats(NULL, &st), -EINVAL);
    mp_pool *p = make(MP_POOL_THREAD, 1);
    mp_expect_rc(mp_pool_get_stats(p, NULL), -EINVAL);
    finish(p);
}
