/* Processes: fork a child that runs a target, and keep track of it.
 *
 * Every started child has a record in this process's child registry (a
 * list under a process-local mutex).  The record holds the child's pidfd,
 * through which we wait (poll), reap (waitid P_PIDFD) and signal
 * (pidfd_send_signal), so a pid recycled after the child is reaped can never
 * be hit.  A process object points at its record; freeing a running object
 * detaches the record, which the registry then reaps lazily (on later calls)
 * and at exit, when non-daemon children are joined and daemon children are
 * terminated, as Python does.
 *
 * After a fork the registry's records belong to the parent: the child hook
 * closes their pidfds and sets the list aside, to be freed on first use (not
 * in the hook, where only async-signal-safe calls are allowed).  Nothing
 * here lives in shared memory, so a kill -9 has nothing to corrupt. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "mproc/process.h"
#include "os/os.h"
#include "thread_int.h"

typedef struct child {
    struct child *next, *prev;
    pid_t pid;
    int pidfd;      /* -1 once closed; the object's sentinel */
    bool daemon;
    bool reaped;    /* exit status collected: `code` is valid */
    bool detached;  /* its object was freed: the registry owns it */
    int code;       /* exit status, or -signal */
} child;

struct mp_process {
    mp_target fn;
    void *arg;
    char *name;
    bool daemon;
    pid_t owner;    /* process that created this object */
    child *rec;     /* NULL until started */
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static child *reg_head;        /* this process's children */
static child *inherited;       /* parent's records, to free (child side) */
static bool atexit_installed;
static atomic_uint process_counter;

/* ---- registry ---- */

static void reg_unlink(child *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        reg_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
}

static void rec_close(child *c)
{
    if (c->pidfd >= 0) {
        close(c->pidfd);
        c->pidfd = -1;
    }
}

/* Free records inherited from the parent (lock held). */
static void drop_inherited(void)
{
    while (inherited) {
        child *n = inherited->next;
        free(inherited);
        inherited = n;
    }
}

/* Try to collect c's exit status without blocking (lock held).
 * Returns true if c has exited (now or before). */
static bool rec_poll(child *c)
{
    if (c->reaped)
        return true;
    int code;
    int rc = mp__pidfd_reap(c->pidfd, 0, &code); /* deadline 0: never waits */
    if (rc == 0) {
        c->reaped = true;
        c->code = code;
    } else if (rc == -ECHILD) {
        /* Reaped behind our back (SIGCHLD ignored, or someone called
         * wait()): its status is lost. */
        c->reaped = true;
        c->code = 0;
    }
    return c->reaped;
}

/* Reap and free detached children that have exited (lock held). */
static void sweep_detached(void)
{
    drop_inherited();
    child *c = reg_head;
    while (c) {
        child *n = c->next;
        if (c->detached && rec_poll(c)) {
            reg_unlink(c);
            rec_close(c);
            free(c);
        }
        c = n;
    }
}

/* Join or terminate every child still running: the exit-time rule. */
static void reap_all_children(void)
{
    pthread_mutex_lock(&reg_lock);
    drop_inherited();
    for (child *c = reg_head; c; c = c->next)
        if (c->daemon && !rec_poll(c))
            mp__pidfd_send_signal(c->pidfd, SIGTERM);
    for (child *c = reg_head; c; c = c->next) {
        if (c->reaped || c->pidfd < 0)
            continue;
        int code;
        int rc = mp__pidfd_reap(c->pidfd, MP__NO_DEADLINE, &code);
        c->reaped = true;
        c->code = rc == 0 ? code : 0;
    }
    pthread_mutex_unlock(&reg_lock);
}

static void at_exit(void)
{
    /* Only the process that installed the handler has children here; a
     * forked child that calls exit() finds its own registry (see the
     * child hook). */
    reap_all_children();
}

static void reg_prepare(void) { pthread_mutex_lock(&reg_lock); }
static void reg_parent(void) { pthread_mutex_unlock(&reg_lock); }

static void reg_child(void)
{
    /* Async-signal-safe only: close the parent's pidfds, set the list
     * aside, and make the registry empty. */
    for (child *c = reg_head; c; c = c->next)
        rec_close(c);
    if (reg_head) {
        child *tail = reg_head;
        while (tail->next)
            tail = tail->next;
        tail->next = inherited;
        inherited = reg_head;
    }
    reg_head = NULL;
    pthread_mutex_unlock(&reg_lock);
}

__attribute__((constructor)) static void process_register_fork_hooks(void)
{
    static const mp__fork_hooks hooks = {
        .rank = MP__RANK_PROCESS,
        .prepare = reg_prepare,
        .parent = reg_parent,
        .child = reg_child,
    };
    mp__fork_hooks_add(&hooks);
}

/* ---- kernel support ---- */

static int pidfd_support(void)
{
    static int cached = 1; /* 1: unknown, 0: yes, < 0: error */
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v != 1)
        return v;
    int fd = mp__pidfd_open(getpid());
    v = fd >= 0 ? 0 : (fd == -ENOSYS ? -ENOSYS : 0);
    if (fd >= 0)
        close(fd);
    __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    return v;
}

/* ---- the object ---- */

static int check(const mp_process *p)
{
    if (p == NULL)
        return -EINVAL;
    if (p->owner != mp__getpid())
        return -EPERM;
    return 0;
}

int mp_process_new(mp_process **out, mp_target fn, void *arg,
                   const mp_process_opts *opts)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (fn == NULL)
        return -EINVAL;
    mp_process *p = calloc(1, sizeof *p);
    if (p == NULL)
        return -ENOMEM;
    if (opts != NULL && opts->name != NULL && opts->name[0] != '\0') {
        p->name = strdup(opts->name);
    } else {
        char buf[32];
        snprintf(buf, sizeof buf, "Process-%u", atomic_fetch_add(&process_counter, 1) + 1);
        p->name = strdup(buf);
    }
    if (p->name == NULL) {
        free(p);
        return -ENOMEM;
    }
    p->fn = fn;
    p->arg = arg;
    p->daemon = opts != NULL && opts->daemon;
    p->owner = mp__getpid();
    *out = p;
    return 0;
}

/* The child's side of start: never returns. */
static _Noreturn void child_main(mp_process *p, pid_t parent)
{
    if (p->daemon && mp__die_with_parent(parent, SIGKILL) < 0)
        _exit(1); /* the parent is already gone: a daemon goes with it */
    int rc = p->fn(p->arg);
    /* As a Python child does at the end: wait for our non-daemon threads
     * (and pending timers), flush output, then join our own non-daemon
     * children and terminate daemon ones.  Threads first: they may still
     * print or start children.  _exit, not exit: the parent's atexit
     * handlers must not run twice. */
    mp__thread_wait_nondaemon();
    fflush(NULL);
    reap_all_children();
    _exit(rc & 0xff);
}

int mp_process_start(mp_process *p)
{
    int rc = check(p);
    if (rc < 0)
        return rc;
    if (p->rec != NULL)
        return -EALREADY;
    rc = pidfd_support();
    if (rc < 0)
        return rc;
    /* Children must share the parent's heap: map it before the first fork. */
    rc = mp__heap_ensure();
    if (rc < 0)
        return rc;
    child *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -ENOMEM;
    c->pidfd = -1;
    c->daemon = p->daemon;

    pthread_mutex_lock(&reg_lock);
    sweep_detached();
    if (!atexit_installed) {
        atexit(at_exit);
        atexit_installed = true;
    }
    pthread_mutex_unlock(&reg_lock);

    pid_t parent = mp__getpid();
    pid_t pid = mp__fork();
    if (pid == 0)
        child_main(p, parent);
    if (pid < 0) {
        free(c);
        return pid;
    }
    c->pid = pid;
    int fd = mp__pidfd_open(pid);
    if (fd < 0) {
        /* Cannot happen for our own unreaped child, short of running out of
         * fds: then we cannot watch it, so do not leave it running. */
        mp__kill_and_reap(pid);
        free(c);
        return fd;
    }
    c->pidfd = fd;
    pthread_mutex_lock(&reg_lock);
    c->next = reg_head;
    if (reg_head)
        reg_head->prev = c;
    reg_head = c;
    p->rec = c;
    pthread_mutex_unlock(&reg_lock);
    return 0;
}

int mp_process_join(mp_process *p, double timeout)
{
    int rc = check(p);
    if (rc < 0)
        return rc;
    int64_t deadline;
    if (mp__deadline(timeout, &deadline) < 0 || p->rec == NULL)
        return -EINVAL;
    child *c = p->rec;
    for (;;) {
        pthread_mutex_lock(&reg_lock);
        bool done = rec_poll(c);
        pthread_mutex_unlock(&reg_lock);
        if (done)
            return 0;
        /* Wait without the lock; the fd stays open while the object lives. */
        rc = mp__fd_wait_readable(c->pidfd, deadline);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return MP_ETIMEDOUT;
    }
}

bool mp_process_is_alive(mp_process *p)
{
    if (check(p) < 0 || p->rec == NULL)
        return false;
    pthread_mutex_lock(&reg_lock);
    bool done = rec_poll(p->rec);
    pthread_mutex_unlock(&reg_lock);
    return !done;
}

int mp_process_exitcode(mp_process *p, int *code)
{
    int rc = check(p);
    if (rc < 0)
        return rc;
    if (code == NULL)
        return -EINVAL;
    if (p->rec == NULL)
        return -EAGAIN;
    pthread_mutex_lock(&reg_lock);
    bool done = rec_poll(p->rec);
    if (done)
        *code = p->rec->code;
    pthread_mutex_unlock(&reg_lock);
    return done ? 0 : -EAGAIN;
}

pid_t mp_process_pid(const mp_process *p)
{
    return p != NULL && p->rec != NULL ? p->rec->pid : 0;
}

int mp_process_sentinel(const mp_process *p)
{
    int rc = check(p);
    if (rc < 0)
        return rc;
    /* Set by start before p->rec is, and open while the object lives. */
    return p->rec != NULL ? p->rec->pidfd : -EINVAL;
}

const char *mp_process_name(const mp_process *p)
{
    return p != NULL ? p->name : NULL;
}

bool mp_process_daemon(const mp_process *p)
{
    return p != NULL && p->daemon;
}

static int send_signal(mp_process *p, int sig)
{
    int rc = check(p);
    if (rc < 0)
        return rc;
    if (p->rec == NULL)
        return -EINVAL;
    pthread_mutex_lock(&reg_lock);
    rc = 0;
    if (!p->rec->reaped) {
        rc = mp__pidfd_send_signal(p->rec->pidfd, sig);
        if (rc == -ESRCH)
            rc = 0; /* exited, not yet reaped: nothing to do */
    }
    pthread_mutex_unlock(&reg_lock);
    return rc;
}

int mp_process_terminate(mp_process *p) { return send_signal(p, SIGTERM); }
int mp_process_kill(mp_process *p) { return send_signal(p, SIGKILL); }

void mp_process_free(mp_process *p)
{
    if (p == NULL)
        return;
    if (p->owner == mp__getpid() && p->rec != NULL) {
        pthread_mutex_lock(&reg_lock);
        child *c = p->rec;
        if (rec_poll(c)) {
            reg_unlink(c);
            rec_close(c);
            free(c);
        } else {
            c->detached = true; /* reaped later; joined at exit */
        }
        pthread_mutex_unlock(&reg_lock);
    }
    free(p->name);
    free(p);
}

int mp_cpu_count(void)
{
    return mp__cpu_count();
}

pid_t mp_getpid(void)
{
    return mp__getpid();
}

pid_t mp_getppid(void)
{
    return getppid();
}
