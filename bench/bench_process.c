/* process.start_join: start a trivial child and join it.
 *   mproc  mp_process_new + start + join + free
 *   posix  fork + _exit + waitpid (the raw floor)
 * process.start_join_256M: the same from a parent holding 256 MiB of
 * touched private memory (fork copies its page tables). */
#include <mproc.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static int trivial(void *arg)
{
    (void)arg;
    return 0;
}

static double mproc_body(void *ctx, uint64_t n)
{
    (void)ctx;
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        mp_process *p;
        MP_BENCH_CHECK(mp_process_new(&p, trivial, NULL, NULL) == 0);
        MP_BENCH_CHECK(mp_process_start(p) == 0);
        MP_BENCH_CHECK(mp_process_join(p, MP_FOREVER) == 0);
        int code;
        MP_BENCH_CHECK(mp_process_exitcode(p, &code) == 0 && code == 0);
        mp_process_free(p);
    }
    return mp_bench_now() - t0;
}

static double posix_body(void *ctx, uint64_t n)
{
    (void)ctx;
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0)
            _exit(0);
        MP_BENCH_CHECK(pid > 0);
        int st;
        MP_BENCH_CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st));
    }
    return mp_bench_now() - t0;
}

int main(void)
{
    uint64_t n = mp_bench_n(2000);
    mp_bench_run("process.start_join", "mproc", MP_BENCH_US_PER_OP, 0, mproc_body, NULL, n, 0);
    mp_bench_run("process.start_join", "posix", MP_BENCH_US_PER_OP, 0, posix_body, NULL, n, 0);

    size_t big = (size_t)256 << 20;
    char *mem = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MP_BENCH_CHECK(mem != MAP_FAILED);
    for (size_t i = 0; i < big; i += 4096)
        mem[i] = (char)i;
    n = mp_bench_n(100);
    mp_bench_run("process.start_join_256M", "mproc", MP_BENCH_US_PER_OP, 0, mproc_body, NULL, n, 0);
    mp_bench_run("process.start_join_256M", "posix", MP_BENCH_US_PER_OP, 0, posix_body, NULL, n, 0);
    munmap(mem, big);
    return 0;
}
