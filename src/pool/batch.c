/* A map's shared work: see batch.h.
 *
 * Claiming: a worker scans its part up from the part's `hint` for a FREE
 * chunk and takes it with a CAS of its claim word to CLAIMED+w; its part
 * used up, it scans the other parts down from their `tail`.  The bounds
 * only save the scan over chunks already taken: they are moved past taken
 * chunks with a CAS (a stale view just fails), and back by a reset, so no
 * FREE chunk is outside them for long.  Chunks are staged in index order
 * (one part), so a WAIT chunk ends the scan: nothing beyond it is ready
 * either.
 *
 * Completion: with one part, a done chunk's index goes into `order` at
 * the position its fetch-add of `ndone` gave, for iterators that take
 * chunks as they come (entries not yet written read UINT32_MAX).  With
 * parts, a done chunk counts down its part's `left`, on the line its
 * helper claims on, and only a part's last chunk adds the part to `ndone`:
 * no line is fought over at every chunk.  `events` is bumped after, at
 * every chunk for waiters that want each (wake_each) and at the last for
 * the others, and waiters sleep on it (wait_int.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "heap_int.h"
#include "pool/batch.h"
#include "wait_int.h"

batch_shm *mp__batch_new(uint32_t nchunks, uint32_t max_parts, int *err)
{
    if (max_parts < 1)
        max_parts = 1;
    batch_shm *b =
        mp__heap_alloc(mp__batch_parts_at(nchunks) + (size_t)max_parts * sizeof(batch_part), err);
    if (b == NULL)
        return NULL;
    memset(b, 0, sizeof(batch_shm) + (size_t)nchunks * sizeof(batch_chunk));
    b->geom.nchunks = nchunks;
    memset(mp__batch_order(b, nchunks), 0xff, (size_t)nchunks * sizeof(uint32_t));
    mp__batch_set_parts(b, nchunks, 1);
    return b;
}

void mp__batch_free(batch_shm *b)
{
    if (b)
        mp__heap_free(b);
}

uint64_t mp__batch_items_done(batch_shm *b, const batch_geom *g)
{
    uint32_t nchunks = g->nchunks, nparts = mp__batch_nparts(nchunks, g->nparts);
    uint64_t chunks = 0;
    if (nparts > 1) {
        /* (ndone moves a part at a time: count each part's chunks) */
        batch_part *pt = mp__batch_parts(b, nchunks);
        for (uint32_t q = 0; q < nparts; q++) {
            uint32_t size = mp__batch_part_start(q + 1, nchunks, nparts) -
                            mp__batch_part_start(q, nchunks, nparts);
            uint32_t left = atomic_load_explicit(&pt[q].left, memory_order_relaxed);
            chunks += left < size ? size - left : 0;
        }
    } else {
        chunks = atomic_load_explicit(&b->ndone, memory_order_relaxed);
    }
    if (chunks == 0)
        return 0;
    if (chunks > nchunks)
        chunks = nchunks; /* (shared: a worker may have scribbled) */
    uint64_t items = chunks * g->chunk;
    if (atomic_load_explicit(&b->chunks[nchunks - 1].claim, memory_order_relaxed) == CHUNK_DONE)
        items -= (uint64_t)g->chunk * nchunks - g->n; /* the last chunk is short */
    return items > g->n ? g->n : items;
}

void mp__batch_set_parts(batch_shm *b, uint32_t nchunks, uint32_t nparts)
{
    batch_part *pt = mp__batch_parts(b, nchunks);
    for (uint32_t q = 0; q < nparts; q++) {
        uint32_t first = mp__batch_part_start(q, nchunks, nparts);
        uint32_t end = mp__batch_part_start(q + 1, nchunks, nparts);
        atomic_init(&pt[q].hint, first);
        atomic_init(&pt[q].tail, end);
        atomic_init(&pt[q].left, end - first);
    }
    b->geom.nparts = nparts;
}

/* Take chunk k (its claim word cw read FREE as c) for worker w, naming it
 * in *held first. */
static bool claim_one(_Atomic uint32_t *cw, uint32_t c, uint32_t k, unsigned w,
                      _Atomic uint32_t *held)
{
    if (held)
        atomic_store_explicit(held, k, memory_order_relaxed);
    return atomic_compare_exchange_strong_explicit(cw, &c, CHUNK_CLAIMED + w, memory_order_acq_rel,
                                                   memory_order_acquire);
}

/* Up from part pt's hint to end: the first FREE chunk claimed, BATCH_NONE
 * at a WAIT chunk, else BATCH_OVER. */
static int claim_up(batch_shm *b, batch_part *pt, uint32_t end, unsigned w,
                    _Atomic uint32_t *held)
{
    uint32_t h = atomic_load_explicit(&pt->hint, memory_order_acquire);
    bool taken_below = true; /* every chunk from h to k is taken */
    for (uint32_t k = h; k < end; k++) {
        _Atomic uint32_t *cw = &b->chunks[k].claim;
        uint32_t c = atomic_load_explicit(cw, memory_order_acquire);
        if (c == CHUNK_WAIT)
            return BATCH_NONE;
        if (c == CHUNK_FREE && claim_one(cw, c, k, w, held)) {
            if (taken_below)
                atomic_compare_exchange_strong(&pt->hint, &h, k + 1);
            return (int)k;
        }
        if (c == CHUNK_FREE)
            taken_below = false; /* lost a race: it is someone's now */
    }
    if (taken_below && h < end)
        atomic_compare_exchange_strong(&pt->hint, &h, end);
    return BATCH_OVER;
}

/* Down from part pt's tail to begin: the last FREE chunk claimed, else
 * BATCH_OVER (parts of more than one are never staged: no WAIT). */
static int claim_down(batch_shm *b, batch_part *pt, uint32_t begin, unsigned w,
                      _Atomic uint32_t *held)
{
    uint32_t t = atomic_load_explicit(&pt->tail, memory_order_acquire);
    bool taken_above = true; /* every chunk from k to t is taken */
    for (uint32_t k = t; k > begin;) {
        k--;
        _Atomic uint32_t *cw = &b->chunks[k].claim;
        uint32_t c = atomic_load_explicit(cw, memory_order_acquire);
        if (c == CHUNK_FREE && claim_one(cw, c, k, w, held)) {
            if (taken_above)
                atomic_compare_exchange_strong(&pt->tail, &t, k);
            return (int)k;
        }
        if (c == CHUNK_FREE)
            taken_above = false;
    }
    if (taken_above && t > begin)
        atomic_compare_exchange_strong(&pt->tail, &t, begin);
    return BATCH_OVER;
}

int mp__batch_claim(batch_shm *b, unsigned w, uint32_t part, uint32_t nchunks,
                    uint32_t nparts, _Atomic uint32_t *held)
{
    if (atomic_load_explicit(&b->stop, memory_order_relaxed))
        return BATCH_OVER;
    batch_part *pt = mp__batch_parts(b, nchunks);
    nparts = mp__batch_nparts(nchunks, nparts);
    if (nparts == 1)
        return claim_up(b, &pt[0], nchunks, w, held);
    uint32_t p = part % nparts;
    int k = claim_up(b, &pt[p], mp__batch_part_start(p + 1, nchunks, nparts), w, held);
    for (uint32_t i = 1; k == BATCH_OVER && i < nparts; i++) {
        uint32_t q = (p + i) % nparts;
        k = claim_down(b, &pt[q], mp__batch_part_start(q, nchunks, nparts), w, held);
    }
    return k;
}

void mp__batch_done(batch_shm *b, uint32_t k, uint32_t nchunks, uint32_t nparts)
{
    atomic_store_explicit(&b->chunks[k].claim, CHUNK_DONE, memory_order_release);
    nparts = mp__batch_nparts(nchunks, nparts);
    uint32_t count = 1;
    if (nparts > 1) {
        uint32_t q = mp__batch_part_of(k, nchunks, nparts);
        if (atomic_fetch_sub(&mp__batch_parts(b, nchunks)[q].left, 1) != 1)
            return; /* (no waiter wants each chunk of a map with parts) */
        count = mp__batch_part_start(q + 1, nchunks, nparts) -
                mp__batch_part_start(q, nchunks, nparts);
    }
    uint32_t pos = atomic_fetch_add(&b->ndone, count);
    if (nparts == 1 && pos < nchunks && b->log_order)
        atomic_store_explicit(&mp__batch_order(b, nchunks)[pos], k, memory_order_release);
    if (b->wake_each || pos + count >= nchunks) {
        atomic_fetch_add(&b->events, 1);
        mp__wake_word(&b->events, &b->waiters);
    }
}

void mp__batch_reset(batch_shm *b, uint32_t k, uint32_t start, uint32_t nchunks,
                     uint32_t nparts)
{
    b->chunks[k].start = start;
    atomic_store_explicit(&b->chunks[k].claim, CHUNK_FREE, memory_order_release);
    nparts = mp__batch_nparts(nchunks, nparts);
    batch_part *pt = &mp__batch_parts(b, nchunks)[mp__batch_part_of(k, nchunks, nparts)];
    uint32_t h = atomic_load(&pt->hint);
    while (h > k && !atomic_compare_exchange_weak(&pt->hint, &h, k))
        ;
    uint32_t t = atomic_load(&pt->tail);
    while (t <= k && !atomic_compare_exchange_weak(&pt->tail, &t, k + 1))
        ;
    atomic_fetch_add(&b->staged, 1); /* helpers waiting for work: here is some */
    mp__wake_word(&b->staged, &b->stage_waiters);
    atomic_fetch_add(&b->events, 1);
    mp__wake_word(&b->events, &b->waiters);
}

int mp__batch_held(batch_shm *b, uint32_t nchunks, unsigned w, uint32_t held)
{
    if (held < nchunks && atomic_load(&b->chunks[held].claim) == CHUNK_CLAIMED + w)
        return (int)held;
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
