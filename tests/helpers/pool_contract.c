/* One program, every pool kind: the pool contract checked end to end.
 *
 *   pool_contract process|thread
 *   mpirun -n N pool_contract mpi
 *   [mpirun -n 1] pool_contract solo   (no worker ranks: MP_ENOMPI, fallback)
 *   mpirun -n N pool_contract exit     (returns with a task running)
 *
 * The checks are the same for every kind except where a kind refuses
 * something by design (timeouts and crashes on threads, unnameable
 * functions on MPI).  Prints "ok <check>" per check and "all ok" at the
 * end; exits 1 at the first failure. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <mproc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static mp_pool_kind kind;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "pool_contract: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                             \
        }                                                                        \
    } while (0)
#define CHECK_RC(expr, want)                                                     \
    do {                                                                         \
        int rc_ = (expr);                                                        \
        if (rc_ != (want)) {                                                     \
            fprintf(stderr, "pool_contract: %s:%d: %s = %s, want %s\n", __FILE__,     \
                    __LINE__, #expr, mp_errname(rc_), mp_errname(want));         \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static mp_pool *pool(unsigned workers, double timeout)
{
    mp_pool_opts o = {.workers = workers, .kind = kind, .task_timeout = timeout};
    mp_pool *p = NULL;
    CHECK_RC(mp_pool_new(&p, &o), 0);
    return p;
}

static void done(mp_pool *p)
{
    CHECK_RC(mp_pool_close(p), 0);
    CHECK_RC(mp_pool_join(p, 30), 0);
    mp_pool_free(p);
}

/* ---- tasks ---- */

static int square(const void *arg, size_t len, mp_buf *res)
{
    if (len != sizeof(long))
        return 2;
    long v;
    memcpy(&v, arg, sizeof v);
    v *= v;
    return mp_buf_append(res, &v, sizeof v);
}

static int fail_on_odd(const void *arg, size_t len, mp_buf *res)
{
    long v;
    memcpy(&v, arg, sizeof v);
    return v % 2 ? 7 : mp_buf_append(res, &v, sizeof v);
}

static int crash(const void *arg, size_t len, mp_buf *res)
{
    (void)arg, (void)len, (void)res;
    raise(SIGSEGV);
    return 0;
}

static int nap(const void *arg, size_t len, mp_buf *res)
{
    double s;
    memcpy(&s, arg, sizeof s);
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0)
        ;
    return mp_buf_append(res, &s, sizeof s);
}

static int nap_item(const void *in, void *out)
{
    double s = *(const double *)in;
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0)
        ;
    *(double *)out = s;
    return 0;
}

static int whoami(const void *arg, size_t len, mp_buf *res)
{
    int v[2] = {mp_pool_worker_index(), (int)getpid()};
    return mp_buf_append(res, v, sizeof v);
}

/* Sums the bytes and answers with the argument reversed. */
static int reverse(const void *arg, size_t len, mp_buf *res)
{
    const unsigned char *a = arg;
    unsigned char *r = malloc(len);
    if (r == NULL)
        return 3;
    for (size_t i = 0; i < len; i++)
        r[i] = a[len - 1 - i];
    int rc = mp_buf_append(res, r, len);
    free(r);
    return rc;
}

static int twice_plus_one(const void *in, void *out)
{
    long v = *(const long *)in;
    if (v % 1000 == 7)
        return 9;
    if (v == 5003 && kind != MP_POOL_THREAD)
        raise(SIGSEGV);
    *(long *)out = 2 * v + 1;
    return 0;
}

/* A run of elements: out = 2 * in + 1; a run holding 7007 fails with 9,
 * one holding 5003 crashes its worker (not in a thread pool). */
static int twice_plus_one_run(const void *inp, void *outp, size_t count)
{
    const long *in = inp;
    long *out = outp;
    for (size_t i = 0; i < count; i++) {
        if (in[i] == 7007)
            return 9;
        if (in[i] == 5003 && kind != MP_POOL_THREAD)
            raise(SIGSEGV);
    }
    for (size_t i = 0; i < count; i++)
        out[i] = 2 * in[i] + 1;
    return 0;
}

static int init_value;

static void set_value(void *arg) { memcpy(&init_value, arg, sizeof init_value); }

static int get_value(const void *arg, size_t len, mp_buf *res)
{
    return mp_buf_append(res, &init_value, sizeof init_value);
}

/* ---- callbacks ---- */

static atomic_long cb_sum;
static atomic_int cb_errors, cb_calls;

static void on_result(const void *res, size_t len, void *ud)
{
    long v;
    memcpy(&v, res, sizeof v);
    atomic_fetch_add(&cb_sum, v);
    atomic_fetch_add(&cb_calls, 1);
}

static void on_error(int code, void *ud)
{
    if (code == MP_ETASK)
        atomic_fetch_add(&cb_errors, 1);
    atomic_fetch_add(&cb_calls, 1);
}

/* ---- checks ---- */

static void check_apply(void)
{
    mp_pool *p = pool(0, 0);
    for (long i = 0; i < 50; i++) {
        void *res = NULL;
        size_t len = 0;
        CHECK_RC(mp_pool_apply(p, square, &i, sizeof i, &res, &len), 0);
        CHECK(len == sizeof(long) && *(long *)res == i * i);
        free(res);
    }
    /* Big argument and result: 1 MiB each way. */
    size_t n = 1 << 20;
    unsigned char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (unsigned char)(i * 7);
    void *res = NULL;
    size_t len = 0;
    CHECK_RC(mp_pool_apply(p, reverse, big, n, &res, &len), 0);
    CHECK(len == n);
    for (size_t i = 0; i < n; i++)
        CHECK(((unsigned char *)res)[i] == big[n - 1 - i]);
    free(res);
    free(big);
    done(p);
    puts("ok apply");
}

static void check_async_callbacks(void)
{
    mp_pool *p = pool(0, 0);
    enum { N = 200 };
    mp_result *rs[N];
    long want = 0;
    for (long i = 0; i < N; i++) {
        mp_task_opts o = {.callback = on_result, .error_callback = on_error};
        CHECK_RC(mp_pool_apply_async(p, fail_on_odd, &i, sizeof i, &o, &rs[i]), 0);
        if (i % 2 == 0)
            want += i;
    }
    CHECK_RC(mp_result_wait_all(rs, N, 30), 0);
    for (long i = 0; i < N; i++) {
        const void *res;
        size_t len;
        mp_task_info info;
        int rc = mp_result_get(rs[i], 0, &res, &len);
        CHECK_RC(mp_result_info(rs[i], &info), 0);
        if (i % 2) {
            CHECK_RC(rc, MP_ETASK);
            CHECK(info.task_rc == 7);
        } else {
            CHECK_RC(rc, 0);
            CHECK(len == sizeof(long) && *(const long *)res == i);
        }
        mp_result_free(rs[i]);
    }
    done(p); /* join: every callback has returned */
    CHECK(atomic_load(&cb_calls) == N);
    CHECK(atomic_load(&cb_sum) == want);
    CHECK(atomic_load(&cb_errors) == N / 2);
    puts("ok apply_async callbacks");
}

/* Fire and forget (out NULL): the tasks run, their callbacks run, and the
 * pool's join waits for them; those that fail reach their error callback. */
static void check_fire_and_forget(void)
{
    atomic_store(&cb_calls, 0);
    atomic_store(&cb_sum, 0);
    atomic_store(&cb_errors, 0);
    mp_pool *p = pool(0, 0);
    enum { N = 2000 };
    long want = 0;
    for (long i = 0; i < N; i++) {
        mp_task_opts o = {.callback = on_result, .error_callback = on_error};
        CHECK_RC(mp_pool_apply_async(p, fail_on_odd, &i, sizeof i, &o, NULL), 0);
        if (i % 2 == 0)
            want += i;
        CHECK_RC(mp_pool_apply_async(p, square, &i, sizeof i, NULL, NULL), 0);
    }
    done(p); /* join: every task has run, every callback has returned */
    CHECK(atomic_load(&cb_calls) == N);
    CHECK(atomic_load(&cb_sum) == want);
    CHECK(atomic_load(&cb_errors) == N / 2);
    /* The same pool used again after many: the jobs came back. */
    p = pool(0, 0);
    for (int round = 0; round < 3; round++) {
        for (long i = 0; i < 10000; i++)
            CHECK_RC(mp_pool_apply_async(p, square, &i, sizeof i, NULL, NULL), 0);
        long v = 12;
        void *res = NULL;
        CHECK_RC(mp_pool_apply(p, square, &v, sizeof v, &res, NULL), 0);
        CHECK(*(long *)res == 144);
        free(res);
    }
    done(p);
    puts("ok fire and forget");
}

/* The counts of mp_pool_get_stats, and the workers' pids. */
static void check_stats(void)
{
    mp_pool *p = pool(2, 0);
    mp_pool_stats st;
    CHECK_RC(mp_pool_get_stats(p, &st), 0);
    CHECK(st.tasks_done == 0 && st.tasks_failed == 0);
    for (long i = 0; i < 10; i++)
        CHECK_RC(mp_pool_apply(p, fail_on_odd, &i, sizeof i, NULL, NULL), i % 2 ? MP_ETASK : 0);
    CHECK_RC(mp_pool_get_stats(p, &st), 0);
    CHECK(st.tasks_done == 10 && st.tasks_failed == 5);
    enum { N = 3000 };
    long *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
    for (long i = 0; i < N; i++)
        in[i] = i; /* 7, 1007 and 2007 fail */
    CHECK_RC(mp_pool_map(p, twice_plus_one, in, N, sizeof *in, out, sizeof *out, 50), MP_ETASK);
    CHECK_RC(mp_pool_get_stats(p, &st), 0);
    CHECK(st.tasks_done == 10 + N && st.tasks_failed == 5 + 3);
    CHECK(kind == MP_POOL_MPI || st.workers == 2);
    free(in);
    free(out);
    pid_t pid = mp_pool_worker_pid(p, 0);
    if (kind == MP_POOL_MPI)
        CHECK_RC(pid, -ENOTSUP);
    else if (kind == MP_POOL_THREAD)
        CHECK(pid == getpid());
    else
        CHECK(pid > 0 || pid == -ESRCH);
    CHECK_RC(mp_pool_worker_pid(p, st.workers), -EINVAL);
    done(p);
    puts("ok stats");
}

static atomic_size_t prog_calls, prog_done, prog_total;

static void on_progress(size_t done, size_t total, void *ud)
{
    (void)ud;
    atomic_fetch_add(&prog_calls, 1);
    atomic_store(&prog_done, done);
    atomic_store(&prog_total, total);
}

/* Progress: the last report, all items done (failed ones too), comes
 * before the map returns. */
static void check_progress(void)
{
    mp_pool_opts o = {.workers = 2, .kind = kind, .progress = on_progress};
    mp_pool *p = NULL;
    CHECK_RC(mp_pool_new(&p, &o), 0);
    enum { N = 3000 };
    long *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
    for (long i = 0; i < N; i++)
        in[i] = i;
    CHECK_RC(mp_pool_map(p, twice_plus_one, in, N, sizeof *in, out, sizeof *out, 50), MP_ETASK);
    CHECK(atomic_load(&prog_calls) >= 1);
    CHECK(atomic_load(&prog_done) == N && atomic_load(&prog_total) == N);
    free(in);
    free(out);
    done(p);
    puts("ok progress");
}

/* imap_items: the item reversed; "fail" fails with 7, "segv" crashes. */
static int reverse_item(const void *data, size_t len, mp_buf *res)
{
    const char *s = data;
    if (len == 4 && memcmp(s, "fail", 4) == 0)
        return 7;
    if (len == 4 && memcmp(s, "segv", 4) == 0)
        raise(SIGSEGV);
    for (size_t i = 0; i < len; i++)
        if (mp_buf_append(res, &s[len - 1 - i], 1) < 0)
            return 1;
    return 0;
}

static void check_items(void)
{
    mp_pool *p = pool(0, 0);
    enum { N = 2000 };
    char (*buf)[32] = malloc(N * sizeof *buf);
    mp_item *items = malloc(N * sizeof *items);
    for (size_t i = 0; i < N; i++) {
        int k = snprintf(buf[i], sizeof buf[i], "item-%zu", i);
        if (i == 777)
            k = snprintf(buf[i], sizeof buf[i], "fail");
        if (i == 1500 && kind != MP_POOL_THREAD)
            k = snprintf(buf[i], sizeof buf[i], "segv");
        items[i] = (mp_item){buf[i], (size_t)k};
    }
    mp_iter *it;
    CHECK_RC(mp_pool_imap_items(p, reverse_item, items, N, 64, true, &it), 0);
    const void *res;
    size_t len, idx;
    int rc;
    mp_task_info info;
    for (size_t i = 0; i < N; i++) {
        rc = mp_iter_next_item(it, &res, &len, &idx, 30);
        CHECK(idx == i);
        CHECK_RC(mp_iter_info(it, &info), 0);
        if (i == 777) {
            CHECK_RC(rc, MP_ETASK);
            CHECK(info.task_rc == 7);
        } else if (i == 1500 && kind != MP_POOL_THREAD) {
            CHECK_RC(rc, MP_EWORKER);
            CHECK(info.signo == SIGSEGV);
        } else {
            CHECK_RC(rc, 0);
            CHECK(len == items[i].len);
            for (size_t k = 0; k < len; k++)
                CHECK(((const char *)res)[k] == buf[i][len - 1 - k]);
        }
    }
    CHECK_RC(mp_iter_next_item(it, &res, &len, &idx, 30), MP_EDONE);
    mp_iter_free(it);
    /* Each item counts once in the stats, failed ones in both totals. */
    mp_pool_stats st;
    CHECK_RC(mp_pool_get_stats(p, &st), 0);
    CHECK(st.tasks_done == N);
    CHECK(st.tasks_failed == (kind == MP_POOL_THREAD ? 1 : 2));
    free(items);
    free(buf);
    done(p);
    puts("ok imap_items");
}

static void check_map(void)
{
    mp_pool *p = pool(0, 0);
    enum { N = 10000 };
    long *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
    for (long i = 0; i < N; i++) {
        in[i] = i;
        out[i] = -1;
    }
    mp_map_error *errs = NULL;
    size_t nerrs = 0;
    int rc = mp_pool_map_ex(p, twice_plus_one, in, N, sizeof *in, out, sizeof *out, 0, &errs,
                            &nerrs);
    /* Items ...007 fail with rc 9; item 5003 crashes its worker (not in
     * a thread pool: that would take the program with it). */
    bool crashes = kind != MP_POOL_THREAD;
    CHECK_RC(rc, MP_ETASK);
    CHECK(nerrs == (size_t)(N / 1000 + crashes));
    size_t e = 0;
    for (long i = 0; i < N; i++) {
        if (i % 1000 == 7) {
            CHECK(errs[e].index == (size_t)i && errs[e].info.code == MP_ETASK &&
                  errs[e].info.task_rc == 9);
            e++;
        } else if (i == 5003 && crashes) {
            CHECK(errs[e].index == 5003 && errs[e].info.code == MP_EWORKER &&
                  errs[e].info.signo == SIGSEGV);
            e++;
        } else {
            CHECK(out[i] == 2 * i + 1);
        }
    }
    free(errs);
    /* Chunk sizes given: the same outputs. */
    for (size_t chunk = 1; chunk <= 4096; chunk *= 8) {
        memset(out, 0, N * sizeof *out);
        for (long i = 0; i < N; i++)
            in[i] = (i % 1000 == 7 || i == 5003) ? 8 : i;
        CHECK_RC(mp_pool_map(p, twice_plus_one, in, N, sizeof *in, out, sizeof *out, chunk), 0);
        for (long i = 0; i < N; i++)
            CHECK(out[i] == 2 * in[i] + 1);
    }
    free(in);
    free(out);
    done(p);
    puts("ok map");
}

static void check_map_chunks(void)
{
    mp_pool *p = pool(0, 0);
    enum { N = 10000, RUN = 100 };
    long *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
    for (long i = 0; i < N; i++)
        in[i] = i;
    for (size_t chunk = 0; chunk <= 4096; chunk = chunk ? chunk * 8 : 1) {
        memset(out, 0, N * sizeof *out);
        long *clean = malloc(N * sizeof *clean);
        for (long i = 0; i < N; i++)
            clean[i] = i == 7007 || i == 5003 ? 8 : i;
        CHECK_RC(mp_pool_map_chunks(p, twice_plus_one_run, clean, N, sizeof *in, out, sizeof *out,
                                    chunk, NULL, NULL), 0);
        for (long i = 0; i < N; i++)
            CHECK(out[i] == 2 * clean[i] + 1);
        free(clean);
    }
    /* A failing run fails each of its elements; a crash fails its run. */
    mp_map_error *errs = NULL;
    size_t nerrs = 0;
    memset(out, 0, N * sizeof *out);
    int rc = mp_pool_map_chunks(p, twice_plus_one_run, in, N, sizeof *in, out, sizeof *out, RUN,
                                &errs, &nerrs);
    bool crashes = kind != MP_POOL_THREAD;
    CHECK_RC(rc, crashes ? MP_EWORKER : MP_ETASK);
    CHECK(nerrs == (size_t)RUN * (1 + crashes));
    for (size_t e = 0; e < nerrs; e++) {
        size_t i = errs[e].index;
        bool in_crash = i / RUN == 5003 / RUN, in_fail = i / RUN == 7007 / RUN;
        CHECK((in_crash && crashes && errs[e].info.code == MP_EWORKER) ||
              (in_fail && errs[e].info.code == MP_ETASK && errs[e].info.task_rc == 9));
    }
    for (long i = 0; i < N; i++)
        if (i / RUN != 7007 / RUN && !(crashes && i / RUN == 5003 / RUN))
            CHECK(out[i] == 2 * i + 1);
    free(errs);
    CHECK_RC(mp_pool_map_chunks(p, NULL, in, N, sizeof *in, out, sizeof *out, 0, NULL, NULL),
             -EINVAL);
    free(in);
    free(out);
    done(p);
    puts("ok map chunks");
}

static void check_imap(void)
{
    mp_pool *p = pool(0, 0);
    enum { N = 3000 };
    long in[N];
    for (long i = 0; i < N; i++)
        in[i] = i % 1000 == 7 ? 6 : i;
    for (int ordered = 1; ordered >= 0; ordered--) {
        mp_iter *it;
        CHECK_RC(mp_pool_imap(p, twice_plus_one, in, N, sizeof(long), sizeof(long), 0, ordered,
                              &it), 0);
        unsigned char *seen = calloc(N, 1);
        long v;
        size_t idx, got = 0;
        int rc;
        while ((rc = mp_iter_next(it, &v, &idx, 30)) != MP_EDONE) {
            CHECK_RC(rc, 0);
            CHECK(idx < N && !seen[idx] && v == 2 * in[idx] + 1);
            if (ordered)
                CHECK(idx == got);
            seen[idx] = 1;
            got++;
        }
        CHECK(got == N);
        free(seen);
        mp_iter_free(it);
    }
    /* Failed items: mp_iter_info says why (fn's value; a crash's signal). */
    for (long i = 0; i < N; i++)
        in[i] = i;
    if (kind != MP_POOL_THREAD)
        in[2500] = 5003; /* crashes its worker */
    mp_iter *it;
    mp_task_info info;
    CHECK_RC(mp_pool_imap(p, twice_plus_one, in, N, sizeof(long), sizeof(long), 10, true, &it),
             0);
    CHECK_RC(mp_iter_info(it, &info), -EAGAIN);
    CHECK_RC(mp_iter_info(it, NULL), -EINVAL);
    CHECK_RC(mp_iter_info(NULL, &info), -EINVAL);
    long v;
    size_t idx;
    int rc, failed = 0;
    while ((rc = mp_iter_next(it, &v, &idx, 30)) != MP_EDONE) {
        CHECK_RC(mp_iter_info(it, &info), 0);
        CHECK(info.code == rc);
        if (idx % 1000 == 7) {
            CHECK_RC(rc, MP_ETASK);
            CHECK(info.task_rc == 9 && info.signo == 0);
            failed++;
        } else if (idx == 2500 && kind != MP_POOL_THREAD) {
            CHECK_RC(rc, MP_EWORKER);
            CHECK(info.signo == SIGSEGV && info.task_rc == 0);
            failed++;
        } else {
            CHECK_RC(rc, 0);
            CHECK(info.task_rc == 0 && info.signo == 0 && info.exit_status == 0);
        }
    }
    CHECK_RC(mp_iter_info(it, &info), 0); /* (MP_EDONE: the last item's) */
    CHECK(info.code == 0);
    CHECK(failed == (kind == MP_POOL_THREAD ? 3 : 4));
    mp_iter_free(it);
    done(p);
    puts("ok imap");
}

/* More tasks in flight than the pool's ring holds (16384), queued behind
 * naps so that the ring fills: the rest wait in the parent for room. */
static void check_many_in_flight(void)
{
    enum { NAPS = 16, N = 3 * 16384 + 100 };
    mp_pool *p = pool(0, 0);
    mp_result **rs = calloc(NAPS + N, sizeof *rs);
    CHECK(rs != NULL);
    double s = 0.05;
    for (int i = 0; i < NAPS; i++)
        CHECK_RC(mp_pool_apply_async(p, nap, &s, sizeof s, NULL, &rs[i]), 0);
    for (long i = 0; i < N; i++)
        CHECK_RC(mp_pool_apply_async(p, square, &i, sizeof i, NULL, &rs[NAPS + i]), 0);
    for (long i = 0; i < NAPS + N; i++) {
        const void *res;
        size_t len;
        CHECK_RC(mp_result_get(rs[i], 20, &res, &len), 0);
        if (i >= NAPS)
            CHECK(len == sizeof(long) && *(const long *)res == (i - NAPS) * (i - NAPS));
        mp_result_free(rs[i]);
    }
    free(rs);
    done(p);
    puts("ok many in flight");
}

static void check_crash(void)
{
    mp_pool *p = pool(0, 0);
    mp_result *r;
    CHECK_RC(mp_pool_apply_async(p, crash, NULL, 0, NULL, &r), 0);
    CHECK_RC(mp_result_wait(r, 30), 0);
    CHECK_RC(mp_result_get(r, 0, NULL, NULL), MP_EWORKER);
    mp_task_info info;
    CHECK_RC(mp_result_info(r, &info), 0);
    CHECK(info.signo == SIGSEGV);
    mp_result_free(r);
    /* The pool goes on. */
    long v = 12;
    void *res = NULL;
    CHECK_RC(mp_pool_apply(p, square, &v, sizeof v, &res, NULL), 0);
    CHECK(*(long *)res == 144);
    free(res);
    done(p);
    puts("ok crash");
}

static void check_timeouts(void)
{
    mp_pool *p = pool(0, 0);
    double s = 30;
    mp_task_opts o = {.timeout = 0.3};
    mp_result *r;
    double t0 = now();
    CHECK_RC(mp_pool_apply_async(p, nap, &s, sizeof s, &o, &r), 0);
    CHECK_RC(mp_result_wait(r, 20), 0);
    CHECK_RC(mp_result_get(r, 0, NULL, NULL), MP_EDEADLINE);
    CHECK(now() - t0 < 10);
    mp_result_free(r);
    s = 0.01;
    void *res = NULL;
    CHECK_RC(mp_pool_apply(p, nap, &s, sizeof s, &res, NULL), 0);
    free(res);
    done(p);

    /* The pool's limit holds per map item: the slow item alone fails. */
    p = pool(0, 0.5);
    double naps[6] = {0.01, 0.01, 0.01, 30, 0.01, 0.01}, outs[6] = {0};
    mp_map_error *errs = NULL;
    size_t nerrs = 0;
    t0 = now();
    CHECK_RC(mp_pool_map_ex(p, nap_item, naps, 6, sizeof(double), outs, sizeof(double), 1,
                            &errs, &nerrs), MP_EDEADLINE);
    CHECK(now() - t0 < 10);
    CHECK(nerrs == 1 && errs[0].index == 3 && errs[0].info.code == MP_EDEADLINE);
    for (int i = 0; i < 6; i++)
        CHECK(i == 3 || outs[i] == naps[i]);
    free(errs);
    done(p);
    puts("ok timeouts");
}

static void check_close_terminate(void)
{
    mp_pool *p = pool(0, 0);
    mp_result *rs[20];
    double s = 0.01;
    for (int i = 0; i < 20; i++)
        CHECK_RC(mp_pool_apply_async(p, nap, &s, sizeof s, NULL, &rs[i]), 0);
    CHECK_RC(mp_pool_join(p, 1), -EBUSY);
    CHECK_RC(mp_pool_close(p), 0);
    mp_result *late = NULL;
    CHECK_RC(mp_pool_apply_async(p, nap, &s, sizeof s, NULL, &late), MP_ECLOSED);
    CHECK(late == NULL);
    CHECK_RC(mp_pool_join(p, 30), 0);
    for (int i = 0; i < 20; i++) {
        CHECK(mp_result_ready(rs[i]));
        CHECK_RC(mp_result_get(rs[i], 0, NULL, NULL), 0);
        mp_result_free(rs[i]);
    }
    mp_pool_free(p);

    if (kind != MP_POOL_THREAD) {
        p = pool(0, 0);
        s = 60;
        for (int i = 0; i < 20; i++)
            CHECK_RC(mp_pool_apply_async(p, nap, &s, sizeof s, NULL, &rs[i]), 0);
        double t0 = now();
        CHECK_RC(mp_pool_terminate(p), 0);
        CHECK_RC(mp_pool_join(p, 20), 0);
        CHECK(now() - t0 < 15);
        for (int i = 0; i < 20; i++) {
            CHECK_RC(mp_result_get(rs[i], 0, NULL, NULL), MP_ECANCELED);
            mp_result_free(rs[i]);
        }
        mp_pool_free(p);
    }
    puts("ok close terminate");
}

static void check_workers(void)
{
    mp_pool *p = pool(2, 0);
    for (int i = 0; i < 10; i++) {
        void *res = NULL;
        CHECK_RC(mp_pool_apply(p, whoami, NULL, 0, &res, NULL), 0);
        int *v = res;
        CHECK(v[0] >= 0 && v[0] < 2);
        free(res);
    }
    done(p);

    /* maxtasksperchild 1: a new process per task. */
    mp_pool_opts o = {.workers = 1, .kind = kind, .maxtasksperchild = 1};
    CHECK_RC(mp_pool_new(&p, &o), 0);
    int pids[3];
    for (int i = 0; i < 3; i++) {
        void *res = NULL;
        CHECK_RC(mp_pool_apply(p, whoami, NULL, 0, &res, NULL), 0);
        pids[i] = ((int *)res)[1];
        free(res);
    }
    if (kind != MP_POOL_THREAD)
        CHECK(pids[0] != pids[1] && pids[1] != pids[2] && pids[0] != pids[2]);
    done(p);

    /* Initializer with an argument given as bytes. */
    int value = 4242;
    o = (mp_pool_opts){.kind = kind, .initializer = set_value, .initarg = &value,
                       .initarg_len = sizeof value};
    CHECK_RC(mp_pool_new(&p, &o), 0);
    if (kind != MP_POOL_THREAD) {
        /* Copied (MPI) or inherited (process) when the pool was made. */
        value = 0;
        void *res = NULL;
        CHECK_RC(mp_pool_apply(p, get_value, NULL, 0, &res, NULL), 0);
        CHECK(*(int *)res == 4242);
        free(res);
    }
    done(p);
    puts("ok workers");
}

static void check_mpi_only(void)
{
    mp_pool *p = pool(0, 0);
    /* A pointer outside the program's code cannot be named. */
    void *heap = malloc(64);
    mp_task_fn bogus;
    memcpy(&bogus, &heap, sizeof bogus);
    mp_result *r = NULL;
    CHECK_RC(mp_pool_apply_async(p, bogus, NULL, 0, NULL, &r), MP_EFUNC);
    long in = 1, out;
    mp_map_fn mbogus;
    memcpy(&mbogus, &heap, sizeof mbogus);
    CHECK_RC(mp_pool_map(p, mbogus, &in, 1, sizeof in, &out, sizeof out, 0), MP_EFUNC);
    free(heap);
    int fd = 0;
    mp_task_opts o = {.fds = &fd, .nfds = 1};
    CHECK_RC(mp_pool_apply_async(p, square, &in, sizeof in, &o, &r), -ENOTSUP);
    /* A function in a library only rank 0 has loaded: named here, not
     * found on the worker rank, so that task alone fails. */
    const char *dir = getenv("MPROC_TEST_BINARY_DIR");
    char lib[4096];
    snprintf(lib, sizeof lib, "%s/tests/helpers/task_plugin.so", dir ? dir : ".");
    void *h = dlopen(lib, RTLD_NOW);
    if (h == NULL)
        fprintf(stderr, "pool_contract: %s\n", dlerror());
    CHECK(h != NULL);
    mp_task_fn plugged;
    void *sym = dlsym(h, "plugin_task");
    CHECK(sym != NULL);
    memcpy(&plugged, &sym, sizeof plugged);
    CHECK_RC(mp_pool_apply_async(p, plugged, &in, sizeof in, NULL, &r), 0);
    CHECK_RC(mp_result_get(r, 30, NULL, NULL), MP_EFUNC);
    mp_result_free(r);
    void *res = NULL;
    CHECK_RC(mp_pool_apply(p, square, &in, sizeof in, &res, NULL), 0);
    free(res);
    /* One MPI pool at a time. */
    mp_pool *q = NULL;
    mp_pool_opts qo = {.kind = MP_POOL_MPI};
    CHECK_RC(mp_pool_new(&q, &qo), -EBUSY);
    done(p);
    puts("ok mpi only");
}

/* No worker ranks: a clear error, or a process pool if asked for. */
static int solo(void)
{
    mp_pool *p = NULL;
    mp_pool_opts o = {.kind = MP_POOL_MPI};
    CHECK_RC(mp_pool_new(&p, &o), MP_ENOMPI);
    CHECK(p == NULL);
    CHECK_RC(mp_mpi_init(), MP_ENOMPI);
    o.flags = MP_POOL_FALLBACK;
    CHECK_RC(mp_pool_new(&p, &o), 0);
    long v = 9;
    void *res = NULL;
    CHECK_RC(mp_pool_apply(p, square, &v, sizeof v, &res, NULL), 0);
    CHECK(*(long *)res == 81);
    free(res);
    done(p);
    puts("ok solo");
    return 0;
}

/* Rank 0 returns from main with the pool open and a task running: the
 * exit handler terminates it and lets the worker ranks go. */
static int leave_open(void)
{
    CHECK_RC(mp_mpi_init(), 0);
    mp_pool *p = pool(0, 0);
    double s = 60;
    mp_result *r;
    CHECK_RC(mp_pool_apply_async(p, nap, &s, sizeof s, NULL, &r), 0);
    puts("ok left open");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    kind = MP_POOL_MPI;
    if (strcmp(argv[1], "solo") == 0)
        return solo();
    if (strcmp(argv[1], "exit") == 0)
        return leave_open();
    if (strcmp(argv[1], "process") == 0)
        kind = MP_POOL_PROCESS;
    else if (strcmp(argv[1], "thread") == 0)
        kind = MP_POOL_THREAD;
    else if (strcmp(argv[1], "mpi") == 0)
        kind = MP_POOL_MPI;
    else
        return 2;
    check_apply();
    check_async_callbacks();
    check_fire_and_forget();
    check_stats();
    check_progress();
    check_map();
    check_map_chunks();
    check_imap();
    check_items();
    check_many_in_flight();
    if (kind != MP_POOL_THREAD) {
        check_crash();
        check_timeouts();
    }
    check_close_terminate();
    check_workers();
    if (kind == MP_POOL_MPI)
        check_mpi_only();
    puts("all ok");
    return 0;
}
