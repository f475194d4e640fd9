/* Processes as /proc tells them: memory (the pool's memory limit) and
 * liveness (a queue's consumers). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "os/os.h"

/* Read a small /proc file whole into buf (NUL-terminated): its length or
 * -errno. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t got = 0;
    while (got + 1 < cap) {
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    return (ssize_t)got;
}

int64_t mp__proc_private_bytes(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    ssize_t n = read_small(path, buf, sizeof buf);
    if (n < 0)
        return n;
    /* size resident shared text lib data dt, in pages; shared counts
     * pages backed by files or MAP_SHARED memory (the pool's heap), so
     * resident - shared is the process's own anonymous memory. */
    unsigned long long size, resident, shared;
    if (sscanf(buf, "%llu %llu %llu", &size, &resident, &shared) != 3)
        return -EPROTO;
    long page = sysconf(_SC_PAGESIZE);
    return resident > shared ? (int64_t)((resident - shared) * (unsigned long long)page) : 0;
}

int64_t mp__oom_kills(void)
{
    char buf[16384];
    ssize_t n = read_small("/proc/vmstat", buf, sizeof buf);
    if (n < 0)
        return n;
    const char *p = strstr(buf, "\noom_kill ");
    return p ? strtoll(p + 10, NULL, 10) : -ENOENT;
}

int64_t mp__proc_start(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    ssize_t n = read_small(path, buf, sizeof buf);
    if (n == -ENOENT || n == -ESRCH)
        return -ESRCH;
    if (n < 0)
        return n;
    /* pid (comm) state ppid ... : comm may hold spaces and parentheses,
     * so fields are counted from the last ')'.  State is field 3, the
     * start time (clock ticks after boot) field 22. */
    const char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return -EPROTO;
    p += 2;
    if (*p == 'Z' || *p == 'X' || *p == 'x')
        return -ESRCH; /* exited, not yet reaped */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL)
            return -EPROTO;
        p++;
    }
    char *end;
    unsigned long long start = strtoull(p, &end, 10);
    return end == p ? -EPROTO : (int64_t)(start & INT64_MAX);
}
