/* Listener / Client: Unix and TCP addresses, the authkey challenge in both
 * directions, clients that lie, talk garbage or say nothing, and a Unix
 * socket left by a killed listener. */
// labels: unit
#include <arpa/inet.h>
#include <fcntl.h>
#include <math.h>
#include <mproc.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "mp_test.h"

static const char KEY[] = "secret password";

typedef struct {
    char address[200];
    const char *key;
    size_t keylen;
} client_arg;

/* Connect, say hello, echo one message back. */
static int client(void *arg)
{
    client_arg *a = arg;
    mp_conn *c;
    int rc = mp_client_connect(&c, a->address, a->key, a->keylen, 10.0);
    if (rc < 0)
        return rc == MP_EAUTH ? 3 : 2;
    char buf[64];
    size_t len;
    if (mp_conn_send(c, "hello", 5) != 0 || mp_conn_recv(c, buf, sizeof buf, &len, 10.0) != 0 ||
        mp_conn_send(c, buf, len) != 0)
        rc = 4;
    mp_conn_free(c);
    return rc;
}

static int run_client(mp_process **p, client_arg *a)
{
    int rc = mp_process_new(p, client, a, NULL);
    return rc == 0 ? mp_process_start(*p) : rc;
}

static int client_exit(mp_process *p)
{
    int code = -1;
    mp_expect_rc(mp_process_join(p, MP_TMO(10)), 0);
    mp_process_exitcode(p, &code);
    mp_process_free(p);
    return code;
}

static void round_trip_with(mp_listener *l, const char *key, size_t keylen)
{
    client_arg a = {.key = key, .keylen = keylen};
    snprintf(a.address, sizeof a.address, "%s", mp_listener_address(l));
    mp_process *p;
    mp_expect_rc(run_client(&p, &a), 0);
    mp_conn *c;
    mp_expect_rc(mp_listener_accept(l, &c, MP_TMO(10)), 0);
    char buf[64];
    size_t len;
    mp_expect_rc(mp_conn_recv(c, buf, sizeof buf, &len, MP_TMO(10)), 0);
    cr_assert_eq(len, 5);
    cr_assert_eq(memcmp(buf, "hello", 5), 0);
    mp_expect_rc(mp_conn_send(c, "echo me", 7), 0);
    mp_expect_rc(mp_conn_recv(c, buf, sizeof buf, &len, MP_TMO(10)), 0);
    cr_assert_eq(len, 7);
    cr_assert_eq(memcmp(buf, "echo me", 7), 0);
    cr_assert_eq(client_exit(p), 0);
    mp_conn_free(c);
}

static void round_trip(const char *address, const char *key, size_t keylen)
{
    mp_listener *l;
    mp_expect_rc(mp_listener_new(&l, address, key, keylen), 0);
    round_trip_with(l, key, keylen);
    mp_listener_free(l);
}

static void round_trip_on(mp_listener *l) { round_trip_with(l, NULL, 0); }

static void unix_address(char *buf, size_t cap)
{
    snprintf(buf, cap, "unix:/tmp/mproc-test-%d.sock", (int)getpid());
}

Test(listener, unix_with_key, .timeout = MP_TMO(20))
{
    char addr[100];
    unix_address(addr, sizeof addr);
    round_trip(addr, KEY, sizeof KEY - 1);
    cr_assert_neq(access(addr + 5, F_OK), 0, "the socket file is removed");
}

Test(listener, unix_without_key, .timeout = MP_TMO(20))
{
    char addr[100];
    unix_address(addr, sizeof addr);
    round_trip(addr, NULL, 0);
}

Test(listener, tcp_with_key_on_a_chosen_port, .timeout = MP_TMO(20))
{
    mp_listener *l;
    mp_expect_rc(mp_listener_new(&l, "tcp:127.0.0.1:0", KEY, sizeof KEY - 1), 0);
    const char *a = mp_listener_address(l);
    cr_assert(strncmp(a, "tcp:127.0.0.1:", 14) == 0 && strcmp(a, "tcp:127.0.0.1:0") != 0,
              "the address names the port picked: %s", a);
    mp_listener_free(l);
    round_trip("tcp:127.0.0.1:0", KEY, sizeof KEY - 1);
}

Test(listener, wrong_key_fails_on_both_sides, .timeout = MP_TMO(20))
{
    char addr[100];
    unix_address(addr, sizeof addr);
    mp_listener *l;
    mp_expect_rc(mp_listener_new(&l, addr, KEY, sizeof KEY - 1), 0);
    client_arg a = {.key = "guess", .keylen = 5};
    snprintf(a.address, sizeof a.address, "%s", addr);
    mp_process *p;
    mp_expect_rc(run_client(&p, &a), 0);
    mp_conn *c = (mp_conn *)1;
    mp_expect_rc(mp_listener_accept(l, &c, MP_TMO(10)), MP_EAUTH);
    cr_assert_null(c);
    cr_assert_eq(client_exit(p), 3, "the client is told MP_EAUTH too");
    mp_listener_free(l);
}

Test(listener, accept_times_out, .timeout = MP_TMO(10))
{
    mp_listener *l;
    mp_expect_rc(mp_listener_new(&l, "tcp:127.0.0.1:0", NULL, 0), 0);
    mp_conn *c;
    mp_expect_rc(mp_listener_accept(l, &c, 0.05), MP_ETIMEDOUT);
    mp_listener_free(l);
}

Test(listener, bad_addresses, .timeout = MP_TMO(10))
{
    mp_listener *l;
    mp_conn *c;
    mp_expect_rc(mp_listener_new(&l, "http://x", NULL, 0), -EINVAL);
    mp_expect_rc(mp_listener_new(&l, "tcp:127.0.0.1", NULL, 0), -EINVAL);
    mp_expect_rc(mp_listener_new(&l, "tcp:127.0.0.1:99999", NULL, 0), -EINVAL);
    mp_expect_rc(mp_listener_new(&l, "unix:", NULL, 0), -EINVAL);
    mp_expect_rc(mp_listener_new(&l, "tcp:127.0.0.1:0", NULL, 4), -EINVAL);
    mp_expect_rc(mp_listener_new(NULL, "tcp:127.0.0.1:0", NULL, 0), -EINVAL);
    mp_expect_rc(mp_client_connect(&c, "unix:/nonexistent/mproc.sock", NULL, 0, 1), -ENOENT);
    mp_expect_rc(mp_listener_accept(NULL, &c, 0), -EINVAL);
    cr_assert_null(mp_listener_address(NULL));
    mp_listener_free(NULL);
}

/* A client that skips the protocol and sends garbage (or a huge claimed
 * frame) must be dropped with an error, not crash or hang the listener. */
static int raw_client(void *arg)
{
    const char *addr = arg;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof un.sun_path, "%s", addr + 5);
    if (connect(fd, (struct sockaddr *)&un, sizeof un) < 0)
        return 1;
    unsigned char junk[64];
    if (read(fd, junk, sizeof junk) <= 0) /* the challenge */
        return 2;
    unsigned char huge[8] = {1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f};
    if (write(fd, huge, sizeof huge) != (ssize_t)sizeof huge)
        return 3;
    char c;
    ssize_t r = read(fd, &c, 1); /* the listener must hang up */
    close(fd);
    return r == 0 ? 0 : 4;
}

Test(listener, hostile_client_is_dropped, .timeout = MP_TMO(20))
{
    char addr[100];
    unix_address(addr, sizeof addr);
    mp_listener *l;
    mp_expect_rc(mp_listener_new(&l, addr, KEY, sizeof KEY - 1), 0);
    mp_process *p;
    mp_expect_rc(mp_process_new(&p, raw_client, addr, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    mp_conn *c;
    int rc = mp_listener_accept(l, &c, MP_TMO(10));
    cr_assert(rc == -EPROTO || rc == MP_EAUTH, "accept: %s", mp_strerror(rc));
    cr_assert_eq(client_exit(p), 0, "the listener hung up on it");
    /* It still serves honest clients. */
    client_arg a = {.key = KEY, .keylen = sizeof KEY - 1};
    snprintf(a.address, sizeof a.address, "%s", addr);
    mp_expect_rc(run_client(&p, &a), 0);
    mp_expect_rc(mp_listener_accept(l, &c, MP_TMO(10)), 0);
    char buf[16];
    size_t len;
    mp_expect_rc(mp_conn_recv(c, buf, sizeof buf, &len, MP_TMO(10)), 0);
    mp_expect_rc(mp_conn_send(c, "x", 1), 0);
    mp_expect_rc(mp_conn_recv(c, buf, sizeof buf, &len, MP_TMO(10)), 0);
    cr_assert_eq(client_exit(p), 0);
    mp_conn_free(c);
    mp_listener_free(l);
}

/* ---- handshakes side by side: no client holds up the others ---- */

enum { SILENT = 50, GOOD = 500 };

typedef struct {
    char address[200];
    int report; /* one byte once every silent client is connected */
    int go;     /* read end: hang up at EOF */
    int go_w;   /* its write end, closed in the child */
} silent_arg;

static int tcp_connect(const char *address)
{
    int port = atoi(strrchr(address, ':') + 1);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&in, sizeof in) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Connect SILENT times and never say a word. */
static int silent_clients(void *arg)
{
    silent_arg *a = arg;
    close(a->go_w);
    int fds[SILENT];
    for (int i = 0; i < SILENT; i++)
        if ((fds[i] = tcp_connect(a->address)) < 0)
            return 1;
    char c = 's';
    (void)!write(a->report, &c, 1);
    while (read(a->go, &c, 1) > 0)
        ;
    for (int i = 0; i < SILENT; i++)
        close(fds[i]);
    return 0;
}

static _Atomic int good_failed;

static void *good_client(void *arg)
{
    mp_conn *c;
    int rc = mp_client_connect(&c, arg, KEY, sizeof KEY - 1, MP_TMO(5));
    if (rc == 0)
        mp_conn_free(c);
    else
        atomic_fetch_add(&good_failed, 1);
    return NULL;
}

/* GOOD clients at once, each with a 5 s limit (times the sanitizers' factor): exit code = how many failed. */
static int good_clients(void *arg)
{
    pthread_t t[GOOD];
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 256 << 10);
    int made = 0;
    for (; made < GOOD; made++)
        if (pthread_create(&t[made], &at, good_client, arg) != 0)
            break;
    for (int i = 0; i < made; i++)
        pthread_join(t[i], NULL);
    int failed = atomic_load(&good_failed) + (GOOD - made);
    return failed > 255 ? 255 : failed;
}

Test(listener, silent_clients_hold_up_no_one, .timeout = MP_TMO(60))
{
    mp_listener *l;
    mp_expect_rc(mp_listener_new(&l, "tcp:127.0.0.1:0", KEY, sizeof KEY - 1), 0);
    silent_arg s;
    snprintf(s.address, sizeof s.address, "%s", mp_listener_address(l));
    int rep[2], go[2];
    cr_assert_eq(pipe(rep), 0);
    cr_assert_eq(pipe(go), 0);
    s.report = rep[1];
    s.go = go[0];
    s.go_w = go[1];
    mp_process *silent, *good;
    /* Daemons: a failed assertion ends the test, not waits on them. */
    mp_process_opts daemon = {.daemon = true};
    mp_expect_rc(mp_process_new(&silent, silent_clients, &s, &daemon), 0);
    mp_expect_rc(mp_process_start(silent), 0);
    char c;
    cr_assert_eq(mp_test_read(rep[0], &c, 1, MP_TMO(10)), 1, "the silent clients connected");
    /* The silent ones are first in line; the good ones come after. */
    mp_expect_rc(mp_process_new(&good, good_clients, s.address, &daemon), 0);
    mp_expect_rc(mp_process_start(good), 0);
    int served = 0;
    while (served < GOOD) {
        mp_conn *conn;
        int rc = mp_listener_accept(l, &conn, MP_TMO(20));
        cr_assert_eq(rc, 0, "accept after %d served: %s", served, mp_strerror(rc));
        mp_conn_free(conn);
        served++;
    }
    mp_expect_rc(mp_process_join(good, MP_TMO(20)), 0);
    int failed = -1;
    mp_expect_rc(mp_process_exitcode(good, &failed), 0);
    cr_assert_eq(failed, 0, "%d of %d good clients were not served in time", failed, GOOD);
    close(go[1]);
    close(go[0]);
    close(rep[0]);
    close(rep[1]);
    mp_expect_rc(mp_process_join(silent, MP_TMO(10)), 0);
    mp_process_free(good);
    mp_process_free(silent);
    mp_listener_free(l);
}

/* A burst of connections waits in the kernel's queue for accept: with a
 * short queue, the kernel drops the SYNs past it and those clients retry a
 * second later, then 3 s, 7 s... (a good client timed out behind them). */
enum { BURST = 600 };

Test(listener, a_burst_of_connections_is_queued_not_dropped, .timeout = MP_TMO(20))
{
    mp_listener *l;
    mp_expect_rc(mp_listener_new(&l, "tcp:127.0.0.1:0", KEY, sizeof KEY - 1), 0);
    int port = atoi(strrchr(mp_listener_address(l), ':') + 1);
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    static struct pollfd pfd[BURST];
    for (int i = 0; i < BURST; i++) {
        pfd[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        cr_assert_geq(pfd[i].fd, 0);
        pfd[i].events = POLLOUT;
        int rc = connect(pfd[i].fd, (struct sockaddr *)&in, sizeof in);
        cr_assert(rc == 0 || errno == EINPROGRESS, "connect %d: %s", i, strerror(errno));
    }
    /* Nobody accepts yet: a queued connection completes at once, a dropped
     * one only at its SYN's retry, a second later. */
    int done = 0;
    double until = mp_test_now() + 0.5;
    while (done < BURST && mp_test_now() < until) {
        done = 0;
        cr_assert_geq(poll(pfd, BURST, 50), 0);
        for (int i = 0; i < BURST; i++)
            done += (pfd[i].revents & POLLOUT) != 0;
    }
    cr_assert_eq(done, BURST, "%d of %d connections completed without an accept", done, BURST);
    for (int i = 0; i < BURST; i++)
        close(pfd[i].fd);
    mp_expect_rc(mp_listener_set_backlog(l, 16), 0);
    mp_expect_rc(mp_listener_set_backlog(NULL, 10), -EINVAL);
    mp_expect_rc(mp_listener_set_backlog(l, -1), -EINVAL);
    mp_listener_free(l);
}

Test(listener, a_silent_client_is_dropped_at_its_time_limit, .timeout = MP_TMO(20))
{
    mp_listener *l;
    mp_expect_rc(mp_listener_new(&l, "tcp:127.0.0.1:0", KEY, sizeof KEY - 1), 0);
    mp_expect_rc(mp_listener_set_handshake_timeout(l, 0.2), 0);
    mp_expect_rc(mp_listener_set_handshake_timeout(l, 0), -EINVAL);
    mp_expect_rc(mp_listener_set_handshake_timeout(l, NAN), -EINVAL);
    mp_expect_rc(mp_listener_set_handshake_timeout(NULL, 1), -EINVAL);
    int fd = tcp_connect(mp_listener_address(l));
    cr_assert_geq(fd, 0);
    mp_conn *c;
    double t0 = mp_test_now();
    mp_expect_rc(mp_listener_accept(l, &c, 1.0), MP_ETIMEDOUT);
    cr_assert_geq(mp_test_now() - t0, 0.9, "accept waits out its own timeout");
    /* The silent client got its challenge, then the listener hung up. */
    char buf[256];
    size_t got = 0;
    for (;;) {
        ssize_t r = mp_test_read(fd, buf, 1, MP_TMO(5));
        if (r <= 0) {
            cr_assert_eq(r, 0, "the listener hangs up, not the test's timeout");
            break;
        }
        got++;
    }
    cr_assert_gt(got, 0, "the challenge came first");
    close(fd);
    /* A good client is still served. */
    round_trip_with(l, KEY, sizeof KEY - 1);
    mp_listener_free(l);
}

/* ---- a Unix socket left by a listener that was killed ---- */

typedef struct {
    char address[100];
    int report; /* one byte once it listens */
} listen_arg;

static int listen_and_wait(void *arg)
{
    listen_arg *a = arg;
    mp_listener *l;
    if (mp_listener_new(&l, a->address, NULL, 0) < 0)
        return 1;
    char c = 'l';
    (void)!write(a->report, &c, 1);
    for (;;)
        pause();
}

Test(listener, a_stale_unix_socket_is_taken_over, .timeout = MP_TMO(20))
{
    listen_arg la;
    unix_address(la.address, sizeof la.address);
    const char *addr = la.address;
    int rep[2];
    cr_assert_eq(pipe(rep), 0);
    la.report = rep[1];
    mp_process *p;
    mp_expect_rc(mp_process_new(&p, listen_and_wait, &la, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    char ch;
    int got = (int)mp_test_read(rep[0], &ch, 1, MP_TMO(10));
    if (got != 1)
        mp_process_kill(p);
    cr_assert_eq(got, 1, "the first listener listens");
    close(rep[0]);
    close(rep[1]);
    mp_listener *l, *l2;
    int rc = mp_listener_new(&l, addr, NULL, 0);
    mp_expect_rc(mp_process_kill(p), 0);
    mp_expect_rc(rc, -EADDRINUSE); /* alive: not ours to take */
    mp_expect_rc(mp_process_join(p, MP_TMO(10)), 0);
    mp_process_free(p);
    cr_assert_eq(access(addr + 5, F_OK), 0, "the killed listener left its socket file");
    mp_expect_rc(mp_listener_new(&l, addr, NULL, 0), 0);
    mp_expect_rc(mp_listener_new(&l2, addr, NULL, 0), -EADDRINUSE);
    round_trip_on(l);
    mp_listener_free(l);
    /* A file that is no socket is never removed. */
    int fd = open(addr + 5, O_CREAT | O_WRONLY | O_EXCL, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    mp_expect_rc(mp_listener_new(&l, addr, NULL, 0), -EADDRINUSE);
    cr_assert_eq(access(addr + 5, F_OK), 0, "a plain file stays");
    unlink(addr + 5);
}
