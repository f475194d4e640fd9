/* A map's shared work: see batch.h.
 *
 * Claiming: a worker scans from `hint` for a FREE chunk and takes it with
 * a CAS of its claim word to CLAIMED+w.  The hint only saves the scan
 * over chunks already taken: it is moved forward past taken chunks with a
 * CAS (a stale view just fails), and back by a reset, so no FREE chunk is
 * ever below it for long.  Chunks are staged in index order, so a WAIT
 * chunk ends the scan: nothing beyond it is ready either.
 *
 * Completion: a done chunk's index goes into `order` at the position its
 * fetch-add of `ndone` gave, for iterators that take chunks as they come;
 * entries not yet written read UINT32_MAX.  `events` is bumped after, and
 * waiters sleep on it (wait_int.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "heap_int.h"
#include "pool/batch.h"
#include "wait_int.h"

batch_shm *mp__batch_new(uint32_t nchunks, int *err)
{
    batch_shm *b =
        mp__heap_alloc(mp__batch_order_at(nchunks) + (size_t)nchunks * sizeof(uint32_t), err);
    if (b == NULL)
        return NULL;
    memset(b, 0, sizeof(batch_shm) + (size_t)nchunks * sizeof(batch_chunk));
    b->geom.nchunks = nchunks;
    memset(mp__batch_order(b, nchunks), 0xff, (size_t)nchunks * sizeof(uint32_t));
    return b;
}

void mp__batch_free(batch_shm *b)
{
    if (b)
        mp__heap_free(b);
}

int mp__batch_claim(batch_shm *b, unsigned w, uint32_t nchunks)
{
    if (atomic_load_explicit(&b->stop, memory_order_relaxed))
        return BATCH_OVER;
    uint32_t h = atomic_load_explicit(&b->hint, memory_order_acquire);
    bool taken_below = true; /* every chunk from h to k is taken */
    for (uint32_t k = h; k < nchunks; k++) {
        _Atomic uint32_t *cw = &b->chunks[k].claim;
        uint32_t c = atomic_load_explicit(cw, memory_order_acquire);
        if (c == CHUNK_WAIT)
            return BATCH_NONE;
        if (c == CHUNK_FREE &&
            atomic_compare_exchange_strong_explicit(cw, &c, CHUNK_CLAIMED + w,
                                                    memory_order_acq_rel, memory_order_acquire)) {
            if (taken_below)
                atomic_compare_exchange_strong(&b->hint, &h, k + 1);
            return (int)k;
        }
        if (c == CHUNK_FREE)
            taken_below = false; /* lost a race: it is someone's now */
    }
    if (taken_below && h < nchunks)
        atomic_compare_exchange_strong(&b->hint, &h, nchunks);
    return BATCH_OVER;
}

void mp__batch_done(batch_shm *b, uint32_t k, uint32_t nchunks)
{
    atomic_store_explicit(&b->chunks[k].claim, CHUNK_DONE, memory_order_release);
    uint32_t pos = atomic_fetch_add(&b->ndone, 1);
    if (pos < nchunks)
        atomic_store_explicit(&mp__batch_order(b, nchunks)[pos], k, memory_order_release);
    atomic_fetch_add(&b->events, 1);
    if (b->wake_each || pos + 1 >= nchunks)
        mp__wake_word(&b->events, &b->waiters);
}

void mp__batch_reset(batch_shm *b, uint32_t k, uint32_t start)
{
    b->chunks[k].start = start;
    atomic_store_explicit(&b->chunks[k].claim, CHUNK_FREE, memory_order_release);
    uint32_t h = atomic_load(&b->hint);
    while (h > k && !atomic_compare_exchange_weak(&b->hint, &h, k))
        ;
    atomic_fetch_add(&b->staged, 1); /* helpers waiting for work: here is some */
    mp__wake_word(&b->staged, &b->stage_waiters);
    atomic_fetch_add(&b->events, 1);
    mp__wake_word(&b->events, &b->waiters);
}

int mp__batch_held_by(batch_shm *b, uint32_t nchunks, unsigned w)
{
    for (uint32_t k = 0; k < nchunks; k++)
        if (atomic_load(&b->chunks[k].claim) == CHUNK_CLAIMED + w)
            return (int)k;
    return -1;
}

void mp__batch_staged(batch_shm *b, uint32_t k)
{
    atomic_store_explicit(&b->chunks[k].claim, CHUNK_FREE, memory_order_release);
    atomic_fetch_add(&b->staged, 1);
    mp__wake_word(&b->staged, &b->stage_waiters);
}

typedef struct {
    batch_shm *b;
    uint32_t seen;
} staged_wait;

static bool staged_moved(void *arg)
{
    staged_wait *s = arg;
    return atomic_load(&s->b->staged) != s->seen || atomic_load(&s->b->stop);
}

void mp__batch_wait_staged(batch_shm *b, uint32_t seen, int64_t deadline)
{
    staged_wait s = {b, seen};
    mp__wait_word(&b->staged, &b->stage_waiters, staged_moved, &s, deadline, MP__WAIT_SPIN);
}
