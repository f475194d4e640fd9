/* imap_items: items of any size copied at the call (made after the pool,
 * freed at once), results of any size, per-item failures, crashes and
 * deadlines, more bytes than the shared heap holds, on process and thread
 * pools (MPI pools: the pool contract). */
// labels: unit
#include <mproc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "heap_int.h"
#include "mp_test.h"

static mp_pool *make(mp_pool_kind kind, double timeout)
{
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 2, .kind = kind,
                                                 .task_timeout = timeout}),
                 0);
    return p;
}

static void finish(mp_pool *p)
{
    mp_expect_rc(mp_pool_close(p), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(30)), 0);
    mp_pool_free(p);
}

/* The item reversed, then "!" (a result one byte longer than the item);
 * "fail" fails with 7, "segv" kills the worker, "hang" never returns. */
static int reverse(const void *data, size_t len, mp_buf *res)
{
    const char *s = data;
    if (len == 4 && memcmp(s, "fail", 4) == 0)
        return 7;
    if (len == 4 && memcmp(s, "segv", 4) == 0)
        raise(SIGSEGV);
    if (len == 4 && memcmp(s, "hang", 4) == 0)
        for (;;)
            pause();
    for (size_t i = 0; i < len; i++)
        if (mp_buf_append(res, &s[len - 1 - i], 1) < 0)
            return 1;
    return mp_buf_append(res, "!", 1);
}

/* n strings of lengths 0..299, made after the pool. */
static char **strings(size_t n)
{
    char **s = malloc(n * sizeof *s);
    for (size_t i = 0; i < n; i++) {
        size_t len = (i * 37) % 300;
        s[i] = malloc(len + 1);
        for (size_t k = 0; k < len; k++)
            s[i][k] = (char)('a' + (i + k) % 26);
        s[i][len] = 0;
    }
    return s;
}

static void check_reversed(const char *item, const void *res, size_t len)
{
    size_t n = strlen(item);
    cr_assert_eq(len, n + 1, "result of %zu bytes for an item of %zu", len, n);
    const char *r = res;
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(r[k], item[n - 1 - k]);
    cr_assert_eq(r[n], '!');
}

/* chunk 0: the default cut (every piece sent at the call); small: most
 * pieces go out later, from the iterator's own copy. */
static void strings_round_trip(mp_pool_kind kind, bool ordered, size_t chunk)
{
    mp_pool *p = make(kind, 0);
    enum { N = 20000 };
    char **s = strings(N);
    mp_item *items = malloc(N * sizeof *items);
    for (size_t i = 0; i < N; i++)
        items[i] = (mp_item){s[i], strlen(s[i])};
    mp_iter *it;
    mp_expect_rc(mp_pool_imap_items(p, reverse, items, N, chunk, ordered, &it), 0);
    /* Copied at the call: the caller's items may go at once. */
    char **keep = strings(N);
    for (size_t i = 0; i < N; i++) {
        memset(s[i], 'x', strlen(s[i]));
        free(s[i]);
    }
    free(s);
    free(items);
    unsigned char *seen = calloc(N, 1);
    const void *res;
    size_t len, idx, got = 0;
    int rc;
    while ((rc = mp_iter_next_item(it, &res, &len, &idx, MP_TMO(30))) != MP_EDONE) {
        mp_expect_rc(rc, 0);
        cr_assert_lt(idx, N);
        cr_assert(!seen[idx], "item %zu twice", idx);
        if (ordered)
            cr_assert_eq(idx, got);
        seen[idx] = 1;
        check_reversed(keep[idx], res, len);
        got++;
    }
    cr_assert_eq(got, N);
    mp_expect_rc(mp_iter_next_item(it, &res, &len, &idx, 0), MP_EDONE);
    mp_iter_free(it);
    for (size_t i = 0; i < N; i++)
        free(keep[i]);
    free(keep);
    free(seen);
    finish(p);
}

Test(pool_items, strings_in_order, .timeout = MP_TMO(60))
{
    strings_round_trip(MP_POOL_PROCESS, true, 0);
}

Test(pool_items, strings_as_they_end, .timeout = MP_TMO(60))
{
    strings_round_trip(MP_POOL_PROCESS, false, 0);
}

Test(pool_items, strings_in_order_threads, .timeout = MP_TMO(60))
{
    strings_round_trip(MP_POOL_THREAD, true, 0);
}

Test(pool_items, strings_as_they_end_threads, .timeout = MP_TMO(60))
{
    strings_round_trip(MP_POOL_THREAD, false, 0);
}

Test(pool_items, strings_past_the_window, .timeout = MP_TMO(60))
{
    strings_round_trip(MP_POOL_PROCESS, true, 7);
    strings_round_trip(MP_POOL_PROCESS, false, 7);
}

/* Failed items: fn's value (MP_ETASK), a crash (MP_EWORKER with the
 * signal), a deadline (MP_EDEADLINE); every other item exactly once.
 * chunk 100: every piece goes out at the call; 10: most from the copy. */
static void failures(mp_pool_kind kind, size_t chunk)
{
    bool process = kind == MP_POOL_PROCESS;
    mp_pool *p = make(kind, process ? 0.5 : 0);
    enum { N = 3000 };
    mp_item *items = malloc(N * sizeof *items);
    for (size_t i = 0; i < N; i++) {
        const char *v = "abc";
        if (i % 500 == 11)
            v = "fail";
        if (process && i == 1234)
            v = "segv";
        if (process && i == 2345)
            v = "hang";
        items[i] = (mp_item){v, strlen(v)};
    }
    mp_iter *it;
    mp_expect_rc(mp_pool_imap_items(p, reverse, items, N, chunk, true, &it), 0);
    const void *res;
    size_t len, idx, got = 0;
    int rc;
    mp_task_info info;
    while ((rc = mp_iter_next_item(it, &res, &len, &idx, MP_TMO(30))) != MP_EDONE) {
        cr_assert_eq(idx, got, "item %zu where %zu was due", idx, got);
        got++;
        mp_expect_rc(mp_iter_info(it, &info), 0);
        cr_assert_eq(info.code, rc);
        const char *v = items[idx].data;
        if (strcmp(v, "fail") == 0) {
            mp_expect_rc(rc, MP_ETASK);
            cr_assert_eq(info.task_rc, 7);
            cr_assert_null(res);
        } else if (strcmp(v, "segv") == 0) {
            mp_expect_rc(rc, MP_EWORKER);
            cr_assert_eq(info.signo, SIGSEGV);
        } else if (strcmp(v, "hang") == 0) {
            mp_expect_rc(rc, MP_EDEADLINE);
        } else {
            mp_expect_rc(rc, 0);
            cr_assert_eq(len, 4);
            cr_assert_eq(memcmp(res, "cba!", 4), 0);
        }
    }
    cr_assert_eq(got, N);
    mp_iter_free(it);
    mp_pool_stats st;
    mp_expect_rc(mp_pool_get_stats(p, &st), 0);
    cr_assert_eq(st.tasks_done, N, "%llu", (unsigned long long)st.tasks_done);
    cr_assert_eq(st.tasks_failed, N / 500 + (process ? 2 : 0));
    free(items);
    finish(p);
}

Test(pool_items, failures_crashes_deadlines, .timeout = MP_TMO(60))
{
    failures(MP_POOL_PROCESS, 100);
}

Test(pool_items, failures_past_the_window, .timeout = MP_TMO(60))
{
    failures(MP_POOL_PROCESS, 10);
}

Test(pool_items, failures_threads, .timeout = MP_TMO(60)) { failures(MP_POOL_THREAD, 100); }

/* A result much bigger than its item, and items of a MiB. */
static int blow_up(const void *data, size_t len, mp_buf *res)
{
    unsigned char block[4096];
    memset(block, ((const unsigned char *)data)[0], sizeof block);
    size_t want = len * 64;
    for (size_t done = 0; done < want; done += sizeof block)
        if (mp_buf_append(res, block, want - done < sizeof block ? want - done : sizeof block))
            return 1;
    return 0;
}

Test(pool_items, big_results, .timeout = MP_TMO(60))
{
    mp_pool *p = make(MP_POOL_PROCESS, 0);
    enum { N = 40 };
    unsigned char buf[N][1024];
    mp_item items[N];
    for (size_t i = 0; i < N; i++) {
        memset(buf[i], (int)i, sizeof buf[i]);
        items[i] = (mp_item){buf[i], 1 + i * 25};
    }
    mp_iter *it;
    mp_expect_rc(mp_pool_imap_items(p, blow_up, items, N, 3, true, &it), 0);
    const void *res;
    size_t len, idx;
    for (size_t i = 0; i < N; i++) {
        mp_expect_rc(mp_iter_next_item(it, &res, &len, &idx, MP_TMO(30)), 0);
        cr_assert_eq(idx, i);
        cr_assert_eq(len, items[i].len * 64);
        for (size_t k = 0; k < len; k += 997)
            cr_assert_eq(((const unsigned char *)res)[k], (unsigned char)i);
    }
    mp_iter_free(it);
    finish(p);
}

/* More bytes than the shared heap holds (64 MiB here): they are streamed. */
static int sum_bytes(const void *data, size_t len, mp_buf *res)
{
    uint64_t s = 0;
    const unsigned char *d = data;
    for (size_t i = 0; i < len; i += 4096)
        s += d[i];
    return mp_buf_append(res, &s, sizeof s);
}

Test(pool_items, more_than_the_heap, .timeout = MP_TMO(120))
{
    setenv("MPROC_HEAP_SIZE", "64MiB", 1);
    mp_pool *p = make(MP_POOL_PROCESS, 0);
    cr_assert_leq(mp__heap_capacity(), (size_t)64 << 20, "the heap holds %zu bytes",
                  mp__heap_capacity());
    enum { N = 160, SIZE = 1 << 20 }; /* 160 MiB */
    unsigned char *block = malloc(SIZE);
    mp_item *items = malloc(N * sizeof *items);
    for (size_t i = 0; i < N; i++)
        items[i] = (mp_item){block, SIZE};
    for (size_t k = 0; k < SIZE; k++)
        block[k] = (unsigned char)(k / 4096);
    uint64_t want = 0;
    for (size_t k = 0; k < SIZE; k += 4096)
        want += block[k];
    mp_iter *it;
    mp_expect_rc(mp_pool_imap_items(p, sum_bytes, items, N, 0, false, &it), 0);
    free(block);
    free(items);
    const void *res;
    size_t len, got = 0;
    int rc;
    while ((rc = mp_iter_next_item(it, &res, &len, NULL, MP_TMO(60))) != MP_EDONE) {
        mp_expect_rc(rc, 0);
        cr_assert_eq(len, sizeof(uint64_t));
        cr_assert_eq(*(const uint64_t *)res, want);
        got++;
    }
    cr_assert_eq(got, N);
    mp_iter_free(it);
    finish(p);
}

/* mp_iter_next_item on an imap iterator: each element in place. */
static int twice(const void *in, void *out)
{
    *(int *)out = 2 * *(const int *)in;
    return 0;
}

Test(pool_items, next_item_on_imap, .timeout = MP_TMO(30))
{
    mp_pool *p = make(MP_POOL_THREAD, 0);
    int in[100];
    for (int i = 0; i < 100; i++)
        in[i] = i;
    mp_iter *it;
    mp_expect_rc(mp_pool_imap(p, twice, in, 100, sizeof(int), sizeof(int), 7, true, &it), 0);
    const void *res;
    size_t len, idx;
    for (int i = 0; i < 100; i++) {
        mp_expect_rc(mp_iter_next_item(it, &res, &len, &idx, MP_TMO(30)), 0);
        cr_assert_eq(idx, (size_t)i);
        cr_assert_eq(len, sizeof(int));
        cr_assert_eq(*(const int *)res, 2 * i);
    }
    mp_expect_rc(mp_iter_next_item(it, &res, &len, &idx, 0), MP_EDONE);
    mp_iter_free(it);
    finish(p);
}

Test(pool_items, bad_input_and_edges, .timeout = MP_TMO(30))
{
    mp_pool *p = make(MP_POOL_PROCESS, 0);
    mp_iter *it = NULL;
    mp_item one = {"x", 1}, bad = {NULL, 3};
    mp_expect_rc(mp_pool_imap_items(NULL, reverse, &one, 1, 0, true, &it), -EINVAL);
    mp_expect_rc(mp_pool_imap_items(p, NULL, &one, 1, 0, true, &it), -EINVAL);
    mp_expect_rc(mp_pool_imap_items(p, reverse, NULL, 1, 0, true, &it), -EINVAL);
    mp_expect_rc(mp_pool_imap_items(p, reverse, &bad, 1, 0, true, &it), -EINVAL);
    mp_expect_rc(mp_pool_imap_items(p, reverse, &one, 1, 0, true, NULL), -EINVAL);
    /* No items: done at once. */
    const void *res;
    size_t len;
    mp_expect_rc(mp_pool_imap_items(p, reverse, NULL, 0, 0, true, &it), 0);
    mp_expect_rc(mp_iter_next_item(it, &res, &len, NULL, MP_TMO(10)), MP_EDONE);
    mp_task_info info;
    mp_expect_rc(mp_iter_info(it, &info), -EAGAIN);
    mp_iter_free(it);
    /* An empty item has an empty result plus "!". */
    mp_item empty = {NULL, 0};
    mp_expect_rc(mp_pool_imap_items(p, reverse, &empty, 1, 0, true, &it), 0);
    int v;
    mp_expect_rc(mp_iter_next(it, &v, NULL, 0), -EINVAL); /* (items: next_item) */
    mp_expect_rc(mp_iter_next_item(it, NULL, &len, NULL, MP_TMO(10)), -EINVAL);
    mp_expect_rc(mp_iter_next_item(it, &res, &len, NULL, MP_TMO(10)), 0);
    cr_assert_eq(len, 1);
    cr_assert_eq(*(const char *)res, '!');
    mp_iter_free(it);
    /* Freed before its end: what was not run is dropped, nothing hangs. */
    enum { N = 5000 };
    mp_item *items = malloc(N * sizeof *items);
    for (size_t i = 0; i < N; i++)
        items[i] = (mp_item){"hello", 5};
    mp_expect_rc(mp_pool_imap_items(p, reverse, items, N, 10, true, &it), 0);
    mp_expect_rc(mp_iter_next_item(it, &res, &len, NULL, MP_TMO(10)), 0);
    mp_iter_free(it);
    free(items);
    /* A closed pool takes none. */
    mp_expect_rc(mp_pool_close(p), 0);
    mp_expect_rc(mp_pool_imap_items(p, reverse, &one, 1, 0, true, &it), MP_ECLOSED);
    mp_expect_rc(mp_pool_join(p, MP_TMO(30)), 0);
    mp_pool_free(p);
}
