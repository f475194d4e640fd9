/* The pool: what its modules share.
 *
 *   core.c        the pool's life (new, close, terminate, join, free) and
 *                 dispatch (the ring's producer side, the pending list)
 *   supervisor.c  the supervisor thread: workers' life, deaths, deadlines,
 *                 completions through each job's hook
 *   backend_*.c   one kind of worker each, behind pool_backend (process,
 *                 thread; MPI's lives in libmproc-mpi)
 *   worker.c      the worker loop (any kind), result buffers
 *   forkserver.c  the process that forks process workers
 *   result.c      apply, apply_async and result handles
 *   map.c, iter.c map and imap over batches (batch.c)
 *   job.c ring.c  the job and its states; the task ring
 *
 * Dependencies point one way: the API modules (result, map, iter) use
 * core; core uses the supervisor and the backend table; the supervisor
 * ends jobs through their hooks, never by calling the modules that made
 * them.
 *
 * Life of a pool (core.h's pool_life; who moves it):
 *
 *   mp_pool_new        started (supervisor)      close (user)
 *   ──────────► STARTING ─────────────► RUNNING ─────────────► CLOSED
 *                  │                       │ terminate (user,     │ terminate
 *                  │ start failed          │  server died)        ▼
 *                  └───────────────────────┴──────────────► TERMINATING
 *                                                                 │
 *               STOPPED ◄──── stopped (supervisor: every task     │
 *                  │          ended, workers gone, callbacks run) ◄┘ (and from CLOSED)
 *                  │ join (user)
 *                  ▼
 *               JOINED
 *
 * Each transition is one function of core.c or supervisor.c (pool_set_*),
 * under the pool's lock, broadcasting its condition. */
#ifndef MPROC_POOL_CORE_H
#define MPROC_POOL_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "mproc/pool.h"
#include "export_int.h"
#include "os/os.h"
#include "pool/job.h"
#include "pool/progress.h"
#include "pool/ring.h"

typedef enum {
    POOL_STARTING,
    POOL_RUNNING,
    POOL_CLOSED,
    POOL_TERMINATING,
    POOL_STOPPED,
    POOL_JOINED
} pool_life;

/* What workers share with the parent, per worker (one cache line). */
typedef struct {
    _Alignas(64) job_shm *_Atomic current; /* the job it runs (or took) */
    _Atomic uint64_t current_seq;          /* ... in this dispatch */
    job_shm *_Atomic done_head;            /* its ended jobs, for the supervisor */
    _Atomic uint32_t exited;               /* thread workers: it has returned */
    _Atomic uint32_t tasks;                /* tasks (map chunks) it has run */
    _Atomic uint64_t done;                 /* tasks and map items it finished */
    _Atomic uint64_t failed;               /* ... tasks of them that failed */
    _Atomic uint32_t busy;                 /* MPI sender: ranks with work out */
    mp__crash_rec crash;                   /* process workers: a fatal signal's */
} worker_slot;

/* The pool's control block in the shared heap. */
typedef struct {
    ring ring;
    _Alignas(64) _Atomic uint32_t sup_sleeping; /* the supervisor sleeps in epoll */
    _Atomic uint32_t want_refill;   /* jobs wait for room in the ring: a
                                       worker that makes room says so */
    _Atomic uint32_t terminating;   /* MPI: ranks stop their tasks */
    _Atomic uint32_t helper_waiters; /* owners waiting for their maps'
                                        helpers to end: every push wakes
                                        the supervisor (worker.c) */
    _Alignas(64) _Atomic uint32_t room_waiters; /* submitters waiting for
                                   room (max_queued): a claim wakes them */
    _Atomic uint32_t room_seq;      /* futex: bumped by such a claim */
    uint32_t watch_memory;          /* worker_memory is set: */
    _Atomic uint32_t memory_asleep; /*   the supervisor sleeps long (no
                                       worker was busy): the next task to
                                       start wakes it */
    int notify_fd;                  /* wakes the supervisor */
    uint32_t nworkers;
    uint32_t maxtasks;
    int64_t pool_timeout_ns;
    void (*initializer)(void *);
    void *initarg;
    size_t initarg_len;             /* MPI: initarg is our copy of it */
    worker_slot *workers;
} pool_shm;

/* Life of a worker slot (the supervisor's; see supervisor.c). */
typedef enum { WK_EMPTY, WK_QUEUED, WK_REQUESTED, WK_RUNNING } worker_life;
enum { KILL_NONE, KILL_DEADLINE, KILL_TERMINATE, KILL_RESTART, KILL_MEMORY };

/* The supervisor's record of a worker (private). */
typedef struct {
    worker_life life;
    pid_t pid;                  /* process workers */
    int pidfd;                  /* ... -1 when it could not be had */
    int ctl;                    /* ... our end of its control socket */
    bool exited;                /* ... its pidfd said so */
    bool have_status;           /* ... the fork server said how */
    int status;                 /* exit status, or -signal */
    int kill_reason;            /* KILL_* */
    uint64_t kill_seq;          /* the dispatch a deadline kill was for */
    uint64_t kill_item;         /* ... and the map item */
    uint64_t gen;               /* restart generation it was started in */
    uint32_t tasks_at_start;    /* its slot's task count when started */
    int64_t respawn_at;         /* when to start its replacement; 0: not */
    bool started;               /* a worker has been started in this slot */
    pthread_t th;               /* thread and MPI workers */
} worker_rec;

typedef struct pool_core pool_core;

/* A kind of worker (as sqlite3_vfs): process, thread, MPI. */
typedef struct pool_backend {
    const char *name;
    unsigned caps;              /* BACKEND_* */
    /* Before the pool starts: check and adjust the options (MPI: the
     * ranks).  0 or an error for mp_pool_new. */
    int (*prepare)(mp_pool_opts *o);
    /* On the supervisor thread, before the first worker / after the last. */
    int (*open)(pool_core *c);
    void (*close)(pool_core *c);
    /* Start worker w (its record is reset and WK_REQUESTED or WK_QUEUED). */
    int (*spawn)(pool_core *c, unsigned w);
    /* Kill worker w (BACKEND_KILL). */
    void (*kill)(pool_core *c, unsigned w);
    /* One of the backend's descriptors in the supervisor's poller. */
    void (*event)(pool_core *c, uint64_t tag);
    /* Release what worker w held once it ended (join a thread). */
    void (*reap)(pool_core *c, unsigned w);
    /* May a task name fn (MPI: functions travel by reference)? 0 or
     * MP_EFUNC. */
    int (*fn_check)(void (*fn)(void));
    /* The pool is gone (MPI: its slot is free again). */
    void (*release)(pool_core *c);
} pool_backend;

enum {
    BACKEND_KILL = 1,       /* workers can be killed: deadlines, terminate */
    BACKEND_SHARES = 2,     /* workers see the caller's memory (map in place) */
    BACKEND_FDS = 4,        /* tasks may carry descriptors */
    BACKEND_POLLED = 8,     /* workers end by setting their slot's `exited` */
    BACKEND_REMOTE = 16     /* workers elsewhere (MPI): one sender slot,
                               functions by reference, arguments as bytes */
};

/* Poller tags: the supervisor's own below TAG_BACKEND. */
#define TAG_NOTIFY 0
#define TAG_BACKEND 1

struct pool_core {
    pthread_mutex_t lock;       /* life, the ring's producer side, pending */
    pthread_cond_t cond;        /* life changes, restarts */
    _Atomic int refs;           /* the handle, results, iterators, batches */
    pool_shm *s;
    const pool_backend *be;
    void *be_state;             /* the backend's own (fork server...) */
    mp_pool_kind kind;
    unsigned nworkers;
    unsigned nslots;            /* worker records started (MPI: one sender) */
    unsigned cpus;              /* CPUs we may run on, when it started */
    pid_t owner;
    mp_pool *handle;            /* the user's (MPI's finalize terminates it) */
    job_table jobs;

    _Atomic int life;           /* pool_life: changed under the lock */
    int start_err;
    uint64_t tail;              /* (lock) ring producer position */
    size_t max_queued;          /* mp_pool_opts.max_queued (0: none) */
    uint64_t next_seq;          /* (lock) dispatch sequence */
    job *pend_head, *pend_tail; /* (lock) waiting for room in the ring */
    _Atomic bool pending;       /* the pending list is not empty */
    void *stage_cache;          /* (lock) a map's staging block, kept for the
                                   next: its pages stay mapped in workers */
    struct cancel_notice { uint32_t id; uint64_t seq; } *notices; /* (lock) */
    size_t nnotices, cap_notices; /* cancelled tasks whose error callbacks
                                     the supervisor is to run now */

    /* the supervisor's */
    pthread_t sup;
    int notify_fd, poller;
    worker_rec *w;
    unsigned live;              /* workers not WK_EMPTY */
    bool stopping;              /* told the workers to finish */
    bool terminated_workers;    /* terminate has been carried out */
    bool workers_lost;          /* no worker can be started any more */
    int64_t backoff_ns;         /* before replacing a worker that died early */
    _Atomic uint64_t restart_gen, restarted_gen;
    _Atomic pid_t *pids;        /* process workers running now (0: none) */
    size_t memory_limit;        /* mp_pool_opts.worker_memory (0: none) */
    int64_t memory_check_at;    /* when to read the workers' sizes next */
    bool memory_idle;           /* ... late, as no worker was busy */
    int64_t oom_kills;          /* the kernel's count when we last looked */

    /* counts for mp_pool_get_stats, besides the workers' own */
    _Atomic uint64_t died_done;     /* tasks and items whose worker died */
    _Atomic uint64_t died_failed;   /* ... tasks of them (items: below) */
    _Atomic uint64_t items_failed;  /* map items failed, however */
    _Atomic uint64_t restarts;      /* workers replaced */
    size_t npending;                /* (lock) jobs on the pending list */

    /* mp_pool_serve (serve.c) */
    struct {
        _Atomic int active;         /* a serve is under way */
        _Atomic uint32_t *stop;     /* stops asked for, ever (shared heap) */
        int stop_fd;                /* ... a notifier of them (with stop) */
        uint64_t done0, failed0;    /* the pool's counts when it began */
        mp_serve_stats stats;       /* (its thread) the workers' ends */
    } serve;

    /* progress of maps (progress.c) */
    progress_opts prog;
    pthread_mutex_t progress_lock;  /* the list, and reports */
    progress_rec *progress_head;    /* maps being reported */
};

/* ---- result.c ---- */
struct iovec;
/* mp_pool_apply_async, its argument gathered from iov[0..niov). */
int mp__pool_apply_v(mp_pool *p, mp_task_fn fn, const struct iovec *iov, unsigned niov,
                     const mp_task_opts *opts, mp_result **out);
/* The same, its argument of len bytes written in place by fill(dst,
 * fill_arg) (dst: the job's room in the shared heap). */
int mp__pool_apply_fill(mp_pool *p, mp_task_fn fn, size_t len,
                        void (*fill)(unsigned char *dst, void *arg), void *fill_arg,
                        const mp_task_opts *opts, mp_result **out);
/* A task's argument as submitted: the parent's own pointer to it and its
 * length (its bytes are in the shared heap: checked by whoever reads). */
MP_INTERNAL const void *mp__result_arg(mp_result *r, size_t *len);
/* The result a finished task published, failed or not (imap_items' pieces
 * publish theirs as they go): *res and *len, checked to lie in the job's
 * room or in one live heap block (else none).  0, -EAGAIN (not finished),
 * -EINVAL. */
MP_INTERNAL int mp__result_partial(mp_result *r, const void **res, size_t *len);

/* ---- stats.c ---- */
/* (supervisor) Worker w runs as process pid / has ended (pid 0). */
void mp__pool_set_pid(pool_core *c, unsigned w, pid_t pid);

/* ---- serve.c ---- */
/* What a pool that served keeps until it is destroyed. */
void mp__serve_release(pool_core *c);

/* ---- core.c ---- */
/* 0 and *c, -EINVAL (NULL) or -EPERM (another process). */
int mp__pool_check(mp_pool *p, pool_core **c);
bool mp__pool_accepting(pool_core *c);
bool mp__pool_terminated(pool_core *c);
void mp__pool_ref(pool_core *c);
void mp__pool_unref(pool_core *c);
/* Queue j for a new dispatch (lock held): the ring, or the pending list
 * when it is full. */
void mp__pool_dispatch(pool_core *c, job *j);
/* Jobs dispatched that no worker has taken yet, pending ones too (lock
 * held). */
size_t mp__pool_queued(pool_core *c);
/* Take the lock and dispatch. */
void mp__pool_dispatch_locked(pool_core *c, job *j);
/* Move pending jobs into the ring while there is room (supervisor). */
void mp__pool_refill(pool_core *c);
/* Wake the supervisor. */
void mp__pool_kick(pool_core *c);
/* A heap block of at least size bytes for staging (the kept one if big
 * enough), or NULL; give it back with mp__pool_stage_put. */
void *mp__pool_stage_get(pool_core *c, size_t size);
void mp__pool_stage_put(pool_core *c, void *block);
/* A task with callbacks was cancelled while queued: have the supervisor
 * run its error callback now (JOB_CANCEL_NOTICE). */
void mp__pool_report_cancel(pool_core *c, job *j);
/* Life transitions made by the supervisor (lock taken inside). */
void mp__pool_set_started(pool_core *c, int err);
void mp__pool_set_terminating(pool_core *c);
void mp__pool_set_stopped(pool_core *c);
/* True on the supervisor thread while it runs a callback of this pool. */
bool mp__pool_in_callback(pool_core *c);
void mp__pool_enter_callback(pool_core *c);
void mp__pool_leave_callback(void);

/* ---- supervisor.c ---- */
/* The supervisor thread's body. */
void *mp__sup_main(void *arg);
/* (backend, supervisor thread) Worker w has ended with status (exit
 * status, or -signal): recover its jobs, replace it. */
void mp__sup_worker_ended(pool_core *c, unsigned w);
/* (backend) A spawn request of w could not be made: try again later. */
void mp__sup_spawn_failed(pool_core *c, unsigned w);
/* Whether new workers may be started now. */
bool mp__sup_may_spawn(pool_core *c);

/* ---- backends ---- */
extern const pool_backend mp__backend_process;
extern const pool_backend mp__backend_thread;
/* MPI's, loaded from libmproc-mpi (backend_mpi.c): NULL and *err when it
 * cannot be had. */
const pool_backend *mp__backend_mpi(int *err);

/* Restart every worker of a process pool with new settings and wait until
 * the old ones are gone; a task they were running fails with MP_ECANCELED
 * (MPI worker ranks between pools and on terminate). */
MP_INTERNAL int mp__pool_restart(mp_pool *p, void (*init)(void *), void *initarg, unsigned maxtasks,
                     int64_t timeout_ns);

struct mp_pool {
    pool_core *c;
};

#endif
