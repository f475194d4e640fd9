/* mproc — error codes.
 *
 * Every function that can fail returns 0 (or a documented count or index
 * >= 0) on success and a negative code on failure: either a negated errno
 * value (-EINVAL, -ENOMEM, ...) or one of the library's own MP_E* codes
 * below.  The library's own codes sit below -4095, outside the range Linux
 * uses for errno values, so the two never collide; the one exception is
 * MP_ETIMEDOUT, which is -ETIMEDOUT itself. */
#ifndef MPROC_ERROR_H
#define MPROC_ERROR_H

#include <errno.h>
#include <mproc/common.h>

/* The library's own codes: X(name, value, message).  One table generates the
 * enum, mp_strerror() and mp_errname(). */
#define MP_ERRNO_MAP(X)                                                      \
    X(EEMPTY,     -5001, "queue is empty")                                   \
    X(EFULL,      -5002, "queue is full")                                    \
    X(ECLOSED,    -5003, "object is closed")                                 \
    X(EOWNERDEAD, -5004, "a holder died (a lock: now held; a queue: its messages count as done)") \
    X(EWORKER,    -5005, "worker process died while running the task")      \
    X(EDEADLINE,  -5006, "task ran past its time limit and was killed")     \
    X(EBROKEN,    -5007, "barrier or connection is broken")                                \
    X(ECANCELED,  -5008, "task was cancelled")                               \
    X(ETOOBIG,    -5009, "message too big for the buffer or the limit")     \
    X(EAUTH,      -5010, "authentication failed")                            \
    X(ETASK,      -5011, "task function returned an error")                  \
    X(EDONE,      -5012, "no more results")                                  \
    X(EFUNC,      -5013, "function cannot be named in another address space") \
    X(ENOMPI,     -5014, "not started by mpirun with worker ranks, or no MPI") \
    X(EMEMORY,    -5015, "worker went over its memory limit")

enum {
#define MP__ERR_ENUM(name, value, msg) MP_##name = (value),
    MP_ERRNO_MAP(MP__ERR_ENUM)
#undef MP__ERR_ENUM
    MP_ETIMEDOUT = -ETIMEDOUT
};

MP_BEGIN_DECLS

/* Describe any code this library returns (its own or a negated errno).
 * Returns a static string; never NULL, also for unknown codes and 0.
 * Thread-safe and async-signal-safe. */
MP_API const char *mp_strerror(int code);

/* Name any code: "MP_EEMPTY", "EINVAL", "OK" for 0; "UNKNOWN" otherwise.
 * Thread-safe. */
MP_API const char *mp_errname(int code);

MP_END_DECLS

#endif
