/* A map's work, shared with the workers: the array cut into chunks that
 * workers claim one at a time (the parent's side is map.c).
 *
 * A map dispatches a few helper jobs (one per worker that can run at
 * once); a worker running a helper claims chunks with a CAS on the chunk's
 * claim word until none is left, so the ring and the supervisor see one
 * job per worker, not one per chunk, and a map's end needs no thread of
 * the parent but its caller.
 *
 * Life cycle of a chunk's claim word (who moves it):
 *
 *   WAIT ──stage (map caller: input copied)──► FREE ──claim (worker CAS)──► CLAIMED+w
 *                                               ▲                            │   │
 *                 reset (worker stopping with   │                            │   │ done
 *                 failures to report, or the    └────────────────────────────┘   ▼ (worker)
 *                 supervisor after w died: start moves past the item)           DONE
 *
 * Parts.  A blocking map over arrays in place cuts its chunks into as many
 * runs ("parts") as it starts helpers: each helper claims up from the front
 * of its own part, then steals down from the back of the others', so that
 * two workers meet on a cache line only where they meet in the array (a
 * claim fought over costs a line transfer, half a microsecond on a
 * virtual machine).  Staged maps and iterators have one part: chunks are
 * staged, and wanted, in index order.
 *
 * `start` is the first item of the chunk still to run: items before it
 * ran (their failures are recorded), so a chunk resumed after a crash runs
 * each item at most once.  Crash safety: a CLAIMED+w chunk names its
 * worker, and the helper job's `held` names the chunk (a worker may hold
 * two: one in a helper that stopped at a failure and is not collected yet,
 * one in the helper it runs now), so the supervisor finds the chunk a dead
 * or stopped helper held; the helper job's `cur` names the item. */
#ifndef MPROC_POOL_BATCH_H
#define MPROC_POOL_BATCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mproc/pool.h"
#include "export_int.h"

enum { CHUNK_WAIT = 0, CHUNK_FREE, CHUNK_DONE, CHUNK_CLAIMED };

/* mp__batch_claim's answers besides a chunk index. */
#define BATCH_NONE (-1)   /* nothing free now; staging will bring more */
#define BATCH_OVER (-2)   /* nothing left to claim */

/* The map item index meaning "not running an item" (helper's cur). */
#define BATCH_NO_ITEM UINT64_MAX
/* The chunk index meaning "holding no chunk" (helper's held). */
#define BATCH_NO_CHUNK UINT32_MAX

typedef struct {
    _Atomic uint32_t claim;     /* CHUNK_* (+ worker index) */
    uint32_t start;             /* first item of the chunk left to run */
} batch_chunk;

/* A batch's shape: what is to be computed and where.  The parent keeps its
 * own copy (map.c's map_batch) and reads only that one: the workers' copy
 * in the shared heap may be scribbled over, and the parent must never
 * copy to or from an address a worker could have changed. */
typedef struct {
    mp_map_fn fn;               /* per element, or (range) an mp_chunk_fn */
    uint32_t range;             /* fn takes runs (mp_pool_map_chunks) */
    const char *in;             /* in place: the caller's arrays; staged: */
    char *out;                  /*   window slots of the staging area */
    size_t n, in_size, out_size;
    uint32_t chunk;             /* items a chunk (the last may have fewer) */
    uint32_t nchunks;
    uint32_t window;            /* staged: chunk k uses slot k % window; 0: in place */
    uint32_t stage_in;          /* staged: whether in, out are staged */
    uint32_t stage_out;
    uint32_t nparts;            /* runs of chunks helpers start on (>= 1) */
    int64_t timeout_ns;         /* per item; 0: none */
} batch_geom;

#define BATCH_PARTS_MAX 64

/* A part's bounds for claims: no FREE chunk of the part below `hint` (its
 * helper claims up from there) nor at or above `tail` (thieves claim down
 * from there); and its chunks not yet done (`ndone` counts a part's
 * chunks when the last is done).  Each on a line of its own. */
typedef struct {
    _Alignas(64) _Atomic uint32_t hint;
    _Atomic uint32_t tail;
    _Atomic uint32_t left;
} batch_part;

typedef struct batch_shm {
    batch_geom geom;            /* the workers' copy */
    _Alignas(64) _Atomic uint32_t stop; /* claim nothing more (cancelled) */
    _Atomic uint32_t any_fail;  /* an item failed: see map.c */
    uint32_t wake_each;         /* wake the waiters at every chunk's end (they
                                   copy chunks out, or hand them out); else
                                   only at the last: a wake-up for nothing
                                   takes a CPU from the workers */
    uint32_t log_order;         /* keep `order` (iterators read it) */
    _Alignas(64) _Atomic uint32_t ndone; /* chunks done (with parts: those
                                           of the parts done) */
    _Atomic uint32_t events;    /* futex: bumped at a chunk's end (at the
                                   last only, unless wake_each) */
    _Atomic uint32_t waiters;
    _Alignas(64) _Atomic uint32_t staged; /* futex: bumped at every staging */
    _Atomic uint32_t stage_waiters;
    batch_chunk chunks[];       /* then, 16-aligned, the nchunks entries of
                                   `order`: chunks in the order they were done;
                                   then, 64-aligned, the parts */
} batch_shm;

static inline size_t mp__batch_order_at(uint32_t nchunks)
{
    return (sizeof(batch_shm) + (size_t)nchunks * sizeof(batch_chunk) + 15) & ~(size_t)15;
}

/* The order array of a batch of nchunks chunks (an address computed, not
 * read from shared memory). */
static inline _Atomic uint32_t *mp__batch_order(batch_shm *b, uint32_t nchunks)
{
    return (_Atomic uint32_t *)(void *)((char *)b + mp__batch_order_at(nchunks));
}

static inline size_t mp__batch_parts_at(uint32_t nchunks)
{
    return (mp__batch_order_at(nchunks) + (size_t)nchunks * sizeof(uint32_t) + 63) & ~(size_t)63;
}

/* The parts of a batch of nchunks chunks (computed, not read). */
static inline batch_part *mp__batch_parts(batch_shm *b, uint32_t nchunks)
{
    return (batch_part *)(void *)((char *)b + mp__batch_parts_at(nchunks));
}

/* The first chunk of part q of nparts (q == nparts: nchunks). */
static inline uint32_t mp__batch_part_start(uint32_t q, uint32_t nchunks, uint32_t nparts)
{
    return (uint32_t)((uint64_t)q * nchunks / nparts);
}

/* nparts as claims and counts use it: 1 where it makes no sense. */
static inline uint32_t mp__batch_nparts(uint32_t nchunks, uint32_t nparts)
{
    return nparts < 1 || nparts > BATCH_PARTS_MAX || nparts > nchunks ? 1 : nparts;
}

/* The part chunk k (< nchunks) is in. */
static inline uint32_t mp__batch_part_of(uint32_t k, uint32_t nchunks, uint32_t nparts)
{
    uint32_t q = (uint32_t)((uint64_t)k * nparts / nchunks);
    while (q + 1 < nparts && mp__batch_part_start(q + 1, nchunks, nparts) <= k)
        q++;
    while (q > 0 && mp__batch_part_start(q, nchunks, nparts) > k)
        q--;
    return q;
}

/* A batch of nchunks chunks in the shared heap, all WAIT, order unset,
 * with room for up to max_parts parts (one, the whole, set up).  NULL and
 * *err on failure. */
batch_shm *mp__batch_new(uint32_t nchunks, uint32_t max_parts, int *err);
/* (map caller, before any claim) Cut the chunks into nparts parts (at most
 * the max_parts of mp__batch_new). */
void mp__batch_set_parts(batch_shm *b, uint32_t nchunks, uint32_t nparts);
void mp__batch_free(batch_shm *b);

/* Items of chunk k: the first's index in *first, how many in *count. */
static inline void mp__batch_range(const batch_geom *g, uint32_t k, size_t *first,
                                   uint32_t *count)
{
    *first = (size_t)k * g->chunk;
    size_t left = g->n - *first;
    *count = left < g->chunk ? (uint32_t)left : g->chunk;
}

/* Where chunk k's first input and output are (in place or staged). */
static inline const char *mp__batch_in(const batch_geom *g, uint32_t k)
{
    if (g->stage_in)
        return g->in + (size_t)(k % g->window) * g->chunk * g->in_size;
    return g->in + (size_t)k * g->chunk * g->in_size;
}

static inline char *mp__batch_out(const batch_geom *g, uint32_t k)
{
    if (g->stage_out)
        return g->out + (size_t)(k % g->window) * g->chunk * g->out_size;
    return g->out + (size_t)k * g->chunk * g->out_size;
}

/* Items in the chunks done so far (a part's chunks as they are done). */
uint64_t mp__batch_items_done(batch_shm *b, const batch_geom *g);
/* (worker w) Claim a chunk, from part `part` first: its index, BATCH_NONE
 * or BATCH_OVER.  Each chunk it tries is written to *held (may be NULL)
 * before its CAS, so that whenever the chunk is CLAIMED+w, *held names
 * it.  Past nchunks and nparts (from the parent's geometry, for the
 * parent's own claims) nothing is looked at. */
MP_INTERNAL int mp__batch_claim(batch_shm *b, unsigned w, uint32_t part, uint32_t nchunks,
                                uint32_t nparts, _Atomic uint32_t *held);
/* (worker, supervisor) Chunk k of nchunks in nparts parts is done: count
 * it and wake the waiters. */
MP_INTERNAL void mp__batch_done(batch_shm *b, uint32_t k, uint32_t nchunks, uint32_t nparts);
/* (supervisor, for a worker that stopped or died) Chunk k of nchunks in
 * nparts parts goes back to be claimed again from item start (of the
 * chunk). */
void mp__batch_reset(batch_shm *b, uint32_t k, uint32_t start, uint32_t nchunks,
                     uint32_t nparts);
/* (supervisor) The chunk a helper of worker w holds (held: what the
 * helper's job says, checked against the chunk's claim word), or -1. */
int mp__batch_held(batch_shm *b, uint32_t nchunks, unsigned w, uint32_t held);
/* (map caller) Chunk k's input is staged: it may be claimed. */
void mp__batch_staged(batch_shm *b, uint32_t k);
/* (worker) Wait until staging has moved on from `seen` (the `staged`
 * word read before a claim that found nothing staged), or the batch stops,
 * at most until deadline. */
void mp__batch_wait_staged(batch_shm *b, uint32_t seen, int64_t deadline);

#endif
