/* Byte streams for connections: pipes, socket pairs, Unix and TCP sockets,
 * descriptor passing and readiness waits.  Everything here retries EINTR
 * and returns -errno on failure. */
#ifndef MPROC_OS_IO_H
#define MPROC_OS_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* Most descriptors one read can bring in (more are closed: -ETOOMANYREFS). */
#define MP__IO_MAX_FDS 8

/* A close-on-exec pipe (fds[0] reads, fds[1] writes) or, if duplex, a
 * Unix stream socket pair.  The first pipe makes SIGPIPE harmless if it
 * still has its default action (see io_linux.c). */
int mp__io_pair(int fds[2], bool duplex);
/* Read at most n bytes.  Sockets go through recvmsg so that passed
 * descriptors are kept: they are stored in fds (room for MP__IO_MAX_FDS),
 * their number in *nfds.  nonblock: fail with -EAGAIN rather than wait
 * (sockets only; pipes always wait).  Returns the bytes read (0 at EOF). */
ssize_t mp__io_read(int fd, bool sock, void *buf, size_t n, bool nonblock, int *fds, int *nfds);
/* mp__io_read on a socket that reports descriptors lost in transit (no
 * room for them here: MSG_CTRUNC) in *truncated, with the bytes read as
 * the result, instead of failing with -ETOOMANYREFS. */
ssize_t mp__io_recv(int fd, void *buf, size_t n, bool nonblock, int *fds, int *nfds,
                    bool *truncated);
/* Write the whole of iov (in several calls if need be), passing descriptor
 * pass_fd (-1: none) with the first byte on a socket.  A peer that has gone
 * gives -EPIPE. */
int mp__io_write_all(int fd, bool sock, struct iovec *iov, int iovcnt, int pass_fd);
/* Send a small message with nfds (<= MP__IO_MAX_FDS) descriptors passed
 * along on a socket.  Returns 0 or -errno. */
int mp__io_send_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);
/* Wait until one of fds is readable (or at EOF/error), up to the absolute
 * CLOCK_MONOTONIC deadline.  ready[i] is set for each ready one.  Returns
 * how many are ready, 0 at the deadline, or -errno. */
int mp__io_wait_readable(const int *fds, size_t n, int64_t deadline, bool *ready);
/* Wait until one of fds is readable (or at EOF, hung up, in error), up to
 * the absolute CLOCK_MONOTONIC deadline, to the nanosecond.  Returns the
 * lowest index among those ready, -ETIMEDOUT, -EBADF (one is not an open
 * descriptor), or -errno.  n may be 0: then it only waits out the
 * deadline. */
int mp__io_wait_any(const int *fds, size_t n, int64_t deadline);
/* Close, keeping errno. */
void mp__io_close(int fd);

/* ---- sockets for Listener/Client ---- */
/* Listen on "unix:/path" or "tcp:HOST:PORT" (port 0: any free one). */
int mp__io_listen(const char *address, int backlog);
/* Change a listening socket's backlog.  Returns 0 or -errno. */
int mp__io_set_backlog(int fd, int backlog);
/* Accept one connection (close-on-exec), waiting up to deadline: the new
 * fd, -ETIMEDOUT, or -errno. */
int mp__io_accept(int lfd, int64_t deadline);
/* 1 if fd is a listening socket, 0 if a socket that is not, -ENOTSOCK,
 * -EBADF. */
int mp__io_is_listening(int fd);
/* Set or clear O_NONBLOCK on fd; *was (may be NULL) gets whether it was
 * set.  0 or -errno. */
int mp__io_set_nonblock(int fd, bool on, bool *was);
/* Accept one connection without waiting (lfd is non-blocking), close-on-
 * exec: the descriptor, or -errno (-EAGAIN when none is waiting). */
int mp__io_accept_now(int lfd);
/* Connect to an address of the forms above, up to deadline. */
int mp__io_connect(const char *address, int64_t deadline);
/* The bound address of a listening socket, in the forms above. */
int mp__io_local_address(int fd, char *buf, size_t cap);

#endif
