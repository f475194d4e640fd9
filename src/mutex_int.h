/* A recoverable process-shared mutex: the building block of the shared
 * heap's lock and of mp_lock.
 *
 * It is a POSIX robust, process-shared, error-checking mutex.  glibc owns
 * each thread's kernel robust list (set_robust_list), so building on its
 * robust mutexes is the one way to get the kernel's guarantee: when a thread
 * or process dies holding the mutex, the kernel marks it and wakes one
 * waiter, which acquires it with EOWNERDEAD.  We make it consistent at once
 * and report MP_EOWNERDEAD, so the mutex stays usable forever after. */
#ifndef MPROC_MUTEX_INT_H
#define MPROC_MUTEX_INT_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>

typedef struct {
    pthread_mutex_t m;
} mp__mutex;

/* Initialise in shared memory.  Returns 0 or -errno. */
int mp__mutex_init(mp__mutex *m);
/* Acquire before the absolute CLOCK_MONOTONIC deadline (MP__NO_DEADLINE:
 * forever).  Returns 0, MP_EOWNERDEAD (acquired; the previous holder died),
 * -ETIMEDOUT, -EDEADLK (this thread holds it), or -errno. */
int mp__mutex_lock(mp__mutex *m, int64_t deadline);
/* The result of a pthread lock call other than 0, as a code. */
int mp__mutex_result(mp__mutex *m, int rc);
/* Acquire with no deadline: the inlined uncontended path, then waits in
 * slices (see mp__mutex_lock_slow). */
int mp__mutex_lock_slow(mp__mutex *m);
static inline int mp__mutex_lock_forever(mp__mutex *m)
{
    int rc = pthread_mutex_trylock(&m->m);
    return rc == 0 ? 0 : rc == EBUSY ? mp__mutex_lock_slow(m) : mp__mutex_result(m, rc);
}
/* Acquire only if free now: 0, MP_EOWNERDEAD, -EBUSY, -EDEADLK. */
int mp__mutex_trylock(mp__mutex *m);
/* Release.  Returns 0, or -EPERM if the calling thread does not hold it. */
static inline int mp__mutex_unlock(mp__mutex *m)
{
    return -pthread_mutex_unlock(&m->m);
}
void mp__mutex_destroy(mp__mutex *m);

#endif
