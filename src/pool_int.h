/* Pool internals shared by pool.c (the parent: submission, results, the
 * collector thread), pool_worker.c (the worker loop and the fork server)
 * and pool_map.c (map and imap).
 *
 * Everything workers touch lives in the shared heap:
 *   - jobs: one per apply task or map chunk, with its argument, result and
 *     state word (results are waited for on that word);
 *   - the task ring: job pointers that idle workers claim with one CAS of a
 *     slot word recording which worker took it, so that a worker killed at
 *     any instruction leaves every task it held findable;
 *   - a slot per worker naming the job it runs (`current`, checked against
 *     the job's dispatch sequence, since jobs are recycled);
 *   - a done stack per worker: finished jobs, pushed by their worker with
 *     one CAS and taken all at once by the collector.
 *
 * Fields marked (parent) are only meaningful in the pool's own process. */
#ifndef MPROC_POOL_INT_H
#define MPROC_POOL_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "mproc/pool.h"

/* Job states.  A task with callbacks is not final for its waiters until
 * the collector has run them: its worker (or a cancel) leaves it ENDED (or
 * CANCELING), and the collector moves it to DONE (CANCELED) afterwards. */
enum { JOB_QUEUED, JOB_RUNNING, JOB_STOPPED, JOB_DONE, JOB_CANCELED, JOB_ENDED, JOB_CANCELING };
enum { JOB_APPLY, JOB_CHUNK };

#define JOB_INLINE 192     /* argument + small result, inside the job */
#define CHUNK_FAILS 16     /* item failures a chunk records before it stops */

typedef struct pool_core pool_core;
typedef struct map_batch map_batch;

typedef struct job {
    _Atomic uint32_t state;     /* JOB_*: futex word of waiters */
    _Atomic uint32_t waiters;
    uint32_t kind;              /* JOB_APPLY or JOB_CHUNK */
    uint32_t notify;            /* wake the collector when it ends */
    _Atomic uint64_t seq;       /* dispatch sequence (new at each dispatch) */
    struct job *next_done;      /* done-stack link */
    int64_t timeout_ns;         /* per task / item; 0: none */
    _Atomic int64_t item_start; /* when the running task or item began */
    mp_task_info info;          /* the outcome */

    /* apply */
    mp_task_fn fn;
    const void *arg;
    size_t len;
    void *res;                  /* inline, a heap block, or NULL */
    size_t res_len;

    /* chunk: items [start, count) of in/out still to do */
    mp_map_fn mfn;
    const char *in;
    char *out;
    size_t in_size, out_size;
    size_t first;               /* index of item 0 in the whole map */
    uint32_t start, count;
    _Atomic uint32_t cur;       /* item running now; count when done */
    uint32_t nfail;
    struct { uint32_t item; int32_t rc; } fails[CHUNK_FAILS];
    uint32_t chunk_no;          /* (parent) index in its batch */

    /* (parent) */
    pool_core *core;
    pid_t owner;
    _Atomic int refs;           /* the user's handle and the pool's */
    uint64_t collected_seq;     /* dispatch the collector has handled */
    struct job *next_local, *prev_local; /* in flight / pending / cache */
    struct job *next_pending;
    struct job *next_retired;
    mp_map_error *xerrs;        /* (parent) failed items reported whole, by */
    uint32_t nxerrs;            /*   an MPI rank: indexes in the whole map */
    void *heap_block;           /* argument or staging block, kept with the job */
    size_t heap_block_size;
    map_batch *batch;
    mp_task_opts opts;
    int fds[MP_TASK_MAX_FDS];   /* (parent) duplicates of the task's fds */
    uint32_t nfds;
    bool pending;               /* in the pending list, not the ring */
    bool listed;                /* in the in-flight list */

    _Alignas(16) unsigned char inline_buf[JOB_INLINE];
} job;

typedef struct {
    _Atomic uint64_t word;      /* pos << TAG_BITS | tag */
    job *_Atomic job;
} ring_slot;

#define TAG_BITS 20
#define TAG_FREE 0
#define TAG_READY 1
#define TAG_CLAIMED 2           /* + worker index */
#define RING_WORD(pos, tag) (((uint64_t)(pos) << TAG_BITS) | (uint64_t)(tag))
#define RING_POS(w) ((w) >> TAG_BITS)
#define RING_TAG(w) ((uint32_t)((w) & ((1u << TAG_BITS) - 1)))
#define MAX_WORKERS ((1u << TAG_BITS) - 3)

typedef struct {
    _Alignas(64) job *_Atomic current;
    _Atomic uint64_t current_seq;
    job *_Atomic done_head;     /* its finished jobs (a stack per worker:
                                   workers never contend on it) */
    _Atomic uint32_t exited;    /* thread workers: it has returned */
    _Atomic uint32_t tasks;     /* tasks it has run */
} worker_slot;

typedef struct {
    _Alignas(64) _Atomic uint64_t head;  /* next position to claim */
    _Alignas(64) _Atomic uint32_t task_seq; /* futex: idle workers sleep on it */
    _Atomic uint32_t sleepers;
    _Atomic uint32_t spinners;
    _Atomic uint32_t waking;    /* a sleeper has been woken, not yet up */
    _Atomic uint32_t stopping;  /* workers exit once the ring is empty */
    _Atomic uint32_t terminating; /* terminate: MPI ranks stop their tasks */
    _Alignas(64) _Atomic uint32_t collector_sleeping;
    _Atomic uint32_t want_notify; /* tell the collector of every end */
    int notify_fd;
    uint32_t nworkers;
    uint32_t ring_size;
    uint32_t maxtasks;
    int64_t pool_timeout_ns;
    void (*initializer)(void *);
    void *initarg;
    size_t initarg_len;         /* MPI pools: initarg is our copy of it */
    worker_slot *workers;
    ring_slot *ring;
} pool_shm;

/* ---- pool_worker.c ---- */
/* The worker loop: claims and runs jobs until the pool stops or the worker
 * has run maxtasks.  Returns in a thread worker; a process worker _exits. */
void mp__pool_worker_run(pool_shm *s, unsigned w, bool process);
/* Wake one sleeping worker for new work, unless one is looking for work
 * already or has just been woken. */
void mp__pool_wake_worker(pool_shm *s);
/* Push a finished job on worker w's done stack and wake the collector if
 * need be. */
void mp__pool_push_done(pool_shm *s, unsigned w, job *j);
/* Claim the next job of the ring for worker w and record it as w's;
 * NULL when the ring is empty (used by the MPI pool's sender). */
job *mp__pool_take(pool_shm *s, unsigned w);
/* Move a taken job from queued to running; false (and the job pushed as
 * done) if it was cancelled meanwhile. */
bool mp__pool_job_begin(pool_shm *s, unsigned w, job *j);
/* True when the ring holds a job ready to be claimed. */
bool mp__pool_ring_ready(pool_shm *s);
/* A worker has finished apply job j (info, res set): final now, or ENDED
 * for the collector to run its callbacks first. */
void mp__pool_job_ended(job *j);
/* The state a queued job j is cancelled into. */
static inline uint32_t mp__pool_cancel_state(const job *j)
{
    return j->kind == JOB_APPLY && j->notify ? JOB_CANCELING : JOB_CANCELED;
}
/* Added to the worker index mp_pool_worker_index reports (an MPI worker
 * rank's local pool reports its rank's index). */
extern int mp__pool_index_base;
/* Fork server: fork it (from the collector thread); returns its pid and the
 * parent's end of its socket in *sock, or -errno. */
pid_t mp__pool_server_start(pool_shm *s, int *sock, const int *keep, int nkeep);

/* Messages on the fork server's socket. */
enum { SRV_SPAWN = 1, SRV_SPAWNED, SRV_EXITED, SRV_FAILED, SRV_STOP, SRV_KILL };
typedef struct { int32_t op, slot, pid, status; } srv_msg;
/* On a worker's control socket: a worker asks for the fds of the job it
 * runs; the collector answers with them (or err). */
typedef struct { uint64_t job, seq; } fd_request;
typedef struct { uint64_t seq; int32_t n, err; } fd_reply;

/* ---- pool.c: what map uses ---- */
/* Take a free job (zeroed header) for this pool; NULL when out of memory. */
job *mp__pool_job_get(pool_core *c);
/* A heap block of at least size bytes owned by job j (reused if big
 * enough); NULL and *err on failure. */
void *mp__pool_job_block(job *j, size_t size, int *err);
/* Queue a job (lock held): ring, or the pending list if the ring is full. */
void mp__pool_dispatch(pool_core *c, job *j);
/* Drop one reference to a job. */
void mp__pool_job_unref(job *j);
/* The collector is done with a job: it leaves the in-flight list and loses
 * the pool's reference at the collector's next batch (collector only). */
void mp__pool_job_retire(job *j);
/* True on the collector thread while it runs a callback of this pool. */
bool mp__pool_in_callback(pool_core *c);
int mp__pool_check(mp_pool *p, pool_core **core);
void mp__pool_lock(pool_core *c);
void mp__pool_unlock(pool_core *c);
bool mp__pool_accepting(pool_core *c);
/* MPI pools: 0 if fn can be named for another rank, else MP_EFUNC. */
int mp__pool_fn_check(pool_core *c, void (*fn)(void));
bool mp__pool_terminated(pool_core *c);
unsigned mp__pool_nworkers(pool_core *c);
int64_t mp__pool_timeout_ns(pool_core *c);
void mp__pool_core_ref(pool_core *c);
void mp__pool_core_unref(pool_core *c);
/* Wait on a futex word until cond(arg) or deadline, spinning first. */
int mp__pool_wait_word(_Atomic uint32_t *word, _Atomic uint32_t *waiters,
                       bool (*cond)(void *), void *arg, int64_t deadline, bool spin);
void mp__pool_wake_word(_Atomic uint32_t *word, _Atomic uint32_t *waiters);

/* Restart every worker of a process pool with new settings and wait until
 * the old ones are gone; a task they were running fails with MP_ECANCELED
 * (used by MPI worker ranks between pools and on terminate). */
int mp__pool_restart(mp_pool *p, void (*init)(void *), void *initarg, unsigned maxtasks,
                     int64_t timeout_ns);

/* ---- pool_mpi.c ---- */
/* Join the MPI job for a new MPI pool (never returns on worker ranks):
 * the number of worker ranks, or MP_ENOMPI, -EPERM, -ENOTSUP. */
int mp__mpi_attach(void);
/* Reserve the one MPI pool slot for pool p: 0 or -EBUSY. */
int mp__mpi_pool_claim(mp_pool *p);
/* Give the slot back (the pool failed to start). */
void mp__mpi_pool_release(void);
/* Start the MPI pool's sender thread for s (the pool's worker 0 record
 * waits for its `exited` flag). */
int mp__mpi_pool_start(pool_shm *s, pthread_t *th);

/* ---- pool_map.c: what the collector calls ---- */
/* A chunk job has stopped (state JOB_STOPPED, or its worker died: failed
 * is the failure of item `cur`, 0 otherwise).  Lock not held. */
void mp__pool_chunk_ended(job *j, const mp_task_info *failed);
/* The pool was terminated: fail what is left of a chunk's batch. */
void mp__pool_chunk_cancel(job *j);
/* Cancel an iterator's work not yet started (mp_iter_free without the
 * wait). */
void mp__iter_cancel(mp_iter *it);
/* Wait up to timeout until all of an iterator's items have ended, then
 * copy every output to out and hand over the failures (index order,
 * malloc'd or NULL).  0, MP_ETIMEDOUT, MP_ECANCELED (not all ran). */
int mp__iter_wait_all(mp_iter *it, double timeout, void *out, mp_map_error **errs,
                      size_t *nerrs);

#endif
