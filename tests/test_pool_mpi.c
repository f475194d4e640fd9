/* MPI pools: the pool contract program (tests/helpers/pool_contract.c)
 * passes unchanged against the process pool, the thread pool and the MPI
 * pool on several ranks; outside mpirun the MPI pool says so. */
// labels: unit mpi
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>

#include "mp_test.h"

static const char *contract_path(void)
{
    static char path[4096];
    const char *dir = getenv("MPROC_TEST_BINARY_DIR");
    snprintf(path, sizeof path, "%s/tests/helpers/pool_contract", dir ? dir : ".");
    return path;
}

static void expect_ok(int st, const char *out, const char *last)
{
    cr_assert(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x, output:\n%s", st,
              out);
    cr_assert(strstr(out, last) != NULL, "no \"%s\" in:\n%s", last, out);
}

static void contract(const char *kind)
{
    char out[4096];
    char *argv[] = {(char *)contract_path(), (char *)kind, NULL};
    expect_ok(mp_test_run(argv, out, sizeof out, MP_TMO(60)), out, "all ok\n");
}

Test(pool_contract, process_pool, .timeout = MP_TMO(90)) { contract("process"); }

Test(pool_contract, thread_pool, .timeout = MP_TMO(90)) { contract("thread"); }

Test(pool_mpi, outside_mpirun, .timeout = MP_TMO(30))
{
    unsetenv("OMPI_COMM_WORLD_RANK");
    unsetenv("PMI_RANK");
    cr_assert_eq(mp_mpi_rank(), -1);
    char out[4096];
    char *argv[] = {(char *)contract_path(), "solo", NULL};
    expect_ok(mp_test_run(argv, out, sizeof out, MP_TMO(20)), out, "ok solo\n");
}

#ifdef MP_MPIEXEC

/* Run mpirun with args as mp_test_run does, with mpirun's settings: as
 * root (CI, containers) it wants to be told that is fine; under ASan, Open
 * MPI's memory kept until exit is not ours to report.  mpirun itself ends
 * the job 10 s before our limit and prints every rank's stack (through
 * tests/helpers/gstack), so that a job that hangs says where. */
static int run(char *const args[], char *out, size_t cap, double timeout)
{
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    char path[8192], secs[32];
    const char *old = getenv("PATH");
    snprintf(path, sizeof path, "%s:%s", MP_TEST_HELPERS_SRC, old ? old : "/usr/bin:/bin");
    setenv("PATH", path, 1);
    snprintf(secs, sizeof secs, "%d", (int)(timeout > 20 ? timeout - 10 : timeout));
    char *argv[32] = {MP_MPIEXEC, "--timeout", secs, "--get-stack-traces"};
    int n = 4;
    for (int i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    const char *a = getenv("ASAN_OPTIONS");
    if (a == NULL || strstr(a, "detect_leaks=0") == NULL) {
        char opts[1024];
        snprintf(opts, sizeof opts, "%s%sdetect_leaks=0", a ? a : "", a ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
    }
    return mp_test_run(argv, out, cap, timeout);
}

static void under_mpirun(const char *ranks, const char *mode, const char *last, double tmo)
{
    char out[4096];
    char *argv[] = {"-n", (char *)ranks, "--oversubscribe", (char *)contract_path(),
                    (char *)mode, NULL};
    expect_ok(run(argv, out, sizeof out, tmo), out, last);
}

/* The acceptance test: the same program as the process pool's, the pool
 * kind aside, with a segfaulting task (MP_EWORKER) and the job going on. */
Test(pool_mpi, contract_on_3_ranks, .timeout = MP_TMO(120))
{
    under_mpirun("3", "mpi", "all ok\n", MP_TMO(100));
}

Test(pool_mpi, contract_on_5_ranks, .timeout = MP_TMO(120))
{
    under_mpirun("5", "mpi", "all ok\n", MP_TMO(100));
}

Test(pool_mpi, one_rank_has_no_workers, .timeout = MP_TMO(60))
{
    under_mpirun("1", "solo", "ok solo\n", MP_TMO(50));
}

Test(pool_mpi, exit_with_pool_open, .timeout = MP_TMO(60))
{
    /* The open task sleeps 60 s: ending well before means it was
     * terminated and the ranks released. */
    double t0 = mp_test_now();
    under_mpirun("3", "exit", "ok left open\n", MP_TMO(50));
    cr_assert_lt(mp_test_now() - t0, MP_TMO(40));
}

/* The example: seed 000's ten one-second tasks over ten worker ranks take
 * about a second, not ten. */
Test(pool_mpi, example_speed_on_11_ranks, .timeout = MP_TMO(90))
{
    const char *dir = getenv("MPROC_TEST_BINARY_DIR");
    char prog[4096], out[4096];
    snprintf(prog, sizeof prog, "%s/examples/mpi_pool_map_speed", dir ? dir : ".");
    if (access(prog, X_OK) != 0)
        cr_skip_test("examples not built");
    char *argv[] = {"-n", "11", "--oversubscribe", prog, NULL};
    const char *want = "[1, 4, 9, 16, 25, 36, 49, 64, 81, 100]\n";
    /* (It used to print its result and then, now and then, not end: a
     * rank hung freeing the iterator of a chunk it had answered, see
     * pool_limits::helper_end_pushed_while_its_owner_waits.) */
    int st = run(argv, out, sizeof out, MP_TMO(30));
    expect_ok(st, out, want);
    double t = 0;
    const char *line = strstr(out, "over MPI ranks: ");
    cr_assert(line && sscanf(line, "over MPI ranks: %lf s", &t) == 1, "output:\n%s", out);
    cr_assert(t >= 0.99 && t < 5, "map took %.2f s", t);
}

#else

Test(pool_mpi, built_without_mpi)
{
    mp_pool *p = NULL;
    mp_pool_opts o = {.kind = MP_POOL_MPI};
    mp_expect_rc(mp_pool_new(&p, &o), MP_ENOMPI);
    cr_skip_test("mproc was built without MPI: MPI pools not tested");
}

#endif
