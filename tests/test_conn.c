/* Pipe / Connection: framing, limits, timeouts, descriptor passing, many
 * senders, mp_wait fairness, mp_wait_fds, and hostile input. */
// labels: unit tsan
#include <limits.h>
#include <mproc.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "mp_test.h"

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed * 31 + i * 7);
}

static bool check(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed * 31 + i * 7))
            return false;
    return true;
}

Test(conn, duplex_both_ways, .timeout = MP_TMO(10))
{
    mp_conn *a, *b;
    mp_expect_rc(mp_pipe_new(&a, &b, true), 0);
    char buf[32];
    size_t len;
    mp_expect_rc(mp_conn_send(a, "ping", 4), 0);
    mp_expect_rc(mp_conn_recv(b, buf, sizeof buf, &len, MP_TMO(5)), 0);
    cr_assert_eq(len, 4);
    cr_assert_eq(memcmp(buf, "ping", 4), 0);
    mp_expect_rc(mp_conn_send(b, "pong!", 5), 0);
    mp_expect_rc(mp_conn_send(b, "", 0), 0);
    mp_expect_rc(mp_conn_recv(a, buf, sizeof buf, &len, MP_TMO(5)), 0);
    cr_assert_eq(len, 5);
    cr_assert_eq(memcmp(buf, "pong!", 5), 0);
    mp_expect_rc(mp_conn_recv(a, NULL, 0, &len, MP_TMO(5)), 0);
    cr_assert_eq(len, 0, "an empty message is a message");
    mp_conn_free(a);
    mp_conn_free(b);
}

Test(conn, simplex_ends_have_one_direction, .timeout = MP_TMO(10))
{
    mp_conn *r, *w;
    mp_expect_rc(mp_pipe_new(&r, &w, false), 0);
    char buf[8];
    size_t len;
    mp_expect_rc(mp_conn_send(r, "x", 1), -EINVAL);
    mp_expect_rc(mp_conn_recv(w, buf, sizeof buf, &len, 0), -EINVAL);
    mp_expect_rc(mp_conn_send_fd(w, 0), -ENOTSOCK);
    cr_assert_eq(mp_conn_fileno(w), -1);
    cr_assert_geq(mp_conn_fileno(r), 0);
    mp_expect_rc(mp_conn_send(w, "abc", 3), 0);
    mp_expect_rc(mp_conn_recv(r, buf, sizeof buf, &len, MP_TMO(5)), 0);
    cr_assert_eq(len, 3);
    mp_conn_free(r);
    mp_conn_free(w);
}

Test(conn, bad_arguments, .timeout = MP_TMO(10))
{
    mp_conn *a, *b;
    size_t len;
    char buf[4];
    mp_expect_rc(mp_pipe_new(NULL, &b, true), -EINVAL);
    mp_expect_rc(mp_pipe_new(&a, &b, true), 0);
    mp_expect_rc(mp_conn_send(NULL, "x", 1), -EINVAL);
    mp_expect_rc(mp_conn_send(a, NULL, 3), -EINVAL);
    mp_expect_rc(mp_conn_recv(a, NULL, 4, &len, 0), -EINVAL);
    mp_expect_rc(mp_conn_recv(a, buf, 4, NULL, 0), -EINVAL);
    mp_expect_rc(mp_conn_recv(a, buf, 4, &len, NAN), -EINVAL);
    mp_expect_rc(mp_conn_poll(NULL, 0), -EINVAL);
    mp_expect_rc(mp_wait(NULL, 1, 0), -EINVAL);
    mp_expect_rc(mp_wait(&a, 0, 0), -EINVAL);
    mp_expect_rc(mp_conn_send_fd(a, -1), -EBADF);
    mp_expect_rc(mp_conn_set_max_msg(a, (size_t)1 << 33), -EINVAL);
    mp_conn_free(NULL);
    mp_conn_free(a);
    mp_conn_free(b);
}

Test(conn, too_small_buffer_keeps_the_message, .timeout = MP_TMO(10))
{
    mp_conn *a, *b;
    mp_expect_rc(mp_pipe_new(&a, &b, false), 0);
    unsigned char msg[10000], buf[10000];
    fill(msg, sizeof msg, 3);
    mp_expect_rc(mp_conn_send(b, msg, sizeof msg), 0);
    size_t len = 0;
    mp_expect_rc(mp_conn_recv(a, buf, 100, &len, MP_TMO(5)), MP_ETOOBIG);
    cr_assert_eq(len, sizeof msg, "*len says what is needed");
    mp_expect_rc(mp_conn_recv(a, buf, sizeof buf, &len, MP_TMO(5)), 0);
    cr_assert_eq(len, sizeof msg);
    cr_assert(check(buf, len, 3));
    mp_conn_free(a);
    mp_conn_free(b);
}

Test(conn, timeout_poll_and_end_of_stream, .timeout = MP_TMO(10))
{
    mp_conn *a, *b;
    mp_expect_rc(mp_pipe_new(&a, &b, true), 0);
    char buf[8];
    size_t len;
    double t0 = mp_test_now();
    mp_expect_rc(mp_conn_recv(a, buf, sizeof buf, &len, 0.05), MP_ETIMEDOUT);
    cr_assert_geq(mp_test_now() - t0, 0.045, "waited out the timeout");
    mp_expect_rc(mp_conn_poll(a, 0), 0);
    mp_expect_rc(mp_conn_send(b, "z", 1), 0);
    mp_expect_rc(mp_conn_poll(a, MP_TMO(5)), 1);
    mp_expect_rc(mp_conn_recv(a, buf, sizeof buf, &len, 0), 0);
    mp_conn_free(b);
    mp_expect_rc(mp_conn_poll(a, MP_TMO(5)), 1);
    mp_expect_rc(mp_conn_recv(a, buf, sizeof buf, &len, MP_TMO(5)), MP_ECLOSED);
    mp_expect_rc(mp_conn_send(a, "x", 1), MP_ECLOSED);
    mp_conn_free(a);
}

Test(conn, send_to_a_closed_pipe_is_an_error_not_a_signal, .timeout = MP_TMO(10))
{
    mp_conn *r, *w;
    mp_expect_rc(mp_pipe_new(&r, &w, false), 0);
    mp_conn_free(r);
    static unsigned char big[200000];
    mp_expect_rc(mp_conn_send(w, "x", 1), MP_ECLOSED);
    mp_expect_rc(mp_conn_send(w, big, sizeof big), MP_ECLOSED);
    sigset_t pending;
    sigpending(&pending);
    cr_assert_not(sigismember(&pending, SIGPIPE), "no SIGPIPE left pending");
    mp_conn_free(w);
}

/* A big message from a child process, taken with recv_alloc. */
static int send_big(void *arg)
{
    mp_conn *w = arg;
    size_t n = 3u << 20;
    unsigned char *m = malloc(n);
    if (m == NULL)
        return 1;
    fill(m, n, 9);
    int rc = mp_conn_send(w, m, n);
    free(m);
    return rc == 0 ? 0 : 2;
}

Test(conn, big_message_from_a_child, .timeout = MP_TMO(20))
{
    mp_conn *r, *w;
    mp_expect_rc(mp_pipe_new(&r, &w, false), 0);
    mp_process *p;
    mp_expect_rc(mp_process_new(&p, send_big, w, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    void *data;
    size_t len;
    mp_expect_rc(mp_conn_recv_alloc(r, &data, &len, MP_TMO(10)), 0);
    cr_assert_eq(len, 3u << 20);
    cr_assert(check(data, len, 9));
    free(data);
    mp_expect_rc(mp_process_join(p, MP_TMO(10)), 0);
    int code;
    mp_process_exitcode(p, &code);
    cr_assert_eq(code, 0);
    mp_process_free(p);
    mp_conn_free(r);
    mp_conn_free(w);
}

/* Several processes send on one end at once: frames never interleave. */
enum { SENDERS = 4, PER_SENDER = 60 };

typedef struct {
    mp_conn *w;
    unsigned id;
} sender_arg;

static int sender(void *arg)
{
    mp_conn *w = ((sender_arg *)arg)->w;
    unsigned id = ((sender_arg *)arg)->id;
    static unsigned char m[150000];
    for (unsigned i = 0; i < PER_SENDER; i++) {
        size_t n = i % 3 == 0 ? 100000 + i : i % 3 == 1 ? 50 + i : 3000 + i;
        unsigned seed = id * 1000 + i;
        fill(m + 8, n - 8, seed);
        memcpy(m, &seed, sizeof seed);
        memcpy(m + 4, &n, 4);
        if (mp_conn_send(w, m, n) != 0)
            return 1;
    }
    return 0;
}

static void many_senders(bool duplex)
{
    mp_conn *r, *w;
    mp_expect_rc(mp_pipe_new(&r, &w, duplex), 0);
    mp_process *p[SENDERS];
    sender_arg args[SENDERS];
    for (int i = 0; i < SENDERS; i++) {
        args[i] = (sender_arg){w, (unsigned)i};
        mp_expect_rc(mp_process_new(&p[i], sender, &args[i], NULL), 0);
        mp_expect_rc(mp_process_start(p[i]), 0);
    }
    int next[SENDERS] = {0};
    for (int k = 0; k < SENDERS * PER_SENDER; k++) {
        void *data;
        size_t len;
        mp_expect_rc(mp_conn_recv_alloc(r, &data, &len, MP_TMO(10)), 0);
        unsigned char *m = data;
        unsigned seed;
        uint32_t n;
        memcpy(&seed, m, 4);
        memcpy(&n, m + 4, 4);
        unsigned id = seed / 1000, i = seed % 1000;
        cr_assert_eq(len, n, "frame length matches its contents");
        cr_assert_lt(id, SENDERS);
        cr_assert_eq(i, (unsigned)next[id], "each sender's frames in order");
        next[id]++;
        cr_assert(check(m + 8, len - 8, seed), "frame %u of sender %u intact", i, id);
        free(data);
    }
    for (int i = 0; i < SENDERS; i++) {
        mp_expect_rc(mp_process_join(p[i], MP_TMO(10)), 0);
        mp_process_free(p[i]);
    }
    mp_conn_free(r);
    mp_conn_free(w);
}

Test(conn, many_senders_on_a_pipe, .timeout = MP_TMO(30)) { many_senders(false); }
Test(conn, many_senders_on_a_socket, .timeout = MP_TMO(30)) { many_senders(true); }

Test(conn, pass_a_descriptor, .timeout = MP_TMO(10))
{
    mp_conn *a, *b, *pr, *pw;
    mp_expect_rc(mp_pipe_new(&a, &b, true), 0);
    mp_expect_rc(mp_pipe_new(&pr, &pw, false), 0);
    mp_expect_rc(mp_conn_send(a, "before", 6), 0);
    mp_expect_rc(mp_conn_send_fd(a, mp_conn_fileno(pr)), 0);
    mp_expect_rc(mp_conn_send(a, "after", 5), 0);
    char buf[16];
    size_t len;
    int fd = -1;
    mp_expect_rc(mp_conn_recv_fd(b, &fd, MP_TMO(5)), -EBADMSG);
    mp_expect_rc(mp_conn_recv(b, buf, sizeof buf, &len, MP_TMO(5)), 0);
    cr_assert_eq(len, 6);
    mp_expect_rc(mp_conn_recv(b, buf, sizeof buf, &len, MP_TMO(5)), -EBADMSG);
    mp_expect_rc(mp_conn_recv_fd(b, &fd, MP_TMO(5)), 0);
    cr_assert_geq(fd, 0);
    cr_assert_neq(fd, mp_conn_fileno(pr), "a new descriptor");
    mp_expect_rc(mp_conn_recv(b, buf, sizeof buf, &len, MP_TMO(5)), 0);
    cr_assert_eq(len, 5);
    /* The passed descriptor reads the same pipe. */
    mp_expect_rc(mp_conn_send(pw, "via fd", 6), 0);
    unsigned char raw[32];
    ssize_t got = mp_test_read(fd, raw, 8 + 6, MP_TMO(5));
    cr_assert_eq(got, 8 + 6, "header and payload came through the passed descriptor");
    cr_assert_eq(memcmp(raw + 8, "via fd", 6), 0);
    close(fd);
    mp_conn_free(a);
    mp_conn_free(b);
    mp_conn_free(pr);
    mp_conn_free(pw);
}

Test(conn, wait_is_fair, .timeout = MP_TMO(10))
{
    mp_conn *r[3], *w[3];
    for (int i = 0; i < 3; i++)
        mp_expect_rc(mp_pipe_new(&r[i], &w[i], false), 0);
    mp_expect_rc(mp_wait(r, 3, 0.02), MP_ETIMEDOUT);
    /* The first two are always busy; the third gets one message. */
    for (int k = 0; k < 50; k++) {
        mp_expect_rc(mp_conn_send(w[0], "a", 1), 0);
        mp_expect_rc(mp_conn_send(w[1], "b", 1), 0);
    }
    mp_expect_rc(mp_conn_send(w[2], "c", 1), 0);
    int served[3] = {0};
    for (int k = 0; k < 30; k++) {
        int i = mp_wait(r, 3, MP_TMO(5));
        cr_assert(i >= 0 && i < 3, "mp_wait: %d", i);
        char c;
        size_t len;
        mp_expect_rc(mp_conn_recv(r[i], &c, 1, &len, 0), 0);
        served[i]++;
    }
    cr_assert_eq(served[2], 1, "the quiet connection is not starved");
    cr_assert_geq(served[0], 10);
    cr_assert_geq(served[1], 10);
    for (int i = 0; i < 3; i++) {
        mp_conn_free(r[i]);
        mp_conn_free(w[i]);
    }
}

/* Raw bytes written behind the framing's back, as a hostile peer would. */
static void raw_write(mp_conn *c, const void *p, size_t n)
{
    cr_assert_eq(write(mp_conn_fileno(c), p, n), (ssize_t)n);
}

Test(conn, garbage_closes_the_connection, .timeout = MP_TMO(10))
{
    mp_conn *a, *b;
    mp_expect_rc(mp_pipe_new(&a, &b, true), 0);
    raw_write(b, "GET / HTTP/1.1\r\n", 16);
    char buf[64];
    size_t len;
    mp_expect_rc(mp_conn_recv(a, buf, sizeof buf, &len, MP_TMO(5)), -EPROTO);
    mp_expect_rc(mp_conn_recv(a, buf, sizeof buf, &len, MP_TMO(5)), MP_ECLOSED);
    mp_expect_rc(mp_conn_send(a, "x", 1), MP_ECLOSED);
    mp_conn_free(a);
    mp_conn_free(b);
}

Test(conn, over_the_limit_is_refused_without_allocating, .timeout = MP_TMO(10))
{
    mp_conn *a, *b;
    mp_expect_rc(mp_pipe_new(&a, &b, true), 0);
    mp_expect_rc(mp_conn_set_max_msg(a, 1000), 0);
    unsigned char hdr[8] = {1, 0, 0, 0, 0xe9, 0x03, 0, 0}; /* 1001 bytes */
    raw_write(b, hdr, sizeof hdr);
    void *data;
    size_t len;
    mp_expect_rc(mp_conn_recv_alloc(a, &data, &len, MP_TMO(5)), -EMSGSIZE);
    mp_conn_free(a);
    mp_conn_free(b);

    /* A claimed 4 GiB - 1 under a 4 GiB limit, then the stream ends: the
     * receiver must not have tried to allocate it. */
    mp_expect_rc(mp_pipe_new(&a, &b, true), 0);
    mp_expect_rc(mp_conn_set_max_msg(a, UINT32_MAX), 0);
    unsigned char huge[8 + 10] = {1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
    raw_write(b, huge, sizeof huge);
    mp_conn_free(b);
    mp_expect_rc(mp_conn_recv_alloc(a, &data, &len, MP_TMO(5)), -EPROTO);
    mp_conn_free(a);
}

Test(conn, partial_frame_survives_a_timeout, .timeout = MP_TMO(10))
{
    mp_conn *a, *b;
    mp_expect_rc(mp_pipe_new(&a, &b, true), 0);
    unsigned char frame[8 + 20000];
    frame[0] = 1;
    frame[1] = frame[2] = frame[3] = 0;
    uint32_t n = 20000;
    memcpy(frame + 4, &n, 4);
    fill(frame + 8, n, 5);
    raw_write(b, frame, 8 + 7000);
    unsigned char buf[20000];
    size_t len;
    mp_expect_rc(mp_conn_recv(a, buf, sizeof buf, &len, 0.05), MP_ETIMEDOUT);
    raw_write(b, frame + 8 + 7000, 6000);
    void *data;
    mp_expect_rc(mp_conn_recv_alloc(a, &data, &len, 0.05), MP_ETIMEDOUT);
    raw_write(b, frame + 8 + 13000, 7000);
    mp_expect_rc(mp_conn_recv(a, buf, sizeof buf, &len, MP_TMO(5)), 0);
    cr_assert_eq(len, 20000);
    cr_assert(check(buf, len, 5), "the pieces were kept in order");
    mp_conn_free(a);
    mp_conn_free(b);
}

/* A sender killed in the middle of a big frame: the stream is lost, and
 * later senders are told so instead of corrupting it further. */
static int blocked_sender(void *arg)
{
    mp_conn *w = arg;
    static unsigned char big[1 << 20];
    mp_conn_send(w, big, sizeof big); /* blocks: nobody reads */
    return 0;
}

Test(conn, sender_killed_mid_frame_breaks_the_stream, .timeout = MP_TMO(20))
{
    mp_conn *r, *w;
    mp_expect_rc(mp_pipe_new(&r, &w, false), 0);
    mp_process *p;
    mp_expect_rc(mp_process_new(&p, blocked_sender, w, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    int queued = 0;
    double end = mp_test_now() + MP_TMO(10);
    while (queued < 65536 && mp_test_now() < end)
        ioctl(mp_conn_fileno(r), FIONREAD, &queued);
    cr_assert_geq(queued, 65536, "the child filled the pipe mid-frame");
    mp_expect_rc(mp_process_kill(p), 0);
    mp_expect_rc(mp_process_join(p, MP_TMO(10)), 0);
    mp_process_free(p);
    static unsigned char big[100000];
    mp_expect_rc(mp_conn_send(w, big, sizeof big), MP_EBROKEN);
    mp_conn_free(r);
    mp_conn_free(w);
}

/* ---- mp_wait_fds: any descriptors (sentinels: see test_process.c) ---- */

Test(conn, wait_fds_bad_input, .timeout = MP_TMO(5))
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    mp_expect_rc(mp_wait_fds(NULL, 1, 0), -EINVAL);
    mp_expect_rc(mp_wait_fds(fds, 1, NAN), -EINVAL);
    int neg[2] = {fds[0], -1};
    mp_expect_rc(mp_wait_fds(neg, 2, 0), -EINVAL);
    mp_expect_rc(mp_wait_fds(NULL, 0, MP_FOREVER), -EINVAL); /* could never end */
    mp_expect_rc(mp_wait_fds(fds, (size_t)INT_MAX + 1, 0), -EINVAL);
    int closed = mp_test_lowest_free_fd();
    int bad[2] = {fds[0], closed};
    mp_expect_rc(mp_wait_fds(bad, 2, MP_TMO(5)), -EBADF);
    close(fds[0]);
    close(fds[1]);
}

Test(conn, wait_fds_timeouts, .timeout = MP_TMO(10))
{
    int a[2], b[2];
    cr_assert_eq(pipe(a), 0);
    cr_assert_eq(pipe(b), 0);
    int fds[2] = {a[0], b[0]};
    mp_expect_rc(mp_wait_fds(fds, 2, 0), MP_ETIMEDOUT);
    double t0 = mp_test_now();
    mp_expect_rc(mp_wait_fds(fds, 2, 0.05), MP_ETIMEDOUT);
    cr_assert_geq(mp_test_now() - t0, 0.049, "waited its timeout");
    mp_expect_rc(mp_wait_fds(NULL, 0, 0), MP_ETIMEDOUT);
    t0 = mp_test_now();
    mp_expect_rc(mp_wait_fds(NULL, 0, 0.05), MP_ETIMEDOUT);
    cr_assert_geq(mp_test_now() - t0, 0.049, "nothing to wait for: waits out the timeout");
    for (int i = 0; i < 2; i++) {
        close(a[i]);
        close(b[i]);
    }
}

Test(conn, wait_fds_gives_the_lowest_ready_index, .timeout = MP_TMO(10))
{
    enum { N = 20 }; /* more than fit on the stack inside */
    int p[N][2], fds[N];
    for (int i = 0; i < N; i++) {
        cr_assert_eq(pipe(p[i]), 0);
        fds[i] = p[i][0];
    }
    cr_assert_eq(write(p[17][1], "x", 1), 1);
    mp_expect_rc(mp_wait_fds(fds, N, 0), 17);
    cr_assert_eq(write(p[3][1], "x", 1), 1);
    mp_expect_rc(mp_wait_fds(fds, N, MP_FOREVER), 3);
    mp_expect_rc(mp_wait_fds(fds, N, 0), 3); /* readiness is not consumed */
    close(p[1][1]); /* end of file is ready too */
    mp_expect_rc(mp_wait_fds(fds, N, -5.0), 1);
    /* A socket with data, beside a pipe that has none. */
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int mix[2] = {p[0][0], sv[0]};
    mp_expect_rc(mp_wait_fds(mix, 2, 0), MP_ETIMEDOUT);
    cr_assert_eq(write(sv[1], "y", 1), 1);
    mp_expect_rc(mp_wait_fds(mix, 2, MP_TMO(5)), 1);
    close(sv[0]);
    close(sv[1]);
    /* A connection's descriptor, once a message is on its way. */
    mp_conn *r, *w;
    mp_expect_rc(mp_pipe_new(&r, &w, false), 0);
    int cf[2] = {p[0][0], mp_conn_fileno(r)};
    mp_expect_rc(mp_wait_fds(cf, 2, 0), MP_ETIMEDOUT);
    mp_expect_rc(mp_conn_send(w, "hi", 2), 0);
    mp_expect_rc(mp_wait_fds(cf, 2, MP_TMO(5)), 1);
    mp_conn_free(r);
    mp_conn_free(w);
    for (int i = 0; i < N; i++) {
        close(p[i][0]);
        if (i != 1)
            close(p[i][1]);
    }
}
