/* The parent's half of a map batch, shared by map.c (map, map_ex) and
 * iter.c (imap). */
#ifndef MPROC_POOL_MAP_H
#define MPROC_POOL_MAP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "pool/batch.h"
#include "pool/core.h"
#include "pool/progress.h"

/* A failed item as a batch keeps it (24 bytes: a map whose every item
 * fails must not need an mp_task_info each); a crash report, rare (it
 * costs a worker), is kept aside, once per death. */
typedef struct {
    uint64_t index;
    task_outcome info;
    uint32_t report;            /* 1 + its index in reports; 0: none */
} map_err;

struct map_batch {
    pool_core *c;
    batch_shm *shm;
    batch_geom geom;            /* the shape, as we made it (batch.h) */
    _Atomic int refs;           /* the caller, and each helper not yet ended */
    pthread_mutex_t lock;       /* everything below but the staging fields */
    unsigned helpers_out;       /* helper jobs not yet ended for good */
    unsigned helpers_made;      /* (the caller's) helper jobs dispatched */
    unsigned max_helpers;       /* at most (one a worker, one a chunk) */
    map_err *errs;              /* failed items, as the supervisor got them */
    size_t nerrs, cap;
    mp_task_info *reports;      /* crash reports errs name */
    size_t nreports;
    bool oom;                   /* a failure could not be recorded */
    bool canceled;
    progress_rec prog;          /* (progress.c) */

    /* staging (the caller's thread only) */
    const char *user_in;        /* the caller's arrays */
    char *user_out;
    void *stage;                /* heap block: window slots of in, then out */
    uint32_t next_stage;        /* next chunk to stage */
    uint32_t next_copy;         /* chunks below this are copied out */
    unsigned char *copied;      /* per chunk: output copied to the caller */
};

/* Validate, make the batch and dispatch its helpers.  out: the caller's
 * array (map) or NULL (imap: the batch gets its own).  0 and *mbp, or
 * an error. */
int mp__map_start(mp_pool *p, mp_map_fn fn, bool range, const void *in, size_t n,
                  size_t in_size, void *out, size_t out_size, size_t chunksize, bool blocking,
                  map_batch **mbp);
/* Dispatch n more helpers (no more than max_helpers in all).  0 or an
 * error (MP_ECLOSED, -ENOMEM). */
int mp__map_add_helpers(map_batch *mb, unsigned n);
/* Stage what the window allows and copy out what is done (staged maps;
 * the caller's thread). */
void mp__map_pump(map_batch *mb);
/* True once every chunk is done, or the batch can get no further. */
bool mp__map_over(map_batch *mb);
/* Stop the batch: helpers claim nothing more; queued ones end at once. */
void mp__map_stop(map_batch *mb);
/* Stop it and wake the supervisor to collect the helpers (for an owner
 * that waits for them). */
void mp__map_cancel(map_batch *mb);
/* Wait until no helper will touch the batch's chunks any more. */
void mp__map_wait_helpers(map_batch *mb);
/* Drop the caller's reference. */
void mp__map_unref(map_batch *mb);
/* Failed items in index order (sorted in place; lock held). */
void mp__map_sort_errors(map_batch *mb);
/* A failed item as users see it, crash report included (lock held). */
mp_task_info mp__map_err_info(const map_batch *mb, const map_err *e);
/* Hand the failures over, sorted, as *errs (malloc'd; NULL when none) and
 * *nerrs, and forget them (lock held).  0 or -ENOMEM. */
int mp__map_take_errors(map_batch *mb, mp_map_error **errs, size_t *nerrs);
/* (a worker in this process: MPI's sender) Record the failure of item
 * index of the map that helper job s works for, before its chunk is marked
 * done.  0, or -ENOMEM (the map then fails with it), -EINVAL (no such
 * helper). */
MP_INTERNAL int mp__map_fail_item(pool_core *c, job_shm *s, uint64_t index,
                                  const mp_task_info *info);

/* (MPI's sender, in this process) The map a helper job works for, found
 * through the parent's job table, not the shared half: NULL if s is no
 * helper of the pool's. */
MP_INTERNAL map_batch *mp__map_of(pool_core *c, job_shm *s);
/* (MPI's sender) An apply job's task as submitted: 0, or -EINVAL if s is
 * no task of the pool's. */
MP_INTERNAL int mp__job_task(pool_core *c, job_shm *s, mp_task_fn *fn, const void **arg,
                             size_t *len);

/* ---- iterators, for MPI worker ranks (iter.c) ---- */
/* Cancel an iterator's work not yet started (mp_iter_free without the
 * wait). */
MP_INTERNAL void mp__iter_cancel(mp_iter *it);
/* mp_pool_imap over runs (an mp_chunk_fn cast to mp_map_fn) when range. */
MP_INTERNAL int mp__pool_imap_fn(mp_pool *p, mp_map_fn fn, bool range, const void *in, size_t n,
                                 size_t in_size, size_t out_size, size_t chunksize, bool ordered,
                                 mp_iter **out);
/* Wait up to timeout until all of an iterator's items have ended, then
 * copy every output to out and hand over the failures (index order,
 * malloc'd or NULL).  0, MP_ETIMEDOUT, MP_ECANCELED (not all ran),
 * -ENOMEM. */
MP_INTERNAL int mp__iter_wait_all(mp_iter *it, double timeout, void *out, mp_map_error **errs,
                                  size_t *nerrs);

#endif
