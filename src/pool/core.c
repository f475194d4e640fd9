/* The pool's life (core.h's diagram) and dispatch.
 *
 * Dispatch is the ring's producer side: one submitter at a time, under
 * the pool's lock, puts a job in the ring, or in the pending list while
 * the ring is full (the supervisor moves pending jobs in as workers free
 * slots; the first worker to claim a slot after the list filled up wakes
 * it). */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "mproc/process.h"
#include "os/os.h"
#include "pool/core.h"
#include "wait_int.h"

#define RING_SIZE 16384

static _Thread_local pool_core *in_callback_of;

bool mp__pool_in_callback(pool_core *c) { return in_callback_of == c; }
void mp__pool_enter_callback(pool_core *c) { in_callback_of = c; }
void mp__pool_leave_callback(void) { in_callback_of = NULL; }

int mp__pool_check(mp_pool *p, pool_core **c)
{
    if (p == NULL)
        return -EINVAL;
    if (p->c->owner != mp__getpid())
        return -EPERM;
    *c = p->c;
    return 0;
}

bool mp__pool_accepting(pool_core *c)
{
    return atomic_load_explicit((_Atomic int *)&c->life, memory_order_acquire) == POOL_RUNNING;
}

bool mp__pool_terminated(pool_core *c)
{
    int life = atomic_load((_Atomic int *)&c->life);
    return life == POOL_TERMINATING || (life >= POOL_STOPPED && c->terminated_workers);
}

void mp__pool_kick(pool_core *c) { mp__notify(c->notify_fd); }

/* ---- life ---- */

static void set_life(pool_core *c, pool_life life)
{
    atomic_store((_Atomic int *)&c->life, (int)life);
    pthread_cond_broadcast(&c->cond);
    if (c->s) { /* submitters waiting for room: closed now */
        atomic_fetch_add(&c->s->room_seq, 1);
        mp__wake_word(&c->s->room_seq, &c->s->room_waiters);
    }
}

void mp__pool_set_started(pool_core *c, int err)
{
    pthread_mutex_lock(&c->lock);
    c->start_err = err;
    set_life(c, err < 0 ? POOL_TERMINATING : POOL_RUNNING);
    pthread_mutex_unlock(&c->lock);
}

void mp__pool_set_terminating(pool_core *c)
{
    pthread_mutex_lock(&c->lock);
    if (c->life == POOL_RUNNING || c->life == POOL_CLOSED)
        set_life(c, POOL_TERMINATING);
    pthread_mutex_unlock(&c->lock);
}

void mp__pool_set_stopped(pool_core *c)
{
    pthread_mutex_lock(&c->lock);
    set_life(c, POOL_STOPPED);
    pthread_mutex_unlock(&c->lock);
}

/* ---- references ---- */

void mp__pool_ref(pool_core *c) { atomic_fetch_add(&c->refs, 1); }

void mp__pool_unref(pool_core *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    mp__jobs_destroy(&c->jobs);
    if (c->stage_cache)
        mp__heap_free(c->stage_cache);
    if (c->s) {
        if (c->s->initarg_len)
            mp__heap_free(c->s->initarg);
        mp__ring_destroy(&c->s->ring);
        if (c->s->workers)
            mp__heap_free(c->s->workers);
        mp__heap_free(c->s);
    }
    mp__serve_release(c);
    if (c->notify_fd >= 0)
        close(c->notify_fd);
    if (c->poller >= 0)
        close(c->poller);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->progress_lock);
    pthread_cond_destroy(&c->cond);
    free(c->w);
    free((void *)c->pids);
    free(c->notices);
    free(c);
}

void *mp__pool_stage_get(pool_core *c, size_t size)
{
    pthread_mutex_lock(&c->lock);
    void *b = c->stage_cache;
    if (b && mp__heap_block_size(b) >= size)
        c->stage_cache = NULL;
    else
        b = NULL;
    pthread_mutex_unlock(&c->lock);
    /* A fresh block costs a page fault per page in each process that
     * touches it (2.5 us a page): reuse pays. */
    return b ? b : mp__heap_alloc(size, NULL);
}

void mp__pool_stage_put(pool_core *c, void *block)
{
    pthread_mutex_lock(&c->lock);
    if (c->stage_cache && mp__heap_block_size(c->stage_cache) >= mp__heap_block_size(block)) {
        pthread_mutex_unlock(&c->lock);
        mp__heap_free(block);
        return;
    }
    void *old = c->stage_cache;
    c->stage_cache = block;
    pthread_mutex_unlock(&c->lock);
    if (old)
        mp__heap_free(old);
}

void mp__pool_report_cancel(pool_core *c, job *j)
{
    /* By id and dispatch, not by pointer: the job may be recycled before
     * the supervisor looks (it then finds another dispatch, and skips). */
    pthread_mutex_lock(&c->lock);
    if (c->nnotices == c->cap_notices) {
        size_t cap = c->cap_notices ? c->cap_notices * 2 : 16;
        struct cancel_notice *n = realloc(c->notices, cap * sizeof *n);
        if (n == NULL) {
            pthread_mutex_unlock(&c->lock);
            return; /* it is reported when a worker drops it instead */
        }
        c->notices = n;
        c->cap_notices = cap;
    }
    c->notices[c->nnotices++] = (struct cancel_notice){j->shm->id, atomic_load(&j->shm->seq)};
    pthread_mutex_unlock(&c->lock);
    mp__pool_kick(c);
}

/* ---- dispatch ---- */

/* Move pending jobs into the ring while it has room (lock held).  When
 * some must still wait, ask the workers to say when room is made
 * (want_refill), then look once more: a worker that emptied the ring
 * before the flag was visible has seen the flag or left the slot free for
 * this look (the argument is at ask_refill, worker.c). */
static void push_pending(pool_core *c)
{
    for (;;) {
        while (c->pend_head) {
            /* Once pushed, the job may run, end, and be freed and reused
             * (its links too) before we look again: read and write it
             * before the push only. */
            job *j = c->pend_head, *next = j->next;
            j->ring_pos = c->tail;
            j->pending = false;
            if (!mp__ring_push(&c->s->ring, &c->tail, j->shm)) {
                j->pending = true;
                break;
            }
            c->pend_head = next;
            if (next == NULL)
                c->pend_tail = NULL;
            c->npending--;
        }
        if (c->pend_head == NULL) {
            atomic_store(&c->pending, false);
            return;
        }
        atomic_store(&c->s->want_refill, 1);
        atomic_thread_fence(memory_order_seq_cst);
        if (!mp__ring_has_room(&c->s->ring, c->tail))
            return;
    }
}

void mp__pool_dispatch(pool_core *c, job *j)
{
    mp__job_queue(j->shm, ++c->next_seq);
    j->ring_pos = c->tail;
    if (c->pend_head == NULL && mp__ring_push(&c->s->ring, &c->tail, j->shm))
        return;
    j->pending = true;
    j->next = NULL;
    if (c->pend_tail)
        c->pend_tail->next = j;
    else
        c->pend_head = j;
    c->pend_tail = j;
    c->npending++;
    atomic_store(&c->pending, true);
    push_pending(c);
}

size_t mp__pool_queued(pool_core *c)
{
    uint64_t head = atomic_load(&c->s->ring.head);
    return (c->tail > head ? (size_t)(c->tail - head) : 0) + c->npending;
}

void mp__pool_dispatch_locked(pool_core *c, job *j)
{
    pthread_mutex_lock(&c->lock);
    mp__pool_dispatch(c, j);
    pthread_mutex_unlock(&c->lock);
}

void mp__pool_refill(pool_core *c)
{
    if (!atomic_load(&c->pending))
        return;
    pthread_mutex_lock(&c->lock);
    push_pending(c);
    pthread_mutex_unlock(&c->lock);
}

/* ---- the pool ---- */

static int64_t seconds_to_ns(double t)
{
    if (t <= 0)
        return 0;
    if (t > 1e9)
        t = 1e9;
    int64_t ns = (int64_t)(t * 1e9);
    return ns > 0 ? ns : 1;
}

/* The backend for the options (MPI may fall back to processes). */
static int pick_backend(mp_pool_opts *o, const pool_backend **be)
{
    int rc;
    switch (o->kind) {
    case MP_POOL_PROCESS:
        *be = &mp__backend_process;
        break;
    case MP_POOL_THREAD:
        *be = &mp__backend_thread;
        break;
    case MP_POOL_MPI:
        *be = mp__backend_mpi(&rc);
        if (*be == NULL) {
            if (rc != MP_ENOMPI || !(o->flags & MP_POOL_FALLBACK))
                return rc;
            o->kind = MP_POOL_PROCESS;
            *be = &mp__backend_process;
        }
        break;
    default:
        return -EINVAL;
    }
    rc = (*be)->prepare ? (*be)->prepare(o) : 0;
    if (rc == MP_ENOMPI && o->kind == MP_POOL_MPI && (o->flags & MP_POOL_FALLBACK)) {
        o->kind = MP_POOL_PROCESS; /* not under mpirun: a process pool instead */
        *be = &mp__backend_process;
        rc = (*be)->prepare(o);
    }
    return rc;
}

static int core_new(pool_core **out, const mp_pool_opts *o, const pool_backend *be)
{
    pool_core *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -ENOMEM;
    int rc = mp__jobs_init(&c->jobs);
    if (rc < 0) {
        free(c);
        return rc;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->progress_lock, NULL);
    c->max_queued = o->max_queued;
    c->memory_limit = o->worker_memory;
    c->oom_kills = mp__oom_kills();
    c->prog.fn = o->progress;
    c->prog.ud = o->progress_ud;
    const char *env = getenv("MPROC_PROGRESS");
    c->prog.bar = (o->flags & MP_POOL_PROGRESS_BAR) || (env && strcmp(env, "1") == 0);
    c->prog.tty = c->prog.bar && isatty(STDERR_FILENO);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&c->refs, 1);
    c->be = be;
    c->kind = o->kind;
    c->nworkers = o->workers;
    c->nslots = (be->caps & BACKEND_REMOTE) ? 1 : o->workers;
    unsigned cpus = (unsigned)mp_cpu_count();
    c->cpus = cpus;
    c->owner = mp__getpid();
    c->life = POOL_STARTING;
    c->notify_fd = c->poller = -1;
    *out = c;
    c->w = calloc(c->nslots, sizeof *c->w);
    c->pids = calloc(c->nslots, sizeof *c->pids);
    c->s = mp__heap_calloc(sizeof *c->s, &rc);
    if (c->w == NULL || c->pids == NULL || c->s == NULL)
        return rc ? rc : -ENOMEM;
    pool_shm *s = c->s;
    s->nworkers = o->workers;
    s->maxtasks = o->maxtasksperchild;
    s->pool_timeout_ns = seconds_to_ns(o->task_timeout);
    s->watch_memory = o->worker_memory != 0;
    s->initializer = o->initializer;
    s->initarg = o->initarg;
    if ((be->caps & BACKEND_REMOTE) && o->initarg_len) {
        /* Sent as bytes: our copy, the caller may free theirs. */
        s->initarg = mp__heap_alloc(o->initarg_len, &rc);
        if (s->initarg == NULL)
            return rc ? rc : -ENOMEM;
        memcpy(s->initarg, o->initarg, o->initarg_len);
        s->initarg_len = o->initarg_len;
    }
    s->workers = mp__heap_calloc(c->nslots * sizeof *s->workers, &rc);
    if (s->workers == NULL)
        return rc ? rc : -ENOMEM;
    if ((rc = mp__ring_init(&s->ring, RING_SIZE, cpus < o->workers ? cpus : o->workers)) < 0)
        return rc;
    if ((rc = c->notify_fd = mp__notifier_new()) < 0)
        return rc;
    s->notify_fd = c->notify_fd;
    if ((rc = c->poller = mp__poller_new()) < 0)
        return rc;
    return mp__poller_add(c->poller, c->notify_fd, TAG_NOTIFY);
}

int mp_pool_new(mp_pool **out, const mp_pool_opts *opts)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    mp_pool_opts o = {0};
    if (opts)
        o = *opts;
    if (isnan(o.task_timeout) || (o.flags & ~(MP_POOL_FALLBACK | MP_POOL_PROGRESS_BAR)))
        return -EINVAL;
    const pool_backend *be;
    int rc = pick_backend(&o, &be);
    if (rc < 0)
        return rc;
    if (o.workers == 0)
        o.workers = (unsigned)mp_cpu_count();
    if (o.workers > RING_MAX_WORKERS)
        return -EINVAL;
    /* A memory limit kills workers: process pools only. */
    if (o.worker_memory && (!(be->caps & BACKEND_KILL) || (be->caps & BACKEND_REMOTE)))
        return -EINVAL;
    if ((rc = mp__heap_ensure()) < 0)
        return rc;
    pool_core *c = NULL;
    mp_pool *p = malloc(sizeof *p);
    if (p == NULL)
        return -ENOMEM;
    rc = core_new(&c, &o, be);
    if (rc == 0) {
        p->c = c;
        c->handle = p;
        rc = -pthread_create(&c->sup, NULL, mp__sup_main, c);
    }
    if (rc < 0) {
        if (c)
            mp__pool_unref(c);
        free(p);
        return rc;
    }
    pthread_mutex_lock(&c->lock);
    while (c->life == POOL_STARTING)
        pthread_cond_wait(&c->cond, &c->lock);
    rc = c->start_err;
    pthread_mutex_unlock(&c->lock);
    if (rc < 0) {
        pthread_join(c->sup, NULL);
        mp__pool_unref(c);
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* close (terminate false) or terminate. */
static int stop_accepting(mp_pool *p, bool terminate)
{
    pool_core *c;
    int rc = mp__pool_check(p, &c);
    if (rc < 0)
        return rc;
    if (mp__pool_in_callback(c))
        return -EDEADLK;
    pthread_mutex_lock(&c->lock);
    if (c->life == POOL_RUNNING)
        set_life(c, terminate ? POOL_TERMINATING : POOL_CLOSED);
    else if (terminate && c->life == POOL_CLOSED)
        set_life(c, POOL_TERMINATING);
    pthread_mutex_unlock(&c->lock);
    mp__pool_kick(c);
    return 0;
}

int mp_pool_close(mp_pool *p) { return stop_accepting(p, false); }

int mp_pool_terminate(mp_pool *p) { return stop_accepting(p, true); }

int mp_pool_join(mp_pool *p, double timeout)
{
    pool_core *c;
    int rc = mp__pool_check(p, &c);
    if (rc < 0)
        return rc;
    int64_t deadline;
    if ((rc = mp__deadline(timeout, &deadline)) < 0)
        return rc;
    if (mp__pool_in_callback(c))
        return -EDEADLK;
    pthread_mutex_lock(&c->lock);
    if (c->life == POOL_RUNNING) {
        pthread_mutex_unlock(&c->lock);
        return -EBUSY;
    }
    while (c->life < POOL_STOPPED && rc == 0) {
        if (deadline == MP__NO_DEADLINE) {
            pthread_cond_wait(&c->cond, &c->lock);
        } else {
            struct timespec ts = {deadline / 1000000000, deadline % 1000000000};
            if (pthread_cond_timedwait(&c->cond, &c->lock, &ts) == ETIMEDOUT &&
                c->life < POOL_STOPPED)
                rc = MP_ETIMEDOUT;
        }
    }
    bool join_thread = c->life == POOL_STOPPED;
    if (join_thread)
        set_life(c, POOL_JOINED);
    pthread_mutex_unlock(&c->lock);
    if (join_thread)
        pthread_join(c->sup, NULL);
    return rc;
}

void mp_pool_free(mp_pool *p)
{
    pool_core *c;
    if (mp__pool_check(p, &c) < 0 || mp__pool_in_callback(c))
        return;
    mp_pool_terminate(p);
    mp_pool_join(p, MP_FOREVER);
    free(p);
    mp__pool_unref(c);
}

/* ---- restart (MPI worker ranks) ---- */

int mp__pool_restart(mp_pool *p, void (*init)(void *), void *initarg, unsigned maxtasks,
                     int64_t timeout_ns)
{
    pool_core *c;
    int rc = mp__pool_check(p, &c);
    if (rc < 0)
        return rc;
    if (c->be != &mp__backend_process)
        return -EINVAL;
    pthread_mutex_lock(&c->lock);
    pool_shm *s = c->s;
    s->initializer = init;
    s->initarg = initarg;
    s->maxtasks = maxtasks;
    s->pool_timeout_ns = timeout_ns;
    uint64_t gen = atomic_fetch_add(&c->restart_gen, 1) + 1;
    mp__pool_kick(c);
    while (atomic_load(&c->restarted_gen) < gen && c->life < POOL_STOPPED)
        pthread_cond_wait(&c->cond, &c->lock);
    rc = atomic_load(&c->restarted_gen) >= gen ? 0 : MP_ECLOSED;
    pthread_mutex_unlock(&c->lock);
    return rc;
}
