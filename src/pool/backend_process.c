/* Process workers: the parent's side of the fork server.
 *
 * The supervisor asks the server for workers (SPAWN, with the worker's
 * control socket), at most SPAWN_WINDOW unanswered at once: the answers
 * then always fit in the socket, so neither side can block writing while
 * the other does.  The server answers with the worker's pidfd, which the
 * supervisor watches; the worker has ended once both the pidfd and the
 * server's EXITED report have come (the report says how).  A pidfd lost
 * on the way (no descriptor to spare here: MSG_CTRUNC) leaves a worker
 * that still runs: its exit comes from the server, and kills go through
 * the server too.  A worker's control socket serves its requests for the
 * descriptors of the job it runs.
 *
 * The server dies only if killed from outside; its workers die with it
 * (PR_SET_PDEATHSIG): every worker is then ended with SIGKILL and the
 * pool terminates, since none can be started any more. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "os/io.h"
#include "os/os.h"
#include "pool/core.h"
#include "pool/forkserver.h"
#include "pool/worker.h"

#define SPAWN_WINDOW 16

/* Poller tags: TAG_BACKEND is the server's socket, then two a worker. */
#define TAG_PIDFD(w) (TAG_BACKEND + 1 + 2 * (uint64_t)(w))
#define TAG_CTL(w) (TAG_BACKEND + 2 + 2 * (uint64_t)(w))

typedef struct {
    int sock;                   /* to the fork server */
    int pidfd;                  /* the server's */
    unsigned *queue;            /* slots waiting for a spawn request */
    unsigned head, len;
    unsigned out;               /* requests not yet answered */
} proc_state;

static proc_state *state(pool_core *c) { return c->be_state; }

static int proc_open(pool_core *c)
{
    proc_state *ps = calloc(1, sizeof *ps);
    if (ps == NULL)
        return -ENOMEM;
    ps->sock = ps->pidfd = -1;
    ps->queue = calloc(c->nworkers, sizeof *ps->queue);
    c->be_state = ps;
    if (ps->queue == NULL)
        return -ENOMEM;
    int drop[1] = {c->poller};
    pid_t pid = mp__forkserver_start(c->s, &ps->sock, drop, 1);
    if (pid < 0)
        return pid;
    ps->pidfd = mp__pidfd_open(pid);
    if (ps->pidfd < 0) {
        int rc = ps->pidfd;
        mp__kill_and_reap(pid);
        return rc;
    }
    return mp__poller_add(c->poller, ps->sock, TAG_BACKEND);
}

static void proc_close(pool_core *c)
{
    proc_state *ps = state(c);
    if (ps == NULL)
        return;
    if (ps->pidfd >= 0) {
        /* A message, not just EOF: a child forked from the parent
         * meanwhile may hold a copy of our end of the socket. */
        srv_msg m = {SRV_STOP, 0, 0, 0};
        struct iovec iov = {&m, sizeof m};
        mp__io_write_all(ps->sock, true, &iov, 1, -1);
        int code;
        if (mp__pidfd_reap(ps->pidfd, mp__now_ns() + 5000000000LL, &code) < 0) {
            mp__pidfd_send_signal(ps->pidfd, SIGKILL);
            mp__pidfd_reap(ps->pidfd, MP__NO_DEADLINE, &code);
        }
        close(ps->pidfd);
    }
    if (ps->sock >= 0)
        close(ps->sock);
    free(ps->queue);
    free(ps);
    c->be_state = NULL;
}

/* Ask the server for queued workers while the window has room. */
static void send_spawns(pool_core *c)
{
    proc_state *ps = state(c);
    while (ps->out < SPAWN_WINDOW && ps->len > 0) {
        unsigned w = ps->queue[ps->head];
        ps->head = (ps->head + 1) % c->nworkers;
        ps->len--;
        worker_rec *r = &c->w[w];
        if (r->life != WK_QUEUED)
            continue; /* ended meanwhile (the server died) */
        if (!mp__sup_may_spawn(c)) {
            mp__sup_spawn_failed(c, w);
            continue;
        }
        int sv[2];
        int rc = mp__io_pair(sv, true);
        if (rc == 0) {
            srv_msg m = {SRV_SPAWN, (int32_t)w, 0, 0};
            struct iovec iov = {&m, sizeof m};
            rc = mp__io_write_all(ps->sock, true, &iov, 1, sv[1]);
            close(sv[1]);
            if (rc == 0)
                rc = mp__poller_add(c->poller, sv[0], TAG_CTL(w));
            if (rc < 0)
                close(sv[0]);
            else
                r->ctl = sv[0];
        }
        if (rc < 0) {
            mp__sup_spawn_failed(c, w);
            continue;
        }
        r->life = WK_REQUESTED;
        ps->out++;
    }
}

static int proc_spawn(pool_core *c, unsigned w)
{
    proc_state *ps = state(c);
    c->w[w].life = WK_QUEUED;
    ps->queue[(ps->head + ps->len++) % c->nworkers] = w;
    send_spawns(c);
    return 0;
}

static void proc_kill(pool_core *c, unsigned w)
{
    worker_rec *r = &c->w[w];
    if (r->pidfd >= 0) {
        mp__pidfd_send_signal(r->pidfd, SIGKILL);
    } else if (r->life == WK_RUNNING) {
        srv_msg m = {SRV_KILL, (int32_t)w, r->pid, 0};
        struct iovec iov = {&m, sizeof m};
        mp__io_write_all(state(c)->sock, true, &iov, 1, -1);
    }
}

static void proc_reap(pool_core *c, unsigned w)
{
    worker_rec *r = &c->w[w];
    if (r->pidfd >= 0) {
        if (!r->exited)
            mp__poller_del(c->poller, r->pidfd);
        close(r->pidfd);
        r->pidfd = -1;
    }
    if (r->ctl >= 0) {
        mp__poller_del(c->poller, r->ctl);
        close(r->ctl);
        r->ctl = -1;
    }
}

static void maybe_ended(pool_core *c, unsigned w)
{
    worker_rec *r = &c->w[w];
    if (r->have_status && (r->exited || r->pidfd < 0))
        mp__sup_worker_ended(c, w);
}

/* The server is gone (killed from outside), and its workers with it. */
static void server_died(pool_core *c)
{
    proc_state *ps = state(c);
    mp__poller_del(c->poller, ps->sock);
    c->workers_lost = true;
    for (unsigned w = 0; w < c->nworkers; w++) {
        worker_rec *r = &c->w[w];
        if (r->life == WK_REQUESTED || r->life == WK_RUNNING) {
            r->status = -SIGKILL;
            r->have_status = true;
            r->exited = true;
            mp__sup_worker_ended(c, w);
        }
    }
    mp__pool_set_terminating(c);
}

static void read_server(pool_core *c)
{
    proc_state *ps = state(c);
    for (;;) {
        srv_msg m;
        int fds[MP__IO_MAX_FDS], nfds = 0;
        bool lost; /* a pidfd that found no free descriptor here */
        ssize_t r = mp__io_recv(ps->sock, &m, sizeof m, true, fds, &nfds, &lost);
        if (r == -EAGAIN)
            return;
        if (r <= 0) {
            server_died(c);
            return;
        }
        size_t got = (size_t)r;
        while (got < sizeof m) {
            int more = 0;
            ssize_t k = mp__io_read(ps->sock, true, (char *)&m + got, sizeof m - got, false,
                                    fds + nfds, &more);
            if (k <= 0) {
                server_died(c);
                return;
            }
            nfds += more;
            got += (size_t)k;
        }
        if (m.slot >= 0 && (unsigned)m.slot < c->nworkers) {
            unsigned w = (unsigned)m.slot;
            worker_rec *wr = &c->w[w];
            if (m.op == SRV_SPAWNED && wr->life == WK_REQUESTED) {
                ps->out--;
                wr->pid = m.pid;
                wr->life = WK_RUNNING;
                mp__pool_set_pid(c, w, m.pid);
                if (nfds >= 1 && !lost) {
                    wr->pidfd = fds[0];
                    fds[0] = -1;
                    mp__poller_add(c->poller, wr->pidfd, TAG_PIDFD(w));
                }
                if (atomic_load(&c->s->terminating) || c->life == POOL_TERMINATING) {
                    wr->kill_reason = KILL_TERMINATE;
                    proc_kill(c, w);
                } else if (wr->gen < atomic_load(&c->restart_gen)) {
                    wr->kill_reason = KILL_RESTART;
                    proc_kill(c, w);
                }
            } else if (m.op == SRV_EXITED) {
                wr->have_status = true;
                wr->status = m.status;
                maybe_ended(c, w);
            } else if (m.op == SRV_FAILED && wr->life == WK_REQUESTED) {
                ps->out--;
                proc_reap(c, w);
                mp__sup_spawn_failed(c, w);
            }
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
    worker_rec *r = &c->w[w];
    if (r->ctl < 0)
        return;
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
        job_shm *s = (job_shm *)(uintptr_t)rq.job;
        job *j = mp__job_of(&c->jobs, s);
        fd_reply rp = {rq.seq, 0, -ESTALE};
        worker_slot *ws = &c->s->workers[w];
        if (j && atomic_load(&ws->current) == s && atomic_load(&s->seq) == rq.seq &&
            j->nfds <= MP_TASK_MAX_FDS) {
            rp.n = (int32_t)j->nfds;
            rp.err = 0;
        }
        if (mp__io_send_fds(r->ctl, &rp, sizeof rp, rp.err == 0 ? j->fds : NULL,
                            rp.err == 0 ? rp.n : 0) < 0)
            return;
    }
}

static void proc_event(pool_core *c, uint64_t tag)
{
    if (tag == TAG_BACKEND) {
        read_server(c);
        return;
    }
    uint64_t k = tag - TAG_BACKEND - 1;
    unsigned w = (unsigned)(k / 2);
    if (w >= c->nworkers)
        return;
    if (k % 2 == 1) {
        serve_fds(c, w);
        return;
    }
    worker_rec *r = &c->w[w];
    if (r->pidfd >= 0 && !r->exited) {
        r->exited = true;
        mp__poller_del(c->poller, r->pidfd);
        maybe_ended(c, w);
    }
}

static int proc_prepare(mp_pool_opts *o)
{
    int fd = mp__pidfd_open(getpid());
    if (fd < 0)
        return fd;
    close(fd);
    /* Two descriptors a worker here (its pidfd, its control socket) and a
     * few for the pool: refuse now rather than run short later. */
    if (mp__fd_headroom() < 2 * (long)o->workers + 8)
        return -EMFILE;
    return 0;
}

const pool_backend mp__backend_process = {
    .name = "process",
    .caps = BACKEND_KILL | BACKEND_FDS,
    .prepare = proc_prepare,
    .open = proc_open,
    .close = proc_close,
    .spawn = proc_spawn,
    .kill = proc_kill,
    .event = proc_event,
    .reap = proc_reap,
};
