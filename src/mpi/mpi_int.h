/* MPI pools, inside libmproc-mpi: what its three parts share.
 *
 *   mpi_job.c     joining and leaving the MPI job; the pool backend
 *   mpi_sender.c  rank 0: the pool's one worker, a thread that sends tasks
 *                 and map chunks to the worker ranks and ends their jobs
 *   mpi_rank.c    the worker ranks: run what rank 0 sends in a local
 *                 process pool and answer
 *   mpi_comm.c    what the two sides share: the job's state, messaging
 *
 * mpi_job.c starts the sender or a rank's life; both use mpi_comm.c; none
 * calls back up.
 *
 * All MPI calls are made by one thread at a time: rank 0's sender while a
 * pool is open, the main thread otherwise; MPI is initialized with
 * MPI_THREAD_SERIALIZED. */
#ifndef MPROC_MPI_INT_H
#define MPROC_MPI_INT_H

#include <mpi.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "mproc/pool.h"
#include "os/fnref.h"
#include "pool/core.h"

enum { TAG_OPEN = 1, TAG_TASK, TAG_RESULT, TAG_CLOSE, TAG_TERMINATE, TAG_CLOSED, TAG_SHUTDOWN };
enum { TASK_APPLY = 1, TASK_CHUNK };

#define DEPTH 16                /* at most, tasks out to one rank */
#define DEPTH_LONG 2            /* ... when tasks take LONG_NS or more */
#define LONG_NS 500000
#define SPIN_ROUNDS 256         /* polls (with yields) before napping */
#define NAP_MIN_NS 20000
#define NAP_MAX_NS 1000000      /* an idle rank notices a task within 1 ms */

/* Pool settings, rank 0 -> each worker rank; the initializer's argument
 * follows. */
typedef struct {
    mp__fnref init;
    uint32_t has_init, maxtasks;
    int64_t timeout_ns;
    uint64_t initarg_len;
} open_msg;

/* A task, rank 0 -> worker rank; its bytes (argument, or the chunk's
 * items) follow, 16-byte aligned. */
typedef struct {
    mp__fnref fn;
    uint64_t id;                /* rank 0's slot for it */
    uint32_t kind;              /* TASK_APPLY or TASK_CHUNK */
    uint32_t count;             /* chunk: items */
    int64_t timeout_ns;         /* apply: its limit; 0: none */
    uint64_t in_size, out_size, len;
    uint64_t flags;             /* TASK_RANGE: fn takes runs (mp_chunk_fn) */
} task_msg;

#define TASK_RANGE 1u

/* A task's end, worker rank -> rank 0.  Apply: the result bytes follow.
 * Chunk: info.code != 0 if no item ran; else count outputs, then, 8-byte
 * aligned, nerrs mp_map_error (indexes within the chunk). */
typedef struct {
    uint64_t id;
    task_outcome info;          /* (a crash report stays on its rank) */
    uint64_t len, nerrs;
} result_msg;

_Static_assert(sizeof(task_msg) % 16 == 0, "items stay aligned");

static inline size_t mpi_align8(size_t v) { return (v + 7) & ~(size_t)7; }

/* The process's place in the MPI job (mpi_comm.c; joined by mpi_job.c). */
typedef struct {
    pthread_mutex_t lock;
    pid_t pid;                  /* the process that joined the job */
    bool ready, ours, finalized;
    int rank, size;
    MPI_Comm comm;              /* our own: our tags meet nobody else's */
    mp_pool *open;              /* rank 0: the open MPI pool */
    bool busy;                  /* rank 0: a pool holds the slot */
} mpi_state;

extern mpi_state mp__mpi;

/* Yield, then nap longer and longer while nothing comes. */
void mp__mpi_nap(unsigned *idle, int64_t *ns);
/* Wait for a message, polling (a blocking receive would spin a CPU). */
void mp__mpi_wait_message(int src, int tag, MPI_Status *st);
/* Receive the message a probe found, into a heap block if *heap (cleared
 * when it had to be malloc'd instead) or a malloc'd buffer.  NULL when out
 * of memory: the message is left where it is, to be taken later. */
void *mp__mpi_receive(const MPI_Status *st, bool *heap, int *len);
void mp__mpi_release(void *buf, bool heap);

/* mpi_rank.c: a worker rank's life; never returns. */
_Noreturn void mp__mpi_rank_main(bool mpi_was_up);
/* mpi_sender.c: start rank 0's sender for pool c (its worker 0). */
int mp__mpi_sender_start(pool_core *c, pthread_t *th);

#endif
