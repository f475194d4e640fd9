/* MPI pool benchmarks (Python partners in bench/python/bench_pool_mpi.py).
 * Each is measured with N = 1, 2 and 4 workers: an MPI pool over N worker
 * ranks (impl "mproc", mpirun -n N+1), a process pool of N workers on the
 * same machine (impl "process"), and Python's multiprocessing.Pool(N).
 *   mpi.map_1M_wN        map of x * 3 over 1,000,000 int64, items/s
 *   mpi.apply_rtt_wN     apply_async + get of an empty task, one at a time
 *   mpi.apply_async_wN   10,000 tasks echoing an int in flight, then every
 *                        get: the per-task overhead that the model in
 *                        docs/PERFORMANCE.md is built from
 *
 * Run without arguments it measures the process pools itself and starts
 * itself under mpirun for each N (skipped if there is no mpirun). */
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "pool_bodies.h"

#define INFLIGHT 10000

static void bench_all(unsigned w, mp_pool_kind kind, const char *impl)
{
    map_ctx c;
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
    mp_bench_run(name, impl, MP_BENCH_US_PER_OP, 0, rtt_body, c.pool, mp_bench_n(5000), 0);
    snprintf(name, sizeof name, "mpi.apply_async_w%u", w);
    mp_bench_run(name, impl, MP_BENCH_OPS_PER_S, 0, inflight_body, c.pool, INFLIGHT, 5);
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
