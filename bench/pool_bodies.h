/* Task functions and timed bodies shared by bench_pool.c and
 * bench_pool_mpi.c, so that both measure the same work. */
#ifndef MP_BENCH_POOL_BODIES_H
#define MP_BENCH_POOL_BODIES_H

#include <mproc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define ITEMS 1000000

static int triple(const void *in, void *out)
{
    *(int64_t *)out = *(const int64_t *)in * 3;
    return 0;
}

static int triple_run(const void *in, void *out, size_t count)
{
    const int64_t *a = in;
    int64_t *b = out;
    for (size_t i = 0; i < count; i++)
        b[i] = a[i] * 3;
    return 0;
}

static int empty_task(const void *arg, size_t len, mp_buf *res)
{
    (void)arg;
    (void)len;
    (void)res;
    return 0;
}

static int echo_int(const void *arg, size_t len, mp_buf *res)
{
    return mp_buf_append(res, arg, len);
}

typedef struct {
    mp_pool *pool;
    int64_t *in, *out;
    int runs;               /* mp_pool_map_chunks instead of mp_pool_map */
} map_ctx;

static void check_out(const int64_t *in, const int64_t *out, uint64_t n)
{
    for (uint64_t i = 0; i < n; i += 997)
        MP_BENCH_CHECK(out[i] == in[i] * 3);
    MP_BENCH_CHECK(out[n - 1] == in[n - 1] * 3);
}

static double map_body(void *ctx, uint64_t n)
{
    map_ctx *m = ctx;
    memset(m->out, 0, n * sizeof *m->out);
    double t0 = mp_bench_now();
    if (m->runs)
        MP_BENCH_CHECK(mp_pool_map_chunks(m->pool, triple_run, m->in, n, sizeof(int64_t), m->out,
                                          sizeof(int64_t), 0, NULL, NULL) == 0);
    else
        MP_BENCH_CHECK(mp_pool_map(m->pool, triple, m->in, n, sizeof(int64_t), m->out,
                                   sizeof(int64_t), 0) == 0);
    double t = mp_bench_now() - t0;
    check_out(m->in, m->out, n);
    return t;
}

static double rtt_body(void *ctx, uint64_t n)
{
    mp_pool *p = ctx;
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        mp_result *r;
        MP_BENCH_CHECK(mp_pool_apply_async(p, empty_task, NULL, 0, NULL, &r) == 0);
        MP_BENCH_CHECK(mp_result_get(r, MP_FOREVER, NULL, NULL) == 0);
        mp_result_free(r);
    }
    return mp_bench_now() - t0;
}

static double inflight_body(void *ctx, uint64_t n)
{
    mp_pool *p = ctx;
    mp_result **rs = malloc(n * sizeof *rs);
    MP_BENCH_CHECK(rs != NULL);
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        int v = (int)i;
        MP_BENCH_CHECK(mp_pool_apply_async(p, echo_int, &v, sizeof v, NULL, &rs[i]) == 0);
    }
    for (uint64_t i = 0; i < n; i++) {
        const void *res;
        MP_BENCH_CHECK(mp_result_get(rs[i], MP_FOREVER, &res, NULL) == 0);
        MP_BENCH_CHECK(*(const int *)res == (int)i);
        mp_result_free(rs[i]);
    }
    double t = mp_bench_now() - t0;
    free(rs);
    return t;
}

#endif
