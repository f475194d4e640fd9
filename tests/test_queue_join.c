/* Joins that report the dead: a consumer killed while it holds messages
 * (taken, not task_done'd) makes them count as done, and mp_queue_join
 * returns MP_EOWNERDEAD once for its death; one killed holding nothing
 * changes nothing.  On every queue order, with a join waiting at the time
 * of the death and with the next join after it; consumers killed at random
 * under load never leave a join hanging. */
// labels: unit
#include <mproc.h>
#include <pthread.h>
#include <stdlib.h>

#include "mp_test.h"

static const mp_queue_order orders[] = {MP_FIFO, MP_LIFO, MP_PRIORITY};

typedef struct {
    mp_queue *q, *ready, *idle; /* idle: fed by no one */
    int hold;     /* messages to take and keep */
    int finish;   /* messages to take and task_done first */
} holder_arg;

/* Take `finish` messages and mark them done, take `hold` more and keep
 * them, say so, then wait in a get on another queue until killed. */
static int hold_and_wait(void *arg)
{
    holder_arg *a = arg;
    int v;
    size_t len;
    for (int i = 0; i < a->finish + a->hold; i++) {
        if (mp_queue_get(a->q, &v, sizeof v, &len, MP_TMO(10)) != 0)
            return 1;
        if (i < a->finish && mp_queue_task_done(a->q) != 0)
            return 2;
    }
    if (mp_queue_put(a->ready, &v, sizeof v, MP_FOREVER) != 0)
        return 3;
    mp_queue_get(a->idle, &v, sizeof v, &len, MP_FOREVER); /* killed in here */
    return 4;
}

/* Put n messages, start a consumer that holds `hold` after finishing
 * `finish`, and wait until it has them.  The parent task_done's the rest
 * itself. */
static mp_process *start_holder(mp_queue *q, mp_queue *ready, holder_arg *a, int n)
{
    for (int i = 0; i < n; i++)
        mp_expect_rc(mp_queue_put_prio(q, i, &i, sizeof i, 0), 0);
    mp_process *p;
    cr_assert_eq(mp_process_new(&p, hold_and_wait, a, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    int v;
    size_t len;
    mp_expect_rc(mp_queue_get(ready, &v, sizeof v, &len, MP_TMO(10)), 0);
    return p;
}

static void finish_rest(mp_queue *q, int left)
{
    int v;
    size_t len;
    for (int i = 0; i < left; i++) {
        mp_expect_rc(mp_queue_get(q, &v, sizeof v, &len, 0), 0);
        mp_expect_rc(mp_queue_task_done(q), 0);
    }
    mp_expect_rc(mp_queue_get(q, &v, sizeof v, &len, 0), MP_EEMPTY);
}

/* The next join after the death (the child not reaped yet: a zombie). */
static void death_then_join(mp_queue_order order, int hold, int finish)
{
    mp_queue *q, *ready;
    mp_expect_rc(mp_queue_new(&q, &(mp_queue_opts){.order = order}), 0);
    mp_expect_rc(mp_queue_new(&ready, NULL), 0);
    mp_queue *idle;
    mp_expect_rc(mp_queue_new(&idle, NULL), 0);
    holder_arg a = {q, ready, idle, hold, finish};
    enum { N = 6 };
    mp_process *p = start_holder(q, ready, &a, N);
    finish_rest(q, N - hold - finish);
    mp_expect_rc(mp_queue_join(q, 0.05), hold > 0 ? MP_ETIMEDOUT : 0);
    mp_expect_rc(mp_process_kill(p), 0);
    double t0 = mp_test_now();
    mp_expect_rc(mp_queue_join(q, MP_TMO(10)), hold > 0 ? MP_EOWNERDEAD : 0);
    cr_assert_lt(mp_test_now() - t0, MP_TMO(1.5), "join took %.3f s", mp_test_now() - t0);
    mp_expect_rc(mp_queue_join(q, 0), 0); /* once per death */
    mp_expect_rc(mp_process_join(p, MP_TMO(10)), 0);
    /* Later messages are joined as before. */
    int v = 7;
    size_t len;
    mp_expect_rc(mp_queue_put(q, &v, sizeof v, 0), 0);
    mp_expect_rc(mp_queue_join(q, 0.02), MP_ETIMEDOUT);
    mp_expect_rc(mp_queue_get(q, &v, sizeof v, &len, 0), 0);
    mp_expect_rc(mp_queue_task_done(q), 0);
    mp_expect_rc(mp_queue_join(q, 0), 0);
    mp_expect_rc(mp_queue_task_done(q), -EOVERFLOW); /* nothing counted twice */
    mp_process_free(p);
    mp_queue_free(ready);
    mp_queue_free(idle);
    mp_queue_free(q);
}

Test(queue_join, consumer_killed_holding_one_three_none, .timeout = MP_TMO(60))
{
    for (size_t i = 0; i < sizeof orders / sizeof *orders; i++) {
        death_then_join(orders[i], 1, 0);
        death_then_join(orders[i], 3, 1);
        death_then_join(orders[i], 0, 2);
    }
}

typedef struct {
    mp_queue *q;
    int rc;
    double at;
} joiner;

static void *join_thread(void *arg)
{
    joiner *j = arg;
    j->rc = mp_queue_join(j->q, MP_TMO(20));
    j->at = mp_test_now();
    return NULL;
}

/* A join waiting when the death comes returns at once (within a second). */
Test(queue_join, waiting_join_learns_of_death, .timeout = MP_TMO(60))
{
    for (size_t i = 0; i < sizeof orders / sizeof *orders; i++) {
        mp_queue *q, *ready;
        mp_expect_rc(mp_queue_new(&q, &(mp_queue_opts){.order = orders[i]}), 0);
        mp_expect_rc(mp_queue_new(&ready, NULL), 0);
        mp_queue *idle;
        mp_expect_rc(mp_queue_new(&idle, NULL), 0);
        holder_arg a = {q, ready, idle, 2, 0};
        mp_process *p = start_holder(q, ready, &a, 4);
        finish_rest(q, 2);
        joiner j = {q, 1, 0};
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, join_thread, &j), 0);
        /* The joiner is waiting: the queue is not joined while p holds 2. */
        mp_expect_rc(mp_queue_join(q, 0.2), MP_ETIMEDOUT);
        double killed = mp_test_now();
        mp_expect_rc(mp_process_kill(p), 0);
        mp_expect_rc(mp_process_join(p, MP_TMO(10)), 0); /* reaped this time */
        pthread_join(t, NULL);
        /* One of the two joins was told: the thread's, the only one waiting. */
        mp_expect_rc(j.rc, MP_EOWNERDEAD);
        cr_assert_lt(j.at - killed, MP_TMO(1.0), "told after %.3f s", j.at - killed);
        mp_expect_rc(mp_queue_join(q, 0), 0);
        mp_process_free(p);
        mp_queue_free(ready);
        mp_queue_free(idle);
        mp_queue_free(q);
    }
}

/* Two consumers die holding messages: two joins are told, one each. */
Test(queue_join, each_death_told_once, .timeout = MP_TMO(60))
{
    mp_queue *q, *ready;
    mp_expect_rc(mp_queue_new(&q, NULL), 0);
    mp_expect_rc(mp_queue_new(&ready, NULL), 0);
    mp_queue *idle;
    mp_expect_rc(mp_queue_new(&idle, NULL), 0);
    holder_arg a = {q, ready, idle, 1, 0};
    mp_process *p1 = start_holder(q, ready, &a, 1);
    mp_process *p2 = start_holder(q, ready, &a, 1);
    mp_expect_rc(mp_process_kill(p1), 0);
    mp_expect_rc(mp_process_kill(p2), 0);
    mp_expect_rc(mp_process_join(p1, MP_TMO(10)), 0);
    mp_expect_rc(mp_process_join(p2, MP_TMO(10)), 0);
    mp_expect_rc(mp_queue_join(q, MP_TMO(5)), MP_EOWNERDEAD);
    mp_expect_rc(mp_queue_join(q, MP_TMO(5)), MP_EOWNERDEAD);
    mp_expect_rc(mp_queue_join(q, MP_TMO(5)), 0);
    mp_process_free(p1);
    mp_process_free(p2);
    mp_queue_free(ready);
    mp_queue_free(idle);
    mp_queue_free(q);
}

/* Threads of one process share its record: messages taken by one thread
 * and task_done'd by another leave nothing held, so the process's death
 * after that is no one's concern. */
static void *get_one(void *arg)
{
    int v;
    size_t len;
    return (void *)(intptr_t)mp_queue_get(arg, &v, sizeof v, &len, MP_TMO(10));
}

static int take_in_thread_done_in_main(void *arg)
{
    holder_arg *a = arg;
    pthread_t t;
    void *rc;
    if (pthread_create(&t, NULL, get_one, a->q) != 0 || pthread_join(t, &rc) != 0 || rc != 0)
        return 1;
    if (mp_queue_task_done(a->q) != 0)
        return 2;
    int v = 0;
    if (mp_queue_put(a->ready, &v, sizeof v, MP_FOREVER) != 0)
        return 3;
    size_t len;
    mp_queue_get(a->idle, &v, sizeof v, &len, MP_FOREVER); /* killed in here */
    return 4;
}

Test(queue_join, threads_of_a_consumer_share_its_count, .timeout = MP_TMO(30))
{
    mp_queue *q, *ready;
    mp_expect_rc(mp_queue_new(&q, NULL), 0);
    mp_expect_rc(mp_queue_new(&ready, NULL), 0);
    mp_queue *idle;
    mp_expect_rc(mp_queue_new(&idle, NULL), 0);
    int v = 1;
    size_t len;
    mp_expect_rc(mp_queue_put(q, &v, sizeof v, 0), 0);
    holder_arg a = {q, ready, idle, 0, 0};
    mp_process *p;
    cr_assert_eq(mp_process_new(&p, take_in_thread_done_in_main, &a, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    mp_expect_rc(mp_queue_get(ready, &v, sizeof v, &len, MP_TMO(10)), 0);
    mp_expect_rc(mp_process_kill(p), 0);
    mp_expect_rc(mp_process_join(p, MP_TMO(10)), 0);
    mp_expect_rc(mp_queue_join(q, MP_TMO(5)), 0);
    mp_process_free(p);
    mp_queue_free(ready);
    mp_queue_free(idle);
    mp_queue_free(q);
}

/* ---- under load ---- */

enum { WORKERS = 4, MESSAGES = 40000, KILLS = 40 };

static int work(void *arg)
{
    mp_queue *q = arg;
    char buf[64];
    size_t len;
    for (;;) {
        int rc = mp_queue_get(q, buf, sizeof buf, &len, MP_FOREVER);
        if (rc == MP_ECLOSED)
            return 0;
        if (rc != 0)
            return 1;
        double until = mp_test_now() + 2e-6; /* the work: kills land in it too */
        while (mp_test_now() < until)
            ;
        if (mp_queue_task_done(q) != 0)
            return 2;
    }
}

static int produce(void *arg)
{
    mp_queue *q = arg;
    char buf[64] = {0};
    for (int i = 0; i < MESSAGES; i++) {
        memcpy(buf, &i, sizeof i);
        if (mp_queue_put_prio(q, i % 7, buf, 16 + (size_t)(i % 40), MP_TMO(30)) != 0)
            return 1;
    }
    return 0;
}

static void random_kills(mp_queue_order order, unsigned seed)
{
    srand(seed);
    mp_queue *q;
    mp_expect_rc(mp_queue_new(&q, &(mp_queue_opts){.order = order, .maxsize = 256}), 0);
    mp_process *w[WORKERS], *prod;
    for (int i = 0; i < WORKERS; i++) {
        cr_assert_eq(mp_process_new(&w[i], work, q, NULL), 0);
        mp_expect_rc(mp_process_start(w[i]), 0);
    }
    cr_assert_eq(mp_process_new(&prod, produce, q, NULL), 0);
    mp_expect_rc(mp_process_start(prod), 0);
    int kills = 0;
    while (kills < KILLS && mp_process_is_alive(prod)) {
        struct timespec ts = {0, (long)(rand() % 3000) * 1000}; /* the kill's moment */
        nanosleep(&ts, NULL);
        int i = rand() % WORKERS;
        mp_expect_rc(mp_process_kill(w[i]), 0);
        mp_expect_rc(mp_process_join(w[i], MP_TMO(10)), 0);
        mp_process_free(w[i]);
        cr_assert_eq(mp_process_new(&w[i], work, q, NULL), 0);
        mp_expect_rc(mp_process_start(w[i]), 0);
        kills++;
    }
    mp_expect_rc(mp_process_join(prod, MP_TMO(60)), 0);
    int code;
    mp_expect_rc(mp_process_exitcode(prod, &code), 0);
    cr_assert_eq(code, 0);
    /* Every join ends: each tells one death, and the last one 0. */
    int told = 0, rc;
    double t0 = mp_test_now();
    while ((rc = mp_queue_join(q, MP_TMO(20))) == MP_EOWNERDEAD)
        told++;
    mp_expect_rc(rc, 0);
    cr_assert_leq(told, kills);
    cr_log_info("order %d: %d kills, %d told", (int)order, kills, told);
    cr_assert_lt(mp_test_now() - t0, MP_TMO(20));
    cr_assert_eq(mp_queue_qsize(q), 0);
    mp_expect_rc(mp_queue_close(q), 0);
    for (int i = 0; i < WORKERS; i++) {
        mp_expect_rc(mp_process_join(w[i], MP_TMO(10)), 0);
        mp_expect_rc(mp_process_exitcode(w[i], &code), 0);
        cr_assert_eq(code, 0);
        mp_process_free(w[i]);
    }
    mp_process_free(prod);
    mp_queue_free(q);
}

Test(queue_join, consumers_killed_at_random_under_load, .timeout = MP_TMO(120))
{
    for (size_t i = 0; i < sizeof orders / sizeof *orders; i++)
        for (unsigned seed = 1; seed <= 3; seed++)
            random_kills(orders[i], seed * 101 + (unsigned)i);
}
