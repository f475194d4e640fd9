/* Queues: order, bounds, timeouts, sizes, task_done/join, close and
 * shutdown, growth, many producers and consumers (threads and processes),
 * bad input. */
// labels: unit tsan
#include <math.h>
#include <mproc.h>
#include <pthread.h>
#include <stdlib.h>

#include "mp_test.h"

static mp_queue *make(mp_queue_order order, size_t maxsize, size_t max_msg)
{
    mp_queue *q;
    mp_queue_opts o = {.order = order, .maxsize = maxsize, .max_msg = max_msg};
    mp_expect_rc(mp_queue_new(&q, &o), 0);
    return q;
}

static void put_int(mp_queue *q, int v)
{
    mp_expect_rc(mp_queue_put(q, &v, sizeof v, 0), 0);
}

static int get_int(mp_queue *q)
{
    int v;
    size_t len;
    mp_expect_rc(mp_queue_get(q, &v, sizeof v, &len, 0), 0);
    cr_assert_eq(len, sizeof v);
    return v;
}

static mp_process *spawn(mp_target fn, void *arg)
{
    mp_process *p;
    cr_assert_eq(mp_process_new(&p, fn, arg, NULL), 0);
    mp_expect_rc(mp_process_start(p), 0);
    return p;
}

static void join_ok(mp_process *p)
{
    mp_expect_rc(mp_process_join(p, MP_TMO(30)), 0);
    int code;
    mp_expect_rc(mp_process_exitcode(p, &code), 0);
    cr_assert_eq(code, 0, "child exit code %d", code);
    mp_process_free(p);
}

Test(queue, fifo_lifo_and_priority_order, .timeout = MP_TMO(10))
{
    mp_queue *f = make(MP_FIFO, 0, 0), *l = make(MP_LIFO, 0, 0), *p = make(MP_PRIORITY, 0, 0);
    for (int i = 0; i < 5; i++) {
        put_int(f, i);
        put_int(l, i);
    }
    int prios[] = {3, 1, 2, 1, 0, 3};
    for (int i = 0; i < 6; i++)
        mp_expect_rc(mp_queue_put_prio(p, prios[i], &i, sizeof i, 0), 0);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(get_int(f), i);
        cr_assert_eq(get_int(l), 4 - i);
    }
    int want[] = {4, 1, 3, 2, 0, 5}; /* by priority, FIFO among equals */
    for (int i = 0; i < 6; i++)
        cr_assert_eq(get_int(p), want[i], "item %d", i);
    cr_assert(mp_queue_empty(f) && mp_queue_empty(l) && mp_queue_empty(p));
    mp_queue_free(f);
    mp_queue_free(l);
    mp_queue_free(p);
}

Test(queue, growth_keeps_order, .timeout = MP_TMO(20))
{
    mp_queue_order orders[] = {MP_FIFO, MP_LIFO, MP_PRIORITY};
    enum { N = 20000 };
    for (int o = 0; o < 3; o++) {
        mp_queue *q = make(orders[o], 0, 0);
        for (int i = 0; i < N; i++) {
            if (orders[o] == MP_PRIORITY)
                mp_expect_rc(mp_queue_put_prio(q, (i * 7919) % 101, &i, sizeof i, 0), 0);
            else
                put_int(q, i);
            if (i % 3 == 2 && orders[o] == MP_FIFO) /* interleave gets with growth */
                cr_assert_eq(get_int(q), i / 3);
        }
        cr_assert_eq(mp_queue_qsize(q), orders[o] == MP_FIFO ? N - N / 3 : N);
        if (orders[o] == MP_FIFO) {
            for (int i = N / 3; i < N; i++)
                cr_assert_eq(get_int(q), i);
        } else if (orders[o] == MP_LIFO) {
            for (int i = N - 1; i >= 0; i--)
                cr_assert_eq(get_int(q), i);
        } else {
            int last_prio = -1, last_i = -1;
            for (int k = 0; k < N; k++) {
                int i = get_int(q), prio = (i * 7919) % 101;
                cr_assert(prio > last_prio || (prio == last_prio && i > last_i),
                          "out of order at %d", k);
                last_prio = prio;
                last_i = i;
            }
        }
        cr_assert(mp_queue_empty(q));
        mp_queue_free(q);
    }
}

Test(queue, bounds_timeouts_and_sizes, .timeout = MP_TMO(10))
{
    mp_queue *q = make(MP_FIFO, 2, 16);
    int v = 1;
    size_t len;
    mp_expect_rc(mp_queue_get(q, &v, sizeof v, &len, 0), MP_EEMPTY);
    double t0 = mp_test_now();
    mp_expect_rc(mp_queue_get(q, &v, sizeof v, &len, 0.05), MP_EEMPTY);
    cr_assert_geq(mp_test_now() - t0, 0.049);
    put_int(q, 1);
    cr_assert(!mp_queue_full(q));
    put_int(q, 2);
    cr_assert(mp_queue_full(q));
    cr_assert_eq(mp_queue_qsize(q), 2);
    mp_expect_rc(mp_queue_put(q, &v, sizeof v, 0), MP_EFULL);
    t0 = mp_test_now();
    mp_expect_rc(mp_queue_put(q, &v, sizeof v, 0.05), MP_EFULL);
    cr_assert_geq(mp_test_now() - t0, 0.049);
    char big[17] = {0};
    mp_expect_rc(mp_queue_put(q, big, 17, 0), MP_ETOOBIG);
    cr_assert_eq(get_int(q), 1);
    cr_assert_eq(get_int(q), 2);

    /* A buffer too small: MP_ETOOBIG with the size, and the message stays. */
    mp_expect_rc(mp_queue_put(q, "0123456789abcdef", 16, 0), 0);
    char small[4];
    len = 0;
    mp_expect_rc(mp_queue_get(q, small, sizeof small, &len, 0), MP_ETOOBIG);
    cr_assert_eq(len, 16);
    cr_assert_eq(mp_queue_qsize(q), 1);
    char buf[16];
    mp_expect_rc(mp_queue_get(q, buf, sizeof buf, &len, 0), 0);
    cr_assert_eq(len, 16);
    cr_assert_arr_eq(buf, "0123456789abcdef", 16);

    /* Empty messages, and get_alloc. */
    mp_expect_rc(mp_queue_put(q, NULL, 0, 0), 0);
    mp_expect_rc(mp_queue_put(q, "xyz", 3, 0), 0);
    mp_expect_rc(mp_queue_get(q, NULL, 0, &len, 0), 0);
    cr_assert_eq(len, 0);
    void *data;
    mp_expect_rc(mp_queue_get_alloc(q, &data, &len, 0), 0);
    cr_assert_eq(len, 3);
    cr_assert_arr_eq(data, "xyz", 3);
    free(data);
    mp_expect_rc(mp_queue_get_alloc(q, &data, &len, 0), MP_EEMPTY);
    cr_assert_null(data);
    mp_queue_free(q);
}

Test(queue, bad_input, .timeout = MP_TMO(10))
{
    mp_queue *q;
    mp_expect_rc(mp_queue_new(NULL, NULL), -EINVAL);
    mp_expect_rc(mp_queue_new(&q, &(mp_queue_opts){.order = 7}), -EINVAL);
    mp_expect_rc(mp_queue_new(&q, &(mp_queue_opts){.max_msg = ((size_t)1 << 30) + 1}), -EINVAL);
    mp_expect_rc(mp_queue_new(&q, NULL), 0);
    size_t len;
    int v;
    mp_expect_rc(mp_queue_put(NULL, &v, 4, 0), -EINVAL);
    mp_expect_rc(mp_queue_put(q, NULL, 4, 0), -EINVAL);
    mp_expect_rc(mp_queue_put(q, &v, 4, NAN), -EINVAL);
    mp_expect_rc(mp_queue_get(NULL, &v, 4, &len, 0), -EINVAL);
    mp_expect_rc(mp_queue_get(q, &v, 4, NULL, 0), -EINVAL);
    mp_expect_rc(mp_queue_get(q, NULL, 4, &len, 0), -EINVAL);
    mp_expect_rc(mp_queue_get(q, &v, 4, &len, NAN), -EINVAL);
    mp_expect_rc(mp_queue_get_alloc(q, NULL, &len, 0), -EINVAL);
    mp_expect_rc(mp_queue_task_done(NULL), -EINVAL);
    mp_expect_rc(mp_queue_task_done(q), -EOVERFLOW);
    mp_expect_rc(mp_queue_join(NULL, 0), -EINVAL);
    mp_expect_rc(mp_queue_join(q, NAN), -EINVAL);
    mp_expect_rc(mp_queue_close(NULL), -EINVAL);
    cr_assert_eq(mp_queue_qsize(NULL), 0);
    cr_assert(!mp_queue_empty(NULL));
    cr_assert(!mp_queue_full(NULL));
    mp_queue_free(NULL);
    mp_queue_free(q);
}

static int consume_and_task_done(void *arg)
{
    mp_queue *q = arg;
    for (int i = 0; i < 50; i++) {
        int v;
        size_t len;
        if (mp_queue_get(q, &v, sizeof v, &len, MP_TMO(10)) != 0 || v != i)
            return 1;
        if (mp_queue_task_done(q) != 0)
            return 2;
    }
    return 0;
}

Test(queue, task_done_and_join, .timeout = MP_TMO(20))
{
    mp_queue *q = make(MP_FIFO, 0, 0);
    mp_expect_rc(mp_queue_join(q, 0), 0); /* nothing put yet */
    for (int i = 0; i < 50; i++)
        put_int(q, i);
    mp_expect_rc(mp_queue_join(q, 0.02), MP_ETIMEDOUT);
    mp_process *p = spawn(consume_and_task_done, q);
    mp_expect_rc(mp_queue_join(q, MP_TMO(10)), 0);
    join_ok(p);
    mp_expect_rc(mp_queue_task_done(q), -EOVERFLOW);
    mp_queue_free(q);
}

static int wait_closed(void *arg)
{
    mp_queue *q = arg;
    int v;
    size_t len;
    int rc = mp_queue_get(q, &v, sizeof v, &len, MP_TMO(10));
    return rc == MP_ECLOSED ? 0 : 1;
}

Test(queue, close_drains_then_reports_closed, .timeout = MP_TMO(10))
{
    mp_queue *q = make(MP_FIFO, 0, 0);
    put_int(q, 7);
    mp_expect_rc(mp_queue_close(q), 0);
    int v = 0;
    mp_expect_rc(mp_queue_put(q, &v, sizeof v, 0), MP_ECLOSED);
    cr_assert_eq(get_int(q), 7);
    size_t len;
    mp_expect_rc(mp_queue_get(q, &v, sizeof v, &len, MP_FOREVER), MP_ECLOSED);
    mp_queue_free(q);

    q = make(MP_FIFO, 0, 0); /* a waiter in another process is woken */
    mp_process *p = spawn(wait_closed, q);
    cr_assert(!mp_test_process_gone(mp_process_pid(p), 0.05));
    mp_expect_rc(mp_queue_close(q), 0);
    join_ok(p);
    mp_queue_free(q);
}

/* ---- shutdown (Python 3.13's Queue.shutdown) ---- */

static const mp_queue_order ORDERS[] = {MP_FIFO, MP_LIFO, MP_PRIORITY};

Test(queue, shutdown_not_immediate_drains_then_closed, .timeout = MP_TMO(10))
{
    for (size_t k = 0; k < 3; k++) {
        mp_queue *q = make(ORDERS[k], 0, 0);
        for (int i = 0; i < 3; i++)
            put_int(q, i);
        mp_expect_rc(mp_queue_shutdown(q, false), 0);
        int v = 9;
        mp_expect_rc(mp_queue_put(q, &v, sizeof v, MP_FOREVER), MP_ECLOSED);
        int sum = 0;
        for (int i = 0; i < 3; i++)
            sum += get_int(q);
        cr_assert_eq(sum, 0 + 1 + 2);
        size_t len;
        mp_expect_rc(mp_queue_get(q, &v, sizeof v, &len, MP_FOREVER), MP_ECLOSED);
        for (int i = 0; i < 3; i++)
            mp_expect_rc(mp_queue_task_done(q), 0);
        mp_expect_rc(mp_queue_join(q, 0), 0);
        mp_queue_free(q);
    }
}

Test(queue, shutdown_immediate_drops_and_counts_the_dropped_as_done, .timeout = MP_TMO(10))
{
    for (size_t k = 0; k < 3; k++) {
        mp_queue *q = make(ORDERS[k], 0, 0);
        for (int i = 0; i < 5; i++)
            put_int(q, i);
        (void)get_int(q); /* taken, not task_done'd yet */
        mp_expect_rc(mp_queue_shutdown(q, true), 0);
        cr_assert_eq(mp_queue_qsize(q), 0);
        int v;
        size_t len;
        mp_expect_rc(mp_queue_get(q, &v, sizeof v, &len, MP_FOREVER), MP_ECLOSED);
        mp_expect_rc(mp_queue_put(q, &v, sizeof v, 0), MP_ECLOSED);
        /* The four dropped count as done; the one taken does not. */
        mp_expect_rc(mp_queue_join(q, 0.02), MP_ETIMEDOUT);
        mp_expect_rc(mp_queue_task_done(q), 0);
        mp_expect_rc(mp_queue_join(q, 0), 0);
        mp_expect_rc(mp_queue_task_done(q), -EOVERFLOW);
        mp_expect_rc(mp_queue_shutdown(q, true), 0); /* again: harmless */
        mp_queue_free(q);
    }
}

Test(queue, shutdown_immediate_after_plain_still_drops, .timeout = MP_TMO(10))
{
    mp_queue *q = make(MP_FIFO, 0, 0);
    put_int(q, 1);
    mp_expect_rc(mp_queue_shutdown(q, false), 0);
    mp_expect_rc(mp_queue_shutdown(q, true), 0);
    int v;
    size_t len;
    mp_expect_rc(mp_queue_get(q, &v, sizeof v, &len, 0), MP_ECLOSED);
    mp_expect_rc(mp_queue_shutdown(NULL, true), -EINVAL);
    mp_queue_free(q);
}

Test(queue, shutdown_immediate_frees_big_messages, .timeout = MP_TMO(10))
{
    enum { BIG = 100 << 10 };
    char *buf = calloc(1, BIG);
    cr_assert_not_null(buf);
    for (size_t k = 0; k < 3; k++) {
        mp_queue *q = make(ORDERS[k], 0, 0);
        mp_heap_stats before, after;
        mp_expect_rc(mp_heap_usage(&before), 0);
        for (int i = 0; i < 8; i++)
            mp_expect_rc(mp_queue_put(q, buf, BIG, 0), 0);
        mp_expect_rc(mp_queue_shutdown(q, true), 0);
        mp_expect_rc(mp_heap_usage(&after), 0);
        cr_assert_leq(after.in_use, before.in_use + BIG / 2,
                      "dropped messages must go back to the heap (%zu -> %zu)",
                      before.in_use, after.in_use);
        mp_queue_free(q);
    }
    free(buf);
}

static int get_expect_closed(void *arg)
{
    int v;
    size_t len;
    return mp_queue_get(arg, &v, sizeof v, &len, MP_FOREVER) == MP_ECLOSED ? 0 : 1;
}

static int put_expect_closed(void *arg)
{
    int v = 1;
    return mp_queue_put(arg, &v, sizeof v, MP_FOREVER) == MP_ECLOSED ? 0 : 1;
}

static int join_expect_done(void *arg)
{
    return mp_queue_join(arg, MP_FOREVER) == 0 ? 0 : 1;
}

Test(queue, shutdown_immediate_releases_joiners, .timeout = MP_TMO(20))
{
    for (size_t k = 0; k < 3; k++) {
        mp_queue *q = make(ORDERS[k], 0, 0);
        for (int i = 0; i < 3; i++)
            put_int(q, i);
        mp_process *j = spawn(join_expect_done, q);
        cr_assert(!mp_test_process_gone(mp_process_pid(j), 0.05));
        mp_expect_rc(mp_queue_shutdown(q, true), 0);
        join_ok(j);
        mp_queue_free(q);
    }
}

Test(queue, shutdown_immediate_wakes_blocked_getters_and_putters, .timeout = MP_TMO(20))
{
    for (size_t k = 0; k < 3; k++) {
        mp_queue *empty = make(ORDERS[k], 0, 0);
        mp_queue *full = make(ORDERS[k], 2, 0);
        put_int(full, 1);
        put_int(full, 2);
        mp_process *g = spawn(get_expect_closed, empty);
        mp_process *p = spawn(put_expect_closed, full);
        /* Both are blocked (they would have exited otherwise). */
        cr_assert(!mp_test_process_gone(mp_process_pid(g), 0.05));
        cr_assert(!mp_test_process_gone(mp_process_pid(p), 0.01));
        mp_expect_rc(mp_queue_shutdown(empty, true), 0);
        mp_expect_rc(mp_queue_shutdown(full, true), 0);
        join_ok(g);
        join_ok(p);
        cr_assert_eq(mp_queue_qsize(full), 0);
        mp_queue_free(empty);
        mp_queue_free(full);
    }
}

static int fill_bounded(void *arg)
{
    mp_queue *q = arg;
    for (int i = 0; i < 1000; i++)
        if (mp_queue_put(q, &i, sizeof i, MP_TMO(10)) != 0)
            return 1;
    return 0;
}

Test(queue, blocked_producer_resumes_as_consumer_takes, .timeout = MP_TMO(20))
{
    mp_queue *q = make(MP_FIFO, 3, 0);
    mp_process *p = spawn(fill_bounded, q);
    for (int i = 0; i < 1000; i++) {
        int v;
        size_t len;
        mp_expect_rc(mp_queue_get(q, &v, sizeof v, &len, MP_TMO(10)), 0);
        cr_assert_eq(v, i);
        cr_assert_leq(mp_queue_qsize(q), 3);
    }
    join_ok(p);
    mp_queue_free(q);
}

/* ---- many producers and consumers ---- */

enum { PRODUCERS = 3, PER_PRODUCER = 4000, CONSUMERS = 3 };

typedef struct {
    mp_queue *q;
    int got[PRODUCERS * 2][PER_PRODUCER]; /* [producer thread][seq] */
    long total;
} mpmc;

typedef struct {
    int producer, seq;
    uint32_t check;
    char pad[52];
} item;

static uint32_t checksum(const item *it)
{
    return (uint32_t)it->producer * 2654435761u ^ (uint32_t)it->seq * 40503u;
}

typedef struct {
    mpmc *m;
    int id;
} producer_arg;

static void *produce(void *arg)
{
    producer_arg *a = arg;
    for (int s = 0; s < PER_PRODUCER; s++) {
        item it = {.producer = a->id, .seq = s};
        it.check = checksum(&it);
        if (mp_queue_put(a->m->q, &it, sizeof it, MP_TMO(20)) != 0)
            abort();
    }
    return NULL;
}

static int producer_process(void *arg)
{
    producer_arg *a = arg;
    pthread_t t;
    producer_arg second = {.m = a->m, .id = a->id + PRODUCERS};
    pthread_create(&t, NULL, produce, &second);
    produce(a);
    pthread_join(t, NULL);
    return 0;
}

static int consumer_process(void *arg)
{
    mpmc *m = arg;
    int last[PRODUCERS * 2];
    memset(last, -1, sizeof last);
    for (;;) {
        item it;
        size_t len;
        int rc = mp_queue_get(m->q, &it, sizeof it, &len, MP_TMO(20));
        if (rc == MP_ECLOSED)
            return 0;
        if (rc != 0 || len != sizeof it || it.check != checksum(&it) ||
            it.producer < 0 || it.producer >= PRODUCERS * 2)
            return 1;
        if (it.seq <= last[it.producer])
            return 2; /* a producer's messages came out of order */
        last[it.producer] = it.seq;
        __atomic_add_fetch(&m->got[it.producer][it.seq], 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&m->total, 1, __ATOMIC_RELAXED);
    }
}

Test(queue, many_producers_and_consumers_exactly_once, .timeout = MP_TMO(60))
{
    mpmc *m = mp_shared_alloc(sizeof *m);
    m->q = make(MP_FIFO, 64, 0);
    producer_arg args[PRODUCERS];
    mp_process *prod[PRODUCERS], *cons[CONSUMERS];
    for (int i = 0; i < CONSUMERS; i++)
        cons[i] = spawn(consumer_process, m);
    for (int i = 0; i < PRODUCERS; i++) {
        args[i] = (producer_arg){.m = m, .id = i};
        prod[i] = spawn(producer_process, &args[i]);
    }
    for (int i = 0; i < PRODUCERS; i++)
        join_ok(prod[i]);
    mp_expect_rc(mp_queue_close(m->q), 0);
    for (int i = 0; i < CONSUMERS; i++)
        join_ok(cons[i]);
    cr_assert_eq(m->total, (long)PRODUCERS * 2 * PER_PRODUCER);
    for (int p = 0; p < PRODUCERS * 2; p++)
        for (int s = 0; s < PER_PRODUCER; s++)
            cr_assert_eq(m->got[p][s], 1, "producer %d seq %d delivered %d times", p, s,
                         m->got[p][s]);
    mp_queue_free(m->q);
    mp_shared_free(m);
}

static int big_producer(void *arg)
{
    mp_queue *q = arg;
    size_t n = 1 << 20;
    unsigned char *buf = malloc(n);
    for (int k = 0; k < 8; k++) {
        for (size_t i = 0; i < n; i++)
            buf[i] = (unsigned char)(i * 31 + (size_t)k);
        if (mp_queue_put(q, buf, n - (size_t)k, MP_TMO(10)) != 0)
            return 1;
    }
    free(buf);
    return 0;
}

Test(queue, one_mebibyte_messages_between_processes, .timeout = MP_TMO(30))
{
    mp_queue *q = make(MP_FIFO, 2, 0);
    mp_process *p = spawn(big_producer, q);
    for (int k = 0; k < 8; k++) {
        void *data;
        size_t len;
        mp_expect_rc(mp_queue_get_alloc(q, &data, &len, MP_TMO(10)), 0);
        cr_assert_eq(len, ((size_t)1 << 20) - (size_t)k);
        unsigned char *b = data;
        for (size_t i = 0; i < len; i++)
            if (b[i] != (unsigned char)(i * 31 + (size_t)k))
                cr_assert_fail("message %d byte %zu is wrong", k, i);
        free(data);
    }
    join_ok(p);
    mp_queue_free(q);
}

static int free_elsewhere(void *arg)
{
    mp_queue_free(arg); /* not the creator: a no-op */
    int v = 5;
    return mp_queue_put(arg, &v, sizeof v, 0) == 0 ? 0 : 1;
}

Test(queue, free_by_another_process_is_a_no_op, .timeout = MP_TMO(10))
{
    mp_queue *q = make(MP_FIFO, 0, 0);
    join_ok(spawn(free_elsewhere, q));
    cr_assert_eq(get_int(q), 5);
    mp_queue_free(q);
}

/* FIFO records of every size wrap around the ring's end and survive its
 * growth; big ones travel as separate blocks; a too-small buffer leaves a
 * message in place whatever its kind. */
Test(queue, fifo_mixed_sizes_wrap_and_grow, .timeout = MP_TMO(20))
{
    mp_queue *q = make(MP_FIFO, 0, 20000);
    static unsigned char in[20000], out[20000];
    unsigned next_put = 0, next_get = 0;
    for (int round = 0; round < 300; round++) {
        for (int k = 0; k < 1 + round % 7; k++, next_put++) {
            size_t n = (next_put * 2654435761u) % 9000;
            for (size_t i = 0; i < n; i++)
                in[i] = (unsigned char)(next_put + i);
            mp_expect_rc(mp_queue_put(q, in, n, 0), 0);
        }
        for (int k = 0; k < 1 + round % 5 && next_get < next_put; k++, next_get++) {
            size_t want = (next_get * 2654435761u) % 9000, len;
            if (want > 0) {
                mp_expect_rc(mp_queue_get(q, out, want - 1, &len, 0), MP_ETOOBIG);
                cr_assert_eq(len, want);
            }
            mp_expect_rc(mp_queue_get(q, out, sizeof out, &len, 0), 0);
            cr_assert_eq(len, want, "message %u: length", next_get);
            for (size_t i = 0; i < len; i++)
                cr_assert_eq(out[i], (unsigned char)(next_get + i), "message %u byte %zu",
                             next_get, i);
        }
        cr_assert_eq(mp_queue_qsize(q), next_put - next_get);
    }
    mp_queue_free(q); /* with messages (inline and blocks) still queued */
}

/* A FIFO's bound costs nothing up front: the largest maxsize is accepted
 * and works like any other bound. */
Test(queue, fifo_largest_bound_allocates_nothing_up_front, .timeout = MP_TMO(10))
{
    mp_queue *q = make(MP_FIFO, (size_t)1 << 31, 64);
    put_int(q, 5);
    cr_assert_eq(get_int(q), 5);
    cr_assert_not(mp_queue_full(q));
    mp_queue_free(q);
}
