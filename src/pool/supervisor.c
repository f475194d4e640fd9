/* The supervisor: one thread per pool that owns the workers and ends the
 * jobs that need the parent.
 *
 * It ends jobs only through their completion hooks (job.h): it takes the
 * ended jobs workers push on their done stacks, and the jobs a dead
 * worker held, and calls each job's hook once per dispatch.  It starts
 * workers through the pool's backend, replaces those that die (after a
 * growing delay when they die before their first task: a crashing
 * initializer must not fork in a loop), kills a worker whose task ran past
 * its deadline, carries out terminate, and says when the pool has
 * stopped.  It sleeps in epoll on the backend's descriptors and an eventfd
 * that workers and API calls write when it must wake.
 *
 * A plain task (no callbacks) never needs it: its worker stores the final
 * state and wakes the waiters itself.
 *
 * Life of a worker slot (worker_rec.life):
 *
 *   EMPTY ──spawn──► QUEUED ──request sent──► REQUESTED ──started──► RUNNING
 *     ▲   (process: waits for a place in      │ (thread: at once)      │
 *     │    the fork server's window)          │                        │ ended
 *     │          │ failed                     │ failed                 │ (pidfd and
 *     │          ▼                            ▼                        ▼  server, or
 *     └── respawn (at once, or at respawn_at) ◄── EMPTY ◄── recover   thread flag)
 *                                                          its jobs
 *
 * spawn/request/started live in the backends; spawn_failed and
 * worker_ended here.  A worker is only replaced while the pool may still
 * need it (mp__sup_may_spawn). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "os/os.h"
#include "pool/batch.h"
#include "pool/core.h"

#define BACKOFF_MIN_NS 10000000LL   /* first delay before replacing a worker */
#define BACKOFF_MAX_NS 1000000000LL /*   that died before its first task */
#define RETRY_NS 100000000LL        /* after a failed spawn */
#define IDLE_LOOK_NS 1000000000LL   /* deadlines of jobs between items */

/* ---- ending dispatches ---- */

/* A job's dispatch has ended (how): call its hook, once per dispatch. */
static void end_dispatch(pool_core *c, job *j, int how, const mp_task_info *died, unsigned w)
{
    uint64_t seq = atomic_load(&j->shm->seq);
    if (j->collected_seq == seq)
        return;
    j->collected_seq = seq;
    j->done(j, how, died, w);
}

static void collect_worker(pool_core *c, unsigned w)
{
    job_shm *list = atomic_exchange_explicit(&c->s->workers[w].done_head, NULL,
                                             memory_order_acquire);
    /* The links were written in shared memory: the walk goes on through
     * any link that points into the heap (reading there is safe), at most
     * as many steps as there are jobs (a scribbled link may make a cycle),
     * and ends only jobs that are ours (mp__job_of), each once. */
    job *mine = NULL; /* ours, oldest first once the walk is over */
    size_t steps = atomic_load(&c->jobs.njobs) + 1;
    for (; list && steps-- > 0; list = list->next_done) {
        if (((uintptr_t)list & 15) || !mp__heap_contains(list) ||
            !mp__heap_contains((const char *)list + sizeof *list - 1))
            break;
        job *j = mp__job_of(&c->jobs, list);
        if (j == NULL || j->walked)
            continue;
        j->walked = true;
        j->next_retired = mine;
        mine = j;
    }
    while (mine) {
        job *j = mine;
        mine = j->next_retired;
        j->walked = false;
        c->backoff_ns = 0; /* workers get work done: no start-up crash loop */
        end_dispatch(c, j, JOB_END_NORMAL, NULL, w);
    }
}

static void collect_done(pool_core *c)
{
    for (unsigned w = 0; w < c->nslots; w++)
        if (atomic_load_explicit(&c->s->workers[w].done_head, memory_order_relaxed))
            collect_worker(c, w);
}

static bool any_done(pool_core *c)
{
    for (unsigned w = 0; w < c->nslots; w++)
        if (atomic_load_explicit(&c->s->workers[w].done_head, memory_order_relaxed))
            return true;
    return false;
}

/* A job a dead worker had taken but not started goes back to the queue. */
static void requeue(pool_core *c, job *j)
{
    mp__pool_dispatch_locked(c, j);
}

/* A slot the dead worker had claimed (ring_recover). */
static void recover_slot(job_shm *s, void *arg)
{
    pool_core *c = arg;
    job *j = mp__job_of(&c->jobs, s);
    if (j == NULL)
        return;
    uint32_t st = job_state(s);
    if (st == JOB_QUEUED)
        requeue(c, j);
    else if (st == JOB_CANCELED_QUEUED)
        end_dispatch(c, j, JOB_END_NORMAL, NULL, 0); /* dropped */
}

/* Worker w is dead (fail: how it died): end or re-queue what it held. */
static void recover_worker(pool_core *c, unsigned w, const mp_task_info *fail)
{
    worker_slot *ws = &c->s->workers[w];
    collect_worker(c, w); /* what it pushed before dying ended normally */
    job_shm *s = atomic_load(&ws->current);
    uint64_t sq = atomic_load(&ws->current_seq);
    job *j = s ? mp__job_of(&c->jobs, s) : NULL;
    if (j && atomic_load(&s->seq) == sq && j->collected_seq != sq) {
        uint32_t st = job_state(s);
        /* The worker may have died after its dispatch was collected and
         * the job freed, or taken again for a new submission (whose
         * mp__job_get cleared collected_seq): then the state is not that
         * dispatch's.  A new dispatch changes seq before the state (see
         * mp__job_queue), so seq read again after the state tells. */
        bool same = atomic_load(&s->seq) == sq;
        bool orphan = atomic_load(&s->state) & JOB_ORPHAN;
        if (!same || st == JOB_FREE || (job_is_recyclable(st) && !orphan)) {
            /* that dispatch ended and its owner has it: nothing to do (an
             * orphan's end the worker did not live to push is ours) */
        } else if (st == JOB_RUNNING) {
            mp_task_info f = *fail;
            worker_rec *r = &c->w[w];
            uint64_t item = atomic_load(&s->cur);
            if (r->kill_reason == KILL_DEADLINE && r->kill_seq == sq &&
                (s->kind == JOB_APPLY || r->kill_item == item))
                f.code = MP_EDEADLINE;
            end_dispatch(c, j, JOB_END_DIED, &f, w);
        } else if (st == JOB_QUEUED) {
            requeue(c, j);
        } else {
            end_dispatch(c, j, JOB_END_NORMAL, NULL, w); /* ended, not pushed */
        }
    }
    atomic_store(&ws->current, NULL);
    mp__ring_recover(&c->s->ring, w, recover_slot, c);
}

/* Run the error callbacks of tasks cancelled while queued. */
static void cancel_notices(pool_core *c)
{
    pthread_mutex_lock(&c->lock);
    if (c->nnotices == 0) {
        pthread_mutex_unlock(&c->lock);
        return;
    }
    struct cancel_notice *list = c->notices;
    size_t n = c->nnotices;
    c->notices = NULL;
    c->nnotices = c->cap_notices = 0;
    pthread_mutex_unlock(&c->lock);
    for (size_t i = 0; i < n; i++) {
        job *j = mp__job_by_id(&c->jobs, list[i].id);
        if (j && atomic_load(&j->shm->seq) == list[i].seq &&
            job_state(j->shm) == JOB_CANCELED_QUEUED)
            j->done(j, JOB_CANCEL_NOTICE, NULL, 0);
    }
    free(list);
}

/* ---- workers ---- */

bool mp__sup_may_spawn(pool_core *c)
{
    if (c->workers_lost || c->life == POOL_TERMINATING || c->life == POOL_STOPPED ||
        c->life == POOL_JOINED)
        return false;
    /* Closed: only while queued work is left for a worker to take. */
    return !c->stopping || mp__ring_ready(&c->s->ring) || atomic_load(&c->pending);
}

static int spawn(pool_core *c, unsigned w)
{
    worker_rec *r = &c->w[w];
    bool again = r->started;
    memset(r, 0, sizeof *r);
    r->started = again;
    r->pidfd = r->ctl = -1;
    r->gen = atomic_load(&c->restart_gen);
    r->tasks_at_start = atomic_load(&c->s->workers[w].tasks);
    r->life = WK_REQUESTED;
    atomic_store(&c->s->workers[w].crash.pid, 0); /* (a report is its own) */
    c->live++;
    int rc = c->be->spawn(c, w);
    if (rc < 0) {
        mp__sup_spawn_failed(c, w);
        return rc;
    }
    if (again)
        atomic_fetch_add_explicit(&c->restarts, 1, memory_order_relaxed);
    r->started = true;
    return 0;
}

void mp__sup_spawn_failed(pool_core *c, unsigned w)
{
    worker_rec *r = &c->w[w];
    r->life = WK_EMPTY;
    c->live--;
    r->respawn_at = mp__now_ns() + RETRY_NS;
}

/* What worker w's fatal signal left: fault address and stack. */
static void crash_report(pool_core *c, unsigned w, mp_task_info *fail)
{
    mp__crash_rec *cr = &c->s->workers[w].crash;
    /* (Written by that worker, whole: its pid is stored last.) */
    if (c->w[w].pid <= 0 || atomic_load_explicit(&cr->pid, memory_order_acquire) != c->w[w].pid ||
        cr->signo != fail->signo)
        return;
    fail->fault_addr = cr->addr;
    mp__crash_describe(cr, fail->crash, sizeof fail->crash);
}

/* Was a worker's SIGKILL the kernel's OOM killer?  As far as the kernel
 * tells: its count of OOM kills moved since we last looked. */
static bool oom_killed(pool_core *c)
{
    int64_t n = mp__oom_kills();
    if (n < 0)
        return false;
    bool moved = n > c->oom_kills;
    c->oom_kills = n;
    return moved;
}

void mp__sup_worker_ended(pool_core *c, unsigned w)
{
    worker_rec *r = &c->w[w];
    worker_slot *ws = &c->s->workers[w];
    /* Died on its own before taking any task: its start-up (the
     * initializer) is failing.  Replacing it at once would fork in a loop;
     * wait, longer each time, until some task gets done. */
    bool early = (c->be->caps & BACKEND_KILL) && r->kill_reason == KILL_NONE &&
                 atomic_load(&ws->current) == NULL &&
                 atomic_load(&ws->tasks) == r->tasks_at_start;
    int st = r->status;
    mp_task_info fail = {.code = MP_EWORKER, .signo = st < 0 ? -st : 0,
                         .exit_status = st >= 0 ? st : 0};
    if (c->life == POOL_TERMINATING || r->kill_reason == KILL_RESTART ||
        r->kill_reason == KILL_TERMINATE)
        fail.code = MP_ECANCELED;
    else if (r->kill_reason == KILL_MEMORY || (st == -SIGKILL && r->kill_reason == KILL_NONE &&
                                               oom_killed(c)))
        fail.code = MP_EMEMORY;
    else if (st < 0)
        crash_report(c, w, &fail);
    mp__pool_set_pid(c, w, 0);
    recover_worker(c, w, &fail);
    /* It may have been the one woken, or the one spinning: either flag
     * left set would keep the others from being woken. */
    atomic_store(&c->s->ring.waking, 0);
    atomic_store(&c->s->ring.spinners, 0);
    if (c->be->reap)
        c->be->reap(c, w);
    r->life = WK_EMPTY;
    c->live--;
    r->respawn_at = 0;
    if (early) {
        c->backoff_ns = c->backoff_ns ? c->backoff_ns * 2 : BACKOFF_MIN_NS;
        if (c->backoff_ns > BACKOFF_MAX_NS)
            c->backoff_ns = BACKOFF_MAX_NS;
        r->respawn_at = mp__now_ns() + c->backoff_ns;
    }
}

/* Start the workers that are missing and due; return when the next is. */
static int64_t respawn_due(pool_core *c)
{
    int64_t next = MP__NO_DEADLINE, now = mp__now_ns();
    if (!mp__sup_may_spawn(c))
        return next;
    for (unsigned w = 0; w < c->nslots; w++) {
        worker_rec *r = &c->w[w];
        if (r->life != WK_EMPTY)
            continue;
        if (r->respawn_at <= now) {
            spawn(c, w);
            if (!mp__sup_may_spawn(c))
                break;
        }
        if (r->life == WK_EMPTY && r->respawn_at < next)
            next = r->respawn_at;
    }
    return next;
}

/* Thread and MPI workers say they ended through their slot's flag. */
static void poll_exits(pool_core *c)
{
    for (unsigned w = 0; w < c->nslots; w++)
        if (c->w[w].life == WK_RUNNING && atomic_load(&c->s->workers[w].exited))
            mp__sup_worker_ended(c, w);
}

static void kill_worker(pool_core *c, unsigned w, int reason)
{
    worker_rec *r = &c->w[w];
    if (r->life != WK_RUNNING || r->kill_reason != KILL_NONE || !(c->be->caps & BACKEND_KILL))
        return;
    r->kill_reason = reason;
    c->be->kill(c, w);
}

/* Kill workers whose task or map item ran past its deadline; return the
 * next deadline. */
static int64_t check_deadlines(pool_core *c)
{
    int64_t next = MP__NO_DEADLINE, now = mp__now_ns();
    if (!(c->be->caps & BACKEND_KILL))
        return next;
    for (unsigned w = 0; w < c->nslots; w++) {
        worker_rec *r = &c->w[w];
        if (r->life != WK_RUNNING || r->kill_reason != KILL_NONE)
            continue;
        worker_slot *ws = &c->s->workers[w];
        job_shm *s = atomic_load(&ws->current);
        uint64_t sq = atomic_load(&ws->current_seq);
        if (s == NULL || mp__job_of(&c->jobs, s) == NULL || atomic_load(&s->seq) != sq ||
            s->timeout_ns <= 0 || job_state(s) != JOB_RUNNING)
            continue;
        uint64_t item = atomic_load(&s->cur);
        if (item == BATCH_NO_ITEM) {
            /* Between items (a map helper's, a server's connections): look
             * again within a time limit, at most a second, since the next
             * item's start does not wake us. */
            int64_t look = s->timeout_ns < IDLE_LOOK_NS ? s->timeout_ns : IDLE_LOOK_NS;
            if (now + look < next)
                next = now + look;
            continue;
        }
        int64_t dl = atomic_load(&s->item_start) + s->timeout_ns;
        if (now >= dl) {
            r->kill_seq = sq;
            r->kill_item = item;
            kill_worker(c, w, KILL_DEADLINE);
        } else if (dl < next) {
            next = dl;
        }
    }
    return next;
}

/* ---- memory limits ---- */

#define MEMORY_BUSY_NS 20000000LL  /* how often a busy worker's size is read */
#define MEMORY_IDLE_NS 500000000LL /* ... an idle one's (a task start wakes us) */

/* Kill workers over the pool's memory limit (their task fails with
 * MP_EMEMORY); return when to look next. */
static int64_t check_memory(pool_core *c)
{
    if (c->memory_limit == 0)
        return MP__NO_DEADLINE;
    int64_t now = mp__now_ns();
    bool woken = c->memory_idle && !atomic_load(&c->s->memory_asleep); /* a task began */
    if (now < c->memory_check_at && !woken)
        return c->memory_check_at;
    bool busy = false;
    for (unsigned w = 0; w < c->nslots; w++) {
        worker_rec *r = &c->w[w];
        if (r->life != WK_RUNNING || r->pid <= 0 || r->kill_reason != KILL_NONE)
            continue;
        busy |= atomic_load(&c->s->workers[w].current) != NULL;
        int64_t size = mp__proc_private_bytes(r->pid);
        if (size > (int64_t)c->memory_limit)
            kill_worker(c, w, KILL_MEMORY);
    }
    if (!busy) {
        /* Sleep long; a worker that starts a task wakes us (worker.c). */
        atomic_store(&c->s->memory_asleep, 1);
        atomic_thread_fence(memory_order_seq_cst);
        for (unsigned w = 0; w < c->nslots && !busy; w++)
            busy = c->w[w].life == WK_RUNNING && atomic_load(&c->s->workers[w].current);
        if (busy)
            atomic_store(&c->s->memory_asleep, 0);
    } else {
        atomic_store(&c->s->memory_asleep, 0);
    }
    c->memory_idle = !busy;
    c->memory_check_at = now + (busy ? MEMORY_BUSY_NS : MEMORY_IDLE_NS);
    return c->memory_check_at;
}

/* ---- terminate and the end ---- */

static void cancel_queued(job *j, void *arg)
{
    (void)arg;
    job_shm *s = j->shm;
    uint32_t st = job_state(s);
    if (st == JOB_QUEUED)
        mp__job_cancel(s);
    if (j->bs && (st == JOB_QUEUED || st == JOB_RUNNING))
        atomic_store(&j->bs->stop, 1); /* a map in progress stops */
}

static void terminate_workers(pool_core *c)
{
    c->terminated_workers = true;
    atomic_store(&c->s->terminating, 1);
    atomic_store(&c->s->ring.stopping, 1);
    /* Tasks not started are cancelled first, so that thread workers (which
     * cannot be killed) only finish what they run. */
    mp__jobs_each(&c->jobs, cancel_queued, NULL);
    mp__ring_wake_all(&c->s->ring);
    for (unsigned w = 0; w < c->nslots; w++)
        kill_worker(c, w, KILL_TERMINATE);
}

/* Everything still owed an end after the workers are gone is cancelled. */
static void cancel_left(job *j, void *arg)
{
    pool_core *c = arg;
    uint32_t st = job_state(j->shm);
    if (st == JOB_FREE || job_is_recyclable(st) || j->collected_seq == atomic_load(&j->shm->seq))
        return;
    end_dispatch(c, j, JOB_END_CANCELED, NULL, 0);
}

static void cancel_all(pool_core *c)
{
    pthread_mutex_lock(&c->lock);
    c->pend_head = c->pend_tail = NULL; /* nothing will run */
    c->npending = 0;
    atomic_store(&c->pending, false);
    pthread_mutex_unlock(&c->lock);
    mp__jobs_each(&c->jobs, cancel_left, c);
}

/* ---- restarts (MPI worker ranks) ---- */

/* mp__pool_restart asked for new workers: kill those of older generations
 * (those still being started are killed once they report) and say when
 * none is left. */
static void restart_progress(pool_core *c)
{
    uint64_t gen = atomic_load(&c->restart_gen);
    if (atomic_load(&c->restarted_gen) == gen)
        return;
    bool old = false;
    for (unsigned w = 0; w < c->nslots; w++) {
        worker_rec *r = &c->w[w];
        if (r->life == WK_EMPTY || r->gen >= gen)
            continue;
        old = true;
        kill_worker(c, w, KILL_RESTART);
    }
    if (!old || c->stopping) {
        pthread_mutex_lock(&c->lock);
        atomic_store(&c->restarted_gen, gen);
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
    }
}

/* ---- the loop ---- */

void *mp__sup_main(void *arg)
{
    pool_core *c = arg;
    pool_shm *s = c->s;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);

    int rc = c->be->open ? c->be->open(c) : 0;
    for (unsigned w = 0; w < c->nslots && rc == 0; w++)
        rc = spawn(c, w);
    mp__pool_set_started(c, rc);

    for (;;) {
        cancel_notices(c);
        collect_done(c);
        mp__jobs_trim(&c->jobs);
        mp__pool_refill(c);
        pthread_mutex_lock(&c->lock);
        pool_life life = c->life;
        bool pending = c->pend_head != NULL;
        pthread_mutex_unlock(&c->lock);
        if (life == POOL_TERMINATING && !c->terminated_workers)
            terminate_workers(c);
        if (!c->stopping && (life == POOL_TERMINATING || (life == POOL_CLOSED && !pending))) {
            c->stopping = true;
            atomic_store(&s->ring.stopping, 1);
            mp__ring_wake_all(&s->ring);
        }
        restart_progress(c);
        if (c->be->caps & BACKEND_POLLED)
            poll_exits(c);
        int64_t deadline = respawn_due(c);
        if (c->stopping && c->live == 0 && !mp__sup_may_spawn(c)) {
            collect_done(c);
            if (!mp__ring_ready(&s->ring) || life == POOL_TERMINATING || c->workers_lost)
                break;
        }
        /* Say we sleep before looking: a worker that starts a timed task
         * after our look sees the flag and wakes us (and one that started
         * before it is seen by check_deadlines). */
        atomic_store(&s->sup_sleeping, 1);
        int64_t dl = check_deadlines(c);
        if (dl < deadline)
            deadline = dl;
        dl = mp__progress_tick(c);
        if (dl < deadline)
            deadline = dl;
        dl = check_memory(c);
        if (dl < deadline)
            deadline = dl;
        uint64_t tags[16];
        int n = 0;
        if (!any_done(c))
            n = mp__poller_wait(c->poller, tags, 16, deadline);
        atomic_store(&s->sup_sleeping, 0);
        for (int i = 0; i < n; i++) {
            if (tags[i] == TAG_NOTIFY)
                mp__notifier_drain(c->notify_fd);
            else if (c->be->event)
                c->be->event(c, tags[i]);
        }
    }
    collect_done(c);
    cancel_all(c);
    mp__jobs_trim(&c->jobs);
    if (c->be->close)
        c->be->close(c);
    mp__pool_set_stopped(c);
    return NULL;
}
