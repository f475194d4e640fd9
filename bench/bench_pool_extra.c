/* The pool's C peers, measured on the same work as bench_pool.c:
 *   openmp   `#pragma omp parallel for` (schedule static, and dynamic for
 *            the 10 us items), with the thread counts mproc's pools have;
 *            openmp-call: the same loop calling the element function
 *            through a pointer, as a pool must
 *   libuv    uv_queue_work on a thread pool of 2 (UV_THREADPOOL_SIZE)
 *   condvar  a minimal pool of 2 pthreads: one mutex, one condition
 *            variable for work and one for results
 * Each prints the same bench names as bench_pool.c, so report.py puts them
 * side by side. */
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "harness.h"

#define ITEMS 1000000
#define SLOW_ITEMS 20000

static int64_t *in, *out;

static void check_out(uint64_t n)
{
    for (uint64_t i = 0; i < n; i += 997)
        MP_BENCH_CHECK(out[i] == in[i] * 3);
    MP_BENCH_CHECK(out[n - 1] == in[n - 1] * 3);
}

/* ---- map: OpenMP ---- */

static int threads;

static double omp_map(void *ctx, uint64_t n)
{
    (void)ctx;
    memset(out, 0, n * sizeof *out);
    double t0 = mp_bench_now();
#pragma omp parallel for schedule(static) num_threads(threads)
    for (uint64_t i = 0; i < n; i++)
        out[i] = in[i] * 3;
    double t = mp_bench_now() - t0;
    check_out(n);
    return t;
}

/* The per-element function of bench_pool.c's maps, called through a
 * pointer the compiler cannot see through, as mproc calls it: what the
 * call per element costs OpenMP too (impl "openmp-call"). */
static int triple(const void *a, void *b)
{
    *(int64_t *)b = *(const int64_t *)a * 3;
    return 0;
}

static int (*volatile map_fn)(const void *, void *) = triple;

static double omp_map_call(void *ctx, uint64_t n)
{
    (void)ctx;
    memset(out, 0, n * sizeof *out);
    int (*fn)(const void *, void *) = map_fn;
    double t0 = mp_bench_now();
#pragma omp parallel for schedule(static) num_threads(threads)
    for (uint64_t i = 0; i < n; i++)
        fn(&in[i], &out[i]);
    double t = mp_bench_now() - t0;
    check_out(n);
    return t;
}

static double omp_slow(void *ctx, uint64_t n)
{
    (void)ctx;
    double t0 = mp_bench_now();
#pragma omp parallel for schedule(dynamic, 16) num_threads(threads)
    for (uint64_t i = 0; i < n; i++)
        out[i] = mp_bench_spin_item((int64_t)i);
    double t = mp_bench_now() - t0;
    for (uint64_t i = 0; i < n; i++)
        MP_BENCH_CHECK(out[i] & 1);
    return t;
}

/* ---- apply_async: libuv ---- */

typedef struct {
    uv_work_t req;
    int arg, res;
    _Atomic int done;
} uv_task;

static void uv_run_task(uv_work_t *req)
{
    uv_task *t = req->data;
    t->res = t->arg;
}

static void uv_after(uv_work_t *req, int status)
{
    uv_task *t = req->data;
    MP_BENCH_CHECK(status == 0);
    t->done = 1;
}

static double uv_inflight(void *ctx, uint64_t n)
{
    uv_loop_t *loop = ctx;
    uv_task *ts = calloc(n, sizeof *ts);
    MP_BENCH_CHECK(ts != NULL);
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        ts[i].req.data = &ts[i];
        ts[i].arg = (int)i;
        MP_BENCH_CHECK(uv_queue_work(loop, &ts[i].req, uv_run_task, uv_after) == 0);
    }
    uv_run(loop, UV_RUN_DEFAULT); /* returns once every callback ran */
    double t = mp_bench_now() - t0;
    for (uint64_t i = 0; i < n; i++)
        MP_BENCH_CHECK(ts[i].done && ts[i].res == (int)i);
    free(ts);
    return t;
}

static double uv_rtt(void *ctx, uint64_t n)
{
    uv_loop_t *loop = ctx;
    uv_task t;
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        t.req.data = &t;
        t.arg = (int)i;
        t.done = 0;
        MP_BENCH_CHECK(uv_queue_work(loop, &t.req, uv_run_task, uv_after) == 0);
        uv_run(loop, UV_RUN_DEFAULT);
        MP_BENCH_CHECK(t.done && t.res == (int)i);
    }
    return mp_bench_now() - t0;
}

/* ---- apply_async: a minimal condition-variable pool ---- */

typedef struct cv_task {
    struct cv_task *next;
    int arg, res;
    int done;
} cv_task;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t work, results;
    cv_task *head, *tail;
    int waiting;                /* the submitter waits for a result */
    int stop;
    pthread_t th[2];
} cv_pool;

static void *cv_worker(void *arg)
{
    cv_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->head == NULL && !p->stop)
            pthread_cond_wait(&p->work, &p->lock);
        if (p->head == NULL)
            break;
        cv_task *t = p->head;
        p->head = t->next;
        if (p->head == NULL)
            p->tail = NULL;
        pthread_mutex_unlock(&p->lock);
        t->res = t->arg;
        pthread_mutex_lock(&p->lock);
        t->done = 1;
        if (p->waiting)
            pthread_cond_broadcast(&p->results);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void cv_submit(cv_pool *p, cv_task *t)
{
    t->next = NULL;
    t->done = 0;
    pthread_mutex_lock(&p->lock);
    if (p->tail)
        p->tail->next = t;
    else
        p->head = t;
    p->tail = t;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->lock);
}

static int cv_get(cv_pool *p, cv_task *t)
{
    pthread_mutex_lock(&p->lock);
    while (!t->done) {
        p->waiting++;
        pthread_cond_wait(&p->results, &p->lock);
        p->waiting--;
    }
    pthread_mutex_unlock(&p->lock);
    return t->res;
}

static double cv_inflight(void *ctx, uint64_t n)
{
    cv_pool *p = ctx;
    cv_task *ts = calloc(n, sizeof *ts);
    MP_BENCH_CHECK(ts != NULL);
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        ts[i].arg = (int)i;
        cv_submit(p, &ts[i]);
    }
    for (uint64_t i = 0; i < n; i++)
        MP_BENCH_CHECK(cv_get(p, &ts[i]) == (int)i);
    double t = mp_bench_now() - t0;
    free(ts);
    return t;
}

static double cv_rtt(void *ctx, uint64_t n)
{
    cv_pool *p = ctx;
    cv_task t;
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        t.arg = (int)i;
        cv_submit(p, &t);
        MP_BENCH_CHECK(cv_get(p, &t) == (int)i);
    }
    return mp_bench_now() - t0;
}

int main(void)
{
    in = malloc(ITEMS * sizeof *in);
    out = malloc(ITEMS * sizeof *out);
    MP_BENCH_CHECK(in && out);
    for (int64_t i = 0; i < ITEMS; i++)
        in[i] = i;

    /* The same map with 2 threads stands beside every map row of 2
     * workers (shared arrays, ordinary arrays, thread pool); with 10
     * beside the pools of 10 on this machine's cores. */
    static const char *maps2[] = {"pool.map_shared_1M_w2", "pool.map_1M_w2", "threadpool.map_1M",
                                  "pool.map_chunks_shared_1M_w2", "pool.map_chunks_1M_w2",
                                  "threadpool.map_chunks_1M"};
    threads = 2;
    for (size_t i = 0; i < 6; i++)
        mp_bench_run(maps2[i], "openmp", MP_BENCH_OPS_PER_S, 0, omp_map, NULL,
                     ITEMS, MP_BENCH_MANY);
    static const char *calls2[] = {"pool.map_shared_1M_w2", "pool.map_1M_w2", "threadpool.map_1M"};
    for (size_t i = 0; i < 3; i++)
        mp_bench_run(calls2[i], "openmp-call", MP_BENCH_OPS_PER_S, 0, omp_map_call, NULL, ITEMS,
                     MP_BENCH_MANY);
    threads = 10;
    mp_bench_run("pool.map_shared_1M_w10", "openmp-call", MP_BENCH_OPS_PER_S, 0, omp_map_call,
                 NULL, ITEMS, MP_BENCH_MANY);
    mp_bench_run("pool.map_shared_1M_w10", "openmp", MP_BENCH_OPS_PER_S, 0, omp_map, NULL,
                 ITEMS, MP_BENCH_MANY);
    mp_bench_run("pool.map_chunks_shared_1M_w10", "openmp", MP_BENCH_OPS_PER_S, 0, omp_map, NULL,
                 ITEMS, MP_BENCH_MANY);
    threads = 2;
    mp_bench_run("pool.map_10us", "openmp", MP_BENCH_OPS_PER_S, 0, omp_slow, NULL,
                 mp_bench_n(SLOW_ITEMS), MP_BENCH_MANY);

    setenv("UV_THREADPOOL_SIZE", "2", 1);
    uv_loop_t *loop = uv_default_loop();
    uv_inflight(loop, 10000); /* warm: the thread pool starts */
    mp_bench_run("pool.apply_async_10k", "libuv", MP_BENCH_OPS_PER_S, 0, uv_inflight, loop,
                 10000, MP_BENCH_MANY);
    mp_bench_run("threadpool.apply_async_10k", "libuv", MP_BENCH_OPS_PER_S, 0, uv_inflight, loop,
                 10000, MP_BENCH_MANY);
    mp_bench_run("pool.apply_rtt", "libuv", MP_BENCH_US_PER_OP, 0, uv_rtt, loop,
                 mp_bench_n(20000), 0);

    cv_pool cp;
    memset(&cp, 0, sizeof cp);
    pthread_mutex_init(&cp.lock, NULL);
    pthread_cond_init(&cp.work, NULL);
    pthread_cond_init(&cp.results, NULL);
    for (int i = 0; i < 2; i++)
        MP_BENCH_CHECK(pthread_create(&cp.th[i], NULL, cv_worker, &cp) == 0);
    mp_bench_run("threadpool.apply_async_10k", "condvar", MP_BENCH_OPS_PER_S, 0, cv_inflight, &cp,
                 10000, MP_BENCH_MANY);
    mp_bench_run("pool.apply_async_10k", "condvar", MP_BENCH_OPS_PER_S, 0, cv_inflight, &cp,
                 10000, MP_BENCH_MANY);
    mp_bench_run("pool.apply_rtt", "condvar", MP_BENCH_US_PER_OP, 0, cv_rtt, &cp,
                 mp_bench_n(20000), 0);
    pthread_mutex_lock(&cp.lock);
    cp.stop = 1;
    pthread_cond_broadcast(&cp.work);
    pthread_mutex_unlock(&cp.lock);
    for (int i = 0; i < 2; i++)
        pthread_join(cp.th[i], NULL);
    free(in);
    free(out);
    return 0;
}
