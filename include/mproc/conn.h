/* mproc — connections: Pipe, Connection, Listener/Client
 * (multiprocessing.Pipe and multiprocessing.connection).
 *
 * A connection carries whole messages (frames) of bytes over a pipe or a
 * socket.  Both ends made by mp_pipe_new before a fork work in the children
 * too; several processes or threads may send on one end at once and their
 * messages never interleave.  A connection object holds this process's
 * file descriptors: mp_conn_free closes them here only.
 *
 * Timeouts: MP_FOREVER blocks, 0 never blocks, NaN is -EINVAL.  A receive
 * that times out in the middle of a message keeps what has arrived for the
 * next call. */
#ifndef MPROC_CONN_H
#define MPROC_CONN_H

#include <mproc/common.h>
#include <mproc/error.h>

MP_BEGIN_DECLS

typedef struct mp_conn mp_conn;
typedef struct mp_listener mp_listener;

/* The largest message a connection accepts unless told otherwise with
 * mp_conn_set_max_msg (a frame over the limit gets -EMSGSIZE and closes the
 * connection). */
#define MP_CONN_DEFAULT_MAX_MSG ((size_t)1 << 30)

/* Pipe(duplex): duplex gives two ends that both send and receive (a socket
 * pair); otherwise *a only receives and *b only sends (a pipe).
 * Returns 0, -EINVAL, -EMFILE, -ENOMEM. */
MP_API int mp_pipe_new(mp_conn **a, mp_conn **b, bool duplex);

/* Send one message of len bytes (0 allowed).  Blocks while the peer's
 * buffer is full.  Returns 0, MP_ECLOSED (the peer end is gone, or this
 * end was closed), MP_ETOOBIG (len over the limit), -EINVAL (NULL conn,
 * NULL data with len > 0, a receive-only end), -EPIPE (a sender sharing
 * this end died in the middle of a message: the stream is broken). */
MP_API int mp_conn_send(mp_conn *c, const void *data, size_t len);

/* Receive one message into buf (cap bytes); *len gets its size.  Returns
 * 0, MP_ETIMEDOUT, MP_ECLOSED (the peer closed and everything was read),
 * MP_ETOOBIG (cap too small: *len is the size needed and the message is
 * kept), -EBADMSG (the next message is a file descriptor: use
 * mp_conn_recv_fd), -EPROTO (malformed or truncated frame: the connection
 * is closed), -EMSGSIZE (frame over the limit: closed), -EINVAL. */
MP_API int mp_conn_recv(mp_conn *c, void *buf, size_t cap, size_t *len, double timeout);

/* Receive one message into a malloc'd buffer (*data, at least 1 byte; the
 * caller frees it).  Memory grows with the bytes that actually arrive, never
 * to a size a peer merely claims.  Same returns, without MP_ETOOBIG, plus
 * -ENOMEM. */
MP_API int mp_conn_recv_alloc(mp_conn *c, void **data, size_t *len, double timeout);

/* Whether there is something to receive (data or end of stream) within
 * timeout: 1 yes, 0 no, or a negative code. */
MP_API int mp_conn_poll(mp_conn *c, double timeout);

/* Send a duplicate of file descriptor fd (socket connections only: duplex
 * pipes and Listener/Client connections on Unix sockets).  Returns 0,
 * -EBADF, -ENOTSOCK (not a Unix socket connection), MP_ECLOSED, -EINVAL. */
MP_API int mp_conn_send_fd(mp_conn *c, int fd);

/* Receive a descriptor sent with mp_conn_send_fd (close-on-exec; the
 * caller closes it).  Returns 0, -EBADMSG (the next message is data), and
 * the returns of mp_conn_recv. */
MP_API int mp_conn_recv_fd(mp_conn *c, int *fd, double timeout);

/* Set the largest message this end accepts (default 1 GiB, at most
 * 4 GiB - 1).  Returns 0 or -EINVAL. */
MP_API int mp_conn_set_max_msg(mp_conn *c, size_t max_msg);

/* The receiving file descriptor, for use with poll/epoll (-1 for NULL or a
 * send-only end).  Data may already be buffered in the connection: call
 * mp_conn_poll(c, 0) before sleeping on the descriptor. */
MP_API int mp_conn_fileno(const mp_conn *c);

/* Wait until one of n connections has something to receive.  Returns the
 * index of a ready one, MP_ETIMEDOUT, -EINVAL (NULL array, a NULL or
 * send-only entry, n == 0) or -errno.  Fair: when several are ready, calls
 * take them in turn, so a busy connection cannot starve the others. */
MP_API int mp_wait(mp_conn *const *conns, size_t n, double timeout);

/* Wait until one of n file descriptors is readable, at end of file, hung
 * up or in error (multiprocessing.connection.wait on sentinels and
 * sockets): process sentinels (mp_process_sentinel), sockets, pipes, any
 * pollable descriptor.  For a connection, mp_wait is the one to use: this
 * call does not see data already buffered inside an mp_conn.  Returns the
 * lowest index among those ready, MP_ETIMEDOUT, -EINVAL (fds NULL with
 * n > 0, a negative fd, NaN timeout, n over INT_MAX, or n == 0 without a
 * timeout, which could never end), -EBADF (an fd that is not open),
 * -ENOMEM.  n == 0 with a timeout waits it out.  Thread-safe. */
MP_API int mp_wait_fds(const int *fds, size_t n, double timeout);

/* Close this process's descriptors and free the object (NULL: no-op). */
MP_API void mp_conn_free(mp_conn *c);

/* Listen on address "unix:/path" or "tcp:HOST:PORT" (port 0 picks a free
 * port: see mp_listener_address).  With an authkey (keylen > 0), every
 * connection must prove it knows the key, and the listener proves it too
 * (HMAC-SHA256 challenges both ways).  Returns 0, -EINVAL (bad address,
 * NULL key with keylen > 0), -EADDRINUSE (something listens there, or the
 * path is no socket), -errno.  A Unix socket path left by a listener that
 * was killed (nothing listens on it) is taken over; the path is removed
 * again by mp_listener_free.  Connections not yet accepted wait in a queue
 * of the kernel's largest size (net.core.somaxconn): see
 * mp_listener_set_backlog. */
MP_API int mp_listener_new(mp_listener **out, const char *address, const void *authkey,
                           size_t keylen);

/* Accept one client (and check its key).  With a key the handshakes run
 * side by side, each with its own time limit (see below): a client that is
 * slow or silent holds up no one, and accept returns the next connection
 * to have passed.  Returns 0, MP_ETIMEDOUT, MP_EAUTH (a client failed the
 * challenge or refused ours: it is dropped), -EPROTO (a client spoke
 * garbage: dropped), -EINVAL, -errno.  A client past its handshake time
 * limit is dropped without a word.  Accepts on one listener are taken one
 * at a time (a second thread waits for the first); each process forked
 * with the listener accepts on its own (pre-fork servers). */
MP_API int mp_listener_accept(mp_listener *l, mp_conn **out, double timeout);

/* The time limit of each client's handshake (default 5 s; MP_FOREVER or
 * +inf: none).  Returns 0, -EINVAL (NULL, 0, NaN). */
MP_API int mp_listener_set_handshake_timeout(mp_listener *l, double timeout);

/* How many connections not yet accepted the kernel keeps (Python's
 * backlog; the default is the largest, and the kernel caps n at
 * net.core.somaxconn).  Past it, a client's connection attempt is dropped
 * and retried after 1 s, then 3 s...  Returns 0, -EINVAL (NULL, n < 0),
 * -errno. */
MP_API int mp_listener_set_backlog(mp_listener *l, int n);

/* The address clients connect to (with the port chosen for port 0);
 * NULL for NULL. */
MP_API const char *mp_listener_address(const mp_listener *l);

/* Connect to a listener and pass its challenge (and check it passes ours).
 * Returns 0, MP_ETIMEDOUT, MP_EAUTH (wrong key on either side),
 * -ECONNREFUSED, -ENOENT, -EINVAL, -EPROTO, -errno. */
MP_API int mp_client_connect(mp_conn **out, const char *address, const void *authkey,
                             size_t keylen, double timeout);

/* Stop listening and free (NULL: no-op). */
MP_API void mp_listener_free(mp_listener *l);

MP_END_DECLS

#endif
