/* MPI pool benchmarks (Python partners in bench/python/bench_pool_mpi.py).
 * Each is measured with N = 1, 2 and 4 workers: an MPI pool over N worker
 * ranks (impl "mproc", mpirun -n N+1), a process pool of N workers on the
 * same machine (impl "process"), and Python's multiprocessing.Pool(N).
 *   mpi.map_1M_wN        map of x * 3 over 1,000,000 int64, items/s
 *   mpi.apply_rtt_wN     apply_async + get of an empty task, one at a time
 *   mpi.apply_async_wN   10,000 tasks echoing an int in flight, then every
 *                        get:
 *                        the per-task overhead docs/PERFORMANCE.md's model
 *                        is built from
 *
 * Run without arguments it measures the process pools itself and starts
 * itself under mpirun for each N (skipped if there is no mpirun). */
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define ITEMS 1000000
#define INFLIGHT 10000

static int triple(const void *in, void *out)
{
    *(int64_t *)out = *(const int64_t *)in * 3;
    return 0;
}

static int empty_task(const void *arg, size_t len, mp_buf *res)
{
    (void)arg, (void)len, (void)res;
    return 0;
}

static int echo_int(const void *arg, size_t len, mp_buf *res)
{
    return mp_buf_append(res, arg, len);
}

typedef struct {
    mp_pool *pool;
    int64_t *in, *out;
} ctx;

static double map_body(void *arg, uint64_t n)
{
    ctx *c = arg;
    memset(c->out, 0, n * sizeof *c->out);
    double t0 = mp_bench_now();
    MP_BENCH_CHECK(mp_pool_map(c->pool, triple, c->in, n, sizeof(int64_t), c->out,
                               sizeof(int64_t), 0) == 0);
    double t = mp_bench_now() - t0;
    for (uint64_t i = 0; i < n; i += 997)
        MP_BENCH_CHECK(c->out[i] == c->in[i] * 3);
    return t;
}

static double rtt_body(void *arg, uint64_t n)
{
    ctx *c = arg;
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        mp_result *r;
        MP_BENCH_CHECK(mp_pool_apply_async(c->pool, empty_task, NULL, 0, NULL, &r) == 0);
        MP_BENCH_CHECK(mp_result_get(r, MP_FOREVER, NULL, NULL) == 0);
        mp_result_free(r);
    }
    return mp_bench_now() - t0;
}

static double inflight_body(void *arg, uint64_t n)
{
    ctx *c = arg;
    mp_result **rs = malloc(n * sizeof *rs);
    MP_BENCH_CHECK(rs != NULL);
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        int v = (int)i;
        MP_BENCH_CHECK(mp_pool_apply_async(c->pool, echo_int, &v, sizeof v, NULL, &rs[i]) == 0);
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

static void bench_all(unsigned w, mp_pool_kind kind, const char *impl)
{
    ctx c;
    MP_BENCH_CHECK(mp_pool_new(&c.pool, &(mp_pool_opts){.workers = w, .kind = kind}) == 0);
    c.in = malloc(ITEMS * sizeof(int64_t));
    c.out = malloc(ITEMS * sizeof(int64_t));
    MP_BENCH_CHECK(c.in && c.out);
    for (int64_t i = 0; i < ITEMS; i++)
        c.in[i] = i;
    char name[64];
    snprintf(name, sizeof name, "mpi.map_1M_w%u", w);
    mp_bench_run(name, impl, MP_BENCH_OPS_PER_S, 0, map_body, &c, ITEMS, 3);
    snprintf(name, sizeof name, "mpi.apply_rtt_w%u", w);
    mp_bench_run(name, impl, MP_BENCH_US_PER_OP, 0, rtt_body, &c, mp_bench_n(5000), 0);
    snprintf(name, sizeof name, "mpi.apply_async_w%u", w);
    mp_bench_run(name, impl, MP_BENCH_OPS_PER_S, 0, inflight_body, &c, INFLIGHT, 5);
    mp_pool_free(c.pool);
    free(c.in);
    free(c.out);
}

int main(int argc, char **argv)
{
    static const unsigned ws[] = {1, 2, 4};
    if (argc == 2) {
        /* Under mpirun: rank 0 measures, the other ranks serve. */
        MP_BENCH_CHECK(mp_mpi_init() == 0);
        bench_all((unsigned)atoi(argv[1]), MP_POOL_MPI, "mproc");
        return 0;
    }
    int have_mpirun = system("command -v mpirun >/dev/null 2>&1") == 0;
    for (size_t i = 0; i < 3; i++) {
        bench_all(ws[i], MP_POOL_PROCESS, "process");
        if (!have_mpirun) {
            fprintf(stderr, "bench_pool_mpi: no mpirun: MPI pools not measured\n");
            continue;
        }
        char cmd[8192];
        snprintf(cmd, sizeof cmd,
                 "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
                 "mpirun -n %u --oversubscribe '%s' %u",
                 ws[i] + 1, argv[0], ws[i]);
        fflush(stdout);
        MP_BENCH_CHECK(system(cmd) == 0);
    }
    return 0;
}
