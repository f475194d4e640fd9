/* Listener / Client (multiprocessing.connection) with mutual authentication.
 *
 * With an authkey, the two sides run Python's challenge in both directions:
 *   listener -> client   "#CHALLENGE#" + 32 random bytes
 *   client -> listener   HMAC-SHA256(key, that message)
 *   listener -> client   "#WELCOME#" or "#FAILURE#"
 * then the same with the roles swapped, so each side knows the other holds
 * the key before any user message flows.  libsodium provides the random
 * bytes, the HMAC and its constant-time check.  Handshake frames are
 * limited to 64 bytes, so a peer cannot make us buffer anything larger
 * before it is authenticated. */
#define _GNU_SOURCE
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn_int.h"
#include "mproc/conn.h"
#include "os/io.h"
#include "os/os.h"

#define CHALLENGE "#CHALLENGE#"
#define WELCOME "#WELCOME#"
#define FAILURE "#FAILURE#"
enum { NONCE = 32, CHALLENGE_LEN = sizeof CHALLENGE - 1 + NONCE, HANDSHAKE_MAX = 64 };

struct mp_listener {
    int fd;
    bool is_unix;
    pid_t owner; /* the process that bound the path removes it */
    char address[160];
    unsigned char *key;
    size_t keylen;
};

static int sodium_ready(void)
{
    return sodium_init() < 0 ? -ENOSYS : 0;
}

static double left(int64_t deadline)
{
    if (deadline == MP__NO_DEADLINE)
        return MP_FOREVER;
    int64_t ns = deadline - mp__now_ns();
    return ns > 0 ? (double)ns / 1e9 : 0.0;
}

static int recv_small(mp_conn *c, unsigned char *buf, size_t *len, int64_t deadline)
{
    int rc = mp_conn_recv(c, buf, HANDSHAKE_MAX, len, left(deadline));
    if (rc == MP_ETOOBIG || rc == -EMSGSIZE || rc == -EBADMSG)
        return -EPROTO;
    return rc == MP_ECLOSED ? MP_EAUTH : rc;
}

/* Send a challenge and check the answer. */
static int deliver_challenge(mp_conn *c, const unsigned char *key, size_t keylen,
                             int64_t deadline)
{
    unsigned char msg[CHALLENGE_LEN];
    memcpy(msg, CHALLENGE, sizeof CHALLENGE - 1);
    randombytes_buf(msg + sizeof CHALLENGE - 1, NONCE);
    int rc = mp_conn_send(c, msg, sizeof msg);
    if (rc < 0)
        return rc == MP_ECLOSED ? MP_EAUTH : rc;
    unsigned char answer[HANDSHAKE_MAX], want[crypto_auth_hmacsha256_BYTES];
    size_t len;
    rc = recv_small(c, answer, &len, deadline);
    if (rc < 0)
        return rc;
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, keylen);
    crypto_auth_hmacsha256_update(&st, msg, sizeof msg);
    crypto_auth_hmacsha256_final(&st, want);
    bool ok = len == sizeof want && sodium_memcmp(answer, want, sizeof want) == 0;
    rc = mp_conn_send(c, ok ? WELCOME : FAILURE, ok ? sizeof WELCOME - 1 : sizeof FAILURE - 1);
    if (!ok)
        return MP_EAUTH;
    return rc < 0 ? (rc == MP_ECLOSED ? MP_EAUTH : rc) : 0;
}

/* Answer a challenge and read the verdict. */
static int answer_challenge(mp_conn *c, const unsigned char *key, size_t keylen,
                            int64_t deadline)
{
    unsigned char msg[HANDSHAKE_MAX];
    size_t len;
    int rc = recv_small(c, msg, &len, deadline);
    if (rc < 0)
        return rc;
    if (len != CHALLENGE_LEN || memcmp(msg, CHALLENGE, sizeof CHALLENGE - 1) != 0)
        return -EPROTO;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, keylen);
    crypto_auth_hmacsha256_update(&st, msg, len);
    crypto_auth_hmacsha256_final(&st, mac);
    rc = mp_conn_send(c, mac, sizeof mac);
    if (rc < 0)
        return rc == MP_ECLOSED ? MP_EAUTH : rc;
    rc = recv_small(c, msg, &len, deadline);
    if (rc < 0)
        return rc;
    if (len == sizeof WELCOME - 1 && memcmp(msg, WELCOME, len) == 0)
        return 0;
    return MP_EAUTH;
}

int mp_listener_new(mp_listener **out, const char *address, const void *authkey,
                    size_t keylen)
{
    if (out == NULL || address == NULL || (authkey == NULL && keylen > 0))
        return -EINVAL;
    *out = NULL;
    if (keylen > 0 && sodium_ready() < 0)
        return -ENOSYS;
    mp_listener *l = calloc(1, sizeof *l);
    if (l == NULL)
        return -ENOMEM;
    if (keylen > 0) {
        l->key = malloc(keylen);
        if (l->key == NULL) {
            free(l);
            return -ENOMEM;
        }
        memcpy(l->key, authkey, keylen);
        l->keylen = keylen;
    }
    int fd = mp__io_listen(address, 128);
    if (fd < 0) {
        free(l->key);
        free(l);
        return fd;
    }
    l->fd = fd;
    l->is_unix = strncmp(address, "unix:", 5) == 0;
    l->owner = getpid();
    int rc = mp__io_local_address(fd, l->address, sizeof l->address);
    if (rc < 0) {
        mp_listener_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

const char *mp_listener_address(const mp_listener *l)
{
    return l == NULL ? NULL : l->address;
}

int mp_listener_accept(mp_listener *l, mp_conn **out, double timeout)
{
    int64_t deadline;
    if (l == NULL || out == NULL || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    *out = NULL;
    int fd = mp__io_accept(l->fd, deadline);
    if (fd < 0)
        return fd == -ETIMEDOUT ? MP_ETIMEDOUT : fd;
    mp_conn *c;
    int rc = mp__conn_from_socket(fd, l->is_unix, &c);
    if (rc < 0) {
        mp__io_close(fd);
        return rc;
    }
    if (l->keylen > 0) {
        mp_conn_set_max_msg(c, HANDSHAKE_MAX);
        rc = deliver_challenge(c, l->key, l->keylen, deadline);
        if (rc == 0)
            rc = answer_challenge(c, l->key, l->keylen, deadline);
        if (rc < 0) {
            mp_conn_free(c);
            return rc;
        }
        mp_conn_set_max_msg(c, MP_CONN_DEFAULT_MAX_MSG);
    }
    *out = c;
    return 0;
}

int mp_client_connect(mp_conn **out, const char *address, const void *authkey, size_t keylen,
                      double timeout)
{
    int64_t deadline;
    if (out == NULL || address == NULL || (authkey == NULL && keylen > 0) ||
        mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    *out = NULL;
    if (keylen > 0 && sodium_ready() < 0)
        return -ENOSYS;
    int fd = mp__io_connect(address, deadline);
    if (fd < 0)
        return fd == -ETIMEDOUT ? MP_ETIMEDOUT : fd;
    mp_conn *c;
    int rc = mp__conn_from_socket(fd, strncmp(address, "unix:", 5) == 0, &c);
    if (rc < 0) {
        mp__io_close(fd);
        return rc;
    }
    if (keylen > 0) {
        mp_conn_set_max_msg(c, HANDSHAKE_MAX);
        rc = answer_challenge(c, authkey, keylen, deadline);
        if (rc == 0)
            rc = deliver_challenge(c, authkey, keylen, deadline);
        if (rc < 0) {
            mp_conn_free(c);
            return rc;
        }
        mp_conn_set_max_msg(c, MP_CONN_DEFAULT_MAX_MSG);
    }
    *out = c;
    return 0;
}

void mp_listener_free(mp_listener *l)
{
    if (l == NULL)
        return;
    if (l->is_unix && l->owner == getpid() && strncmp(l->address, "unix:", 5) == 0)
        unlink(l->address + 5);
    mp__io_close(l->fd);
    if (l->key != NULL) {
        sodium_memzero(l->key, l->keylen);
        free(l->key);
    }
    free(l);
}
