/* mproc — synchronisation primitives (multiprocessing.Lock, RLock,
 * Semaphore, BoundedSemaphore, Condition, Event, Barrier).
 *
 * Every object lives in the shared heap: it works between the threads of a
 * process and between every process forked after it was created, as a
 * multiprocessing object passed to Process() does.  Pointers to them may be
 * stored anywhere, including in other shared memory.  `_free` by a process
 * other than the creator is a no-op; free an object only when no one uses
 * it any more.
 *
 * Waits take a timeout in seconds: MP_FOREVER (or any negative value, or
 * +inf) blocks, 0 never blocks, NaN is -EINVAL.  A wait that reaches its
 * deadline returns MP_ETIMEDOUT.  Deadlines use CLOCK_MONOTONIC.
 *
 * Owner death: locks record their owner.  When a thread or process dies
 * holding an mp_lock or mp_rlock, the next acquirer gets the lock with the
 * code MP_EOWNERDEAD (the kernel's robust-futex list hands it over at once):
 * the lock IS held, and the data it protects may be half-updated.  Test
 * with MP_ACQUIRED(rc). */
#ifndef MPROC_SYNC_H
#define MPROC_SYNC_H

#include <mproc/common.h>
#include <mproc/error.h>

MP_BEGIN_DECLS

typedef struct mp_lock mp_lock;
typedef struct mp_rlock mp_rlock;
typedef struct mp_sem mp_sem;
typedef struct mp_cond mp_cond;
typedef struct mp_event mp_event;
typedef struct mp_barrier mp_barrier;

/* True when an acquire succeeded: 0, or MP_EOWNERDEAD (held, and the last
 * holder died holding it). */
#define MP_ACQUIRED(rc) ((rc) == 0 || (rc) == MP_EOWNERDEAD)

/* ---- Lock ---- */

/* Create an unlocked lock.  Errors: -EINVAL (out NULL), -ENOMEM. */
MP_API int mp_lock_new(mp_lock **out);
/* Acquire, waiting at most timeout s.  Returns 0, MP_EOWNERDEAD (acquired;
 * the previous holder died holding it), MP_ETIMEDOUT, -EDEADLK (the calling
 * thread holds it already), -EINVAL (NULL, NaN). */
MP_API int mp_lock_acquire(mp_lock *l, double timeout);
/* Release.  Returns 0, -EPERM (the calling thread does not hold it),
 * -EINVAL. */
MP_API int mp_lock_release(mp_lock *l);
/* True if some thread holds the lock now (a snapshot). */
MP_API bool mp_lock_locked(mp_lock *l);
/* True if the calling thread holds the lock. */
MP_API bool mp_lock_held(mp_lock *l);
/* Free the lock (creator only; a no-op elsewhere and for NULL). */
MP_API void mp_lock_free(mp_lock *l);

/* ---- RLock: re-entrant lock, counted per owner thread ---- */

/* Create an unlocked re-entrant lock.  Errors: -EINVAL, -ENOMEM. */
MP_API int mp_rlock_new(mp_rlock **out);
/* Acquire (again, if the calling thread holds it: the count goes up).
 * Returns 0, MP_EOWNERDEAD, MP_ETIMEDOUT, -EOVERFLOW (count at its limit),
 * -EINVAL. */
MP_API int mp_rlock_acquire(mp_rlock *l, double timeout);
/* Release once; the lock is free when the count reaches 0.  Returns 0,
 * -EPERM (not held by the calling thread), -EINVAL. */
MP_API int mp_rlock_release(mp_rlock *l);
/* How many times the calling thread holds the lock (0: not its owner). */
MP_API unsigned mp_rlock_count(mp_rlock *l);
MP_API void mp_rlock_free(mp_rlock *l);

/* ---- Semaphore and BoundedSemaphore ---- */

/* Create a semaphore with `value` permits.  max 0: unbounded (Semaphore);
 * max > 0: bounded (BoundedSemaphore), releasing past max is -EOVERFLOW.
 * Errors: -EINVAL (out NULL, value > max > 0, value > INT32_MAX), -ENOMEM. */
MP_API int mp_sem_new(mp_sem **out, unsigned value, unsigned max);
/* Take a permit, waiting at most timeout s.  0, MP_ETIMEDOUT, -EINVAL. */
MP_API int mp_sem_acquire(mp_sem *s, double timeout);
/* Give a permit back.  0, -EOVERFLOW (bounded and already at max, or the
 * count would pass INT32_MAX), -EINVAL. */
MP_API int mp_sem_release(mp_sem *s);
/* Give n permits back at once and wake up to n waiters (Python 3.9's
 * release(n)).  0, -EOVERFLOW (bounded and the value would pass max, or it
 * would pass INT32_MAX: nothing is released), -EINVAL (NULL, n 0). */
MP_API int mp_sem_release_n(mp_sem *s, unsigned n);
/* The current number of permits (a snapshot); 0 for NULL. */
MP_API unsigned mp_sem_value(mp_sem *s);
MP_API void mp_sem_free(mp_sem *s);

/* ---- Condition ---- */

/* Create a condition variable over `lock` (NULL: the condition makes and
 * owns a lock of its own, freed with it).  The lock must outlive it.
 * Errors: -EINVAL, -ENOMEM. */
MP_API int mp_cond_new(mp_cond **out, mp_lock *lock);
/* Same over a re-entrant lock (NULL: the condition makes and owns one,
 * freed with it: Python's Condition()).  A wait releases it fully, however
 * many times it is held, and restores the count after.  Errors: -EINVAL,
 * -ENOMEM. */
MP_API int mp_cond_new_rlock(mp_cond **out, mp_rlock *lock);
/* The condition's mp_lock (NULL if it was made over an mp_rlock). */
MP_API mp_lock *mp_cond_lock(mp_cond *c);
/* The condition's mp_rlock (NULL if it was made over an mp_lock). */
MP_API mp_rlock *mp_cond_rlock(mp_cond *c);
/* Acquire / release the condition's lock, whichever kind it is. */
MP_API int mp_cond_acquire(mp_cond *c, double timeout);
MP_API int mp_cond_release(mp_cond *c);
/* Release the lock, sleep until notified or timeout s, re-acquire the lock
 * (also after a timeout, as Python does).  The caller must hold the lock.
 * Returns 0 (notified: there are no spurious wake-ups, though the state
 * may have changed again before the lock came back), MP_ETIMEDOUT (not
 * notified), MP_EOWNERDEAD (notified or not, the lock is held again and
 * its last holder died), -EPERM (lock not held by the calling thread),
 * -ENOMEM (no heap for the waiter's record), -EINVAL. */
MP_API int mp_cond_wait(mp_cond *c, double timeout);
/* Python's wait_for: wait until pred(arg) is true, at most timeout s in
 * all.  pred is called with the lock held: first before any wait, then
 * after each wake-up (and once more at the deadline).  Returns 0 (pred
 * true), MP_ETIMEDOUT (still false at the deadline), MP_EOWNERDEAD (as
 * wait; pred not called again), -EPERM (lock not held), -ENOMEM, -EINVAL
 * (c or pred NULL, NaN).  The caller holds the lock, and holds it on
 * return. */
MP_API int mp_cond_wait_for(mp_cond *c, bool (*pred)(void *), void *arg, double timeout);
/* Wake the n longest waiting waiters (fewer if fewer wait) / all waiters:
 * exactly those return 0 from mp_cond_wait.  The caller must hold the
 * lock.  Returns 0, -EPERM (lock not held), -EINVAL. */
MP_API int mp_cond_notify(mp_cond *c, unsigned n);
MP_API int mp_cond_notify_all(mp_cond *c);
MP_API void mp_cond_free(mp_cond *c);

/* ---- Event ---- */

/* Create an event, initially clear.  Errors: -EINVAL, -ENOMEM. */
MP_API int mp_event_new(mp_event **out);
/* Set the flag and wake every waiter.  0 or -EINVAL. */
MP_API int mp_event_set(mp_event *e);
/* Clear the flag.  0 or -EINVAL. */
MP_API int mp_event_clear(mp_event *e);
/* The flag now; false for NULL. */
MP_API bool mp_event_is_set(mp_event *e);
/* Wait until the flag is set, at most timeout s.  0 (set), MP_ETIMEDOUT,
 * -EINVAL. */
MP_API int mp_event_wait(mp_event *e, double timeout);
MP_API void mp_event_free(mp_event *e);

/* ---- Barrier ---- */

/* Create a barrier for `parties` (>= 1) participants: mp_barrier_new_ex
 * with no action and no default timeout.  Errors: -EINVAL, -ENOMEM. */
MP_API int mp_barrier_new(mp_barrier **out, unsigned parties);
/* Python's Barrier(parties, action, timeout).  When the barrier trips, the
 * last arrival calls action(arg) (NULL: none) before the others are
 * released, holding the barrier's internal lock (so the action must not
 * call its own barrier: that is -EDEADLK); a non-zero return breaks the
 * barrier and every waiter of that round, the caller too, gets MP_EBROKEN.
 * The action runs in whichever process trips the barrier: it must be code
 * that all of them share (a function of the program, forked).  A process
 * that dies in the action breaks the barrier for the others.  timeout
 * (MP_FOREVER: none) is used by waits that pass MP_FOREVER.  Errors:
 * -EINVAL (out NULL, parties 0 or > INT32_MAX, timeout NaN), -ENOMEM. */
MP_API int mp_barrier_new_ex(mp_barrier **out, unsigned parties, int (*action)(void *),
                             void *arg, double timeout);
/* Wait until `parties` callers have arrived; timeout MP_FOREVER (or +inf)
 * means the barrier's default timeout.  Returns the caller's arrival
 * index, 0 .. parties-1 (distinct for each caller; the last to arrive gets
 * parties-1, runs the action and releases the others), or MP_EBROKEN (the
 * barrier is or became broken: aborted, reset while waiting, another party
 * timed out, or the action failed), MP_ETIMEDOUT (this caller timed out:
 * the barrier is now broken for the others, as in Python), -EDEADLK
 * (called from the action), -EINVAL.  A barrier is reusable. */
MP_API int mp_barrier_wait(mp_barrier *b, double timeout);
/* Break the barrier: current and future waiters get MP_EBROKEN until a
 * reset.  0, -EDEADLK (called from the action), -EINVAL. */
MP_API int mp_barrier_abort(mp_barrier *b);
/* Return to the empty, unbroken state; current waiters get MP_EBROKEN.
 * 0, -EDEADLK (called from the action), -EINVAL. */
MP_API int mp_barrier_reset(mp_barrier *b);
/* True if the barrier is broken; false for NULL. */
MP_API bool mp_barrier_broken(mp_barrier *b);
/* The number of parties; callers waiting now.  0 for NULL. */
MP_API unsigned mp_barrier_parties(mp_barrier *b);
MP_API unsigned mp_barrier_n_waiting(mp_barrier *b);
MP_API void mp_barrier_free(mp_barrier *b);

MP_END_DECLS

#endif
