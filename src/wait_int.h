/* Waiting on a 32-bit word shared by threads or processes: the one
 * spin-then-sleep loop of the library (pool results and workers, queues,
 * semaphores, events, thread joins).
 *
 * Policy.  A futex wake-up costs tens of microseconds on a virtual machine
 * and a cache-line hand-over well under one, so a waiter first spins up to
 * MP__SPIN_NS, but only when another CPU may be running the peer it waits
 * for (on one CPU a spin only delays the peer); while it spins it yields
 * now and then, so that on an oversubscribed machine the peer gets the CPU.
 * Then it sleeps on the futex, in slices of at most MP__SLICE_NS.
 *
 * Lost wake-ups.  A waker changes the state its waiters test and then
 * calls mp__wake_word, which makes the futex system call only if a waiter
 * has announced itself in *waiters.  A waiter announces itself (an RMW on
 * *waiters), then tests the state again, then sleeps on *word with the
 * value it read before that test.  With the waker's change made by a
 * sequentially consistent RMW or followed by one (every state change in
 * the library is one), one of the two sees the other: either the waiter
 * sees the change and does not sleep, or the waker sees the waiter and
 * wakes it; and a change of *word between the waiter's read and its sleep
 * makes the futex call return at once.  Where the tested state is not
 * *word itself, a waker that changes it without bumping *word can still be
 * missed by a sleeper that read *word just before; the slice bounds that
 * case (and that of a waiter killed between its announcement and its
 * sleep, which leaves *waiters too high: wakers then make a useless call)
 * to MP__SLICE_NS. */
#ifndef MPROC_WAIT_INT_H
#define MPROC_WAIT_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define MP__SPIN_NS 30000LL        /* spin before sleeping, if it can pay */
#define MP__SLICE_NS 100000000LL   /* longest sleep before looking again */

/* True when the state a waiter waits for has come. */
typedef bool (*mp__wait_done)(void *arg);

enum {
    MP__WAIT_SPIN = 1,     /* spin first (when a peer may run beside us) */
    MP__WAIT_SPARSE = 2    /* while spinning look only about once a
                              microsecond: each look pulls the line the peer
                              writes (a queue's consumer) */
};

/* Wait until done(arg), or, with done NULL, until *word differs from the
 * value it had when the wait began; at most until the absolute deadline
 * (CLOCK_MONOTONIC ns, MP__NO_DEADLINE for none).  Returns 0 or
 * -ETIMEDOUT.  waiters may be NULL (the waker then always wakes). */
int mp__wait_word(_Atomic uint32_t *word, _Atomic uint32_t *waiters, mp__wait_done done,
                  void *arg, int64_t deadline, unsigned flags);

/* Wait until *word differs from seen (a value read earlier, under the
 * caller's lock), as mp__wait_word. */
int mp__wait_change(_Atomic uint32_t *word, _Atomic uint32_t *waiters, uint32_t seen,
                    int64_t deadline, unsigned flags);

/* The earlier of deadline and one sleep slice from now: for waiters that
 * must look at their state again (under a lock) after every slice. */
int64_t mp__wait_slice_end(int64_t deadline);

/* Wake up to n waiters sleeping on word (INT32_MAX: all) if any announced
 * itself in *waiters (NULL: wake regardless).  Call after the change. */
void mp__wake_word_n(_Atomic uint32_t *word, _Atomic uint32_t *waiters, int n);

static inline void mp__wake_word(_Atomic uint32_t *word, _Atomic uint32_t *waiters)
{
    mp__wake_word_n(word, waiters, INT32_MAX);
}

/* True if spinning can pay on this thread (another CPU may run the peer):
 * one cached system call every 100 ms. */
bool mp__spin_pays(void);

#endif
