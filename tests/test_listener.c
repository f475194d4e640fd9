/* Listener / Client: Unix and TCP addresses, the authkey challenge in both
 * directions, and clients that lie or talk garbage. */
// labels: unit
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>
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

static void round_trip(const char *address, const char *key, size_t keylen)
{
    mp_listener *l;
    mp_expect_rc(mp_listener_new(&l, address, key, keylen), 0);
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
    mp_listener_free(l);
}

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
