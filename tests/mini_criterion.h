/* A small stand-in for the part of Criterion the tests use, for builds where
 * Criterion cannot run: its runner maps a fixed "inheritable arena" that
 * collides with ThreadSanitizer's address layout (Criterion issue #274), so
 * the TSan build compiles the same test files against this header instead.
 *
 * Each Test() registers itself at load time; main() runs every test (or
 * those whose "suite::name" contains the --filter=TEXT option) in its own forked process
 * with its timeout, and reports like Criterion: one line a test and a
 * synthesis.  Assertions print the expression and message and end the test
 * process with status 1. */
#ifndef MP_MINI_CRITERION_H
#define MP_MINI_CRITERION_H

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct mt_opts {
    double timeout;      /* seconds; 0: none */
    void (*init)(void);
    void (*fini)(void);
    int signal;          /* the test passes if it dies by this signal */
    int exit_code;       /* the test passes if it exits with this status */
    bool disabled;
    const char *description;
};

struct mt_test {
    const char *suite, *name;
    void (*fn)(void);
    const struct mt_opts *opts;
    struct mt_test *next;
};

static struct mt_test *mt_head, **mt_tail = &mt_head;
static bool mt_failed; /* a cr_expect failed in this test */

#define Test(suite, name, ...)                                             \
    static void suite##_##name##_impl(void);                               \
    static const struct mt_opts suite##_##name##_opts = {__VA_ARGS__};    \
    static struct mt_test suite##_##name##_test = {                        \
        #suite, #name, suite##_##name##_impl, &suite##_##name##_opts, 0};  \
    __attribute__((constructor)) static void suite##_##name##_reg(void)    \
    {                                                                      \
        *mt_tail = &suite##_##name##_test;                                 \
        mt_tail = &suite##_##name##_test.next;                             \
    }                                                                      \
    static void suite##_##name##_impl(void)

__attribute__((format(printf, 4, 5), unused)) static void
mt_report(const char *file, int line, const char *expr, const char *fmt, ...)
{
    fprintf(stderr, "[----] %s:%d: Assertion Failed\n[----]   %s\n", file, line, expr);
    if (fmt[1] != '\0') { /* fmt is " " plus the user's format */
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "[----]  ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
    }
}

/* The message arguments are optional; a format string, when given, is a
 * literal, so " " glues onto it. */
#define MT_CHECK_(fatal, cond, text, ...)                                   \
    do {                                                                    \
        if (!(cond)) {                                                      \
            mt_report(__FILE__, __LINE__, text, " " __VA_ARGS__);            \
            if (fatal)                                                      \
                _exit(1);                                                   \
            mt_failed = true;                                               \
        }                                                                   \
    } while (0)

#define cr_assert(cond, ...) MT_CHECK_(1, (cond), #cond, __VA_ARGS__)
#define cr_expect(cond, ...) MT_CHECK_(0, (cond), #cond, __VA_ARGS__)
#define cr_assert_not(cond, ...) MT_CHECK_(1, !(cond), "!(" #cond ")", __VA_ARGS__)
#define cr_assert_fail(...) MT_CHECK_(1, 0, "fail", __VA_ARGS__)
#define MT_CMP_(a, op, b, ...) \
    MT_CHECK_(1, (a)op(b), "(" #a ") " #op " (" #b ")", __VA_ARGS__)
#define cr_assert_eq(a, b, ...) MT_CMP_(a, ==, b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...) MT_CMP_(a, !=, b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...) MT_CMP_(a, <, b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...) MT_CMP_(a, <=, b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...) MT_CMP_(a, >, b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...) MT_CMP_(a, >=, b, __VA_ARGS__)
#define cr_expect_eq(a, b, ...) \
    MT_CHECK_(0, (a) == (b), "(" #a ") == (" #b ")", __VA_ARGS__)
#define cr_assert_null(p, ...) MT_CHECK_(1, (p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_assert_not_null(p, ...) MT_CHECK_(1, (p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) \
    MT_CHECK_(1, strcmp((a), (b)) == 0, "strcmp(" #a ", " #b ") == 0", __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...) \
    MT_CHECK_(1, strcmp((a), (b)) != 0, "strcmp(" #a ", " #b ") != 0", __VA_ARGS__)
#define cr_assert_str_empty(a, ...) \
    MT_CHECK_(1, (a)[0] == '\0', #a " is empty", __VA_ARGS__)
#define cr_assert_str_not_empty(a, ...) \
    MT_CHECK_(1, (a)[0] != '\0', #a " is not empty", __VA_ARGS__)
#define cr_assert_arr_eq(a, b, n, ...) \
    MT_CHECK_(1, memcmp((a), (b), (n)) == 0, "memcmp(" #a ", " #b ") == 0", __VA_ARGS__)
#define cr_log_info(...) (fprintf(stderr, "[----] " __VA_ARGS__), fputc('\n', stderr))
#define cr_skip_test(...) _exit(77)

static double mt_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Run one test in a child; true if it passed. */
static bool mt_run(const struct mt_test *t)
{
    const struct mt_opts *o = t->opts;
    double t0 = mt_now();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return false;
    }
    if (pid == 0) {
        setpgid(0, 0); /* a timeout kills the test's whole process group */
        if (o->init)
            o->init();
        t->fn();
        if (o->fini)
            o->fini();
        fflush(NULL);
        _exit(mt_failed ? 1 : 0);
    }
    setpgid(pid, pid);
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    bool timed_out = false;
    if (pfd >= 0 && o->timeout > 0) {
        struct pollfd p = {.fd = pfd, .events = POLLIN};
        int rc;
        do
            rc = poll(&p, 1, (int)(o->timeout * 1000));
        while (rc < 0 && errno == EINTR);
        if (rc == 0) {
            timed_out = true;
            kill(-pid, SIGKILL);
        }
    }
    if (pfd >= 0)
        close(pfd);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    kill(-pid, SIGKILL); /* leftovers of the test, if any */
    bool ok;
    if (timed_out)
        ok = false;
    else if (o->signal)
        ok = WIFSIGNALED(st) && WTERMSIG(st) == o->signal;
    else if (WIFSIGNALED(st))
        ok = false;
    else
        ok = WEXITSTATUS(st) == o->exit_code || WEXITSTATUS(st) == 77;
    const char *what = timed_out ? "TIMEOUT" : ok ? "PASS" : "FAIL";
    fprintf(stderr, "[%s] %s::%s: (%.2fs)", what, t->suite, t->name, mt_now() - t0);
    if (!timed_out && WIFSIGNALED(st) && !o->signal)
        fprintf(stderr, " crashed with signal %d", WTERMSIG(st));
    fputc('\n', stderr);
    return ok;
}

int main(int argc, char **argv)
{
    const char *filter = NULL;
    for (int i = 1; i < argc; i++) /* Criterion's other options are ignored */
        if (strncmp(argv[i], "--filter=", 9) == 0)
            filter = argv[i] + 9;
    int tested = 0, failed = 0;
    for (const struct mt_test *t = mt_head; t; t = t->next) {
        char full[256];
        snprintf(full, sizeof full, "%s::%s", t->suite, t->name);
        if (t->opts->disabled || (filter && !strstr(full, filter)))
            continue;
        tested++;
        if (!mt_run(t))
            failed++;
    }
    fprintf(stderr, "[====] Synthesis: Tested: %d | Passing: %d | Failing: %d\n",
            tested, tested - failed, failed);
    return failed || tested == 0 ? 1 : 0;
}

#endif
