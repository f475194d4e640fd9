/* Channels between the coroutines of one thread: a ring of capacity
 * elements (0: every send meets its receive; MP_CHAN_UNBOUNDED: a ring
 * that doubles when full, so a send never waits), with the senders and
 * receivers that wait on it in FIFO lists. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "coro_int.h"
#include "mproc/error.h"
#include "os/os.h"

/* ---- channels ---- */

struct mp_chan {
    sched *s;
    size_t esz, cap;
    char *buf;
    size_t head, count;
    bool unbounded;  /* cap is the ring's present size, doubled as needed */
    bool closed;
    waitq senders, receivers;
};

enum { UNBOUNDED_FIRST = 16 };

/* An unbounded channel's ring is full: double it, its elements in order
 * from the start.  0 or -ENOMEM. */
static int grow(mp_chan *ch)
{
    if (ch->cap > SIZE_MAX / 2 / ch->esz)
        return -ENOMEM;
    char *nb = malloc(2 * ch->cap * ch->esz);
    if (nb == NULL)
        return -ENOMEM;
    size_t first = ch->cap - ch->head; /* elements from head to the end */
    memcpy(nb, ch->buf + ch->head * ch->esz, first * ch->esz);
    memcpy(nb + first * ch->esz, ch->buf, ch->head * ch->esz);
    free(ch->buf);
    ch->buf = nb;
    ch->head = 0;
    ch->cap *= 2;
    return 0;
}

int mp_chan_new(mp_chan **out, size_t elem_size, size_t capacity)
{
    bool unbounded = capacity == MP_CHAN_UNBOUNDED;
    if (unbounded)
        capacity = UNBOUNDED_FIRST;
    if (out == NULL || elem_size == 0 || (capacity && elem_size > SIZE_MAX / capacity))
        return -EINVAL;
    *out = NULL;
    sched *s = mp__co_sched();
    if (s == NULL)
        return -ENOMEM;
    mp_chan *ch = calloc(1, sizeof *ch);
    if (ch == NULL)
        return -ENOMEM;
    if (capacity && (ch->buf = malloc(capacity * elem_size)) == NULL) {
        free(ch);
        return -ENOMEM;
    }
    ch->s = s;
    ch->esz = elem_size;
    ch->cap = capacity;
    ch->unbounded = unbounded;
    *out = ch;
    return 0;
}

/* Send without waiting: 0, MP_ECLOSED, MP_ETIMEDOUT (it would wait), or
 * -ENOMEM (an unbounded ring could not grow). */
static int try_send(mp_chan *ch, const void *elem)
{
    if (ch->closed)
        return MP_ECLOSED;
    waiter *r = mp__co_wq_pop(&ch->receivers);
    if (r) {
        memcpy(r->xfer, elem, ch->esz);
        mp__co_fire(ch->s, r, 0);
        return 0;
    }
    if (ch->count == ch->cap && ch->unbounded) {
        int rc = grow(ch);
        if (rc < 0)
            return rc;
    }
    if (ch->count < ch->cap) {
        memcpy(ch->buf + ((ch->head + ch->count) % ch->cap) * ch->esz, elem, ch->esz);
        ch->count++;
        return 0;
    }
    return MP_ETIMEDOUT;
}

/* Receive without waiting: 0, MP_ECLOSED (closed and drained), or
 * MP_ETIMEDOUT (it would wait). */
static int try_recv(mp_chan *ch, void *elem)
{
    if (ch->count > 0) {
        memcpy(elem, ch->buf + ch->head * ch->esz, ch->esz);
        ch->head = (ch->head + 1) % ch->cap;
        ch->count--;
        waiter *sd = mp__co_wq_pop(&ch->senders); /* room now: take a waiting sender's */
        if (sd) {
            memcpy(ch->buf + ((ch->head + ch->count) % ch->cap) * ch->esz, sd->xfer, ch->esz);
            ch->count++;
            mp__co_fire(ch->s, sd, 0);
        }
        return 0;
    }
    waiter *sd = mp__co_wq_pop(&ch->senders);
    if (sd) { /* rendezvous */
        memcpy(elem, sd->xfer, ch->esz);
        mp__co_fire(ch->s, sd, 0);
        return 0;
    }
    return ch->closed ? MP_ECLOSED : MP_ETIMEDOUT;
}

/* Wait for one channel operation (its try found nothing). */
static int wait_one(sched *s, waitq *q, void *elem, int64_t deadline)
{
    if (deadline != MP__NO_DEADLINE && mp__now_ns() >= deadline)
        return MP_ETIMEDOUT;
    mp_co *self = s->current;
    self->w.xfer = elem;
    self->w.rc = MP_ETIMEDOUT;
    mp__co_wait_on(self, q);
    int rc = mp__co_park(s, deadline);
    return self->fired ? self->w.rc : rc < 0 ? rc : MP_ETIMEDOUT;
}

int mp_chan_send(mp_chan *ch, const void *elem, double timeout)
{
    int64_t deadline;
    if (ch == NULL || elem == NULL || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    if (ch->s != mp__co_tls)
        return -EPERM;
    int rc = try_send(ch, elem);
    return rc != MP_ETIMEDOUT ? rc : wait_one(ch->s, &ch->senders, (void *)elem, deadline);
}

int mp_chan_recv(mp_chan *ch, void *elem, double timeout)
{
    int64_t deadline;
    if (ch == NULL || elem == NULL || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    if (ch->s != mp__co_tls)
        return -EPERM;
    int rc = try_recv(ch, elem);
    return rc != MP_ETIMEDOUT ? rc : wait_one(ch->s, &ch->receivers, elem, deadline);
}

int mp_chan_close(mp_chan *ch)
{
    if (ch == NULL)
        return -EINVAL;
    if (ch->s != mp__co_tls)
        return -EPERM;
    ch->closed = true;
    waiter *w;
    while ((w = mp__co_wq_pop(&ch->senders)) != NULL)
        mp__co_fire(ch->s, w, MP_ECLOSED);
    while ((w = mp__co_wq_pop(&ch->receivers)) != NULL)
        mp__co_fire(ch->s, w, MP_ECLOSED);
    return 0;
}

/* ---- select ---- */

/* Could op go on without waiting (including: fail on a closed channel)? */
static bool op_ready(const mp_chan_op *op)
{
    const mp_chan *ch = op->ch;
    if (ch->closed)
        return true; /* a send fails, a receive drains or fails */
    if (op->op == MP_CHAN_RECV)
        return ch->count > 0 || ch->senders.head != NULL;
    return ch->receivers.head != NULL || ch->count < ch->cap || ch->unbounded;
}

/* A cheap random number (the choice among ready operations, as Go's
 * select, so that none of them starves). */
static unsigned pick(sched *s, unsigned n)
{
    uint64_t x = s->rand ? s->rand : 0x9e3779b97f4a7c15ULL;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s->rand = x;
    return (unsigned)((x >> 32) % n);
}

int mp_chan_select(mp_chan_op *ops, size_t n, double timeout)
{
    int64_t deadline;
    if (ops == NULL || n == 0 || n > MP_CHAN_SELECT_MAX || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    sched *s = mp__co_tls;
    for (size_t i = 0; i < n; i++) {
        if (ops[i].ch == NULL || ops[i].elem == NULL ||
            (ops[i].op != MP_CHAN_SEND && ops[i].op != MP_CHAN_RECV))
            return -EINVAL;
        if (ops[i].ch->s != s)
            return -EPERM;
    }
    for (;;) {
        unsigned ready[MP_CHAN_SELECT_MAX], nready = 0;
        for (size_t i = 0; i < n; i++)
            if (op_ready(&ops[i]))
                ready[nready++] = (unsigned)i;
        if (nready > 0) {
            unsigned i = ready[nready > 1 ? pick(s, nready) : 0];
            mp_chan_op *op = &ops[i];
            int rc = op->op == MP_CHAN_SEND ? try_send(op->ch, op->elem)
                                            : try_recv(op->ch, op->elem);
            if (rc < 0 && rc != MP_ECLOSED)
                return rc; /* -ENOMEM */
            op->rc = rc;
            return (int)i;
        }
        if (deadline != MP__NO_DEADLINE && mp__now_ns() >= deadline)
            return MP_ETIMEDOUT;
        /* Wait on all of them; the first to fire ends the others. */
        mp_co *self = s->current;
        waiter w[MP_CHAN_SELECT_MAX];
        for (size_t i = 0; i < n; i++) {
            w[i] = (waiter){.co = self, .xfer = ops[i].elem, .rc = MP_ETIMEDOUT,
                            .idx = (unsigned)i};
            mp__co_wq_add(ops[i].op == MP_CHAN_SEND ? &ops[i].ch->senders
                                                    : &ops[i].ch->receivers, &w[i]);
        }
        self->waits = w;
        self->nwaits = (unsigned)n;
        self->fired = NULL;
        int rc = mp__co_park(s, deadline);
        mp__co_unwait(self); /* (the wake took them off already) */
        waiter *f = self->fired;
        self->fired = NULL;
        if (f) {
            ops[f->idx].rc = f->rc;
            return (int)f->idx;
        }
        if (rc < 0 && rc != MP_ETIMEDOUT)
            return rc;
        /* timed out, or woken for nothing: look again (the deadline ends it) */
    }
}

size_t mp_chan_len(const mp_chan *ch)
{
    return ch ? ch->count : 0;
}

void mp_chan_free(mp_chan *ch)
{
    if (ch == NULL || ch->senders.head || ch->receivers.head)
        return;
    free(ch->buf);
    free(ch);
}
