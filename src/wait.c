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
    if (sparse) {
        /* Look about once a microsecond: each look pulls the line the peer
         * writes, and a peer left alone that long has done several things,
         * which are then taken in a burst. */
        for (int64_t last = mp__now_ns();;) {
            if (ready(word, start, done, arg))
                return true;
            if (last >= end)
                return false;
            int64_t t;
            do {
                for (int k = 0; k < 8; k++)
                    mp__cpu_relax();
                t = mp__now_ns();
            } while (t - last < LOOK_NS);
            last = t;
        }
    }
    unsigned rounds = 0;
    for (;;) {
        for (int i = 0; i < 32; i++) {
            if (ready(word, start, done, arg))
                return true;
            mp__cpu_relax();
        }
        /* More threads than CPUs: let the one we wait for run. */
        if (++rounds % 8 == 0)
            mp__yield();
        if (mp__now_ns() >= end)
            return false;
    }
}

static int wait_from(_Atomic uint32_t *word, _Atomic uint32_t *waiters, uint32_t start,
                     mp__wait_done done, void *arg, int64_t deadline, unsigned flags)
{
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

int mp__wait_word(_Atomic uint32_t *word, _Atomic uint32_t *waiters, mp__wait_done done,
                  void *arg, int64_t deadline, unsigned flags)
{
    return wait_from(word, waiters, atomic_load_explicit(word, memory_order_acquire), done,
                     arg, deadline, flags);
}

int mp__wait_change(_Atomic uint32_t *word, _Atomic uint32_t *waiters, uint32_t seen,
                    int64_t deadline, unsigned flags)
{
    return wait_from(word, waiters, seen, NULL, NULL, deadline, flags);
}

int64_t mp__wait_slice_end(int64_t deadline)
{
    int64_t now = mp__now_ns();
    return deadline - now > MP__SLICE_NS ? now + MP__SLICE_NS : deadline;
}

void mp__wake_word_n(_Atomic uint32_t *word, _Atomic uint32_t *waiters, int n)
{
    if (waiters == NULL || atomic_load(waiters) != 0)
        mp__futex_wake(word, n);
}
