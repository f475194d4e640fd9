/* Pool benchmarks (Python partners in bench/python/bench_pool.py).
 *   pool.map_1M_wN        map of a trivial function (x * 3 over int64) on
 *                         1,000,000 items with N worker processes, ordinary
 *                         arrays (copied through the shared heap), items/s
 *   pool.map_shared_1M_wN the same over arrays from mp_shared_alloc (used in
 *                         place); Python has no such thing: its partner is
 *                         the same Pool.map
 *   pool.apply_rtt        apply_async + get of an empty task, one at a time
 *   pool.apply_async_10k  10,000 apply_async in flight, then every get
 *   pool.start            pool of 2 started, one task run, closed, joined
 *   threadpool.map_1M     map on a pool of 2 threads (Python: ThreadPool;
 *                         posix: the array cut in two halves by hand)
 *   pool.map_shared_1M_w10  shared arrays on Pool(10), as the seeds write it
 *   pool.map_10us         20,000 items of about 10 us each, 2 workers
 *   threadpool.apply_async_10k  10,000 in flight on a pool of 2 threads
 *   pool.imap_items_1M_16B  imap_items over 1M items of 16 bytes (each
 *                         copied at the call, results handed out one by
 *                         one); its partner "mproc-map" is mp_pool_map over
 *                         the same bytes as 16-byte records
 *   *_chunks              the same maps with mp_pool_map_chunks (a function
 *                         over a run of elements: no call per element)
 * Their C peers (oneTBB, OpenMP, libuv, a condition-variable pool) are in
 * bench_pool_cxx.cpp and bench_pool_extra.c. */
#include <mproc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "pool_bodies.h"

static void bench_map(const char *name, unsigned workers, mp_pool_kind kind, bool shared,
                      int runs)
{
    map_ctx m = {.runs = runs};
    MP_BENCH_CHECK(mp_pool_new(&m.pool, &(mp_pool_opts){.workers = workers, .kind = kind}) == 0);
    size_t bytes = ITEMS * sizeof(int64_t);
    m.in = shared ? mp_shared_alloc(bytes) : malloc(bytes);
    m.out = shared ? mp_shared_alloc(bytes) : malloc(bytes);
    MP_BENCH_CHECK(m.in && m.out);
    for (int64_t i = 0; i < ITEMS; i++)
        m.in[i] = i;
    /* Warm: every worker maps the arrays' (or the staging's) pages, which
     * a process pays for once (2.5 us a page), and which workers take part
     * in a map is not fixed. */
    for (int i = 0; i < 30; i++)
        map_body(&m, ITEMS);
    mp_bench_run(name, "mproc", MP_BENCH_OPS_PER_S, 0, map_body, &m, ITEMS, MP_BENCH_MANY);
    mp_pool_free(m.pool);
    if (shared) {
        mp_shared_free(m.in);
        mp_shared_free(m.out);
    } else {
        free(m.in);
        free(m.out);
    }
}

/* ---- items of about 10 us ---- */

#define SLOW_ITEMS 20000

static int spin_map(const void *in, void *out)
{
    *(int64_t *)out = mp_bench_spin_item(*(const int64_t *)in);
    return 0;
}

static double slow_body(void *ctx, uint64_t n)
{
    map_ctx *m = ctx;
    double t0 = mp_bench_now();
    MP_BENCH_CHECK(mp_pool_map(m->pool, spin_map, m->in, n, sizeof(int64_t), m->out,
                               sizeof(int64_t), 0) == 0);
    double t = mp_bench_now() - t0;
    for (uint64_t i = 0; i < n; i++)
        MP_BENCH_CHECK(m->out[i] & 1);
    return t;
}

static void bench_slow(void)
{
    map_ctx m;
    MP_BENCH_CHECK(mp_pool_new(&m.pool, &(mp_pool_opts){.workers = 2}) == 0);
    m.in = mp_shared_alloc(SLOW_ITEMS * sizeof(int64_t));
    m.out = mp_shared_alloc(SLOW_ITEMS * sizeof(int64_t));
    MP_BENCH_CHECK(m.in && m.out);
    for (int64_t i = 0; i < SLOW_ITEMS; i++)
        m.in[i] = i;
    mp_bench_run("pool.map_10us", "mproc", MP_BENCH_OPS_PER_S, 0, slow_body, &m,
                 mp_bench_n(SLOW_ITEMS), MP_BENCH_MANY);
    mp_pool_free(m.pool);
    mp_shared_free(m.in);
    mp_shared_free(m.out);
}

/* ---- the hand-written floor for the thread pool ---- */

typedef struct {
    const int64_t *in;
    int64_t *out;
    size_t n;
} half;

static void *run_half(void *arg)
{
    half *h = arg;
    for (size_t i = 0; i < h->n; i++)
        triple(&h->in[i], &h->out[i]);
    return NULL;
}

static double map_posix(void *ctx, uint64_t n)
{
    map_ctx *m = ctx;
    double t0 = mp_bench_now();
    half h[2] = {{m->in, m->out, n / 2}, {m->in + n / 2, m->out + n / 2, n - n / 2}};
    pthread_t t;
    MP_BENCH_CHECK(pthread_create(&t, NULL, run_half, &h[1]) == 0);
    run_half(&h[0]);
    pthread_join(t, NULL);
    double s = mp_bench_now() - t0;
    check_out(m->in, m->out, n);
    return s;
}

/* ---- apply ---- */

static double start_body(void *ctx, uint64_t n)
{
    (void)ctx;
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        mp_pool *p;
        MP_BENCH_CHECK(mp_pool_new(&p, &(mp_pool_opts){.workers = 2}) == 0);
        MP_BENCH_CHECK(mp_pool_apply(p, empty_task, NULL, 0, NULL, NULL) == 0);
        MP_BENCH_CHECK(mp_pool_close(p) == 0);
        MP_BENCH_CHECK(mp_pool_join(p, MP_FOREVER) == 0);
        mp_pool_free(p);
    }
    return mp_bench_now() - t0;
}

/* ---- items ---- */

typedef struct { unsigned char b[16]; } rec16;

typedef struct {
    mp_pool *pool;
    rec16 *in, *out;
    mp_item *items;
} items_ctx;

static int echo_item(const void *data, size_t len, mp_buf *res)
{
    return mp_buf_append(res, data, len);
}

static int copy_rec(const void *in, void *out)
{
    memcpy(out, in, sizeof(rec16));
    return 0;
}

static double items_body(void *ctx, uint64_t n)
{
    items_ctx *x = ctx;
    double t0 = mp_bench_now();
    mp_iter *it;
    MP_BENCH_CHECK(mp_pool_imap_items(x->pool, echo_item, x->items, n, 0, true, &it) == 0);
    const void *res;
    size_t len, idx;
    uint64_t got = 0;
    int rc;
    while ((rc = mp_iter_next_item(it, &res, &len, &idx, MP_FOREVER)) == 0) {
        MP_BENCH_CHECK(len == sizeof(rec16) && idx == got);
        got++;
    }
    MP_BENCH_CHECK(rc == MP_EDONE && got == n);
    mp_iter_free(it);
    return mp_bench_now() - t0;
}

static double map16_body(void *ctx, uint64_t n)
{
    items_ctx *x = ctx;
    double t0 = mp_bench_now();
    MP_BENCH_CHECK(mp_pool_map(x->pool, copy_rec, x->in, n, sizeof(rec16), x->out, sizeof(rec16),
                               0) == 0);
    return mp_bench_now() - t0;
}

static void bench_items(void)
{
    items_ctx x;
    MP_BENCH_CHECK(mp_pool_new(&x.pool, &(mp_pool_opts){.workers = 2}) == 0);
    x.in = malloc(ITEMS * sizeof *x.in);
    x.out = malloc(ITEMS * sizeof *x.out);
    x.items = malloc(ITEMS * sizeof *x.items);
    MP_BENCH_CHECK(x.in && x.out && x.items);
    for (size_t i = 0; i < ITEMS; i++) {
        memset(&x.in[i], (int)i, sizeof x.in[i]);
        x.items[i] = (mp_item){&x.in[i], sizeof x.in[i]};
    }
    for (int i = 0; i < 3; i++) {
        items_body(&x, ITEMS);
        map16_body(&x, ITEMS);
    }
    mp_bench_run("pool.imap_items_1M_16B", "mproc", MP_BENCH_OPS_PER_S, 0, items_body, &x, ITEMS,
                 MP_BENCH_MANY);
    mp_bench_run("pool.imap_items_1M_16B", "mproc-map", MP_BENCH_OPS_PER_S, 0, map16_body, &x,
                 ITEMS, MP_BENCH_MANY);
    mp_pool_free(x.pool);
    free(x.in);
    free(x.out);
    free(x.items);
}

int main(void)
{
    static const unsigned ws[] = {1, 2, 4};
    char name[64];
    for (size_t i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "pool.map_1M_w%u", ws[i]);
        bench_map(name, ws[i], MP_POOL_PROCESS, false, 0);
        snprintf(name, sizeof name, "pool.map_shared_1M_w%u", ws[i]);
        bench_map(name, ws[i], MP_POOL_PROCESS, true, 0);
    }
    bench_map("pool.map_shared_1M_w10", 10, MP_POOL_PROCESS, true, 0);
    bench_map("threadpool.map_1M", 2, MP_POOL_THREAD, false, 0);
    bench_map("pool.map_chunks_1M_w2", 2, MP_POOL_PROCESS, false, 1);
    bench_map("pool.map_chunks_shared_1M_w2", 2, MP_POOL_PROCESS, true, 1);
    bench_map("pool.map_chunks_shared_1M_w10", 10, MP_POOL_PROCESS, true, 1);
    bench_map("threadpool.map_chunks_1M", 2, MP_POOL_THREAD, false, 1);
    bench_slow();
    bench_items();
    map_ctx m = {0};
    m.in = malloc(ITEMS * sizeof(int64_t));
    m.out = malloc(ITEMS * sizeof(int64_t));
    for (int64_t i = 0; i < ITEMS; i++)
        m.in[i] = i;
    mp_bench_run("threadpool.map_1M", "posix", MP_BENCH_OPS_PER_S, 0, map_posix, &m,
                 ITEMS, MP_BENCH_MANY);
    free(m.in);
    free(m.out);

    mp_pool *p;
    MP_BENCH_CHECK(mp_pool_new(&p, &(mp_pool_opts){.workers = 2}) == 0);
    mp_bench_run("pool.apply_rtt", "mproc", MP_BENCH_US_PER_OP, 0, rtt_body, p,
                 mp_bench_n(20000), 0);
    inflight_body(p, 10000); /* warm: 10,000 jobs made once, then reused */
    mp_bench_run("pool.apply_async_10k", "mproc", MP_BENCH_OPS_PER_S, 0, inflight_body, p,
                 10000, MP_BENCH_MANY);
    mp_pool_free(p);
    MP_BENCH_CHECK(mp_pool_new(&p, &(mp_pool_opts){.workers = 2, .kind = MP_POOL_THREAD}) == 0);
    inflight_body(p, 10000);
    mp_bench_run("threadpool.apply_async_10k", "mproc", MP_BENCH_OPS_PER_S, 0, inflight_body, p,
                 10000, MP_BENCH_MANY);
    mp_pool_free(p);
    mp_bench_run("pool.start", "mproc", MP_BENCH_US_PER_OP, 0, start_body, NULL,
                 mp_bench_n(200), 0);
    return 0;
}
