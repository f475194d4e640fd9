/* The task ring: jobs on their way from the parent to the workers, in the
 * shared heap, and the doorbell that wakes idle workers.
 *
 * A slot is a word (position << TAG_BITS | tag) and a job pointer.  The
 * parent (one producer at a time, under the pool's lock) fills a FREE slot
 * and marks it READY; a worker claims it with one CAS that writes its own
 * index into the tag, records the job as its current one, then frees the
 * slot.  Whatever instruction a worker dies at, its job is findable: in its
 * `current` record, or in a slot still tagged with its index (ring_recover).
 *
 * Slot life cycle (tag; who moves it):
 *
 *     FREE(pos) ──push (parent)──► READY(pos) ──claim (worker CAS)──► CLAIMED+w(pos)
 *        ▲                                                                │
 *        └──────── release (worker), or recover (supervisor) ─────────────┘
 *                  FREE(pos + size)
 *
 * Doorbell: idle workers look for work for a while (at most one a CPU:
 * the spinners), then sleep on task_seq.  A push wakes one sleeper unless a
 * worker is spinning or one has just been woken (waking); a worker that
 * takes a job and sees more work behind it passes the wake on. */
#ifndef MPROC_POOL_RING_H
#define MPROC_POOL_RING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "pool/job.h"
#include "export_int.h"

#define TAG_BITS 20
#define TAG_FREE 0
#define TAG_READY 1
#define TAG_CLAIMED 2           /* + worker index */
#define RING_WORD(pos, tag) (((uint64_t)(pos) << TAG_BITS) | (uint64_t)(tag))
#define RING_POS(w) ((w) >> TAG_BITS)
#define RING_TAG(w) ((uint32_t)((w) & ((1u << TAG_BITS) - 1)))
#define RING_MAX_WORKERS ((1u << TAG_BITS) - 3)

typedef struct {
    _Atomic uint64_t word;
    job_shm *_Atomic job;
} ring_slot;

typedef struct {
    _Alignas(64) _Atomic uint64_t head;     /* next position to claim */
    _Alignas(64) _Atomic uint32_t task_seq; /* futex: idle workers sleep on it */
    _Atomic uint32_t sleepers;  /* workers asleep (or about to be) */
    _Atomic uint32_t spinners;  /* workers spinning for work */
    uint32_t max_spinners;      /* at most (one a CPU: more would only
                                   take CPUs from those that work) */
    _Atomic uint32_t waking;    /* a sleeper has been woken, not yet up */
    _Atomic uint32_t stopping;  /* workers exit once the ring is empty */
    uint32_t size;              /* a power of two */
    ring_slot *slots;
} ring;

/* Make the ring's slots (in the shared heap).  0 or -ENOMEM. */
int mp__ring_init(ring *r, uint32_t size, uint32_t max_spinners);
void mp__ring_destroy(ring *r);

/* (parent, one at a time) Put j at *tail and ring the doorbell: false if
 * the ring is full. */
bool mp__ring_push(ring *r, uint64_t *tail, job_shm *j);
/* (parent) True when the slot at tail is free for a push. */
bool mp__ring_has_room(ring *r, uint64_t tail);
/* True when a job waits to be claimed. */
MP_INTERNAL bool mp__ring_ready(ring *r);
/* (worker w) Claim the next job: the job, its position in *pos; NULL when
 * the ring is empty. */
MP_INTERNAL job_shm *mp__ring_claim(ring *r, unsigned w, uint64_t *pos);
/* (worker) Free the slot of a job claimed at pos, once it is recorded as
 * the worker's current job. */
MP_INTERNAL void mp__ring_release(ring *r, uint64_t pos);
/* (supervisor) Worker w is dead: free every slot it had claimed and call
 * fn on each job they held. */
void mp__ring_recover(ring *r, unsigned w, void (*fn)(job_shm *j, void *arg), void *arg);

/* Wake one sleeping worker for new work, unless one is looking already. */
void mp__ring_wake(ring *r);
/* Wake up to n sleeping workers at once (n jobs were pushed together). */
void mp__ring_wake_n(ring *r, unsigned n);
/* Wake every worker (stopping, terminate). */
void mp__ring_wake_all(ring *r);
/* (worker) Wait for work: spin up to spin_ns first if parallel.  True
 * when the worker should exit (stopping and nothing left). */
MP_INTERNAL bool mp__ring_idle(ring *r, bool parallel, int64_t spin_ns);

#endif
