/* The fork server: see forkserver.h.
 *
 * It holds no descriptor per worker (it reaps through a SIGCHLD signalfd,
 * and closes each worker's pidfd once it has sent it to the parent), and
 * its own few descriptors sit above every one inherited from the parent,
 * so that a new worker drops them with one close_range: with thousands of
 * workers a fork stays cheap.  A worker keeps the parent's descriptors, as
 * a child forked by the parent would.  It can kill a worker by pid safely:
 * a pid is not reused before its parent, the server, has reaped it, and
 * the server's single thread reaps only in reap_workers. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "os/io.h"
#include "os/os.h"
#include "pool/forkserver.h"
#include "pool/worker.h"


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
    mp__worker_set_ctl(ctl);
    mp__worker_signals();
    (void)mp__crash_arm(&s->workers[w].crash); /* (without it: no report, no harm) */
    mp__worker_run(s, w, true);
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
     * parent's.  (The supervisor that forked us blocks every signal, so
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

pid_t mp__forkserver_start(pool_shm *s, int *sock, const int *drop, int ndrop)
{
    int sv[2];
    int rc = mp__io_pair(sv, true);
    if (rc < 0)
        return rc;
    pid_t parent = mp__getpid();
    mp__crash_prepare(); /* (loaded here, the workers' handlers need no load) */
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
