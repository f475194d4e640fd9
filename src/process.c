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
 * here lives in shared memory, so a kill -9 has nothing to corrupt.
 *
 * Besides the objects of children, two kinds of object describe processes
 * that are not ours to start or reap: mp_process_current() (the calling
 * process) and mp_process_parent() (the process that started it).  The
 * main process's own is static; a child of mp_process_start gets a new
 * pair, allocated by its parent before the fork (so that a failed
 * allocation is start's -ENOMEM) and installed by the child before the
 * target runs.  They are never freed, so a pointer handed out stays valid
 * for the life of the process (the pair a child inherits stays reachable
 * from its own).  The parent's object holds a pidfd of the parent, opened
 * by the child at once, while the parent is certainly its parent. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
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
    mp_process *obj; /* its object (for mp_active_children); NULL if detached */
} child;

/* What an object describes. */
enum proc_kind {
    KIND_CHILD,  /* a child of the creator, made by mp_process_new */
    KIND_SELF,   /* mp_process_current(): the calling process */
    KIND_PARENT  /* mp_process_parent(): the process that started it */
};

struct mp_process {
    mp_target fn;
    void *arg;
    char *name;
    bool daemon;
    enum proc_kind kind;
    pid_t owner;    /* process that created this object (KIND_CHILD) */
    child *rec;     /* NULL until started (KIND_CHILD) */
    pid_t pid;      /* KIND_PARENT: its pid */
    int pidfd;      /* KIND_PARENT: readable once it has ended, or -errno */
};

/* The objects of a child's own process and of its parent, in one block. */
typedef struct ids {
    mp_process self, parent;
    struct ids *older;  /* the pair inherited from the parent, kept */
    char names[];       /* both names, NUL-terminated */
} ids;

/* The main process's object; children replace self_desc and parent_desc
 * with their own pair (in child_main, before the target runs) and never
 * change them again, so they are read without a lock. */
static mp_process main_desc = {
    .name = (char *)"MainProcess", .kind = KIND_SELF, .pidfd = -1};
static mp_process *self_desc = &main_desc;
static mp_process *parent_desc;  /* NULL in the main process */
static ids *own_ids;             /* the block self_desc lives in, if any */

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

/* The test every call on a child's object makes: another process's object
 * (or one that describes no child of ours: owner 0) is -EPERM. */
static int check(const mp_process *p)
{
    if (p == NULL)
        return -EINVAL;
    if (p->owner != mp__getpid())
        return -EPERM;
    return 0;
}

/* ---- this process and its parent ---- */

const mp_process *mp_process_current(void)
{
    return self_desc;
}

const mp_process *mp_process_parent(void)
{
    return parent_desc;
}

/* Whether the parent described by p has ended: 1, 0, or -errno. */
static int parent_ended(const mp_process *p, int64_t deadline)
{
    if (p->pidfd < 0)
        return p->pidfd;
    return mp__fd_wait_readable(p->pidfd, deadline);
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
    p->kind = KIND_CHILD;
    p->owner = mp__getpid();
    p->pidfd = -1;
    *out = p;
    return 0;
}

/* The child's objects for itself and its parent, made in the parent before
 * the fork: names copied, the parent's pidfd not yet opened. */
static ids *ids_new(const mp_process *p)
{
    const mp_process *me = self_desc; /* becomes the child's parent */
    size_t a = strlen(p->name) + 1, b = strlen(me->name) + 1;
    ids *d = calloc(1, sizeof *d + a + b);
    if (d == NULL)
        return NULL;
    memcpy(d->names, p->name, a);
    memcpy(d->names + a, me->name, b);
    d->self = (mp_process){.name = d->names, .daemon = p->daemon, .kind = KIND_SELF,
                           .pidfd = -1};
    d->parent = (mp_process){.name = d->names + a, .daemon = me->daemon,
                             .kind = KIND_PARENT, .pid = mp__getpid(), .pidfd = -1};
    return d;
}

/* In the child, before the target: make d this process's own pair.  The
 * pidfd of the parent is opened now, and kept only if the parent is still
 * ours after it was opened (then it was not a recycled pid); if the parent
 * has already gone, a notifier that is readable at once stands in. */
static void ids_install(ids *d)
{
    mp_process *par = &d->parent;
    int fd = mp__pidfd_open(par->pid);
    if (fd >= 0 && getppid() != par->pid) {
        close(fd);
        fd = -ESRCH;
    }
    if (fd == -ESRCH) {
        fd = mp__notifier_new();
        if (fd >= 0)
            mp__notify(fd);
    }
    par->pidfd = fd;
    if (parent_desc != NULL && parent_desc->pidfd >= 0) {
        close(parent_desc->pidfd); /* the grandparent's: not ours to watch */
        parent_desc->pidfd = -EBADF;
    }
    d->older = own_ids;
    own_ids = d;
    parent_desc = par;
    self_desc = &d->self;
}

/* The child's side of start: never returns. */
static _Noreturn void child_main(mp_process *p, ids *d, pid_t parent)
{
    if (p->daemon && mp__die_with_parent(parent, SIGKILL) < 0)
        _exit(1); /* the parent is already gone: a daemon goes with it */
    ids_install(d);
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
    ids *d = ids_new(p);
    if (c == NULL || d == NULL) {
        free(c);
        free(d);
        return -ENOMEM;
    }
    c->pidfd = -1;
    c->daemon = p->daemon;
    c->obj = p;

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
        child_main(p, d, parent);
    free(d); /* the child's copy is the child's */
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
    int64_t deadline;
    if (p != NULL && p->kind != KIND_CHILD) {
        if (mp__deadline(timeout, &deadline) < 0)
            return -EINVAL;
        if (p->kind == KIND_SELF)
            return -EDEADLK;
        int rc = parent_ended(p, deadline); /* as Python's parent_process().join */
        return rc < 0 ? rc : rc == 1 ? 0 : MP_ETIMEDOUT;
    }
    int rc = check(p);
    if (rc < 0)
        return rc;
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
    if (p != NULL && p->kind == KIND_SELF)
        return true;
    if (p != NULL && p->kind == KIND_PARENT)
        return p->pidfd < 0 ? getppid() == p->pid : parent_ended(p, 0) == 0;
    if (check(p) < 0 || p->rec == NULL)
        return false;
    pthread_mutex_lock(&reg_lock);
    bool done = rec_poll(p->rec);
    pthread_mutex_unlock(&reg_lock);
    return !done;
}

int mp_process_exitcode(mp_process *p, int *code)
{
    if (p != NULL && p->kind != KIND_CHILD) /* running / not ours to reap */
        return code == NULL ? -EINVAL : p->kind == KIND_SELF ? -EAGAIN : -ECHILD;
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
    if (p == NULL)
        return 0;
    switch (p->kind) {
    case KIND_SELF:
        return mp__getpid(); /* also right in a child forked by other means */
    case KIND_PARENT:
        return p->pid;
    default:
        return p->rec != NULL ? p->rec->pid : 0;
    }
}

int mp_process_sentinel(const mp_process *p)
{
    if (p != NULL && p->kind == KIND_PARENT)
        return p->pidfd;
    if (p != NULL && p->kind == KIND_SELF)
        return -EINVAL; /* as Python: never started by this process */
    int rc = check(p);
    if (rc < 0)
        return rc;
    /* Set by start before p->rec is, and open while the object lives. */
    return p->rec != NULL ? p->rec->pidfd : -EINVAL;
}

int mp_active_children(mp_process **out, size_t cap)
{
    if (out == NULL && cap > 0)
        return -EINVAL;
    pthread_mutex_lock(&reg_lock);
    sweep_detached();
    child *c = reg_head;
    while (c != NULL && c->next != NULL)
        c = c->next;
    /* Oldest first.  As Python's active_children(), children found to have
     * exited are reaped here (their objects keep the exit code) and are not
     * listed; so are children whose objects were freed (nothing to hand
     * out), which the exit-time rule still joins. */
    size_t n = 0;
    for (; c != NULL; c = c->prev) {
        if (c->obj == NULL || rec_poll(c))
            continue;
        if (n < cap)
            out[n] = c->obj;
        n++;
    }
    pthread_mutex_unlock(&reg_lock);
    return n > INT_MAX ? INT_MAX : (int)n;
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
    if (p == NULL || p->kind != KIND_CHILD)
        return; /* this process's and its parent's objects live on */
    if (p->owner == mp__getpid() && p->rec != NULL) {
        pthread_mutex_lock(&reg_lock);
        child *c = p->rec;
        if (rec_poll(c)) {
            reg_unlink(c);
            rec_close(c);
            free(c);
        } else {
            c->detached = true; /* reaped later; joined at exit */
            c->obj = NULL;
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
