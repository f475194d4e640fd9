/* The operating-system layer: everything Linux-specific lives behind this
 * header (futexes, clocks, thread ids, pidfds, memory mappings), so that a
 * port replaces src/os/ and nothing else.
 *
 * Calls that tests need to make fail (mmap, fork, pidfd_open, ...) go through
 * the mp__os table; a test may point an entry at a failing stand-in. */
#ifndef MPROC_OS_H
#define MPROC_OS_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mproc/common.h"
#include "export_int.h"

/* ---- replaceable system calls (tests swap entries to inject faults) ---- */
struct mp__os_calls {
    void *(*mmap)(void *addr, size_t len, int prot, int flags, int fd, off_t off);
    int (*munmap)(void *addr, size_t len);
    int (*madvise)(void *addr, size_t len, int advice);
    pid_t (*fork)(void);
    int (*pidfd_open)(pid_t pid, unsigned flags); /* returns fd or -1/errno */
    void *(*realloc)(void *p, size_t size);       /* growing lists (a map's failures) */
};
extern struct mp__os_calls mp__os;

/* ---- clocks and deadlines (CLOCK_MONOTONIC, nanoseconds) ---- */
#define MP__NO_DEADLINE INT64_MAX
MP_INTERNAL int64_t mp__now_ns(void);
/* Turn a timeout in seconds into an absolute deadline.  MP_FOREVER, any
 * negative value and +inf give MP__NO_DEADLINE; NaN is -EINVAL. */
int mp__deadline(double timeout, int64_t *deadline);
/* Sleep until the absolute deadline (not before it). */
MP_INTERNAL void mp__sleep_until(int64_t deadline);
/* Milliseconds left until deadline, rounded up, for poll(): -1 = forever. */
int mp__deadline_ms(int64_t deadline);
struct timespec;
/* The time left until deadline (0 if past) in *ts, for the system calls
 * that take one; NULL for MP__NO_DEADLINE (wait forever). */
struct timespec *mp__timespec_left(int64_t deadline, struct timespec *ts);

/* ---- futexes on shared (not private) 32-bit words ---- */
/* Sleep while *word == expected, until woken or the absolute deadline.
 * Returns 0 (woken, maybe spuriously), -EAGAIN (value differed), -EINTR or
 * -ETIMEDOUT. */
int mp__futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t deadline);
/* Wake up to n sleepers on word (INT32_MAX: all).  Returns how many. */
int mp__futex_wake(_Atomic uint32_t *word, int n);
/* Brief pause inside a spin loop. */
static inline void mp__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

/* Let another runnable thread have this CPU (spin loops that may be
 * keeping the thread they wait for off it). */
MP_INTERNAL void mp__yield(void);

/* ---- identities ---- */
/* The calling thread's id, cached per thread (reset in a forked child). */
extern _Thread_local pid_t mp__tid_cache __attribute__((tls_model("initial-exec")));
pid_t mp__gettid_slow(void);
static inline pid_t mp__gettid(void)
{
    pid_t t = mp__tid_cache;
    return t != 0 ? t : mp__gettid_slow();
}
/* The process's id, cached per process (reset in a forked child). */
MP_INTERNAL extern pid_t mp__pid_cache;
MP_INTERNAL pid_t mp__getpid_slow(void);
static inline pid_t mp__getpid(void)
{
    pid_t p = __atomic_load_n(&mp__pid_cache, __ATOMIC_RELAXED);
    return p != 0 ? p : mp__getpid_slow();
}
bool mp__is_main_thread(void);
long mp__page_size(void);
uint64_t mp__mem_total(void);   /* physical memory in bytes */
int mp__cpu_count(void);        /* affinity mask and cgroup quota */
/* True if this thread may run on more than one CPU (its affinity mask), so
 * a peer may be running beside it and spinning for it can pay off.  One
 * system call: ask only on the way to sleeping. */
bool mp__can_run_in_parallel(void);

/* How many more descriptors this process may open now (the soft
 * RLIMIT_NOFILE less those open); LONG_MAX when there is no limit or it
 * cannot be told. */
long mp__fd_headroom(void);

/* One more than the highest open descriptor, or -1 if it cannot be told. */
int mp__fd_high_water(void);
/* Close every descriptor >= from except keep (close_range). */
void mp__close_from_except(int from, int keep);

/* ---- processes ---- */
/* Open a pidfd for a child; returns fd >= 0 or -errno (-ENOSYS before 5.3). */
int mp__pidfd_open(pid_t pid);
int mp__pidfd_send_signal(int pidfd, int sig);
/* Wait until the process behind pidfd exits or deadline passes, then reap it
 * (it must be our child).  *code: exit status, or -signal if it was killed.
 * Returns 0, -ETIMEDOUT, or -errno. */
int mp__pidfd_reap(int pidfd, int64_t deadline, int *code);
/* SIGKILL a child we cannot watch, and reap it. */
void mp__kill_and_reap(pid_t pid);
/* Poll a pidfd (or any fd) for readability until deadline: 1 ready, 0 timed
 * out, -errno. */
int mp__fd_wait_readable(int fd, int64_t deadline);
/* Set PR_SET_PDEATHSIG in a child, then check the parent is still the one
 * that forked us.  Returns 0, or -ESRCH if that parent is already gone. */
int mp__die_with_parent(pid_t parent, int sig);

/* ---- readiness of many descriptors (the pool's supervisor) ---- */
/* A poller watches descriptors for readability; each carries a 64-bit tag.
 * Returns the poller fd or -errno. */
int mp__poller_new(void);
int mp__poller_add(int poller, int fd, uint64_t tag);
/* As mp__poller_add, but of the pollers that watch fd and wait, one is
 * woken by each event (a listening socket shared by many processes). */
int mp__poller_add_exclusive(int poller, int fd, uint64_t tag);
int mp__poller_del(int poller, int fd);
/* Wait until some watched fds are readable or deadline: stores up to max
 * tags, returns how many (0 at the deadline) or -errno. */
int mp__poller_wait(int poller, uint64_t *tags, int max, int64_t deadline);
/* A notifier: an fd that becomes readable when notified from any process
 * that inherited it, until drained.  Returns the fd or -errno. */
int mp__notifier_new(void);
MP_INTERNAL void mp__notify(int fd);
void mp__notifier_drain(int fd);
/* A descriptor that becomes readable when a child of this process exits.
 * SIGCHLD must be blocked in every thread (the fork server's case). */
int mp__child_watch_new(void);
/* Reap one exited child without waiting: 1 (*pid and *code: exit status,
 * or -signal), 0 when none is waiting to be reaped, or -errno. */
int mp__child_reap_any(int watch, pid_t *pid, int *code);
/* Ignore SIGINT and block nothing else: a pool worker's signal state. */
void mp__worker_signals(void);

/* One-shot readiness for coroutines: watch fd for the events (MP__POLL_IN,
 * MP__POLL_OUT) until the next report of it (re-arming or adding it). */
enum { MP__POLL_IN = 1, MP__POLL_OUT = 2, MP__POLL_ERR = 4 };
int mp__poller_arm(int poller, int fd, unsigned events, uint64_t tag);
/* Wait as mp__poller_wait, with nanosecond deadlines, also giving each
 * ready fd's events (errors and hang-ups report as both directions). */
int mp__poller_wait_events(int poller, uint64_t *tags, unsigned *events, int max,
                           int64_t deadline);

/* ---- coroutine stacks ---- */
/* Map size bytes of stack (lowest page a guard): the base, or NULL and
 * *err. */
void *mp__stack_map(size_t size, int *err);
void mp__stack_unmap(void *base, size_t size);

/* ---- fork hub ---- */
/* Modules that own process-local locks or lazily built state register hooks
 * here; the hub runs prepare hooks in ascending rank and the parent/child
 * hooks in descending rank, around every fork (ours or the user's: the hub is
 * installed with pthread_atfork).  Call from a constructor or under a once. */
enum mp__fork_rank {
    MP__RANK_OS = 0,        /* thread/process id caches */
    MP__RANK_HEAP = 10,     /* shared heap bring-up lock */
    MP__RANK_PROCESS = 20,  /* child-process registry */
    MP__RANK_USER = 30      /* higher-level modules */
};
typedef struct {
    int rank;
    void (*prepare)(void);
    void (*parent)(void);
    void (*child)(void);
} mp__fork_hooks;
void mp__fork_hooks_add(const mp__fork_hooks *h);
/* The one function in the library that forks: flushes stdio, forks through
 * mp__os.fork, and returns the child's pid in the parent, 0 in the child,
 * or -errno. */
pid_t mp__fork(void);

/* ---- shared anonymous memory ---- */
/* Reserve len bytes MAP_SHARED|MAP_ANONYMOUS|MAP_NORESERVE, not dumped.
 * Returns NULL and sets *err on failure. */
void *mp__map_shared(size_t len, int *err);
void mp__unmap(void *p, size_t len);
/* Give the pages of [p, p+len) back to the system (MADV_REMOVE). */
void mp__discard(void *p, size_t len);

/* ---- crash reports of workers (crash_linux.c) ---- */
#define MP__CRASH_FRAMES 24
/* What a worker's fatal signal leaves, in shared memory. */
typedef struct {
    _Atomic int32_t pid;        /* the process that wrote it; 0: none */
    int32_t signo;
    uintptr_t addr;             /* si_addr of a fault; 0: none */
    uint32_t nframes;
    uintptr_t frames[MP__CRASH_FRAMES]; /* the faulting pc, then return addresses */
} mp__crash_rec;
/* (parent, before forking workers) Load what the handler will need. */
void mp__crash_prepare(void);
/* (a worker process) On SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT or SIGTRAP
 * (those the program left at their default) write rec, then die of the
 * signal as before.  0 or -errno. */
int mp__crash_arm(mp__crash_rec *rec);
/* (parent) The frames of rec as text, one "#N function+0xoff (object)
 * file:line" a line, cut at a line's end to fit cap bytes. */
void mp__crash_describe(const mp__crash_rec *rec, char *text, size_t cap);

/* ---- processes as /proc tells them (proc_linux.c) ---- */
/* Bytes of private memory process pid has resident (not shared with
 * others through MAP_SHARED or files), or -errno. */
int64_t mp__proc_private_bytes(pid_t pid);
/* Processes the kernel's OOM killer has killed since boot (/proc/vmstat's
 * oom_kill), or -errno where the kernel does not say. */
int64_t mp__oom_kills(void);
/* When process pid started (an opaque count, equal for equal processes:
 * with the pid it names one process even after the pid is reused), or
 * -ESRCH once it has exited (a zombie too), or -errno. */
int64_t mp__proc_start(pid_t pid);

#endif
