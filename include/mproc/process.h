/* mproc — processes (multiprocessing.Process).
 *
 * A process object describes one child, started by fork(): the child runs
 * target(arg) and exits with its return value (& 0xff), after waiting for
 * its own non-daemon threads and pending timers, flushing stdio and joining
 * its own non-daemon children.  Process objects are local
 * to the process that made them: used in a forked child, every call returns
 * -EPERM (or false / -1).
 *
 * At normal exit (return from main or exit()), as in Python, the parent
 * joins its non-daemon children and terminates (SIGTERM, then waits) its
 * daemon children.  A daemon child also dies (SIGKILL) when its parent dies
 * by any means, even SIGKILL — with one Linux caveat: the signal is tied to
 * the *thread* that started it, so a daemon started from a thread dies when
 * that thread exits.  Start daemons from a long-lived thread.
 *
 * Freeing a running process object neither kills the child nor leaves a
 * zombie: the child is detached and keeps running; the library reaps it the
 * next time it is asked about processes, and at exit it is joined or
 * terminated like any other child.
 *
 * mp_process_current() and mp_process_parent() return objects that describe
 * the calling process and the one that started it.  The library owns them
 * (mp_process_free does nothing to them) and they live as long as the
 * process.  Name, pid, daemon and is_alive work on them; calls that only a
 * child's creator may make (start, terminate, kill) return -EPERM. */
#ifndef MPROC_PROCESS_H
#define MPROC_PROCESS_H

#include <mproc/common.h>

MP_BEGIN_DECLS

typedef struct mp_process mp_process;

/* A process target; its return value becomes the exit status (& 0xff). */
typedef int (*mp_target)(void *arg);

typedef struct {
    const char *name; /* copied; NULL or "": "Process-N" as in Python */
    bool daemon;      /* killed when the parent exits or dies */
} mp_process_opts;

/* Describe a child that will run fn(arg).  opts may be NULL.  Nothing is
 * started yet.  Errors: -EINVAL (out or fn NULL), -ENOMEM.  *out is NULL
 * after a failure.  Thread-safe. */
MP_API int mp_process_new(mp_process **out, mp_target fn, void *arg,
                          const mp_process_opts *opts);

/* Fork the child and run the target in it.  Errors: -EINVAL (NULL),
 * -EALREADY (started before), -EPERM (object from another process),
 * -ENOSYS (kernel older than 5.3: no pidfd), -EAGAIN/-ENOMEM (fork
 * failed).  Call from one thread at a time per object. */
MP_API int mp_process_start(mp_process *p);

/* Wait up to timeout seconds for the child to exit, and reap it.  Returns 0
 * (exited; see mp_process_exitcode), MP_ETIMEDOUT, -EINVAL (NULL, NaN
 * timeout, or never started), -EPERM.  Waits on a pidfd: no polling.  On
 * mp_process_parent(): waits for the parent to end, without reaping it; on
 * mp_process_current(): -EDEADLK. */
MP_API int mp_process_join(mp_process *p, double timeout);

/* True while the child has been started and has not exited.  True for
 * mp_process_current(); for mp_process_parent(), until the parent ends. */
MP_API bool mp_process_is_alive(mp_process *p);

/* The child's exit status, or -signal if a signal killed it.  Returns 0,
 * -EAGAIN (not started, or still running: also for mp_process_current()),
 * -ECHILD (mp_process_parent(): not ours to know), -EINVAL, -EPERM. */
MP_API int mp_process_exitcode(mp_process *p, int *code);

/* The child's pid, or 0 before start or for NULL.  The caller's pid for
 * mp_process_current(), the parent's for mp_process_parent(). */
MP_API pid_t mp_process_pid(const mp_process *p);

/* The process name given in the options, or "Process-N" if it was NULL or
 * ""; NULL for NULL. */
MP_API const char *mp_process_name(const mp_process *p);

/* True if the process was created as a daemon. */
MP_API bool mp_process_daemon(const mp_process *p);

/* Send SIGTERM / SIGKILL (through the pidfd, so a recycled pid is never
 * hit).  0 also when the child has already exited.  Errors: -EINVAL (NULL
 * or not started), -EPERM. */
MP_API int mp_process_terminate(mp_process *p);
MP_API int mp_process_kill(mp_process *p);

/* A descriptor that becomes readable when the child ends, for poll/epoll
 * or mp_wait_fds (Process.sentinel; a pidfd).  The same descriptor on every
 * call; the object owns it and mp_process_free closes it: do not close it
 * or read from it.  It stays readable once the child has ended, reaped or
 * not.  For mp_process_parent(): readable once the parent has ended.
 * Errors: -EINVAL (NULL, not started, mp_process_current()), -EPERM. */
MP_API int mp_process_sentinel(const mp_process *p);

/* Release the object.  A running child is detached, not killed (see top).
 * NULL is a no-op; in a forked child it frees only this copy's memory.
 * No-op on mp_process_current() and mp_process_parent(). */
MP_API void mp_process_free(mp_process *p);

/* The calling process (multiprocessing.current_process()): never NULL.  In
 * the main program it is named "MainProcess"; in a child of
 * mp_process_start it has the child's name and daemon flag.  Its pid is
 * always the caller's (also in a child forked by other means, which keeps
 * the name it inherited, as in Python).  Owned by the library: see top.
 * Thread-safe. */
MP_API const mp_process *mp_process_current(void);

/* The process that started the calling one with mp_process_start
 * (multiprocessing.parent_process()), with its name, pid and daemon flag,
 * or NULL in the main program.  is_alive, join and the sentinel follow the
 * parent's end through a pidfd (also after this process is re-parented).
 * A child forked by other means inherits it, as in Python.  Owned by the
 * library: see top.  Thread-safe. */
MP_API const mp_process *mp_process_parent(void);

/* The live children of the calling process (multiprocessing.
 * active_children()): stores up to cap of their objects in out, oldest
 * first, and returns how many there are (which may be more than cap).
 * Live means started by this process, not yet exited, and its object not
 * freed: as in Python, children found to have exited are reaped on the way
 * (their objects keep the exit code; join returns at once) and not listed.
 * Errors: -EINVAL (out NULL with cap > 0).  Thread-safe; the objects stay
 * valid until their owner frees them. */
MP_API int mp_active_children(mp_process **out, size_t cap);

/* Number of CPUs this process may run on: its affinity mask, lowered by a
 * cgroup CPU quota if there is one.  Always >= 1. */
MP_API int mp_cpu_count(void);

/* The calling process's pid and its parent's (os.getpid / os.getppid). */
MP_API pid_t mp_getpid(void);
MP_API pid_t mp_getppid(void);

MP_END_DECLS

#endif
