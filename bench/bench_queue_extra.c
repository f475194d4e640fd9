/* Queue partner in C: ZeroMQ PUSH/PULL over ipc:// between two processes,
 * same shapes and bench names as bench_queue.c (impl "zmq"). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "harness.h"

typedef struct {
    size_t size;
    char endpoint[96];
} ctx;

static void fresh_endpoint(ctx *c)
{
    static int runs;
    snprintf(c->endpoint, sizeof c->endpoint, "ipc:///tmp/mproc-bench-zmq-%d-%d", (int)getpid(),
             runs++);
}

static double run(void *p, uint64_t n)
{
    ctx *c = p;
    fresh_endpoint(c); /* never a stale socket file from the run before */
    /* Bind before the fork, so the sender never races the listener into
     * existence (the child makes its own context: none crosses fork). */
    void *zc = zmq_ctx_new();
    void *pull = zmq_socket(zc, ZMQ_PULL);
    int tmo = 20000; /* ms: a lost peer fails the run instead of hanging it */
    zmq_setsockopt(pull, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    MP_BENCH_CHECK(zmq_bind(pull, c->endpoint) == 0);
    double t0 = mp_bench_now();
    pid_t pid = fork();
    MP_BENCH_CHECK(pid >= 0);
    if (pid == 0) {
        void *cc = zmq_ctx_new();
        void *push = zmq_socket(cc, ZMQ_PUSH);
        int forever = -1; /* close waits until every message has gone */
        zmq_setsockopt(push, ZMQ_LINGER, &forever, sizeof forever);
        if (zmq_connect(push, c->endpoint) != 0)
            _exit(1);
        char *m = calloc(1, c->size);
        for (uint64_t i = 0; i < n; i++)
            if (zmq_send(push, m, c->size, 0) != (int)c->size)
                _exit(2);
        zmq_close(push);
        zmq_ctx_term(cc);
        _exit(0);
    }
    char *buf = malloc(c->size);
    for (uint64_t i = 0; i < n; i++) {
        int got;
        while ((got = zmq_recv(pull, buf, c->size, 0)) < 0 && zmq_errno() == EINTR)
            ; /* a signal (the child's end) is no failure */
        if (got != (int)c->size)
            fprintf(stderr, "zmq_recv: %d (%s) at %llu of %llu\n", got, zmq_strerror(zmq_errno()),
                    (unsigned long long)i, (unsigned long long)n);
        MP_BENCH_CHECK(got == (int)c->size);
    }
    int st;
    MP_BENCH_CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    double t = mp_bench_now() - t0;
    zmq_close(pull);
    zmq_ctx_term(zc);
    free(buf);
    unlink(c->endpoint + 6);
    return t;
}

int main(void)
{
    ctx a = {.size = 64};
    mp_bench_run("queue.1p1c_64B", "zmq", MP_BENCH_OPS_PER_S, 0, run, &a, mp_bench_n(1000000), 0);
    ctx b = a;
    b.size = 4096;
    mp_bench_run("queue.1p1c_4K", "zmq", MP_BENCH_OPS_PER_S, 0, run, &b, mp_bench_n(200000), 0);
    return 0;
}
