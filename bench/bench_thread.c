/* Thread and shared-dict benchmarks.
 *   thread.start_join   mp_thread start + join (posix: pthread_create +
 *                       pthread_join)
 *   dict.set_get_child  a child process does d[k] = v then d[k], 8-byte
 *                       keys and values, over a fixed set of 1000 keys
 *                       (Python: a Manager().dict() proxy) */
#include <mproc.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static int nothing(void *arg)
{
    (void)arg;
    return 0;
}

static void *nothing_posix(void *arg)
{
    return arg;
}

static double start_join_mproc(void *ctx, uint64_t n)
{
    (void)ctx;
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        mp_thread *t;
        MP_BENCH_CHECK(mp_thread_new(&t, nothing, NULL, NULL) == 0);
        MP_BENCH_CHECK(mp_thread_start(t) == 0);
        MP_BENCH_CHECK(mp_thread_join(t, MP_FOREVER) == 0);
        mp_thread_free(t);
    }
    return mp_bench_now() - t0;
}

static double start_join_posix(void *ctx, uint64_t n)
{
    (void)ctx;
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        pthread_t t;
        MP_BENCH_CHECK(pthread_create(&t, NULL, nothing_posix, NULL) == 0);
        MP_BENCH_CHECK(pthread_join(t, NULL) == 0);
    }
    return mp_bench_now() - t0;
}

/* The child runs the loop; the time is taken inside it and sent back. */
static double dict_child(void *ctx, uint64_t n)
{
    mp_dict *d = ctx;
    int fds[2];
    MP_BENCH_CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    MP_BENCH_CHECK(pid >= 0);
    if (pid == 0) {
        double t0 = mp_bench_now();
        for (uint64_t i = 0; i < n; i++) {
            uint64_t k = i % 1000, v = i, got;
            size_t len;
            if (mp_dict_set(d, &k, sizeof k, &v, sizeof v) != 0 ||
                mp_dict_get(d, &k, sizeof k, &got, sizeof got, &len) != 0 || got != v)
                _exit(1);
        }
        double t = mp_bench_now() - t0;
        _exit(write(fds[1], &t, sizeof t) == sizeof t ? 0 : 1);
    }
    close(fds[1]);
    double t = 0;
    MP_BENCH_CHECK(read(fds[0], &t, sizeof t) == sizeof t);
    close(fds[0]);
    int st;
    MP_BENCH_CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return t;
}

int main(void)
{
    uint64_t n = mp_bench_n(20000);
    mp_bench_run("thread.start_join", "mproc", MP_BENCH_US_PER_OP, 0, start_join_mproc, NULL, n, 0);
    mp_bench_run("thread.start_join", "posix", MP_BENCH_US_PER_OP, 0, start_join_posix, NULL, n, 0);
    mp_dict *d;
    MP_BENCH_CHECK(mp_dict_new(&d) == 0);
    mp_bench_run("dict.set_get_child", "mproc", MP_BENCH_US_PER_OP, 0, dict_child, d,
                 mp_bench_n(1000000), 0);
    mp_dict_free(d);
    return 0;
}
