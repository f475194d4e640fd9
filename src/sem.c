/* Semaphore and Event on shared futex words.
 *
 * Both keep the state in one 32-bit word that waiters sleep on, plus a
 * count of sleepers so that a release or set makes a syscall only when
 * someone sleeps.  The sleeper count and the state are read and written
 * with sequentially consistent operations on both sides (waiter: count++
 * then re-read state; waker: change state then read count), so a wake-up
 * is never missed.
 *
 * Kill -9: a process killed between being woken and taking its permit
 * would swallow a FUTEX_WAKE(1) meant for another waiter.  Semaphore
 * waiters therefore sleep in bounded slices and re-check; an event wakes
 * everyone, so it needs no such care.  A sleeper killed while counted
 * leaves the count too high, which costs spare wake-ups, never a hang. */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "mproc/sync.h"
#include "os/os.h"
#include "wait_int.h"

struct mp_sem {
    _Atomic uint32_t value;
    _Atomic uint32_t sleepers;
    uint32_t max; /* 0: unbounded */
};

struct mp_event {
    _Atomic uint32_t word; /* (generation << 1) | flag */
    _Atomic uint32_t sleepers;
};

/* ---- Semaphore ---- */

int mp_sem_new(mp_sem **out, unsigned value, unsigned max)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (value > INT32_MAX || max > INT32_MAX || (max > 0 && value > max))
        return -EINVAL;
    int err = 0;
    mp_sem *s = mp__heap_calloc(sizeof *s, &err);
    if (s == NULL)
        return err;
    atomic_init(&s->value, value);
    s->max = max;
    *out = s;
    return 0;
}

static bool sem_try(mp_sem *s)
{
    uint32_t v = atomic_load_explicit(&s->value, memory_order_relaxed);
    while (v > 0)
        if (atomic_compare_exchange_weak_explicit(&s->value, &v, v - 1,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    return false;
}

int mp_sem_acquire(mp_sem *s, double timeout)
{
    int64_t deadline;
    if (s == NULL || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    for (;;) {
        if (sem_try(s))
            return 0;
        /* Until a release makes the value non-zero (a waker that died
         * before its wake-up costs one slice at most). */
        if (mp__wait_change(&s->value, &s->sleepers, 0, deadline, 0) < 0)
            return MP_ETIMEDOUT;
    }
}

int mp_sem_release_n(mp_sem *s, unsigned n)
{
    if (s == NULL || n == 0)
        return -EINVAL;
    uint32_t limit = s->max ? s->max : INT32_MAX;
    uint32_t v = atomic_load_explicit(&s->value, memory_order_relaxed);
    do {
        if (n > limit || v > limit - n)
            return -EOVERFLOW; /* all or nothing */
    } while (!atomic_compare_exchange_weak(&s->value, &v, v + n));
    /* n <= limit <= INT32_MAX; sleepers woken in vain find the value 0 and
     * sleep again. */
    mp__wake_word_n(&s->value, &s->sleepers, (int)n);
    return 0;
}

int mp_sem_release(mp_sem *s)
{
    return mp_sem_release_n(s, 1);
}

unsigned mp_sem_value(mp_sem *s)
{
    return s != NULL ? atomic_load_explicit(&s->value, memory_order_relaxed) : 0;
}

void mp_sem_free(mp_sem *s)
{
    if (s != NULL)
        mp__heap_free(s);
}

/* ---- Event ----
 * The word is (generation << 1) | flag.  set() bumps the generation, so a
 * waiter that slept through a set() and a quick clear() still sees that
 * the event fired (Python's wait() returns True then too). */

int mp_event_new(mp_event **out)
{
    if (out == NULL)
        return -EINVAL;
    int err = 0;
    *out = mp__heap_calloc(sizeof **out, &err);
    return *out != NULL ? 0 : err;
}

int mp_event_set(mp_event *e)
{
    if (e == NULL)
        return -EINVAL;
    uint32_t w = atomic_load_explicit(&e->word, memory_order_relaxed);
    do {
        if (w & 1)
            return 0; /* already set */
    } while (!atomic_compare_exchange_weak(&e->word, &w, (w + 2) | 1));
    mp__wake_word(&e->word, &e->sleepers);
    return 0;
}

int mp_event_clear(mp_event *e)
{
    if (e == NULL)
        return -EINVAL;
    atomic_fetch_and(&e->word, ~(uint32_t)1);
    return 0;
}

bool mp_event_is_set(mp_event *e)
{
    return e != NULL && (atomic_load_explicit(&e->word, memory_order_acquire) & 1);
}

int mp_event_wait(mp_event *e, double timeout)
{
    int64_t deadline;
    if (e == NULL || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    uint32_t w = atomic_load_explicit(&e->word, memory_order_acquire);
    if (w & 1)
        return 0;
    /* Not set now: any change of the word is a set (perhaps cleared again
     * since), which is what wakes an Event's waiters in Python too. */
    return mp__wait_change(&e->word, &e->sleepers, w, deadline, timeout != 0 ? MP__WAIT_SPIN : 0) < 0
               ? MP_ETIMEDOUT
               : 0;
}

void mp_event_free(mp_event *e)
{
    if (e != NULL)
        mp__heap_free(e);
}
