/* mproc — threads and timers (threading.Thread, threading.Timer).
 *
 * As in Python, a program waits for its non-daemon threads when it exits
 * normally: an atexit handler (installed at the first start) blocks until
 * every non-daemon thread, joined or not, has returned.  Daemon threads are
 * not waited for; they stop when the process exits.  A pending Timer is a
 * non-daemon thread too: exit waits for it to fire, unless it is cancelled.
 * A child of mp_process_start makes the same wait when its target returns.
 *
 * Thread and timer objects are local to the process that made them: used
 * in a forked child, every call returns -EPERM (or false).  Functions on
 * one object may be called from any thread of that process. */
#ifndef MPROC_THREAD_H
#define MPROC_THREAD_H

#include <mproc/common.h>
#include <mproc/process.h> /* mp_target */

MP_BEGIN_DECLS

typedef struct mp_thread mp_thread;
typedef struct mp_timer mp_timer;

typedef struct {
    const char *name; /* copied; NULL or "": "Thread-N" as in Python */
    bool daemon;      /* not waited for at exit */
    size_t stack_size; /* bytes (threading.stack_size); 0: the default.
                        * At least 32 KiB and PTHREAD_STACK_MIN; rounded
                        * up to the page size */
} mp_thread_opts;

/* Describe a thread that will run fn(arg); opts may be NULL.  Nothing runs
 * yet.  Errors: -EINVAL (out or fn NULL, stack_size not 0 and below the
 * minimum, or too big to round up), -ENOMEM. */
MP_API int mp_thread_new(mp_thread **out, mp_target fn, void *arg, const mp_thread_opts *opts);

/* Start it.  Errors: -EINVAL, -EALREADY (started before), -EPERM, -EAGAIN
 * (no resources for a thread, e.g. no memory for its stack_size). */
MP_API int mp_thread_start(mp_thread *t);

/* Wait up to timeout seconds for it to return.  Returns 0, MP_ETIMEDOUT,
 * -EINVAL (NULL, NaN, not started), -EDEADLK (a thread joining itself),
 * -EPERM.  Joining again after success returns 0 at once. */
MP_API int mp_thread_join(mp_thread *t, double timeout);

/* True from start until fn has returned. */
MP_API bool mp_thread_is_alive(mp_thread *t);

/* fn's return value, once it has returned: 0, or -EAGAIN (still running or
 * not started), -EINVAL, -EPERM. */
MP_API int mp_thread_result(mp_thread *t, int *result);

/* The name from the options, or "Thread-N" if it was NULL or ""; NULL for
 * NULL. */
MP_API const char *mp_thread_name(const mp_thread *t);

/* True if created as a daemon. */
MP_API bool mp_thread_daemon(const mp_thread *t);

/* Release the object.  A running thread is detached, not stopped: it runs
 * on (and a non-daemon one is still waited for at exit).  NULL: no-op. */
MP_API void mp_thread_free(mp_thread *t);

/* A timer that calls fn(arg) on its own thread delay seconds after
 * mp_timer_start, unless cancelled first.  Errors: -EINVAL (out or fn NULL,
 * delay negative or NaN), -ENOMEM. */
MP_API int mp_timer_new(mp_timer **out, double delay, void (*fn)(void *), void *arg);

/* Start the countdown.  Errors: -EINVAL, -EALREADY, -EPERM, -EAGAIN. */
MP_API int mp_timer_start(mp_timer *t);

/* Cancel: fn will not be called if it has not started yet.  Harmless (0)
 * after it has fired, or before start (it then never fires).  Returns 0,
 * -EINVAL, -EPERM. */
MP_API int mp_timer_cancel(mp_timer *t);

/* True once fn has been called (it may still be running). */
MP_API bool mp_timer_fired(mp_timer *t);

/* Cancel if pending, wait for fn if it is running, and free.  NULL: no-op. */
MP_API void mp_timer_free(mp_timer *t);

MP_END_DECLS

#endif
