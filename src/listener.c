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
 * before it is authenticated.
 *
 * The listener runs its handshakes side by side, so that no client, slow
 * or silent, holds up the others.  A connection accepted from the kernel
 * becomes a pending handshake: a small state machine,
 *
 *   (accepted) --send challenge--> ANSWER --its HMAC checked, WELCOME-->
 *   CHALLENGE --its challenge answered--> VERDICT --WELCOME--> done
 *
 * with its own deadline (the handshake time limit).  accept() waits on
 * the listening socket and every pending one at once, moves each that has
 * data one step on (receives are resumable: a frame that is not all there
 * stays buffered in its mp_conn), and returns the first to be done.  One
 * that fails is dropped and its error returned (MP_EAUTH, -EPROTO), as a
 * blocking handshake did; one past its deadline is dropped quietly.  The
 * listener's sends are a few dozen bytes into an empty socket buffer, so
 * they never block.  Pending handshakes belong to the process that
 * accepted them: after a fork the child drops its copies (it closes its
 * descriptors only), and only the parent goes on with them. */
#define _GNU_SOURCE
#include <pthread.h>
#include <math.h>
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
enum { NONCE = 32, CHALLENGE_LEN = sizeof CHALLENGE - 1 + NONCE, HANDSHAKE_MAX = 64,
       PENDING_MAX = 4096 /* handshakes under way at once */ };
#define HANDSHAKE_DEFAULT_NS 5000000000LL
#define BACKLOG_MAX 65535 /* the kernel takes min(this, net.core.somaxconn) */

enum { HS_ANSWER, HS_CHALLENGE, HS_VERDICT };

/* A handshake under way: see the top of the file. */
typedef struct {
    mp_conn *c;
    int64_t deadline;
    int step;                               /* HS_* */
    unsigned char sent[CHALLENGE_LEN];      /* our challenge */
} pending;

struct mp_listener {
    int fd;
    bool is_unix;
    pid_t owner; /* the process that bound the path removes it */
    char address[160];
    unsigned char *key;
    size_t keylen;
    int64_t handshake_ns;      /* each handshake's time limit */
    pthread_mutex_t lock;      /* one accept at a time goes through pending */
    pending *pend;
    size_t npend, cap;
    pid_t pend_owner;          /* the process pend belongs to */
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

/* Send a challenge (remembered in msg, to check the answer against). */
static int send_challenge(mp_conn *c, unsigned char msg[CHALLENGE_LEN])
{
    memcpy(msg, CHALLENGE, sizeof CHALLENGE - 1);
    randombytes_buf(msg + sizeof CHALLENGE - 1, NONCE);
    int rc = mp_conn_send(c, msg, CHALLENGE_LEN);
    return rc == MP_ECLOSED ? MP_EAUTH : rc;
}

static void hmac(const unsigned char *key, size_t keylen, const unsigned char *msg, size_t len,
                 unsigned char mac[crypto_auth_hmacsha256_BYTES])
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, keylen);
    crypto_auth_hmacsha256_update(&st, msg, len);
    crypto_auth_hmacsha256_final(&st, mac);
}

/* Check the answer to the challenge sent and give the verdict. */
static int check_answer(mp_conn *c, const unsigned char *key, size_t keylen,
                        const unsigned char sent[CHALLENGE_LEN], const unsigned char *answer,
                        size_t len)
{
    unsigned char want[crypto_auth_hmacsha256_BYTES];
    hmac(key, keylen, sent, CHALLENGE_LEN, want);
    bool ok = len == sizeof want && sodium_memcmp(answer, want, sizeof want) == 0;
    int rc = mp_conn_send(c, ok ? WELCOME : FAILURE, ok ? sizeof WELCOME - 1 : sizeof FAILURE - 1);
    if (!ok)
        return MP_EAUTH;
    return rc < 0 ? (rc == MP_ECLOSED ? MP_EAUTH : rc) : 0;
}

/* Answer the challenge received. */
static int send_answer(mp_conn *c, const unsigned char *key, size_t keylen,
                       const unsigned char *msg, size_t len)
{
    if (len != CHALLENGE_LEN || memcmp(msg, CHALLENGE, sizeof CHALLENGE - 1) != 0)
        return -EPROTO;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    hmac(key, keylen, msg, len, mac);
    int rc = mp_conn_send(c, mac, sizeof mac);
    return rc == MP_ECLOSED ? MP_EAUTH : rc;
}

static int check_verdict(const unsigned char *msg, size_t len)
{
    return len == sizeof WELCOME - 1 && memcmp(msg, WELCOME, len) == 0 ? 0 : MP_EAUTH;
}

/* Send a challenge and check the answer (blocking, until deadline). */
static int deliver_challenge(mp_conn *c, const unsigned char *key, size_t keylen,
                             int64_t deadline)
{
    unsigned char sent[CHALLENGE_LEN], answer[HANDSHAKE_MAX];
    size_t len;
    int rc = send_challenge(c, sent);
    if (rc == 0)
        rc = recv_small(c, answer, &len, deadline);
    return rc < 0 ? rc : check_answer(c, key, keylen, sent, answer, len);
}

/* Answer a challenge and read the verdict (blocking, until deadline). */
static int answer_challenge(mp_conn *c, const unsigned char *key, size_t keylen,
                            int64_t deadline)
{
    unsigned char msg[HANDSHAKE_MAX];
    size_t len;
    int rc = recv_small(c, msg, &len, deadline);
    if (rc == 0)
        rc = send_answer(c, key, keylen, msg, len);
    if (rc == 0)
        rc = recv_small(c, msg, &len, deadline);
    return rc < 0 ? rc : check_verdict(msg, len);
}

/* ---- the listener's handshakes, side by side ---- */

/* Move p on as far as the bytes that have come allow.  Returns 1 when it
 * is done (authenticated), 0 when it waits for more, or its error. */
static int step(mp_listener *l, pending *p)
{
    for (;;) {
        unsigned char msg[HANDSHAKE_MAX];
        size_t len;
        int rc = recv_small(p->c, msg, &len, mp__now_ns()); /* never waits */
        if (rc == MP_ETIMEDOUT)
            return 0;
        if (rc < 0)
            return rc;
        switch (p->step) {
        case HS_ANSWER:
            rc = check_answer(p->c, l->key, l->keylen, p->sent, msg, len);
            p->step = HS_CHALLENGE;
            break;
        case HS_CHALLENGE:
            rc = send_answer(p->c, l->key, l->keylen, msg, len);
            p->step = HS_VERDICT;
            break;
        default:
            rc = check_verdict(msg, len);
            if (rc == 0)
                return 1;
        }
        if (rc < 0)
            return rc;
    }
}

static void drop(mp_listener *l, size_t i)
{
    mp_conn_free(l->pend[i].c);
    l->pend[i] = l->pend[--l->npend];
}

/* Pending handshakes copied into a forked child are the parent's: close
 * the child's descriptors, and leave them to it.  The lock may have been
 * copied held (by a thread that is not in the child): made anew.  (The
 * child's first accept is its only thread's, or its threads must not make
 * their first accepts at the same time.) */
static void forget_inherited(mp_listener *l)
{
    if (l->pend_owner == getpid())
        return;
    pthread_mutex_init(&l->lock, NULL);
    while (l->npend > 0)
        drop(l, l->npend - 1);
    l->pend_owner = getpid();
}

/* Take every connection the kernel holds (while there is room) and send
 * each its challenge.  Returns 0, or an error of the accept itself. */
static int take_new(mp_listener *l)
{
    while (l->npend < PENDING_MAX) {
        int fd = mp__io_accept(l->fd, mp__now_ns());
        if (fd == -ETIMEDOUT)
            return 0;
        if (fd < 0)
            return fd;
        if (l->npend == l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 16;
            pending *np = realloc(l->pend, cap * sizeof *np);
            if (np == NULL) {
                mp__io_close(fd);
                return -ENOMEM;
            }
            l->pend = np;
            l->cap = cap;
        }
        pending *p = &l->pend[l->npend];
        int rc = mp__conn_from_socket(fd, l->is_unix, &p->c);
        if (rc < 0) {
            mp__io_close(fd);
            return rc;
        }
        mp_conn_set_max_msg(p->c, HANDSHAKE_MAX);
        p->deadline = mp__now_ns() + l->handshake_ns;
        p->step = HS_ANSWER;
        l->npend++;
        if (send_challenge(p->c, p->sent) < 0)
            drop(l, l->npend - 1); /* gone already */
    }
    return 0;
}

/* Move every pending handshake on; drop those past their time.  Returns 1
 * with *out set, 0, or the error of one that failed. */
static int progress(mp_listener *l, const bool *ready, mp_conn **out)
{
    int64_t now = mp__now_ns();
    for (size_t i = l->npend; i-- > 0;) {
        pending *p = &l->pend[i];
        int rc = ready == NULL || ready[i + 1] ? step(l, p) : 0;
        if (rc == 1) {
            mp_conn_set_max_msg(p->c, MP_CONN_DEFAULT_MAX_MSG);
            *out = p->c;
            l->pend[i] = l->pend[--l->npend];
            return 1;
        }
        if (rc < 0) {
            drop(l, i);
            return rc;
        }
        if (now >= p->deadline)
            drop(l, i);
    }
    return 0;
}

/* Wait for the listening socket or a pending handshake to have something,
 * until deadline or the earliest handshake deadline.  ready[0] is the
 * listening socket, ready[1 + i] pending i.  Returns > 0, 0, or -errno. */
static int wait_any(mp_listener *l, int64_t deadline, bool *ready)
{
    int small[17], *fds = l->npend < 16 ? small : malloc((l->npend + 1) * sizeof *fds);
    if (fds == NULL)
        return -ENOMEM;
    size_t n = 0;
    fds[n++] = l->npend < PENDING_MAX ? l->fd : -1; /* full: no new ones yet */
    int64_t until = deadline;
    for (size_t i = 0; i < l->npend; i++) {
        fds[n++] = mp_conn_fileno(l->pend[i].c);
        if (l->pend[i].deadline < until)
            until = l->pend[i].deadline;
    }
    int rc = mp__io_wait_readable(fds, n, until, ready);
    if (fds != small)
        free(fds);
    return rc;
}

static int accept_authenticated(mp_listener *l, mp_conn **out, int64_t deadline)
{
    int rc = progress(l, NULL, out); /* bytes may have come meanwhile */
    for (;;) {
        if (rc != 0)
            return rc < 0 ? rc : 0;
        if ((rc = take_new(l)) < 0)
            return rc;
        bool small[17], *ready = l->npend < 16 ? small : malloc((l->npend + 1) * sizeof *ready);
        if (ready == NULL)
            return -ENOMEM;
        int w = wait_any(l, deadline, ready);
        rc = w < 0 ? w : w > 0 ? progress(l, ready, out) : progress(l, NULL, out);
        if (ready != small)
            free(ready);
        if (rc == 0 && w == 0 && mp__now_ns() >= deadline)
            return MP_ETIMEDOUT;
    }
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
    int fd = mp__io_listen(address, BACKLOG_MAX);
    if (fd < 0) {
        free(l->key);
        free(l);
        return fd;
    }
    l->fd = fd;
    l->is_unix = strncmp(address, "unix:", 5) == 0;
    l->owner = l->pend_owner = getpid();
    l->handshake_ns = HANDSHAKE_DEFAULT_NS;
    pthread_mutex_init(&l->lock, NULL);
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

int mp_listener_set_backlog(mp_listener *l, int n)
{
    if (l == NULL || n < 0)
        return -EINVAL;
    return mp__io_set_backlog(l->fd, n);
}

int mp_listener_set_handshake_timeout(mp_listener *l, double timeout)
{
    if (l == NULL || isnan(timeout) || timeout == 0)
        return -EINVAL;
    bool none = timeout < 0 || isinf(timeout) || timeout > 1e9;
    forget_inherited(l);
    pthread_mutex_lock(&l->lock);
    l->handshake_ns = none ? INT64_MAX / 4 : (int64_t)(timeout * 1e9);
    pthread_mutex_unlock(&l->lock);
    return 0;
}

int mp_listener_accept(mp_listener *l, mp_conn **out, double timeout)
{
    int64_t deadline;
    if (l == NULL || out == NULL || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    *out = NULL;
    if (l->keylen > 0) {
        forget_inherited(l);
        pthread_mutex_lock(&l->lock);
        int rc = accept_authenticated(l, out, deadline);
        pthread_mutex_unlock(&l->lock);
        return rc;
    }
    int fd = mp__io_accept(l->fd, deadline);
    if (fd < 0)
        return fd == -ETIMEDOUT ? MP_ETIMEDOUT : fd;
    int rc = mp__conn_from_socket(fd, l->is_unix, out);
    if (rc < 0)
        mp__io_close(fd);
    return rc;
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
    while (l->npend > 0) /* a child's copies: its descriptors only */
        drop(l, l->npend - 1);
    free(l->pend);
    if (l->key != NULL) {
        sodium_memzero(l->key, l->keylen);
        free(l->key);
    }
    free(l);
}
