/* Named shared memory (shm_open) and its tracker process. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "os/os.h"
#include "os/shm.h"

static int map_fd(int fd, size_t size, void **data)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    *data = p;
    return 0;
}

int mp__shm_id_of(int fd, mp__shm_id *id)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    id->dev = (uint64_t)st.st_dev;
    id->ino = (uint64_t)st.st_ino;
    return 0;
}

int mp__shm_create(const char *name, size_t size, int *fd, void **data, mp__shm_id *id)
{
    int f = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (f < 0)
        return -errno;
    int rc = 0;
    /* posix_fallocate reserves the pages now, so that touching them later
     * cannot SIGBUS when /dev/shm is full: the error comes here instead. */
    if (ftruncate(f, (off_t)size) < 0)
        rc = -errno;
    else if ((rc = posix_fallocate(f, 0, (off_t)size)) != 0)
        rc = -rc;
    else if ((rc = mp__shm_id_of(f, id)) == 0)
        rc = map_fd(f, size, data);
    if (rc < 0) {
        shm_unlink(name);
        close(f);
        return rc;
    }
    *fd = f;
    return 0;
}

int mp__shm_open(const char *name, int *fd, void **data, size_t *size)
{
    int f = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (f < 0)
        return -errno;
    struct stat st;
    int rc = fstat(f, &st) < 0 ? -errno : 0;
    if (rc == 0 && st.st_size <= 0)
        rc = -EINVAL; /* being created, or not ours to map */
    if (rc == 0)
        rc = map_fd(f, (size_t)st.st_size, data);
    if (rc < 0) {
        close(f);
        return rc;
    }
    *fd = f;
    *size = (size_t)st.st_size;
    return 0;
}

int mp__shm_unlink(const char *name)
{
    return shm_unlink(name) < 0 ? -errno : 0;
}

int mp__shm_unlink_if(const char *name, const mp__shm_id *id)
{
    int f = shm_open(name, O_RDONLY | O_CLOEXEC, 0); /* enough to fstat */
    if (f < 0)
        return -errno;
    mp__shm_id now;
    int rc = mp__shm_id_of(f, &now);
    close(f);
    if (rc < 0)
        return rc;
    if (now.dev != id->dev || now.ino != id->ino)
        return -ENOENT; /* the name stands for another object now */
    return mp__shm_unlink(name);
}

/* ---- the tracker ----
 * Protocol: lines "+DEV INO /name\n" (track) and "-DEV INO /name\n"
 * (forget), DEV and INO in hex, each written with one write() of at most
 * PIPE_BUF bytes, so lines from several processes never interleave.  The
 * tracker keeps the entries in a hash table on (name, object) that grows
 * as needed: there is no limit but memory (an entry it cannot store is
 * removed at once rather than left behind: see track_line). */

typedef struct entry {
    struct entry *next;
    mp__shm_id id;
    char name[]; /* "/name" */
} entry;

typedef struct {
    entry **b;
    size_t nb, n;
} table;

static size_t hash_of(const char *name, const mp__shm_id *id)
{
    uint64_t h = 1469598103934665603ULL ^ id->ino ^ (id->dev << 32);
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)h;
}

static bool same(const entry *e, const char *name, const mp__shm_id *id)
{
    return e->id.dev == id->dev && e->id.ino == id->ino && strcmp(e->name, name) == 0;
}

static void table_grow(table *t)
{
    size_t nb = t->nb ? t->nb * 2 : 64;
    entry **b = calloc(nb, sizeof *b);
    if (b == NULL)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < t->nb; i++)
        for (entry *e = t->b[i], *next; e != NULL; e = next) {
            next = e->next;
            size_t k = hash_of(e->name, &e->id) & (nb - 1);
            e->next = b[k];
            b[k] = e;
        }
    free(t->b);
    t->b = b;
    t->nb = nb;
}

static bool table_add(table *t, const char *name, const mp__shm_id *id)
{
    if (t->n >= t->nb)
        table_grow(t);
    if (t->nb == 0)
        return false;
    size_t len = strlen(name);
    entry *e = malloc(sizeof *e + len + 1);
    if (e == NULL)
        return false;
    e->id = *id;
    memcpy(e->name, name, len + 1);
    size_t k = hash_of(name, id) & (t->nb - 1);
    e->next = t->b[k];
    t->b[k] = e;
    t->n++;
    return true;
}

static void table_remove(table *t, const char *name, const mp__shm_id *id)
{
    if (t->nb == 0)
        return;
    for (entry **pp = &t->b[hash_of(name, id) & (t->nb - 1)]; *pp; pp = &(*pp)->next)
        if (same(*pp, name, id)) {
            entry *e = *pp;
            *pp = e->next;
            free(e);
            t->n--;
            return;
        }
}

/* One protocol line.  A segment the tracker cannot keep track of (out of
 * memory) is removed now: the creator was promised it would not stay. */
static void track_line(table *t, char *line)
{
    char op = line[0];
    char *p = line + 1, *end;
    mp__shm_id id;
    id.dev = strtoull(p, &end, 16);
    if (end == p || *end != ' ')
        return;
    p = end + 1;
    id.ino = strtoull(p, &end, 16);
    if (end == p || *end != ' ' || end[1] != '/')
        return;
    const char *name = end + 1;
    if (op == '+') {
        if (!table_add(t, name, &id))
            mp__shm_unlink_if(name, &id);
    } else if (op == '-') {
        table_remove(t, name, &id);
    }
}

static _Noreturn void tracker_main(int rd)
{
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_NAME, "mproc-tracker");
    /* Keep nothing of the creator's but the pipe. */
    if (rd != 3) {
        dup2(rd, 3);
        rd = 3;
    }
    syscall(SYS_close_range, 4, ~0U, 0);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 3)
            close(null);
    }
    table t = {0};
    char buf[8192];
    size_t have = 0;
    for (;;) {
        ssize_t r = read(rd, buf + have, sizeof buf - have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        have += (size_t)r;
        char *line = buf, *nl;
        while ((nl = memchr(line, '\n', have - (size_t)(line - buf))) != NULL) {
            *nl = '\0';
            track_line(&t, line);
            line = nl + 1;
        }
        have -= (size_t)(line - buf);
        memmove(buf, line, have);
    }
    for (size_t i = 0; i < t.nb; i++)
        for (entry *e = t.b[i]; e != NULL; e = e->next)
            mp__shm_unlink_if(e->name, &e->id);
    _exit(0);
}

static pthread_mutex_t tracker_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tracker_started = PTHREAD_COND_INITIALIZER;
static bool tracker_starting; /* a thread is forking the tracker */
static int tracker_fd = -1;   /* write end; inherited by our children */

static void tracker_prepare(void) { pthread_mutex_lock(&tracker_lock); }
static void tracker_release(void) { pthread_mutex_unlock(&tracker_lock); }
static void tracker_child(void)
{
    tracker_starting = false; /* that start belongs to the parent */
    pthread_mutex_unlock(&tracker_lock);
}

__attribute__((constructor)) static void tracker_fork_hooks(void)
{
    static const mp__fork_hooks hooks = {
        .rank = MP__RANK_OS,
        .prepare = tracker_prepare,
        .parent = tracker_release,
        .child = tracker_child,
    };
    mp__fork_hooks_add(&hooks);
}

/* Fork the tracker; returns the write end of its pipe or -errno. */
static int start_tracker(void)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    /* Fork twice so that the tracker is not our child: it must outlive us
     * and must not be waited for by our exit-time joins. */
    pid_t mid = fork();
    if (mid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        return -e;
    }
    if (mid == 0) {
        close(fds[1]);
        if (fork() == 0)
            tracker_main(fds[0]);
        _exit(0);
    }
    close(fds[0]);
    int st;
    while (waitpid(mid, &st, 0) < 0 && errno == EINTR)
        ;
    return fds[1];
}

/* The tracker's write end, started on first need (never with the lock
 * held across the fork: the fork hooks take it). */
static int tracker(bool start)
{
    pthread_mutex_lock(&tracker_lock);
    while (tracker_starting)
        pthread_cond_wait(&tracker_started, &tracker_lock);
    int fd = tracker_fd;
    if (fd >= 0 || !start) {
        pthread_mutex_unlock(&tracker_lock);
        return fd;
    }
    tracker_starting = true;
    pthread_mutex_unlock(&tracker_lock);
    fd = start_tracker();
    pthread_mutex_lock(&tracker_lock);
    tracker_starting = false;
    if (fd >= 0)
        tracker_fd = fd;
    pthread_cond_broadcast(&tracker_started);
    pthread_mutex_unlock(&tracker_lock);
    return fd;
}

int mp__shm_track(const char *name, const mp__shm_id *id, bool keep_track)
{
    char line[PIPE_BUF];
    int n = snprintf(line, sizeof line, "%c%llx %llx %s\n", keep_track ? '+' : '-',
                     (unsigned long long)id->dev, (unsigned long long)id->ino, name);
    if (n < 0 || (size_t)n >= sizeof line)
        return -ENAMETOOLONG;
    int fd = tracker(keep_track);
    if (fd < 0)
        return keep_track ? fd : 0; /* forgetting: nothing is tracked here */
    ssize_t w;
    do
        w = write(fd, line, (size_t)n);
    while (w < 0 && errno == EINTR);
    return w == n ? 0 : (w < 0 ? -errno : -EIO);
}
