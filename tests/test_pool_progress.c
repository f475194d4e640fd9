/* Progress of maps: the progress callback (while a map runs, and once at
 * its end before it returns) and the bar on stderr, on process and thread
 * pools (MPI pools: the pool contract). */
// labels: unit
#include <mproc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mp_test.h"
#include "test_pool_common.h"

enum { MAX_CALLS = 1000 };

typedef struct {
    pthread_mutex_t lock;
    size_t n;
    size_t done[MAX_CALLS], total[MAX_CALLS];
    double at[MAX_CALLS];
    pthread_t thread[MAX_CALLS];
} calls;

static void on_progress(size_t done, size_t total, void *ud)
{
    calls *c = ud;
    pthread_mutex_lock(&c->lock);
    if (c->n < MAX_CALLS) {
        c->done[c->n] = done;
        c->total[c->n] = total;
        c->at[c->n] = mp_test_now();
        c->thread[c->n] = pthread_self();
        c->n++;
    }
    pthread_mutex_unlock(&c->lock);
}

/* 4 ms an item (or fails, for ITEM_FAIL). */
static int slow_item(const void *in, void *out)
{
    int x = *(const int *)in;
    struct timespec ts = {0, 4 * 1000 * 1000};
    nanosleep(&ts, NULL);
    if (x == ITEM_FAIL)
        return 9;
    *(int *)out = 2 * x + 1;
    return 0;
}

static mp_pool *make(mp_pool_kind kind, calls *c, unsigned flags)
{
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 2, .kind = kind, .flags = flags,
                                                 .progress = c ? on_progress : NULL,
                                                 .progress_ud = c}),
                 0);
    return p;
}

static void finish(mp_pool *p)
{
    mp_expect_rc(mp_pool_close(p), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(30)), 0);
    mp_pool_free(p);
}

/* Calls from one thread (not ours), done never going back, total fixed. */
static void check_calls(calls *c, size_t total)
{
    cr_assert_gt(c->n, 0);
    for (size_t i = 0; i < c->n; i++) {
        cr_assert_eq(c->total[i], total);
        cr_assert_leq(c->done[i], total);
        cr_assert(!pthread_equal(c->thread[i], pthread_self()), "called on the caller's thread");
        cr_assert(pthread_equal(c->thread[i], c->thread[0]), "called on more than one thread");
        if (i)
            cr_assert_geq(c->done[i], c->done[i - 1], "done went back: %zu then %zu",
                          c->done[i - 1], c->done[i]);
    }
}

/* A map of about 1.2 s: reports while it runs, at most about 10 a second,
 * the last (done == total, failed items counted) before it returns. */
static void map_reports(mp_pool_kind kind)
{
    calls c = {.lock = PTHREAD_MUTEX_INITIALIZER};
    mp_pool *p = make(kind, &c, 0);
    enum { N = 600 };
    static int in[N], out[N];
    for (int i = 0; i < N; i++)
        in[i] = i % 100 == 5 ? ITEM_FAIL : i;
    double t0 = mp_test_now();
    mp_expect_rc(mp_pool_map(p, slow_item, in, N, sizeof *in, out, sizeof *out, 4), MP_ETASK);
    double t = mp_test_now() - t0;
    pthread_mutex_lock(&c.lock);
    size_t n = c.n;
    check_calls(&c, N);
    cr_assert_eq(c.done[n - 1], N, "the last report says %zu of %d", c.done[n - 1], N);
    cr_assert_geq(n, 2, "no report while the map ran (%.2f s)", t);
    cr_assert_lt(c.done[0], N, "the first report came at the end");
    cr_assert_leq(n, (size_t)(t * 10) + 3, "%zu reports in %.2f s", n, t);
    size_t before = c.n;
    pthread_mutex_unlock(&c.lock);
    /* A short map: its one report at the end, before it returns. */
    mp_expect_rc(mp_pool_map(p, map_item, in + 1, 4, sizeof *in, out, sizeof *out, 1), 0);
    pthread_mutex_lock(&c.lock);
    cr_assert_gt(c.n, before);
    cr_assert_eq(c.done[c.n - 1], 4);
    cr_assert_eq(c.total[c.n - 1], 4);
    pthread_mutex_unlock(&c.lock);
    finish(p);
}

Test(pool_progress, map_reports, .timeout = MP_TMO(60)) { map_reports(MP_POOL_PROCESS); }

Test(pool_progress, map_reports_threads, .timeout = MP_TMO(60)) { map_reports(MP_POOL_THREAD); }

/* imap: the last report comes before mp_iter_next gives MP_EDONE. */
static void imap_reports(mp_pool_kind kind)
{
    calls c = {.lock = PTHREAD_MUTEX_INITIALIZER};
    mp_pool *p = make(kind, &c, 0);
    enum { N = 3000 };
    static int in[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    mp_iter *it;
    mp_expect_rc(mp_pool_imap(p, map_item, in, N, sizeof *in, sizeof(int), 50, false, &it), 0);
    int v, rc;
    size_t got = 0;
    while ((rc = mp_iter_next(it, &v, NULL, MP_TMO(30))) == 0)
        got++;
    mp_expect_rc(rc, MP_EDONE);
    cr_assert_eq(got, N);
    pthread_mutex_lock(&c.lock);
    check_calls(&c, N);
    cr_assert_eq(c.done[c.n - 1], N);
    size_t n = c.n;
    pthread_mutex_unlock(&c.lock);
    mp_expect_rc(mp_iter_next(it, &v, NULL, 0), MP_EDONE);
    pthread_mutex_lock(&c.lock);
    cr_assert_eq(c.n, n, "reported again after the end");
    pthread_mutex_unlock(&c.lock);
    mp_iter_free(it);
    /* An iterator freed before its end reports no more. */
    mp_expect_rc(mp_pool_imap(p, slow_item, in, 200, sizeof *in, sizeof(int), 1, true, &it), 0);
    mp_expect_rc(mp_iter_next(it, &v, NULL, MP_TMO(30)), 0);
    mp_iter_free(it);
    finish(p);
}

Test(pool_progress, imap_reports, .timeout = MP_TMO(60)) { imap_reports(MP_POOL_PROCESS); }

Test(pool_progress, imap_reports_threads, .timeout = MP_TMO(60)) { imap_reports(MP_POOL_THREAD); }

/* Run a map of about 1.2 s on a pool made with stderr on a pipe (as in a
 * log file), and give what the bar wrote. */
static void bar_output(unsigned flags, char *buf, size_t cap)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(stderr);
    int saved = dup(2);
    cr_assert_geq(saved, 0);
    cr_assert_eq(dup2(fds[1], 2), 2);
    close(fds[1]);
    mp_pool *p = make(MP_POOL_PROCESS, NULL, flags);
    enum { N = 600 };
    static int in[N], out[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    int rc = mp_pool_map(p, slow_item, in, N, sizeof *in, out, sizeof *out, 4);
    /* A short map draws nothing. */
    int rc2 = mp_pool_map(p, map_item, in, 10, sizeof *in, out, sizeof *out, 1);
    finish(p);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    mp_expect_rc(rc, 0);
    mp_expect_rc(rc2, 0);
    size_t len = 0;
    ssize_t k;
    while (len + 1 < cap && (k = read(fds[0], buf + len, cap - 1 - len)) > 0)
        len += (size_t)k;
    buf[len] = 0;
    close(fds[0]);
}

static void check_bar(const char *out)
{
    cr_assert_not_null(strstr(out, "%|"), "no bar in:\n%s", out);
    const char *last = out, *nl;
    size_t lines = 0;
    for (const char *s = out; (nl = strchr(s, '\n')) && nl[1]; s = nl + 1)
        last = nl + 1, lines++;
    cr_assert_not_null(strstr(last, "600/600"), "last line: %s", last);
    cr_assert_not_null(strstr(last, "100%"), "last line: %s", last);
    cr_assert_not_null(strstr(last, "it/s"), "last line: %s", last);
    /* Not a terminal: plain lines, about one each 10%, no redraws. */
    cr_assert_null(strchr(out, '\r'), "redrawn in place on a pipe:\n%s", out);
    cr_assert_leq(lines + 1, 12, "%zu lines:\n%s", lines + 1, out);
    cr_assert_null(strstr(out, "/10 "), "a bar for a short map:\n%s", out);
}

Test(pool_progress, bar_on_stderr, .timeout = MP_TMO(60))
{
    char out[8192];
    bar_output(MP_POOL_PROGRESS_BAR, out, sizeof out);
    check_bar(out);
}

Test(pool_progress, bar_from_the_environment, .timeout = MP_TMO(60))
{
    char out[8192];
    setenv("MPROC_PROGRESS", "1", 1);
    bar_output(0, out, sizeof out);
    unsetenv("MPROC_PROGRESS");
    check_bar(out);
}

Test(pool_progress, no_bar_unless_asked, .timeout = MP_TMO(60))
{
    char out[8192];
    unsetenv("MPROC_PROGRESS");
    bar_output(0, out, sizeof out);
    cr_assert_eq(out[0], 0, "unasked for:\n%s", out);
}

/* imap_items: reports too, the last (all items) before MP_EDONE. */
static int echo_item(const void *data, size_t len, mp_buf *res)
{
    return mp_buf_append(res, data, len);
}

static void items_report(mp_pool_kind kind)
{
    calls c = {.lock = PTHREAD_MUTEX_INITIALIZER};
    mp_pool *p = make(kind, &c, 0);
    enum { N = 5000 };
    static mp_item items[N];
    for (int i = 0; i < N; i++)
        items[i] = (mp_item){"abcdef", 1 + i % 6};
    mp_iter *it;
    mp_expect_rc(mp_pool_imap_items(p, echo_item, items, N, 64, false, &it), 0);
    const void *res;
    size_t len, got = 0;
    int rc;
    while ((rc = mp_iter_next_item(it, &res, &len, NULL, MP_TMO(30))) == 0)
        got++;
    mp_expect_rc(rc, MP_EDONE);
    cr_assert_eq(got, N);
    pthread_mutex_lock(&c.lock);
    check_calls(&c, N);
    cr_assert_eq(c.done[c.n - 1], N);
    pthread_mutex_unlock(&c.lock);
    mp_iter_free(it);
    finish(p);
}

Test(pool_progress, items_report, .timeout = MP_TMO(60)) { items_report(MP_POOL_PROCESS); }

Test(pool_progress, items_report_threads, .timeout = MP_TMO(60)) { items_report(MP_POOL_THREAD); }
