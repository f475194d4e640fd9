/* Synchronisation benchmarks.
 *   sync.lock_uncontended   lock+unlock in one thread        (posix: robust pshared pthread mutex)
 *   sync.value_incr         lock, ++ a shared Value, unlock  (posix: the same on a robust mutex)
 *   sync.lock_contended_2proc  two processes doing lock, ++, unlock on one lock
 *   sync.event_pingpong     round trip between two processes through two events
 *                           (posix: a pair of pipes); _1cpu: both pinned to one CPU */
#include <mproc.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

typedef struct {
    pthread_mutex_t m;
    long counter;
} robust_pair;

static robust_pair *robust_new(void)
{
    robust_pair *r = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    MP_BENCH_CHECK(r != MAP_FAILED);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&r->m, &a);
    return r;
}

static bool contending; /* two processes share the counter */

static double lock_mproc(void *ctx, uint64_t n)
{
    mp_lock *l = ctx;
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        mp_lock_acquire(l, MP_FOREVER);
        mp_lock_release(l);
    }
    return mp_bench_now() - t0;
}

static double lock_posix(void *ctx, uint64_t n)
{
    robust_pair *r = ctx;
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        pthread_mutex_lock(&r->m);
        pthread_mutex_unlock(&r->m);
    }
    return mp_bench_now() - t0;
}

static double value_mproc(void *ctx, uint64_t n)
{
    mp_value *v = ctx;
    mp_lock *l = mp_value_lock(v);
    long *p = mp_value_ptr(v);
    long start = *p;
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        mp_lock_acquire(l, MP_FOREVER);
        ++*p;
        mp_lock_release(l);
    }
    double t = mp_bench_now() - t0;
    MP_BENCH_CHECK(contending || *p == start + (long)n);
    return t;
}

static double value_posix(void *ctx, uint64_t n)
{
    robust_pair *r = ctx;
    long start = r->counter;
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        pthread_mutex_lock(&r->m);
        ++r->counter;
        pthread_mutex_unlock(&r->m);
    }
    double t = mp_bench_now() - t0;
    MP_BENCH_CHECK(contending || r->counter == start + (long)n);
    return t;
}

/* Two processes share the work: the parent forks one helper doing the
 * same loop and both run n/2 iterations. */
typedef double (*loop_fn)(void *ctx, uint64_t n);
typedef struct {
    loop_fn fn;
    void *ctx;
} two_proc;

static double contended(void *arg, uint64_t n)
{
    two_proc *t = arg;
    contending = true;
    double t0 = mp_bench_now();
    pid_t pid = fork();
    MP_BENCH_CHECK(pid >= 0);
    if (pid == 0) {
        t->fn(t->ctx, n / 2);
        _exit(0);
    }
    t->fn(t->ctx, n - n / 2);
    int st;
    MP_BENCH_CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return mp_bench_now() - t0;
}

/* Ping-pong: the parent sets ping and waits for pong; the child mirrors. */
typedef struct {
    mp_event *ping, *pong;
    int p2c[2], c2p[2];
} pingpong;

static double pingpong_mproc(void *arg, uint64_t n)
{
    pingpong *pp = arg;
    mp_event_clear(pp->ping);
    mp_event_clear(pp->pong);
    pid_t pid = fork();
    MP_BENCH_CHECK(pid >= 0);
    if (pid == 0) {
        for (uint64_t i = 0; i < n; i++) {
            if (mp_event_wait(pp->ping, MP_FOREVER) != 0)
                _exit(1);
            mp_event_clear(pp->ping);
            mp_event_set(pp->pong);
        }
        _exit(0);
    }
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        mp_event_set(pp->ping);
        MP_BENCH_CHECK(mp_event_wait(pp->pong, MP_FOREVER) == 0);
        mp_event_clear(pp->pong);
    }
    double t = mp_bench_now() - t0;
    int st;
    MP_BENCH_CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return t;
}

static double pingpong_posix(void *arg, uint64_t n)
{
    pingpong *pp = arg;
    pid_t pid = fork();
    MP_BENCH_CHECK(pid >= 0);
    char c = 0;
    if (pid == 0) {
        for (uint64_t i = 0; i < n; i++) {
            if (read(pp->p2c[0], &c, 1) != 1 || write(pp->c2p[1], &c, 1) != 1)
                _exit(1);
        }
        _exit(0);
    }
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        MP_BENCH_CHECK(write(pp->p2c[1], &c, 1) == 1);
        MP_BENCH_CHECK(read(pp->c2p[0], &c, 1) == 1);
    }
    double t = mp_bench_now() - t0;
    int st;
    MP_BENCH_CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return t;
}

int main(void)
{
    mp_lock *l;
    MP_BENCH_CHECK(mp_lock_new(&l) == 0);
    robust_pair *r = robust_new();
    uint64_t n = mp_bench_n(10000000);
    mp_bench_run("sync.lock_uncontended", "mproc", MP_BENCH_NS_PER_OP, 0, lock_mproc, l, n, 0);
    mp_bench_run("sync.lock_uncontended", "posix", MP_BENCH_NS_PER_OP, 0, lock_posix, r, n, 0);

    mp_value *v;
    long zero = 0;
    MP_BENCH_CHECK(mp_value_new(&v, sizeof(long), &zero) == 0);
    mp_bench_run("sync.value_incr", "mproc", MP_BENCH_NS_PER_OP, 0, value_mproc, v, n, 0);
    mp_bench_run("sync.value_incr", "posix", MP_BENCH_NS_PER_OP, 0, value_posix, r, n, 0);

    n = mp_bench_n(2000000);
    two_proc tm = {value_mproc, v}, tp = {value_posix, r};
    mp_bench_run("sync.lock_contended_2proc", "mproc", MP_BENCH_NS_PER_OP, 0, contended, &tm, n, 0);
    mp_bench_run("sync.lock_contended_2proc", "posix", MP_BENCH_NS_PER_OP, 0, contended, &tp, n, 0);

    pingpong pp;
    MP_BENCH_CHECK(mp_event_new(&pp.ping) == 0 && mp_event_new(&pp.pong) == 0);
    MP_BENCH_CHECK(pipe(pp.p2c) == 0 && pipe(pp.c2p) == 0);
    n = mp_bench_n(20000);
    mp_bench_run("sync.event_pingpong", "mproc", MP_BENCH_US_PER_OP, 0, pingpong_mproc, &pp, n, 0);
    mp_bench_run("sync.event_pingpong", "posix", MP_BENCH_US_PER_OP, 0, pingpong_posix, &pp, n, 0);

    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    MP_BENCH_CHECK(sched_setaffinity(0, sizeof one, &one) == 0); /* children inherit it */
    mp_bench_run("sync.event_pingpong_1cpu", "mproc", MP_BENCH_US_PER_OP, 0, pingpong_mproc, &pp, n, 0);
    mp_bench_run("sync.event_pingpong_1cpu", "posix", MP_BENCH_US_PER_OP, 0, pingpong_posix, &pp, n, 0);
    return 0;
}
