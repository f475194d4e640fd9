/* The worker loop, the same for every kind of worker: claim a job from
 * the ring, record it as the current one, run it (a task, or a map
 * helper's chunks), end it. */
#ifndef MPROC_POOL_WORKER_H
#define MPROC_POOL_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "pool/core.h"
#include "export_int.h"

/* Run worker w of the pool until the pool stops or the worker has run
 * maxtasks tasks.  A thread worker returns; a process worker _exits. */
void mp__worker_run(pool_shm *s, unsigned w, bool process);
/* Free the ring slot of the job claimed at pos, once it is recorded as
 * the current one; wake a sleeper for more work behind it, and tell the
 * supervisor of room when jobs wait for it. */
MP_INTERNAL void mp__worker_release(pool_shm *s, uint64_t pos);
/* Inside a task that counts its own items (imap_items' pieces): the
 * worker's totals, which only this worker writes, to add to as items end
 * (item_count_add); the task itself is then not counted.  NULLs when the
 * task runs outside a worker. */
typedef struct { _Atomic uint64_t *done, *failed; } item_counts;
MP_INTERNAL item_counts mp__worker_item_counts(void);

static inline void item_count_add(_Atomic uint64_t *n, uint64_t k)
{
    if (n)
        atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) + k,
                              memory_order_relaxed);
}
/* Inside a task: its job (NULL outside one). */
MP_INTERNAL job_shm *mp__worker_job(void);
/* Inside a task: this worker ends when the task returns (and is replaced,
 * as after maxtasksperchild). */
MP_INTERNAL void mp__worker_retire(void);
/* Hand an ended job to the supervisor on worker w's done stack; wake the
 * supervisor now if urgent (callbacks, failures), else once a batch of
 * them has piled up. */
MP_INTERNAL void mp__worker_push_done(pool_shm *s, unsigned w, job_shm *j, bool urgent);
/* A process worker's control socket to the supervisor (descriptor
 * passing), set before mp__worker_run. */
void mp__worker_set_ctl(int fd);
/* Added to the worker index mp_pool_worker_index reports (an MPI worker
 * rank's local pool reports its rank's index). */
MP_INTERNAL extern int mp__pool_index_base;

/* Messages on a worker's control socket: it asks for the descriptors of
 * the job it runs; the supervisor answers with them (or err). */
typedef struct { uint64_t job, seq; } fd_request;
typedef struct { uint64_t seq; int32_t n, err; } fd_reply;

#endif
