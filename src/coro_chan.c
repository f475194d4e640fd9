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

int mp_chan_send(mp_chan *ch, const void *elem, double timeout)
{
    int64_t deadline;
    if (ch == NULL || elem == NULL || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    sched *s = ch->s;
    if (s != mp__co_tls)
        return -EPERM;
    if (ch->closed)
        return MP_ECLOSED;
    mp_co *r = mp__co_wq_pop(&ch->receivers);
    if (r) {
        memcpy(r->xfer, elem, ch->esz);
        r->xfer_rc = 0;
        mp__co_wake(s, r, 0);
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
    if (deadline != MP__NO_DEADLINE && mp__now_ns() >= deadline)
        return MP_ETIMEDOUT;
    mp_co *self = s->current;
    self->xfer = (void *)elem;
    self->xfer_rc = MP_ETIMEDOUT;
    mp__co_wq_add(&ch->senders, self);
    int rc = mp__co_park(s, deadline);
    return rc < 0 ? rc : self->xfer_rc;
}

int mp_chan_recv(mp_chan *ch, void *elem, double timeout)
{
    int64_t deadline;
    if (ch == NULL || elem == NULL || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    sched *s = ch->s;
    if (s != mp__co_tls)
        return -EPERM;
    if (ch->count > 0) {
        memcpy(elem, ch->buf + ch->head * ch->esz, ch->esz);
        ch->head = (ch->head + 1) % ch->cap;
        ch->count--;
        mp_co *sd = mp__co_wq_pop(&ch->senders); /* room now: take a waiting sender's */
        if (sd) {
            memcpy(ch->buf + ((ch->head + ch->count) % ch->cap) * ch->esz, sd->xfer, ch->esz);
            ch->count++;
            sd->xfer_rc = 0;
            mp__co_wake(s, sd, 0);
        }
        return 0;
    }
    mp_co *sd = mp__co_wq_pop(&ch->senders);
    if (sd) { /* rendezvous */
        memcpy(elem, sd->xfer, ch->esz);
        sd->xfer_rc = 0;
        mp__co_wake(s, sd, 0);
        return 0;
    }
    if (ch->closed)
        return MP_ECLOSED;
    if (deadline != MP__NO_DEADLINE && mp__now_ns() >= deadline)
        return MP_ETIMEDOUT;
    mp_co *self = s->current;
    self->xfer = elem;
    self->xfer_rc = MP_ETIMEDOUT;
    mp__co_wq_add(&ch->receivers, self);
    int rc = mp__co_park(s, deadline);
    return rc < 0 ? rc : self->xfer_rc;
}

int mp_chan_close(mp_chan *ch)
{
    if (ch == NULL)
        return -EINVAL;
    if (ch->s != mp__co_tls)
        return -EPERM;
    ch->closed = true;
    mp_co *co;
    while ((co = mp__co_wq_pop(&ch->senders)) != NULL) {
        co->xfer_rc = MP_ECLOSED;
        mp__co_wake(ch->s, co, 0);
    }
    while ((co = mp__co_wq_pop(&ch->receivers)) != NULL) {
        co->xfer_rc = MP_ECLOSED;
        mp__co_wake(ch->s, co, 0);
    }
    return 0;
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
