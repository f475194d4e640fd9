/* Queue benchmarks: messages per second through a queue between processes.
 *   queue.1p1c_64B   one producer process, one consumer, 64-byte messages
 *   queue.1p1c_4K    the same with 4 KiB messages
 *   queue.1p1c_1M    the same with 1 MiB messages (MB/s)
 *   queue.pc_64B_wN  N producers and N consumers on one queue (N = 1, 2, 4)
 * posix: the floor a hand-written program would get from a pipe carrying
 * length-prefixed records (no crash safety, one reader per record). */
#include <mproc.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

typedef struct {
    size_t size;  /* bytes per message */
    int nprod;    /* producer processes (consumers: the same number) */
    mp_queue *q;
    int fd[2];
    unsigned char *buf;
} qctx;

static void fill(unsigned char *p, size_t n, uint64_t i)
{
    memset(p, (int)(i & 0xff), n);
    memcpy(p, &i, n < sizeof i ? n : sizeof i);
}

static pid_t spawn_producer(qctx *c, uint64_t from, uint64_t n, bool use_pipe)
{
    pid_t pid = fork();
    MP_BENCH_CHECK(pid >= 0);
    if (pid != 0)
        return pid;
    unsigned char *buf = malloc(sizeof(uint32_t) + c->size);
    if (buf == NULL)
        _exit(1);
    for (uint64_t i = from; i < from + n; i++) {
        fill(buf + sizeof(uint32_t), c->size, i);
        if (use_pipe) {
            uint32_t len = (uint32_t)c->size;
            memcpy(buf, &len, sizeof len);
            size_t left = sizeof len + c->size;
            const unsigned char *p = buf;
            while (left > 0) {
                ssize_t w = write(c->fd[1], p, left);
                if (w <= 0)
                    _exit(1);
                p += w;
                left -= (size_t)w;
            }
        } else if (mp_queue_put(c->q, buf + sizeof(uint32_t), c->size, MP_FOREVER) != 0) {
            _exit(1);
        }
    }
    _exit(0);
}

static bool read_all(int fd, void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

/* Take n messages; check their size and first bytes. */
static void consume(qctx *c, uint64_t n, bool use_pipe)
{
    for (uint64_t i = 0; i < n; i++) {
        size_t len;
        if (use_pipe) {
            uint32_t l32;
            MP_BENCH_CHECK(read_all(c->fd[0], &l32, sizeof l32));
            MP_BENCH_CHECK(l32 == c->size);
            MP_BENCH_CHECK(read_all(c->fd[0], c->buf, l32));
            len = l32;
        } else {
            MP_BENCH_CHECK(mp_queue_get(c->q, c->buf, c->size, &len, MP_FOREVER) == 0);
        }
        MP_BENCH_CHECK(len == c->size);
    }
}

static void reap(pid_t pid)
{
    int st;
    MP_BENCH_CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* nprod producers put n messages in all; nprod consumers (the parent and
 * nprod - 1 forked ones) take them.  Time from the first fork to the last
 * message taken. */
static double run_queue(qctx *c, uint64_t n, bool use_pipe)
{
    pid_t pids[16];
    int np = c->nprod;
    uint64_t per = n / (uint64_t)np;
    double t0 = mp_bench_now();
    for (int i = 0; i < np; i++)
        pids[i] = spawn_producer(c, (uint64_t)i * per, per, use_pipe);
    for (int i = 1; i < np; i++) {
        pids[np + i - 1] = fork();
        MP_BENCH_CHECK(pids[np + i - 1] >= 0);
        if (pids[np + i - 1] == 0) {
            consume(c, per, use_pipe);
            _exit(0);
        }
    }
    consume(c, per, use_pipe);
    for (int i = 0; i < 2 * np - 1; i++)
        reap(pids[i]);
    return mp_bench_now() - t0;
}

static double body_mproc(void *ctx, uint64_t n) { return run_queue(ctx, n, false); }
static double body_posix(void *ctx, uint64_t n) { return run_queue(ctx, n, true); }

static void pair(const char *bench, size_t size, int nprod, uint64_t n)
{
    qctx c = {.size = size, .nprod = nprod};
    mp_queue_opts o = {.maxsize = size >= 65536 ? 16 : 1000, .max_msg = size};
    MP_BENCH_CHECK(mp_queue_new(&c.q, &o) == 0);
    MP_BENCH_CHECK(pipe(c.fd) == 0);
    c.buf = malloc(size);
    MP_BENCH_CHECK(c.buf != NULL);
    mp_bench_metric m = size >= (1u << 20) ? MP_BENCH_MB_PER_S : MP_BENCH_OPS_PER_S;
    mp_bench_run(bench, "mproc", m, (double)size, body_mproc, &c, n, 0);
    /* A pipe with several readers would interleave records: posix only
     * stands in for the one-consumer shapes. */
    if (nprod == 1 && strncmp(bench, "queue.pc_", 9) != 0)
        mp_bench_run(bench, "posix", m, (double)size, body_posix, &c, n, 0);
    mp_queue_free(c.q);
    close(c.fd[0]);
    close(c.fd[1]);
    free(c.buf);
}

int main(void)
{
    pair("queue.1p1c_64B", 64, 1, mp_bench_n(1000000));
    pair("queue.1p1c_4K", 4096, 1, mp_bench_n(200000));
    pair("queue.1p1c_1M", 1 << 20, 1, mp_bench_n(2000));
    pair("queue.pc_64B_w1", 64, 1, mp_bench_n(1000000));
    pair("queue.pc_64B_w2", 64, 2, mp_bench_n(1000000));
    pair("queue.pc_64B_w4", 64, 4, mp_bench_n(1000000));
    return 0;
}
