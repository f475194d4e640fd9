/* Crash forensics: a process worker that dies of a fatal signal leaves its
 * fault address and stack in mp_task_info (apply, map_ex, imap,
 * imap_items); one killed or exiting leaves none.  Memory limits: a task
 * whose worker goes over worker_memory fails with MP_EMEMORY, the pool
 * goes on. */
// labels: unit
#include <mproc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mp_test.h"

static mp_pool *make(unsigned workers, size_t memory)
{
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = workers, .worker_memory = memory}), 0);
    return p;
}

static void finish(mp_pool *p)
{
    mp_expect_rc(mp_pool_close(p), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(30)), 0);
    mp_pool_free(p);
}

/* ---- the ways to die, each in a function of its own name ---- */

int volatile *volatile null_int;   /* (NULL, unknown to the compiler) */
uintptr_t volatile low_address = 0x40;
int volatile depth_limit = -1;      /* (never reached) */

/* (UBSan would stop at the load itself: the test wants the fault.) */
__attribute__((noinline, no_sanitize_undefined)) int deref_null_here(int x)
{
    return *null_int + x;
}

__attribute__((noinline)) void write_to_0x40(void)
{
    *(int volatile *)low_address = 1;
}

__attribute__((noinline)) void call_abort_here(void)
{
    abort();
}

__attribute__((noinline)) int recurse_forever(int depth)
{
    volatile char pad[256];
    pad[depth & 255] = (char)depth;
    if (depth == depth_limit)
        return 0;
    return recurse_forever(depth + 1) + pad[(depth + 1) & 255];
}

enum { DIE_SEGV_NULL, DIE_SEGV_0X40, DIE_ABORT, DIE_OVERFLOW, DIE_KILL, DIE_EXIT };

static int die_task(const void *arg, size_t len, mp_buf *res)
{
    (void)len;
    (void)res;
    switch (*(const int *)arg) {
    case DIE_SEGV_NULL:
        return deref_null_here(1);
    case DIE_SEGV_0X40:
        write_to_0x40();
        break;
    case DIE_ABORT:
        call_abort_here();
        break;
    case DIE_OVERFLOW:
        return recurse_forever(0);
    case DIE_KILL:
        raise(SIGKILL);
        break;
    case DIE_EXIT:
        _exit(3);
    }
    return 0;
}

static mp_task_info apply_info(mp_pool *p, int how)
{
    mp_result *r;
    mp_expect_rc(mp_pool_apply_async(p, die_task, &how, sizeof how, NULL, &r), 0);
    mp_expect_rc(mp_result_wait(r, MP_TMO(30)), 0);
    mp_task_info info;
    mp_expect_rc(mp_result_info(r, &info), 0);
    mp_result_free(r);
    return info;
}

/* The report is frames, one a line, "#N function+0xoff (object)". */
static void expect_frames(const char *crash, const char *fn)
{
    cr_assert(strncmp(crash, "#0 ", 3) == 0, "report: %s", crash);
    cr_assert(strstr(crash, fn) != NULL, "no %s in: %s", fn, crash);
    cr_assert(strstr(crash, "+0x") != NULL, "report: %s", crash);
    cr_assert(crash[strlen(crash) - 1] == '\n', "report: %s", crash);
    cr_assert(strlen(crash) < sizeof(((mp_task_info *)0)->crash));
}

Test(pool_crash, segfault_names_the_function_and_address, .timeout = 60)
{
    mp_pool *p = make(2, 0);
    mp_task_info i = apply_info(p, DIE_SEGV_0X40);
    cr_assert_eq(i.code, MP_EWORKER);
    cr_assert_eq(i.signo, SIGSEGV);
    cr_assert_eq(i.fault_addr, 0x40);
    expect_frames(i.crash, "write_to_0x40");
    /* The caller's frames follow the faulting one. */
    cr_assert(strstr(i.crash, "die_task") != NULL, "report: %s", i.crash);
#if defined(MP_HAVE_LIBDW)
    cr_assert(strstr(i.crash, "test_pool_crash.c:") != NULL, "no file:line in: %s", i.crash);
#endif
    finish(p);
}

Test(pool_crash, abort_and_stack_overflow_are_reported, .timeout = 60)
{
    mp_pool *p = make(2, 0);
    mp_task_info i = apply_info(p, DIE_ABORT);
    cr_assert_eq(i.code, MP_EWORKER);
    cr_assert_eq(i.signo, SIGABRT);
    cr_assert_eq(i.fault_addr, 0);
    expect_frames(i.crash, "call_abort_here");

    i = apply_info(p, DIE_OVERFLOW);
    cr_assert_eq(i.code, MP_EWORKER);
    cr_assert_eq(i.signo, SIGSEGV);
    cr_assert_neq(i.fault_addr, 0);
    expect_frames(i.crash, "recurse_forever");
    finish(p);
}

Test(pool_crash, killed_or_exiting_workers_leave_no_report, .timeout = 60)
{
    mp_pool *p = make(2, 0);
    /* (A crash first: the next death of the same slot must not show it.) */
    for (int k = 0; k < 2; k++) {
        mp_task_info i = apply_info(p, DIE_SEGV_NULL);
        cr_assert_eq(i.signo, SIGSEGV);
        cr_assert_neq(i.crash[0], '\0');
    }
    mp_task_info i = apply_info(p, DIE_KILL);
    cr_assert_eq(i.code, MP_EWORKER);
    cr_assert_eq(i.signo, SIGKILL);
    cr_assert_eq(i.fault_addr, 0);
    cr_assert_str_empty(i.crash);
    i = apply_info(p, DIE_EXIT);
    cr_assert_eq(i.code, MP_EWORKER);
    cr_assert_eq(i.exit_status, 3);
    cr_assert_eq(i.fault_addr, 0);
    cr_assert_str_empty(i.crash);
    /* A task that succeeds has none either. */
    int ok = -1;
    mp_result *r;
    mp_expect_rc(mp_pool_apply_async(p, die_task, &ok, sizeof ok, NULL, &r), 0);
    mp_expect_rc(mp_result_get(r, MP_TMO(30), NULL, NULL), 0);
    mp_expect_rc(mp_result_info(r, &i), 0);
    cr_assert_eq(i.code, 0);
    cr_assert_str_empty(i.crash);
    mp_result_free(r);
    finish(p);
}

/* ---- maps ---- */

static int item17(const void *in, void *out)
{
    int x = *(const int *)in;
    *(int *)out = x == 17 ? deref_null_here(x) : x * 2;
    return 0;
}

Test(pool_crash, map_ex_reports_the_item_that_crashed, .timeout = 60)
{
    mp_pool *p = make(2, 0);
    enum { N = 1000 };
    int in[N], out[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    mp_map_error *errs = NULL;
    size_t nerrs = 0;
    mp_expect_rc(mp_pool_map_ex(p, item17, in, N, sizeof *in, out, sizeof *out, 0, &errs, &nerrs),
                 MP_EWORKER);
    cr_assert_eq(nerrs, 1);
    cr_assert_eq(errs[0].index, 17);
    cr_assert_eq(errs[0].info.code, MP_EWORKER);
    cr_assert_eq(errs[0].info.signo, SIGSEGV);
    cr_assert_eq(errs[0].info.fault_addr, 0);
    expect_frames(errs[0].info.crash, "deref_null_here");
    cr_assert(strstr(errs[0].info.crash, "item17") != NULL, "report: %s", errs[0].info.crash);
    for (int i = 0; i < N; i++)
        if (i != 17)
            cr_assert_eq(out[i], 2 * i, "item %d", i);
    free(errs);
    finish(p);
}

Test(pool_crash, imap_and_imap_items_carry_the_report, .timeout = 60)
{
    mp_pool *p = make(2, 0);
    enum { N = 100 };
    int in[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    mp_iter *it;
    mp_expect_rc(mp_pool_imap(p, item17, in, N, sizeof *in, sizeof(int), 8, true, &it), 0);
    int out, seen = 0;
    size_t idx;
    int rc;
    while ((rc = mp_iter_next(it, &out, &idx, MP_TMO(30))) != MP_EDONE) {
        mp_task_info i;
        mp_expect_rc(mp_iter_info(it, &i), 0);
        if (idx == 17) {
            cr_assert_eq(rc, MP_EWORKER);
            cr_assert_eq(i.signo, SIGSEGV);
            expect_frames(i.crash, "deref_null_here");
            seen++;
        } else {
            cr_assert_eq(rc, 0);
            cr_assert_str_empty(i.crash);
        }
    }
    mp_iter_free(it);
    cr_assert_eq(seen, 1);

    mp_item items[N];
    int how[N];
    for (int i = 0; i < N; i++) {
        how[i] = i == 40 ? DIE_ABORT : -1;
        items[i] = (mp_item){&how[i], sizeof how[i]};
    }
    mp_expect_rc(mp_pool_imap_items(p, die_task, items, N, 4, true, &it), 0);
    const void *res;
    size_t len;
    seen = 0;
    while ((rc = mp_iter_next_item(it, &res, &len, &idx, MP_TMO(30))) != MP_EDONE) {
        mp_task_info i;
        mp_expect_rc(mp_iter_info(it, &i), 0);
        if (idx == 40) {
            cr_assert_eq(rc, MP_EWORKER);
            cr_assert_eq(i.signo, SIGABRT);
            expect_frames(i.crash, "call_abort_here");
            seen++;
        } else {
            cr_assert_eq(rc, 0);
        }
    }
    mp_iter_free(it);
    cr_assert_eq(seen, 1);
    finish(p);
}

/* ---- memory limits ---- */

/* Allocate and touch mib MiB: 0, or 1 when malloc says no. */
static int touch_mib(int mib)
{
    size_t n = (size_t)mib << 20;
    char *m = malloc(n);
    if (m == NULL)
        return 1;
    for (size_t i = 0; i < n; i += 4096)
        m[i] = 1;
    int sum = m[n / 2];
    free(m);
    return sum == 1 ? 0 : 1;
}

static int eat_mib(const void *arg, size_t len, mp_buf *res)
{
    (void)len;
    (void)res;
    return touch_mib(*(const int *)arg);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

Test(pool_crash, a_task_over_the_memory_limit_fails_alone, .timeout = 120)
{
    mp_pool *p = make(2, (size_t)256 << 20);
    int mib = 2048;
    double t0 = now_s();
    mp_expect_rc(mp_pool_apply(p, eat_mib, &mib, sizeof mib, NULL, NULL), MP_EMEMORY);
    double took = now_s() - t0;
    cr_assert(took < 2.0 * MP_TEST_TIMEOUT_MULTIPLIER, "took %.2f s", took);
    mp_result *r;
    mp_expect_rc(mp_pool_apply_async(p, eat_mib, &mib, sizeof mib, NULL, &r), 0);
    mp_expect_rc(mp_result_wait(r, MP_TMO(30)), 0);
    mp_task_info i;
    mp_expect_rc(mp_result_info(r, &i), 0);
    cr_assert_eq(i.code, MP_EMEMORY);
    cr_assert_eq(i.signo, SIGKILL);
    cr_assert_str_empty(i.crash);
    mp_result_free(r);
    /* The pool goes on, and tasks under the limit are untouched. */
    mib = 64;
    mp_expect_rc(mp_pool_apply(p, eat_mib, &mib, sizeof mib, NULL, NULL), 0);
    mp_pool_stats st;
    mp_expect_rc(mp_pool_get_stats(p, &st), 0);
    cr_assert_geq(st.worker_restarts, 2);
    finish(p);

    /* The same task without a limit. */
    p = make(2, 0);
    mib = 1024;
    mp_expect_rc(mp_pool_apply(p, eat_mib, &mib, sizeof mib, NULL, NULL), 0);
    finish(p);
}

static int map_eat(const void *in, void *out)
{
    *(int *)out = *(const int *)in;
    return touch_mib(*(const int *)in);
}

Test(pool_crash, in_a_map_only_the_item_over_the_limit_fails, .timeout = 120)
{
    mp_pool *p = make(2, (size_t)256 << 20);
    enum { N = 40 };
    int in[N], out[N];
    for (int i = 0; i < N; i++)
        in[i] = i == 9 ? 2048 : 1;
    mp_map_error *errs = NULL;
    size_t nerrs = 0;
    mp_expect_rc(mp_pool_map_ex(p, map_eat, in, N, sizeof *in, out, sizeof *out, 4, &errs, &nerrs),
                 MP_EMEMORY);
    cr_assert_eq(nerrs, 1);
    cr_assert_eq(errs[0].index, 9);
    cr_assert_eq(errs[0].info.code, MP_EMEMORY);
    cr_assert_eq(errs[0].info.signo, SIGKILL);
    for (int i = 0; i < N; i++)
        if (i != 9)
            cr_assert_eq(out[i], 1, "item %d", i);
    free(errs);
    finish(p);
}

Test(pool_crash, memory_limits_are_for_process_pools, .timeout = 30)
{
    mp_pool *p = NULL;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 2, .kind = MP_POOL_THREAD,
                                                 .worker_memory = 1 << 30}),
                 -EINVAL);
    cr_assert_null(p);
    cr_assert_str_eq(mp_strerror(MP_EMEMORY), "worker went over its memory limit");
    cr_assert_str_eq(mp_errname(MP_EMEMORY), "MP_EMEMORY");
}
