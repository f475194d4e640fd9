/* Readiness of many descriptors (epoll) and cross-process notifiers
 * (eventfd): what the pool's supervisor thread sleeps on. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "os.h"

int mp__poller_new(void)
{
    int fd = epoll_create1(EPOLL_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int mp__poller_add(int poller, int fd, uint64_t tag)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    return epoll_ctl(poller, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int mp__poller_add_exclusive(int poller, int fd, uint64_t tag)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.u64 = tag};
    return epoll_ctl(poller, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int mp__poller_del(int poller, int fd)
{
    return epoll_ctl(poller, EPOLL_CTL_DEL, fd, NULL) < 0 ? -errno : 0;
}

int mp__poller_wait(int poller, uint64_t *tags, int max, int64_t deadline)
{
    struct epoll_event evs[16];
    if (max > 16)
        max = 16;
    for (;;) {
        int n = epoll_wait(poller, evs, max, mp__deadline_ms(deadline));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0 && deadline != MP__NO_DEADLINE && mp__now_ns() < deadline)
            continue; /* epoll rounds to ms: wait out the remainder */
        for (int i = 0; i < n; i++)
            tags[i] = evs[i].data.u64;
        return n;
    }
}

int mp__poller_arm(int poller, int fd, unsigned events, uint64_t tag)
{
    struct epoll_event ev = {.events = EPOLLONESHOT, .data.u64 = tag};
    if (events & MP__POLL_IN)
        ev.events |= EPOLLIN | EPOLLRDHUP;
    if (events & MP__POLL_OUT)
        ev.events |= EPOLLOUT;
    if (epoll_ctl(poller, EPOLL_CTL_MOD, fd, &ev) == 0)
        return 0;
    if (errno != ENOENT)
        return -errno;
    return epoll_ctl(poller, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int mp__poller_wait_events(int poller, uint64_t *tags, unsigned *events, int max,
                           int64_t deadline)
{
    struct epoll_event evs[64];
    if (max > 64)
        max = 64;
    static int no_pwait2;
    for (;;) {
        int n;
        if (!no_pwait2) {
            struct timespec ts;
            n = (int)syscall(SYS_epoll_pwait2, poller, evs, max, mp__timespec_left(deadline, &ts),
                             NULL, (size_t)0);
            if (n < 0 && errno == ENOSYS) {
                no_pwait2 = 1;
                continue;
            }
        } else {
            n = epoll_wait(poller, evs, max, mp__deadline_ms(deadline));
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        for (int i = 0; i < n; i++) {
            uint32_t e = evs[i].events;
            tags[i] = evs[i].data.u64;
            events[i] = ((e & (EPOLLIN | EPOLLRDHUP)) ? MP__POLL_IN : 0) |
                        ((e & EPOLLOUT) ? MP__POLL_OUT : 0) |
                        ((e & (EPOLLERR | EPOLLHUP)) ? MP__POLL_ERR | MP__POLL_IN | MP__POLL_OUT : 0);
        }
        return n;
    }
}

int mp__notifier_new(void)
{
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

void mp__notify(int fd)
{
    uint64_t one = 1;
    /* Full counter (EAGAIN) means it is readable already. */
    while (write(fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

void mp__notifier_drain(int fd)
{
    uint64_t v;
    while (read(fd, &v, sizeof v) < 0 && errno == EINTR)
        ;
}

int mp__child_watch_new(void)
{
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int fd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

int mp__child_reap_any(int watch, pid_t *pid, int *code)
{
    struct signalfd_siginfo si[8];
    while (read(watch, si, sizeof si) > 0)
        ; /* signals merge: what counts is what waitid finds */
    for (;;) {
        siginfo_t info;
        memset(&info, 0, sizeof info);
        if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG) < 0) {
            if (errno == EINTR)
                continue;
            return errno == ECHILD ? 0 : -errno;
        }
        if (info.si_pid == 0)
            return 0;
        *pid = info.si_pid;
        *code = info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
        return 1;
    }
}

void mp__worker_signals(void)
{
    signal(SIGINT, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
}
