/* The spin-then-sleep wait on a word: see wait_int.h for the policy and
 * the lost-wake-up argument. */
#define _GNU_SOURCE
#include <errno.h>

#include "os/os.h"
#include "wait_int.h"

#define LOOK_NS 1000 /* MP__WAIT_SPARSE: one look a microsecond */

bool mp__spin_pays(void) { return mp__can_run_in_parallel(); }

static bool ready(_Atomic uint32_t *word, uint32_t start, mp__wait_done done, void *arg)
{
    if (done)
        return done(arg);
    return atomic_load_explicit(word, memory_order_acquire) != start;
}

/* Spin until ready or end: true if it became ready. */
static bool spin(_Atomic uint32_t *word, uint32_t start, mp__wait_done done, void *arg,
                 int64_t end, bool sparse)
{
    unsigned rounds = 0;
    for (;;) {
        for (int i = 0; i < (sparse ? 8 : 32); i++) {
            if (!sparse && ready(word, start, done, arg))
                return true;
            mp__cpu_relax();
        }
        if (sparse && ready(word, start, done, arg))
            return true;
        /* More threads than CPUs: let the one we wait for run. */
        if (++rounds % 8 == 0)
            mp__yield();
        if (mp__now_ns() >= end)
            return false;
    }
}

int mp__wait_word(_Atomic uint32_t *word, _Atomic uint32_t *waiters, mp__wait_done done,
                  void *arg, int64_t deadline, unsigned flags)
{
    uint32_t start = atomic_load_explicit(word, memory_order_acquire);
    if (ready(word, start, done, arg))
        return 0;
    int64_t now = mp__now_ns();
    if (now >= deadline)
        return -ETIMEDOUT;
    if ((flags & MP__WAIT_SPIN) && mp__spin_pays()) {
        int64_t end = now + MP__SPIN_NS < deadline ? now + MP__SPIN_NS : deadline;
        if (spin(word, start, done, arg, end, flags & MP__WAIT_SPARSE))
            return 0;
    }
    for (;;) {
        uint32_t v = atomic_load_explicit(word, memory_order_acquire);
        if (done == NULL && v != start)
            return 0;
        now = mp__now_ns();
        if (now >= deadline)
            return -ETIMEDOUT;
        int64_t until = deadline - now > MP__SLICE_NS ? now + MP__SLICE_NS : deadline;
        if (waiters)
            atomic_fetch_add(waiters, 1); /* seq_cst: see wait_int.h */
        if (!ready(word, start, done, arg))
            mp__futex_wait(word, v, until);
        if (waiters)
            atomic_fetch_sub(waiters, 1);
        if (ready(word, start, done, arg))
            return 0;
    }
}

void mp__wake_word_n(_Atomic uint32_t *word, _Atomic uint32_t *waiters, int n)
{
    if (waiters == NULL || atomic_load(waiters) != 0)
        mp__futex_wake(word, n);
}
