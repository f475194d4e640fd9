/* Coroutines waiting on descriptors: one one-shot epoll set per
 * scheduler, a reader and a writer slot per descriptor, and the socket
 * helpers that retry a non-blocking call once its descriptor is ready. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "coro_int.h"
#include "mproc/error.h"
#include "os/os.h"

/* ---- descriptors ---- */

static void fd_rearm(sched *s, int fd)
{
    fd_slot *slot = &s->fds[fd];
    unsigned ev = (slot->rd ? MP__POLL_IN : 0) | (slot->wr ? MP__POLL_OUT : 0);
    if (ev)
        mp__poller_arm(s->ep, fd, ev, (uint64_t)fd);
}

/* Stop co waiting on its descriptor (woken or timed out). */
static void fd_forget(sched *s, mp_co *co)
{
    int fd = co->wait_fd;
    if (fd < 0)
        return;
    co->wait_fd = -1;
    s->fd_waiters--;
    fd_slot *slot = &s->fds[fd];
    bool other = false;
    if (slot->rd == co)
        slot->rd = NULL;
    else if (slot->rd)
        other = true;
    if (slot->wr == co)
        slot->wr = NULL;
    else if (slot->wr)
        other = true;
    if (other)
        fd_rearm(s, fd); /* the one-shot arming may have been used up */
}

/* The scheduler's idle step while coroutines wait on descriptors: wait
 * for them until deadline (the timers are the scheduler's). */
static int fd_poll(sched *s, int64_t deadline)
{
    int64_t now = mp__now_ns();
    uint64_t tags[64];
    unsigned evs[64];
    int n = mp__poller_wait_events(s->ep, tags, evs, 64, deadline > now ? deadline : now);
    if (n < 0)
        return n;
    for (int i = 0; i < n; i++) {
        int fd = (int)tags[i];
        if (fd < 0 || (size_t)fd >= s->nfds)
            continue;
        fd_slot *slot = &s->fds[fd];
        mp_co *rd = slot->rd, *wr = slot->wr;
        if (rd && (evs[i] & MP__POLL_IN)) {
            rd->ready_events |= MP_READABLE;
            mp__co_wake(s, rd, 0);
        }
        if (wr && (evs[i] & MP__POLL_OUT)) {
            wr->ready_events |= MP_WRITABLE;
            mp__co_wake(s, wr, 0);
        }
        if (slot->rd || slot->wr)
            fd_rearm(s, fd);
    }
    return 0;
}

int mp_co_wait_fd(int fd, int events, double timeout)
{
    int64_t deadline;
    if (fd < 0 || events == 0 || (events & ~(MP_READABLE | MP_WRITABLE)) ||
        mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    sched *s = mp__co_sched();
    if (s == NULL)
        return -ENOMEM;
    if (s->ep < 0) {
        s->ep = mp__poller_new();
        if (s->ep < 0) {
            int rc = s->ep;
            s->ep = -1;
            return rc;
        }
        s->fd_forget = fd_forget;
        s->fd_poll = fd_poll;
    }
    if ((size_t)fd >= s->nfds) {
        size_t n = s->nfds ? s->nfds : 64;
        while (n <= (size_t)fd)
            n *= 2;
        fd_slot *f = realloc(s->fds, n * sizeof *f);
        if (f == NULL)
            return -ENOMEM;
        memset(f + s->nfds, 0, (n - s->nfds) * sizeof *f);
        s->fds = f;
        s->nfds = n;
    }
    fd_slot *slot = &s->fds[fd];
    mp_co *self = s->current;
    if (((events & MP_READABLE) && slot->rd) || ((events & MP_WRITABLE) && slot->wr))
        return -EBUSY;
    if (events & MP_READABLE)
        slot->rd = self;
    if (events & MP_WRITABLE)
        slot->wr = self;
    unsigned ev = (slot->rd ? MP__POLL_IN : 0) | (slot->wr ? MP__POLL_OUT : 0);
    int rc = mp__poller_arm(s->ep, fd, ev, (uint64_t)fd);
    if (rc < 0) {
        if (slot->rd == self)
            slot->rd = NULL;
        if (slot->wr == self)
            slot->wr = NULL;
        return rc;
    }
    self->wait_fd = fd;
    self->ready_events = 0;
    s->fd_waiters++;
    rc = mp__co_park(s, deadline);
    fd_forget(s, self);
    if (rc < 0)
        return rc;
    return self->ready_events;
}

/* ---- socket helpers ---- */

int mp_co_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

static double left_of(int64_t deadline)
{
    if (deadline == MP__NO_DEADLINE)
        return MP_FOREVER;
    double left = (double)(deadline - mp__now_ns()) / 1e9;
    return left > 0 ? left : 0;
}

/* A non-blocking call on fd failed with errno: 0 once it is worth trying
 * again (interrupted, or fd became ready), or the error to return. */
static int await_retry(int fd, int events, int64_t deadline)
{
    if (errno == EINTR)
        return 0;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
        return -errno;
    if (deadline != MP__NO_DEADLINE && mp__now_ns() >= deadline)
        return MP_ETIMEDOUT;
    int rc = mp_co_wait_fd(fd, events, left_of(deadline));
    return rc < 0 ? rc : 0;
}

int mp_co_accept(int lfd, struct sockaddr *addr, socklen_t *addrlen, double timeout)
{
    int64_t deadline;
    if (mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    for (;;) {
        int fd = accept4(lfd, addr, addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0)
            return fd;
        int rc = await_retry(lfd, MP_READABLE, deadline);
        if (rc < 0)
            return rc;
    }
}

int mp_co_connect(int fd, const struct sockaddr *addr, socklen_t addrlen, double timeout)
{
    int64_t deadline;
    if (mp__deadline(timeout, &deadline) < 0 || addr == NULL)
        return -EINVAL;
    int rc = mp_co_nonblock(fd);
    if (rc < 0)
        return rc;
    while (connect(fd, addr, addrlen) < 0) {
        if (errno == EINTR)
            continue;
        if (errno != EINPROGRESS)
            return -errno;
        rc = mp_co_wait_fd(fd, MP_WRITABLE, left_of(deadline));
        if (rc < 0)
            return rc;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            return -errno;
        return -err;
    }
    return 0;
}

ssize_t mp_co_read(int fd, void *buf, size_t n, double timeout)
{
    int64_t deadline;
    if (mp__deadline(timeout, &deadline) < 0 || (buf == NULL && n > 0))
        return -EINVAL;
    for (;;) {
        ssize_t r = read(fd, buf, n);
        if (r >= 0)
            return r;
        int rc = await_retry(fd, MP_READABLE, deadline);
        if (rc < 0)
            return rc;
    }
}

ssize_t mp_co_write(int fd, const void *buf, size_t n, double timeout)
{
    int64_t deadline;
    if (mp__deadline(timeout, &deadline) < 0 || (buf == NULL && n > 0))
        return -EINVAL;
    size_t done = 0;
    while (done < n) {
        ssize_t w = send(fd, (const char *)buf + done, n - done, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK)
            w = write(fd, (const char *)buf + done, n - done);
        if (w >= 0) {
            done += (size_t)w;
            continue;
        }
        int rc = await_retry(fd, MP_WRITABLE, deadline);
        if (rc < 0)
            return rc;
    }
    return (ssize_t)n;
}

