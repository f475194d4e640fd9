/* Recoverable process-shared mutex (see mutex_int.h for the why).
 *
 * Kill -9 safety: the kernel walks a dying thread's robust list and hands
 * each mutex it held to one waiter with EOWNERDEAD; we call
 * pthread_mutex_consistent() right away, so no sequence of deaths can leave
 * the mutex unrecoverable.  Whatever the dead holder was protecting is for
 * the caller to repair: that is why the code MP_EOWNERDEAD reaches it. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <time.h>

#include "mproc/error.h"
#include "mutex_int.h"
#include "os/os.h"
#include "wait_int.h"

enum { SPIN_TRIES = 100 };

int mp__mutex_init(mp__mutex *m)
{
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (rc != 0)
        return -rc;
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    rc = pthread_mutex_init(&m->m, &a);
    pthread_mutexattr_destroy(&a);
    return -rc;
}

int mp__mutex_result(mp__mutex *m, int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case EOWNERDEAD:
        pthread_mutex_consistent(&m->m);
        return MP_EOWNERDEAD;
    case ETIMEDOUT:
        return -ETIMEDOUT;
    default:
        return -rc;
    }
}

int mp__mutex_lock(mp__mutex *m, int64_t deadline)
{
    if (deadline == MP__NO_DEADLINE)
        return mp__mutex_lock_forever(m);
    int rc = pthread_mutex_trylock(&m->m);
    if (rc != EBUSY)
        return mp__mutex_result(m, rc);
#if defined(__SANITIZE_THREAD__)
    /* ThreadSanitizer's timed-lock interceptors ignore EOWNERDEAD (and it
     * does not know pthread_mutex_clocklock), so it would not see the lock
     * taken.  In TSan builds only, wait by retrying trylock, whose
     * interceptor does handle it. */
    for (;;) {
        if (mp__now_ns() >= deadline)
            return -ETIMEDOUT;
        nanosleep(&(struct timespec){.tv_nsec = 200000}, NULL);
        rc = pthread_mutex_trylock(&m->m);
        if (rc != EBUSY)
            return mp__mutex_result(m, rc);
    }
#else
    struct timespec ts = {.tv_sec = deadline / 1000000000,
                          .tv_nsec = deadline % 1000000000};
    return mp__mutex_result(m, pthread_mutex_clocklock(&m->m, CLOCK_MONOTONIC, &ts));
#endif
}

/* Whether the mutex looks free, without writing to it.  glibc keeps the
 * futex word (the owner's tid, 0 when free) in __data.__lock; elsewhere,
 * always try. */
static inline bool lock_word_free(mp__mutex *m)
{
#ifdef __GLIBC__
    return __atomic_load_n(&m->m.__data.__lock, __ATOMIC_RELAXED) == 0;
#else
    (void)m;
    return true;
#endif
}

/* When a holder dies the kernel wakes one waiter only; if that waiter is
 * killed before it takes the mutex, the others would sleep on a free mutex
 * forever.  Waiting in bounded slices makes them look again. */
int mp__mutex_lock_slow(mp__mutex *m)
{
    /* Holders keep it for a few hundred nanoseconds: when another CPU can
     * release it meanwhile, a short spin saves two system calls. */
    if (mp__can_run_in_parallel()) {
        for (int i = 0; i < SPIN_TRIES; i++) {
            for (int k = 0; k < 8; k++)
                mp__cpu_relax();
            if (!lock_word_free(m))
                continue; /* only look: a failed try would steal the line */
            int rc = pthread_mutex_trylock(&m->m);
            if (rc != EBUSY)
                return mp__mutex_result(m, rc);
        }
    }
    for (;;) {
        int rc = mp__mutex_lock(m, mp__now_ns() + MP__SLICE_NS);
        if (rc != -ETIMEDOUT)
            return rc;
    }
}

int mp__mutex_trylock(mp__mutex *m)
{
    return mp__mutex_result(m, pthread_mutex_trylock(&m->m));
}

void mp__mutex_destroy(mp__mutex *m)
{
    pthread_mutex_destroy(&m->m);
}
