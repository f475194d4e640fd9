/* Connections: framed messages over pipes and sockets.
 *
 * A frame is an 8-byte header, then the payload:
 *   byte 0     kind: 1 data, 2 file descriptor (payload empty; the
 *              descriptor rides with the header's bytes as SCM_RIGHTS)
 *   bytes 1-3  zero
 *   bytes 4-7  payload length, little-endian
 * Frames from a peer are untrusted: a bad kind, non-zero padding, a length
 * over the limit or a stream that ends inside a frame closes the connection
 * with an error; memory grows only with bytes that actually arrive.
 *
 * Several processes may send on one end: each frame is written under the
 * end's send lock, a robust mutex in the shared heap.  Frames of at most
 * PIPE_BUF bytes go out in one write, which the kernel keeps whole on a
 * pipe or a Unix socket, so a sender that dies leaves all of one or none.
 * If a sender dies in the middle of a bigger frame, the stream is lost for
 * everyone, and later sends say MP_EBROKEN rather than add to the garbage.
 * The lock block is shared by all copies of the two ends across forks; a
 * reference count, raised for every live end at each fork, frees it with
 * the last one.
 *
 * Receiving reads ahead into a 64 KiB buffer, so a burst of small frames
 * costs one system call; big payloads go straight into the caller's buffer.
 * One thread at a time may receive on an end. */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn_int.h"
#include "heap_int.h"
#include "mproc/conn.h"
#include "mutex_int.h"
#include "os/io.h"
#include "os/os.h"

enum { HDR = 8, KIND_DATA = 1, KIND_FD = 2, RBUF_CAP = 64 * 1024, SMALL_FRAME = PIPE_BUF,
       READ_AHEAD = 4096, MAX_PENDING_FDS = 16 };
#define FRAME_LIMIT ((size_t)UINT32_MAX)

typedef struct {
    mp__mutex send[2];           /* one per sending direction */
    _Atomic uint32_t partial[2]; /* a big frame is being written */
    _Atomic uint32_t broken[2];  /* its sender died in the middle */
    _Atomic uint32_t refs;       /* ends alive in all processes */
} shared_ends;

struct mp_conn {
    int rfd, wfd;      /* -1: this end cannot receive / send */
    bool sock;         /* recvmsg/sendmsg (descriptors may travel) */
    bool atomic_small;    /* one write of a small frame is never split (pipes, Unix sockets) */
    int dir;           /* which of sh->send this end's sends take */
    shared_ends *sh;
    size_t max_msg;
    bool eof;          /* the peer has closed */
    bool failed;       /* protocol error: closed for good */
    /* receive state */
    unsigned char *rb;
    size_t roff, rlen;
    bool have_hdr;
    int kind;
    size_t flen;
    unsigned char *stage; /* payload of the current frame received so far */
    size_t slen, scap;
    int fdq[MAX_PENDING_FDS];
    int nfdq;
    struct mp_conn *prev, *next; /* live ends of this process */
};

/* ---- the process's live ends, for the fork reference counts ---- */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static mp_conn *reg_head;

static void reg_add(mp_conn *c)
{
    pthread_mutex_lock(&reg_lock);
    c->next = reg_head;
    c->prev = NULL;
    if (reg_head)
        reg_head->prev = c;
    reg_head = c;
    pthread_mutex_unlock(&reg_lock);
}

static void reg_remove(mp_conn *c)
{
    pthread_mutex_lock(&reg_lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        reg_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&reg_lock);
}

/* Every live end gains a copy in the child: count it before the fork, so
 * that no free in either process can see a count that is too low.  (If the
 * fork then fails, the blocks are only leaked, never freed early.) */
static void reg_prepare(void)
{
    pthread_mutex_lock(&reg_lock);
    for (mp_conn *c = reg_head; c; c = c->next)
        atomic_fetch_add(&c->sh->refs, 1);
}

static void reg_parent(void) { pthread_mutex_unlock(&reg_lock); }

static void reg_child(void) { pthread_mutex_unlock(&reg_lock); }

__attribute__((constructor)) static void conn_register_fork_hooks(void)
{
    static const mp__fork_hooks hooks = {
        .rank = MP__RANK_USER,
        .prepare = reg_prepare,
        .parent = reg_parent,
        .child = reg_child,
    };
    mp__fork_hooks_add(&hooks);
}

static void shared_release(shared_ends *sh)
{
    if (atomic_fetch_sub(&sh->refs, 1) == 1)
        mp__heap_free_any(sh);
}

static shared_ends *shared_new(uint32_t refs, int *err)
{
    shared_ends *sh = mp__heap_calloc(sizeof *sh, err);
    if (sh == NULL)
        return NULL;
    for (int i = 0; i < 2; i++) {
        int rc = mp__mutex_init(&sh->send[i]);
        if (rc < 0) {
            *err = rc;
            mp__heap_free(sh);
            return NULL;
        }
    }
    atomic_init(&sh->refs, refs);
    return sh;
}

static mp_conn *conn_alloc(int rfd, int wfd, bool sock, bool atomic_small, int dir,
                           shared_ends *sh)
{
    mp_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->rfd = rfd;
    c->wfd = wfd;
    c->sock = sock;
    c->atomic_small = atomic_small;
    c->dir = dir;
    c->sh = sh;
    c->max_msg = MP_CONN_DEFAULT_MAX_MSG;
    return c;
}

int mp_pipe_new(mp_conn **a, mp_conn **b, bool duplex)
{
    if (a == NULL || b == NULL)
        return -EINVAL;
    *a = *b = NULL;
    int err = 0;
    shared_ends *sh = shared_new(2, &err);
    if (sh == NULL)
        return err;
    int fds[2];
    int rc = mp__io_pair(fds, duplex);
    if (rc < 0) {
        mp__heap_free(sh);
        return rc;
    }
    mp_conn *x, *y;
    if (duplex) {
        x = conn_alloc(fds[0], fds[0], true, true, 0, sh);
        y = conn_alloc(fds[1], fds[1], true, true, 1, sh);
    } else {
        x = conn_alloc(fds[0], -1, false, true, 0, sh); /* receives */
        y = conn_alloc(-1, fds[1], false, true, 1, sh); /* sends */
    }
    if (x == NULL || y == NULL) {
        free(x);
        free(y);
        mp__io_close(fds[0]);
        mp__io_close(fds[1]);
        mp__heap_free(sh);
        return -ENOMEM;
    }
    reg_add(x);
    reg_add(y);
    *a = x;
    *b = y;
    return 0;
}

int mp__conn_from_socket(int fd, bool atomic_small, mp_conn **out)
{
    int err = 0;
    shared_ends *sh = shared_new(1, &err);
    if (sh == NULL)
        return err;
    mp_conn *c = conn_alloc(fd, fd, true, atomic_small, 0, sh);
    if (c == NULL) {
        mp__heap_free(sh);
        return -ENOMEM;
    }
    reg_add(c);
    *out = c;
    return 0;
}

int mp_conn_set_max_msg(mp_conn *c, size_t max_msg)
{
    if (c == NULL || max_msg > FRAME_LIMIT)
        return -EINVAL;
    c->max_msg = max_msg;
    return 0;
}

int mp_conn_fileno(const mp_conn *c)
{
    return c == NULL ? -1 : c->rfd;
}

void mp_conn_free(mp_conn *c)
{
    if (c == NULL)
        return;
    reg_remove(c);
    mp__io_close(c->rfd);
    if (c->wfd != c->rfd)
        mp__io_close(c->wfd);
    for (int i = 0; i < c->nfdq; i++)
        mp__io_close(c->fdq[i]);
    shared_release(c->sh);
    free(c->rb);
    free(c->stage);
    free(c);
}

/* ---- sending ---- */

static void put_header(unsigned char *h, int kind, size_t len)
{
    h[0] = (unsigned char)kind;
    h[1] = h[2] = h[3] = 0;
    uint32_t n = (uint32_t)len;
    for (int i = 0; i < 4; i++)
        h[4 + i] = (unsigned char)(n >> (8 * i));
}

static int send_result(int rc)
{
    return rc == -EPIPE || rc == -ECONNRESET ? MP_ECLOSED : rc;
}

/* Take this end's send lock.  If its holder died in the middle of a big
 * frame, the stream is lost: say so from now on. */
static int send_lock(shared_ends *sh, int d)
{
    int rc = mp__mutex_lock_forever(&sh->send[d]);
    if (rc == MP_EOWNERDEAD && atomic_load(&sh->partial[d]))
        atomic_store(&sh->broken[d], 1);
    else if (rc < 0 && rc != MP_EOWNERDEAD)
        return rc;
    if (atomic_load(&sh->broken[d])) {
        mp__mutex_unlock(&sh->send[d]);
        return MP_EBROKEN;
    }
    return 0;
}

static int send_frame(mp_conn *c, int kind, const void *data, size_t len, int pass_fd)
{
    unsigned char hdr[HDR];
    put_header(hdr, kind, len);
    shared_ends *sh = c->sh;
    int d = c->dir;
    int rc = send_lock(sh, d);
    if (rc < 0)
        return rc;
    if (HDR + len <= SMALL_FRAME && c->atomic_small) {
        /* One write, which the kernel keeps whole: a sender dying here
         * leaves either all of the frame or none of it. */
        unsigned char frame[SMALL_FRAME];
        memcpy(frame, hdr, HDR);
        if (len > 0)
            memcpy(frame + HDR, data, len);
        struct iovec iov = {frame, HDR + len};
        rc = mp__io_write_all(c->wfd, c->sock, &iov, 1, pass_fd);
    } else {
        atomic_store(&sh->partial[d], 1);
        struct iovec iov[2] = {{hdr, HDR}, {(void *)data, len}};
        rc = mp__io_write_all(c->wfd, c->sock, iov, len > 0 ? 2 : 1, pass_fd);
        /* A write that failed may have sent part of the frame. */
        if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET)
            atomic_store(&sh->broken[d], 1);
        atomic_store(&sh->partial[d], 0);
    }
    mp__mutex_unlock(&sh->send[d]);
    return send_result(rc);
}

int mp_conn_send(mp_conn *c, const void *data, size_t len)
{
    if (c == NULL || (data == NULL && len > 0) || c->wfd < 0)
        return -EINVAL;
    if (len > FRAME_LIMIT)
        return MP_ETOOBIG;
    if (c->failed)
        return MP_ECLOSED;
    return send_frame(c, KIND_DATA, data, len, -1);
}

int mp_conn_send_fd(mp_conn *c, int fd)
{
    if (c == NULL || c->wfd < 0)
        return -EINVAL;
    if (!c->sock || !c->atomic_small)
        return -ENOTSOCK;
    if (fd < 0)
        return -EBADF;
    if (c->failed)
        return MP_ECLOSED;
    return send_frame(c, KIND_FD, NULL, 0, fd);
}

/* ---- receiving ---- */

/* Close for good after a protocol error; the peer sees the end too. */
static int fail(mp_conn *c, int code)
{
    c->failed = true;
    if (c->sock)
        shutdown(c->rfd, SHUT_RDWR);
    return code;
}

static void stash_fds(mp_conn *c, const int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        if (c->nfdq < MAX_PENDING_FDS)
            c->fdq[c->nfdq++] = fds[i];
        else
            mp__io_close(fds[i]);
    }
}

/* Read at most n bytes into dst, waiting until deadline.  Returns the
 * count (0 at end of stream), MP_ETIMEDOUT, or -errno. */
static ssize_t rd(mp_conn *c, void *dst, size_t n, int64_t deadline)
{
    int fds[MP__IO_MAX_FDS], nf;
    for (;;) {
        if (deadline != MP__NO_DEADLINE) {
            if (c->sock) {
                ssize_t r = mp__io_read(c->rfd, true, dst, n, true, fds, &nf);
                stash_fds(c, fds, nf);
                if (r != -EAGAIN && r != -EWOULDBLOCK)
                    return r;
            }
            bool ready;
            int w = mp__io_wait_readable(&c->rfd, 1, deadline, &ready);
            if (w < 0)
                return w;
            if (w == 0)
                return MP_ETIMEDOUT;
        }
        ssize_t r = mp__io_read(c->rfd, c->sock, dst, n, false, fds, &nf);
        stash_fds(c, fds, nf);
        if (r == -EAGAIN)
            continue;
        return r;
    }
}

/* Read ahead into the buffer, a page at most.  A pipe gives back the
 * pages a read empties: a reader that takes 64 KiB at a time empties the
 * pipe whole, and then every frame the writer adds wakes it (4 KiB
 * frames on a pipe: 205k a second read 64 KiB at a time, 575k a page at
 * a time; 64-byte frames alike either way).  Returns > 0, 0 at end of
 * stream, or an error. */
static ssize_t fill(mp_conn *c, int64_t deadline)
{
    if (c->rb == NULL) {
        c->rb = malloc(RBUF_CAP);
        if (c->rb == NULL)
            return -ENOMEM;
    }
    if (c->roff > 0) {
        memmove(c->rb, c->rb + c->roff, c->rlen);
        c->roff = 0;
    }
    size_t room = RBUF_CAP - c->rlen;
    ssize_t r = rd(c, c->rb + c->rlen, room < READ_AHEAD ? room : READ_AHEAD, deadline);
    if (r > 0)
        c->rlen += (size_t)r;
    else if (r == 0)
        c->eof = true;
    return r;
}

/* Make sure the next frame's header has been read and checked. */
static int next_header(mp_conn *c, int64_t deadline)
{
    while (!c->have_hdr) {
        if (c->failed)
            return MP_ECLOSED;
        if (c->rlen >= HDR) {
            const unsigned char *h = c->rb + c->roff;
            uint32_t n = (uint32_t)h[4] | (uint32_t)h[5] << 8 | (uint32_t)h[6] << 16 |
                         (uint32_t)h[7] << 24;
            if ((h[0] != KIND_DATA && h[0] != KIND_FD) || h[1] || h[2] || h[3] ||
                (h[0] == KIND_FD && n != 0))
                return fail(c, -EPROTO);
            if (n > c->max_msg)
                return fail(c, -EMSGSIZE);
            if (h[0] == KIND_FD && c->nfdq == 0)
                return fail(c, -EPROTO); /* a descriptor frame without one */
            c->kind = h[0];
            c->flen = n;
            c->have_hdr = true;
            c->roff += HDR;
            c->rlen -= HDR;
            break;
        }
        if (c->eof)
            return c->rlen == 0 ? MP_ECLOSED : fail(c, -EPROTO);
        ssize_t r = fill(c, deadline);
        if (r < 0)
            return (int)r;
    }
    return 0;
}

/* The next frame's header, if it is of this kind (-EBADMSG if not). */
static int next_frame(mp_conn *c, int kind, int64_t deadline)
{
    int rc = next_header(c, deadline);
    if (rc < 0)
        return rc;
    return c->kind == kind ? 0 : -EBADMSG;
}

static void frame_done(mp_conn *c)
{
    c->have_hdr = false;
    c->slen = 0;
}

/* Keep got bytes already placed in dst (the caller's buffer) for the next
 * call, after a timeout in the middle of a payload. */
static int keep_partial(mp_conn *c, const unsigned char *dst, size_t got)
{
    if (dst == c->stage)
        return 0;
    if (got > c->scap) {
        unsigned char *s = realloc(c->stage, got);
        if (s == NULL)
            return -ENOMEM;
        c->stage = s;
        c->scap = got;
    }
    memcpy(c->stage, dst, got);
    c->slen = got;
    return 0;
}

/* Read the current data frame's payload into dst (flen bytes of room). */
static int read_payload(mp_conn *c, unsigned char *dst, int64_t deadline)
{
    size_t got = c->slen, need = c->flen;
    if (got > 0)
        memcpy(dst, c->stage, got);
    for (;;) {
        size_t k = c->rlen < need - got ? c->rlen : need - got;
        if (k > 0)
            memcpy(dst + got, c->rb + c->roff, k);
        c->roff += k;
        c->rlen -= k;
        got += k;
        if (got == need)
            break;
        ssize_t r;
        if (need - got <= SMALL_FRAME) {
            r = fill(c, deadline); /* small rest: read ahead past it */
        } else {
            r = rd(c, dst + got, need - got, deadline);
            if (r > 0)
                got += (size_t)r;
            else if (r == 0)
                c->eof = true;
        }
        if (r == 0)
            return fail(c, -EPROTO); /* the stream ended inside a frame */
        if (r < 0) {
            int k2 = keep_partial(c, dst, got);
            return k2 < 0 ? k2 : (int)r;
        }
    }
    frame_done(c);
    return 0;
}

int mp_conn_recv(mp_conn *c, void *buf, size_t cap, size_t *len, double timeout)
{
    int64_t deadline;
    if (c == NULL || len == NULL || (buf == NULL && cap > 0) || c->rfd < 0 ||
        mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    int rc = next_frame(c, KIND_DATA, deadline);
    if (rc < 0)
        return rc;
    *len = c->flen;
    if (c->flen > cap)
        return MP_ETOOBIG;
    return read_payload(c, buf, deadline);
}

int mp_conn_recv_alloc(mp_conn *c, void **data, size_t *len, double timeout)
{
    int64_t deadline;
    if (c == NULL || data == NULL || len == NULL || c->rfd < 0 ||
        mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    *data = NULL;
    int rc = next_frame(c, KIND_DATA, deadline);
    if (rc < 0)
        return rc;
    /* Grow the stage with what arrives: at most what is buffered plus
     * 64 KiB at a time, doubling, never straight to the claimed size. */
    size_t need = c->flen;
    for (;;) {
        size_t want = c->slen + c->rlen + RBUF_CAP;
        if (want < 2 * c->scap)
            want = 2 * c->scap;
        if (want > need)
            want = need;
        if (want == 0)
            want = 1;
        if (want > c->scap) {
            unsigned char *s = realloc(c->stage, want);
            if (s == NULL)
                return -ENOMEM;
            c->stage = s;
            c->scap = want;
        }
        size_t k = c->rlen < need - c->slen ? c->rlen : need - c->slen;
        if (k > c->scap - c->slen)
            k = c->scap - c->slen;
        if (k > 0)
            memcpy(c->stage + c->slen, c->rb + c->roff, k);
        c->roff += k;
        c->rlen -= k;
        c->slen += k;
        if (c->slen == need)
            break;
        ssize_t r;
        if (c->slen < c->scap && c->rlen == 0) {
            if (need - c->slen <= SMALL_FRAME)
                r = fill(c, deadline);
            else if ((r = rd(c, c->stage + c->slen, c->scap - c->slen, deadline)) > 0)
                c->slen += (size_t)r;
            else if (r == 0)
                c->eof = true;
            if (r == 0)
                return fail(c, -EPROTO);
            if (r < 0)
                return (int)r; /* the stage keeps what came */
        }
    }
    *data = c->stage;
    *len = need;
    c->stage = NULL;
    c->scap = 0;
    frame_done(c);
    return 0;
}

int mp_conn_recv_fd(mp_conn *c, int *fd, double timeout)
{
    int64_t deadline;
    if (c == NULL || fd == NULL || c->rfd < 0 || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    int rc = next_frame(c, KIND_FD, deadline);
    if (rc < 0)
        return rc;
    *fd = c->fdq[0];
    memmove(c->fdq, c->fdq + 1, (size_t)(--c->nfdq) * sizeof c->fdq[0]);
    frame_done(c);
    return 0;
}

/* Something to receive without waiting: buffered bytes or the end. */
static bool ready_now(const mp_conn *c)
{
    return c->rlen > 0 || c->eof || c->failed;
}

int mp_conn_poll(mp_conn *c, double timeout)
{
    int64_t deadline;
    if (c == NULL || c->rfd < 0 || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    if (ready_now(c))
        return 1;
    bool ready;
    int rc = mp__io_wait_readable(&c->rfd, 1, deadline, &ready);
    return rc < 0 ? rc : rc > 0;
}

int mp_wait(mp_conn *const *conns, size_t n, double timeout)
{
    int64_t deadline;
    if (conns == NULL || n == 0 || n > INT_MAX || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (conns[i] == NULL || conns[i]->rfd < 0)
            return -EINVAL;
    /* Ask the kernel about every connection, without waiting if some
     * already hold buffered data, then start each call one place further
     * on, so that ready connections are taken in turn. */
    static _Thread_local size_t turn;
    size_t start = turn++ % n;
    bool any_buffered = false;
    for (size_t i = 0; i < n; i++)
        any_buffered |= ready_now(conns[i]);
    int small_fds[16];
    bool small_ready[16];
    int *fds = small_fds;
    bool *ready = small_ready;
    if (n > 16) {
        fds = malloc(n * sizeof *fds);
        ready = malloc(n * sizeof *ready);
        if (fds == NULL || ready == NULL) {
            free(fds == small_fds ? NULL : fds);
            free(ready == small_ready ? NULL : ready);
            return -ENOMEM;
        }
    }
    for (size_t i = 0; i < n; i++)
        fds[i] = conns[i]->rfd;
    int rc = mp__io_wait_readable(fds, n, any_buffered ? 0 : deadline, ready);
    int pick = rc < 0 ? rc : MP_ETIMEDOUT;
    for (size_t k = 0; rc >= 0 && k < n; k++) {
        size_t i = (start + k) % n;
        if (ready[i] || ready_now(conns[i])) {
            pick = (int)i;
            break;
        }
    }
    if (fds != small_fds) {
        free(fds);
        free(ready);
    }
    return pick;
}

int mp_wait_fds(const int *fds, size_t n, double timeout)
{
    int64_t deadline;
    if ((fds == NULL && n > 0) || n > INT_MAX || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    if (n == 0 && deadline == MP__NO_DEADLINE)
        return -EINVAL; /* nothing could ever end the wait */
    for (size_t i = 0; i < n; i++)
        if (fds[i] < 0)
            return -EINVAL;
    int rc = mp__io_wait_any(fds, n, deadline);
    return rc == -ETIMEDOUT ? MP_ETIMEDOUT : rc;
}
