/* Coroutine benchmarks (Python partners in bench/python/bench_coro.py).
 *   coro.switch       one switch between two coroutines (each yields to
 *                     the other); "mproc" is the library's yield, "asm-jmp"
 *                     and "asm-ret" the bare context switch resuming with
 *                     an indirect jump or with ret, "swapcontext" glibc's,
 *                     "condvar" a hand-off between two threads through a
 *                     mutex and condition variable (Python: two generators)
 *   coro.spawn_join   spawn a coroutine and join it (Python: make a
 *                     generator and run it out)
 *   coro.chan_rtt     a round trip through two rendezvous channels
 *                     (Python: asyncio queues)
 *   coro.idle_memory  resident bytes per idle coroutine, 100,000 of them
 *                     (Python: per suspended generator) */
#include <mproc.h>
#include <mproc/coro.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "harness.h"

/* ---- the library's yield ---- */

static uint64_t yields_left;

static void yielder(void *arg)
{
    (void)arg;
    while (yields_left > 0) {
        yields_left--;
        mp_co_yield();
    }
}

static double switch_mproc(void *ctx, uint64_t n)
{
    (void)ctx;
    yields_left = n;
    MP_BENCH_CHECK(mp_co_spawn(NULL, yielder, NULL, 0) == 0);
    MP_BENCH_CHECK(mp_co_spawn(NULL, yielder, NULL, 0) == 0);
    double t0 = mp_bench_now();
    MP_BENCH_CHECK(mp_co_run() == 0);
    return mp_bench_now() - t0;
}

/* ---- bare switches: two contexts bouncing ---- */

void mp__co_switch(void **save_sp, void *load_sp);
void mp__co_switch_ret(void **save_sp, void *load_sp);

static void *main_sp, *peer_sp;
static uint64_t bounces;
static void (*bare_switch)(void **, void *);

static void peer_entry(void *arg)
{
    (void)arg;
    for (;;)
        bare_switch(&peer_sp, main_sp);
}

#if defined(__x86_64__) || defined(__aarch64__)
void *mp__co_frame(char *top, void (*entry)(void *), void *arg);
#define HAVE_BARE 1
#endif

#ifdef HAVE_BARE
static double switch_bare(void *ctx, uint64_t n)
{
    bare_switch = ctx;
    static char *stack;
    if (stack == NULL)
        stack = malloc(1 << 16);
    peer_sp = mp__co_frame(stack + (1 << 16), peer_entry, NULL);
    bounces = n / 2;
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < bounces; i++)
        bare_switch(&main_sp, peer_sp); /* there and back: two switches */
    return mp_bench_now() - t0;
}
#endif

/* ---- glibc swapcontext ---- */

static ucontext_t uc_main, uc_peer;

static void uc_peer_fn(void)
{
    for (;;)
        swapcontext(&uc_peer, &uc_main);
}

static double switch_swapcontext(void *ctx, uint64_t n)
{
    (void)ctx;
    static char *stack;
    if (stack == NULL)
        stack = malloc(1 << 16);
    getcontext(&uc_peer);
    uc_peer.uc_stack.ss_sp = stack;
    uc_peer.uc_stack.ss_size = 1 << 16;
    uc_peer.uc_link = NULL;
    makecontext(&uc_peer, uc_peer_fn, 0);
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n / 2; i++)
        swapcontext(&uc_main, &uc_peer);
    return mp_bench_now() - t0;
}

/* ---- two threads handing off through a condition variable ---- */

static pthread_mutex_t cv_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static uint64_t turn, cv_end;

static void *cv_peer(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&cv_lock);
    for (;;) {
        while (turn % 2 == 0 && turn < cv_end)
            pthread_cond_wait(&cv, &cv_lock);
        if (turn >= cv_end)
            break;
        turn++;
        pthread_cond_signal(&cv);
    }
    pthread_mutex_unlock(&cv_lock);
    return NULL;
}

static double switch_condvar(void *ctx, uint64_t n)
{
    (void)ctx;
    turn = 0;
    cv_end = n;
    pthread_t t;
    MP_BENCH_CHECK(pthread_create(&t, NULL, cv_peer, NULL) == 0);
    double t0 = mp_bench_now();
    pthread_mutex_lock(&cv_lock);
    while (turn < cv_end) {
        while (turn % 2 == 1)
            pthread_cond_wait(&cv, &cv_lock);
        turn++;
        pthread_cond_signal(&cv);
    }
    pthread_mutex_unlock(&cv_lock);
    pthread_join(t, NULL);
    return mp_bench_now() - t0;
}

/* ---- spawn + join ---- */

static void nothing(void *arg)
{
    (void)arg;
}

static double spawn_join(void *ctx, uint64_t n)
{
    (void)ctx;
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        mp_co *co;
        MP_BENCH_CHECK(mp_co_spawn(&co, nothing, NULL, 0) == 0);
        MP_BENCH_CHECK(mp_co_join(co, MP_FOREVER) == 0);
        mp_co_free(co);
    }
    return mp_bench_now() - t0;
}

/* ---- channel round trip ---- */

static mp_chan *ping, *pong;

static void ponger(void *arg)
{
    uint64_t v;
    (void)arg;
    while (mp_chan_recv(ping, &v, MP_FOREVER) == 0)
        mp_chan_send(pong, &v, MP_FOREVER);
}

static void pinger(void *arg)
{
    uint64_t n = *(uint64_t *)arg;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t v;
        mp_chan_send(ping, &i, MP_FOREVER);
        mp_chan_recv(pong, &v, MP_FOREVER);
        MP_BENCH_CHECK(v == i);
    }
    mp_chan_close(ping);
}

static double chan_rtt(void *ctx, uint64_t n)
{
    (void)ctx;
    MP_BENCH_CHECK(mp_chan_new(&ping, sizeof(uint64_t), 0) == 0);
    MP_BENCH_CHECK(mp_chan_new(&pong, sizeof(uint64_t), 0) == 0);
    MP_BENCH_CHECK(mp_co_spawn(NULL, ponger, NULL, 0) == 0);
    MP_BENCH_CHECK(mp_co_spawn(NULL, pinger, &n, 0) == 0);
    double t0 = mp_bench_now();
    MP_BENCH_CHECK(mp_co_run() == 0);
    double t = mp_bench_now() - t0;
    mp_chan_free(ping);
    mp_chan_free(pong);
    return t;
}

/* ---- memory of idle coroutines ---- */

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

static void idle(void *arg)
{
    int v;
    mp_chan_recv(arg, &v, MP_FOREVER);
}

static void idle_memory(void)
{
    enum { N = 100000 };
    mp_chan *ch;
    MP_BENCH_CHECK(mp_chan_new(&ch, sizeof(int), 0) == 0);
    long before = rss_bytes();
    for (int i = 0; i < N; i++)
        MP_BENCH_CHECK(mp_co_spawn(NULL, idle, ch, 0) == 0);
    MP_BENCH_CHECK(mp_co_run() == -EDEADLK); /* all parked */
    long after = rss_bytes();
    double per = (double)(after - before) / N;
    printf("{\"bench\":\"coro.idle_memory\",\"impl\":\"mproc\",\"metric\":\"B/op\","
           "\"better\":\"lower\",\"median\":%.6g,\"min\":%.6g,\"max\":%.6g,\"runs\":1,\"n\":%d}\n",
           per, per, per, N);
    fprintf(stderr, "coro: %d idle coroutines: %.1f MiB resident\n", N, (double)(after - before) / 1048576);
    fflush(stdout);
    mp_chan_close(ch);
    MP_BENCH_CHECK(mp_co_run() == 0);
    mp_chan_free(ch);
}

int main(void)
{
    uint64_t n = mp_bench_n(10000000);
    mp_bench_run("coro.switch", "mproc", MP_BENCH_NS_PER_OP, 0, switch_mproc, NULL, n, 0);
#ifdef HAVE_BARE
    mp_bench_run("coro.switch", "asm-jmp", MP_BENCH_NS_PER_OP, 0, switch_bare, (void *)mp__co_switch, n, 0);
    mp_bench_run("coro.switch", "asm-ret", MP_BENCH_NS_PER_OP, 0, switch_bare, (void *)mp__co_switch_ret, n, 0);
#endif
    mp_bench_run("coro.switch", "swapcontext", MP_BENCH_NS_PER_OP, 0, switch_swapcontext, NULL,
                 mp_bench_n(2000000), 0);
    mp_bench_run("coro.switch", "condvar", MP_BENCH_NS_PER_OP, 0, switch_condvar, NULL,
                 mp_bench_n(200000), 0);
    mp_bench_run("coro.spawn_join", "mproc", MP_BENCH_NS_PER_OP, 0, spawn_join, NULL, mp_bench_n(1000000), 0);
    mp_bench_run("coro.chan_rtt", "mproc", MP_BENCH_NS_PER_OP, 0, chan_rtt, NULL, mp_bench_n(2000000), 0);
    idle_memory();
    return 0;
}
