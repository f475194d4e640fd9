/* The task ring and its doorbell: see ring.h.
 *
 * The doorbell's "wake only if someone sleeps" is a Dekker pattern: the
 * parent publishes a slot (seq_cst store) and then reads `sleepers`; a
 * worker bumps `sleepers` (seq_cst RMW) and then looks at the ring.  One of
 * them sees the other.  A wake meant for a sleeper that was killed before
 * taking it is not lost for the others: every sleeper clears `waking` as
 * it goes to sleep and as it wakes, and sleeps in bounded slices. */
#define _GNU_SOURCE
#include <errno.h>

#include "heap_int.h"
#include "os/os.h"
#include "pool/ring.h"

#define SLEEP_SLICE_NS 50000000LL

int mp__ring_init(ring *r, uint32_t size, uint32_t max_spinners)
{
    r->size = size;
    r->max_spinners = max_spinners ? max_spinners : 1;
    r->slots = mp__heap_calloc((size_t)size * sizeof *r->slots, NULL);
    if (r->slots == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < size; i++)
        atomic_init(&r->slots[i].word, RING_WORD(i, TAG_FREE));
    return 0;
}

void mp__ring_destroy(ring *r)
{
    if (r->slots)
        mp__heap_free(r->slots);
    r->slots = NULL;
}

bool mp__ring_push(ring *r, uint64_t *tail, job_shm *j)
{
    ring_slot *sl = &r->slots[*tail & (r->size - 1)];
    if (atomic_load_explicit(&sl->word, memory_order_acquire) != RING_WORD(*tail, TAG_FREE))
        return false;
    atomic_store_explicit(&sl->job, j, memory_order_relaxed);
    atomic_store(&sl->word, RING_WORD(*tail, TAG_READY)); /* seq_cst: the doorbell */
    (*tail)++;
    mp__ring_wake(r);
    return true;
}

bool mp__ring_has_room(ring *r, uint64_t tail)
{
    return atomic_load(&r->slots[tail & (r->size - 1)].word) == RING_WORD(tail, TAG_FREE);
}

bool mp__ring_ready(ring *r)
{
    uint64_t h = atomic_load(&r->head);
    uint64_t w = atomic_load(&r->slots[h & (r->size - 1)].word);
    return w == RING_WORD(h, TAG_READY) || RING_POS(w) > h;
}

job_shm *mp__ring_claim(ring *r, unsigned w, uint64_t *pos)
{
    for (;;) {
        uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
        ring_slot *sl = &r->slots[h & (r->size - 1)];
        uint64_t word = atomic_load_explicit(&sl->word, memory_order_acquire);
        if (word == RING_WORD(h, TAG_READY)) {
            if (!atomic_compare_exchange_strong(&sl->word, &word, RING_WORD(h, TAG_CLAIMED + w)))
                continue;
            uint64_t hh = h;
            atomic_compare_exchange_strong(&r->head, &hh, h + 1);
            *pos = h;
            return atomic_load_explicit(&sl->job, memory_order_relaxed);
        }
        if (RING_POS(word) == h && RING_TAG(word) >= TAG_CLAIMED) {
            uint64_t hh = h; /* claimed, head not moved yet: help */
            atomic_compare_exchange_strong(&r->head, &hh, h + 1);
            continue;
        }
        if (RING_POS(word) > h)
            continue; /* our view of head is stale */
        return NULL;
    }
}

void mp__ring_release(ring *r, uint64_t pos)
{
    atomic_store_explicit(&r->slots[pos & (r->size - 1)].word, RING_WORD(pos + r->size, TAG_FREE),
                          memory_order_release);
}

void mp__ring_recover(ring *r, unsigned w, void (*fn)(job_shm *j, void *arg), void *arg)
{
    for (uint32_t i = 0; i < r->size; i++) {
        ring_slot *sl = &r->slots[i];
        uint64_t word = atomic_load(&sl->word);
        if (RING_TAG(word) != TAG_CLAIMED + w)
            continue;
        job_shm *j = atomic_load(&sl->job);
        atomic_store(&sl->word, RING_WORD(RING_POS(word) + r->size, TAG_FREE));
        fn(j, arg);
    }
}

void mp__ring_wake(ring *r)
{
    uint32_t no = 0;
    if (atomic_load(&r->sleepers) && !atomic_load(&r->spinners) &&
        atomic_compare_exchange_strong(&r->waking, &no, 1)) {
        atomic_fetch_add(&r->task_seq, 1);
        mp__futex_wake(&r->task_seq, 1);
    }
}

void mp__ring_wake_n(ring *r, unsigned n)
{
    if (n <= 1) {
        mp__ring_wake(r);
        return;
    }
    if (atomic_load(&r->sleepers)) {
        atomic_store(&r->waking, 1);
        atomic_fetch_add(&r->task_seq, 1);
        mp__futex_wake(&r->task_seq, n > INT32_MAX ? INT32_MAX : (int)n);
    }
}

void mp__ring_wake_all(ring *r)
{
    atomic_fetch_add(&r->task_seq, 1);
    mp__futex_wake(&r->task_seq, INT32_MAX);
}

/* Become a spinner if fewer than max_spinners are: true if we did. */
static bool spinner_in(ring *r)
{
    uint32_t n = atomic_load(&r->spinners);
    while (n < r->max_spinners)
        if (atomic_compare_exchange_weak(&r->spinners, &n, n + 1))
            return true;
    return false;
}

/* Leave the spinners; the supervisor may have reset the count to 0 after
 * a spinner died, so it never goes below. */
static void spinner_out(ring *r)
{
    uint32_t n = atomic_load(&r->spinners);
    while (n > 0 && !atomic_compare_exchange_weak(&r->spinners, &n, n - 1))
        ;
}

bool mp__ring_idle(ring *r, bool parallel, int64_t spin_ns)
{
    if (atomic_load(&r->stopping) && !mp__ring_ready(r))
        return true;
    if (parallel && spinner_in(r)) {
        int64_t end = mp__now_ns() + spin_ns;
        bool found = false;
        unsigned rounds = 0;
        do {
            /* Look at the ring every few pauses, not at every one: each look
             * pulls the line the producer is writing, and slows it. */
            for (int i = 0; i < 4 && !(found = mp__ring_ready(r)); i++)
                for (int k = 0; k < 8; k++)
                    mp__cpu_relax();
            if (!found && ++rounds % 8 == 0)
                mp__yield(); /* more threads than CPUs: let them run */
        } while (!found && !atomic_load(&r->stopping) && mp__now_ns() < end);
        spinner_out(r);
        if (found)
            return false;
    }
    atomic_fetch_add(&r->sleepers, 1);
    for (;;) {
        /* A wake meant for a sleeper that never took it (one killed while
         * asleep still counts in sleepers) must not stop ours. */
        atomic_store(&r->waking, 0);
        uint32_t seen = atomic_load(&r->task_seq);
        if (mp__ring_ready(r) || atomic_load(&r->stopping))
            break;
        mp__futex_wait(&r->task_seq, seen, mp__now_ns() + SLEEP_SLICE_NS);
        /* Woken (or a job came while we went to sleep): look for it.  A
         * slice that ended with nothing new goes on sleeping: spinning
         * again after every slice kept an idle pool busy (2 ms of 52 a
         * worker: 20% of a CPU for an idle pool of 10 threads). */
        if (atomic_load(&r->task_seq) != seen)
            break;
    }
    atomic_fetch_sub(&r->sleepers, 1);
    atomic_store(&r->waking, 0);
    return false;
}
