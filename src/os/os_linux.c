/* Linux implementation of the OS layer: futexes, clocks, ids, pidfds,
 * shared mappings and the fork hub.
 *
 * Invariants: cached ids are refreshed in the fork hub's child hook, which
 * runs first in every child (rank MP__RANK_OS), so that nothing after it sees
 * the parent's pid or tid.  Nothing here holds state in shared memory, so a
 * kill -9 at any point cannot leave anything inconsistent. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "os.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static int sys_pidfd_open(pid_t pid, unsigned flags)
{
    return (int)syscall(SYS_pidfd_open, pid, flags);
}

struct mp__os_calls mp__os = {
    .mmap = mmap,
    .munmap = munmap,
    .madvise = madvise,
    .fork = fork,
    .pidfd_open = sys_pidfd_open,
    .realloc = realloc,
};

/* ---- clocks ---- */

int64_t mp__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int mp__deadline(double timeout, int64_t *deadline)
{
    if (isnan(timeout))
        return -EINVAL;
    if (timeout < 0 || isinf(timeout) || timeout > 1e9) {
        *deadline = MP__NO_DEADLINE;
        return 0;
    }
    *deadline = mp__now_ns() + (int64_t)(timeout * 1e9);
    return 0;
}

struct timespec *mp__timespec_left(int64_t deadline, struct timespec *ts)
{
    if (deadline == MP__NO_DEADLINE)
        return NULL;
    int64_t left = deadline - mp__now_ns();
    if (left < 0)
        left = 0;
    ts->tv_sec = left / 1000000000;
    ts->tv_nsec = left % 1000000000;
    return ts;
}

int mp__deadline_ms(int64_t deadline)
{
    if (deadline == MP__NO_DEADLINE)
        return -1;
    int64_t left = deadline - mp__now_ns();
    if (left <= 0)
        return 0;
    int64_t ms = (left + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* ---- futexes ---- */

int mp__futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t deadline)
{
    struct timespec ts, *tp = NULL;
    if (deadline != MP__NO_DEADLINE) {
        if (deadline <= mp__now_ns())
            return -ETIMEDOUT;
        ts.tv_sec = deadline / 1000000000;
        ts.tv_nsec = deadline % 1000000000;
        tp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so a
     * retry after EINTR does not stretch the wait. */
    long rc = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET, expected,
                      tp, NULL, FUTEX_BITSET_MATCH_ANY);
    if (rc == 0)
        return 0;
    switch (errno) {
    case EAGAIN:
        return -EAGAIN;
    case EINTR:
        return -EINTR;
    case ETIMEDOUT:
        return -ETIMEDOUT;
    default:
        return -errno;
    }
}

int mp__futex_wake(_Atomic uint32_t *word, int n)
{
    long rc = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
    return rc < 0 ? -errno : (int)rc;
}

/* ---- identities ---- */

_Thread_local pid_t mp__tid_cache __attribute__((tls_model("initial-exec")));
pid_t mp__pid_cache;

pid_t mp__gettid_slow(void)
{
    mp__tid_cache = (pid_t)syscall(SYS_gettid);
    return mp__tid_cache;
}

pid_t mp__getpid_slow(void)
{
    pid_t p = getpid();
    __atomic_store_n(&mp__pid_cache, p, __ATOMIC_RELAXED);
    return p;
}

bool mp__is_main_thread(void)
{
    return mp__gettid() == mp__getpid();
}

long mp__page_size(void)
{
    static _Atomic long size;
    long v = atomic_load_explicit(&size, memory_order_relaxed);
    if (v == 0) {
        v = sysconf(_SC_PAGESIZE);
        atomic_store_explicit(&size, v, memory_order_relaxed);
    }
    return v;
}

uint64_t mp__mem_total(void)
{
    long pages = sysconf(_SC_PHYS_PAGES);
    if (pages <= 0)
        return (uint64_t)1 << 30;
    return (uint64_t)pages * (uint64_t)mp__page_size();
}

/* Read the cgroup CPU quota as a CPU count (rounded up), or 0 if none.
 * cgroup v2: <mount>/<path>/cpu.max "QUOTA PERIOD" or "max PERIOD";
 * cgroup v1: cpu.cfs_quota_us / cpu.cfs_period_us. */
static int cgroup_cpu_limit(void)
{
    char path[8192], line[4096];
    char rel[4096] = "";
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (f == NULL)
        return 0;
    int v1 = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "0::", 3) == 0 && rel[0] == '\0') {
            snprintf(rel, sizeof rel, "%s", line + 3);
        } else {
            char *ctrl = strchr(line, ':');
            char *p = ctrl ? strchr(ctrl + 1, ':') : NULL;
            if (ctrl && p && strstr(ctrl, "cpu") && strstr(ctrl, "cpuacct")) {
                snprintf(rel, sizeof rel, "%s", p + 1);
                v1 = 1;
            }
        }
    }
    fclose(f);
    long long quota = -1, period = 0;
    if (!v1) {
        /* Walk up from our cgroup: the tightest limit may be an ancestor's. */
        int best = 0;
        for (;;) {
            snprintf(path, sizeof path, "/sys/fs/cgroup%s/cpu.max", rel);
            f = fopen(path, "re");
            if (f != NULL) {
                char q[32];
                if (fscanf(f, "%31s %lld", q, &period) == 2 && strcmp(q, "max") != 0) {
                    quota = atoll(q);
                    if (quota > 0 && period > 0) {
                        int n = (int)((quota + period - 1) / period);
                        if (best == 0 || n < best)
                            best = n;
                    }
                }
                fclose(f);
            }
            char *slash = strrchr(rel, '/');
            if (slash == NULL || rel[0] == '\0')
                break;
            *slash = '\0';
        }
        return best;
    }
    snprintf(path, sizeof path, "/sys/fs/cgroup/cpu,cpuacct%s/cpu.cfs_quota_us", rel);
    f = fopen(path, "re");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%lld", &quota) != 1)
        quota = -1;
    fclose(f);
    snprintf(path, sizeof path, "/sys/fs/cgroup/cpu,cpuacct%s/cpu.cfs_period_us", rel);
    f = fopen(path, "re");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%lld", &period) != 1)
        period = 0;
    fclose(f);
    if (quota <= 0 || period <= 0)
        return 0;
    return (int)((quota + period - 1) / period);
}

int mp__cpu_count(void)
{
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    int limit = cgroup_cpu_limit();
    if (limit > 0 && limit < n)
        n = limit;
    return n;
}

/* Asked on every wait that might spin, so the answer is cached per thread
 * and read again from the kernel at most every 100 ms (affinity can change
 * while we run). */
bool mp__can_run_in_parallel(void)
{
    static _Thread_local int64_t checked_at; /* 0: never */
    static _Thread_local bool parallel;
    int64_t now = mp__now_ns();
    if (checked_at != 0 && now - checked_at < 100 * 1000 * 1000)
        return parallel;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        parallel = sysconf(_SC_NPROCESSORS_ONLN) > 1;
    else
        parallel = CPU_COUNT(&set) > 1;
    checked_at = now;
    return parallel;
}

/* Count the open descriptors (open) and find the highest (*high). */
static long fd_scan(int *high)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int self = dirfd(d);
    long open = 0;
    *high = -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd == self)
            continue;
        open++;
        if (fd > *high)
            *high = fd;
    }
    closedir(d);
    return open;
}

int mp__fd_high_water(void)
{
    int high;
    if (fd_scan(&high) < 0)
        return -1;
    return high + 1;
}

void mp__close_from_except(int from, int keep)
{
    if (keep >= from) {
        if (keep > from)
            syscall(SYS_close_range, (unsigned)from, (unsigned)keep - 1, 0);
        syscall(SYS_close_range, (unsigned)keep + 1, ~0U, 0);
    } else {
        syscall(SYS_close_range, (unsigned)from, ~0U, 0);
    }
}

long mp__fd_headroom(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur > LONG_MAX)
        return LONG_MAX;
    int high;
    long open = fd_scan(&high);
    if (open < 0)
        return LONG_MAX; /* no /proc: nothing to go by */
    long left = (long)rl.rlim_cur - open;
    return left > 0 ? left : 0;
}

/* ---- processes ---- */

int mp__pidfd_open(pid_t pid)
{
    int fd = mp__os.pidfd_open(pid, 0);
    if (fd < 0)
        return -errno;
    return fd;
}

void mp__yield(void) { sched_yield(); }

void mp__sleep_until(int64_t deadline)
{
    if (deadline == MP__NO_DEADLINE)
        return;
    struct timespec ts = {deadline / 1000000000, deadline % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

int mp__pidfd_send_signal(int pidfd, int sig)
{
    long rc = syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
    return rc < 0 ? -errno : 0;
}

int mp__fd_wait_readable(int fd, int64_t deadline)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc = poll(&pfd, 1, mp__deadline_ms(deadline));
        if (rc > 0)
            return 1;
        if (rc == 0) {
            if (deadline != MP__NO_DEADLINE && mp__now_ns() >= deadline)
                return 0;
            continue; /* poll rounds to ms: wait out the remainder */
        }
        if (errno != EINTR)
            return -errno;
    }
}

int mp__pidfd_reap(int pidfd, int64_t deadline, int *code)
{
    for (;;) {
        siginfo_t info;
        memset(&info, 0, sizeof info);
        if (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, WEXITED | WNOHANG) < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (info.si_pid != 0) {
            if (info.si_code == CLD_EXITED)
                *code = info.si_status;
            else
                *code = -info.si_status;
            return 0;
        }
        int rc = mp__fd_wait_readable(pidfd, deadline);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return -ETIMEDOUT;
    }
}

void mp__kill_and_reap(pid_t pid)
{
    int status;
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

int mp__die_with_parent(pid_t parent, int sig)
{
    if (prctl(PR_SET_PDEATHSIG, sig) < 0)
        return -errno;
    /* The parent may have died between fork and prctl: then we were already
     * re-parented and no signal will ever come. */
    if (getppid() != parent)
        return -ESRCH;
    return 0;
}

/* ---- fork hub ---- */

#define MAX_FORK_HOOKS 16
static mp__fork_hooks fork_hooks[MAX_FORK_HOOKS];
static int fork_hook_count;
static pthread_mutex_t fork_hooks_lock = PTHREAD_MUTEX_INITIALIZER;

static void hub_prepare(void)
{
    for (int i = 0; i < fork_hook_count; i++)
        if (fork_hooks[i].prepare)
            fork_hooks[i].prepare();
}

static void hub_parent(void)
{
    for (int i = fork_hook_count - 1; i >= 0; i--)
        if (fork_hooks[i].parent)
            fork_hooks[i].parent();
}

static void hub_child(void)
{
    mp__tid_cache = 0;
    __atomic_store_n(&mp__pid_cache, 0, __ATOMIC_RELAXED);
    for (int i = fork_hook_count - 1; i >= 0; i--)
        if (fork_hooks[i].child)
            fork_hooks[i].child();
}

static pthread_once_t hub_once = PTHREAD_ONCE_INIT;
static void hub_install(void)
{
    pthread_atfork(hub_prepare, hub_parent, hub_child);
}

void mp__fork_hooks_add(const mp__fork_hooks *h)
{
    pthread_once(&hub_once, hub_install);
    pthread_mutex_lock(&fork_hooks_lock);
    if (fork_hook_count == MAX_FORK_HOOKS) {
        pthread_mutex_unlock(&fork_hooks_lock);
        abort(); /* broken invariant: a fixed, known set of modules */
    }
    /* Keep the table sorted by rank (insertion sort). */
    int i = fork_hook_count++;
    while (i > 0 && fork_hooks[i - 1].rank > h->rank) {
        fork_hooks[i] = fork_hooks[i - 1];
        i--;
    }
    fork_hooks[i] = *h;
    pthread_mutex_unlock(&fork_hooks_lock);
}

pid_t mp__fork(void)
{
    pthread_once(&hub_once, hub_install);
    /* Flush stdio so that buffered output is not written twice, once by the
     * parent and once by the child. */
    fflush(NULL);
    pid_t pid = mp__os.fork();
    if (pid < 0)
        return -errno;
    return pid;
}

/* ---- shared anonymous memory ---- */

void *mp__map_shared(size_t len, int *err)
{
    void *p = mp__os.mmap(NULL, len, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        *err = -errno;
        return NULL;
    }
    /* A core dump of a child must not write out the whole heap. */
    mp__os.madvise(p, len, MADV_DONTDUMP);
    return p;
}

void mp__unmap(void *p, size_t len)
{
    if (p != NULL)
        mp__os.munmap(p, len);
}

void mp__discard(void *p, size_t len)
{
    mp__os.madvise(p, len, MADV_REMOVE);
}
