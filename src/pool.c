/* Pools: submission, results, and the collector thread (the parent side).
 *
 * The collector is the only thread that ends jobs for the pool: it takes
 * finished jobs from the done stack, runs callbacks, re-queues the rest of
 * map chunks, and it owns the workers: it forks the fork server (so the
 * server, and through it every worker, dies with the pool), asks it for
 * workers, watches their pidfds, kills a worker whose task ran past its
 * deadline, and after a death fails the task the worker held and asks for
 * a replacement.  It sleeps in epoll on the pidfds, the server's socket and
 * an eventfd that workers (and API calls) write when it must wake.
 *
 * Waiting for one result does not involve the collector: the worker stores
 * the job's final state and wakes its waiters itself. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "mproc/process.h"
#include "os/fnref.h"
#include "os/io.h"
#include "os/os.h"
#include "pool_int.h"

#define RING_SIZE 4096
#define JOB_CACHE_MAX 16384
#define KEEP_MAX ((size_t)64 << 20) /* bytes of job blocks kept in the cache */
#define SPIN_NS 30000
#define SLICE_NS 100000000LL
#define BACKOFF_MIN_NS 10000000LL   /* first delay before replacing a worker */
#define BACKOFF_MAX_NS 1000000000LL /*   that died before its first task */
#define SPAWN_WINDOW 16  /* spawn requests out to the fork server at once: its
                            answers always fit in the socket, so neither
                            side can block writing to the other */

enum { TAG_NOTIFY = 0, TAG_SERVER = 1, TAG_PIDFD = 2 };
#define TAG_CTL ((uint64_t)1 << 32) /* + worker: its control socket */
enum { KILL_NONE, KILL_DEADLINE, KILL_TERMINATE, KILL_RESTART };

typedef struct {
    pid_t pid;
    int pidfd;
    int ctl;          /* our end of its control socket (process workers) */
    bool requested;   /* asked of the server (or queued to be), not yet ended */
    bool queued;      /* in the spawn queue */
    bool running;     /* spawned (process) / started (thread) */
    bool exited;      /* its pidfd said so */
    bool have_status;
    int status;       /* exit status, or -signal */
    int kill_reason;
    uint64_t kill_seq;
    uint32_t kill_item;
    uint64_t gen;       /* restart generation it was spawned in */
    uint32_t tasks_at_spawn; /* its slot's task count when it was started */
    int64_t respawn_at; /* when to start its replacement; 0: not waiting */
    pthread_t th;
} worker_rec;

struct pool_core {
    pthread_mutex_t lock;
    pthread_cond_t cond;        /* joiners and mp_pool_new wait here */
    _Atomic int refs;           /* the pool handle, results, iterators */
    pool_shm *s;
    mp_pool_kind kind;
    unsigned nworkers;
    pid_t owner;

    uint64_t tail;              /* ring producer position */
    uint64_t next_seq;
    job *pend_head, *pend_tail;
    job *inflight;              /* dispatched, not yet retired */
    size_t ninflight;
    job *retired;               /* (collector) retired, lock not yet taken */
    pthread_mutex_t cache_lock; /* the cache of free jobs */
    job *cache;
    size_t ncache;
    size_t kept;                /* bytes of heap blocks cached jobs hold */

    _Atomic bool closed, terminated;
    bool stopping, finished, started, joined, server_dead;
    int start_err;

    pthread_t collector;
    int notify_fd, poller, srv_sock, srv_pidfd;
    pid_t srv_pid;
    worker_rec *w;
    unsigned live;              /* workers requested or running */
    unsigned *spawnq;           /* (collector) slots waiting to be asked for */
    unsigned spawnq_head, spawnq_len;
    unsigned spawn_out;         /* asked of the server, not yet answered */
    _Atomic uint64_t restart_gen, restarted_gen; /* mp__pool_restart */
    int64_t backoff_ns;         /* (collector) delay before replacing a worker
                                   that died before its first task */
};

struct mp_pool {
    pool_core *c;
};

static _Thread_local pool_core *in_callback_of;

/* ---- small helpers ---- */

void mp__pool_lock(pool_core *c) { pthread_mutex_lock(&c->lock); }
void mp__pool_unlock(pool_core *c) { pthread_mutex_unlock(&c->lock); }
bool mp__pool_accepting(pool_core *c) { return !c->closed && !c->terminated; }
bool mp__pool_terminated(pool_core *c) { return c->terminated; }
unsigned mp__pool_nworkers(pool_core *c) { return c->nworkers; }
int64_t mp__pool_timeout_ns(pool_core *c) { return c->s->pool_timeout_ns; }

static void kick(pool_core *c) { mp__notify(c->notify_fd); }

static int64_t seconds_to_ns(double t)
{
    if (t <= 0)
        return 0;
    if (t > 1e9)
        t = 1e9;
    int64_t ns = (int64_t)(t * 1e9);
    return ns > 0 ? ns : 1;
}

static bool spin_ok(void)
{
    static _Thread_local int cached; /* 0 unknown, 1 yes, 2 no */
    if (cached == 0)
        cached = mp__can_run_in_parallel() ? 1 : 2;
    return cached == 1;
}

int mp__pool_wait_word(_Atomic uint32_t *word, _Atomic uint32_t *waiters,
                       bool (*cond)(void *), void *arg, int64_t deadline, bool spin)
{
    if (cond(arg))
        return 0;
    if (deadline != MP__NO_DEADLINE && mp__now_ns() >= deadline)
        return -ETIMEDOUT;
    if (spin && spin_ok()) {
        int64_t end = mp__now_ns() + SPIN_NS;
        if (end > deadline)
            end = deadline;
        unsigned rounds = 0;
        do {
            for (int i = 0; i < 32; i++) {
                if (cond(arg))
                    return 0;
                mp__cpu_relax();
            }
            if (++rounds % 8 == 0)
                mp__yield(); /* more threads than CPUs: let them run */
        } while (mp__now_ns() < end);
    }
    for (;;) {
        uint32_t v = atomic_load(word);
        if (cond(arg))
            return 0;
        int64_t now = mp__now_ns();
        if (deadline != MP__NO_DEADLINE && now >= deadline)
            return -ETIMEDOUT;
        int64_t until = now + SLICE_NS < deadline ? now + SLICE_NS : deadline;
        atomic_fetch_add(waiters, 1);
        if (!cond(arg))
            mp__futex_wait(word, v, until);
        atomic_fetch_sub(waiters, 1);
    }
}

void mp__pool_wake_word(_Atomic uint32_t *word, _Atomic uint32_t *waiters)
{
    if (atomic_load(waiters))
        mp__futex_wake(word, INT32_MAX);
}

/* ---- the core's lifetime ---- */

void mp__pool_core_ref(pool_core *c) { atomic_fetch_add(&c->refs, 1); }

static void job_destroy(job *j)
{
    if (j->heap_block)
        mp__heap_free(j->heap_block);
    mp__heap_free(j);
}

/* A heap block of at least size bytes for job j: its own if big enough
 * (cached jobs keep their blocks, so that pages workers have touched stay
 * mapped in them: a fresh block costs a page fault per page per process). */
void *mp__pool_job_block(job *j, size_t size, int *err)
{
    if (j->heap_block && j->heap_block_size >= size)
        return j->heap_block;
    if (j->heap_block) {
        mp__heap_free(j->heap_block);
        j->heap_block = NULL;
        j->heap_block_size = 0;
    }
    j->heap_block = mp__heap_alloc(size, err);
    if (j->heap_block)
        j->heap_block_size = mp__heap_block_size(j->heap_block);
    return j->heap_block;
}

void mp__pool_core_unref(pool_core *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    while (c->cache) {
        job *j = c->cache;
        c->cache = j->next_local;
        job_destroy(j);
    }
    if (c->s) {
        if (c->s->initarg_len)
            mp__heap_free(c->s->initarg);
        mp__heap_free(c->s->ring);
        mp__heap_free(c->s->workers);
        mp__heap_free(c->s);
    }
    if (c->notify_fd >= 0)
        close(c->notify_fd);
    if (c->poller >= 0)
        close(c->poller);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->cache_lock);
    pthread_cond_destroy(&c->cond);
    free(c->w);
    free(c->spawnq);
    free(c);
}

/* ---- jobs ---- */

job *mp__pool_job_get(pool_core *c)
{
    job *j = NULL;
    pthread_mutex_lock(&c->cache_lock);
    if (c->cache) {
        j = c->cache;
        c->cache = j->next_local;
        c->ncache--;
        c->kept -= j->heap_block_size;
    }
    pthread_mutex_unlock(&c->cache_lock);
    void *blk = NULL;
    size_t blk_size = 0;
    if (j == NULL) {
        j = mp__heap_alloc(sizeof *j, NULL);
        if (j == NULL)
            return NULL;
    } else {
        blk = j->heap_block;
        blk_size = j->heap_block_size;
    }
    memset(j, 0, offsetof(job, inline_buf));
    j->heap_block = blk;
    j->heap_block_size = blk_size;
    j->core = c;
    j->owner = mp__getpid();
    return j;
}

static void job_release(job *j)
{
    pool_core *c = j->core;
    if (j->res && (j->res < (void *)j->inline_buf ||
                   j->res >= (void *)(j->inline_buf + JOB_INLINE)))
        mp__heap_free_any(j->res);
    j->res = NULL;
    for (uint32_t i = 0; i < j->nfds; i++)
        close(j->fds[i]);
    j->nfds = 0;
    pthread_mutex_lock(&c->cache_lock);
    if (j->heap_block && c->kept + j->heap_block_size > KEEP_MAX) {
        mp__heap_free(j->heap_block);
        j->heap_block = NULL;
        j->heap_block_size = 0;
    }
    if (c->ncache < JOB_CACHE_MAX) {
        j->next_local = c->cache;
        c->cache = j;
        c->ncache++;
        c->kept += j->heap_block_size;
        j = NULL;
    }
    pthread_mutex_unlock(&c->cache_lock);
    if (j)
        job_destroy(j);
}

void mp__pool_job_unref(job *j)
{
    if (atomic_fetch_sub(&j->refs, 1) == 1)
        job_release(j);
}

static bool ring_push(pool_core *c, job *j)
{
    pool_shm *s = c->s;
    ring_slot *sl = &s->ring[c->tail & (s->ring_size - 1)];
    if (atomic_load(&sl->word) != RING_WORD(c->tail, TAG_FREE))
        return false;
    atomic_store_explicit(&sl->job, j, memory_order_relaxed);
    atomic_store(&sl->word, RING_WORD(c->tail, TAG_READY));
    c->tail++;
    mp__pool_wake_worker(s);
    return true;
}

void mp__pool_dispatch(pool_core *c, job *j)
{
    if (!j->listed) {
        j->listed = true;
        j->prev_local = NULL;
        j->next_local = c->inflight;
        if (c->inflight)
            c->inflight->prev_local = j;
        c->inflight = j;
        c->ninflight++;
    }
    atomic_store(&j->seq, ++c->next_seq);
    atomic_store(&j->state, JOB_QUEUED);
    if (c->pend_head == NULL && ring_push(c, j))
        return;
    j->pending = true;
    j->next_pending = NULL;
    if (c->pend_tail)
        c->pend_tail->next_pending = j;
    else
        c->pend_head = j;
    c->pend_tail = j;
    atomic_store(&c->s->want_notify, 1);
}

static void refill(pool_core *c)
{
    pthread_mutex_lock(&c->lock);
    while (c->pend_head && ring_push(c, c->pend_head)) {
        job *j = c->pend_head;
        j->pending = false;
        c->pend_head = j->next_pending;
        if (c->pend_head == NULL)
            c->pend_tail = NULL;
    }
    if (c->pend_head == NULL && !c->closed && !c->terminated)
        atomic_store(&c->s->want_notify, 0);
    pthread_mutex_unlock(&c->lock);
}

void mp__pool_job_retire(job *j)
{
    /* Collector only: retirements are batched, one lock for many. */
    pool_core *c = j->core;
    j->next_retired = c->retired;
    c->retired = j;
}

static void flush_retired(pool_core *c)
{
    job *list = c->retired;
    if (list == NULL)
        return;
    c->retired = NULL;
    pthread_mutex_lock(&c->lock);
    for (job *j = list; j; j = j->next_retired) {
        if (j->prev_local)
            j->prev_local->next_local = j->next_local;
        else if (c->inflight == j)
            c->inflight = j->next_local;
        if (j->next_local)
            j->next_local->prev_local = j->prev_local;
        j->next_local = j->prev_local = NULL;
        j->listed = false;
        c->ninflight--;
    }
    if (c->ninflight == 0)
        pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    while (list) {
        job *n = list->next_retired;
        mp__pool_job_unref(list);
        list = n;
    }
}

/* ---- collecting ---- */

/* Run an ended task's callbacks, then make it final for its waiters (as
 * in Python, a result is ready only once its callback has returned). */
static void end_apply(pool_core *c, job *j)
{
    uint32_t st = atomic_load(&j->state);
    bool canceled = st == JOB_CANCELED || st == JOB_CANCELING;
    int code = canceled ? MP_ECANCELED : j->info.code;
    in_callback_of = c;
    if (code == 0 && j->opts.callback)
        j->opts.callback(j->res, j->res_len, j->opts.ud);
    else if (code != 0 && j->opts.error_callback)
        j->opts.error_callback(code, j->opts.ud);
    in_callback_of = NULL;
    if (st == JOB_ENDED || st == JOB_CANCELING) {
        atomic_store(&j->state, canceled ? JOB_CANCELED : JOB_DONE);
        mp__pool_wake_word(&j->state, &j->waiters);
    }
    mp__pool_job_retire(j);
}

/* A job whose dispatch has ended (pushed by its worker, or found ended
 * after its worker died). */
static void collect(pool_core *c, job *j)
{
    uint64_t seq = atomic_load(&j->seq);
    if (j->collected_seq == seq)
        return;
    j->collected_seq = seq;
    c->backoff_ns = 0; /* workers get work done: no start-up crash loop */
    if (j->kind == JOB_CHUNK)
        mp__pool_chunk_ended(j, NULL);
    else
        end_apply(c, j);
}

static void collect_done(pool_core *c)
{
    pool_shm *s = c->s;
    for (unsigned w = 0; w < c->nworkers; w++) {
        job *list = atomic_exchange(&s->workers[w].done_head, NULL);
        job *rev = NULL;
        while (list) {
            job *n = list->next_done;
            list->next_done = rev;
            rev = list;
            list = n;
        }
        while (rev) {
            job *n = rev->next_done;
            collect(c, rev);
            rev = n;
        }
    }
}

static bool any_done(pool_core *c)
{
    for (unsigned w = 0; w < c->nworkers; w++)
        if (atomic_load(&c->s->workers[w].done_head) != NULL)
            return true;
    return false;
}

static void fail_running(pool_core *c, job *j, const mp_task_info *fail)
{
    j->collected_seq = atomic_load(&j->seq);
    if (j->kind == JOB_CHUNK) {
        mp__pool_chunk_ended(j, fail);
        return;
    }
    j->info = *fail;
    j->res = NULL;
    j->res_len = 0;
    mp__pool_job_ended(j);
    end_apply(c, j);
}

static void requeue(pool_core *c, job *j)
{
    pthread_mutex_lock(&c->lock);
    mp__pool_dispatch(c, j);
    pthread_mutex_unlock(&c->lock);
}

/* Worker w is dead: end or re-queue whatever it held. */
static void recover_worker(pool_core *c, unsigned w, const mp_task_info *fail)
{
    pool_shm *s = c->s;
    worker_slot *ws = &s->workers[w];
    collect_done(c); /* what it pushed before dying is ended normally */
    job *j = atomic_load(&ws->current);
    uint64_t sq = atomic_load(&ws->current_seq);
    job *handled = NULL;
    if (j && atomic_load(&j->seq) == sq && j->collected_seq != sq) {
        handled = j;
        uint32_t st = atomic_load(&j->state);
        if (st == JOB_RUNNING) {
            mp_task_info f = *fail;
            worker_rec *r = &c->w[w];
            if (r->kill_reason == KILL_DEADLINE && r->kill_seq == sq &&
                (j->kind == JOB_APPLY || r->kill_item == atomic_load(&j->cur)))
                f.code = MP_EDEADLINE;
            fail_running(c, j, &f);
        } else if (st == JOB_QUEUED) {
            requeue(c, j);
        } else {
            collect(c, j);
        }
    }
    atomic_store(&ws->current, NULL);
    for (uint32_t i = 0; i < s->ring_size; i++) {
        ring_slot *sl = &s->ring[i];
        uint64_t word = atomic_load(&sl->word);
        if (RING_TAG(word) != TAG_CLAIMED + w)
            continue;
        job *cj = atomic_load(&sl->job);
        atomic_store(&sl->word, RING_WORD(RING_POS(word) + s->ring_size, TAG_FREE));
        if (cj == handled || cj->collected_seq == atomic_load(&cj->seq))
            continue;
        uint32_t st = atomic_load(&cj->state);
        if (st == JOB_QUEUED)
            requeue(c, cj);
        else if (st == JOB_CANCELED || st == JOB_CANCELING)
            collect(c, cj);
    }
}

/* ---- workers ---- */

static void *thread_worker(void *arg);
static int send_spawns(pool_core *c);
static bool may_spawn(pool_core *c);

typedef struct {
    pool_core *c;
    unsigned w;
} thread_arg;

static int spawn(pool_core *c, unsigned w)
{
    worker_rec *r = &c->w[w];
    memset(r, 0, sizeof *r);
    r->pidfd = -1;
    r->ctl = -1;
    r->gen = atomic_load(&c->restart_gen);
    r->tasks_at_spawn = atomic_load(&c->s->workers[w].tasks);
    if (c->kind == MP_POOL_MPI) {
        atomic_store(&c->s->workers[w].exited, 0);
        int rc = mp__mpi_pool_start(c->s, &r->th);
        if (rc < 0)
            return rc;
        r->running = true;
    } else if (c->kind == MP_POOL_THREAD) {
        atomic_store(&c->s->workers[w].exited, 0);
        thread_arg *ta = malloc(sizeof *ta);
        if (ta == NULL)
            return -ENOMEM;
        ta->c = c;
        ta->w = w;
        int rc = pthread_create(&r->th, NULL, thread_worker, ta);
        if (rc != 0) {
            free(ta);
            return -rc;
        }
        r->running = true;
    } else {
        c->spawnq[(c->spawnq_head + c->spawnq_len++) % c->nworkers] = w;
        r->queued = true;
        r->requested = true;
        c->live++;
        return send_spawns(c);
    }
    r->requested = true;
    c->live++;
    return 0;
}

/* A queued spawn could not be asked for: try again later (if workers are
 * still wanted). */
static void spawn_failed(pool_core *c, unsigned w)
{
    worker_rec *r = &c->w[w];
    r->requested = false;
    c->live--;
    if (may_spawn(c))
        r->respawn_at = mp__now_ns() + BACKOFF_MAX_NS / 10;
}

/* Ask the fork server for queued workers, SPAWN_WINDOW at a time.  Returns
 * the first error (the slot is retried later). */
static int send_spawns(pool_core *c)
{
    int first = 0;
    while (c->spawn_out < SPAWN_WINDOW && c->spawnq_len > 0) {
        unsigned w = c->spawnq[c->spawnq_head];
        c->spawnq_head = (c->spawnq_head + 1) % c->nworkers;
        c->spawnq_len--;
        worker_rec *r = &c->w[w];
        if (!r->queued)
            continue;
        r->queued = false;
        if (!r->requested)
            continue; /* ended meanwhile (the server died) */
        if (!may_spawn(c)) {
            spawn_failed(c, w); /* stopping: no more workers */
            continue;
        }
        int sv[2];
        int rc = mp__io_pair(sv, true);
        if (rc == 0) {
            srv_msg m = {SRV_SPAWN, (int32_t)w, 0, 0};
            struct iovec iov = {&m, sizeof m};
            rc = mp__io_write_all(c->srv_sock, true, &iov, 1, sv[1]);
            close(sv[1]);
            if (rc == 0)
                rc = mp__poller_add(c->poller, sv[0], TAG_CTL + w);
            if (rc < 0)
                close(sv[0]);
            else
                r->ctl = sv[0];
        }
        if (rc < 0) {
            spawn_failed(c, w);
            if (first == 0)
                first = rc;
            continue;
        }
        c->spawn_out++;
    }
    return first;
}

/* Kill worker w: through its pidfd, or through the server when its pidfd
 * was lost on the way (no descriptor to spare when it came). */
static void kill_worker(pool_core *c, unsigned w)
{
    worker_rec *r = &c->w[w];
    if (r->pidfd >= 0) {
        mp__pidfd_send_signal(r->pidfd, SIGKILL);
    } else {
        srv_msg m = {SRV_KILL, (int32_t)w, r->pid, 0};
        struct iovec iov = {&m, sizeof m};
        mp__io_write_all(c->srv_sock, true, &iov, 1, -1);
    }
}

static void *thread_worker(void *arg)
{
    thread_arg ta = *(thread_arg *)arg;
    free(arg);
    pool_shm *s = ta.c->s;
    mp__pool_worker_run(s, ta.w, false);
    atomic_store(&s->workers[ta.w].exited, 1);
    mp__notify(s->notify_fd);
    return NULL;
}

static bool may_spawn(pool_core *c)
{
    return c->kind != MP_POOL_MPI && !c->stopping && !c->terminated && !c->server_dead;
}

/* Start the replacement of worker w now, or later if it cannot be now. */
static void replace(pool_core *c, unsigned w)
{
    /* (A process worker's failed request is retried by spawn_failed.) */
    if (may_spawn(c) && spawn(c, w) < 0 && c->kind != MP_POOL_PROCESS)
        c->w[w].respawn_at = mp__now_ns() + BACKOFF_MAX_NS / 10;
}

/* Start the replacements that are due; return when the next one is. */
static int64_t respawn_due(pool_core *c)
{
    int64_t next = MP__NO_DEADLINE, now = mp__now_ns();
    for (unsigned w = 0; w < c->nworkers; w++) {
        worker_rec *r = &c->w[w];
        if (r->respawn_at == 0 || r->requested)
            continue;
        if (now >= r->respawn_at) {
            r->respawn_at = 0;
            replace(c, w);
        }
        if (r->respawn_at && r->respawn_at < next)
            next = r->respawn_at;
    }
    return next;
}

static void worker_ended(pool_core *c, unsigned w)
{
    worker_rec *r = &c->w[w];
    /* Died on its own before taking any task: its start-up (the
     * initializer) is failing.  Replacing it at once would fork in a loop;
     * wait, longer each time, until some task gets done. */
    worker_slot *ws = &c->s->workers[w];
    bool early = c->kind == MP_POOL_PROCESS && r->kill_reason == KILL_NONE &&
                 atomic_load(&ws->current) == NULL &&
                 atomic_load(&ws->tasks) == r->tasks_at_spawn;
    if (c->kind == MP_POOL_PROCESS) {
        int st = r->status;
        mp_task_info fail = {.code = MP_EWORKER,
                             .signo = st < 0 ? -st : 0,
                             .exit_status = st >= 0 ? st : 0};
        if (c->terminated || r->kill_reason == KILL_RESTART)
            fail.code = MP_ECANCELED;
        recover_worker(c, w, &fail);
        /* It may have been the one woken, or the one spinning: either
         * flag left set would keep the others from being woken. */
        atomic_store(&c->s->waking, 0);
        atomic_store(&c->s->spinners, 0);
        if (r->pidfd >= 0) {
            if (!r->exited)
                mp__poller_del(c->poller, r->pidfd);
            close(r->pidfd);
        }
        if (r->ctl >= 0) {
            mp__poller_del(c->poller, r->ctl);
            close(r->ctl);
        }
    } else {
        pthread_join(r->th, NULL);
    }
    r->requested = r->running = false;
    r->pidfd = -1;
    c->live--;
    if (!early) {
        replace(c, w);
        return;
    }
    c->backoff_ns = c->backoff_ns ? c->backoff_ns * 2 : BACKOFF_MIN_NS;
    if (c->backoff_ns > BACKOFF_MAX_NS)
        c->backoff_ns = BACKOFF_MAX_NS;
    r->respawn_at = mp__now_ns() + c->backoff_ns;
}

static void read_server(pool_core *c)
{
    for (;;) {
        srv_msg m;
        int fds[MP__IO_MAX_FDS], nfds = 0;
        bool lost; /* a pidfd that found no free descriptor here */
        ssize_t r = mp__io_recv(c->srv_sock, &m, sizeof m, true, fds, &nfds, &lost);
        if (r == -EAGAIN)
            return;
        if (r <= 0) {
            /* The server died (killed from outside): its workers die with
             * it.  Treat each as dead with an unknown status. */
            mp__poller_del(c->poller, c->srv_sock);
            c->server_dead = true; /* no server, no respawn */
            for (unsigned w = 0; w < c->nworkers; w++)
                if (c->w[w].requested) {
                    c->w[w].status = -SIGKILL;
                    worker_ended(c, w);
                }
            pthread_mutex_lock(&c->lock);
            c->closed = c->terminated = true;
            pthread_mutex_unlock(&c->lock);
            return;
        }
        if ((size_t)r < sizeof m) {
            size_t got = (size_t)r;
            while (got < sizeof m) {
                int more = 0;
                ssize_t k = mp__io_read(c->srv_sock, true, (char *)&m + got, sizeof m - got,
                                        false, fds + nfds, &more);
                if (k <= 0)
                    return;
                nfds += more;
                got += (size_t)k;
            }
        }
        if (m.slot < 0 || (unsigned)m.slot >= c->nworkers) {
            for (int i = 0; i < nfds; i++)
                close(fds[i]);
            continue;
        }
        worker_rec *wr = &c->w[m.slot];
        if (m.op == SRV_SPAWNED) {
            c->spawn_out--;
            wr->pid = m.pid;
            wr->running = true;
            if (nfds >= 1 && !lost) {
                wr->pidfd = fds[0];
                fds[0] = -1;
                mp__poller_add(c->poller, wr->pidfd, TAG_PIDFD + (uint64_t)m.slot);
            }
            /* Without its pidfd the worker still runs: the server reports
             * its exit and kills it for us (kill_worker). */
            if (c->terminated) {
                kill_worker(c, (unsigned)m.slot);
            } else if (wr->gen < atomic_load(&c->restart_gen)) {
                wr->kill_reason = KILL_RESTART;
                kill_worker(c, (unsigned)m.slot);
            }
        } else if (m.op == SRV_EXITED) {
            wr->have_status = true;
            wr->status = m.status;
            if (wr->exited || wr->pidfd < 0)
                worker_ended(c, (unsigned)m.slot);
        } else if (m.op == SRV_FAILED) {
            c->spawn_out--;
            if (wr->ctl >= 0) {
                mp__poller_del(c->poller, wr->ctl);
                close(wr->ctl);
                wr->ctl = -1;
            }
            spawn_failed(c, (unsigned)m.slot);
        }
        for (int i = 0; i < nfds; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        send_spawns(c);
    }
}

/* A worker asks for the descriptors of the job it runs. */
static void serve_fds(pool_core *c, unsigned w)
{
    if (w >= c->nworkers || c->w[w].ctl < 0)
        return;
    worker_rec *r = &c->w[w];
    for (;;) {
        fd_request rq;
        int fds[MP__IO_MAX_FDS], nfds = 0;
        ssize_t n = mp__io_read(r->ctl, true, &rq, sizeof rq, true, fds, &nfds);
        for (int i = 0; i < nfds; i++)
            close(fds[i]); /* workers send none */
        if (n == -EAGAIN)
            return;
        if (n < (ssize_t)sizeof rq) {
            /* It died (EOF) or broke the protocol: stop listening. */
            mp__poller_del(c->poller, r->ctl);
            close(r->ctl);
            r->ctl = -1;
            return;
        }
        /* Trust nothing in the request: the job must be one of ours,
         * running on that worker, in this dispatch. */
        job *j = (job *)(uintptr_t)rq.job;
        fd_reply rp = {rq.seq, 0, -ESTALE};
        worker_slot *ws = &c->s->workers[w];
        if (mp__heap_contains(j) && atomic_load(&ws->current) == j && j->core == c &&
            atomic_load(&j->seq) == rq.seq && j->nfds <= MP_TASK_MAX_FDS) {
            rp.n = (int32_t)j->nfds;
            rp.err = 0;
        }
        if (mp__io_send_fds(r->ctl, &rp, sizeof rp, j && rp.err == 0 ? j->fds : NULL,
                            rp.err == 0 ? rp.n : 0) < 0)
            return;
    }
}

/* Kill workers whose task ran past its deadline; return the next deadline. */
static int64_t check_deadlines(pool_core *c)
{
    int64_t next = MP__NO_DEADLINE, now = mp__now_ns();
    for (unsigned w = 0; w < c->nworkers; w++) {
        worker_rec *r = &c->w[w];
        if (!r->running || r->kill_reason != KILL_NONE)
            continue;
        worker_slot *ws = &c->s->workers[w];
        job *j = atomic_load(&ws->current);
        uint64_t sq = atomic_load(&ws->current_seq);
        if (j == NULL || atomic_load(&j->seq) != sq || j->timeout_ns == 0 ||
            atomic_load(&j->state) != JOB_RUNNING)
            continue;
        uint32_t item = atomic_load(&j->cur);
        int64_t dl = atomic_load(&j->item_start) + j->timeout_ns;
        if (now >= dl) {
            r->kill_reason = KILL_DEADLINE;
            r->kill_seq = sq;
            r->kill_item = item;
            kill_worker(c, w);
        } else if (dl < next) {
            next = dl;
        }
    }
    return next;
}

/* Everything still in flight after a terminate ends as cancelled. */
static void cancel_all(pool_core *c)
{
    for (;;) {
        pthread_mutex_lock(&c->lock);
        job *j = c->inflight;
        while (j && j->collected_seq == atomic_load(&j->seq))
            j = j->next_local;
        if (j) {
            c->pend_head = c->pend_tail = NULL; /* nothing will run */
            j->collected_seq = atomic_load(&j->seq);
        }
        pthread_mutex_unlock(&c->lock);
        if (j == NULL)
            return;
        uint32_t st = JOB_QUEUED;
        atomic_compare_exchange_strong(&j->state, &st, mp__pool_cancel_state(j));
        if (j->kind == JOB_CHUNK) {
            mp__pool_chunk_cancel(j);
        } else {
            st = atomic_load(&j->state);
            if (st == JOB_RUNNING || st == JOB_ENDED)
                atomic_store(&j->state, mp__pool_cancel_state(j));
            mp__pool_wake_word(&j->state, &j->waiters);
            end_apply(c, j);
        }
    }
}

static void terminate_workers(pool_core *c)
{
    atomic_store(&c->s->terminating, 1);
    atomic_store(&c->s->stopping, 1);
    /* Tasks not started are cancelled first, so thread workers (which
     * cannot be killed) only finish what they are running. */
    pthread_mutex_lock(&c->lock);
    for (job *j = c->inflight; j; j = j->next_local) {
        uint32_t st = JOB_QUEUED;
        if (atomic_compare_exchange_strong(&j->state, &st, mp__pool_cancel_state(j)))
            mp__pool_wake_word(&j->state, &j->waiters);
    }
    pthread_mutex_unlock(&c->lock);
    atomic_fetch_add(&c->s->task_seq, 1);
    mp__futex_wake(&c->s->task_seq, INT32_MAX);
    for (unsigned w = 0; w < c->nworkers; w++) {
        worker_rec *r = &c->w[w];
        if (c->kind == MP_POOL_PROCESS && r->running && r->kill_reason == KILL_NONE) {
            r->kill_reason = KILL_TERMINATE;
            kill_worker(c, w);
        }
    }
}

static int start_workers(pool_core *c)
{
    if (c->kind == MP_POOL_PROCESS) {
        int drop[1] = {c->poller};
        pid_t pid = mp__pool_server_start(c->s, &c->srv_sock, drop, 1);
        if (pid < 0)
            return pid;
        c->srv_pid = pid;
        c->srv_pidfd = mp__pidfd_open(pid);
        if (c->srv_pidfd < 0) {
            int rc = c->srv_pidfd;
            mp__kill_and_reap(pid);
            return rc;
        }
        int rc = mp__poller_add(c->poller, c->srv_sock, TAG_SERVER);
        if (rc < 0)
            return rc;
    }
    unsigned n = c->kind == MP_POOL_MPI ? 1 : c->nworkers; /* MPI: one sender */
    for (unsigned w = 0; w < n; w++) {
        int rc = spawn(c, w);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* mp__pool_restart asked for new workers: kill those of older
 * generations (those still being forked are killed once they report) and
 * say when none is left. */
static void restart_progress(pool_core *c)
{
    uint64_t gen = atomic_load(&c->restart_gen);
    if (atomic_load(&c->restarted_gen) == gen)
        return;
    bool old = false;
    for (unsigned w = 0; w < c->nworkers; w++) {
        worker_rec *r = &c->w[w];
        if (!r->requested || r->gen >= gen)
            continue;
        old = true;
        if (r->running && r->kill_reason == KILL_NONE) {
            r->kill_reason = KILL_RESTART;
            kill_worker(c, w);
        }
    }
    if (!old || c->stopping) {
        pthread_mutex_lock(&c->lock);
        atomic_store(&c->restarted_gen, gen);
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
    }
}

int mp__pool_restart(mp_pool *p, void (*init)(void *), void *initarg, unsigned maxtasks,
                     int64_t timeout_ns)
{
    pool_core *c;
    int rc = mp__pool_check(p, &c);
    if (rc < 0)
        return rc;
    if (c->kind != MP_POOL_PROCESS)
        return -EINVAL;
    pthread_mutex_lock(&c->lock);
    pool_shm *s = c->s;
    s->initializer = init;
    s->initarg = initarg;
    s->maxtasks = maxtasks;
    s->pool_timeout_ns = timeout_ns;
    uint64_t gen = atomic_fetch_add(&c->restart_gen, 1) + 1;
    kick(c);
    while (atomic_load(&c->restarted_gen) < gen && !c->finished)
        pthread_cond_wait(&c->cond, &c->lock);
    rc = atomic_load(&c->restarted_gen) >= gen ? 0 : MP_ECLOSED;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int mp__pool_fn_check(pool_core *c, void (*fn)(void))
{
    mp__fnref ref;
    return c->kind == MP_POOL_MPI ? mp__fnref_make(fn, &ref) : 0;
}

static void stop_server(pool_core *c)
{
    if (c->kind != MP_POOL_PROCESS || c->srv_pidfd < 0)
        return;
    /* A message, not just EOF: a child forked from the parent meanwhile
     * may hold a copy of our end of the socket. */
    srv_msg m = {SRV_STOP, 0, 0, 0};
    struct iovec iov = {&m, sizeof m};
    mp__io_write_all(c->srv_sock, true, &iov, 1, -1);
    close(c->srv_sock);
    int code;
    if (mp__pidfd_reap(c->srv_pidfd, mp__now_ns() + 5000000000LL, &code) < 0) {
        mp__pidfd_send_signal(c->srv_pidfd, SIGKILL);
        mp__pidfd_reap(c->srv_pidfd, MP__NO_DEADLINE, &code);
    }
    close(c->srv_pidfd);
    c->srv_pidfd = -1;
}

static void *collector_main(void *arg)
{
    pool_core *c = arg;
    pool_shm *s = c->s;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);

    int rc = start_workers(c);
    pthread_mutex_lock(&c->lock);
    c->start_err = rc;
    c->started = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    if (rc < 0) {
        c->terminated = true;
        terminate_workers(c);
    }

    bool terminating = false;
    for (;;) {
        collect_done(c);
        flush_retired(c);
        refill(c);
        pthread_mutex_lock(&c->lock);
        bool term = c->terminated, closed = c->closed;
        size_t inflight = c->ninflight;
        pthread_mutex_unlock(&c->lock);
        if (term && !terminating) {
            terminating = true;
            terminate_workers(c);
        }
        if (!c->stopping && (term || (closed && inflight == 0))) {
            c->stopping = true;
            atomic_store(&s->stopping, 1);
            atomic_fetch_add(&s->task_seq, 1);
            mp__futex_wake(&s->task_seq, INT32_MAX);
        }
        restart_progress(c);
        if (c->kind == MP_POOL_PROCESS)
            send_spawns(c); /* (drops the queue once stopping) */
        if (c->kind != MP_POOL_PROCESS)
            for (unsigned w = 0; w < c->nworkers; w++)
                if (c->w[w].running && atomic_load(&s->workers[w].exited))
                    worker_ended(c, w);
        if (c->stopping && c->live == 0) {
            collect_done(c);
            cancel_all(c);
            flush_retired(c);
            break;
        }
        /* Say we sleep before looking: a worker that starts a timed task
         * after our look sees the flag and wakes us (and one that started
         * before it is seen by check_deadlines). */
        atomic_store(&s->collector_sleeping, 1);
        int64_t deadline = c->kind == MP_POOL_PROCESS ? check_deadlines(c) : MP__NO_DEADLINE;
        int64_t respawn = respawn_due(c);
        if (respawn < deadline)
            deadline = respawn;
        uint64_t tags[16];
        int n = 0;
        if (!any_done(c))
            n = mp__poller_wait(c->poller, tags, 16, deadline);
        atomic_store(&s->collector_sleeping, 0);
        for (int i = 0; i < n; i++) {
            if (tags[i] == TAG_NOTIFY) {
                mp__notifier_drain(c->notify_fd);
            } else if (tags[i] == TAG_SERVER) {
                read_server(c);
            } else if (tags[i] >= TAG_CTL) {
                serve_fds(c, (unsigned)(tags[i] - TAG_CTL));
            } else {
                unsigned w = (unsigned)(tags[i] - TAG_PIDFD);
                if (w < c->nworkers && c->w[w].pidfd >= 0 && !c->w[w].exited) {
                    c->w[w].exited = true;
                    mp__poller_del(c->poller, c->w[w].pidfd);
                    if (c->w[w].have_status)
                        worker_ended(c, w);
                }
            }
        }
    }
    stop_server(c);
    pthread_mutex_lock(&c->lock);
    c->finished = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* ---- the pool ---- */

int mp__pool_check(mp_pool *p, pool_core **core)
{
    if (p == NULL)
        return -EINVAL;
    if (p->c->owner != mp__getpid())
        return -EPERM;
    *core = p->c;
    return 0;
}

int mp_pool_new(mp_pool **out, const mp_pool_opts *opts)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    mp_pool_opts o = {0};
    if (opts)
        o = *opts;
    if (isnan(o.task_timeout) ||
        (o.kind != MP_POOL_PROCESS && o.kind != MP_POOL_THREAD && o.kind != MP_POOL_MPI) ||
        (o.flags & ~MP_POOL_FALLBACK))
        return -EINVAL;
    if (o.kind == MP_POOL_THREAD && o.task_timeout > 0)
        return -ENOTSUP;
    if (o.kind == MP_POOL_MPI) {
        /* Ranks share no memory: the initializer travels by name, its
         * argument as bytes. */
        if (o.initarg != NULL && o.initarg_len == 0)
            return -EINVAL;
        mp__fnref ref;
        if (o.initializer && mp__fnref_make((void (*)(void))o.initializer, &ref) < 0)
            return MP_EFUNC;
        int ranks = mp__mpi_attach(); /* never returns on a worker rank */
        if (ranks == MP_ENOMPI && (o.flags & MP_POOL_FALLBACK)) {
            o.kind = MP_POOL_PROCESS;
        } else if (ranks < 0) {
            return ranks;
        } else if (o.workers == 0 || o.workers > (unsigned)ranks) {
            o.workers = (unsigned)ranks;
        }
    }
    if (o.workers == 0)
        o.workers = (unsigned)mp_cpu_count();
    if (o.workers > MAX_WORKERS)
        return -EINVAL;
    if (o.kind == MP_POOL_PROCESS) {
        int fd = mp__pidfd_open(getpid());
        if (fd < 0)
            return fd == -ENOSYS ? -ENOSYS : fd;
        close(fd);
        /* Each worker holds two descriptors here (its pidfd and control
         * socket), the pool a few more: refuse now rather than run short
         * later. */
        if (mp__fd_headroom() < 2 * (long)o.workers + 8)
            return -EMFILE;
    }
    int rc = mp__heap_ensure();
    if (rc < 0)
        return rc;

    pool_core *c = calloc(1, sizeof *c);
    mp_pool *p = malloc(sizeof *p);
    if (c == NULL || p == NULL) {
        free(c);
        free(p);
        return -ENOMEM;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->cache_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&c->refs, 1);
    c->kind = o.kind;
    c->nworkers = o.workers;
    c->owner = mp__getpid();
    c->notify_fd = c->poller = c->srv_sock = c->srv_pidfd = -1;
    c->w = calloc(o.workers, sizeof *c->w);
    c->spawnq = calloc(o.workers, sizeof *c->spawnq);
    c->s = mp__heap_calloc(sizeof *c->s, &rc);
    if (c->w == NULL || c->spawnq == NULL || c->s == NULL)
        goto fail;
    pool_shm *s = c->s;
    s->nworkers = o.workers;
    s->ring_size = RING_SIZE;
    s->maxtasks = o.maxtasksperchild;
    s->pool_timeout_ns = seconds_to_ns(o.task_timeout);
    s->initializer = o.initializer;
    s->initarg = o.initarg;
    if (o.kind == MP_POOL_MPI && o.initarg_len) {
        s->initarg = mp__heap_alloc(o.initarg_len, &rc);
        if (s->initarg == NULL)
            goto fail;
        memcpy(s->initarg, o.initarg, o.initarg_len);
        s->initarg_len = o.initarg_len;
    }
    s->workers = mp__heap_calloc(o.workers * sizeof *s->workers, &rc);
    s->ring = mp__heap_calloc(RING_SIZE * sizeof *s->ring, &rc);
    if (s->workers == NULL || s->ring == NULL)
        goto fail;
    for (uint32_t i = 0; i < RING_SIZE; i++)
        atomic_init(&s->ring[i].word, RING_WORD(i, TAG_FREE));
    rc = c->notify_fd = mp__notifier_new();
    if (rc < 0)
        goto fail;
    s->notify_fd = c->notify_fd;
    rc = c->poller = mp__poller_new();
    if (rc < 0)
        goto fail;
    rc = mp__poller_add(c->poller, c->notify_fd, TAG_NOTIFY);
    if (rc < 0)
        goto fail;
    p->c = c;
    if (o.kind == MP_POOL_MPI && (rc = mp__mpi_pool_claim(p)) < 0)
        goto fail;
    rc = -pthread_create(&c->collector, NULL, collector_main, c);
    if (rc < 0) {
        if (o.kind == MP_POOL_MPI)
            mp__mpi_pool_release();
        goto fail;
    }
    pthread_mutex_lock(&c->lock);
    while (!c->started)
        pthread_cond_wait(&c->cond, &c->lock);
    rc = c->start_err;
    pthread_mutex_unlock(&c->lock);
    p->c = c;
    if (rc < 0) {
        pthread_join(c->collector, NULL);
        c->joined = true;
        if (c->kind == MP_POOL_MPI)
            mp__mpi_pool_release();
        mp__pool_core_unref(c);
        free(p);
        return rc;
    }
    *out = p;
    return 0;
fail:
    if (rc == 0)
        rc = -ENOMEM;
    mp__pool_core_unref(c);
    free(p);
    return rc;
}

/* close (terminate false) or terminate. */
static int stop_accepting(mp_pool *p, bool terminate)
{
    pool_core *c;
    int rc = mp__pool_check(p, &c);
    if (rc < 0)
        return rc;
    if (in_callback_of == c)
        return -EDEADLK;
    pthread_mutex_lock(&c->lock);
    c->closed = true;
    if (terminate)
        c->terminated = true;
    atomic_store(&c->s->want_notify, 1);
    pthread_mutex_unlock(&c->lock);
    kick(c);
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
    if (in_callback_of == c)
        return -EDEADLK;
    pthread_mutex_lock(&c->lock);
    if (!c->closed) {
        pthread_mutex_unlock(&c->lock);
        return -EBUSY;
    }
    while (!c->finished && rc == 0) {
        if (deadline == MP__NO_DEADLINE) {
            pthread_cond_wait(&c->cond, &c->lock);
        } else {
            struct timespec ts = {deadline / 1000000000, deadline % 1000000000};
            if (pthread_cond_timedwait(&c->cond, &c->lock, &ts) == ETIMEDOUT && !c->finished)
                rc = MP_ETIMEDOUT;
        }
    }
    bool join_thread = c->finished && !c->joined;
    if (join_thread)
        c->joined = true;
    pthread_mutex_unlock(&c->lock);
    if (join_thread)
        pthread_join(c->collector, NULL);
    return rc;
}

void mp_pool_free(mp_pool *p)
{
    pool_core *c;
    if (mp__pool_check(p, &c) < 0 || in_callback_of == c)
        return;
    pthread_mutex_lock(&c->lock);
    bool running = !c->closed || (!c->terminated && !c->finished);
    pthread_mutex_unlock(&c->lock);
    if (running)
        mp_pool_terminate(p);
    mp_pool_join(p, MP_FOREVER);
    free(p);
    mp__pool_core_unref(c);
}

/* ---- apply ---- */

int mp_pool_apply_async(mp_pool *p, mp_task_fn fn, const void *arg, size_t len,
                        const mp_task_opts *opts, mp_result **out)
{
    pool_core *c;
    if (out)
        *out = NULL;
    int rc = mp__pool_check(p, &c);
    if (rc < 0)
        return rc;
    if (fn == NULL || out == NULL || (arg == NULL && len > 0))
        return -EINVAL;
    int64_t timeout_ns = c->s->pool_timeout_ns;
    if (opts) {
        if (isnan(opts->timeout))
            return -EINVAL;
        if (opts->timeout > 0)
            timeout_ns = seconds_to_ns(opts->timeout);
        else if (opts->timeout < 0)
            timeout_ns = 0;
    }
    if (timeout_ns && c->kind == MP_POOL_THREAD)
        return -ENOTSUP;
    if (opts && (opts->nfds > MP_TASK_MAX_FDS || (opts->nfds && opts->fds == NULL)))
        return -EINVAL;
    if (opts && opts->nfds && c->kind == MP_POOL_MPI)
        return -ENOTSUP; /* descriptors do not cross to other machines */
    if ((rc = mp__pool_fn_check(c, (void (*)(void))fn)) < 0)
        return rc;
    if (!mp__pool_accepting(c))
        return MP_ECLOSED;
    job *j = mp__pool_job_get(c);
    if (j == NULL)
        return -ENOMEM;
    for (unsigned i = 0; opts && i < opts->nfds; i++) {
        int fd = fcntl(opts->fds[i], F_DUPFD_CLOEXEC, 3);
        if (fd < 0) {
            rc = -errno;
            job_release(j);
            return rc;
        }
        j->fds[j->nfds++] = fd;
    }
    if (len <= JOB_INLINE) {
        if (len)
            memcpy(j->inline_buf, arg, len);
        j->arg = j->inline_buf;
    } else {
        void *blk = mp__pool_job_block(j, len, &rc);
        if (blk == NULL) {
            job_release(j);
            return rc ? rc : -ENOMEM;
        }
        memcpy(blk, arg, len);
        j->arg = blk;
    }
    j->kind = JOB_APPLY;
    j->fn = fn;
    j->len = len;
    j->timeout_ns = timeout_ns;
    if (opts)
        j->opts = *opts;
    j->notify = j->opts.callback || j->opts.error_callback;
    atomic_init(&j->refs, 2);
    pthread_mutex_lock(&c->lock);
    if (!mp__pool_accepting(c)) {
        pthread_mutex_unlock(&c->lock);
        job_release(j);
        return MP_ECLOSED;
    }
    mp__pool_dispatch(c, j);
    pthread_mutex_unlock(&c->lock);
    mp__pool_core_ref(c);
    *out = (mp_result *)j;
    return 0;
}

static bool job_final(void *arg)
{
    uint32_t st = atomic_load(&((job *)arg)->state);
    return st == JOB_DONE || st == JOB_CANCELED;
}

static int result_check(mp_result *r, job **jp)
{
    job *j = (job *)r;
    if (j == NULL || j->kind != JOB_APPLY)
        return -EINVAL;
    if (j->owner != mp__getpid())
        return -EPERM;
    *jp = j;
    return 0;
}

static int job_code(job *j)
{
    uint32_t st = atomic_load(&j->state);
    return st == JOB_CANCELED || st == JOB_CANCELING ? MP_ECANCELED : j->info.code;
}

int mp_result_wait(mp_result *r, double timeout)
{
    job *j;
    int64_t deadline;
    int rc = result_check(r, &j);
    if (rc < 0 || (rc = mp__deadline(timeout, &deadline)) < 0)
        return rc;
    /* Spin for a task that runs, or that an idle worker is about to take;
     * not for one queued behind busy workers: it will not end within a
     * spin, and spinning would take a CPU from them. */
    pool_shm *s = j->core->s;
    uint32_t st = atomic_load(&j->state);
    bool spin = st == JOB_RUNNING ||
                (st == JOB_QUEUED && (atomic_load(&s->spinners) || atomic_load(&s->sleepers)));
    return mp__pool_wait_word(&j->state, &j->waiters, job_final, j, deadline, spin);
}

int mp_result_get(mp_result *r, double timeout, const void **res, size_t *len)
{
    job *j;
    if (res)
        *res = NULL;
    if (len)
        *len = 0;
    int rc = mp_result_wait(r, timeout);
    if (rc < 0)
        return rc;
    result_check(r, &j);
    rc = job_code(j);
    if (rc == 0) {
        if (res)
            *res = j->res;
        if (len)
            *len = j->res_len;
    }
    return rc;
}

bool mp_result_ready(mp_result *r)
{
    job *j;
    return result_check(r, &j) == 0 && job_final(j);
}

int mp_result_cancel(mp_result *r)
{
    job *j;
    int rc = result_check(r, &j);
    if (rc < 0)
        return rc;
    uint32_t st = JOB_QUEUED;
    if (!atomic_compare_exchange_strong(&j->state, &st, mp__pool_cancel_state(j)))
        return st == JOB_CANCELED || st == JOB_CANCELING ? 0 : -EBUSY;
    mp__pool_wake_word(&j->state, &j->waiters);
    return 0;
}

int mp_result_info(mp_result *r, mp_task_info *info)
{
    job *j;
    int rc = result_check(r, &j);
    if (rc < 0)
        return rc;
    if (info == NULL)
        return -EINVAL;
    if (!job_final(j))
        return -EAGAIN;
    *info = j->info;
    info->code = job_code(j);
    return 0;
}

void mp_result_free(mp_result *r)
{
    job *j;
    if (result_check(r, &j) < 0)
        return;
    pool_core *c = j->core;
    mp__pool_job_unref(j);
    mp__pool_core_unref(c);
}

static int wait_many(mp_result *const *rs, size_t n, double timeout, bool any)
{
    int64_t deadline;
    int rc = mp__deadline(timeout, &deadline);
    if (rc < 0)
        return rc;
    if (rs == NULL && n > 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        job *j;
        if (rs[i] && (rc = result_check(rs[i], &j)) < 0)
            return rc;
    }
    bool spun = false;
    for (;;) {
        size_t live = 0, done = 0, first = SIZE_MAX;
        job *wait_on = NULL;
        for (size_t i = 0; i < n; i++) {
            job *j = (job *)rs[i];
            if (j == NULL)
                continue;
            live++;
            if (job_final(j)) {
                done++;
                if (first == SIZE_MAX)
                    first = i;
            } else if (wait_on == NULL) {
                wait_on = j;
            }
        }
        if (any) {
            if (live == 0)
                return MP_EDONE;
            if (first != SIZE_MAX)
                return first > INT32_MAX ? -EOVERFLOW : (int)first;
        } else if (done == live) {
            return 0;
        }
        int64_t now = mp__now_ns();
        if (deadline != MP__NO_DEADLINE && now >= deadline)
            return MP_ETIMEDOUT;
        if (!spun && spin_ok()) {
            spun = true;
            int64_t end = now + SPIN_NS;
            while (mp__now_ns() < end && !job_final(wait_on))
                mp__cpu_relax();
            continue;
        }
        /* Sleep on one unfinished result, in short slices for the others. */
        int64_t until = now + (any ? 1000000 : SLICE_NS);
        if (until > deadline)
            until = deadline;
        uint32_t v = atomic_load(&wait_on->state);
        atomic_fetch_add(&wait_on->waiters, 1);
        if (!job_final(wait_on))
            mp__futex_wait(&wait_on->state, v, until);
        atomic_fetch_sub(&wait_on->waiters, 1);
    }
}

int mp_result_wait_any(mp_result *const *rs, size_t n, double timeout)
{
    return wait_many(rs, n, timeout, true);
}

int mp_result_wait_all(mp_result *const *rs, size_t n, double timeout)
{
    return wait_many(rs, n, timeout, false);
}

int mp_pool_apply(mp_pool *p, mp_task_fn fn, const void *arg, size_t len,
                  void **res, size_t *res_len)
{
    pool_core *c;
    if (res)
        *res = NULL;
    if (res_len)
        *res_len = 0;
    int rc = mp__pool_check(p, &c);
    if (rc < 0)
        return rc;
    if (in_callback_of == c)
        return -EDEADLK;
    mp_result *r;
    rc = mp_pool_apply_async(p, fn, arg, len, NULL, &r);
    if (rc < 0)
        return rc;
    const void *data;
    size_t n;
    rc = mp_result_get(r, MP_FOREVER, &data, &n);
    if (rc == 0 && res && n > 0) {
        void *copy = malloc(n);
        if (copy == NULL) {
            rc = -ENOMEM;
        } else {
            memcpy(copy, data, n);
            *res = copy;
        }
    }
    if (rc == 0 && res_len)
        *res_len = n;
    mp_result_free(r);
    return rc;
}

bool mp__pool_in_callback(pool_core *c) { return in_callback_of == c; }
