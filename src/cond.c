/* Condition and Barrier.
 *
 * Condition: a sequence word that notify() bumps and waiters sleep on.  A
 * waiter reads the sequence while it still holds the lock, so a notify
 * that comes after its unlock changes the word and its futex wait returns
 * at once: no wake-up is lost.  notify(n) wakes n sleepers, and may wake a
 * waiter that was just going to sleep as well: wake-ups can be spurious,
 * as with pthreads.  A waiter killed by SIGKILL after being woken takes
 * its notification with it (Python's Condition has the same limit).
 *
 * Barrier: an internal robust mutex guards the counters; waiters sleep on
 * a generation word that the last arrival (or abort/reset/timeout) bumps.
 * Each generation's outcome (passed or broken) is kept in a 64-bit history
 * so a waiter woken late still knows how its own generation ended.  If a
 * process dies inside the barrier's critical section, the next caller
 * recovers the mutex and breaks the barrier rather than trust the
 * counters. */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "mproc/sync.h"
#include "mutex_int.h"
#include "os/os.h"
#include "wait_int.h"
#include "sync_int.h"

struct mp_cond {
    struct mp_lock *lock;   /* the lock, or &rlock->lock */
    mp_rlock *rlock;        /* NULL for a plain lock */
    bool owns_lock;
    _Atomic uint32_t seq;
    _Atomic uint32_t sleepers;
};

static int cond_make(mp_cond **out, struct mp_lock *lock, mp_rlock *rlock, bool owns)
{
    int err = 0;
    mp_cond *c = mp__heap_calloc(sizeof *c, &err);
    if (c == NULL)
        return err;
    c->lock = lock;
    c->rlock = rlock;
    c->owns_lock = owns;
    *out = c;
    return 0;
}

int mp_cond_new(mp_cond **out, mp_lock *lock)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    bool owns = lock == NULL;
    if (owns) {
        int rc = mp_lock_new(&lock);
        if (rc < 0)
            return rc;
    }
    int rc = cond_make(out, lock, NULL, owns);
    if (rc < 0 && owns)
        mp_lock_free(lock);
    return rc;
}

int mp_cond_new_rlock(mp_cond **out, mp_rlock *lock)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (lock == NULL)
        return -EINVAL;
    return cond_make(out, &lock->lock, lock, false);
}

mp_lock *mp_cond_lock(mp_cond *c)
{
    return c != NULL && c->rlock == NULL ? c->lock : NULL;
}

mp_rlock *mp_cond_rlock(mp_cond *c)
{
    return c != NULL ? c->rlock : NULL;
}

int mp_cond_acquire(mp_cond *c, double timeout)
{
    if (c == NULL)
        return -EINVAL;
    return c->rlock ? mp_rlock_acquire(c->rlock, timeout) : mp_lock_acquire(c->lock, timeout);
}

int mp_cond_release(mp_cond *c)
{
    if (c == NULL)
        return -EINVAL;
    return c->rlock ? mp_rlock_release(c->rlock) : mp_lock_release(c->lock);
}

int mp_cond_wait(mp_cond *c, double timeout)
{
    int64_t deadline;
    if (c == NULL || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    if (!mp__lock_held(c->lock))
        return -EPERM;
    uint32_t seq = atomic_load(&c->seq);
    atomic_fetch_add(&c->sleepers, 1);
    unsigned depth = c->rlock ? c->rlock->count : 0;
    mp__lock_release(c->lock);

    int rc;
    do
        rc = mp__futex_wait(&c->seq, seq, deadline);
    while (rc == -EINTR);
    atomic_fetch_sub(&c->sleepers, 1);

    int lrc = mp__lock_acquire(c->lock, MP__NO_DEADLINE);
    if (c->rlock)
        c->rlock->count = depth;
    if (lrc == MP_EOWNERDEAD)
        return MP_EOWNERDEAD;
    if (lrc < 0) /* cannot happen: EDEADLK needs us to hold it */
        return lrc;
    return rc == -ETIMEDOUT ? MP_ETIMEDOUT : 0;
}

int mp_cond_notify(mp_cond *c, unsigned n)
{
    if (c == NULL)
        return -EINVAL;
    if (!mp__lock_held(c->lock))
        return -EPERM;
    if (n == 0 || atomic_load(&c->sleepers) == 0)
        return 0;
    atomic_fetch_add(&c->seq, 1);
    mp__futex_wake(&c->seq, n > INT32_MAX ? INT32_MAX : (int)n);
    return 0;
}

int mp_cond_notify_all(mp_cond *c)
{
    return mp_cond_notify(c, UINT32_MAX);
}

void mp_cond_free(mp_cond *c)
{
    if (c == NULL)
        return;
    struct mp_lock *own = c->owns_lock ? c->lock : NULL;
    if (mp__heap_free(c) == 0 && own != NULL) /* no-op unless ours */
        mp_lock_free(own);
}

/* ---- Barrier ---- */

struct mp_barrier {
    mp__mutex m;
    unsigned parties;
    unsigned count;          /* arrived in the current generation */
    bool broken;
    uint64_t broken_hist;    /* bit (g & 63): generation g ended broken */
    _Atomic uint32_t gen;
};

int mp_barrier_new(mp_barrier **out, unsigned parties)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (parties == 0 || parties > INT32_MAX)
        return -EINVAL;
    int err = 0;
    mp_barrier *b = mp__heap_calloc(sizeof *b, &err);
    if (b == NULL)
        return err;
    int rc = mp__mutex_init(&b->m);
    if (rc < 0) {
        mp__heap_free(b);
        return rc;
    }
    b->parties = parties;
    *out = b;
    return 0;
}

/* End the current generation; `broken` says how.  Lock held. */
static void end_generation(mp_barrier *b, bool broken)
{
    uint32_t g = atomic_load_explicit(&b->gen, memory_order_relaxed);
    uint64_t bit = (uint64_t)1 << (g & 63);
    b->broken_hist = broken ? b->broken_hist | bit : b->broken_hist & ~bit;
    b->count = 0;
    atomic_store(&b->gen, g + 1);
    mp__wake_word(&b->gen, NULL);
}

/* Take the internal mutex; a holder's death leaves counters we cannot
 * trust, so it breaks the barrier. */
static void barrier_lock(mp_barrier *b)
{
    if (mp__mutex_lock(&b->m, MP__NO_DEADLINE) == MP_EOWNERDEAD) {
        b->broken = true;
        end_generation(b, true);
    }
}

int mp_barrier_wait(mp_barrier *b, double timeout)
{
    int64_t deadline;
    if (b == NULL || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    barrier_lock(b);
    if (b->broken) {
        mp__mutex_unlock(&b->m);
        return MP_EBROKEN;
    }
    int index = (int)b->count++;
    uint32_t g = atomic_load_explicit(&b->gen, memory_order_relaxed);
    if (b->count == b->parties) {
        end_generation(b, false);
        mp__mutex_unlock(&b->m);
        return index;
    }
    mp__mutex_unlock(&b->m);

    for (;;) {
        int rc = mp__wait_change(&b->gen, NULL, g, deadline, 0);
        if (atomic_load(&b->gen) != g)
            break;
        if (rc == -ETIMEDOUT) {
            barrier_lock(b);
            if (atomic_load(&b->gen) != g) { /* ended as we timed out */
                mp__mutex_unlock(&b->m);
                break;
            }
            b->broken = true;
            end_generation(b, true);
            mp__mutex_unlock(&b->m);
            return MP_ETIMEDOUT;
        }
    }
    barrier_lock(b);
    bool broken = (b->broken_hist >> (g & 63)) & 1;
    mp__mutex_unlock(&b->m);
    return broken ? MP_EBROKEN : index;
}

int mp_barrier_abort(mp_barrier *b)
{
    if (b == NULL)
        return -EINVAL;
    barrier_lock(b);
    b->broken = true;
    end_generation(b, true);
    mp__mutex_unlock(&b->m);
    return 0;
}

int mp_barrier_reset(mp_barrier *b)
{
    if (b == NULL)
        return -EINVAL;
    barrier_lock(b);
    if (b->count > 0)
        end_generation(b, true);
    b->broken = false;
    b->count = 0;
    mp__mutex_unlock(&b->m);
    return 0;
}

bool mp_barrier_broken(mp_barrier *b)
{
    if (b == NULL)
        return false;
    barrier_lock(b);
    bool broken = b->broken;
    mp__mutex_unlock(&b->m);
    return broken;
}

unsigned mp_barrier_parties(mp_barrier *b)
{
    return b != NULL ? b->parties : 0;
}

unsigned mp_barrier_n_waiting(mp_barrier *b)
{
    if (b == NULL)
        return 0;
    barrier_lock(b);
    unsigned n = b->broken ? 0 : b->count;
    mp__mutex_unlock(&b->m);
    return n;
}

void mp_barrier_free(mp_barrier *b)
{
    if (b != NULL)
        mp__heap_free(b);
}
