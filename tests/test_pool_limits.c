/* Pools at their limits: thousands of workers, few descriptors, chunk sizes
 * far past the number of items, and the order in which a task's callbacks
 * and its waiters see it end. */
// labels: unit
#include <mproc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mp_test.h"
#include "os/os.h"
#include "pool/batch.h"
#include "pool/core.h"
#include "pool/job.h"
#include "pool/ring.h"
#include "pool/worker.h"
#include "test_pool_common.h"

/* Waits for every worker of the pool at a barrier: it returns only once
 * all of them run at the same time. */
static int meet(const void *arg, size_t len, mp_buf *res)
{
    (void)len;
    (void)res;
    mp_barrier *b = *(mp_barrier *const *)arg;
    return mp_barrier_wait(b, MP_TMO(60)) >= 0 ? 0 : 1;
}

/* A pool of n workers has them all running at once, and goes away. */
static void many_workers(unsigned n)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    /* Two descriptors a worker in the parent, one in the fork server. */
    rlim_t need = 2 * (rlim_t)n + 64;
    if (rl.rlim_cur < need && rl.rlim_max >= need) {
        rl.rlim_cur = need;
        cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    cr_assert_geq(rl.rlim_cur, need, "this test needs %lu descriptors", (unsigned long)need);
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = n}), 0);
    mp_barrier *b;
    mp_expect_rc(mp_barrier_new(&b, n), 0);
    mp_result **rs = calloc(n, sizeof *rs);
    for (unsigned i = 0; i < n; i++)
        mp_expect_rc(mp_pool_apply_async(p, meet, &b, sizeof b, NULL, &rs[i]), 0);
    for (unsigned i = 0; i < n; i++) {
        mp_expect_rc(mp_result_get(rs[i], MP_TMO(90), NULL, NULL), 0);
        mp_result_free(rs[i]);
    }
    free(rs);
    enum { N = 2000 };
    static int in[N], out[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    mp_expect_rc(mp_pool_map(p, map_item, in, N, sizeof(int), out, sizeof(int), 1), 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(out[i], 2 * i + 1);
    mp_expect_rc(mp_pool_close(p), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(60)), 0);
    mp_pool_free(p);
    mp_barrier_free(b);
}

/* The collector and the fork server used to block in sendmsg to each
 * other once both sockets were full (about 600 workers). */
Test(pool_limits, six_hundred_workers, .timeout = MP_TMO(60)) { many_workers(600); }

Test(pool_limits, four_thousand_workers, .timeout = MP_TMO(120)) { many_workers(4096); }

/* With too few descriptors a pool either refuses to start (-EMFILE) or
 * works: it never starts and then answers MP_ECLOSED (a descriptor lost
 * to MSG_CTRUNC was taken for the fork server's death). */
Test(pool_limits, few_descriptors_fail_at_new_or_work, .timeout = MP_TMO(120))
{
    struct rlimit rl = {64, 64};
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    int refused = 0, worked = 0;
    for (unsigned n = 20; n <= 60; n++) {
        mp_pool *p;
        int rc = mp_pool_new(&p, &(mp_pool_opts){.workers = n});
        if (rc == -EMFILE) {
            refused++;
            continue;
        }
        mp_expect_rc(rc, 0);
        for (int i = 0; i < 40; i++) {
            /* A worker that dies is replaced within the same limit. */
            mp_result *r;
            int segv = i % 10 == 5;
            mp_expect_rc(submit(p, segv ? OP_SEGV : OP_SQUARE, i, NULL, NULL, &r), 0);
            mp_expect_rc(mp_result_get(r, MP_TMO(30), NULL, NULL), segv ? MP_EWORKER : 0);
            mp_result_free(r);
        }
        mp_pool_free(p);
        worked++;
    }
    cr_assert_gt(refused, 0, "60 workers cannot fit in 64 descriptors");
    cr_assert_gt(worked, 0);
}

/* A chunk size past n is n: it neither fails nor carves chunk-sized
 * staging buffers out of the shared heap. */
Test(pool_limits, chunksize_is_clamped_to_the_items, .timeout = MP_TMO(30))
{
    mp_expect_rc(mp_heap_configure((size_t)64 << 20), 0);
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 2}), 0);
    enum { N = 100 };
    int in[N], out[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    static const size_t sizes[] = {(size_t)1 << 28, (size_t)1 << 31, SIZE_MAX, N + 1};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        memset(out, 0, sizeof out);
        mp_expect_rc(mp_pool_map(p, map_item, in, N, sizeof(int), out, sizeof(int), sizes[s]), 0);
        for (int i = 0; i < N; i++)
            cr_assert_eq(out[i], 2 * i + 1);
        mp_iter *it;
        mp_expect_rc(mp_pool_imap(p, map_item, in, N, sizeof(int), sizeof(int), sizes[s], true, &it),
                     0);
        size_t idx;
        int v;
        for (int i = 0; i < N; i++) {
            mp_expect_rc(mp_iter_next(it, &v, &idx, MP_TMO(10)), 0);
            cr_assert_eq(idx, (size_t)i);
            cr_assert_eq(v, 2 * i + 1);
        }
        mp_expect_rc(mp_iter_next(it, &v, &idx, MP_TMO(10)), MP_EDONE);
        mp_iter_free(it);
    }
    mp_pool_free(p);
}

/* ---- a task's callback returns before its waiters see it end ---- */

typedef struct {
    _Atomic int calls;
} slow_cb;

static void spin_ms(double ms)
{
    double end = mp_test_now() + ms / 1000;
    while (mp_test_now() < end)
        ;
}

static void slow_ok(const void *res, size_t len, void *ud)
{
    (void)res;
    (void)len;
    spin_ms(30);
    atomic_fetch_add(&((slow_cb *)ud)->calls, 1);
}

static void slow_err(int code, void *ud)
{
    (void)code;
    spin_ms(30);
    atomic_fetch_add(&((slow_cb *)ud)->calls, 1);
}

static void expect_callback_first(mp_pool *p, int op, int want)
{
    for (int round = 0; round < 5; round++) {
        slow_cb s = {0};
        mp_result *r;
        mp_task_opts o = {.callback = slow_ok, .error_callback = slow_err, .ud = &s};
        mp_expect_rc(submit(p, op, 5, NULL, &o, &r), 0);
        mp_expect_rc(mp_result_get(r, MP_TMO(10), NULL, NULL), want);
        cr_assert_eq(atomic_load(&s.calls), 1, "get returned before the callback (op %d)", op);
        mp_result_free(r);

        slow_cb t = {0};
        o.ud = &t;
        mp_expect_rc(submit(p, op, 5, NULL, &o, &r), 0);
        mp_expect_rc(mp_result_wait(r, MP_TMO(10)), 0);
        cr_assert_eq(atomic_load(&t.calls), 1, "wait returned before the callback (op %d)", op);
        cr_assert(mp_result_ready(r));
        mp_result_free(r);

        slow_cb u = {0};
        o.ud = &u;
        mp_expect_rc(submit(p, op, 5, NULL, &o, &r), 0);
        mp_result *const rs[1] = {r};
        mp_expect_rc(mp_result_wait_any(rs, 1, MP_TMO(10)), 0);
        cr_assert_eq(atomic_load(&u.calls), 1, "wait_any returned before the callback (op %d)", op);
        mp_result_free(r);
    }
}

static void callbacks_first(mp_pool_kind kind)
{
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 2, .kind = kind}), 0);
    expect_callback_first(p, OP_SQUARE, 0);
    expect_callback_first(p, OP_FAIL, MP_ETASK);
    if (kind == MP_POOL_PROCESS)
        expect_callback_first(p, OP_SEGV, MP_EWORKER);
    mp_pool_free(p);
}

Test(pool_limits, callbacks_return_before_get, .timeout = MP_TMO(60))
{
    callbacks_first(MP_POOL_PROCESS);
}

Test(pool_limits, callbacks_return_before_get_threads, .timeout = MP_TMO(60))
{
    callbacks_first(MP_POOL_THREAD);
}

/* ---- deadlines of map items ---- */

static int nap_item(const void *in, void *out)
{
    double s = *(const double *)in;
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0)
        ;
    *(double *)out = s;
    return 0;
}

/* A slow item after quick ones of the same chunk is still killed at its
 * limit: the supervisor, which saw the helper between items, must look
 * again. */
Test(pool_limits, item_deadline_after_quick_items, .timeout = MP_TMO(30))
{
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 1, .task_timeout = 0.3}), 0);
    double naps[5] = {0.05, 0.05, 0.05, 30, 0.05}, outs[5] = {0};
    for (int round = 0; round < 3; round++) {
        mp_map_error *errs = NULL;
        size_t nerrs = 0;
        double t0 = mp_test_now();
        mp_expect_rc(mp_pool_map_ex(p, nap_item, naps, 5, sizeof(double), outs, sizeof(double), 5,
                                    &errs, &nerrs),
                     MP_EDEADLINE);
        cr_assert_lt(mp_test_now() - t0, 10);
        cr_assert_eq(nerrs, 1);
        cr_assert_eq(errs[0].index, 3);
        free(errs);
        cr_assert_eq(outs[4], 0.05);
    }
    mp_pool_free(p);
}

/* ---- out of memory ---- */

static void *no_realloc(void *p, size_t n)
{
    (void)p;
    (void)n;
    errno = ENOMEM;
    return NULL;
}

/* A map whose failures cannot all be recorded fails with -ENOMEM: it
 * never reports success (or only some failures) for items never written. */
Test(pool_limits, map_that_cannot_record_failures_fails, .timeout = MP_TMO(30))
{
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 2}), 0);
    enum { N = 100 };
    int in[N], out[N];
    for (int i = 0; i < N; i++)
        in[i] = ITEM_FAIL;
    mp__os.realloc = no_realloc;
    int rc = mp_pool_map(p, map_item, in, N, sizeof(int), out, sizeof(int), 10);
    mp_iter *it;
    int irc = mp_pool_imap(p, map_item, in, N, sizeof(int), sizeof(int), 10, true, &it);
    int first = 0;
    if (irc == 0) {
        size_t idx;
        int v;
        first = mp_iter_next(it, &v, &idx, MP_TMO(10));
        mp_iter_free(it);
    }
    mp__os.realloc = realloc;
    mp_expect_rc(rc, -ENOMEM);
    mp_expect_rc(irc, 0);
    mp_expect_rc(first, -ENOMEM);
    /* With memory back, the same map reports each failure. */
    mp_map_error *errs = NULL;
    size_t nerrs = 0;
    mp_expect_rc(mp_pool_map_ex(p, map_item, in, N, sizeof(int), out, sizeof(int), 10, &errs,
                                &nerrs),
                 MP_ETASK);
    cr_assert_eq(nerrs, N);
    free(errs);
    mp_pool_free(p);
}

/* ---- a task that scribbles over the shared heap ---- */

/* Writes over the shared half of its own job (all but the state word: its
 * task, sequence, links, result pointer...) and over the jobs beside it in
 * the heap: garbage where the parent keeps nothing of its own. */
static int scribble(const void *arg, size_t len, mp_buf *res)
{
    (void)len;
    (void)res;
    unsigned char *mine = (unsigned char *)arg - offsetof(job_shm, inline_buf);
    memset(mine + offsetof(job_shm, kind), 0xa5,
           offsetof(job_shm, inline_buf) - offsetof(job_shm, kind));
    return 0;
}

/* The worst a task can do to the shared heap spoils results (a result may
 * never come), never the parent: it does not crash, the pool goes on, and
 * it ends. */
Test(pool_limits, scribbling_task_spoils_results_not_the_parent, .timeout = MP_TMO(60))
{
    for (int kind = 0; kind < 2; kind++) {
        mp_pool *p;
        mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 2, .kind = kind}), 0);
        for (int round = 0; round < 20; round++) {
            mp_result *r;
            /* (Outlives the pool: a lost task's error callback runs when
             * the pool is freed.) */
            static slow_cb cb;
            mp_task_opts o = {.callback = slow_ok, .error_callback = slow_err, .ud = &cb};
            mp_expect_rc(mp_pool_apply_async(p, scribble, "x", 1, round % 2 ? &o : NULL, &r), 0);
            int rc = mp_result_get(r, 0.5, NULL, NULL);
            cr_assert(rc == 0 || rc == MP_ETIMEDOUT || rc < 0, "%d", rc);
            mp_result_free(r);
            /* ... and the pool still answers. */
            mp_expect_rc(submit(p, OP_SQUARE, round, NULL, NULL, &r), 0);
            int v;
            const void *out;
            size_t n;
            mp_expect_rc(mp_result_get(r, MP_TMO(10), &out, &n), 0);
            memcpy(&v, out, sizeof v);
            cr_assert_eq(v, round * round);
            mp_result_free(r);
        }
        mp_pool_free(p);
    }
}

/* ---- terminate during a map ---- */

static mp_sem *started_sem;

static int start_then_hang(const void *in, void *out)
{
    (void)in;
    (void)out;
    mp_sem_release(started_sem);
    for (;;)
        pause();
    return 0;
}

typedef struct {
    mp_pool *p;
    int rc;
} map_run;

static void *map_thread(void *arg)
{
    map_run *m = arg;
    int in[2] = {0, 1}, out[2];
    m->rc = mp_pool_map(m->p, start_then_hang, in, 2, sizeof(int), out, sizeof(int), 1);
    return NULL;
}

/* Chunks whose workers terminate kills are not done: the map says
 * MP_ECANCELED, never success for items that never ran to their end. */
Test(pool_limits, terminate_during_a_map_cancels_it, .timeout = MP_TMO(30))
{
    mp_expect_rc(mp_sem_new(&started_sem, 0, 0), 0);
    map_run m = {.rc = 1};
    mp_expect_rc(mp_pool_new(&m.p, &(mp_pool_opts){.workers = 2}), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, map_thread, &m), 0);
    mp_expect_rc(mp_sem_acquire(started_sem, MP_TMO(10)), 0);
    mp_expect_rc(mp_sem_acquire(started_sem, MP_TMO(10)), 0);
    mp_expect_rc(mp_pool_terminate(m.p), 0);
    pthread_join(th, NULL);
    mp_expect_rc(m.rc, MP_ECANCELED);
    mp_pool_free(m.p);
    mp_sem_free(started_sem);
}

/* A worker killed after its task was collected, freed, and the job taken
 * again by a submission that then failed (mp__job_get clears the job's
 * completion hook and collected mark): the supervisor must see that the
 * dispatch the dead worker's slot names has ended and is its owner's.  The
 * window (between the worker's push of the result and its clearing of its
 * slot) is a few instructions wide; the test sets the slot back by hand.
 * The supervisor used to end the old dispatch again, through the NULL hook. */
Test(pool_limits, worker_dead_after_its_job_was_taken_again, .timeout = MP_TMO(30))
{
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 1}), 0);
    task_arg a = {.op = OP_PID};
    mp_result *r;
    mp_expect_rc(mp_pool_apply_async(p, run_op, &a, sizeof a, NULL, &r), 0);
    const void *res;
    size_t len;
    mp_expect_rc(mp_result_get(r, MP_TMO(10), &res, &len), 0);
    pid_t pid = *(const pid_t *)res;
    cr_assert_gt(pid, 0);
    job *j = (job *)r;
    job_shm *s = j->shm;
    uint64_t seq = atomic_load(&s->seq);
    mp_result_free(r);
    int bad = -1;
    mp_task_opts o = {.fds = &bad, .nfds = 1};
    mp_expect_rc(mp_pool_apply_async(p, run_op, &a, sizeof a, &o, &r), -EBADF);
    cr_assert_eq(j->done, NULL, "the failed submission took the same job again");
    cr_assert_eq(atomic_load(&s->seq), seq);
    worker_slot *ws = &p->c->s->workers[0];
    atomic_store(&ws->current_seq, seq);
    atomic_store(&ws->current, s);
    cr_assert_eq(kill(pid, SIGKILL), 0);
    /* The supervisor clears the slot once it has dealt with the death
     * (before the next submission, which would take that job again). */
    double until = mp_test_now() + MP_TMO(10);
    while (atomic_load(&ws->current) != NULL && mp_test_now() < until)
        sched_yield();
    cr_assert_null(atomic_load(&ws->current), "the supervisor saw the worker die");
    cr_assert_eq(j->done, NULL, "nobody ended the old dispatch again");
    /* A new worker comes, and the pool goes on. */
    a.op = OP_SQUARE;
    a.value = 7;
    void *v;
    mp_expect_rc(mp_pool_apply(p, run_op, &a, sizeof a, &v, &len), 0);
    cr_assert_eq(*(int *)v, 49);
    free(v);
    mp_expect_rc(mp_pool_close(p), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(10)), 0);
    mp_pool_free(p);
}

/* ---- a helper's end, pushed while its map's owner waits ---- */

/* Whether thread tid sleeps (state S) in system call nr, first argument
 * arg0 (-1: any); tid 0: any thread of ours. */
static bool sleeps_in(pid_t tid, long nr, long arg0)
{
    char path[64];
    DIR *d = opendir("/proc/self/task");
    cr_assert_not_null(d);
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        pid_t t = (pid_t)atoi(e->d_name);
        if (t <= 0 || (tid && t != tid))
            continue;
        char buf[512] = "", state = 0;
        snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)t);
        FILE *f = fopen(path, "r");
        if (f && fgets(buf, sizeof buf, f)) {
            const char *p = strrchr(buf, ')');
            if (p && p[1] == ' ')
                state = p[2];
        }
        if (f)
            fclose(f);
        snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)t);
        f = fopen(path, "r");
        long n = -2;
        unsigned long a0 = 0;
        if (f && fscanf(f, "%ld %lx", &n, &a0) >= 1)
            found = state == 'S' && n == nr && (arg0 < 0 || (long)a0 == arg0);
        if (f)
            fclose(f);
    }
    closedir(d);
    return found;
}

/* Whether a thread of ours sleeps in epoll on poller (glibc's epoll_wait
 * is one of two system calls, by architecture). */
static bool epoll_sleeps(int poller)
{
#ifdef SYS_epoll_wait
    if (sleeps_in(0, SYS_epoll_wait, poller))
        return true;
#endif
    return sleeps_in(0, SYS_epoll_pwait, poller);
}

/* What the eventfd fd holds, from /proc (reading it would take it). */
static unsigned long eventfd_count(int fd)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    unsigned long v = ~0ul;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "eventfd-count: %lx", &v) == 1)
            break;
    fclose(f);
    return v;
}

typedef struct {
    mp_iter *it;
    _Atomic pid_t tid;
    _Atomic int done;
} iter_owner;

static void *free_iter(void *arg)
{
    iter_owner *o = arg;
    atomic_store(&o->tid, (pid_t)syscall(SYS_gettid));
    mp_iter_free(o->it);
    atomic_store(&o->done, 1);
    return NULL;
}

static int plus_one(const void *in, void *out)
{
    *(long *)out = *(const long *)in + 1;
    return 0;
}

#define WAIT_FOR(cond, what)                                                                  \
    do {                                                                                      \
        double until_ = mp_test_now() + MP_TMO(10);                                           \
        bool ok_;                                                                             \
        while (!(ok_ = (cond)) && mp_test_now() < until_)                                     \
            sched_yield();                                                                    \
        cr_assert(ok_, "%s", what);                                                           \
    } while (0)

/* A map's owner that waits for its helpers to end (mp_iter_free) is
 * answered when a helper's end comes after the owner has woken the
 * supervisor and the supervisor has gone back to sleep.  The worker used
 * to decide whether to wake the supervisor from the map's stop flag read
 * before its push: read before the owner set it, nobody woke the
 * supervisor again and the owner waited for ever (an MPI rank hung so in
 * mp_iter_free, once in some thousand maps under load).  The test plays
 * that worker: it takes the helper from the ring, runs its chunk, and
 * pushes its end, as the stale read said (not urgent), only once the
 * owner waits and the supervisor sleeps. */
Test(pool_limits, helper_end_pushed_while_its_owner_waits, .timeout = MP_TMO(60))
{
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 1}), 0);
    pool_core *c = p->c;
    pool_shm *s = c->s;
    mp_event *gate;
    mp_expect_rc(mp_event_new(&gate), 0);
    mp_result *busy;
    mp_expect_rc(submit_running(p, gate, &busy), 0); /* the worker takes nothing else */
    long in = 41;
    iter_owner o = {0};
    mp_expect_rc(mp_pool_imap(p, plus_one, &in, 1, sizeof in, sizeof in, 1, true, &o.it), 0);

    job_shm *j = NULL;
    uint64_t pos;
    double until = mp_test_now() + MP_TMO(10);
    while ((j = mp__ring_claim(&s->ring, 0, &pos)) == NULL && mp_test_now() < until)
        sched_yield();
    cr_assert_not_null(j, "the helper is queued");
    mp__ring_release(&s->ring, pos);
    cr_assert_eq(j->kind, JOB_HELPER);
    cr_assert(mp__job_begin(j));
    batch_shm *b = j->batch;
    cr_assert_eq(mp__batch_claim(b, 0, 0, 1, 1, NULL), 0);
    mp__batch_done(b, 0, 1, 1);
    cr_assert(mp__job_end(j));

    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, free_iter, &o), 0);
    WAIT_FOR(atomic_load(&o.tid) != 0, "the owner runs");
    WAIT_FOR(sleeps_in(atomic_load(&o.tid), SYS_futex, -1), "the owner waits for its helper");
    WAIT_FOR(eventfd_count(s->notify_fd) == 0 && epoll_sleeps(c->poller),
             "the supervisor took the owner's wake-up and sleeps again");
    mp__worker_push_done(s, 0, j, false);
    WAIT_FOR(atomic_load(&o.done), "the owner saw its helper end");
    pthread_join(th, NULL);

    mp_event_set(gate);
    mp_expect_rc(mp_result_wait(busy, MP_TMO(10)), 0);
    mp_result_free(busy);
    mp_event_free(gate);
    mp_expect_rc(mp_pool_close(p), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(10)), 0);
    mp_pool_free(p);
}

/* A blocking map's helpers claim chunks up from the front of their own
 * part and then down from the back of the others', so that they meet on a
 * cache line only once; a chunk given back (a worker stopped or died)
 * is found again by either side. */
Test(pool_limits, helpers_claim_their_own_part_first, .timeout = MP_TMO(30))
{
    int err = 0;
    batch_shm *b = mp__batch_new(10, 2, &err);
    cr_assert_not_null(b, "batch: %d", err);
    for (uint32_t k = 0; k < 10; k++)
        atomic_store(&b->chunks[k].claim, CHUNK_FREE);
    mp__batch_set_parts(b, 10, 2);
    for (int k = 0; k < 5; k++)
        cr_assert_eq(mp__batch_claim(b, 0, 0, 10, 2, NULL), k, "helper 0 goes up its part");
    cr_assert_eq(mp__batch_claim(b, 1, 1, 10, 2, NULL), 5, "helper 1 starts on its own");
    cr_assert_eq(mp__batch_claim(b, 0, 0, 10, 2, NULL), 9, "then helper 0 steals from the back");
    cr_assert_eq(mp__batch_claim(b, 0, 0, 10, 2, NULL), 8);
    cr_assert_eq(mp__batch_claim(b, 1, 1, 10, 2, NULL), 6);
    cr_assert_eq(mp__batch_claim(b, 1, 1, 10, 2, NULL), 7);
    cr_assert_eq(mp__batch_claim(b, 1, 1, 10, 2, NULL), BATCH_OVER);
    cr_assert_eq(atomic_load(&b->chunks[9].claim), CHUNK_CLAIMED + 0);

    mp__batch_reset(b, 3, 2, 10, 2);
    cr_assert_eq(mp__batch_claim(b, 1, 1, 10, 2, NULL), 3, "a thief finds a chunk given back");
    cr_assert_eq(b->chunks[3].start, 2u);
    mp__batch_reset(b, 8, 0, 10, 2);
    mp__batch_reset(b, 6, 0, 10, 2);
    cr_assert_eq(mp__batch_claim(b, 1, 1, 10, 2, NULL), 6, "its owner, from the front");
    cr_assert_eq(mp__batch_claim(b, 0, 0, 10, 2, NULL), 8, "and a thief, from the back");
    cr_assert_eq(mp__batch_claim(b, 0, 0, 10, 2, NULL), BATCH_OVER);

    /* Counted a part at a time: ndone moves when a part's last chunk is
     * done, the waiters' word only at the map's last. */
    uint32_t ev = atomic_load(&b->events);
    for (uint32_t k = 0; k < 4; k++)
        mp__batch_done(b, k, 10, 2);
    cr_assert_eq(atomic_load(&b->ndone), 0u);
    for (uint32_t k = 5; k < 10; k++)
        mp__batch_done(b, k, 10, 2);
    cr_assert_eq(atomic_load(&b->ndone), 5u, "part 1 done");
    cr_assert_eq(atomic_load(&b->events), ev);
    mp__batch_done(b, 4, 10, 2);
    cr_assert_eq(atomic_load(&b->ndone), 10u);
    cr_assert_eq(atomic_load(&b->events), ev + 1, "the last chunk wakes the waiters");

    /* One part (staged maps, iterators): up from the front, a chunk not yet
     * staged ends the scan. */
    batch_shm *one = mp__batch_new(4, 1, &err);
    cr_assert_not_null(one);
    atomic_store(&one->chunks[0].claim, CHUNK_FREE);
    cr_assert_eq(mp__batch_claim(one, 0, 0, 4, 1, NULL), 0);
    cr_assert_eq(mp__batch_claim(one, 1, 0, 4, 1, NULL), BATCH_NONE);
    mp__batch_free(one);
    mp__batch_free(b);
}

static int fail_every_1000th(const void *in, void *out)
{
    long v = *(const long *)in;
    if (v % 1000 == 7)
        return 9;
    *(long *)out = 2 * v + 1;
    return 0;
}

/* A helper that stopped at a failed item is collected by the supervisor
 * after its worker may already run another helper of the same map: the
 * chunk it stopped in must be told from the one its worker holds now (the
 * supervisor used to take the first chunk the worker held: it reset the
 * chunk another helper was running and never finished the stopped one,
 * so that the map waited for ever, or ran items twice). */
Test(pool_limits, stopped_helpers_chunks_are_told_apart, .timeout = MP_TMO(120))
{
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 2, .kind = MP_POOL_THREAD}), 0);
    enum { N = 10000 };
    long *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
    cr_assert(in && out);
    for (long i = 0; i < N; i++)
        in[i] = i;
    for (int round = 0; round < 300; round++) {
        memset(out, 0xff, N * sizeof *out);
        mp_map_error *errs = NULL;
        size_t nerrs = 0;
        size_t chunk = round % 3 == 0 ? 0 : round % 3 == 1 ? 16 : 100;
        mp_expect_rc(mp_pool_map_ex(p, fail_every_1000th, in, N, sizeof *in, out, sizeof *out,
                                    chunk, &errs, &nerrs),
                     MP_ETASK);
        cr_assert_eq(nerrs, (size_t)(N / 1000), "round %d: %zu failures", round, nerrs);
        for (size_t e = 0; e < nerrs; e++)
            cr_assert(errs[e].index == e * 1000 + 7 && errs[e].info.task_rc == 9,
                      "round %d: failure %zu at %zu", round, e, errs[e].index);
        for (long i = 0; i < N; i++)
            if (i % 1000 != 7)
                cr_assert_eq(out[i], 2 * i + 1, "round %d: item %ld", round, i);
        free(errs);
    }
    free(in);
    free(out);
    mp_expect_rc(mp_pool_close(p), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(10)), 0);
    mp_pool_free(p);
}

/* More tasks in flight than the ring has slots (16384): those past it wait
 * in the parent's pending list until room is made.  Plain tasks end without
 * the supervisor, and nothing woke it to move them: once both workers had
 * emptied the ring, the pool sat idle with work pending, and the first get
 * of a pending task waited for ever. */
static void more_in_flight_than_the_ring(mp_pool_kind kind)
{
    enum { N = 3 * 16384 + 100 };
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 2, .kind = kind}), 0);
    pool_core *c;
    mp_expect_rc(mp__pool_check(p, &c), 0);
    /* Both workers held, so that the ring fills and the rest pends. */
    mp_event *ev;
    mp_expect_rc(mp_event_new(&ev), 0);
    mp_result *held[2];
    for (int i = 0; i < 2; i++)
        mp_expect_rc(submit_running(p, ev, &held[i]), 0);
    mp_result **rs = calloc(N, sizeof *rs);
    cr_assert_not_null(rs);
    for (int i = 0; i < N; i++)
        mp_expect_rc(submit(p, OP_SQUARE, i % 1000, NULL, NULL, &rs[i]), 0);
    /* The supervisor has nothing to do: it goes to sleep. */
    double end = mp_test_now() + 10;
    while (!atomic_load(&c->s->sup_sleeping) && mp_test_now() < end)
        sched_yield();
    cr_assert(atomic_load(&c->s->sup_sleeping), "the supervisor never went to sleep");
    mp_expect_rc(mp_event_set(ev), 0);
    for (int i = 0; i < N; i++) {
        const void *res;
        size_t len;
        int rc = mp_result_get(rs[i], MP_TMO(20), &res, &len);
        ring *rg = &c->s->ring;
        cr_assert_eq(rc, 0,
                     "task %d of %d: %s (ring head %llu, tail %llu, %zu pending, want_refill %u, "
                     "sleepers %u, spinners %u, waking %u, supervisor asleep %u)",
                     i, (int)N, mp_errname(rc), (unsigned long long)atomic_load(&rg->head),
                     (unsigned long long)c->tail, c->npending, atomic_load(&c->s->want_refill),
                     atomic_load(&rg->sleepers), atomic_load(&rg->spinners),
                     atomic_load(&rg->waking), atomic_load(&c->s->sup_sleeping));
        cr_assert_eq(len, sizeof(int));
        cr_assert_eq(*(const int *)res, (i % 1000) * (i % 1000));
        mp_result_free(rs[i]);
    }
    for (int i = 0; i < 2; i++) {
        mp_expect_rc(mp_result_get(held[i], MP_TMO(20), NULL, NULL), 0);
        mp_result_free(held[i]);
    }
    free(rs);
    mp_expect_rc(mp_pool_close(p), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(30)), 0);
    mp_pool_free(p);
    mp_event_free(ev);
}

Test(pool_limits, more_in_flight_than_the_ring_holds, .timeout = MP_TMO(60))
{
    more_in_flight_than_the_ring(MP_POOL_PROCESS);
}

Test(pool_limits, more_in_flight_than_the_ring_holds_threads, .timeout = MP_TMO(60))
{
    more_in_flight_than_the_ring(MP_POOL_THREAD);
}

/* A task's time limit holds on a pool whose jobs served map helpers
 * before: a helper ends "between items", and a job recycled for a task
 * must not keep that mark (its deadline would never run). */
Test(pool_limits, task_deadline_after_maps, .timeout = MP_TMO(30))
{
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 2}), 0);
    double naps[8] = {0}, outs[8];
    for (int round = 0; round < 20; round++) /* helpers, ended and recycled */
        mp_expect_rc(mp_pool_map(p, nap_item, naps, 8, sizeof(double), outs, sizeof(double), 1),
                     0);
    for (int i = 0; i < 4; i++) {
        mp_result *r;
        double t0 = mp_test_now();
        mp_expect_rc(mp_pool_apply_async(p, run_op, &(task_arg){.op = OP_HANG},
                                         sizeof(task_arg), &(mp_task_opts){.timeout = 0.2}, &r),
                     0);
        mp_expect_rc(mp_result_wait(r, MP_TMO(10)), 0);
        mp_task_info info;
        mp_expect_rc(mp_result_info(r, &info), 0);
        mp_expect_rc(info.code, MP_EDEADLINE);
        cr_assert_lt(mp_test_now() - t0, MP_TMO(3));
        mp_result_free(r);
    }
    mp_pool_free(p);
}

/* CPU time (user + system, ns) of one process, from /proc/<pid>/stat. */
static int64_t cpu_ns_of(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* fields after the command name */
    cr_assert_not_null(p);
    unsigned long long ut = 0, st = 0;
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    cr_assert_eq(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st),
                 2);
    return (int64_t)((ut + st) * (1000000000ULL / (unsigned long long)sysconf(_SC_CLK_TCK)));
}

/* An idle pool sleeps.  Its workers used to spin 2 ms again after every
 * 50 ms sleep slice that ended with nothing to do: a pool of 10 idle
 * threads kept a fifth of a CPU busy, for ever. */
static void idle_pool_sleeps(mp_pool_kind kind)
{
    enum { W = 10 };
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = W, .kind = kind}), 0);
    for (int i = 0; i < 4 * W; i++)
        mp_expect_rc(mp_pool_apply(p, run_op, &(task_arg){.op = OP_SQUARE, .value = i},
                                   sizeof(task_arg), NULL, NULL),
                     0);
    pool_core *c;
    mp_expect_rc(mp__pool_check(p, &c), 0);
    /* Every worker past its spin and asleep: the window measured is what
     * an idle pool costs. */
    double end = mp_test_now() + 10;
    pid_t pids[W];
    bool known = false; /* every worker's pid reported (a worker may sleep first) */
    while ((atomic_load(&c->s->ring.sleepers) < W || !known) && mp_test_now() < end) {
        known = true;
        for (unsigned w = 0; w < W; w++)
            known &= (pids[w] = mp_pool_worker_pid(p, w)) > 0;
        sched_yield();
    }
    cr_assert_eq(atomic_load(&c->s->ring.sleepers), W);
    cr_assert(known);
    int64_t before = 0, after = 0;
    pid_t self = getpid();
    before += cpu_ns_of(self);
    for (unsigned w = 0; kind == MP_POOL_PROCESS && w < W; w++)
        before += cpu_ns_of(pids[w]);
    struct timespec window = {1, 0}; /* (a measurement, not a wait) */
    nanosleep(&window, NULL);
    after += cpu_ns_of(self);
    for (unsigned w = 0; kind == MP_POOL_PROCESS && w < W; w++)
        after += cpu_ns_of(pids[w]);
    /* Sleeping workers wake 20 times a second for a few microseconds;
     * before the fix this was about 200 ms. */
    cr_assert_lt(after - before, 50 * 1000 * 1000, "an idle pool of %d used %.1f ms of CPU in 1 s",
                 W, (double)(after - before) / 1e6);
    mp_expect_rc(mp_pool_close(p), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(30)), 0);
    mp_pool_free(p);
}

Test(pool_limits, idle_pool_sleeps, .timeout = MP_TMO(30)) { idle_pool_sleeps(MP_POOL_PROCESS); }

Test(pool_limits, idle_pool_sleeps_threads, .timeout = MP_TMO(30))
{
    idle_pool_sleeps(MP_POOL_THREAD);
}

/* Fire-and-forget tasks (out NULL) give their jobs back: rounds of them
 * reuse the jobs of the rounds before instead of making new ones. */
static void fire_and_forget_jobs_come_back(mp_pool_kind kind)
{
    enum { N = 10000, ROUNDS = 20 };
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 2, .kind = kind}), 0);
    pool_core *c;
    mp_expect_rc(mp__pool_check(p, &c), 0);
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < N; i++)
            mp_expect_rc(submit(p, OP_SQUARE, i, NULL, NULL, NULL), 0);
        /* The ring is first in, first out: once this one has run, every
         * task before it has been taken. */
        mp_expect_rc(mp_pool_apply(p, run_op, &(task_arg){.op = OP_SQUARE, .value = 3},
                                   sizeof(task_arg), NULL, NULL),
                     0);
        /* Every task of the round ended; their jobs go back through the
         * supervisor, which collects the workers' done stacks when it
         * looks: have it look, and wait until it has. */
        uint64_t want = (uint64_t)(round + 1) * (N + 1);
        double end = mp_test_now() + 20;
        for (;;) {
            mp_pool_stats st;
            mp_expect_rc(mp_pool_get_stats(p, &st), 0);
            bool piled = false;
            for (unsigned w = 0; w < c->nslots; w++)
                piled |= atomic_load(&c->s->workers[w].done_head) != NULL;
            if ((st.tasks_done >= want && !piled) || mp_test_now() > end)
                break;
            mp__pool_kick(c);
            sched_yield();
        }
    }
    uint32_t made = atomic_load(&c->jobs.njobs);
    /* Given back, a round reuses the jobs of the one before; never given
     * back, there would be one a task. */
    cr_assert_lt(made, 2 * N, "%u jobs made for %d tasks in rounds of %d", made, N * ROUNDS, N);
    mp_expect_rc(mp_pool_close(p), 0);
    mp_expect_rc(mp_pool_join(p, MP_TMO(30)), 0);
    mp_pool_free(p);
}

Test(pool_limits, fire_and_forget_jobs_come_back, .timeout = MP_TMO(60))
{
    fire_and_forget_jobs_come_back(MP_POOL_PROCESS);
}

Test(pool_limits, fire_and_forget_jobs_come_back_threads, .timeout = MP_TMO(60))
{
    fire_and_forget_jobs_come_back(MP_POOL_THREAD);
}

/* A pool with max_queued: once that many tasks wait for a worker,
 * apply_async waits for room (nowait: -EAGAIN at once); closing the pool
 * wakes a waiter with MP_ECLOSED. */
typedef struct {
    mp_pool *p;
    mp_result *r;
    int rc;
} blocked_submit;

static void *submit_in_thread(void *arg)
{
    blocked_submit *b = arg;
    b->rc = submit(b->p, OP_SQUARE, 9, NULL, NULL, &b->r);
    return NULL;
}

static void wait_for_room_waiter(pool_core *c)
{
    double end = mp_test_now() + 20;
    while (atomic_load(&c->s->room_waiters) == 0 && mp_test_now() < end)
        sched_yield();
    cr_assert_eq(atomic_load(&c->s->room_waiters), 1, "the submitter does not wait for room");
}

static void bounded_queue(mp_pool_kind kind)
{
    enum { MAX = 3 };
    mp_pool *p;
    mp_expect_rc(mp_pool_new(&p, &(mp_pool_opts){.workers = 1, .kind = kind, .max_queued = MAX}),
                 0);
    pool_core *c;
    mp_expect_rc(mp__pool_check(p, &c), 0);
    mp_event *ev;
    mp_expect_rc(mp_event_new(&ev), 0);
    mp_result *held, *rs[MAX], *extra;
    mp_expect_rc(submit_running(p, ev, &held), 0); /* running: it does not count */
    const mp_task_opts nowait = {.nowait = true};
    for (int i = 0; i < MAX; i++)
        mp_expect_rc(submit(p, OP_SQUARE, i, NULL, &nowait, &rs[i]), 0);
    mp_expect_rc(submit(p, OP_SQUARE, 7, NULL, &nowait, &extra), -EAGAIN);
    cr_assert_null(extra);
    mp_pool_stats st;
    mp_expect_rc(mp_pool_get_stats(p, &st), 0);
    cr_assert_eq(st.queued, MAX);

    /* One more without nowait waits until the worker takes one. */
    blocked_submit b = {.p = p};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, submit_in_thread, &b), 0);
    wait_for_room_waiter(c);
    mp_expect_rc(mp_event_set(ev), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    mp_expect_rc(b.rc, 0);
    for (int i = 0; i < MAX; i++) {
        const void *res;
        mp_expect_rc(mp_result_get(rs[i], MP_TMO(20), &res, NULL), 0);
        cr_assert_eq(*(const int *)res, i * i);
        mp_result_free(rs[i]);
    }
    const void *res;
    mp_expect_rc(mp_result_get(b.r, MP_TMO(20), &res, NULL), 0);
    cr_assert_eq(*(const int *)res, 81);
    mp_result_free(b.r);
    mp_expect_rc(mp_result_get(held, MP_TMO(20), NULL, NULL), 0);
    mp_result_free(held);
    mp_event_free(ev);

    /* Full again, a submitter waiting: close wakes it with MP_ECLOSED. */
    mp_expect_rc(mp_event_new(&ev), 0);
    mp_expect_rc(submit_running(p, ev, &held), 0);
    for (int i = 0; i < MAX; i++)
        mp_expect_rc(submit(p, OP_SQUARE, i, NULL, NULL, NULL), 0);
    b = (blocked_submit){.p = p};
    cr_assert_eq(pthread_create(&t, NULL, submit_in_thread, &b), 0);
    wait_for_room_waiter(c);
    mp_expect_rc(mp_pool_close(p), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    mp_expect_rc(b.rc, MP_ECLOSED);
    cr_assert_null(b.r);
    mp_expect_rc(mp_event_set(ev), 0);
    mp_expect_rc(mp_result_get(held, MP_TMO(20), NULL, NULL), 0);
    mp_result_free(held);
    mp_expect_rc(mp_pool_join(p, MP_TMO(30)), 0);
    mp_pool_free(p);
    mp_event_free(ev);
}

Test(pool_limits, bounded_queue, .timeout = MP_TMO(60)) { bounded_queue(MP_POOL_PROCESS); }

Test(pool_limits, bounded_queue_threads, .timeout = MP_TMO(60)) { bounded_queue(MP_POOL_THREAD); }
