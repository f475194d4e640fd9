/* Thread pools: the same API on threads (no crash isolation, no timeouts),
 * run under ThreadSanitizer too. */
// labels: unit tsan
#include <mproc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "mp_test.h"
#include "test_pool_common.h"

static mp_pool *new_thread_pool(unsigned workers, unsigned maxtasks)
{
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = workers, .kind = MP_POOL_THREAD,
                                                 .maxtasksperchild = maxtasks}), 0);
    return p;
}

Test(pool_thread, apply_map_imap, .timeout = MP_TMO(60))
{
    mp_pool *p = new_thread_pool(3, 0);
    task_arg a = {.op = OP_SQUARE, .value = 11};
    void *res;
    size_t n;
    mp_expect_rc(mp_pool_apply(p, run_op, &a, sizeof a, &res, &n), 0);
    cr_assert_eq(*(int *)res, 121);
    free(res);
    a.op = OP_PID;
    mp_expect_rc(mp_pool_apply(p, run_op, &a, sizeof a, &res, &n), 0);
    cr_assert_eq(*(int *)res, getpid(), "threads run in this process");
    free(res);
    a.op = OP_FAIL;
    a.value = 3;
    mp_expect_rc(mp_pool_apply(p, run_op, &a, sizeof a, &res, &n), MP_ETASK);

    enum { N = 20000 };
    int *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
    for (int i = 0; i < N; i++)
        in[i] = i;
    in[77] = ITEM_FAIL;
    mp_map_error *errs;
    size_t nerrs;
    mp_expect_rc(mp_pool_map_ex(p, map_item, in, N, sizeof(int), out, sizeof(int), 0, &errs, &nerrs),
                 MP_ETASK);
    cr_assert_eq(nerrs, 1);
    cr_assert_eq(errs[0].index, 77);
    free(errs);
    for (int i = 0; i < N; i++)
        if (i != 77)
            cr_assert_eq(out[i], 2 * i + 1);
    in[77] = 77;
    mp_iter *it;
    mp_expect_rc(mp_pool_imap(p, map_item, in, N, sizeof(int), sizeof(int), 64, true, &it), 0);
    size_t idx, count = 0;
    int v;
    while (mp_iter_next(it, &v, &idx, MP_TMO(20)) == 0) {
        cr_assert_eq(idx, count);
        cr_assert_eq(v, 2 * (int)idx + 1);
        count++;
    }
    cr_assert_eq(count, N);
    mp_iter_free(it);
    free(in);
    free(out);
    mp_expect_rc(mp_pool_close(p), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(20)), 0);
    mp_pool_free(p);
}

static _Atomic int cb_count;

static void count_cb(const void *res, size_t len, void *ud) { atomic_fetch_add(&cb_count, 1); }

Test(pool_thread, many_tasks_callbacks_and_join, .timeout = MP_TMO(60))
{
    mp_pool *p = new_thread_pool(4, 0);
    enum { N = 5000 };
    static mp_result *rs[N];
    for (int i = 0; i < N; i++)
        mp_expect_rc(submit(p, OP_SQUARE, i % 100, NULL,
                            &(mp_task_opts){.callback = count_cb}, &rs[i]), 0);
    for (int i = 0; i < N; i++) {
        const void *v;
        mp_expect_rc(mp_result_get(rs[i], MP_TMO(20), &v, NULL), 0);
        cr_assert_eq(*(const int *)v, (i % 100) * (i % 100));
        mp_result_free(rs[i]);
    }
    mp_expect_rc(mp_pool_close(p), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(20)), 0);
    cr_assert_eq(atomic_load(&cb_count), N);
    mp_pool_free(p);
}

Test(pool_thread, terminate_cancels_queued_and_timeouts_refused, .timeout = MP_TMO(30))
{
    mp_pool *p = new_thread_pool(1, 0);
    mp_event *ev;
    mp_expect_rc(mp_event_new(&ev), 0);
    mp_result *running, *queued, *r;
    mp_expect_rc(submit_running(p, ev, &running), 0);
    mp_expect_rc(submit(p, OP_SQUARE, 2, NULL, NULL, &queued), 0);
    mp_expect_rc(submit(p, OP_SQUARE, 2, NULL, &(mp_task_opts){.timeout = 1}, &r), -ENOTSUP);
    mp_expect_rc(mp_pool_terminate(p), 0);
    mp_expect_rc(mp_result_get(queued, MP_TMO(10), NULL, NULL), MP_ECANCELED);
    /* A running thread cannot be killed: join waits for it. */
    mp_expect_rc(mp_pool_join(p, 0.05), MP_ETIMEDOUT);
    mp_expect_rc(mp_event_set(ev), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(10)), 0);
    mp_expect_rc(mp_result_get(running, 0, NULL, NULL), 0);
    mp_result_free(running);
    mp_result_free(queued);
    mp_pool_free(p);
    mp_event_free(ev);
}

Test(pool_thread, tasks_receive_descriptors, .timeout = MP_TMO(30))
{
    mp_pool *p = new_thread_pool(2, 0);
    for (int n = 0; n <= MP_TASK_MAX_FDS; n++)
        check_fd_passing(p, n);
    mp_pool_free(p);
}

Test(pool_thread, maxtasks_restarts_threads, .timeout = MP_TMO(30))
{
    mp_pool *p = new_thread_pool(2, 3);
    for (int i = 0; i < 50; i++) {
        mp_result *r;
        mp_expect_rc(submit(p, OP_INDEX, 0, NULL, NULL, &r), 0);
        const void *v;
        mp_expect_rc(mp_result_get(r, MP_TMO(10), &v, NULL), 0);
        int w = *(const int *)v;
        cr_assert(w == 0 || w == 1);
        mp_result_free(r);
    }
    mp_pool_free(p);
}
