/* The worker side of a pool: claiming jobs, running tasks and map
 * helpers, result buffers.
 *
 * A worker never takes a lock to get work: it claims a ring slot with one
 * CAS that writes its own index into the slot word, then records the job
 * as its `current` and frees the slot (ring.h).  Whatever instruction it
 * dies at, the supervisor finds the job it held and the job's state says
 * whether it had started; a map helper's chunk is found by its claim word
 * and the item by the helper's `cur` (batch.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "os/io.h"
#include "os/os.h"
#include "pool/batch.h"
#include "pool/buf.h"
#include "pool/worker.h"
#include "wait_int.h"

#define IDLE_SPIN_NS 2000000     /* an idle worker looks for work this long */
#define QUIET_PUSHES 256        /* ended jobs a worker piles up unannounced */

static _Thread_local int worker_index = -1;
static _Thread_local int task_fds[MP_TASK_MAX_FDS];
static _Thread_local unsigned task_nfds;
static _Thread_local job_shm *task_job; /* the job whose task runs now */
static _Thread_local worker_slot *task_slot; /* ... and our slot */
static _Thread_local bool task_counted;  /* the task counted itself (items) */
static _Thread_local bool retire;        /* end after this task */

void mp__worker_retire(void) { retire = true; }

item_counts mp__worker_item_counts(void)
{
    if (task_slot == NULL)
        return (item_counts){NULL, NULL};
    task_counted = true;
    return (item_counts){&task_slot->done, &task_slot->failed};
}
static int ctl_fd = -1; /* a process worker's socket to the supervisor */

int mp__pool_index_base;

void mp__worker_set_ctl(int fd) { ctl_fd = fd; }

int mp_pool_worker_index(void)
{
    return worker_index < 0 ? -1 : worker_index + mp__pool_index_base;
}

unsigned mp_task_nfds(void) { return task_nfds; }

job_shm *mp__worker_job(void) { return task_job; }

int mp_task_fd(unsigned i) { return i < task_nfds ? task_fds[i] : -EBADF; }

/* Ask the supervisor for the descriptors of job j (process workers). */
static int fetch_fds(job_shm *j)
{
    fd_request rq = {(uint64_t)(uintptr_t)j, atomic_load(&j->seq)};
    struct iovec iov = {&rq, sizeof rq};
    int rc = mp__io_write_all(ctl_fd, true, &iov, 1, -1);
    if (rc < 0)
        return rc;
    fd_reply rp;
    size_t got = 0;
    int n = 0;
    while (got < sizeof rp) {
        int more = 0;
        ssize_t r = mp__io_read(ctl_fd, true, (char *)&rp + got, sizeof rp - got, false,
                                task_fds + n, &more);
        if (r <= 0)
            return r == 0 ? -EPIPE : (int)r;
        n += more;
        got += (size_t)r;
    }
    task_nfds = (unsigned)n;
    if (rp.err < 0 || rp.seq != rq.seq || rp.n != n)
        return rp.err < 0 ? rp.err : -EPROTO;
    return 0;
}

static void drop_fds(bool process)
{
    if (process)
        for (unsigned i = 0; i < task_nfds; i++)
            close(task_fds[i]);
    task_nfds = 0;
}

/* ---- the done stack ---- */

static _Thread_local unsigned pushed_quietly; /* since we last woke the supervisor */

void mp__worker_push_done(pool_shm *s, unsigned w, job_shm *j, bool urgent)
{
    worker_slot *ws = &s->workers[w];
    job_shm *head = atomic_load_explicit(&ws->done_head, memory_order_relaxed);
    do
        j->next_done = head;
    while (!atomic_compare_exchange_weak_explicit(&ws->done_head, &head, j, memory_order_seq_cst,
                                                  memory_order_relaxed));
    /* (seq_cst: the push comes before the two loads below, which pair
     * with the supervisor's and the owner's stores.)  Once pushed, the job
     * is the supervisor's: do not touch it.  Whether
     * a map's owner waits for its helpers is read here, after the push,
     * from the pool (the batch may be gone): read before, a stop set in
     * between would have been missed, the owner's kick having come before
     * the push and this push after it, unannounced (mp__map_wait_helpers
     * counts itself, then kicks). */
    if (atomic_load(&s->sup_sleeping) &&
        (urgent || atomic_load(&s->helper_waiters) || ++pushed_quietly >= QUIET_PUSHES)) {
        pushed_quietly = 0;
        mp__notify(s->notify_fd);
    }
}

/* ---- running ---- */

static void run_apply(pool_shm *s, unsigned w, job_shm *j, bool process)
{
    mp_buf b = {0};
    int rc = 0;
    if (j->nfds) {
        if (process) {
            rc = fetch_fds(j);
        } else {
            /* A thread shares the parent's descriptors: the duplicates the
             * job holds are open here. */
            memcpy(task_fds, j->fds, j->nfds * sizeof(int));
            task_nfds = j->nfds;
        }
    }
    memset(&j->info, 0, sizeof j->info);
    if (rc < 0) {
        j->info.code = rc; /* the descriptors could not be had */
    } else {
        size_t off = 0;
        if (j->arg == j->inline_buf)
            off = (j->len + 15) & ~(size_t)15;
        if (off < JOB_INLINE) {
            b.data = j->inline_buf + off;
            b.cap = JOB_INLINE - off;
        }
        task_job = j;
        task_slot = &s->workers[w];
        task_counted = false;
        rc = j->fn(j->arg, j->len, &b);
        task_job = NULL;
        task_slot = NULL;
        if (rc == 0 && b.err)
            rc = b.err;
        if (rc != 0) {
            if (b.heap)
                mp__heap_free(b.data);
            if (b.err && rc == b.err) {
                j->info.code = rc;
            } else {
                j->info.code = MP_ETASK;
                j->info.task_rc = rc;
            }
        }
    }
    j->res = rc == 0 && b.len ? b.data : NULL;
    j->res_len = rc == 0 ? b.len : 0;
    drop_fds(process);
    /* (counted before the end is published: a result seen is counted) */
    worker_slot *ws = &s->workers[w];
    if (!task_counted) {
        item_count_add(&ws->done, 1);
        if (j->info.code != 0)
            item_count_add(&ws->failed, 1);
    }
    task_counted = false;
    bool notify = atomic_load_explicit(&j->notify, memory_order_relaxed);
    if (mp__job_end(j))
        mp__worker_push_done(s, w, j, notify);
}

/* Run the chunks of a helper's batch until none is left to claim, or the
 * worker's task budget (maxtasks; 0: none) is spent.  A chunk in which an
 * item failed is not marked done here: the helper stops holding it, with
 * `start` past its last item run, and the supervisor records the failures
 * before it marks it done (or resumes it, when the helper stopped for want
 * of room for more failures), so that a chunk done is a chunk whose
 * failures are known.  Returns the chunks run. */
static unsigned run_helper(pool_shm *s, unsigned w, job_shm *j, unsigned budget)
{
    batch_shm *b = j->batch;
    const batch_geom *g = &b->geom;
    const mp_map_fn fn = g->fn;
    const size_t isz = g->in_size, osz = g->out_size;
    const uint32_t nchunks = g->nchunks;
    const bool timed = j->timeout_ns != 0;
    worker_slot *ws = &s->workers[w];
    unsigned ran = 0;
    bool stopped = false;
    uint32_t nfail = j->nfail;
    for (;;) {
        uint32_t seen = atomic_load(&b->staged);
        int k = mp__batch_claim(b, w, j->part, nchunks, g->nparts, &j->held);
        if (k < 0) /* (held may name a chunk tried and lost) */
            atomic_store_explicit(&j->held, BATCH_NO_CHUNK, memory_order_relaxed);
        if (k == BATCH_OVER)
            break;
        if (k == BATCH_NONE) {
            atomic_store_explicit(&j->cur, BATCH_NO_ITEM, memory_order_relaxed);
            mp__batch_wait_staged(b, seen, mp__now_ns() + 50000000LL);
            continue;
        }
        size_t first;
        uint32_t count;
        mp__batch_range(g, (uint32_t)k, &first, &count);
        uint32_t i = b->chunks[k].start, from = i;
        const char *in = mp__batch_in(g, (uint32_t)k) + (size_t)i * isz;
        char *out = mp__batch_out(g, (uint32_t)k) + (size_t)i * osz;
        uint32_t had = nfail;
        if (g->range && i < count) {
            /* One call for the rest of the chunk. */
            if (timed)
                atomic_store_explicit(&j->item_start, mp__now_ns(), memory_order_relaxed);
            atomic_store_explicit(&j->cur, first + i, memory_order_relaxed);
            int rc = ((mp_chunk_fn)(void (*)(void))fn)(in, out, count - i);
            if (rc != 0) {
                j->fails[nfail].index = first + i;
                j->fails[nfail].info = (task_outcome){.code = MP_ETASK, .task_rc = rc};
                j->fails[nfail].count = count - i;
                j->nfail = ++nfail;
                atomic_store(&b->any_fail, 1);
            }
            i = count;
        }
        for (; i < count; i++, in += isz, out += osz) {
            if (timed)
                atomic_store_explicit(&j->item_start, mp__now_ns(), memory_order_relaxed);
            atomic_store_explicit(&j->cur, first + i, memory_order_relaxed);
            int rc = fn(in, out);
            if (rc != 0) {
                j->fails[nfail].index = first + i;
                j->fails[nfail].info = (task_outcome){.code = MP_ETASK, .task_rc = rc};
                j->fails[nfail].count = 1;
                j->nfail = ++nfail;
                atomic_store(&b->any_fail, 1);
                if (nfail == JOB_FAILS) {
                    i++; /* no room for more: the rest after a report */
                    break;
                }
            }
        }
        atomic_store_explicit(&j->cur, BATCH_NO_ITEM, memory_order_relaxed);
        item_count_add(&ws->done, i - from);
        if (nfail != had) {
            b->chunks[k].start = i; /* still ours: the supervisor's now */
            if (i == count) {
                atomic_fetch_add_explicit(&ws->tasks, 1, memory_order_relaxed);
                ran++;
            }
            stopped = true;
            break;
        }
        mp__batch_done(b, (uint32_t)k, nchunks, g->nparts);
        atomic_store_explicit(&j->held, BATCH_NO_CHUNK, memory_order_relaxed);
        atomic_fetch_add_explicit(&ws->tasks, 1, memory_order_relaxed);
        ran++;
        if (budget && ran >= budget) {
            stopped = true; /* another dispatch goes on */
            break;
        }
    }
    atomic_store_explicit(&j->cur, BATCH_NO_ITEM, memory_order_relaxed);
    if (stopped)
        mp__job_stop(j);
    else
        mp__job_end(j);
    /* A helper always goes to the supervisor, which recycles it; it need
     * not be woken for a helper that ended with nothing to report, unless
     * the batch's owner waits for its helpers (stop). */
    mp__worker_push_done(s, w, j, stopped || atomic_load(&b->stop));
    return ran;
}

/* Run a job this worker took.  Returns the tasks it counts for. */
static unsigned run_job(pool_shm *s, unsigned w, job_shm *j, bool process, unsigned budget)
{
    if (j->timeout_ns)
        atomic_store(&j->item_start, mp__now_ns());
    if (!mp__job_begin(j)) {
        if (mp__job_drop(j)) /* cancelled while queued */
            mp__worker_push_done(s, w, j, atomic_load(&j->notify));
        return 0;
    }
    if (j->timeout_ns && atomic_load(&s->sup_sleeping))
        mp__notify(s->notify_fd); /* the supervisor must watch the clock */
    if (s->watch_memory) {
        /* ... or our size: it sleeps long while no worker is busy.  (We
         * set current, then look; it sets the flag, then looks at every
         * current: one of us sees the other.) */
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load(&s->memory_asleep) && atomic_exchange(&s->memory_asleep, 0))
            mp__notify(s->notify_fd);
    }
    if (j->kind == JOB_HELPER)
        return run_helper(s, w, j, budget);
    run_apply(s, w, j, process);
    atomic_fetch_add_explicit(&s->workers[w].tasks, 1, memory_order_relaxed);
    return 1;
}

/* Jobs wait in the parent for room in the ring (want_refill): tell the
 * supervisor, which moves them, every half lap and when the ring runs dry.
 * The dry case is the one that must not be missed (nobody else would come
 * by): the parent sets want_refill, then looks at the ring's tail slot
 * again (core.c); we free a slot, see the ring empty, then look at
 * want_refill, a fence between on both sides.  Either it sees the slot free
 * and pushes itself, or we see the flag. */
static void ask_refill(pool_shm *s, uint64_t pos, bool more)
{
    if (more && (pos & (s->ring.size / 2 - 1)) != 0)
        return;
    if (!more)
        atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&s->want_refill, memory_order_relaxed) &&
        atomic_exchange(&s->want_refill, 0))
        mp__notify(s->notify_fd);
}

void mp__worker_release(pool_shm *s, uint64_t pos)
{
    mp__ring_release(&s->ring, pos);
    /* More work waiting and nobody looking for it: wake a sleeper. */
    bool more = mp__ring_ready(&s->ring);
    if (more)
        mp__ring_wake(&s->ring);
    ask_refill(s, pos, more);
    /* (after the claim's seq_cst CAS of head: a submitter counts itself,
     * then looks at head) */
    if (atomic_load(&s->room_waiters)) {
        atomic_fetch_add(&s->room_seq, 1);
        mp__wake_word(&s->room_seq, &s->room_waiters);
    }
}

void mp__worker_run(pool_shm *s, unsigned w, bool process)
{
    worker_index = (int)w;
    worker_slot *ws = &s->workers[w];
    ring *r = &s->ring;
    bool parallel = mp__can_run_in_parallel();
    if (s->initializer)
        s->initializer(s->initarg);
    unsigned done = 0, max = s->maxtasks;
    for (;;) {
        uint64_t pos;
        job_shm *j = mp__ring_claim(r, w, &pos);
        if (j == NULL) {
            if (mp__ring_idle(r, parallel, IDLE_SPIN_NS))
                break;
            continue;
        }
        atomic_store_explicit(&ws->current_seq, atomic_load(&j->seq), memory_order_relaxed);
        atomic_store_explicit(&ws->current, j, memory_order_release);
        mp__worker_release(s, pos);
        done += run_job(s, w, j, process, max ? max - done : 0);
        atomic_store_explicit(&ws->current, NULL, memory_order_release);
        if ((max && done >= max) || retire)
            break;
    }
    worker_index = -1;
    retire = false;
    if (process) {
        fflush(NULL);
        _exit(0);
    }
}
