/* Process pools: apply/map/imap results, the fault matrix (segfault, abort,
 * _exit, SIGKILL from outside, deadline, task error) alone and under load,
 * callbacks, cancel, waits on several results, close/terminate/join at
 * awkward moments, maxtasksperchild, initializer, parent death, bad input. */
// labels: unit
#include <math.h>
#include <mproc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "mp_test.h"
#include "test_pool_common.h"

static mp_pool *new_pool(unsigned workers, double timeout)
{
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = workers, .task_timeout = timeout}), 0);
    return p;
}

static int get_int(mp_result *r, int *out)
{
    const void *v;
    size_t n;
    int rc = mp_result_get(r, MP_TMO(20), &v, &n);
    if (rc == 0) {
        cr_assert_eq(n, sizeof(int));
        memcpy(out, v, sizeof *out);
    }
    return rc;
}

Test(pool, apply_results_and_sizes, .timeout = MP_TMO(30))
{
    mp_pool *p = new_pool(2, 0);
    task_arg a = {.op = OP_SQUARE, .value = 12};
    void *res;
    size_t n;
    mp_expect_rc(mp_pool_apply(p, run_op, &a, sizeof a, &res, &n), 0);
    cr_assert_eq(n, sizeof(int));
    cr_assert_eq(*(int *)res, 144);
    free(res);

    /* An empty result: NULL, 0. */
    a.op = OP_ECHO;
    mp_expect_rc(mp_pool_apply(p, run_op, &a, sizeof a, &res, &n), 0);
    cr_assert_null(res);
    cr_assert_eq(n, 0);

    /* 1 MiB each way: argument in a heap block, result grown there. */
    size_t big = (size_t)1 << 20;
    task_arg *b = malloc(sizeof *b + big);
    b->op = OP_ECHO;
    for (size_t i = 0; i < big; i++)
        b->payload[i] = (unsigned char)(i * 7 + 3);
    mp_expect_rc(mp_pool_apply(p, run_op, b, sizeof *b + big, &res, &n), 0);
    cr_assert_eq(n, big);
    cr_assert_eq(memcmp(res, b->payload, big), 0);
    free(res);
    free(b);

    /* Results are aligned and readable in place until freed. */
    mp_result *r;
    mp_expect_rc(submit(p, OP_SQUARE, 5, NULL, NULL, &r), 0);
    const void *v;
    mp_expect_rc(mp_result_get(r, MP_TMO(10), &v, &n), 0);
    cr_assert_eq((uintptr_t)v % _Alignof(max_align_t), 0);
    cr_assert_eq(*(const int *)v, 25);
    cr_assert(mp_result_ready(r));
    mp_task_info info;
    mp_expect_rc(mp_result_info(r, &info), 0);
    cr_assert_eq(info.code, 0);
    mp_result_free(r);

    /* Worker indexes are in range, and tasks run in other processes. */
    for (int i = 0; i < 20; i++) {
        mp_expect_rc(submit(p, OP_INDEX, 0, NULL, NULL, &r), 0);
        int w;
        mp_expect_rc(get_int(r, &w), 0);
        cr_assert(w >= 0 && w < 2, "worker index %d", w);
        mp_result_free(r);
        mp_expect_rc(submit(p, OP_PID, 0, NULL, NULL, &r), 0);
        mp_expect_rc(get_int(r, &w), 0);
        cr_assert_neq(w, getpid());
        mp_result_free(r);
    }
    cr_assert_eq(mp_pool_worker_index(), -1);
    mp_pool_free(p);
}

Test(pool, fault_matrix_each_fails_only_its_task, .timeout = MP_TMO(60))
{
    mp_pool *p = new_pool(2, 0);
    _Atomic int *slot = mp_shared_alloc(sizeof *slot);
    mp_event *parked;
    mp_expect_rc(mp_event_new(&parked), 0);
    struct {
        int op, value;
        int code, signo, exit_status, task_rc;
        double timeout;
    } cases[] = {
        {OP_SEGV, 0, MP_EWORKER, SIGSEGV, 0, 0, 0},
        {OP_ABORT, 0, MP_EWORKER, SIGABRT, 0, 0, 0},
        {OP_EXIT, 3, MP_EWORKER, 0, 3, 0, 0},
        {OP_EXIT, 0, MP_EWORKER, 0, 0, 0, 0},
        {OP_HANG, 0, MP_EDEADLINE, SIGKILL, 0, 0, 0.2},
        {OP_FAIL, 42, MP_ETASK, 0, 0, 42, 0},
        {OP_PARK, 0, MP_EWORKER, SIGKILL, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        task_arg a = {.op = cases[i].op, .value = cases[i].value, .ev = parked, .slot = slot};
        mp_result *r;
        mp_expect_rc(mp_pool_apply_async(p, run_op, &a, sizeof a,
                                         &(mp_task_opts){.timeout = cases[i].timeout}, &r), 0);
        if (cases[i].op == OP_PARK) {
            /* SIGKILL from outside, while it runs. */
            mp_expect_rc(mp_event_wait(parked, MP_TMO(10)), 0);
            cr_assert_eq(kill(atomic_load(slot), SIGKILL), 0);
        }
        mp_expect_rc(mp_result_get(r, MP_TMO(20), NULL, NULL), cases[i].code);
        mp_task_info info;
        mp_expect_rc(mp_result_info(r, &info), 0);
        cr_assert_eq(info.code, cases[i].code, "case %zu", i);
        cr_assert_eq(info.signo, cases[i].signo, "case %zu: signo %d", i, info.signo);
        cr_assert_eq(info.exit_status, cases[i].exit_status, "case %zu", i);
        cr_assert_eq(info.task_rc, cases[i].task_rc, "case %zu", i);
        mp_result_free(r);
        /* The pool carries on with a replacement worker. */
        mp_result *ok;
        int v;
        mp_expect_rc(submit(p, OP_SQUARE, (int)i + 2, NULL, NULL, &ok), 0);
        mp_expect_rc(get_int(ok, &v), 0);
        cr_assert_eq(v, ((int)i + 2) * ((int)i + 2));
        mp_result_free(ok);
    }
    mp_pool_free(p);
    mp_event_free(parked);
    mp_shared_free(slot);
}

Test(pool, faults_under_load_fail_only_their_tasks, .timeout = MP_TMO(120))
{
    mp_pool *p = new_pool(3, 0);
    enum { N = 3000 };
    static mp_result *rs[N];
    for (int i = 0; i < N; i++) {
        int op = OP_SQUARE;
        double tmo = 0;
        switch (i % 250) {
        case 17: op = OP_SEGV; break;
        case 61: op = OP_ABORT; break;
        case 113: op = OP_EXIT; break;
        case 171: op = OP_FAIL; break;
        case 223: op = OP_HANG; tmo = 0.1; break;
        }
        task_arg a = {.op = op, .value = op == OP_FAIL ? 5 : i % 1000};
        mp_expect_rc(mp_pool_apply_async(p, run_op, &a, sizeof a,
                                         &(mp_task_opts){.timeout = tmo}, &rs[i]), 0);
    }
    int worker = 0, deadline = 0, task = 0;
    for (int i = 0; i < N; i++) {
        int v = -1, rc = get_int(rs[i], &v);
        switch (i % 250) {
        case 17: case 61: case 113:
            mp_expect_rc(rc, MP_EWORKER);
            worker++;
            break;
        case 171:
            mp_expect_rc(rc, MP_ETASK);
            task++;
            break;
        case 223:
            mp_expect_rc(rc, MP_EDEADLINE);
            deadline++;
            break;
        default:
            mp_expect_rc(rc, 0);
            cr_assert_eq(v, (i % 1000) * (i % 1000), "task %d", i);
        }
        mp_result_free(rs[i]);
    }
    cr_assert_eq(worker, 3 * N / 250);
    cr_assert_eq(task, N / 250);
    cr_assert_eq(deadline, N / 250);
    mp_expect_rc(mp_pool_close(p), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(20)), 0);
    mp_pool_free(p);
}

Test(pool, pool_wide_timeout_and_per_task_override, .timeout = MP_TMO(30))
{
    mp_pool *p = new_pool(2, 0.2);
    mp_result *r, *none;
    mp_expect_rc(submit(p, OP_HANG, 0, NULL, NULL, &r), 0);
    mp_expect_rc(mp_result_get(r, MP_TMO(10), NULL, NULL), MP_EDEADLINE);
    mp_result_free(r);
    /* timeout < 0: no limit for this task; it is still waiting after the
     * pool's limit has long passed, and ends when told to. */
    mp_event *ev;
    mp_expect_rc(mp_event_new(&ev), 0);
    mp_expect_rc(submit(p, OP_WAIT, 6, ev, &(mp_task_opts){.timeout = -1}, &none), 0);
    mp_expect_rc(mp_result_get(none, 0.6, NULL, NULL), MP_ETIMEDOUT);
    mp_expect_rc(mp_event_set(ev), 0);
    mp_expect_rc(mp_result_get(none, MP_TMO(10), NULL, NULL), MP_ETASK);
    mp_task_info info;
    mp_expect_rc(mp_result_info(none, &info), 0);
    cr_assert_eq(info.task_rc, 6);
    mp_result_free(none);
    mp_pool_free(p);
    mp_event_free(ev);
}

static void check_map_out(const int *in, const int *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (in[i] >= 0)
            cr_assert_eq(out[i], 2 * in[i] + 1, "item %zu", i);
}

Test(pool, map_results_chunks_and_shared_arrays, .timeout = MP_TMO(60))
{
    mp_pool *p = new_pool(2, 0);
    enum { N = 100000 };
    int *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
    for (int i = 0; i < N; i++)
        in[i] = i;
    size_t chunks[] = {0, 1, 7, 1000, N, 3 * N};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        memset(out, 0, N * sizeof *out);
        size_t n = chunks[c] == 1 ? 5000 : N; /* chunk 1: many jobs, fewer items */
        mp_expect_rc(mp_pool_map(p, map_item, in, n, sizeof(int), out, sizeof(int), chunks[c]), 0);
        check_map_out(in, out, n);
    }
    /* Arrays in the shared heap are used in place. */
    int *sin = mp_shared_alloc(N * sizeof *sin), *sout = mp_shared_alloc(N * sizeof *sout);
    cr_assert(sin && sout);
    for (int i = 0; i < N; i++)
        sin[i] = N - i;
    mp_expect_rc(mp_pool_map(p, map_item, sin, N, sizeof(int), sout, sizeof(int), 0), 0);
    check_map_out(sin, sout, N);
    /* Empty input and an output-less map. */
    mp_expect_rc(mp_pool_map(p, map_item, in, 0, sizeof(int), out, sizeof(int), 0), 0);
    mp_pool_free(p);
    mp_shared_free(sin);
    mp_shared_free(sout);
    free(in);
    free(out);
}

Test(pool, map_fails_only_the_faulty_items, .timeout = MP_TMO(60))
{
    mp_pool *p = new_pool(2, 0.3);
    enum { N = 2000 };
    int in[N], out[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    /* Faults inside chunks, two in a row, at a chunk's first and last item,
     * and more task errors in one chunk than it records before stopping. */
    int seg[] = {3, 4, 100, 149, 150, 1999};
    for (size_t i = 0; i < sizeof seg / sizeof seg[0]; i++)
        in[seg[i]] = ITEM_SEGV;
    in[777] = ITEM_HANG;
    in[1500] = ITEM_EXIT;
    for (int i = 1200; i < 1240; i++)
        in[i] = ITEM_FAIL;
    mp_map_error *errs;
    size_t nerrs;
    mp_expect_rc(mp_pool_map_ex(p, map_item, in, N, sizeof(int), out, sizeof(int), 50, &errs, &nerrs),
                 MP_EWORKER);
    check_map_out(in, out, N);
    cr_assert_eq(nerrs, 6 + 1 + 1 + 40);
    size_t k = 0;
    for (size_t e = 0; e < nerrs; e++) {
        if (e > 0)
            cr_assert_gt(errs[e].index, errs[e - 1].index, "sorted");
        int x = in[errs[e].index];
        if (x == ITEM_SEGV) {
            cr_assert_eq(errs[e].info.code, MP_EWORKER);
            cr_assert_eq(errs[e].info.signo, SIGSEGV);
            k++;
        } else if (x == ITEM_HANG) {
            cr_assert_eq(errs[e].info.code, MP_EDEADLINE);
        } else if (x == ITEM_EXIT) {
            cr_assert_eq(errs[e].info.code, MP_EWORKER);
            cr_assert_eq(errs[e].info.exit_status, 4);
        } else {
            cr_assert_eq(x, ITEM_FAIL, "item %zu failed: %d", errs[e].index, x);
            cr_assert_eq(errs[e].info.code, MP_ETASK);
            cr_assert_eq(errs[e].info.task_rc, 9);
        }
    }
    cr_assert_eq(k, 6);
    free(errs);
    /* mp_pool_map reports the lowest failed item's error. */
    in[3] = 3;
    in[4] = ITEM_FAIL;
    mp_expect_rc(mp_pool_map(p, map_item, in, N, sizeof(int), out, sizeof(int), 0), MP_ETASK);
    mp_pool_free(p);
}

Test(pool, imap_ordered_and_unordered, .timeout = MP_TMO(60))
{
    mp_pool *p = new_pool(2, 0);
    enum { N = 10007 };
    int *in = malloc(N * sizeof *in);
    for (int i = 0; i < N; i++)
        in[i] = i;
    in[5000] = ITEM_FAIL;
    in[6000] = ITEM_SEGV;
    for (int ordered = 0; ordered < 2; ordered++) {
        mp_iter *it;
        mp_expect_rc(mp_pool_imap(p, map_item, in, N, sizeof(int), sizeof(int), 100, ordered, &it), 0);
        unsigned char *seen = calloc(N, 1);
        size_t idx, count = 0;
        int v, rc;
        while ((rc = mp_iter_next(it, &v, &idx, MP_TMO(20))) != MP_EDONE) {
            cr_assert(idx < N);
            cr_assert_not(seen[idx], "index %zu twice", idx);
            seen[idx] = 1;
            if (ordered)
                cr_assert_eq(idx, count, "in order");
            if (idx == 5000)
                mp_expect_rc(rc, MP_ETASK);
            else if (idx == 6000)
                mp_expect_rc(rc, MP_EWORKER);
            else {
                mp_expect_rc(rc, 0);
                cr_assert_eq(v, 2 * (int)idx + 1);
            }
            count++;
        }
        cr_assert_eq(count, N);
        mp_expect_rc(mp_iter_next(it, &v, &idx, 0), MP_EDONE);
        mp_iter_free(it);
        free(seen);
    }
    /* Freed half-way: the rest is cancelled, nothing hangs. */
    mp_iter *it;
    mp_expect_rc(mp_pool_imap(p, map_item, in, N, sizeof(int), sizeof(int), 10, true, &it), 0);
    int v;
    mp_expect_rc(mp_iter_next(it, &v, NULL, MP_TMO(10)), 0);
    cr_assert_eq(v, 1);
    mp_iter_free(it);
    mp_pool_free(p);
    free(in);
}

/* ---- callbacks ---- */

typedef struct {
    mp_pool *p;
    _Atomic int ok, failed, sum, chained, deadlk;
    pthread_t main;
    _Atomic int on_main;
} cb_state;

static void on_result(const void *res, size_t len, void *ud)
{
    cb_state *s = ud;
    if (pthread_equal(pthread_self(), s->main))
        atomic_fetch_add(&s->on_main, 1);
    atomic_fetch_add(&s->sum, *(const int *)res);
    atomic_fetch_add(&s->ok, 1);
    if (mp_pool_close(s->p) == -EDEADLK && mp_pool_join(s->p, 0) == -EDEADLK &&
        mp_pool_terminate(s->p) == -EDEADLK)
        atomic_fetch_add(&s->deadlk, 1);
}

static void on_error(int code, void *ud)
{
    cb_state *s = ud;
    if (code == MP_EWORKER)
        atomic_fetch_add(&s->failed, 1);
}

/* Each result is the number of links left: submit the next from here. */
static void chain(const void *res, size_t len, void *ud)
{
    cb_state *s = ud;
    int left;
    memcpy(&left, res, sizeof left);
    atomic_fetch_add(&s->chained, 1);
    if (left == 0)
        return;
    struct { task_arg a; int v; } arg = {{.op = OP_ECHO}, left - 1};
    mp_result *r;
    if (mp_pool_apply_async(s->p, run_op, &arg, sizeof arg,
                            &(mp_task_opts){.callback = chain, .ud = s}, &r) == 0)
        mp_result_free(r);
}

Test(pool, callbacks_run_in_the_parent_once_each, .timeout = MP_TMO(60))
{
    cb_state s = {.main = pthread_self()};
    s.p = new_pool(2, 0);
    enum { N = 500 };
    for (int i = 0; i < N; i++) {
        mp_result *r;
        int op = i % 100 == 50 ? OP_SEGV : OP_SQUARE;
        mp_expect_rc(submit(s.p, op, i % 10, NULL,
                            &(mp_task_opts){.callback = on_result, .error_callback = on_error, .ud = &s}, &r), 0);
        mp_result_free(r); /* dropping the handle does not drop the callback */
    }
    /* A chain of 100 tasks, each submitted from the previous one's callback. */
    struct { task_arg a; int v; } arg = {{.op = OP_ECHO}, 100};
    mp_result *r;
    mp_expect_rc(mp_pool_apply_async(s.p, run_op, &arg, sizeof arg,
                                     &(mp_task_opts){.callback = chain, .ud = &s}, &r), 0);
    mp_result_free(r);
    /* Wait for the chain's end, not with a sleep: its last task's callback. */
    double end = mp_test_now() + MP_TMO(30);
    while (atomic_load(&s.chained) < 101 && mp_test_now() < end) {
        mp_result *x;
        mp_expect_rc(submit(s.p, OP_SQUARE, 0, NULL, NULL, &x), 0);
        mp_result_get(x, MP_TMO(10), NULL, NULL);
        mp_result_free(x);
    }
    cr_assert_eq(atomic_load(&s.chained), 101);
    mp_expect_rc(mp_pool_close(s.p), 0);
    mp_expect_rc(mp_pool_join(s.p, MP_TMO(30)), 0);
    /* join returned after the last callback. */
    int want = 0;
    for (int i = 0; i < N; i++)
        if (i % 100 != 50)
            want += (i % 10) * (i % 10);
    cr_assert_eq(atomic_load(&s.ok), N - N / 100);
    cr_assert_eq(atomic_load(&s.failed), N / 100);
    cr_assert_eq(atomic_load(&s.sum), want);
    cr_assert_eq(atomic_load(&s.deadlk), N - N / 100);
    cr_assert_eq(atomic_load(&s.on_main), 0);
    mp_pool_free(s.p);
}

/* ---- cancel and waiting on several ---- */

Test(pool, cancel_queued_not_running, .timeout = MP_TMO(30))
{
    mp_pool *p = new_pool(1, 0);
    mp_event *ev;
    mp_expect_rc(mp_event_new(&ev), 0);
    mp_result *running, *queued;
    /* The one worker waits for ev, so the second task stays queued. */
    mp_expect_rc(submit_running(p, ev, &running), 0);
    mp_expect_rc(submit(p, OP_SQUARE, 3, NULL, NULL, &queued), 0);
    mp_expect_rc(mp_result_get(running, 0.1, NULL, NULL), MP_ETIMEDOUT);
    mp_expect_rc(mp_result_cancel(queued), 0);
    mp_expect_rc(mp_result_get(queued, 0, NULL, NULL), MP_ECANCELED);
    cr_assert(mp_result_ready(queued));
    mp_expect_rc(mp_result_cancel(running), -EBUSY);
    mp_expect_rc(mp_event_set(ev), 0);
    mp_expect_rc(mp_result_get(running, MP_TMO(10), NULL, NULL), 0);
    mp_expect_rc(mp_result_cancel(running), -EBUSY);
    mp_result_free(running);
    mp_result_free(queued);
    mp_pool_free(p);
    mp_event_free(ev);
}

Test(pool, wait_any_and_all_as_completed, .timeout = MP_TMO(30))
{
    mp_pool *p = new_pool(3, 0);
    mp_event *ev[3];
    mp_result *rs[3];
    for (int i = 0; i < 3; i++) {
        mp_expect_rc(mp_event_new(&ev[i]), 0);
        mp_expect_rc(submit(p, OP_WAIT, 0, ev[i], NULL, &rs[i]), 0);
    }
    mp_expect_rc(mp_result_wait_any(rs, 3, 0.05), MP_ETIMEDOUT);
    mp_expect_rc(mp_result_wait_all(rs, 3, 0.05), MP_ETIMEDOUT);
    /* Completed in the order 2, 0, 1: wait_any hands them out so. */
    int order[3] = {2, 0, 1};
    mp_result *left[3] = {rs[0], rs[1], rs[2]};
    for (int k = 0; k < 3; k++) {
        mp_expect_rc(mp_event_set(ev[order[k]]), 0);
        int i = mp_result_wait_any(left, 3, MP_TMO(10));
        cr_assert_eq(i, order[k]);
        left[i] = NULL;
    }
    mp_expect_rc(mp_result_wait_any(left, 3, 0), MP_EDONE);
    mp_expect_rc(mp_result_wait_all(rs, 3, 0), 0);
    for (int i = 0; i < 3; i++) {
        mp_result_free(rs[i]);
        mp_event_free(ev[i]);
    }
    mp_pool_free(p);
}

/* ---- lifecycle ---- */

Test(pool, close_runs_queued_work_then_join, .timeout = MP_TMO(30))
{
    mp_pool *p = new_pool(2, 0);
    mp_result *rs[200];
    for (int i = 0; i < 200; i++)
        mp_expect_rc(submit(p, OP_SQUARE, i, NULL, NULL, &rs[i]), 0);
    mp_expect_rc(mp_pool_join(p, 0), -EBUSY);
    mp_expect_rc(mp_pool_close(p), 0);
    mp_result *r;
    mp_expect_rc(submit(p, OP_SQUARE, 1, NULL, NULL, &r), MP_ECLOSED);
    cr_assert_null(r);
    int in[4] = {1, 2, 3, 4}, out[4];
    mp_expect_rc(mp_pool_map(p, map_item, in, 4, sizeof(int), out, sizeof(int), 0), MP_ECLOSED);
    mp_expect_rc(mp_pool_join(p, MP_TMO(20)), 0);
    mp_expect_rc(mp_pool_join(p, 0), 0);
    for (int i = 0; i < 200; i++) {
        int v;
        mp_expect_rc(get_int(rs[i], &v), 0);
        cr_assert_eq(v, i * i);
        mp_result_free(rs[i]);
    }
    mp_pool_free(p);
}

Test(pool, join_times_out_while_work_runs, .timeout = MP_TMO(30))
{
    mp_pool *p = new_pool(1, 0);
    mp_event *ev;
    mp_expect_rc(mp_event_new(&ev), 0);
    mp_result *r;
    mp_expect_rc(submit(p, OP_WAIT, 0, ev, NULL, &r), 0);
    mp_expect_rc(mp_pool_close(p), 0);
    mp_expect_rc(mp_pool_join(p, 0.1), MP_ETIMEDOUT);
    mp_expect_rc(mp_event_set(ev), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(10)), 0);
    mp_expect_rc(mp_result_get(r, 0, NULL, NULL), 0);
    mp_result_free(r);
    mp_pool_free(p);
    mp_event_free(ev);
}

Test(pool, terminate_cancels_running_and_queued, .timeout = MP_TMO(30))
{
    mp_pool *p = new_pool(2, 0);
    enum { N = 1000 };
    static mp_result *rs[N];
    for (int i = 0; i < N; i++)
        mp_expect_rc(submit(p, i < 2 ? OP_HANG : OP_SQUARE, 1, NULL, NULL, &rs[i]), 0);
    int in[100];
    for (int i = 0; i < 100; i++)
        in[i] = ITEM_HANG;
    mp_iter *it;
    mp_expect_rc(mp_pool_imap(p, map_item, in, 100, sizeof(int), sizeof(int), 1, true, &it), 0);
    mp_expect_rc(mp_pool_terminate(p), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(20)), 0);
    int cancelled = 0;
    for (int i = 0; i < N; i++) {
        int rc = mp_result_get(rs[i], 0, NULL, NULL);
        cr_assert(rc == 0 || rc == MP_ECANCELED, "task %d: %s", i, mp_errname(rc));
        cancelled += rc == MP_ECANCELED;
        mp_result_free(rs[i]);
    }
    cr_assert_geq(cancelled, 2);
    int v;
    int rc = mp_iter_next(it, &v, NULL, MP_TMO(10));
    cr_assert_eq(rc, MP_ECANCELED, "%s", mp_errname(rc));
    mp_iter_free(it);
    mp_result *r;
    mp_expect_rc(submit(p, OP_SQUARE, 1, NULL, NULL, &r), MP_ECLOSED);
    mp_pool_free(p);
}

Test(pool, results_outlive_the_pool, .timeout = MP_TMO(30))
{
    mp_pool *p = new_pool(2, 0);
    mp_result *done, *hung;
    mp_expect_rc(submit(p, OP_SQUARE, 9, NULL, NULL, &done), 0);
    int v;
    mp_expect_rc(get_int(done, &v), 0);
    mp_expect_rc(submit(p, OP_HANG, 0, NULL, NULL, &hung), 0);
    mp_pool_free(p); /* terminates: the hung task is cancelled */
    mp_expect_rc(get_int(done, &v), 0);
    cr_assert_eq(v, 81);
    mp_expect_rc(mp_result_get(hung, MP_TMO(10), NULL, NULL), MP_ECANCELED);
    mp_result_free(done);
    mp_result_free(hung);
}

Test(pool, maxtasksperchild_and_initializer, .timeout = MP_TMO(30))
{
    int mark = 1234;
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 2, .maxtasksperchild = 1,
                                                 .initializer = test_initializer, .initarg = &mark}), 0);
    int pids[10];
    for (int i = 0; i < 10; i++) {
        mp_result *r;
        mp_expect_rc(submit(p, OP_PID, 0, NULL, NULL, &r), 0);
        mp_expect_rc(get_int(r, &pids[i]), 0);
        mp_result_free(r);
        mp_expect_rc(submit(p, OP_INIT, 0, NULL, NULL, &r), 0);
        int m;
        mp_expect_rc(get_int(r, &m), 0);
        cr_assert_eq(m, 1234, "the initializer ran in each worker");
        mp_result_free(r);
    }
    for (int i = 0; i < 10; i++)
        for (int k = 0; k < i; k++)
            cr_assert_neq(pids[i], pids[k], "a worker ran two tasks");
    mp_pool_free(p);
}

/* Fails its first five starts: the worker crashes before any task. */
static void flaky_initializer(void *arg)
{
    _Atomic int *starts = arg;
    if (atomic_fetch_add(starts, 1) < 5)
        raise(SIGSEGV);
}

static int empty_task(const void *arg, size_t len, mp_buf *res)
{
    (void)arg, (void)len, (void)res;
    return 0;
}

Test(pool, crashing_initializer_is_retried_with_backoff, .timeout = MP_TMO(30))
{
    _Atomic int *starts = mp_shared_alloc(sizeof *starts);
    cr_assert_not_null(starts);
    atomic_init(starts, 0);
    mp_pool *p;
    double t0 = mp_test_now();
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 1, .initializer = flaky_initializer,
                                                 .initarg = (void *)starts}), 0);
    mp_expect_rc(mp_pool_apply(p, empty_task, NULL, 0, NULL, NULL), 0);
    /* Five failed starts, replaced after 10 + 20 + 40 + 80 + 160 ms: not
     * in a fork loop, and no start more than needed. */
    cr_assert_geq(mp_test_now() - t0, 0.3, "replaced at once: %.3f s",
                  mp_test_now() - t0);
    cr_assert_eq(atomic_load(starts), 6);
    mp_pool_free(p);
    mp_shared_free((void *)starts);
}

Test(pool, workers_die_with_the_parent, .timeout = MP_TMO(30))
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t child = fork();
    if (child == 0) {
        mp_pool *p;
        if (mp_pool_new(&p, &(mp_pool_opts){.workers = 2}) < 0)
            _exit(1);
        int pids[2];
        for (int i = 0; i < 2; i++) {
            mp_result *r;
            /* Two tasks that wait together, so both workers report. */
            if (submit(p, OP_PID, 0, NULL, NULL, &r) < 0)
                _exit(1);
            const void *v;
            if (mp_result_get(r, 10, &v, NULL) < 0)
                _exit(1);
            pids[i] = *(const int *)v;
        }
        write(fds[1], pids, sizeof pids);
        for (;;)
            pause();
    }
    close(fds[1]);
    int pids[2];
    cr_assert_eq(mp_test_read(fds[0], pids, sizeof pids, MP_TMO(10)), (ssize_t)sizeof pids);
    int pfd[2];
    for (int i = 0; i < 2; i++) {
        pfd[i] = (int)syscall(SYS_pidfd_open, pids[i], 0);
        cr_assert_geq(pfd[i], 0);
    }
    kill(child, SIGKILL);
    cr_assert_neq(mp_test_waitpid(child, MP_TMO(10)), -1);
    for (int i = 0; i < 2; i++) {
        struct pollfd q = {.fd = pfd[i], .events = POLLIN};
        cr_assert_eq(poll(&q, 1, (int)(MP_TMO(10) * 1000)), 1, "worker %d outlived the parent", pids[i]);
        close(pfd[i]);
    }
}

Test(pool, tasks_receive_descriptors, .timeout = MP_TMO(30))
{
    mp_pool *p = new_pool(2, 0);
    for (int n = 0; n <= MP_TASK_MAX_FDS; n++)
        check_fd_passing(p, n);
    /* Many at once, more than workers: each gets its own. */
    for (int k = 0; k < 20; k++)
        check_fd_passing(p, 1 + k % 3);
    int f[2];
    cr_assert_eq(pipe(f), 0);
    int many[MP_TASK_MAX_FDS + 1];
    for (int i = 0; i <= MP_TASK_MAX_FDS; i++)
        many[i] = f[1];
    mp_result *r;
    task_arg a = {.op = OP_FDS};
    mp_expect_rc(mp_pool_apply_async(p, run_op, &a, sizeof a,
                                     &(mp_task_opts){.fds = many, .nfds = MP_TASK_MAX_FDS + 1}, &r),
                 -EINVAL);
    mp_expect_rc(mp_pool_apply_async(p, run_op, &a, sizeof a, &(mp_task_opts){.nfds = 1}, &r), -EINVAL);
    int bad = 999;
    mp_expect_rc(mp_pool_apply_async(p, run_op, &a, sizeof a, &(mp_task_opts){.fds = &bad, .nfds = 1}, &r),
                 -EBADF);
    close(f[0]);
    close(f[1]);
    mp_pool_free(p);
}

Test(pool, fork_server_killed_fails_tasks_and_closes_the_pool, .timeout = MP_TMO(30))
{
    mp_pool *p = new_pool(2, 0);
    mp_result *r;
    int server;
    mp_expect_rc(submit(p, OP_PPID, 0, NULL, NULL, &r), 0);
    mp_expect_rc(get_int(r, &server), 0);
    mp_result_free(r);
    cr_assert_neq(server, getpid(), "workers are not forked by the parent");
    mp_event *ev;
    mp_expect_rc(mp_event_new(&ev), 0);
    mp_result *running;
    mp_expect_rc(submit_running(p, ev, &running), 0);
    cr_assert_eq(kill(server, SIGKILL), 0);
    /* Its workers die with it; the running task fails, nothing hangs. */
    mp_expect_rc(mp_result_get(running, MP_TMO(10), NULL, NULL), MP_EWORKER);
    mp_result_free(running);
    int rc;
    double end = mp_test_now() + MP_TMO(10);
    while ((rc = submit(p, OP_SQUARE, 1, NULL, NULL, &r)) == 0 && mp_test_now() < end) {
        /* Until the supervisor has seen the server go, tasks may still be
         * accepted: they end cancelled, or failed, or done (a worker that
         * took one in the moment between the kill and the server's exit,
         * when its death signal comes, ran it). */
        int v;
        rc = get_int(r, &v);
        cr_assert(rc == MP_ECANCELED || rc == MP_EWORKER || (rc == 0 && v == 1), "%s",
                  mp_errname(rc));
        mp_result_free(r);
    }
    mp_expect_rc(rc, MP_ECLOSED);
    mp_expect_rc(mp_pool_join(p, MP_TMO(10)), 0);
    mp_pool_free(p);
    mp_event_free(ev);
}

Test(pool, free_is_prompt_with_a_forked_child_alive, .timeout = MP_TMO(30))
{
    mp_pool *p = new_pool(2, 0);
    int hold[2];
    cr_assert_eq(pipe(hold), 0);
    pid_t child = fork(); /* inherits every descriptor of the pool */
    if (child == 0) {
        char c;
        close(hold[1]);
        read(hold[0], &c, 1);
        _exit(0);
    }
    close(hold[0]);
    double t0 = mp_test_now();
    mp_pool_free(p);
    /* The server is told to stop; it does not wait for a socket EOF the
     * child's copy would hold back (that fallback takes 5 s). */
    cr_assert_lt(mp_test_now() - t0, 3.0 * MP_TEST_TIMEOUT_MULTIPLIER);
    close(hold[1]);
    cr_assert_neq(mp_test_waitpid(child, MP_TMO(10)), -1);
}

static int map_run_items(const void *in, void *out, size_t count)
{
    memcpy(out, in, count * sizeof(int));
    return 0;
}

Test(pool, bad_input, .timeout = MP_TMO(30))
{
    mp_pool *p;
    mp_expect_rc(mp_pool_new(NULL, NULL), -EINVAL);
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.task_timeout = NAN}), -EINVAL);
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.kind = (mp_pool_kind)7}), -EINVAL);
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.kind = MP_POOL_THREAD, .task_timeout = 1}), -ENOTSUP);
    p = new_pool(1, 0);
    mp_result *r;
    task_arg a = {.op = OP_SQUARE};
    mp_expect_rc(mp_pool_apply_async(NULL, run_op, &a, sizeof a, NULL, &r), -EINVAL);
    mp_expect_rc(mp_pool_apply_async(p, NULL, &a, sizeof a, NULL, &r), -EINVAL);
    mp_expect_rc(mp_pool_apply_async(p, run_op, NULL, 4, NULL, &r), -EINVAL);
    mp_expect_rc(mp_pool_apply_async(p, NULL, &a, sizeof a, NULL, NULL), -EINVAL);
    mp_expect_rc(mp_pool_apply_async(p, run_op, &a, sizeof a, &(mp_task_opts){.timeout = NAN},
                                     NULL),
                 -EINVAL);
    mp_expect_rc(mp_pool_apply_async(p, run_op, &a, sizeof a, &(mp_task_opts){.timeout = NAN}, &r), -EINVAL);
    mp_expect_rc(mp_pool_apply(NULL, run_op, &a, sizeof a, NULL, NULL), -EINVAL);
    int in[4] = {0}, out[4];
    mp_expect_rc(mp_pool_map(NULL, map_item, in, 4, 4, out, 4, 0), -EINVAL);
    mp_expect_rc(mp_pool_map(p, NULL, in, 4, 4, out, 4, 0), -EINVAL);
    mp_expect_rc(mp_pool_map(p, map_item, in, 4, 0, out, 4, 0), -EINVAL);
    mp_expect_rc(mp_pool_map(p, map_item, NULL, 4, 4, out, 4, 0), -EINVAL);
    mp_expect_rc(mp_pool_map(p, map_item, in, 4, 4, NULL, 4, 0), -EINVAL);
    mp_expect_rc(mp_pool_map(p, map_item, in, SIZE_MAX / 2, 4, out, 4, 0), -EOVERFLOW);
    mp_iter *it;
    mp_expect_rc(mp_pool_imap(p, map_item, in, 4, 4, 4, 0, true, NULL), -EINVAL);
    mp_expect_rc(mp_pool_imap(p, NULL, in, 4, 4, 4, 0, true, &it), -EINVAL);
    mp_expect_rc(mp_pool_imap(p, map_item, in, SIZE_MAX / 2, 4, 4, 0, true, &it), -EOVERFLOW);
    mp_expect_rc(mp_pool_map_chunks(p, map_run_items, in, SIZE_MAX / 2, 4, out, 4, 0, NULL, NULL),
                 -EOVERFLOW);
    mp_expect_rc(mp_iter_next(NULL, out, NULL, 0), -EINVAL);
    mp_expect_rc(mp_result_get(NULL, 0, NULL, NULL), -EINVAL);
    mp_expect_rc(mp_result_wait(NULL, 0), -EINVAL);
    mp_expect_rc(mp_result_cancel(NULL), -EINVAL);
    mp_expect_rc(mp_result_info(NULL, NULL), -EINVAL);
    cr_assert_not(mp_result_ready(NULL));
    mp_expect_rc(mp_result_wait_any(NULL, 1, 0), -EINVAL);
    mp_expect_rc(mp_result_wait_any(NULL, 0, 0), MP_EDONE);
    mp_expect_rc(mp_buf_append(NULL, "x", 1), -EINVAL);
    mp_expect_rc(mp_pool_close(NULL), -EINVAL);
    mp_expect_rc(mp_pool_terminate(NULL), -EINVAL);
    mp_expect_rc(mp_pool_join(NULL, 0), -EINVAL);
    mp_expect_rc(mp_pool_join(p, NAN), -EINVAL);
    mp_result_free(NULL);
    mp_iter_free(NULL);
    mp_pool_free(NULL);

    /* A result's wait with a NaN timeout. */
    mp_expect_rc(submit(p, OP_SQUARE, 2, NULL, NULL, &r), 0);
    mp_expect_rc(mp_result_get(r, NAN, NULL, NULL), -EINVAL);
    mp_expect_rc(mp_result_wait(r, MP_TMO(10)), 0);

    /* A pool used in a forked child: -EPERM, nothing touched. */
    pid_t pid = fork();
    if (pid == 0) {
        mp_result *x;
        int bad = mp_pool_apply_async(p, run_op, &a, sizeof a, NULL, &x) != -EPERM ||
                  mp_pool_close(p) != -EPERM || mp_result_get(r, 0, NULL, NULL) != -EPERM ||
                  mp_pool_map(p, map_item, in, 4, 4, out, 4, 0) != -EPERM;
        mp_pool_free(p);
        mp_result_free(r);
        _exit(bad);
    }
    int st = mp_test_waitpid(pid, MP_TMO(10));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    mp_result_free(r);
    mp_expect_rc(submit(p, OP_SQUARE, 2, NULL, NULL, &r), 0);
    int v;
    mp_expect_rc(get_int(r, &v), 0);
    mp_result_free(r);
    mp_pool_free(p);
}
