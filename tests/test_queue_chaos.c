/* Chaos: producers and consumers SIGKILLed at random moments, many rounds.
 * Checks that no message is ever delivered twice or corrupted, that FIFO
 * keeps each producer's order, that the queue never wedges, and that no
 * more messages are lost than consumers were killed (each may take the one
 * it was holding with it), and that joins count exactly what the dead
 * consumers held. */
// labels: unit slow
#include <mproc.h>
#include <stdlib.h>

#include "mp_test.h"

enum { ROUNDS = 36, PROD = 3, CONS = 3, MAXSEQ = 20000, IDS = ROUNDS * PROD };

typedef struct {
    int id, seq, len;
    uint32_t check;
} head;

typedef struct {
    mp_queue *q;
    int round_id0;              /* first producer id of this round */
    int confirmed[IDS];         /* puts that returned 0, per producer */
    unsigned char got[IDS][MAXSEQ];
    long delivered;
    int bad;                    /* corruption, order or duplicate seen */
} chaos;

static uint32_t mix(uint32_t h, uint32_t v) { return (h ^ v) * 16777619u; }

static uint32_t sum(const unsigned char *p, size_t n, uint32_t seed)
{
    uint32_t h = seed;
    for (size_t i = 0; i < n; i++)
        h = mix(h, p[i]);
    return h;
}

typedef struct {
    chaos *c;
    int id;
} prod_arg;

static int produce(void *arg)
{
    prod_arg *a = arg;
    chaos *c = a->c;
    unsigned char buf[700];
    srand((unsigned)a->id * 7919u + 1);
    for (int s = 0; s < MAXSEQ; s++) {
        int len = 16 + rand() % 600;
        head *h = (head *)buf;
        h->id = a->id;
        h->seq = s;
        h->len = len;
        for (int i = (int)sizeof *h; i < len; i++)
            buf[i] = (unsigned char)(s * 13 + i);
        h->check = sum(buf + sizeof *h, (size_t)len - sizeof *h, (uint32_t)(a->id * 31 + s));
        if (mp_queue_put(c->q, buf, (size_t)len, MP_TMO(20)) != 0)
            return 1;
        __atomic_store_n(&c->confirmed[a->id], s + 1, __ATOMIC_RELEASE);
    }
    return 0;
}

/* Check and record one message; false if it is bad. */
static bool record(chaos *c, const unsigned char *buf, size_t len, int *last, bool fifo)
{
    const head *h = (const head *)buf;
    if (len < sizeof *h || (size_t)h->len != len || h->id < 0 || h->id >= IDS ||
        h->seq < 0 || h->seq >= MAXSEQ ||
        h->check != sum(buf + sizeof *h, len - sizeof *h, (uint32_t)(h->id * 31 + h->seq)))
        return false;
    if (fifo && last != NULL) {
        if (h->seq <= last[h->id])
            return false;
        last[h->id] = h->seq;
    }
    if (__atomic_add_fetch(&c->got[h->id][h->seq], 1, __ATOMIC_RELAXED) > 1)
        return false; /* duplicate */
    __atomic_add_fetch(&c->delivered, 1, __ATOMIC_RELAXED);
    return true;
}

static int consume(void *arg)
{
    chaos *c = arg;
    static int last[IDS];
    memset(last, -1, sizeof last);
    unsigned char buf[700];
    for (;;) {
        size_t len;
        int rc = mp_queue_get(c->q, buf, sizeof buf, &len, MP_TMO(20));
        if (rc != 0)
            return 1;
        bool fifo = (c->round_id0 / PROD) % 3 == 0; /* the rounds' order rotates */
        if (!record(c, buf, len, last, fifo)) {
            __atomic_store_n(&c->bad, 1, __ATOMIC_RELAXED);
            return 2;
        }
    }
}

static void wait_delivered(chaos *c, long target)
{
    double end = mp_test_now() + MP_TMO(20);
    while (__atomic_load_n(&c->delivered, __ATOMIC_RELAXED) < target)
        cr_assert_lt(mp_test_now(), end, "the queue makes progress (delivered %ld, want %ld)",
                     c->delivered, target);
}

Test(queue_chaos, kill_producers_and_consumers_at_random, .timeout = MP_TMO(120))
{
    chaos *c = mp_shared_alloc(sizeof *c);
    cr_assert_not_null(c);
    srand(20261124);
    mp_queue_order orders[] = {MP_FIFO, MP_LIFO, MP_PRIORITY};
    int total_lost = 0, total_killed = 0;
    for (int r = 0; r < ROUNDS; r++) {
        mp_queue_opts o = {.order = orders[r % 3], .maxsize = r % 2 ? 50 : 0, .max_msg = 1024};
        cr_assert_eq(mp_queue_new(&c->q, &o), 0);
        c->round_id0 = r * PROD;
        mp_process *prod[PROD], *cons[CONS];
        prod_arg pa[PROD];
        for (int i = 0; i < CONS; i++) {
            cr_assert_eq(mp_process_new(&cons[i], consume, c, NULL), 0);
            mp_expect_rc(mp_process_start(cons[i]), 0);
        }
        for (int i = 0; i < PROD; i++) {
            pa[i] = (prod_arg){.c = c, .id = r * PROD + i};
            cr_assert_eq(mp_process_new(&prod[i], produce, &pa[i], NULL), 0);
            mp_expect_rc(mp_process_start(prod[i]), 0);
        }
        /* Kill one producer and one consumer at random moments, let the
         * others go on, then kill everyone mid-flight. */
        long base = c->delivered;
        wait_delivered(c, base + 50 + rand() % 1500);
        mp_process_kill(prod[rand() % PROD]);
        int victim = rand() % CONS;
        mp_process_kill(cons[victim]);
        base = c->delivered;
        wait_delivered(c, base + 50 + rand() % 1500);
        for (int i = 0; i < PROD; i++)
            mp_process_kill(prod[i]);
        for (int i = 0; i < CONS; i++)
            mp_process_kill(cons[i]);
        for (int i = 0; i < PROD; i++) {
            mp_expect_rc(mp_process_join(prod[i], MP_TMO(10)), 0);
            mp_process_free(prod[i]);
        }
        for (int i = 0; i < CONS; i++) {
            mp_expect_rc(mp_process_join(cons[i], MP_TMO(10)), 0);
            int code;
            mp_expect_rc(mp_process_exitcode(cons[i], &code), 0);
            cr_assert_eq(code, -SIGKILL, "consumer %d ended by itself (%d): bad data", i, code);
            mp_process_free(cons[i]);
        }
        total_killed += CONS;
        cr_assert_eq(c->bad, 0, "round %d: a consumer saw a bad, reordered or duplicate message", r);

        /* Drain what is left; the queue must still work. */
        unsigned char buf[700];
        size_t len;
        int rc, drained = 0;
        while ((rc = mp_queue_get(c->q, buf, sizeof buf, &len, 0)) == 0) {
            cr_assert(record(c, buf, len, NULL, false), "round %d: bad message in the drain", r);
            drained++;
        }
        mp_expect_rc(rc, MP_EEMPTY);
        int probe = 42;
        mp_expect_rc(mp_queue_put(c->q, &probe, sizeof probe, 0), 0);
        mp_expect_rc(mp_queue_get(c->q, buf, sizeof buf, &len, 0), 0);
        cr_assert_eq(len, sizeof probe);

        /* The consumers never task_done'd: what each took, the message it
         * was taking when killed too, counts as done at its death, exactly
         * (join returns MP_EOWNERDEAD once per dead consumer, then waits
         * for the drained messages and the probe, which this process
         * holds, and returns 0 when they are done). */
        int told = 0;
        while ((rc = mp_queue_join(c->q, 0.1)) == MP_EOWNERDEAD)
            told++;
        cr_assert_eq(rc, MP_ETIMEDOUT, "round %d: join %d (%d told): done counted past the dead's",
                     r, rc, told);
        cr_assert_leq(told, CONS);
        for (int i = 0; i < drained + 1; i++)
            mp_expect_rc(mp_queue_task_done(c->q), 0);
        mp_expect_rc(mp_queue_join(c->q, MP_TMO(5)), 0);

        /* Every confirmed message arrived once, except at most one a killed
         * consumer; nothing beyond what was attempted. */
        int lost = 0;
        for (int i = 0; i < PROD; i++) {
            int id = r * PROD + i, conf = c->confirmed[id];
            for (int s = 0; s < MAXSEQ; s++) {
                int g = c->got[id][s];
                cr_assert_leq(g, 1);
                if (s < conf && g == 0)
                    lost++;
                if (s > conf)
                    cr_assert_eq(g, 0, "round %d: producer %d seq %d never put but delivered", r,
                                 id, s);
            }
        }
        cr_assert_leq(lost, CONS, "round %d: %d messages lost with %d consumers killed", r, lost,
                      CONS);
        total_lost += lost;
        mp_queue_free(c->q);
    }
    cr_log_info("%d rounds, %ld messages delivered, %d lost with %d consumers killed", ROUNDS,
                c->delivered, total_lost, total_killed);
    mp_shared_free(c);
}
