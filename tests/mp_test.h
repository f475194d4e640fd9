/* Helpers shared by the test files. */
#ifndef MP_TEST_H
#define MP_TEST_H

#ifdef MP_TEST_MINI
#include "mini_criterion.h" /* TSan builds: see there */
#else
#include <criterion/criterion.h>
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdbool.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MP_TEST_TIMEOUT_MULTIPLIER
#define MP_TEST_TIMEOUT_MULTIPLIER 1
#endif
/* A test's timeout in seconds, scaled for slow (sanitizer) builds. */
#define MP_TMO(s) ((double)(s) * MP_TEST_TIMEOUT_MULTIPLIER)

/* Assert an exact return code, printing both codes' names on failure. */
#define mp_expect_rc(expr, want)                                          \
    do {                                                                  \
        int rc_ = (expr);                                                 \
        cr_assert_eq(rc_, (want), "%s: got %d (%s), want %d (%s)", #expr, \
                     rc_, mp_errname(rc_), (want), mp_errname(want));     \
    } while (0)

static inline double mp_test_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Read exactly n bytes from fd, waiting at most timeout s.  Returns n,
 * 0 on EOF, -1 on timeout or error. */
static inline ssize_t mp_test_read(int fd, void *buf, size_t n, double timeout)
{
    size_t got = 0;
    double end = mp_test_now() + timeout;
    while (got < n) {
        int left = (int)((end - mp_test_now()) * 1000);
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int rc = poll(&p, 1, left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            return -1;
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r == 0)
            return 0;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* The lowest descriptor number not open now (what the next open gets), or
 * -1. */
static inline int mp_test_lowest_free_fd(void)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0)
        close(fd);
    return fd;
}

/* Wait for our child pid to exit, at most timeout s, by polling its pidfd.
 * Returns the wait status, or -1 on timeout or error. */
static inline int mp_test_waitpid(pid_t pid, double timeout)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
        return -1;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc;
    do
        rc = poll(&p, 1, (int)(timeout * 1000));
    while (rc < 0 && errno == EINTR);
    close(fd);
    int st;
    if (rc <= 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return st;
}

/* Run argv (a path and its arguments) with its stdout captured in out (at
 * most cap-1 bytes, NUL-terminated).  Returns its wait status, or -1 if it
 * did not end within timeout s (then it and its process group are
 * killed). */
static inline int mp_test_run(char *const argv[], char *out, size_t cap, double timeout)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        setpgid(0, 0);
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    size_t got = 0;
    double end = mp_test_now() + timeout;
    while (got + 1 < cap) {
        double left = end - mp_test_now();
        if (left <= 0)
            break;
        ssize_t r = mp_test_read(fds[0], out + got, 1, left);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    out[got] = '\0';
    close(fds[0]);
    double left = end - mp_test_now();
    int st = mp_test_waitpid(pid, left > 0 ? left : 0.01);
    if (st < 0) {
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return st;
}

/* True once the (not necessarily child) process pid has exited, waiting at
 * most timeout s on its pidfd. */
static inline bool mp_test_process_gone(pid_t pid, double timeout)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
        return errno == ESRCH;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc;
    do
        rc = poll(&p, 1, (int)(timeout * 1000));
    while (rc < 0 && errno == EINTR);
    close(fd);
    return rc == 1;
}

#endif
