/* Linux byte streams: see io.h. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "os/io.h"
#include "os/os.h"

/* Writing to a pipe whose readers are gone raises SIGPIPE, whose default
 * action would kill the caller.  Blocking it around every write costs two
 * system calls a message, so instead, when the first pipe is made and
 * SIGPIPE still has its default action, a handler that does nothing is
 * installed: the write then fails with EPIPE.  (Python ignores SIGPIPE for
 * the same reason.  A handler, unlike SIG_IGN, is reset by exec, so
 * programs started from ours still get the default.) */
static void sigpipe_noop(int sig) { (void)sig; }

static void sigpipe_tame(void)
{
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL &&
        !(old.sa_flags & SA_SIGINFO)) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = sigpipe_noop;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGPIPE, &sa, NULL);
    }
}

static pthread_once_t sigpipe_once = PTHREAD_ONCE_INIT;

int mp__io_pair(int fds[2], bool duplex)
{
    if (!duplex)
        pthread_once(&sigpipe_once, sigpipe_tame);
    int rc = duplex ? socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds)
                    : pipe2(fds, O_CLOEXEC);
    return rc < 0 ? -errno : 0;
}

void mp__io_close(int fd)
{
    int e = errno;
    if (fd >= 0)
        close(fd);
    errno = e;
}

ssize_t mp__io_read(int fd, bool sock, void *buf, size_t n, bool nonblock, int *fds, int *nfds)
{
    if (!sock) {
        *nfds = 0;
        for (;;) {
            ssize_t r = read(fd, buf, n);
            if (r >= 0)
                return r;
            if (errno != EINTR)
                return -errno;
        }
    }
    bool truncated;
    ssize_t r = mp__io_recv(fd, buf, n, nonblock, fds, nfds, &truncated);
    return r >= 0 && truncated ? -ETOOMANYREFS : r;
}

ssize_t mp__io_recv(int fd, void *buf, size_t n, bool nonblock, int *fds, int *nfds,
                    bool *truncated)
{
    *nfds = 0;
    *truncated = false;
    union {
        char b[CMSG_SPACE(MP__IO_MAX_FDS * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {buf, n};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
                        .msg_controllen = sizeof ctl.b};
    ssize_t r;
    while ((r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | (nonblock ? MSG_DONTWAIT : 0))) < 0)
        if (errno != EINTR)
            return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int got;
            memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof got);
            if (*nfds < MP__IO_MAX_FDS)
                fds[(*nfds)++] = got;
            else
                close(got);
        }
    }
    if (mh.msg_flags & MSG_CTRUNC)
        *truncated = true; /* descriptors lost: no room for them here */
    return r;
}

int mp__io_write_all(int fd, bool sock, struct iovec *iov, int iovcnt, int pass_fd)
{
    while (iovcnt > 0) {
        ssize_t w;
        if (sock) {
            union {
                char b[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
            } ctl;
            struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
            if (pass_fd >= 0) {
                memset(&ctl, 0, sizeof ctl);
                mh.msg_control = ctl.b;
                mh.msg_controllen = sizeof ctl.b;
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &pass_fd, sizeof pass_fd);
            }
            w = pass_fd < 0 && iovcnt == 1 ? send(fd, iov->iov_base, iov->iov_len, MSG_NOSIGNAL)
                                           : sendmsg(fd, &mh, MSG_NOSIGNAL);
        } else {
            /* write() for one buffer: writev's iovec copy costs more. */
            w = iovcnt == 1 ? write(fd, iov->iov_base, iov->iov_len) : writev(fd, iov, iovcnt);
        }
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        pass_fd = -1; /* it went with the first byte */
        size_t done = (size_t)w;
        while (iovcnt > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    return 0;
}

int mp__io_send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds)
{
    if (nfds < 0 || nfds > MP__IO_MAX_FDS || len == 0)
        return -EINVAL;
    union {
        char b[CMSG_SPACE(sizeof(int) * MP__IO_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {(void *)buf, len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&ctl, 0, sizeof ctl);
        mh.msg_control = ctl.b;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t w;
    while ((w = sendmsg(sock, &mh, MSG_NOSIGNAL)) < 0)
        if (errno != EINTR)
            return -errno;
    if ((size_t)w < len) {
        struct iovec rest = {(char *)buf + w, len - (size_t)w};
        return mp__io_write_all(sock, true, &rest, 1, -1);
    }
    return 0;
}

/* p[i] = {fds[i], POLLIN}, in small (16 entries) or, past that, a calloc'd
 * array: NULL when out of memory. */
static struct pollfd *pollfds_of(const int *fds, size_t n, struct pollfd small[16])
{
    struct pollfd *p = n > 16 ? calloc(n, sizeof *p) : small;
    if (p != NULL)
        for (size_t i = 0; i < n; i++)
            p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    return p;
}

/* ppoll (a timeout in nanoseconds, not rounded to ms) until one is ready
 * or the deadline: > 0 (the count ready), 0 (deadline), or -errno. */
static int poll_until(struct pollfd *p, size_t n, int64_t deadline)
{
    for (;;) {
        struct timespec ts;
        int rc = ppoll(p, (nfds_t)n, mp__timespec_left(deadline, &ts), NULL);
        if (rc > 0)
            return rc;
        if (rc == 0) {
            if (deadline != MP__NO_DEADLINE && mp__now_ns() >= deadline)
                return 0;
            continue;
        }
        if (errno != EINTR)
            return -errno;
    }
}

int mp__io_wait_readable(const int *fds, size_t n, int64_t deadline, bool *ready)
{
    struct pollfd small[16], *p = pollfds_of(fds, n, small);
    if (p == NULL)
        return -ENOMEM;
    int rc = poll_until(p, n, deadline);
    for (size_t i = 0; i < n; i++)
        ready[i] = rc > 0 && p[i].revents != 0;
    if (p != small)
        free(p);
    return rc;
}

int mp__io_wait_any(const int *fds, size_t n, int64_t deadline)
{
    struct pollfd small[16], *p = pollfds_of(fds, n, small);
    if (p == NULL)
        return -ENOMEM;
    int rc = poll_until(p, n, deadline);
    if (rc == 0)
        rc = -ETIMEDOUT;
    if (rc > 0) {
        int first = -1;
        for (size_t i = 0; i < n && rc != -EBADF; i++) {
            if (p[i].revents & POLLNVAL)
                rc = -EBADF; /* a closed fd anywhere is the caller's bug */
            else if (p[i].revents != 0 && first < 0)
                first = (int)i;
        }
        if (rc != -EBADF)
            rc = first;
    }
    if (p != small)
        free(p);
    return rc;
}

/* ---- addresses ---- */

typedef struct {
    struct sockaddr_storage sa;
    socklen_t len;
    int family;
} addr;

/* Parse "unix:/path" or "tcp:HOST:PORT" (HOST may be [v6]). */
static int parse_address(const char *address, addr *a)
{
    memset(a, 0, sizeof *a);
    if (address == NULL)
        return -EINVAL;
    if (strncmp(address, "unix:", 5) == 0) {
        const char *path = address + 5;
        struct sockaddr_un *un = (struct sockaddr_un *)&a->sa;
        size_t n = strlen(path);
        if (n == 0 || n >= sizeof un->sun_path)
            return -EINVAL;
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path, n + 1);
        a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
        a->family = AF_UNIX;
        return 0;
    }
    if (strncmp(address, "tcp:", 4) != 0)
        return -EINVAL;
    const char *host = address + 4, *colon = strrchr(host, ':');
    if (colon == NULL || colon == host || colon[1] == '\0')
        return -EINVAL;
    char h[256];
    size_t hn = (size_t)(colon - host);
    if (host[0] == '[' && hn >= 2 && host[hn - 1] == ']') {
        host++;
        hn -= 2;
    }
    if (hn == 0 || hn >= sizeof h)
        return -EINVAL;
    memcpy(h, host, hn);
    h[hn] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535)
        return -EINVAL;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV}, *res;
    char ps[8];
    snprintf(ps, sizeof ps, "%ld", port);
    int g = getaddrinfo(h, ps, &hints, &res);
    if (g != 0)
        return g == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
    memcpy(&a->sa, res->ai_addr, res->ai_addrlen);
    a->len = res->ai_addrlen;
    a->family = res->ai_family;
    freeaddrinfo(res);
    return 0;
}

/* True if a listening socket is bound to path, from the kernel's table of
 * Unix sockets (no probe connection, which a live listener would have to
 * accept); true too when the table cannot be read (then we keep out). */
static bool unix_path_listened(const char *path)
{
    FILE *f = fopen("/proc/net/unix", "re");
    if (f == NULL)
        return true;
    char line[4200];
    bool found = false;
    size_t plen = strlen(path);
    if (fgets(line, sizeof line, f) != NULL) /* the header */
        while (!found && fgets(line, sizeof line, f) != NULL) {
            unsigned long flags;
            int at = 0;
            /* Num RefCount Protocol Flags Type St Inode Path */
            if (sscanf(line, "%*s %*s %*s %lx %*s %*s %*s %n", &flags, &at) != 1 || at == 0)
                continue;
            const char *name = line + at;
            found = (flags & 0x10000) != 0 /* __SO_ACCEPTCON: listening */ &&
                    strncmp(name, path, plen) == 0 && (name[plen] == '\n' || name[plen] == '\0');
        }
    fclose(f);
    return found;
}

/* A Unix socket file that nothing listens on any more (its listener was
 * killed) is removed, so that a new listener can take the path: true if
 * it was.  Anything else at the path (a live listener, a file that is no
 * socket) stays. */
static bool take_stale(const addr *a)
{
    const char *path = ((const struct sockaddr_un *)&a->sa)->sun_path;
    struct stat st;
    if (path[0] == '\0' || lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode))
        return false;
    return !unix_path_listened(path) && unlink(path) == 0;
}

int mp__io_listen(const char *address, int backlog)
{
    addr a;
    int rc = parse_address(address, &a);
    if (rc < 0)
        return rc;
    int fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (a.family != AF_UNIX)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &(int){1}, sizeof(int));
    int b = bind(fd, (struct sockaddr *)&a.sa, a.len);
    if (b < 0 && errno == EADDRINUSE && a.family == AF_UNIX && take_stale(&a))
        b = bind(fd, (struct sockaddr *)&a.sa, a.len);
    if (b < 0 || listen(fd, backlog) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int mp__io_set_backlog(int fd, int backlog)
{
    return listen(fd, backlog) < 0 ? -errno : 0;
}

int mp__io_accept(int lfd, int64_t deadline)
{
    for (;;) {
        bool ready;
        int rc = mp__io_wait_readable(&lfd, 1, deadline, &ready);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return -ETIMEDOUT;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
            /* Small frames must not wait for Nagle (fails harmlessly on
             * Unix sockets). */
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
            return fd;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
            errno != ECONNABORTED)
            return -errno;
    }
}

int mp__io_connect(const char *address, int64_t deadline)
{
    addr a;
    int rc = parse_address(address, &a);
    if (rc < 0)
        return rc;
    int fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&a.sa, a.len) < 0) {
        if (errno != EINPROGRESS && errno != EAGAIN) {
            rc = -errno;
            close(fd);
            return rc;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        for (;;) {
            int pr = poll(&p, 1, mp__deadline_ms(deadline));
            if (pr > 0)
                break;
            if (pr < 0 && errno != EINTR) {
                rc = -errno;
                close(fd);
                return rc;
            }
            if (pr == 0 && deadline != MP__NO_DEADLINE && mp__now_ns() >= deadline) {
                close(fd);
                return -ETIMEDOUT;
            }
        }
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err != 0) {
            close(fd);
            return -err;
        }
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    if (a.family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    return fd;
}

int mp__io_local_address(int fd, char *buf, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return -errno;
    int n;
    if (ss.ss_family == AF_UNIX) {
        n = snprintf(buf, cap, "unix:%s", ((struct sockaddr_un *)&ss)->sun_path);
    } else {
        char h[INET6_ADDRSTRLEN];
        char s[8];
        if (getnameinfo((struct sockaddr *)&ss, sl, h, sizeof h, s, sizeof s,
                        NI_NUMERICHOST | NI_NUMERICSERV) != 0)
            return -EINVAL;
        n = snprintf(buf, cap, ss.ss_family == AF_INET6 ? "tcp:[%s]:%s" : "tcp:%s:%s", h, s);
    }
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

int mp__io_is_listening(int fd)
{
    int on = 0;
    socklen_t len = sizeof on;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) < 0)
        return -errno;
    return on != 0;
}

int mp__io_set_nonblock(int fd, bool on, bool *was)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    if (was)
        *was = (fl & O_NONBLOCK) != 0;
    int want = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
    return want == fl || fcntl(fd, F_SETFL, want) == 0 ? 0 : -errno;
}

int mp__io_accept_now(int lfd)
{
    int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    return c < 0 ? -errno : c;
}
