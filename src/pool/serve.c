/* mp_pool_serve: a pre-fork server on a process pool.
 *
 * The parent submits one serve task per worker, carrying the listening
 * socket and a stop notifier (descriptors travel with tasks), and then
 * only watches the tasks: no connection passes through it.  Each worker
 * loops: accept (the socket is non-blocking; when nothing waits, it sleeps
 * in its own epoll set, which holds the socket EPOLLEXCLUSIVE, so that one
 * connection wakes one idle worker, not all), mark the task's item as
 * begun (the supervisor's per-item deadline, as for map items), call the
 * handler, close, mark it idle (between items the deadline does not run),
 * count it in the worker's slot.
 *
 * A serve task's life, with who ends it and what the parent does:
 *
 *   submitted ──► serving ──┬─ stop seen, connections done (worker) ─► 0: drained
 *      ▲                    ├─ max_requests reached (worker: retires) ─► 0 ──┐
 *      │                    ├─ worker died (supervisor) ─► MP_EWORKER... ────┤
 *      │                    └─ past the deadline (supervisor) ─► MP_EDEADLINE┤
 *      └──────────────────── resubmitted (parent), unless stopping ◄─────────┘
 *
 * Stopping: mp_pool_serve_stop sets the run's shared stop word and
 * notifies the stop descriptor (both async-signal-safe); workers look at
 * the word before each accept and wake on the descriptor when idle.  The
 * parent then waits for the tasks up to graceful_timeout, and kills the
 * workers still busy by giving their tasks a deadline already past.
 *
 * With coroutines, a worker runs an acceptor coroutine and one coroutine
 * per connection on its scheduler; the task's deadline becomes a
 * heartbeat that the acceptor renews every quarter of it, so a handler
 * that blocks the scheduler past the limit gets the worker killed. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "heap_int.h"
#include "mproc/coro.h"
#include "mproc/error.h"
#include "mproc/pool.h"
#include "os/io.h"
#include "os/os.h"
#include "pool/batch.h"
#include "pool/core.h"
#include "pool/worker.h"

#define STOP_LOOK_NS 100000000LL   /* a coroutine acceptor looks at the stop word */
#define BUSY_BACKOFF_NS 10000000LL /* out of descriptors: wait before accepting again */
#define WATCH_SLICE_NS 100000000LL /* the parent looks at its tasks at least this often */

/* What a serve task carries (copied into the task's argument). */
typedef struct {
    mp_serve_fn handle;
    void *ud;
    unsigned max_requests;
    unsigned coroutines;
    int64_t timeout_ns;
    _Atomic uint32_t *stop;         /* the pool's count of stops (shared heap) */
    uint32_t stop_seen;             /* ... when this serve began */
} serve_arg;

/* ---- in the worker ---- */

static bool stopping(const serve_arg *a)
{
    return atomic_load_explicit(a->stop, memory_order_relaxed) != a->stop_seen;
}

static void item_begin(job_shm *j, uint64_t n)
{
    if (j == NULL)
        return;
    atomic_store_explicit(&j->item_start, mp__now_ns(), memory_order_relaxed);
    atomic_store_explicit(&j->cur, n, memory_order_release);
}

static void item_idle(job_shm *j)
{
    if (j != NULL)
        atomic_store_explicit(&j->cur, BATCH_NO_ITEM, memory_order_release);
}

/* Accept the next connection, waiting (in poller, or sleeping briefly when
 * out of descriptors) while none is there.  *direct says whether the last
 * try without waiting found one: when it did not, wait first (an accept
 * that would fail costs a system call on every connection of a server
 * that keeps up with its clients).  The descriptor, -ECANCELED once
 * stopping, or another -errno the socket gives (it was shut down...). */
static int next_connection(const serve_arg *a, int lfd, int stop_fd, int poller, bool *direct)
{
    for (;;) {
        if (stopping(a))
            return -ECANCELED;
        uint64_t tag;
        if (!*direct) {
            int rc = mp__poller_wait(poller, &tag, 1, MP__NO_DEADLINE);
            if (rc < 0 && rc != -EINTR)
                return rc;
            if (stopping(a))
                return -ECANCELED;
        }
        int c = mp__io_accept_now(lfd);
        *direct = c >= 0;
        if (c >= 0)
            return c;
        switch (c) {
        case -EAGAIN:
#if EAGAIN != EWOULDBLOCK
        case -EWOULDBLOCK:
#endif
        case -EINTR:
        case -ECONNABORTED:
        case -EPROTO:
        case -EPERM: /* a firewall said no to this one */
            break;
        case -EMFILE:
        case -ENFILE:
        case -ENOBUFS:
        case -ENOMEM: /* (not on the socket: it stays readable) */
            mp__io_wait_any(&stop_fd, 1, mp__now_ns() + BUSY_BACKOFF_NS);
            break;
        default:
            return c;
        }
    }
}

/* A connection handled (failed: its handler's value was not 0). */
static void count_conn(item_counts n, bool failed)
{
    item_count_add(n.done, 1);
    if (failed)
        item_count_add(n.failed, 1);
}

static int serve_blocking(const serve_arg *a, int lfd, int stop_fd, int poller, item_counts cnt)
{
    job_shm *j = mp__worker_job();
    item_idle(j);
    bool direct = true;
    for (uint64_t n = 0;;) {
        int c = next_connection(a, lfd, stop_fd, poller, &direct);
        if (c == -ECANCELED)
            return 0;
        if (c < 0)
            return c;
        item_begin(j, n);
        int rc = a->handle(c, a->ud);
        close(c);
        item_idle(j);
        count_conn(cnt, rc != 0);
        if (a->max_requests && ++n >= a->max_requests) {
            mp__worker_retire();
            return 0;
        }
    }
}

/* With coroutines. */
typedef struct {
    const serve_arg *a;
    int lfd;
    unsigned active;
    int err;
    item_counts cnt;
} co_server;

typedef struct {
    co_server *srv;
    int fd;
} co_conn;

static void co_handle(void *arg)
{
    co_conn *k = arg;
    co_server *srv = k->srv;
    int rc = srv->a->handle(k->fd, srv->a->ud);
    close(k->fd);
    free(k);
    srv->active--;
    count_conn(srv->cnt, rc != 0);
}

static void co_accept(void *arg)
{
    co_server *srv = arg;
    const serve_arg *a = srv->a;
    job_shm *j = mp__worker_job();
    /* The deadline is a heartbeat: renewed here, at least every quarter
     * of it, so it passes only if the scheduler does not come back. */
    int64_t beat = a->timeout_ns > 0 ? a->timeout_ns / 4 : STOP_LOOK_NS;
    if (beat > STOP_LOOK_NS)
        beat = STOP_LOOK_NS;
    item_begin(j, 0);
    for (uint64_t n = 0; !stopping(a) && (!a->max_requests || n < a->max_requests);) {
        item_begin(j, 0);
        if (srv->active >= a->coroutines) {
            mp_co_sleep((double)beat / 4e9);
            continue;
        }
        int c = mp__io_accept_now(srv->lfd);
        if (c == -EAGAIN || c == -EWOULDBLOCK) {
            mp_co_wait_fd(srv->lfd, MP_READABLE, (double)beat / 1e9);
            continue;
        }
        if (c == -EINTR || c == -ECONNABORTED || c == -EPROTO || c == -EPERM)
            continue;
        if (c == -EMFILE || c == -ENFILE || c == -ENOBUFS || c == -ENOMEM) {
            mp_co_sleep((double)BUSY_BACKOFF_NS / 1e9);
            continue;
        }
        if (c < 0) {
            srv->err = c;
            break;
        }
        co_conn *k = malloc(sizeof *k);
        if (k == NULL || mp_co_nonblock(c) < 0 || mp_co_spawn(NULL, co_handle, k, 0) < 0) {
            free(k);
            close(c);
            count_conn(srv->cnt, true);
            continue;
        }
        k->srv = srv;
        k->fd = c;
        srv->active++;
        n++;
    }
    /* Stopped or recycled: the connections held end first. */
    while (srv->active > 0) {
        item_begin(j, 0);
        mp_co_sleep((double)beat / 1e9);
    }
    if (a->max_requests && !stopping(a) && srv->err == 0)
        mp__worker_retire();
}

static int serve_coroutines(const serve_arg *a, int lfd, item_counts cnt)
{
    co_server srv = {.a = a, .lfd = lfd, .cnt = cnt};
    int rc = mp_co_spawn(NULL, co_accept, &srv, 0);
    if (rc < 0)
        return rc;
    rc = mp_co_run();
    return rc < 0 ? rc : srv.err;
}

static int serve_task(const void *arg, size_t len, mp_buf *result)
{
    (void)result;
    serve_arg a;
    if (len != sizeof a || mp_task_nfds() != 2)
        return -EINVAL;
    memcpy(&a, arg, sizeof a);
    int lfd = mp_task_fd(0), stop_fd = mp_task_fd(1);
    item_counts cnt = mp__worker_item_counts(); /* connections, not the task */
    if (a.coroutines)
        return serve_coroutines(&a, lfd, cnt);
    int poller = mp__poller_new();
    if (poller < 0)
        return poller;
    int rc = mp__poller_add_exclusive(poller, lfd, 0);
    if (rc == 0)
        rc = mp__poller_add(poller, stop_fd, 1);
    if (rc == 0)
        rc = serve_blocking(&a, lfd, stop_fd, poller, cnt);
    close(poller);
    return rc;
}

/* ---- in the parent ---- */

/* A serve task ended (on the collector): wake the serving thread, which
 * sleeps on this notifier and the stop's instead of polling its results. */
static void ended(const void *res, size_t len, void *ud)
{
    (void)res;
    (void)len;
    mp__notify((int)(intptr_t)ud);
}

static void ended_err(int code, void *ud)
{
    (void)code;
    mp__notify((int)(intptr_t)ud);
}

static int submit(mp_pool *p, const serve_arg *a, const int fds[2], double timeout, int ended_fd,
                  mp_result **out)
{
    mp_task_opts o = {.timeout = timeout > 0 ? timeout : -1, .fds = fds, .nfds = 2,
                      .callback = ended, .error_callback = ended_err,
                      .ud = (void *)(intptr_t)ended_fd};
    return mp_pool_apply_async(p, serve_task, a, sizeof *a, &o, out);
}

/* Count how task r ended; true if the serve must end (the pool did, or
 * the socket failed: *err). */
static bool count_end(pool_core *c, mp_result *r, int *err)
{
    mp_task_info info;
    int rc = mp_result_info(r, &info);
    if (rc < 0 || info.code == MP_ECANCELED || info.code == MP_ECLOSED) {
        *err = MP_ECLOSED;
        return true;
    }
    switch (info.code) {
    case 0: c->serve.stats.recycled++; break;
    case MP_EDEADLINE: c->serve.stats.timeouts++; /* fall through */
    case MP_EWORKER:
    case MP_EMEMORY: c->serve.stats.worker_deaths++; break;
    case MP_ETASK: /* the socket failed in the worker */
        *err = info.task_rc < 0 ? info.task_rc : -EIO;
        return true;
    default: break;
    }
    return false;
}

/* Kill the workers of the tasks still running: a deadline already past. */
static void kill_running(pool_core *c, mp_result **rs, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (rs[i] == NULL || mp_result_ready(rs[i]))
            continue;
        job_shm *s = ((job *)rs[i])->shm;
        __atomic_store_n(&s->timeout_ns, 1, __ATOMIC_RELAXED);
        atomic_store(&s->item_start, 0);
        atomic_store(&s->cur, 0);
    }
    mp__pool_kick(c);
}

/* Connections so far: every end the workers counted since the serve
 * began (a connection lost with its worker too). */
static void live_counts(pool_core *c, mp_serve_stats *out)
{
    mp_pool_stats st;
    if (mp_pool_get_stats(c->handle, &st) == 0) {
        out->connections = st.tasks_done - c->serve.done0;
        out->failed = st.tasks_failed - c->serve.failed0;
    }
}

/* The stop count and its notifier, made at a pool's first serve. */
static int serve_prepare(pool_core *c)
{
    if (c->serve.stop != NULL)
        return 0;
    int rc = 0;
    _Atomic uint32_t *stop = mp__heap_calloc(sizeof *stop, &rc);
    if (stop == NULL)
        return rc ? rc : -ENOMEM;
    int fd = mp__notifier_new();
    if (fd < 0) {
        mp__heap_free(stop);
        return fd;
    }
    c->serve.stop_fd = fd;
    c->serve.stop = stop;
    return 0;
}

void mp__serve_release(pool_core *c)
{
    if (c->serve.stop == NULL)
        return;
    close(c->serve.stop_fd);
    mp__heap_free(c->serve.stop);
    c->serve.stop = NULL;
}

/* Wait for the serve tasks to end, killing their workers once
 * graceful_timeout has passed. */
static void drain(pool_core *c, mp_result **rs, unsigned n, double graceful)
{
    int64_t give_up = mp__now_ns() + (int64_t)(graceful * 1e9);
    bool killed = false;
    for (unsigned i = 0; i < n; i++) {
        if (rs[i] == NULL)
            continue;
        while (mp_result_wait(rs[i], 0.1) == MP_ETIMEDOUT)
            if (!killed && mp__now_ns() >= give_up) {
                kill_running(c, rs, n);
                killed = true;
            }
        mp_task_info info;
        if (mp_result_info(rs[i], &info) == 0 && info.code != 0 && info.code != MP_ECANCELED)
            c->serve.stats.worker_deaths++;
        mp_result_free(rs[i]);
        rs[i] = NULL;
    }
}

int mp_pool_serve(mp_pool *p, int listen_fd, mp_serve_fn handle, void *ud,
                  const mp_serve_opts *opts)
{
    pool_core *c;
    int rc = mp__pool_check(p, &c);
    if (rc < 0)
        return rc == -EPERM ? -EINVAL : rc;
    mp_serve_opts o = opts ? *opts : (mp_serve_opts){0};
    if (handle == NULL || isnan(o.timeout) || isnan(o.graceful_timeout) ||
        o.graceful_timeout < 0)
        return -EINVAL;
    if (c->be != &mp__backend_process)
        return -ENOTSUP;
    if ((rc = mp__io_is_listening(listen_fd)) <= 0)
        return rc == 0 ? -EINVAL : rc;
    if (o.graceful_timeout == 0)
        o.graceful_timeout = 30;
    if (!mp__pool_accepting(c))
        return MP_ECLOSED;
    if (atomic_load(&c->serve.active))
        return -EBUSY;
    if ((rc = serve_prepare(c)) < 0)
        return rc;
    /* A stop counts once the serve is active; one that came before is
     * forgotten (its count is the start, its notice drained). */
    mp__notifier_drain(c->serve.stop_fd);
    uint32_t seen = atomic_load(c->serve.stop);
    int idle = 0;
    if (!atomic_compare_exchange_strong(&c->serve.active, &idle, 1))
        return -EBUSY;
    unsigned n = c->nworkers;
    mp_result **rs = calloc(n, sizeof *rs);
    bool was_nonblock = false;
    int ended_fd = mp__notifier_new();
    rc = rs == NULL ? -ENOMEM : ended_fd < 0 ? ended_fd
                                             : mp__io_set_nonblock(listen_fd, true, &was_nonblock);

    c->serve.stats = (mp_serve_stats){0};
    mp_pool_stats st0 = {0};
    mp_pool_get_stats(p, &st0);
    c->serve.done0 = st0.tasks_done;
    c->serve.failed0 = st0.tasks_failed;
    serve_arg a = {handle, ud, o.max_requests, o.coroutines,
                   o.timeout > 0 ? (int64_t)(o.timeout * 1e9) : 0, c->serve.stop, seen};
    int fds[2] = {listen_fd, c->serve.stop_fd};
    for (unsigned i = 0; rc == 0 && i < n; i++)
        rc = submit(p, &a, fds, o.timeout, ended_fd, &rs[i]);

    /* Watch: each task that ends is counted and sent again.  Its callback
     * wakes us (before its result reads as ready: hence a slice). */
    int wake[2] = {c->serve.stop_fd, ended_fd};
    while (rc == 0 && atomic_load(c->serve.stop) == seen) {
        mp__io_wait_any(wake, 2, mp__now_ns() + WATCH_SLICE_NS);
        mp__notifier_drain(ended_fd);
        for (unsigned i = 0; rc == 0 && i < n && atomic_load(c->serve.stop) == seen; i++) {
            if (!mp_result_ready(rs[i]))
                continue;
            if (count_end(c, rs[i], &rc))
                break;
            mp_result_free(rs[i]);
            rs[i] = NULL;
            rc = submit(p, &a, fds, o.timeout, ended_fd, &rs[i]);
        }
    }

    /* Stop: every worker ends its connections and returns. */
    if (atomic_load(c->serve.stop) == seen)
        atomic_fetch_add(c->serve.stop, 1);
    mp__notify(c->serve.stop_fd);
    if (rs != NULL)
        drain(c, rs, n, o.graceful_timeout);
    free(rs);
    if (ended_fd >= 0)
        close(ended_fd);
    if (!was_nonblock)
        mp__io_set_nonblock(listen_fd, false, NULL);
    live_counts(c, &c->serve.stats); /* kept as they are now */
    atomic_store(&c->serve.active, 0);
    return rc;
}

int mp_pool_serve_stop(mp_pool *p)
{
    if (p == NULL)
        return -EINVAL;
    pool_core *c = p->c;
    if (!atomic_load(&c->serve.active))
        return -ESRCH;
    atomic_fetch_add(c->serve.stop, 1);
    mp__notify(c->serve.stop_fd);
    return 0;
}

int mp_pool_serve_stats(mp_pool *p, mp_serve_stats *out)
{
    pool_core *c;
    int rc = mp__pool_check(p, &c);
    if (rc < 0 || out == NULL)
        return rc < 0 ? rc : -EINVAL;
    *out = c->serve.stats;
    if (atomic_load(&c->serve.active))
        live_counts(c, out);
    return 0;
}
