/* mproc — coroutines (the gevent/greenlet model).
 *
 * Many light tasks on one thread, switching when they wait: for a timer,
 * for a descriptor to become ready, for a channel or another coroutine.
 * Each thread has its own scheduler; a coroutine, a channel and everything
 * waiting on them belong to the thread that made them and must only be
 * used there (they are not thread-safe, by design: no locks, no atomics).
 *
 * Coroutines run only while their thread is inside the scheduler: in
 * mp_co_run, or blocked in a call of this header made outside any
 * coroutine (mp_co_join, mp_co_sleep, mp_co_wait_fd, channel calls), which
 * run the scheduler until they can return.
 *
 * Stacks: MP_CO_STACK_DEFAULT bytes of address space each (only the pages
 * a coroutine touches are resident: one or two for a small one), with a
 * guard page below, so that an overflow faults instead of overwriting
 * another stack.  Stacks of the default size are reused.
 *
 * Descriptors waited on must be non-blocking: the I/O helpers below make
 * the ones they create so (mp_co_nonblock does it for others). */
#ifndef MPROC_CORO_H
#define MPROC_CORO_H

#include <mproc/common.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

MP_BEGIN_DECLS

typedef struct mp_co mp_co;
typedef struct mp_chan mp_chan;
typedef void (*mp_co_fn)(void *arg);

#define MP_CO_STACK_DEFAULT ((size_t)128 * 1024)

/* Create a coroutine running fn(arg) on a stack of stack_size bytes (0:
 * MP_CO_STACK_DEFAULT; a size under 16 KiB is raised to 16 KiB, and every
 * size is rounded up to whole pages, plus a guard page below it), ready to
 * run when the scheduler next runs.  out NULL: detached, freed when it
 * ends; otherwise free the handle with mp_co_free.  Errors: -EINVAL (fn
 * NULL, stack_size over 1 TiB), -ENOMEM. */
MP_API int mp_co_spawn(mp_co **out, mp_co_fn fn, void *arg, size_t stack_size);

/* Release a handle.  A coroutine still running goes on, detached.  The
 * handle must not be used after, by any coroutine (a join under way
 * included): its record is reused by a later spawn. */
MP_API void mp_co_free(mp_co *co);

/* Wait up to timeout seconds for co to end: 0 or MP_ETIMEDOUT; -EDEADLK
 * (a coroutine joining itself), -EINVAL, -EPERM (another thread's). */
MP_API int mp_co_join(mp_co *co, double timeout);

/* True until co's function has returned. */
MP_API bool mp_co_alive(const mp_co *co);

/* Let the other ready coroutines run; returns when this one's turn comes
 * again.  Outside a coroutine: runs each ready coroutine once. */
MP_API void mp_co_yield(void);

/* Sleep this coroutine (others run): 0, or -EINVAL (negative or NaN). */
MP_API int mp_co_sleep(double seconds);

/* Run this thread's scheduler until every coroutine has ended: 0, or
 * -EDEADLK if the ones left all wait forever on each other (channels,
 * joins) with nothing that could wake them; -EBUSY inside a coroutine. */
MP_API int mp_co_run(void);

/* The running coroutine, or NULL outside any. */
MP_API mp_co *mp_co_self(void);

enum { MP_READABLE = 1, MP_WRITABLE = 2 };

/* Park until fd is readable and/or writable (events: MP_READABLE |
 * MP_WRITABLE): returns the ready events (> 0), MP_ETIMEDOUT, -EINVAL,
 * -EBUSY (another coroutine waits on the same fd and direction), or the
 * error of registering fd. */
MP_API int mp_co_wait_fd(int fd, int events, double timeout);

/* ---- coroutine-aware socket calls (fds non-blocking) ---- */

/* Make fd non-blocking: 0 or -errno. */
MP_API int mp_co_nonblock(int fd);
/* Accept a connection: the new fd (non-blocking, close-on-exec), or
 * MP_ETIMEDOUT / -errno. */
MP_API int mp_co_accept(int lfd, struct sockaddr *addr, socklen_t *addrlen, double timeout);
/* Connect fd (made non-blocking) to addr: 0, MP_ETIMEDOUT or -errno. */
MP_API int mp_co_connect(int fd, const struct sockaddr *addr, socklen_t addrlen, double timeout);
/* Read at most n bytes: how many (0 at end of file), MP_ETIMEDOUT, -errno. */
MP_API ssize_t mp_co_read(int fd, void *buf, size_t n, double timeout);
/* Write all n bytes: n, MP_ETIMEDOUT (some may have gone), -errno. */
MP_API ssize_t mp_co_write(int fd, const void *buf, size_t n, double timeout);

/* ---- channels (Go/gevent style), within one thread ---- */

/* The capacity of a channel without a bound (asyncio.Queue()): a send
 * never waits; the buffer grows as needed. */
#define MP_CHAN_UNBOUNDED SIZE_MAX

/* A channel of elements of elem_size bytes holding up to capacity of them
 * (0: rendezvous: a send waits for a receiver; MP_CHAN_UNBOUNDED: no
 * bound).  Errors: -EINVAL, -ENOMEM. */
MP_API int mp_chan_new(mp_chan **out, size_t elem_size, size_t capacity);
/* Send one element (copied): 0, MP_ETIMEDOUT, MP_ECLOSED, -EINVAL, -ENOMEM
 * (an unbounded channel could not grow). */
MP_API int mp_chan_send(mp_chan *ch, const void *elem, double timeout);
/* Receive one element: 0, MP_ETIMEDOUT, MP_ECLOSED (closed and drained). */
MP_API int mp_chan_recv(mp_chan *ch, void *elem, double timeout);
/* Close: waiting senders fail with MP_ECLOSED; receivers drain what is
 * buffered, then get MP_ECLOSED.  0, or -EINVAL. */
MP_API int mp_chan_close(mp_chan *ch);
/* One operation of a select: send *elem on ch, or receive into elem. */
typedef struct {
    mp_chan *ch;
    int op;     /* MP_CHAN_SEND or MP_CHAN_RECV */
    void *elem; /* the element to send (copied), or room for one */
    int rc;     /* set for the operation done: 0, or MP_ECLOSED */
} mp_chan_op;

enum { MP_CHAN_SEND = 1, MP_CHAN_RECV = 2, MP_CHAN_SELECT_MAX = 64 };

/* Wait until one of n operations (at most MP_CHAN_SELECT_MAX, on channels
 * of this thread) can be done, do it, and return its index (Go's select,
 * libdill's choose): ops[i].rc says 0 or MP_ECLOSED (a send to, or a
 * receive from a drained, closed channel).  When several can, one of them
 * is chosen at random, so that none starves.  Only that one is done.
 * Returns the index, MP_ETIMEDOUT, -EINVAL (NULL, n 0 or too many, a bad
 * op), -EPERM (another thread's channel), -EDEADLK, -ENOMEM. */
MP_API int mp_chan_select(mp_chan_op *ops, size_t n, double timeout);
/* Elements buffered now. */
MP_API size_t mp_chan_len(const mp_chan *ch);
/* Free a channel nobody waits on.  NULL: no-op. */
MP_API void mp_chan_free(mp_chan *ch);

MP_END_DECLS

#endif
