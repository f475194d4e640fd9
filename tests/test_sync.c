/* Lock, RLock, Semaphore, Condition, Event, Barrier: Python's semantics,
 * timeouts, threads and processes at once, owner death, bad input. */
// labels: unit tsan
#include <math.h>
#include <mproc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "heap_int.h"
#include "mp_test.h"

/* ---- helpers ---- */

/* Start fn(arg) in a child process. */
static mp_process *spawn(mp_target fn, void *arg)
{
    mp_process *p;
    cr_assert_eq(mp_process_new(&p, fn, arg, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    return p;
}

/* Join a child and check its exit code. */
static void join_ok(mp_process *p, int want)
{
    mp_expect_rc(mp_process_join(p, MP_TMO(20)), 0);
    int code;
    mp_expect_rc(mp_process_exitcode(p, &code), 0);
    cr_assert_eq(code, want, "child exit code %d, want %d", code, want);
    mp_process_free(p);
}

static pthread_t thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, fn, arg), 0);
    return t;
}

typedef struct {
    mp_lock *lock;
    mp_rlock *rlock;
    int fd;          /* where to report "I hold it" */
    long *counter;
    long n;
} lock_job;

/* ---- Lock ---- */

Test(lock, acquire_release_and_errors, .timeout = MP_TMO(10))
{
    mp_lock *l;
    cr_assert_eq(mp_lock_new(&l), 0);
    cr_assert(!mp_lock_locked(l));
    mp_expect_rc(mp_lock_acquire(l, MP_FOREVER), 0);
    cr_assert(mp_lock_locked(l));
    cr_assert(mp_lock_held(l));
    mp_expect_rc(mp_lock_acquire(l, 0), -EDEADLK);
    mp_expect_rc(mp_lock_acquire(l, 1), -EDEADLK);
    mp_expect_rc(mp_lock_release(l), 0);
    mp_expect_rc(mp_lock_release(l), -EPERM);
    cr_assert(!mp_lock_locked(l));
    mp_expect_rc(mp_lock_acquire(l, 0), 0);
    mp_expect_rc(mp_lock_release(l), 0);
    mp_expect_rc(mp_lock_acquire(l, NAN), -EINVAL);
    mp_expect_rc(mp_lock_acquire(l, INFINITY), 0);
    mp_expect_rc(mp_lock_release(l), 0);
    mp_lock_free(l);

    mp_expect_rc(mp_lock_new(NULL), -EINVAL);
    mp_expect_rc(mp_lock_acquire(NULL, 1), -EINVAL);
    mp_expect_rc(mp_lock_release(NULL), -EINVAL);
    cr_assert(!mp_lock_locked(NULL));
    cr_assert(!mp_lock_held(NULL));
    mp_lock_free(NULL);
}

static void *release_foreign(void *arg)
{
    return (void *)(intptr_t)mp_lock_release(arg);
}

static void *try_for_50ms(void *arg)
{
    double t0 = mp_test_now();
    int rc = mp_lock_acquire(arg, 0.05);
    if (rc == MP_ETIMEDOUT && mp_test_now() - t0 < 0.049)
        rc = -1000; /* returned early */
    return (void *)(intptr_t)rc;
}

Test(lock, other_threads_cannot_release_and_time_out, .timeout = MP_TMO(10))
{
    mp_lock *l;
    cr_assert_eq(mp_lock_new(&l), 0);
    mp_expect_rc(mp_lock_acquire(l, MP_FOREVER), 0);
    void *r;
    pthread_join(thread(release_foreign, l), &r);
    mp_expect_rc((int)(intptr_t)r, -EPERM);
    pthread_join(thread(try_for_50ms, l), &r);
    mp_expect_rc((int)(intptr_t)r, MP_ETIMEDOUT);
    mp_expect_rc(mp_lock_release(l), 0);
    pthread_join(thread(try_for_50ms, l), &r);
    mp_expect_rc((int)(intptr_t)r, 0); /* acquired, and its thread ended */
    mp_lock_free(l);
}

static int hold_and_report(void *arg)
{
    lock_job *j = arg;
    int rc = j->lock ? mp_lock_acquire(j->lock, MP_FOREVER) : mp_rlock_acquire(j->rlock, MP_FOREVER);
    if (j->rlock)
        mp_rlock_acquire(j->rlock, MP_FOREVER); /* held twice */
    char c = MP_ACQUIRED(rc) ? 'y' : 'n';
    (void)!write(j->fd, &c, 1);
    for (;;)
        pause(); /* killed here, holding the lock */
    return 0;
}

Test(lock, owner_death_is_reported_to_the_next_acquirer, .timeout = MP_TMO(10))
{
    mp_lock *l;
    cr_assert_eq(mp_lock_new(&l), 0);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    lock_job j = {.lock = l, .fd = fds[1]};
    mp_process *p = spawn(hold_and_report, &j);
    char c;
    cr_assert_eq(mp_test_read(fds[0], &c, 1, MP_TMO(5)), 1);
    cr_assert_eq(c, 'y');
    mp_expect_rc(mp_lock_acquire(l, 0.02), MP_ETIMEDOUT);
    cr_assert(mp_lock_locked(l));
    mp_expect_rc(mp_process_kill(p), 0);
    double t0 = mp_test_now();
    mp_expect_rc(mp_lock_acquire(l, MP_TMO(5)), MP_EOWNERDEAD);
    cr_assert_lt(mp_test_now() - t0, 1.0, "recovered within a second");
    cr_assert(MP_ACQUIRED(MP_EOWNERDEAD));
    cr_assert(mp_lock_held(l));
    mp_expect_rc(mp_lock_release(l), 0);
    mp_expect_rc(mp_lock_acquire(l, 0), 0); /* usable as before */
    mp_expect_rc(mp_lock_release(l), 0);
    join_ok(p, -SIGKILL);
    mp_lock_free(l);
}

static void *hold_and_exit(void *arg)
{
    return (void *)(intptr_t)mp_lock_acquire(arg, MP_FOREVER);
}

Test(lock, thread_death_is_reported_too, .timeout = MP_TMO(10))
{
    mp_lock *l;
    cr_assert_eq(mp_lock_new(&l), 0);
    void *r;
    pthread_join(thread(hold_and_exit, l), &r);
    mp_expect_rc((int)(intptr_t)r, 0);
    mp_expect_rc(mp_lock_acquire(l, MP_TMO(5)), MP_EOWNERDEAD);
    mp_expect_rc(mp_lock_release(l), 0);
    mp_lock_free(l);
}

static void bump(lock_job *j)
{
    for (long i = 0; i < j->n; i++) {
        int rc = mp_lock_acquire(j->lock, MP_FOREVER);
        if (!MP_ACQUIRED(rc))
            abort();
        long v = *j->counter;
        *j->counter = v + 1;
        mp_lock_release(j->lock);
    }
}

static void *bump_thread(void *arg)
{
    bump(arg);
    return NULL;
}

static int bump_process(void *arg)
{
    pthread_t t = thread(bump_thread, arg);
    bump(arg);
    pthread_join(t, NULL);
    return 0;
}

Test(lock, processes_and_threads_count_exactly, .timeout = MP_TMO(30))
{
    mp_lock *l;
    cr_assert_eq(mp_lock_new(&l), 0);
    long *counter = mp_shared_alloc(sizeof *counter);
    lock_job j = {.lock = l, .counter = counter, .n = 20000};
    mp_process *p[4];
    for (int i = 0; i < 4; i++)
        p[i] = spawn(bump_process, &j);
    bump_process(&j);
    for (int i = 0; i < 4; i++)
        join_ok(p[i], 0);
    cr_assert_eq(*counter, 5 * 2 * 20000);
    mp_shared_free(counter);
    mp_lock_free(l);
}

/* Two words that must stay equal, updated under the lock one at a time. */
typedef struct {
    mp_lock *lock;
    long a, b;
} pair;

static int pair_loop(void *arg)
{
    pair *pr = arg;
    for (;;) {
        int rc = mp_lock_acquire(pr->lock, MP_FOREVER);
        if (rc == MP_EOWNERDEAD)
            pr->b = pr->a; /* repair what the dead holder left */
        else if (rc != 0)
            return 1;
        pr->a++;
        for (volatile int k = 0; k < 50; k++)
            ;
        pr->b++;
        mp_lock_release(pr->lock);
    }
}

Test(lock, owners_killed_at_random_points, .timeout = MP_TMO(60))
{
    pair *pr = mp_shared_alloc(sizeof *pr);
    cr_assert_eq(mp_lock_new(&pr->lock), 0);
    srand(1234);
    int dead_holders = 0;
    for (int round = 0; round < 40; round++) {
        mp_process *p[2] = {spawn(pair_loop, pr), spawn(pair_loop, pr)};
        /* Let them run a random while, waiting on the counter itself. */
        long target = pr->a + 200 + rand() % 2000;
        double end = mp_test_now() + MP_TMO(10);
        while (__atomic_load_n(&pr->a, __ATOMIC_RELAXED) < target)
            cr_assert_lt(mp_test_now(), end, "workers make progress");
        mp_process_kill(p[0]);
        mp_process_kill(p[1]);
        join_ok(p[0], -SIGKILL);
        join_ok(p[1], -SIGKILL);
        int rc = mp_lock_acquire(pr->lock, MP_TMO(5));
        cr_assert(MP_ACQUIRED(rc), "rc %d", rc);
        if (rc == MP_EOWNERDEAD) {
            dead_holders++;
            pr->b = pr->a;
        }
        cr_assert_eq(pr->a, pr->b, "round %d: the invariant holds", round);
        mp_expect_rc(mp_lock_release(pr->lock), 0);
    }
    cr_log_info("%d of 40 rounds killed a holder", dead_holders);
    mp_lock_free(pr->lock);
    mp_shared_free(pr);
}

/* ---- RLock ---- */

static void *rlock_try(void *arg)
{
    return (void *)(intptr_t)mp_rlock_acquire(arg, 0.02);
}

Test(rlock, recursion_per_thread, .timeout = MP_TMO(10))
{
    mp_rlock *l;
    cr_assert_eq(mp_rlock_new(&l), 0);
    cr_assert_eq(mp_rlock_count(l), 0);
    mp_expect_rc(mp_rlock_release(l), -EPERM);
    for (unsigned i = 1; i <= 3; i++) {
        mp_expect_rc(mp_rlock_acquire(l, MP_FOREVER), 0);
        cr_assert_eq(mp_rlock_count(l), i);
    }
    void *r;
    pthread_join(thread(rlock_try, l), &r);
    mp_expect_rc((int)(intptr_t)r, MP_ETIMEDOUT);
    mp_expect_rc(mp_rlock_release(l), 0);
    mp_expect_rc(mp_rlock_release(l), 0);
    pthread_join(thread(rlock_try, l), &r);
    mp_expect_rc((int)(intptr_t)r, MP_ETIMEDOUT); /* still held once */
    mp_expect_rc(mp_rlock_release(l), 0);
    cr_assert_eq(mp_rlock_count(l), 0);
    mp_expect_rc(mp_rlock_release(l), -EPERM);
    pthread_join(thread(rlock_try, l), &r); /* free: the thread gets it, then dies */
    mp_expect_rc((int)(intptr_t)r, 0);
    mp_expect_rc(mp_rlock_acquire(l, MP_TMO(5)), MP_EOWNERDEAD);
    cr_assert_eq(mp_rlock_count(l), 1, "a dead owner's count is not inherited");
    mp_expect_rc(mp_rlock_release(l), 0);
    mp_expect_rc(mp_rlock_acquire(l, NAN), -EINVAL);
    mp_rlock_free(l);
    mp_expect_rc(mp_rlock_new(NULL), -EINVAL);
    mp_expect_rc(mp_rlock_acquire(NULL, 0), -EINVAL);
    mp_expect_rc(mp_rlock_release(NULL), -EINVAL);
    cr_assert_eq(mp_rlock_count(NULL), 0);
}

Test(rlock, owner_process_death, .timeout = MP_TMO(10))
{
    mp_rlock *l;
    cr_assert_eq(mp_rlock_new(&l), 0);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    lock_job j = {.rlock = l, .fd = fds[1]};
    mp_process *p = spawn(hold_and_report, &j);
    char c;
    cr_assert_eq(mp_test_read(fds[0], &c, 1, MP_TMO(5)), 1);
    mp_expect_rc(mp_rlock_acquire(l, 0), MP_ETIMEDOUT);
    mp_process_kill(p);
    mp_expect_rc(mp_rlock_acquire(l, MP_TMO(5)), MP_EOWNERDEAD);
    cr_assert_eq(mp_rlock_count(l), 1);
    mp_expect_rc(mp_rlock_release(l), 0);
    join_ok(p, -SIGKILL);
    mp_rlock_free(l);
}

/* ---- Semaphore ---- */

Test(sem, counts_and_bounds, .timeout = MP_TMO(10))
{
    mp_sem *s;
    cr_assert_eq(mp_sem_new(&s, 2, 0), 0);
    cr_assert_eq(mp_sem_value(s), 2);
    mp_expect_rc(mp_sem_acquire(s, 0), 0);
    mp_expect_rc(mp_sem_acquire(s, 0), 0);
    mp_expect_rc(mp_sem_acquire(s, 0), MP_ETIMEDOUT);
    double t0 = mp_test_now();
    mp_expect_rc(mp_sem_acquire(s, 0.05), MP_ETIMEDOUT);
    cr_assert_geq(mp_test_now() - t0, 0.049);
    for (int i = 0; i < 5; i++)
        mp_expect_rc(mp_sem_release(s), 0); /* unbounded */
    cr_assert_eq(mp_sem_value(s), 5);
    mp_sem_free(s);

    cr_assert_eq(mp_sem_new(&s, 1, 2), 0); /* BoundedSemaphore */
    mp_expect_rc(mp_sem_release(s), 0);
    mp_expect_rc(mp_sem_release(s), -EOVERFLOW);
    cr_assert_eq(mp_sem_value(s), 2);
    mp_expect_rc(mp_sem_acquire(s, NAN), -EINVAL);
    mp_sem_free(s);

    mp_expect_rc(mp_sem_new(&s, 3, 2), -EINVAL);
    mp_expect_rc(mp_sem_new(NULL, 0, 0), -EINVAL);
    mp_expect_rc(mp_sem_new(&s, 0x80000000u, 0), -EINVAL);
    mp_expect_rc(mp_sem_acquire(NULL, 0), -EINVAL);
    mp_expect_rc(mp_sem_release(NULL), -EINVAL);
    cr_assert_eq(mp_sem_value(NULL), 0);
}

typedef struct {
    mp_sem *sem;
    int inside, most;  /* how many are inside now / at most */
    int rounds;
} sem_job;

static void sem_work(sem_job *j)
{
    for (int i = 0; i < j->rounds; i++) {
        if (mp_sem_acquire(j->sem, MP_FOREVER) != 0)
            abort();
        int now = __atomic_add_fetch(&j->inside, 1, __ATOMIC_SEQ_CST);
        int most = __atomic_load_n(&j->most, __ATOMIC_SEQ_CST);
        while (now > most && !__atomic_compare_exchange_n(&j->most, &most, now, false,
                                                          __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            ;
        sched_yield();
        __atomic_sub_fetch(&j->inside, 1, __ATOMIC_SEQ_CST);
        mp_sem_release(j->sem);
    }
}

static void *sem_thread(void *arg)
{
    sem_work(arg);
    return NULL;
}

static int sem_process(void *arg)
{
    pthread_t t = thread(sem_thread, arg);
    sem_work(arg);
    pthread_join(t, NULL);
    return 0;
}

Test(sem, limits_concurrency_across_processes_and_threads, .timeout = MP_TMO(30))
{
    sem_job *j = mp_shared_alloc(sizeof *j);
    cr_assert_eq(mp_sem_new(&j->sem, 3, 3), 0);
    j->rounds = 2000;
    mp_process *p[4];
    for (int i = 0; i < 4; i++)
        p[i] = spawn(sem_process, j);
    for (int i = 0; i < 4; i++)
        join_ok(p[i], 0);
    cr_assert_leq(j->most, 3);
    cr_assert_geq(j->most, 1);
    cr_assert_eq(j->inside, 0);
    cr_assert_eq(mp_sem_value(j->sem), 3, "every permit came back");
    mp_sem_free(j->sem);
    mp_shared_free(j);
}

static int sem_wait_child(void *arg)
{
    return mp_sem_acquire(arg, MP_TMO(10)) == 0 ? 0 : 1;
}

Test(sem, release_wakes_a_waiting_process, .timeout = MP_TMO(10))
{
    mp_sem *s;
    cr_assert_eq(mp_sem_new(&s, 0, 0), 0);
    mp_process *p = spawn(sem_wait_child, s);
    cr_assert(!mp_test_process_gone(mp_process_pid(p), 0.05), "the child waits");
    mp_expect_rc(mp_sem_release(s), 0);
    join_ok(p, 0);
    cr_assert_eq(mp_sem_value(s), 0);
    mp_sem_free(s);
}

Test(sem, release_n_is_all_or_nothing, .timeout = MP_TMO(10))
{
    mp_sem *s;
    cr_assert_eq(mp_sem_new(&s, 0, 0), 0);
    mp_expect_rc(mp_sem_release_n(s, 3), 0);
    cr_assert_eq(mp_sem_value(s), 3);
    mp_expect_rc(mp_sem_release_n(s, 0), -EINVAL); /* Python: ValueError */
    mp_expect_rc(mp_sem_release_n(s, INT32_MAX), -EOVERFLOW);
    mp_expect_rc(mp_sem_release_n(s, UINT32_MAX), -EOVERFLOW);
    cr_assert_eq(mp_sem_value(s), 3, "nothing released");
    mp_expect_rc(mp_sem_release_n(s, INT32_MAX - 3), 0);
    cr_assert_eq(mp_sem_value(s), INT32_MAX);
    mp_expect_rc(mp_sem_release_n(s, 1), -EOVERFLOW);
    mp_sem_free(s);

    cr_assert_eq(mp_sem_new(&s, 1, 4), 0); /* BoundedSemaphore(4), one left */
    mp_expect_rc(mp_sem_release_n(s, 4), -EOVERFLOW);
    cr_assert_eq(mp_sem_value(s), 1, "nothing released");
    mp_expect_rc(mp_sem_release_n(s, 3), 0);
    cr_assert_eq(mp_sem_value(s), 4);
    mp_expect_rc(mp_sem_release_n(s, 1), -EOVERFLOW);
    mp_sem_free(s);
    mp_expect_rc(mp_sem_release_n(NULL, 1), -EINVAL);
}

typedef struct {
    mp_sem *sem;
    mp_sem *done; /* a permit per waiter that got through */
} sem_pair;

static int sem_take_and_report(void *arg)
{
    sem_pair *sp = arg;
    int rc = mp_sem_acquire(sp->sem, MP_TMO(10));
    mp_sem_release(sp->done);
    return rc == 0 ? 0 : 1;
}

Test(sem, release_n_lets_n_waiting_processes_through, .timeout = MP_TMO(20))
{
    sem_pair *sp = mp_shared_alloc(sizeof *sp);
    cr_assert_eq(mp_sem_new(&sp->sem, 0, 0), 0);
    cr_assert_eq(mp_sem_new(&sp->done, 0, 0), 0);
    mp_process *p[3];
    for (int i = 0; i < 3; i++)
        p[i] = spawn(sem_take_and_report, sp);
    mp_expect_rc(mp_sem_release_n(sp->sem, 2), 0);
    for (int i = 0; i < 2; i++)
        mp_expect_rc(mp_sem_acquire(sp->done, MP_TMO(5)), 0);
    mp_expect_rc(mp_sem_acquire(sp->done, 0.05), MP_ETIMEDOUT);
    cr_assert_eq(mp_sem_value(sp->sem), 0, "two permits, two takers");
    mp_expect_rc(mp_sem_release_n(sp->sem, 1), 0);
    mp_expect_rc(mp_sem_acquire(sp->done, MP_TMO(5)), 0);
    for (int i = 0; i < 3; i++)
        join_ok(p[i], 0);
    mp_sem_free(sp->done);
    mp_sem_free(sp->sem);
    mp_shared_free(sp);
}

/* ---- Condition ---- */

typedef struct {
    mp_cond *cond;
    int items;       /* guarded by the condition's lock */
    int consumed;
    int waiting;
} cond_job;

static int consumer(void *arg)
{
    cond_job *j = arg;
    for (int n = 0; n < 100; n++) {
        if (!MP_ACQUIRED(mp_cond_acquire(j->cond, MP_FOREVER)))
            return 1;
        while (j->items == 0)
            if (mp_cond_wait(j->cond, MP_TMO(10)) != 0)
                return 2;
        j->items--;
        j->consumed++;
        mp_cond_release(j->cond);
    }
    return 0;
}

Test(cond, producer_and_consumer_processes, .timeout = MP_TMO(30))
{
    cond_job *j = mp_shared_alloc(sizeof *j);
    cr_assert_eq(mp_cond_new(&j->cond, NULL), 0);
    cr_assert_not_null(mp_cond_lock(j->cond));
    cr_assert_null(mp_cond_rlock(j->cond));
    mp_process *p[3];
    for (int i = 0; i < 3; i++)
        p[i] = spawn(consumer, j);
    for (int n = 0; n < 300; n++) {
        mp_expect_rc(mp_cond_acquire(j->cond, MP_FOREVER), 0);
        j->items++;
        mp_expect_rc(mp_cond_notify(j->cond, 1), 0);
        mp_expect_rc(mp_cond_release(j->cond), 0);
    }
    for (int i = 0; i < 3; i++)
        join_ok(p[i], 0);
    cr_assert_eq(j->consumed, 300);
    cr_assert_eq(j->items, 0);
    mp_cond_free(j->cond);
    mp_shared_free(j);
}

static int wait_for_flag(void *arg)
{
    cond_job *j = arg;
    if (mp_cond_acquire(j->cond, MP_FOREVER) != 0)
        return 1;
    j->waiting++;
    while (j->items == 0)
        if (mp_cond_wait(j->cond, MP_TMO(10)) != 0)
            return 2;
    j->consumed++;
    mp_cond_release(j->cond);
    return 0;
}

Test(cond, notify_all_wakes_every_waiter, .timeout = MP_TMO(20))
{
    cond_job *j = mp_shared_alloc(sizeof *j);
    mp_lock *l;
    cr_assert_eq(mp_lock_new(&l), 0);
    cr_assert_eq(mp_cond_new(&j->cond, l), 0);
    cr_assert_eq(mp_cond_lock(j->cond), l);
    mp_process *p[4];
    for (int i = 0; i < 4; i++)
        p[i] = spawn(wait_for_flag, j);
    /* Wait until all four are inside wait() (they registered under the lock). */
    double end = mp_test_now() + MP_TMO(10);
    for (;;) {
        mp_expect_rc(mp_lock_acquire(l, MP_FOREVER), 0);
        int w = j->waiting;
        if (w == 4)
            break;
        mp_expect_rc(mp_lock_release(l), 0);
        cr_assert_lt(mp_test_now(), end);
        sched_yield();
    }
    j->items = 1;
    mp_expect_rc(mp_cond_notify_all(j->cond), 0);
    mp_expect_rc(mp_lock_release(l), 0);
    for (int i = 0; i < 4; i++)
        join_ok(p[i], 0);
    cr_assert_eq(j->consumed, 4);
    mp_cond_free(j->cond);
    mp_lock_free(l);
    mp_shared_free(j);
}

Test(cond, timeout_reacquires_and_errors, .timeout = MP_TMO(10))
{
    mp_cond *c;
    cr_assert_eq(mp_cond_new(&c, NULL), 0);
    mp_expect_rc(mp_cond_wait(c, 0.01), -EPERM);
    mp_expect_rc(mp_cond_notify(c, 1), -EPERM);
    mp_expect_rc(mp_cond_notify_all(c), -EPERM);
    mp_expect_rc(mp_cond_acquire(c, MP_FOREVER), 0);
    double t0 = mp_test_now();
    mp_expect_rc(mp_cond_wait(c, 0.05), MP_ETIMEDOUT);
    cr_assert_geq(mp_test_now() - t0, 0.049);
    cr_assert(mp_lock_held(mp_cond_lock(c)), "the lock is held again after a timeout");
    mp_expect_rc(mp_cond_wait(c, NAN), -EINVAL);
    mp_expect_rc(mp_cond_notify(c, 0), 0);
    mp_expect_rc(mp_cond_notify(c, 3), 0);
    mp_expect_rc(mp_cond_release(c), 0);
    mp_cond_free(c);

    mp_expect_rc(mp_cond_new(NULL, NULL), -EINVAL);
    mp_expect_rc(mp_cond_new_rlock(NULL, NULL), -EINVAL);
    mp_expect_rc(mp_cond_wait(NULL, 0), -EINVAL);
    mp_expect_rc(mp_cond_notify(NULL, 1), -EINVAL);
    mp_expect_rc(mp_cond_notify_all(NULL), -EINVAL);
    cr_assert_null(mp_cond_lock(NULL));
    mp_cond_free(NULL);
}

typedef struct {
    mp_cond *cond;
    int flag;
} rflag;

static void *set_flag_later(void *arg)
{
    rflag *f = arg;
    mp_cond_acquire(f->cond, MP_FOREVER); /* blocks until the waiter waits */
    f->flag = 1;
    mp_cond_notify(f->cond, 1);
    mp_cond_release(f->cond);
    return NULL;
}

Test(cond, over_an_rlock_held_twice, .timeout = MP_TMO(10))
{
    mp_rlock *rl;
    cr_assert_eq(mp_rlock_new(&rl), 0);
    rflag f = {0};
    cr_assert_eq(mp_cond_new_rlock(&f.cond, rl), 0);
    cr_assert_null(mp_cond_lock(f.cond));
    cr_assert_eq(mp_cond_rlock(f.cond), rl);
    mp_expect_rc(mp_rlock_acquire(rl, MP_FOREVER), 0);
    mp_expect_rc(mp_rlock_acquire(rl, MP_FOREVER), 0);
    pthread_t t = thread(set_flag_later, &f);
    while (!f.flag)
        mp_expect_rc(mp_cond_wait(f.cond, MP_TMO(5)), 0);
    cr_assert_eq(mp_rlock_count(rl), 2, "the recursion depth is restored");
    mp_expect_rc(mp_rlock_release(rl), 0);
    mp_expect_rc(mp_rlock_release(rl), 0);
    pthread_join(t, NULL);
    mp_cond_free(f.cond);
    mp_rlock_free(rl);
}

static void *take_cond_now(void *arg)
{
    return (void *)(intptr_t)mp_cond_acquire(arg, 0);
}

/* Python's Condition() is over an RLock: mp_cond_new_rlock(&c, NULL). */
Test(cond, a_condition_of_its_own_rlock_is_reentrant, .timeout = MP_TMO(10))
{
    rflag f = {0};
    cr_assert_eq(mp_cond_new_rlock(&f.cond, NULL), 0);
    mp_rlock *rl = mp_cond_rlock(f.cond);
    cr_assert_not_null(rl);
    cr_assert_null(mp_cond_lock(f.cond));
    mp_expect_rc(mp_cond_acquire(f.cond, MP_FOREVER), 0);
    mp_expect_rc(mp_cond_acquire(f.cond, 0), 0); /* the owner again: no -EDEADLK */
    cr_assert_eq(mp_rlock_count(rl), 2);
    void *r;
    pthread_join(thread(take_cond_now, f.cond), &r);
    mp_expect_rc((int)(intptr_t)r, MP_ETIMEDOUT);
    /* The notifier can take the lock only if wait releases both holds. */
    pthread_t t = thread(set_flag_later, &f);
    while (!f.flag)
        mp_expect_rc(mp_cond_wait(f.cond, MP_TMO(5)), 0);
    cr_assert_eq(mp_rlock_count(rl), 2, "the recursion depth is restored");
    mp_expect_rc(mp_cond_release(f.cond), 0);
    cr_assert_eq(mp_rlock_count(rl), 1);
    mp_expect_rc(mp_cond_release(f.cond), 0);
    mp_expect_rc(mp_cond_release(f.cond), -EPERM);
    pthread_join(t, NULL);
    cr_assert(mp__heap_owned(rl));
    mp_cond_free(f.cond);
    cr_assert(!mp__heap_owned(rl), "the rlock is freed with the condition");
}

/* wait_for: the predicate, under the lock, first and after each wake. */
typedef struct {
    mp_cond *cond;
    int value;  /* guarded by the lock */
    int want;
    int calls;  /* of the predicate */
} wf_job;

static bool wf_reached(void *arg)
{
    wf_job *j = arg;
    j->calls++;
    return j->value >= j->want;
}

static void *wf_bump_thrice(void *arg)
{
    wf_job *j = arg;
    for (int i = 0; i < 3; i++) {
        mp_cond_acquire(j->cond, MP_FOREVER);
        j->value++;
        mp_cond_notify_all(j->cond);
        mp_cond_release(j->cond);
    }
    return NULL;
}

Test(cond, wait_for_a_predicate, .timeout = MP_TMO(10))
{
    wf_job j = {.want = 1};
    cr_assert_eq(mp_cond_new_rlock(&j.cond, NULL), 0);
    mp_expect_rc(mp_cond_wait_for(j.cond, wf_reached, &j, 1), -EPERM);
    cr_assert_eq(j.calls, 0);
    mp_expect_rc(mp_cond_acquire(j.cond, MP_FOREVER), 0);
    j.value = 1; /* true at once: no wait, even with timeout 0 */
    mp_expect_rc(mp_cond_wait_for(j.cond, wf_reached, &j, 0), 0);
    cr_assert_eq(j.calls, 1);
    j.want = 2; /* false, timeout 0: one look */
    j.calls = 0;
    mp_expect_rc(mp_cond_wait_for(j.cond, wf_reached, &j, 0), MP_ETIMEDOUT);
    cr_assert_eq(j.calls, 1);
    j.calls = 0; /* false all along: a look before and one at the deadline */
    double t0 = mp_test_now();
    mp_expect_rc(mp_cond_wait_for(j.cond, wf_reached, &j, 0.05), MP_ETIMEDOUT);
    cr_assert_geq(mp_test_now() - t0, 0.049);
    cr_assert_eq(j.calls, 2);
    cr_assert_eq(mp_rlock_count(mp_cond_rlock(j.cond)), 1, "held again");
    /* Three wakes; it returns when the third makes the predicate true
     * (the bumper may take the lock twice in a row: 2 to 4 looks). */
    j.want = 4;
    j.calls = 0;
    pthread_t t = thread(wf_bump_thrice, &j);
    mp_expect_rc(mp_cond_wait_for(j.cond, wf_reached, &j, MP_TMO(5)), 0);
    cr_assert_eq(j.value, 4);
    cr_assert(j.calls >= 2 && j.calls <= 4, "%d looks", j.calls);
    mp_expect_rc(mp_cond_wait_for(j.cond, NULL, NULL, 0), -EINVAL);
    mp_expect_rc(mp_cond_wait_for(j.cond, wf_reached, &j, NAN), -EINVAL);
    mp_expect_rc(mp_cond_release(j.cond), 0);
    pthread_join(t, NULL);
    mp_expect_rc(mp_cond_wait_for(NULL, wf_reached, &j, 0), -EINVAL);
    mp_cond_free(j.cond);
}

/* Makes the predicate true, then dies holding the lock. */
static void *wf_set_and_die(void *arg)
{
    wf_job *j = arg;
    mp_cond_acquire(j->cond, MP_FOREVER);
    j->value = j->want;
    mp_cond_notify_all(j->cond);
    return NULL;
}

Test(cond, wait_for_reports_a_dead_holder_without_looking, .timeout = MP_TMO(10))
{
    wf_job j = {.want = 1};
    mp_lock *l;
    cr_assert_eq(mp_lock_new(&l), 0);
    cr_assert_eq(mp_cond_new(&j.cond, l), 0);
    mp_expect_rc(mp_lock_acquire(l, MP_FOREVER), 0);
    pthread_t t = thread(wf_set_and_die, &j);
    mp_expect_rc(mp_cond_wait_for(j.cond, wf_reached, &j, MP_TMO(5)), MP_EOWNERDEAD);
    cr_assert_eq(j.calls, 1, "the data may be half-updated: not looked at");
    cr_assert(mp_lock_held(l));
    mp_expect_rc(mp_lock_release(l), 0);
    pthread_join(t, NULL);
    mp_cond_free(j.cond);
    mp_lock_free(l);
}

/* notify(n) wakes exactly n: five waiters, notify(3), over many rounds.
 * Every return from wait counts as a wake, as in CPython's test_notify. */
typedef struct {
    mp_cond *cond;
    mp_sem *arrived;  /* a permit per waiter, given under the lock before
                         its wait: once the notifier holds the lock after
                         taking all of them, every waiter is linked */
    mp_sem *returned; /* a permit per waiter back from wait */
    int phase;        /* guarded by the lock: 1 while only notify(n) was sent */
    int woke_early;   /* returns 0 from wait during phase 1 */
    int errors;       /* returns other than 0 */
} notify_job;

static int notify_waiter(void *arg)
{
    notify_job *j = arg;
    if (mp_cond_acquire(j->cond, MP_FOREVER) != 0)
        return 1;
    mp_sem_release(j->arrived);
    int rc = mp_cond_wait(j->cond, MP_TMO(10));
    if (rc != 0)
        j->errors++;
    else if (j->phase == 1)
        j->woke_early++;
    mp_cond_release(j->cond);
    mp_sem_release(j->returned);
    return 0;
}

static void *notify_waiter_thread(void *arg)
{
    return (void *)(intptr_t)notify_waiter(arg);
}

static notify_job *notify_job_new(void)
{
    notify_job *j = mp_shared_alloc(sizeof *j);
    cr_assert_not_null(j);
    cr_assert_eq(mp_cond_new(&j->cond, NULL), 0);
    cr_assert_eq(mp_sem_new(&j->arrived, 0, 0), 0);
    cr_assert_eq(mp_sem_new(&j->returned, 0, 0), 0);
    return j;
}

static void notify_job_free(notify_job *j)
{
    mp_sem_free(j->returned);
    mp_sem_free(j->arrived);
    mp_cond_free(j->cond);
    mp_shared_free(j);
}

/* Take k permits of s, each within a few seconds. */
static void sem_take(mp_sem *s, int k)
{
    for (int i = 0; i < k; i++)
        mp_expect_rc(mp_sem_acquire(s, MP_TMO(5)), 0);
}

enum { NOTIFY_WAITERS = 5, NOTIFY_N = 3, NOTIFY_ROUNDS = 60 };

/* One round: returns how many waiters came back from notify(NOTIFY_N). */
static int notify_round(notify_job *j, bool processes)
{
    mp_process *p[NOTIFY_WAITERS] = {0};
    pthread_t t[NOTIFY_WAITERS] = {0};
    j->phase = 1;
    j->woke_early = 0;
    for (int i = 0; i < NOTIFY_WAITERS; i++) {
        if (processes)
            p[i] = spawn(notify_waiter, j);
        else
            t[i] = thread(notify_waiter_thread, j);
    }
    sem_take(j->arrived, NOTIFY_WAITERS);
    mp_expect_rc(mp_cond_acquire(j->cond, MP_FOREVER), 0);
    mp_expect_rc(mp_cond_notify(j->cond, NOTIFY_N), 0);
    mp_expect_rc(mp_cond_release(j->cond), 0);
    sem_take(j->returned, NOTIFY_N);
    /* Any waiter woken on top of the n is back at once: give it 20 ms. */
    int back = NOTIFY_N;
    while (back < NOTIFY_WAITERS && mp_sem_acquire(j->returned, 0.02) == 0)
        back++;
    mp_expect_rc(mp_cond_acquire(j->cond, MP_FOREVER), 0);
    int woke = j->woke_early;
    j->phase = 2;
    mp_expect_rc(mp_cond_notify_all(j->cond), 0);
    mp_expect_rc(mp_cond_release(j->cond), 0);
    sem_take(j->returned, NOTIFY_WAITERS - back);
    for (int i = 0; i < NOTIFY_WAITERS; i++) {
        if (processes) {
            join_ok(p[i], 0);
        } else {
            void *r;
            pthread_join(t[i], &r);
            cr_assert_eq((intptr_t)r, 0);
        }
    }
    cr_assert_eq(j->errors, 0, "every wait returned 0");
    return woke;
}

static void notify_wakes_exactly_n(bool processes)
{
    notify_job *j = notify_job_new();
    int bad = 0;
    for (int round = 0; round < NOTIFY_ROUNDS; round++) {
        int woke = notify_round(j, processes);
        if (woke != NOTIFY_N)
            cr_log_info("round %d: notify(%d) woke %d", round, NOTIFY_N, woke);
        bad += woke != NOTIFY_N;
    }
    cr_assert_eq(bad, 0, "%d of %d rounds woke other than %d", bad, NOTIFY_ROUNDS, NOTIFY_N);
    notify_job_free(j);
}

Test(cond, notify_wakes_exactly_n_threads, .timeout = MP_TMO(60))
{
    notify_wakes_exactly_n(false);
}

Test(cond, notify_wakes_exactly_n_processes, .timeout = MP_TMO(60))
{
    notify_wakes_exactly_n(true);
}

Test(cond, a_timed_out_waiter_leaves_the_queue, .timeout = MP_TMO(10))
{
    notify_job *j = notify_job_new();
    mp_expect_rc(mp_cond_acquire(j->cond, MP_FOREVER), 0);
    mp_expect_rc(mp_cond_wait(j->cond, 0), MP_ETIMEDOUT);
    mp_expect_rc(mp_cond_wait(j->cond, 0.01), MP_ETIMEDOUT);
    mp_expect_rc(mp_cond_release(j->cond), 0);
    /* The notification goes to the one real waiter, not to a stale entry. */
    j->phase = 1;
    pthread_t t = thread(notify_waiter_thread, j);
    sem_take(j->arrived, 1);
    mp_expect_rc(mp_cond_acquire(j->cond, MP_FOREVER), 0);
    mp_expect_rc(mp_cond_notify(j->cond, 1), 0);
    mp_expect_rc(mp_cond_release(j->cond), 0);
    sem_take(j->returned, 1);
    pthread_join(t, NULL);
    cr_assert_eq(j->errors, 0);
    cr_assert_eq(j->woke_early, 1);
    notify_job_free(j);
}

/* As documented: a waiter killed while waiting keeps its place in the
 * queue, and the notification that reaches it is used up; nothing else
 * is disturbed. */
Test(cond, a_killed_waiter_consumes_one_notification, .timeout = MP_TMO(20))
{
    notify_job *j = notify_job_new();
    j->phase = 1;
    mp_process *a = spawn(notify_waiter, j);
    sem_take(j->arrived, 1);
    mp_process *b = spawn(notify_waiter, j);
    sem_take(j->arrived, 1);
    mp_expect_rc(mp_cond_acquire(j->cond, MP_FOREVER), 0); /* both linked: a first */
    mp_expect_rc(mp_cond_release(j->cond), 0);
    mp_expect_rc(mp_process_kill(a), 0);
    join_ok(a, -SIGKILL);
    mp_expect_rc(mp_cond_acquire(j->cond, MP_FOREVER), 0);
    mp_expect_rc(mp_cond_notify(j->cond, 1), 0); /* reaches the dead one */
    mp_expect_rc(mp_cond_release(j->cond), 0);
    mp_expect_rc(mp_sem_acquire(j->returned, 0.05), MP_ETIMEDOUT);
    mp_expect_rc(mp_cond_acquire(j->cond, MP_FOREVER), 0);
    mp_expect_rc(mp_cond_notify(j->cond, 1), 0);
    mp_expect_rc(mp_cond_release(j->cond), 0);
    sem_take(j->returned, 1);
    join_ok(b, 0);
    cr_assert_eq(j->errors, 0);
    cr_assert_eq(j->woke_early, 1);
    notify_job_free(j);
}

/* ---- Event ---- */

static int event_child(void *arg)
{
    mp_event **ev = arg; /* ev[0]: wait for it; ev[1]: set it */
    if (mp_event_wait(ev[0], MP_TMO(10)) != 0)
        return 1;
    return mp_event_set(ev[1]) == 0 ? 0 : 2;
}

Test(event, set_wait_clear_between_processes, .timeout = MP_TMO(10))
{
    mp_event *ev[2];
    cr_assert_eq(mp_event_new(&ev[0]), 0);
    cr_assert_eq(mp_event_new(&ev[1]), 0);
    cr_assert(!mp_event_is_set(ev[0]));
    double t0 = mp_test_now();
    mp_expect_rc(mp_event_wait(ev[0], 0.05), MP_ETIMEDOUT);
    cr_assert_geq(mp_test_now() - t0, 0.049);
    mp_expect_rc(mp_event_wait(ev[0], 0), MP_ETIMEDOUT);
    mp_process *p = spawn(event_child, ev);
    mp_expect_rc(mp_event_set(ev[0]), 0);
    mp_expect_rc(mp_event_set(ev[0]), 0);
    cr_assert(mp_event_is_set(ev[0]));
    mp_expect_rc(mp_event_wait(ev[1], MP_TMO(5)), 0);
    mp_expect_rc(mp_event_wait(ev[0], 0), 0);
    join_ok(p, 0);
    mp_expect_rc(mp_event_clear(ev[0]), 0);
    cr_assert(!mp_event_is_set(ev[0]));
    mp_expect_rc(mp_event_wait(ev[0], 0), MP_ETIMEDOUT);
    mp_event_free(ev[0]);
    mp_event_free(ev[1]);

    mp_expect_rc(mp_event_new(NULL), -EINVAL);
    mp_expect_rc(mp_event_set(NULL), -EINVAL);
    mp_expect_rc(mp_event_clear(NULL), -EINVAL);
    mp_expect_rc(mp_event_wait(NULL, 0), -EINVAL);
    cr_assert(!mp_event_is_set(NULL));
}

static int pulse_waiter(void *arg)
{
    mp_event **ev = arg; /* ev[0]: pulsed; ev[1]: "I am about to wait" */
    mp_event_set(ev[1]);
    return mp_event_wait(ev[0], MP_TMO(10)) == 0 ? 0 : 1;
}

Test(event, a_set_then_clear_still_wakes_a_sleeper, .timeout = MP_TMO(10))
{
    mp_event *ev[2];
    cr_assert_eq(mp_event_new(&ev[0]), 0);
    cr_assert_eq(mp_event_new(&ev[1]), 0);
    mp_process *p = spawn(pulse_waiter, ev);
    mp_expect_rc(mp_event_wait(ev[1], MP_TMO(5)), 0);
    cr_assert(!mp_test_process_gone(mp_process_pid(p), 0.05)); /* asleep by now */
    mp_expect_rc(mp_event_set(ev[0]), 0);
    mp_expect_rc(mp_event_clear(ev[0]), 0);
    join_ok(p, 0);
    mp_event_free(ev[0]);
    mp_event_free(ev[1]);
}

/* ---- Barrier ---- */

typedef struct {
    mp_barrier *b;
    int seen[4][8];  /* [round][index]: how many got that index */
} barrier_job;

static int barrier_rounds(void *arg)
{
    barrier_job *j = arg;
    for (int r = 0; r < 4; r++) {
        int idx = mp_barrier_wait(j->b, MP_TMO(10));
        if (idx < 0 || idx >= 8)
            return 1;
        __atomic_add_fetch(&j->seen[r][idx], 1, __ATOMIC_SEQ_CST);
    }
    return 0;
}

Test(barrier, distinct_indexes_over_rounds, .timeout = MP_TMO(20))
{
    barrier_job *j = mp_shared_alloc(sizeof *j);
    cr_assert_eq(mp_barrier_new(&j->b, 5), 0);
    cr_assert_eq(mp_barrier_parties(j->b), 5);
    mp_process *p[4];
    for (int i = 0; i < 4; i++)
        p[i] = spawn(barrier_rounds, j);
    cr_assert_eq(barrier_rounds(j), 0);
    for (int i = 0; i < 4; i++)
        join_ok(p[i], 0);
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < 5; i++)
            cr_assert_eq(j->seen[r][i], 1, "round %d index %d", r, i);
    cr_assert(!mp_barrier_broken(j->b));
    cr_assert_eq(mp_barrier_n_waiting(j->b), 0);
    mp_barrier_free(j->b);
    mp_shared_free(j);
}

static int barrier_once(void *arg)
{
    int rc = mp_barrier_wait(arg, MP_TMO(10));
    return rc == MP_EBROKEN ? 0 : 1;
}

static void wait_for_waiters(mp_barrier *b, unsigned n)
{
    double end = mp_test_now() + MP_TMO(5);
    while (mp_barrier_n_waiting(b) < n) {
        cr_assert_lt(mp_test_now(), end);
        sched_yield();
    }
}

Test(barrier, timeout_abort_and_reset_break_it, .timeout = MP_TMO(20))
{
    mp_barrier *b;
    cr_assert_eq(mp_barrier_new(&b, 3), 0);
    /* A timeout breaks the barrier for the others. */
    mp_process *p = spawn(barrier_once, b);
    wait_for_waiters(b, 1);
    mp_expect_rc(mp_barrier_wait(b, 0.05), MP_ETIMEDOUT);
    join_ok(p, 0);
    cr_assert(mp_barrier_broken(b));
    mp_expect_rc(mp_barrier_wait(b, 1), MP_EBROKEN);
    /* Reset makes it usable again. */
    mp_expect_rc(mp_barrier_reset(b), 0);
    cr_assert(!mp_barrier_broken(b));
    /* Abort wakes waiters with MP_EBROKEN. */
    p = spawn(barrier_once, b);
    wait_for_waiters(b, 1);
    mp_expect_rc(mp_barrier_abort(b), 0);
    join_ok(p, 0);
    mp_expect_rc(mp_barrier_wait(b, 0), MP_EBROKEN);
    /* Reset while someone waits: they get MP_EBROKEN; the barrier is fine. */
    mp_expect_rc(mp_barrier_reset(b), 0);
    p = spawn(barrier_once, b);
    wait_for_waiters(b, 1);
    mp_expect_rc(mp_barrier_reset(b), 0);
    join_ok(p, 0);
    cr_assert(!mp_barrier_broken(b));
    cr_assert_eq(mp_barrier_n_waiting(b), 0);
    mp_barrier_free(b);

    cr_assert_eq(mp_barrier_new(&b, 1), 0);
    mp_expect_rc(mp_barrier_wait(b, 0), 0); /* one party: passes at once */
    mp_expect_rc(mp_barrier_wait(b, NAN), -EINVAL);
    mp_barrier_free(b);
    mp_expect_rc(mp_barrier_new(&b, 0), -EINVAL);
    mp_expect_rc(mp_barrier_new(NULL, 2), -EINVAL);
    mp_expect_rc(mp_barrier_wait(NULL, 0), -EINVAL);
    mp_expect_rc(mp_barrier_abort(NULL), -EINVAL);
    mp_expect_rc(mp_barrier_reset(NULL), -EINVAL);
    cr_assert(!mp_barrier_broken(NULL));
    cr_assert_eq(mp_barrier_parties(NULL), 0);
}

/* Barrier(parties, action): the action runs once a round, in the caller
 * that trips the barrier, before any waiter of the round is released. */
typedef struct {
    mp_barrier *b;
    int released;         /* waiters back from wait, all rounds */
    int actions;          /* runs of the action */
    int seen_released[4]; /* per round: `released` as the action saw it */
    pid_t action_tid[4];  /* per round: the thread that ran it */
} action_job;

static pid_t my_tid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

static int count_action(void *arg)
{
    action_job *j = arg;
    int r = __atomic_fetch_add(&j->actions, 1, __ATOMIC_SEQ_CST);
    if (r < 4) {
        j->seen_released[r] = __atomic_load_n(&j->released, __ATOMIC_SEQ_CST);
        j->action_tid[r] = my_tid();
    }
    return 0;
}

static int action_rounds(void *arg)
{
    action_job *j = arg;
    for (int r = 0; r < 4; r++) {
        int idx = mp_barrier_wait(j->b, MP_TMO(10));
        if (idx < 0)
            return 1;
        if (idx == 4 && j->action_tid[r] != my_tid())
            return 2; /* the last arrival did not run it */
        __atomic_add_fetch(&j->released, 1, __ATOMIC_SEQ_CST);
    }
    return 0;
}

Test(barrier, the_action_runs_in_the_last_arrival_before_the_release, .timeout = MP_TMO(20))
{
    action_job *j = mp_shared_alloc(sizeof *j);
    cr_assert_eq(mp_barrier_new_ex(&j->b, 5, count_action, j, MP_FOREVER), 0);
    mp_process *p[4];
    for (int i = 0; i < 4; i++)
        p[i] = spawn(action_rounds, j);
    cr_assert_eq(action_rounds(j), 0);
    for (int i = 0; i < 4; i++)
        join_ok(p[i], 0);
    cr_assert_eq(j->actions, 4, "once a round");
    for (int r = 0; r < 4; r++)
        cr_assert_eq(j->seen_released[r], 5 * r, "round %d: no one released yet", r);
    cr_assert(!mp_barrier_broken(j->b));
    mp_barrier_free(j->b);
    mp_shared_free(j);
}

/* An action that returns ctl->rc, and calls its own barrier if asked. */
typedef struct {
    mp_barrier *self; /* call it from inside the action */
    int rc;
    int calls;
    int wait_rc, abort_rc, reset_rc;
    bool broken;
    unsigned waiting;
} action_ctl;

static int ctl_action(void *arg)
{
    action_ctl *a = arg;
    a->calls++;
    if (a->self != NULL) {
        a->wait_rc = mp_barrier_wait(a->self, 0);
        a->abort_rc = mp_barrier_abort(a->self);
        a->reset_rc = mp_barrier_reset(a->self);
        a->broken = mp_barrier_broken(a->self);
        a->waiting = mp_barrier_n_waiting(a->self);
    }
    return a->rc;
}

Test(barrier, a_failing_action_breaks_the_barrier_for_all, .timeout = MP_TMO(20))
{
    action_ctl *a = mp_shared_alloc(sizeof *a);
    a->rc = -1;
    mp_barrier *b;
    cr_assert_eq(mp_barrier_new_ex(&b, 3, ctl_action, a, MP_FOREVER), 0);
    mp_process *p[2] = {spawn(barrier_once, b), spawn(barrier_once, b)};
    mp_expect_rc(mp_barrier_wait(b, MP_TMO(10)), MP_EBROKEN); /* the tripper too */
    join_ok(p[0], 0); /* both got MP_EBROKEN */
    join_ok(p[1], 0);
    cr_assert_eq(a->calls, 1);
    cr_assert(mp_barrier_broken(b));
    mp_expect_rc(mp_barrier_wait(b, 0), MP_EBROKEN);
    cr_assert_eq(a->calls, 1, "a broken barrier runs no action");
    mp_barrier_free(b);

    /* One party: each wait trips it; calls from the action are refused. */
    cr_assert_eq(mp_barrier_new_ex(&b, 1, ctl_action, a, MP_FOREVER), 0);
    a->calls = 0;
    mp_expect_rc(mp_barrier_wait(b, 0), MP_EBROKEN);
    mp_expect_rc(mp_barrier_reset(b), 0);
    a->rc = 0;
    a->self = b;
    mp_expect_rc(mp_barrier_wait(b, 0), 0);
    cr_assert_eq(a->calls, 2);
    mp_expect_rc(a->wait_rc, -EDEADLK);
    mp_expect_rc(a->abort_rc, -EDEADLK);
    mp_expect_rc(a->reset_rc, -EDEADLK);
    cr_assert(!a->broken);
    cr_assert_eq(a->waiting, 1, "as Python: the tripper is counted");
    cr_assert(!mp_barrier_broken(b));
    mp_barrier_free(b);
    mp_shared_free(a);
}

Test(barrier, a_default_timeout_for_waits_without_one, .timeout = MP_TMO(20))
{
    mp_barrier *b;
    cr_assert_eq(mp_barrier_new_ex(&b, 2, NULL, NULL, 0.05), 0);
    double t0 = mp_test_now();
    mp_expect_rc(mp_barrier_wait(b, MP_FOREVER), MP_ETIMEDOUT);
    cr_assert_geq(mp_test_now() - t0, 0.049);
    cr_assert(mp_barrier_broken(b), "a timeout breaks it, as in Python");
    mp_expect_rc(mp_barrier_reset(b), 0);
    mp_expect_rc(mp_barrier_wait(b, INFINITY), MP_ETIMEDOUT);
    mp_barrier_free(b);

    /* An explicit timeout wins over the default. */
    cr_assert_eq(mp_barrier_new_ex(&b, 2, NULL, NULL, MP_TMO(60)), 0);
    t0 = mp_test_now();
    mp_expect_rc(mp_barrier_wait(b, 0.02), MP_ETIMEDOUT);
    cr_assert_lt(mp_test_now() - t0, MP_TMO(10));
    mp_barrier_free(b);

    cr_assert_eq(mp_barrier_new_ex(&b, 2, NULL, NULL, MP_FOREVER), 0);
    mp_expect_rc(mp_barrier_wait(b, 0.02), MP_ETIMEDOUT);
    mp_barrier_free(b);
    mp_expect_rc(mp_barrier_new_ex(&b, 2, NULL, NULL, NAN), -EINVAL);
    cr_assert_null(b);
    mp_expect_rc(mp_barrier_new_ex(&b, 0, NULL, NULL, 1), -EINVAL);
    mp_expect_rc(mp_barrier_new_ex(&b, 0x80000000u, NULL, NULL, 1), -EINVAL);
    mp_expect_rc(mp_barrier_new_ex(NULL, 2, NULL, NULL, 1), -EINVAL);
}

static int die_in_action(void *arg)
{
    (void)arg;
    raise(SIGKILL);
    return 0;
}

/* Trip the barrier (with the action above) once the parent waits in it. */
static int trip_and_die(void *arg)
{
    mp_barrier *b = arg;
    double end = mp_test_now() + MP_TMO(10);
    while (mp_barrier_n_waiting(b) < 1) {
        if (mp_test_now() > end)
            return 1;
        sched_yield();
    }
    mp_barrier_wait(b, MP_TMO(10));
    return 2; /* not reached */
}

Test(barrier, a_process_killed_in_the_action_breaks_it, .timeout = MP_TMO(20))
{
    mp_barrier *b;
    cr_assert_eq(mp_barrier_new_ex(&b, 2, die_in_action, NULL, MP_FOREVER), 0);
    mp_process *p = spawn(trip_and_die, b);
    double t0 = mp_test_now();
    mp_expect_rc(mp_barrier_wait(b, MP_FOREVER), MP_EBROKEN);
    cr_assert_lt(mp_test_now() - t0, MP_TMO(5), "no one else came, yet it ended");
    join_ok(p, -SIGKILL);
    cr_assert(mp_barrier_broken(b));
    mp_expect_rc(mp_barrier_reset(b), 0);
    cr_assert(!mp_barrier_broken(b));
    cr_assert_eq(mp_barrier_n_waiting(b), 0);
    mp_barrier_free(b);
}

/* ---- Objects are freed by their creator only ---- */

static int free_foreign(void *arg)
{
    mp_lock *l = arg;
    mp_lock_free(l); /* a no-op here */
    return mp_lock_acquire(l, 0) == 0 && mp_lock_release(l) == 0 ? 0 : 1;
}

Test(lock, free_by_another_process_is_a_no_op, .timeout = MP_TMO(10))
{
    mp_lock *l;
    cr_assert_eq(mp_lock_new(&l), 0);
    join_ok(spawn(free_foreign, l), 0);
    mp_expect_rc(mp_lock_acquire(l, 0), 0);
    mp_expect_rc(mp_lock_release(l), 0);
    mp_lock_free(l);
}
