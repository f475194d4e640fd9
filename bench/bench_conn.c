/* Connection benchmarks: messages per second through a Pipe between two
 * processes (one sender, one receiver).
 *   conn.pipe_64B, conn.pipe_4K   mp_pipe_new(duplex = false)
 *   conn.pipe_2s_64B             two sending processes on one end
 * posix: the floor, raw write()/read() of the same fixed-size messages on a
 * pipe (no framing: the reader knows the size). */
#include <mproc.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

typedef struct {
    size_t size;
    int senders;
    mp_conn *r, *w;
    int fd[2];
    unsigned char *buf;
} cctx;

static pid_t spawn_sender(cctx *c, uint64_t n, bool raw)
{
    pid_t pid = fork();
    MP_BENCH_CHECK(pid >= 0);
    if (pid != 0)
        return pid;
    unsigned char *m = calloc(1, c->size);
    for (uint64_t i = 0; i < n; i++) {
        memcpy(m, &i, sizeof i < c->size ? sizeof i : c->size);
        if (raw) {
            if (write(c->fd[1], m, c->size) != (ssize_t)c->size)
                _exit(1);
        } else if (mp_conn_send(c->w, m, c->size) != 0) {
            _exit(1);
        }
    }
    _exit(0);
}

static double run(cctx *c, uint64_t n, bool raw)
{
    pid_t pids[4];
    uint64_t per = n / (uint64_t)c->senders;
    double t0 = mp_bench_now();
    for (int i = 0; i < c->senders; i++)
        pids[i] = spawn_sender(c, per, raw);
    for (uint64_t i = 0; i < per * (uint64_t)c->senders; i++) {
        if (raw) {
            size_t got = 0;
            while (got < c->size) {
                ssize_t r = read(c->fd[0], c->buf + got, c->size - got);
                MP_BENCH_CHECK(r > 0);
                got += (size_t)r;
            }
        } else {
            size_t len;
            MP_BENCH_CHECK(mp_conn_recv(c->r, c->buf, c->size, &len, MP_FOREVER) == 0);
            MP_BENCH_CHECK(len == c->size);
        }
    }
    for (int i = 0; i < c->senders; i++) {
        int st;
        MP_BENCH_CHECK(waitpid(pids[i], &st, 0) == pids[i] && WIFEXITED(st) &&
                       WEXITSTATUS(st) == 0);
    }
    return mp_bench_now() - t0;
}

static double body_mproc(void *ctx, uint64_t n) { return run(ctx, n, false); }
static double body_posix(void *ctx, uint64_t n) { return run(ctx, n, true); }

static void pair(const char *bench, size_t size, int senders, uint64_t n)
{
    cctx c = {.size = size, .senders = senders};
    MP_BENCH_CHECK(mp_pipe_new(&c.r, &c.w, false) == 0);
    MP_BENCH_CHECK(pipe(c.fd) == 0);
    c.buf = malloc(size);
    MP_BENCH_CHECK(c.buf != NULL);
    mp_bench_run(bench, "mproc", MP_BENCH_OPS_PER_S, 0, body_mproc, &c, n, 0);
    if (senders == 1) /* raw writes bigger than PIPE_BUF could interleave */
        mp_bench_run(bench, "posix", MP_BENCH_OPS_PER_S, 0, body_posix, &c, n, 0);
    mp_conn_free(c.r);
    mp_conn_free(c.w);
    close(c.fd[0]);
    close(c.fd[1]);
    free(c.buf);
}

int main(void)
{
    pair("conn.pipe_64B", 64, 1, mp_bench_n(1000000));
    pair("conn.pipe_4K", 4096, 1, mp_bench_n(300000));
    pair("conn.pipe_2s_64B", 64, 2, mp_bench_n(1000000));
    return 0;
}
