/* The worker side of a pool: claiming jobs from the ring, running them,
 * result buffers, and the fork server that starts worker processes.
 *
 * A worker never takes a lock to get work: it claims a ring slot with one
 * CAS that writes its own index into the slot word, then records the job as
 * its `current` and frees the slot.  Whatever instruction it dies at, the
 * collector finds the job it held (in `current`, or as a slot still marked
 * with its index) and the job's state says whether it had started. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "os/io.h"
#include "os/os.h"
#include "pool_int.h"

#define SPIN_NS 30000          /* an idle worker looks for work this long */
#define SLEEP_SLICE_NS 50000000LL

static _Thread_local int worker_index = -1;
static _Thread_local int task_fds[MP_TASK_MAX_FDS];
static _Thread_local unsigned task_nfds;
static int ctl_fd = -1; /* a worker process's socket to the collector */

int mp__pool_index_base;

int mp_pool_worker_index(void)
{
    return worker_index < 0 ? -1 : worker_index + mp__pool_index_base;
}
unsigned mp_task_nfds(void) { return task_nfds; }

int mp_task_fd(unsigned i)
{
    return i < task_nfds ? task_fds[i] : -EBADF;
}

/* Ask the collector for the descriptors of job j (process workers). */
static int fetch_fds(job *j)
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

/* ---- result buffers ---- */

struct mp_buf {
    unsigned char *data;
    size_t len, cap;
    bool heap;      /* data is a heap block of ours */
    int err;        /* an append failed */
};

int mp_buf_append(mp_buf *b, const void *data, size_t len)
{
    if (b == NULL || (data == NULL && len > 0))
        return -EINVAL;
    if (len == 0)
        return 0;
    if (len > b->cap - b->len) {
        if (len > SIZE_MAX / 2 - b->len)
            return b->err = -ENOMEM;
        size_t need = b->len + len, cap = b->cap * 2;
        if (cap < need)
            cap = need;
        if (cap < 4096)
            cap = 4096;
        int err = 0;
        unsigned char *p = mp__heap_alloc(cap, &err);
        if (p == NULL)
            return b->err = err ? err : -ENOMEM;
        memcpy(p, b->data, b->len);
        if (b->heap)
            mp__heap_free(b->data);
        b->data = p;
        b->cap = mp__heap_block_size(p);
        b->heap = true;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

/* ---- the done stack ---- */

static _Thread_local unsigned pushed_quietly; /* since we last woke the collector */

void mp__pool_push_done(pool_shm *s, unsigned w, job *j)
{
    worker_slot *ws = &s->workers[w];
    uint32_t notify = j->notify; /* once pushed, the job is the collector's */
    job *head = atomic_load(&ws->done_head);
    do
        j->next_done = head;
    while (!atomic_compare_exchange_weak(&ws->done_head, &head, j));
    /* A sleeping collector is woken for what needs it now (callbacks, map
     * chunks, pending tasks, a join) and, for plain tasks, once a batch of
     * them has piled up, so their memory is recycled. */
    if (atomic_load(&s->collector_sleeping) &&
        (notify || atomic_load(&s->want_notify) || ++pushed_quietly >= 256)) {
        pushed_quietly = 0;
        mp__notify(s->notify_fd);
    }
}

/* ---- claiming ---- */

static bool ring_ready(pool_shm *s)
{
    uint64_t h = atomic_load(&s->head);
    uint64_t w = atomic_load(&s->ring[h & (s->ring_size - 1)].word);
    return w == RING_WORD(h, TAG_READY) || RING_POS(w) > h;
}

static job *claim(pool_shm *s, unsigned w, uint64_t *pos)
{
    for (;;) {
        uint64_t h = atomic_load(&s->head);
        ring_slot *sl = &s->ring[h & (s->ring_size - 1)];
        uint64_t word = atomic_load(&sl->word);
        if (word == RING_WORD(h, TAG_READY)) {
            if (!atomic_compare_exchange_strong(&sl->word, &word,
                                                RING_WORD(h, TAG_CLAIMED + w)))
                continue;
            uint64_t hh = h;
            atomic_compare_exchange_strong(&s->head, &hh, h + 1);
            *pos = h;
            return atomic_load(&sl->job);
        }
        if (RING_POS(word) == h && RING_TAG(word) >= TAG_CLAIMED) {
            uint64_t hh = h; /* claimed but head not moved: help */
            atomic_compare_exchange_strong(&s->head, &hh, h + 1);
            continue;
        }
        if (RING_POS(word) > h)
            continue; /* our view of head is stale */
        return NULL;
    }
}

bool mp__pool_ring_ready(pool_shm *s) { return ring_ready(s); }

job *mp__pool_take(pool_shm *s, unsigned w)
{
    uint64_t pos;
    job *j = claim(s, w, &pos);
    if (j == NULL)
        return NULL;
    worker_slot *ws = &s->workers[w];
    atomic_store(&ws->current_seq, atomic_load(&j->seq));
    atomic_store(&ws->current, j);
    atomic_store(&s->ring[pos & (s->ring_size - 1)].word, RING_WORD(pos + s->ring_size, TAG_FREE));
    return j;
}

bool mp__pool_job_begin(pool_shm *s, unsigned w, job *j)
{
    uint32_t q = JOB_QUEUED;
    if (!atomic_compare_exchange_strong(&j->state, &q, JOB_RUNNING)) {
        mp__pool_push_done(s, w, j);
        return false;
    }
    atomic_fetch_add(&s->workers[w].tasks, 1);
    return true;
}

/* Wait for work.  Returns true when the worker should exit. */
static bool idle_wait(pool_shm *s, bool parallel)
{
    if (atomic_load(&s->stopping) && !ring_ready(s))
        return true;
    uint32_t zero = 0;
    if (parallel && atomic_compare_exchange_strong(&s->spinners, &zero, 1)) {
        int64_t end = mp__now_ns() + SPIN_NS;
        bool found = false;
        unsigned rounds = 0;
        do {
            for (int i = 0; i < 32 && !(found = ring_ready(s)); i++)
                mp__cpu_relax();
            if (!found && ++rounds % 8 == 0)
                mp__yield(); /* more threads than CPUs: let them run */
        } while (!found && !atomic_load(&s->stopping) && mp__now_ns() < end);
        atomic_store(&s->spinners, 0);
        if (found)
            return false;
    }
    atomic_fetch_add(&s->sleepers, 1);
    /* A wake meant for a sleeper that never took it (one killed while
     * asleep still counts in sleepers) must not stop ours. */
    atomic_store(&s->waking, 0);
    uint32_t seen = atomic_load(&s->task_seq);
    if (!ring_ready(s) && !atomic_load(&s->stopping))
        mp__futex_wait(&s->task_seq, seen, mp__now_ns() + SLEEP_SLICE_NS);
    atomic_fetch_sub(&s->sleepers, 1);
    atomic_store(&s->waking, 0);
    return false;
}

void mp__pool_wake_worker(pool_shm *s)
{
    uint32_t no = 0;
    if (atomic_load(&s->sleepers) && !atomic_load(&s->spinners) &&
        atomic_compare_exchange_strong(&s->waking, &no, 1)) {
        atomic_fetch_add(&s->task_seq, 1);
        mp__futex_wake(&s->task_seq, 1);
    }
}

/* ---- running ---- */

static void run_apply(job *j)
{
    mp_buf b = {0};
    size_t off = 0;
    if (j->arg == j->inline_buf)
        off = (j->len + 15) & ~(size_t)15;
    if (off < JOB_INLINE) {
        b.data = j->inline_buf + off;
        b.cap = JOB_INLINE - off;
    }
    int rc = j->fn(j->arg, j->len, &b);
    if (rc == 0 && b.err)
        rc = b.err;
    memset(&j->info, 0, sizeof j->info);
    if (rc != 0) {
        if (b.heap)
            mp__heap_free(b.data);
        j->res = NULL;
        j->res_len = 0;
        j->info.code = b.err && rc == b.err ? b.err : MP_ETASK;
        j->info.task_rc = rc;
    } else {
        j->res = b.len ? b.data : NULL;
        j->res_len = b.len;
    }
    mp__pool_job_ended(j);
}

void mp__pool_job_ended(job *j)
{
    if (j->notify) {
        atomic_store(&j->state, JOB_ENDED); /* the collector finishes it */
        return;
    }
    atomic_store(&j->state, JOB_DONE);
    if (atomic_load(&j->waiters))
        mp__futex_wake(&j->state, INT32_MAX);
}

static void run_chunk(job *j)
{
    uint32_t i = j->start, n = j->count;
    bool timed = j->timeout_ns != 0;
    j->nfail = 0;
    for (; i < n; i++) {
        if (timed)
            atomic_store_explicit(&j->item_start, mp__now_ns(), memory_order_relaxed);
        atomic_store_explicit(&j->cur, i, memory_order_relaxed);
        int rc = j->mfn(j->in + (size_t)i * j->in_size, j->out + (size_t)i * j->out_size);
        if (rc != 0) {
            j->fails[j->nfail].item = i;
            j->fails[j->nfail].rc = rc;
            if (++j->nfail == CHUNK_FAILS) {
                i++;
                break;
            }
        }
    }
    atomic_store(&j->cur, i);
    atomic_store(&j->state, JOB_STOPPED);
}

static void run_job(pool_shm *s, unsigned w, job *j, bool process)
{
    uint32_t q = JOB_QUEUED;
    if (j->timeout_ns)
        atomic_store(&j->item_start, mp__now_ns());
    if (!atomic_compare_exchange_strong(&j->state, &q, JOB_RUNNING)) {
        mp__pool_push_done(s, w, j); /* cancelled while queued */
        return;
    }
    if (j->timeout_ns && atomic_load(&s->collector_sleeping))
        mp__notify(s->notify_fd); /* the collector must watch the clock */
    if (j->nfds) {
        int rc = 0;
        if (process) {
            rc = fetch_fds(j);
        } else {
            memcpy(task_fds, j->fds, j->nfds * sizeof(int));
            task_nfds = j->nfds;
        }
        if (rc < 0) {
            drop_fds(process);
            memset(&j->info, 0, sizeof j->info);
            j->info.code = rc;
            mp__pool_job_ended(j);
            mp__pool_push_done(s, w, j);
            return;
        }
    }
    if (j->kind == JOB_APPLY)
        run_apply(j);
    else
        run_chunk(j);
    drop_fds(process);
    mp__pool_push_done(s, w, j);
}

void mp__pool_worker_run(pool_shm *s, unsigned w, bool process)
{
    worker_index = (int)w;
    worker_slot *ws = &s->workers[w];
    bool parallel = mp__can_run_in_parallel();
    if (s->initializer)
        s->initializer(s->initarg);
    unsigned done = 0;
    for (;;) {
        uint64_t pos;
        job *j = claim(s, w, &pos);
        if (j == NULL) {
            if (idle_wait(s, parallel))
                break;
            continue;
        }
        atomic_store(&ws->current_seq, atomic_load(&j->seq));
        atomic_store(&ws->current, j);
        atomic_store(&s->ring[pos & (s->ring_size - 1)].word,
                     RING_WORD(pos + s->ring_size, TAG_FREE));
        /* More work waiting and nobody looking for it: wake a sleeper. */
        if (ring_ready(s))
            mp__pool_wake_worker(s);
        run_job(s, w, j, process);
        atomic_store(&ws->current, NULL);
        atomic_fetch_add(&ws->tasks, 1);
        if (s->maxtasks && ++done >= s->maxtasks)
            break;
    }
    worker_index = -1;
    if (process) {
        fflush(NULL);
        _exit(0);
    }
}

/* ---- the fork server ---- */

static int send_msg(int sock, int op, int slot, int pid, int status, int fd)
{
    srv_msg m = {op, slot, pid, status};
    struct iovec iov = {&m, sizeof m};
    return mp__io_write_all(sock, true, &iov, 1, fd);
}

static _Noreturn void worker_main(pool_shm *s, unsigned w, pid_t server, int ctl)
{
    if (mp__die_with_parent(server, SIGKILL) < 0)
        _exit(1);
    ctl_fd = ctl;
    mp__worker_signals();
    mp__pool_worker_run(s, w, true);
    _exit(0); /* not reached */
}

/* The fork server's table of its workers: pid by slot (0: none). */
typedef struct {
    pid_t *pids;
    unsigned n;
} srv_table;

/* Stop: take the workers still running with us. */
static _Noreturn void server_exit(srv_table *t, int watch)
{
    for (unsigned i = 0; i < t->n; i++)
        if (t->pids[i] > 0)
            kill(t->pids[i], SIGKILL); /* not reaped yet: still ours */
    for (unsigned i = 0; i < t->n; i++)
        if (t->pids[i] > 0)
            waitpid(t->pids[i], NULL, 0);
    (void)watch;
    _exit(0);
}

/* Move a descriptor of the server's to `high` or above (see server_main). */
static int above(int fd, int high)
{
    if (high < 0 || fd < 0 || fd >= high)
        return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, high);
    if (moved < 0)
        return fd;
    close(fd);
    return moved;
}

/* Workers that exited: tell the parent, free their slots. */
static void reap_workers(srv_table *t, int sock, int watch)
{
    pid_t pid;
    int code;
    while (mp__child_reap_any(watch, &pid, &code) > 0)
        for (unsigned w = 0; w < t->n; w++)
            if (t->pids[w] == pid) {
                t->pids[w] = 0;
                send_msg(sock, SRV_EXITED, (int)w, pid, code, -1);
                break;
            }
}

/* Fork worker w; tell the parent its pid, with a pidfd for it. */
static void spawn_worker(pool_shm *s, srv_table *t, unsigned w, int ctl, int sock, int high,
                         pid_t self)
{
    pid_t pid = mp__fork();
    if (pid == 0) {
        mp__close_from_except(high, ctl); /* our own descriptors */
        worker_main(s, w, self, ctl);
    }
    close(ctl);
    if (pid < 0) {
        send_msg(sock, SRV_FAILED, (int)w, 0, (int)pid, -1);
        return;
    }
    t->pids[w] = pid;
    /* The parent watches the worker through a pidfd of its own; ours is
     * closed once sent (the server reaps by SIGCHLD, holding no descriptor
     * per worker, so that forks stay cheap with thousands of workers). */
    int fd = mp__pidfd_open(pid);
    send_msg(sock, SRV_SPAWNED, (int)w, pid, 0, fd);
    if (fd >= 0)
        close(fd);
}

static _Noreturn void server_main(pool_shm *s, int sock, pid_t parent)
{
    if (mp__die_with_parent(parent, SIGKILL) < 0)
        _exit(1);
    signal(SIGINT, SIG_IGN);
    /* Our own descriptors go above every one inherited from the parent, so
     * that a new worker drops them with one close_range and keeps the
     * parent's.  (The collector that forked us blocks every signal, so
     * SIGCHLD is blocked, as the child watch needs.) */
    int high = mp__fd_high_water();
    if (high < 0)
        _exit(1);
    sock = above(sock, high);
    srv_table t = {calloc(s->nworkers, sizeof(pid_t)), s->nworkers};
    int ep = above(mp__poller_new(), high);
    int watch = above(mp__child_watch_new(), high);
    if (t.pids == NULL || ep < 0 || watch < 0 || mp__poller_add(ep, sock, 0) < 0 ||
        mp__poller_add(ep, watch, 1) < 0)
        _exit(1);
    pid_t self = getpid();
    for (;;) {
        uint64_t tags[2];
        int k = mp__poller_wait(ep, tags, 2, MP__NO_DEADLINE);
        for (int e = 0; e < k; e++) {
            if (tags[e] == 1) {
                reap_workers(&t, sock, watch);
                continue;
            }
            srv_msg m;
            size_t got = 0;
            int ctl = -1;
            while (got < sizeof m) {
                int fds[MP__IO_MAX_FDS], nfds = 0;
                ssize_t r = mp__io_read(sock, true, (char *)&m + got, sizeof m - got, false, fds, &nfds);
                for (int f = 0; f < nfds; f++) {
                    if (ctl < 0)
                        ctl = fds[f]; /* the worker's control socket */
                    else
                        close(fds[f]);
                }
                if (r <= 0)
                    server_exit(&t, watch); /* the pool is gone */
                got += (size_t)r;
            }
            if (m.op == SRV_STOP)
                server_exit(&t, watch);
            bool valid = m.slot >= 0 && (unsigned)m.slot < t.n;
            if (m.op == SRV_KILL) {
                /* A worker whose pidfd the parent could not take in; not
                 * reaped yet (its slot still names it), so still ours. */
                if (ctl >= 0)
                    close(ctl);
                if (valid && t.pids[m.slot] == m.pid && m.pid > 0)
                    kill(m.pid, SIGKILL);
                continue;
            }
            if (m.op != SRV_SPAWN || !valid || t.pids[m.slot] != 0 || ctl < 0) {
                if (ctl >= 0)
                    close(ctl);
                continue;
            }
            spawn_worker(s, &t, (unsigned)m.slot, ctl, sock, high, self);
        }
    }
}

pid_t mp__pool_server_start(pool_shm *s, int *sock, const int *drop, int ndrop)
{
    int sv[2];
    int rc = mp__io_pair(sv, true);
    if (rc < 0)
        return rc;
    pid_t parent = mp__getpid();
    pid_t pid = mp__fork();
    if (pid == 0) {
        close(sv[0]);
        for (int i = 0; i < ndrop; i++)
            close(drop[i]);
        server_main(s, sv[1], parent);
    }
    close(sv[1]);
    if (pid < 0) {
        close(sv[0]);
        return pid;
    }
    *sock = sv[0];
    return pid;
}
