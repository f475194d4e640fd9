/* The job: one task (apply) or one map helper on its way to a worker and
 * back.  A job has two halves:
 *
 *   job_shm  in the shared heap, all a worker needs: the state word, the
 *            task (function, argument) or the map batch it helps with, the
 *            outcome (result, failure), the dispatch sequence;
 *   job      in the parent's private memory: callbacks, descriptors,
 *            reference counts, list links, the completion hook.
 *
 * Workers can write the shared half (a task's wild write included), never
 * the private one; the parent never follows a pointer it read from shared
 * memory before checking it names one of its own jobs (mp__job_of).
 *
 * Life cycle of the state word (job_shm.state), with who moves it:
 *
 *           dispatch (parent)        begin (worker)          end (worker)
 *   FREE ───────────────────► QUEUED ─────────────► RUNNING ─────────────► DONE
 *    ▲                         │  ▲                  │   │ end (callbacks)   ▲
 *    │                  cancel │  │ dispatch again   │   └─────► ENDED ──────┤
 *    │                (parent) │  │ (helper's rest)  │ stop (helper with    │ finish
 *    │                         ▼  │                  ▼  work left)          │ (supervisor,
 *    │                  CANCELED_QUEUED          STOPPED                    │  after
 *    │                         │ drop (a worker pops it; the supervisor     │  callbacks)
 *    │                         ▼  runs its error callback first)            │
 *    └───── recycle ──── CANCELED ◄──────── terminate (supervisor) ─────────┘
 *
 * DONE and CANCELED are final and recyclable: nothing references the job
 * any more.  CANCELED_QUEUED is final for the waiters of a job without
 * callbacks (mp_result_get answers MP_ECANCELED at once) but not
 * recyclable: the ring still holds it.  A job with callbacks passes through
 * ENDED (or stays CANCELED_QUEUED) until the supervisor has run them, so
 * that its waiters see it final only once they have returned.  A worker
 * that dies while RUNNING has its job ended for it by the supervisor
 * (fail), or dispatched again (a helper's rest).  Each transition is one
 * function below, a CAS where two parties may race.
 *
 * JOB_ORPHAN is or-ed into the word when the user's handle is freed: of the
 * free and the job becoming recyclable, whichever comes second recycles it
 * (a worker by handing it to the supervisor on its done stack). */
#ifndef MPROC_POOL_JOB_H
#define MPROC_POOL_JOB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mproc/pool.h"
#include "export_int.h"

typedef struct pool_core pool_core;
typedef struct map_batch map_batch;
typedef struct batch_shm batch_shm;

enum {
    JOB_FREE = 0,
    JOB_QUEUED,
    JOB_RUNNING,
    JOB_STOPPED,         /* helper: stopped with work left (maxtasks, fails) */
    JOB_ENDED,           /* apply: ran; its callbacks have not yet */
    JOB_DONE,            /* final */
    JOB_CANCELED_QUEUED, /* cancelled, still in the ring */
    JOB_CANCELED         /* final */
};
#define JOB_STATE_MASK 0xffu
#define JOB_ORPHAN 0x100u

enum { JOB_APPLY = 1, JOB_HELPER };

#define JOB_INLINE 256      /* argument + small result, inside the job */
#define JOB_FAILS 8         /* item failures a helper records per dispatch
                               (in the same room: a job is one or the other) */

/* How a task ended, as shared memory holds it (mp_task_info without its
 * crash report, which the parent keeps). */
typedef struct { int code; int signo; int exit_status; int task_rc; } task_outcome;

static inline mp_task_info outcome_info(task_outcome o)
{
    mp_task_info i = {.code = o.code, .signo = o.signo, .exit_status = o.exit_status,
                      .task_rc = o.task_rc};
    return i;
}

static inline task_outcome info_outcome(const mp_task_info *i)
{
    task_outcome o = {i->code, i->signo, i->exit_status, i->task_rc};
    return o;
}

/* A failed map item as a worker records it. */
typedef struct {
    uint64_t index;         /* in the whole map */
    task_outcome info;
    uint32_t count;         /* items failed from index on (a run) */
} job_fail;

typedef struct job_shm {
    /* state and waiters first: mp__job_get resets what follows them */
    _Atomic uint32_t state;     /* JOB_* | JOB_ORPHAN: futex word of waiters */
    _Atomic uint32_t waiters;   /* sleeping on state */
    uint32_t kind;              /* JOB_APPLY or JOB_HELPER */
    uint32_t id;                /* the parent's name for it (mp__job_of) */
    _Atomic uint32_t notify;    /* its end must reach the supervisor now */
    uint32_t nfds;              /* descriptors the task receives */
    _Atomic uint64_t seq;       /* dispatch sequence: new at each dispatch */
    struct job_shm *next_done;  /* done-stack link */
    int64_t timeout_ns;         /* per task or map item; 0: none */
    _Atomic int64_t item_start; /* when the running task or item began */
    task_outcome info;          /* apply: the outcome */

    /* apply */
    mp_task_fn fn;
    const void *arg;
    size_t len;
    void *res;                  /* inline, a heap block, or NULL */
    size_t res_len;
    int fds[MP_TASK_MAX_FDS];   /* thread workers: the parent's duplicates
                                   (process workers ask for them instead) */

    /* helper: works on batch's chunks until none is left */
    batch_shm *batch;
    _Atomic uint64_t cur;       /* item running now */
    uint32_t nfail;             /* fails recorded this dispatch */
    uint32_t part;              /* the part of the chunks it starts on */
    _Atomic uint32_t held;      /* the chunk it claims or holds (BATCH_NO_CHUNK:
                                   none): which of its worker's chunks is its */

    union {
        _Alignas(16) unsigned char inline_buf[JOB_INLINE]; /* apply: argument,
                                                               small result */
        job_fail fails[JOB_FAILS];                          /* helper */
    };
} job_shm;

typedef struct job job;

/* How a job's dispatch ended, for its completion hook; JOB_CANCEL_NOTICE
 * is no end: the job was cancelled while queued, run its error callback
 * now (its dispatch ends later, when a worker drops it). */
enum { JOB_END_NORMAL, JOB_END_DIED, JOB_END_CANCELED, JOB_CANCEL_NOTICE };

/* Completion hook: run on the supervisor thread once per dispatch (as
 * libuv's w->done(w, err)).  how: JOB_END_*; died: why worker w died while
 * running it (JOB_END_DIED), else NULL. */
typedef void (*job_done_fn)(job *j, int how, const mp_task_info *died, unsigned w);

struct job {
    job_shm *shm;
    uint32_t id;                /* in the table (the shared half's copy is
                                   written again at every reuse) */
    pool_core *core;
    job_done_fn done;           /* completion hook */
    map_batch *batch;           /* helper: its batch (map.c's) */
    batch_shm *bs;              /* ... and the batch's shared half */
    uint64_t collected_seq;     /* (supervisor) dispatch already ended */
    job *next;                  /* free list, pending list */
    job *next_retired;          /* (supervisor) a done stack's walk */
    bool walked;                /* (supervisor) in that walk already */
    mp_task_opts opts;          /* callbacks */
    mp_task_fn fn;              /* the task, as submitted (the shared half's */
    const void *arg;            /*   copy may be scribbled over) */
    size_t len;
    int fds[MP_TASK_MAX_FDS];   /* duplicates of the task's descriptors */
    uint32_t nfds;
    void *block;                /* argument block, kept while cached */
    size_t block_size;
    bool pending;               /* waiting for room in the ring */
    uint64_t ring_pos;          /* where it went in the ring (spin or not) */
    bool notify;                /* its end must reach the supervisor
                                   (the private copy of shm->notify) */
    _Atomic bool reported;      /* its callback has run */
    mp_task_info *died;         /* apply: how its worker died, with the crash
                                   report (malloc'd; NULL: none) */
    pid_t owner;
};

/* ---- transitions (see the diagram) ---- */

static inline uint32_t job_state(const job_shm *s)
{
    return atomic_load_explicit(&((job_shm *)s)->state, memory_order_acquire) & JOB_STATE_MASK;
}

/* Nothing references the job: it may be reused. */
static inline bool job_is_recyclable(uint32_t st) { return st == JOB_DONE || st == JOB_CANCELED; }

/* Final for the waiters of an apply job (notify: it has callbacks). */
static inline bool job_is_final(uint32_t st, bool notify)
{
    return job_is_recyclable(st) || (st == JOB_CANCELED_QUEUED && !notify);
}

/* (parent) FREE, STOPPED or DONE -> QUEUED, for a new dispatch. */
void mp__job_queue(job_shm *s, uint64_t seq);
/* (worker) QUEUED -> RUNNING; false if it was cancelled meanwhile. */
MP_INTERNAL bool mp__job_begin(job_shm *s);
/* (parent) QUEUED -> CANCELED_QUEUED; false if it had started. */
bool mp__job_cancel(job_shm *s);
/* (worker) A cancelled job popped from the ring: -> CANCELED when nothing
 * more is owed to it.  True if the supervisor must see it (callbacks to
 * run, or orphaned: to recycle it). */
MP_INTERNAL bool mp__job_drop(job_shm *s);
/* (worker, or the supervisor for a dead worker) RUNNING -> DONE, or ENDED
 * when the supervisor must see the end (callbacks).  Wakes the waiters of
 * a final state.  True if the supervisor must see it (ENDED, or orphaned:
 * to recycle it); false means the job may be reused at once. */
MP_INTERNAL bool mp__job_end(job_shm *s);
/* (worker) RUNNING -> STOPPED: a helper leaves work for another dispatch. */
MP_INTERNAL void mp__job_stop(job_shm *s);
/* (supervisor) ENDED -> DONE, CANCELED_QUEUED -> CANCELED, and with cancel
 * (terminate, or a helper's end) any other state -> CANCELED or DONE;
 * wakes the waiters.  True if the job was orphaned: the caller recycles
 * it, and must not touch it otherwise once this returns false. */
bool mp__job_finish(job_shm *s, bool cancel);
/* (parent) The user's handle is gone: true if the job is recyclable
 * already (the caller recycles it); false: its end will. */
bool mp__job_orphan(job_shm *s);

/* ---- the parent's jobs ---- */

#define JOB_PAGE 1024       /* table entries a page */
#define JOB_PAGES 4096      /* at most 4M jobs in flight */

/* A pool's jobs: every job it made by id, and those free for reuse. */
typedef struct {
    pthread_mutex_t lock;       /* the free list, ids and table growth */
    job *free;                  /* recycled jobs, both halves kept */
    size_t nfree;
    size_t kept;                /* bytes of argument blocks the free hold */
    job *_Atomic returned;      /* recycled since the last get that found
                                   the free list empty (no lock: pushed by
                                   any thread, taken whole under it) */
    job *trash;                 /* past the free list's bound: the
                                   supervisor destroys them (trim) */
    uint32_t *free_ids;         /* ids of destroyed jobs, to reuse */
    size_t nfree_ids, cap_ids;
    job *_Atomic *_Atomic dir[JOB_PAGES]; /* id -> job */
    _Atomic uint32_t njobs;     /* ids handed out */
} job_table;

int mp__jobs_init(job_table *t);
/* Free every job (the pool is gone and no result holds one). */
void mp__jobs_destroy(job_table *t);
/* A job of this pool, header zeroed, state FREE; NULL when out of
 * memory or past JOB_PAGES * JOB_PAGE jobs.  Any thread. */
job *mp__job_get(pool_core *c, job_table *t);
/* Back to the free list.  Any thread. */
void mp__job_recycle(job_table *t, job *j);
/* (supervisor) Destroy the jobs recycled past the free list's bound. */
void mp__jobs_trim(job_table *t);
/* (supervisor) The job of an id, or NULL. */
job *mp__job_by_id(job_table *t, uint32_t id);
/* (supervisor) The private job a pointer read from shared memory names,
 * or NULL if it names none of ours (a worker scribbled over it). */
job *mp__job_of(job_table *t, const job_shm *s);
/* (supervisor) Call fn for every job that exists. */
void mp__jobs_each(job_table *t, void (*fn)(job *j, void *arg), void *arg);
/* A heap block of at least size bytes owned by job j (its own, reused if
 * big enough: pages workers touched stay mapped); NULL and *err. */
void *mp__job_block(job *j, size_t size, int *err);

#endif
