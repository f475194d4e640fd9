/* The process-shared queue.
 *
 * Layout (all in the shared heap):
 *   mp_queue   control block: a robust mutex, the counters, the free-block
 *              caches, the futex words waiters sleep on;
 *   slots      the index: an array of entries {priority, sequence, message};
 *   msg        one heap block per message: a 16-byte header, then the bytes.
 * Control data and message bytes are separate blocks, so a message can
 * never overwrite the queue's bookkeeping.
 *
 * Order: `puts` and `gets` count messages ever put and taken; n = puts -
 * gets are queued.  FIFO keeps them in a ring (slot i % cap), LIFO in a
 * stack (slots 0..n-1), PRIORITY in a binary min-heap on (priority,
 * sequence), so equal priorities come out first-in first-out.
 *
 * Kill -9 at any instruction.  Every change is prepared where no one
 * looks (an unused slot, a message block not yet linked, a new index
 * array) and committed with one store: `puts` or `gets` incremented, the
 * index pointer swapped, a cache head replaced.  A process dying between
 * preparation and commit leaves at worst one leaked block.  The one
 * multi-step change is the heap's sift (PRIORITY): if its holder dies, the
 * next locker gets MP_EOWNERDEAD from the robust mutex and rebuilds the
 * heap from the entries it finds (dropping duplicates and the uncommitted
 * entry).  A consumer that dies after committing its `gets` takes that
 * message with it, as the contract allows; for join it counts as done at
 * the death (queue_holders.c keeps who holds what).
 *
 * Waiting: getters sleep on `items` (bumped by each put), putters on
 * `space` (bumped by each get of a bounded queue), joiners on `done`; the
 * sleeper counts let wakers skip the system call.  Before sleeping, a
 * waiter spins briefly if a peer may run on another CPU.  Sleeps are cut
 * into slices so that a wake-up stolen by a process killed right after
 * being woken costs at most a slice. */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "heap_int.h"
#include "mproc/queue.h"
#include "mutex_int.h"
#include "os/os.h"
#include "queue_holders.h"
#include "queue_int.h"
#include "wait_int.h"

#define MSG_HEADER 16
#define NBUCKETS 7            /* cached block sizes 64 B .. 4 KiB */
#define SMALL_MAX (((size_t)64 << (NBUCKETS - 1)) - MSG_HEADER)
#define CACHE_LIMIT 256       /* free blocks kept per bucket */
#define FIRST_CAP 64

typedef struct msg {
    struct msg *next; /* while cached */
    uint32_t len;
    uint32_t bucket;  /* NBUCKETS: not cacheable */
    /* payload follows, 16-byte aligned */
} msg;

typedef struct {
    int64_t prio;
    uint64_t seq;
    msg *m;
} entry;

typedef struct {
    uint64_t cap;
    uint64_t pad;
    entry e[];
} slots;

struct mp_queue {
    mp__fifo *fifo; /* MP_FIFO: the two-lock ring of queue_fifo.c */
    mp__mutex m;
    mp_queue_order order;
    size_t maxsize;
    size_t max_msg;
    bool closed;
    slots *_Atomic arr;
    _Atomic uint64_t puts, gets, done;
    msg *cache[NBUCKETS];
    uint32_t cached[NBUCKETS];
    _Atomic uint32_t items, space, done_word;
    _Atomic uint32_t get_sleepers, put_sleepers, join_sleepers;
    mp__holders holders; /* who took what, for join */
};

static inline char *payload(msg *m) { return (char *)m + MSG_HEADER; }

static inline uint64_t load64(_Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

/* Commit stores: release, so a reader outside the lock (qsize) that sees
 * the count also sees what it counts. */
static inline void commit64(_Atomic uint64_t *v, uint64_t x)
{
    atomic_store_explicit(v, x, memory_order_release);
}

static inline uint64_t queued(mp_queue *q) { return load64(&q->puts) - load64(&q->gets); }

static inline slots *index_of(mp_queue *q)
{
    return atomic_load_explicit(&q->arr, memory_order_relaxed);
}

/* ---- message blocks ---- */

static int bucket_of(size_t len)
{
    if (len > SMALL_MAX)
        return NBUCKETS;
    size_t total = len + MSG_HEADER;
    int b = 0;
    while (((size_t)64 << b) < total)
        b++;
    return b;
}

/* A block for len bytes: from the cache (lock held) or the heap. */
static msg *msg_get(mp_queue *q, size_t len, int *err)
{
    int b = bucket_of(len);
    if (b < NBUCKETS && q->cache[b] != NULL) {
        msg *m = q->cache[b];
        q->cache[b] = m->next; /* commit: m is ours */
        q->cached[b]--;
        m->len = (uint32_t)len;
        return m;
    }
    size_t size = b < NBUCKETS ? (size_t)64 << b : len + MSG_HEADER;
    msg *m = mp__heap_alloc(size, err);
    if (m == NULL)
        return NULL;
    m->len = (uint32_t)len;
    m->bucket = (uint32_t)b;
    return m;
}

/* Give a block back: to the cache (lock held) or the heap. */
static void msg_put(mp_queue *q, msg *m)
{
    uint32_t b = m->bucket;
    if (b < NBUCKETS && q->cached[b] < CACHE_LIMIT) {
        m->next = q->cache[b];
        q->cache[b] = m; /* commit */
        q->cached[b]++;
        return;
    }
    mp__heap_free_any(m);
}

/* ---- the index ---- */

static bool before(const entry *a, const entry *b)
{
    return a->prio < b->prio || (a->prio == b->prio && a->seq < b->seq);
}

static void sift_up(entry *e, uint64_t hole, entry x)
{
    while (hole > 0) {
        uint64_t parent = (hole - 1) / 2;
        if (!before(&x, &e[parent]))
            break;
        e[hole] = e[parent];
        hole = parent;
    }
    e[hole] = x;
}

static void sift_down(entry *e, uint64_t n, uint64_t hole, entry x)
{
    for (;;) {
        uint64_t child = 2 * hole + 1;
        if (child >= n)
            break;
        if (child + 1 < n && before(&e[child + 1], &e[child]))
            child++;
        if (!before(&e[child], &x))
            break;
        e[hole] = e[child];
        hole = child;
    }
    e[hole] = x;
}

/* Make room for one more entry (lock held).  0 or -ENOMEM. */
static int grow_if_full(mp_queue *q)
{
    slots *old = index_of(q);
    uint64_t n = queued(q);
    if (n < old->cap)
        return 0;
    uint64_t cap = old->cap * 2;
    int err = 0;
    slots *s = mp__heap_calloc(sizeof *s + cap * sizeof(entry), &err);
    if (s == NULL)
        return err;
    s->cap = cap;
    uint64_t g = load64(&q->gets);
    for (uint64_t i = 0; i < n; i++) {
        if (q->order == MP_FIFO)
            s->e[(g + i) % cap] = old->e[(g + i) % old->cap];
        else
            s->e[i] = old->e[i];
    }
    atomic_store_explicit(&q->arr, s, memory_order_release); /* commit */
    mp__heap_free_any(old);
    return 0;
}

/* Link m as the newest entry and commit it (lock held, room made). */
static void push(mp_queue *q, msg *m, int prio)
{
    slots *s = index_of(q);
    uint64_t p = load64(&q->puts), n = p - load64(&q->gets);
    entry x = {.prio = prio, .seq = p, .m = m};
    switch (q->order) {
    case MP_FIFO: s->e[p % s->cap] = x; break;
    case MP_LIFO: s->e[n] = x; break;
    case MP_PRIORITY: sift_up(s->e, n, x); break;
    }
    commit64(&q->puts, p + 1);
}

/* The entry that comes out next (lock held, n > 0). */
static entry *peek(mp_queue *q)
{
    slots *s = index_of(q);
    uint64_t g = load64(&q->gets), n = load64(&q->puts) - g;
    switch (q->order) {
    case MP_FIFO: return &s->e[g % s->cap];
    case MP_LIFO: return &s->e[n - 1];
    default: return &s->e[0];
    }
}

/* Unlink the next entry and commit (lock held, n > 0).  Returns it. */
static msg *pop(mp_queue *q)
{
    slots *s = index_of(q);
    uint64_t g = load64(&q->gets), n = load64(&q->puts) - g;
    msg *m = peek(q)->m;
    if (q->order == MP_PRIORITY) {
        if (n > 1)
            sift_down(s->e, n - 1, 0, s->e[n - 1]);
        /* Slots past the heap hold no stale entries: repair() relies on it. */
        s->e[n - 1].m = NULL;
    }
    commit64(&q->gets, g + 1);
    return m;
}

static int cmp_by_msg(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const entry *)a)->m, y = (uintptr_t)((const entry *)b)->m;
    return (x > y) - (x < y);
}

/* After a holder died: a priority heap may be mid-sift, with an entry
 * duplicated, or the new (uncommitted) entry placed.  Keep each committed
 * message once and rebuild the heap.  FIFO and LIFO need nothing.  Slot n
 * (one past the heap) is NULL unless a sift spilled a live entry there or
 * placed the uncommitted one (seq >= puts), because pop() clears it. */
static void repair(mp_queue *q)
{
    if (q->order != MP_PRIORITY)
        return;
    slots *s = index_of(q);
    uint64_t p = load64(&q->puts), n = p - load64(&q->gets);
    uint64_t scan = n < s->cap ? n + 1 : n; /* a sift may spill into slot n */
    entry *tmp = malloc(scan * sizeof *tmp + 1);
    if (tmp == NULL)
        return; /* leave it: the heap order may be off, nothing is lost */
    uint64_t k = 0;
    for (uint64_t i = 0; i < scan; i++)
        if (s->e[i].m != NULL && s->e[i].seq < p)
            tmp[k++] = s->e[i];
    qsort(tmp, k, sizeof *tmp, cmp_by_msg);
    uint64_t u = 0;
    for (uint64_t i = 0; i < k; i++)
        if (u == 0 || tmp[u - 1].m != tmp[i].m)
            tmp[u++] = tmp[i];
    if (u > n)
        u = n; /* cannot happen: more messages than were put */
    for (uint64_t i = 0; i < u; i++)
        sift_up(s->e, i, tmp[i]);
    free(tmp);
    commit64(&q->gets, p - u); /* a message taken by the dead is gone */
}

static void lock(mp_queue *q)
{
    if (mp__mutex_lock_forever(&q->m) == MP_EOWNERDEAD) {
        repair(q);
        /* After the heap's repair, which commits a pop the dead made. */
        mp__holders_repair_take(&q->holders, load64(&q->gets));
        mp__holders_repair_done(&q->holders, load64(&q->done));
    }
}

static void unlock(mp_queue *q) { mp__mutex_unlock(&q->m); }

/* Release the lock and wait for *word to move from its value now, until
 * the deadline; then take the lock again.  Returns false at the deadline. */
static bool wait_change(mp_queue *q, _Atomic uint32_t *word, _Atomic uint32_t *sleepers,
                        int64_t deadline)
{
    if (mp__now_ns() >= deadline)
        return false;
    uint32_t w = atomic_load(word); /* read under the lock: no bump is missed */
    unlock(q);
    /* One slice at most: the state is looked at again under the lock (a
     * process that died between a change and its bump is noticed). */
    mp__wait_change(word, sleepers, w, mp__wait_slice_end(deadline), MP__WAIT_SPIN);
    lock(q);
    return true;
}

static void bump(_Atomic uint32_t *word, _Atomic uint32_t *sleepers, int n)
{
    atomic_fetch_add(word, 1);
    mp__wake_word_n(word, sleepers, n);
}

/* ---- the API ---- */

int mp_queue_new(mp_queue **out, const mp_queue_opts *opts)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    mp_queue_opts o = opts ? *opts : (mp_queue_opts){0};
    if (o.max_msg == 0)
        o.max_msg = MP_QUEUE_DEFAULT_MAX_MSG;
    if ((unsigned)o.order > MP_PRIORITY || o.max_msg > MP_QUEUE_LARGEST_MAX_MSG ||
        o.maxsize > ((size_t)1 << 31))
        return -EINVAL;
    int err = 0;
    mp_queue *q = mp__heap_calloc(sizeof *q, &err);
    if (q == NULL)
        return err;
    if (o.order == MP_FIFO) { /* the ring of queue_fifo.c does it all */
        int rc = mp__fifo_new(&q->fifo, o.maxsize);
        if (rc < 0) {
            mp__heap_free(q);
            return rc;
        }
    } else {
        uint64_t cap = o.maxsize ? o.maxsize : FIRST_CAP;
        slots *s = mp__heap_calloc(sizeof *s + cap * sizeof(entry), &err);
        if (s == NULL) {
            mp__heap_free(q);
            return err;
        }
        s->cap = cap;
        int rc = mp__mutex_init(&q->m);
        if (rc < 0) {
            mp__heap_free(s);
            mp__heap_free(q);
            return rc;
        }
        atomic_init(&q->arr, s);
        mp__holders_init(&q->holders);
    }
    q->order = o.order;
    q->maxsize = o.maxsize;
    q->max_msg = o.max_msg;
    *out = q;
    return 0;
}

int mp_queue_put_prio(mp_queue *q, int prio, const void *data, size_t len, double timeout)
{
    int64_t deadline;
    if (q == NULL || (data == NULL && len > 0) || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    if (len > q->max_msg)
        return MP_ETOOBIG;
    if (q->fifo != NULL)
        return mp__fifo_put(q->fifo, data, len, deadline);
    int err = 0;
    msg *m = NULL;
    if (len > SMALL_MAX) { /* big: copy before taking the lock */
        m = msg_get(q, len, &err);
        if (m == NULL)
            return err;
        memcpy(payload(m), data, len);
    }
    lock(q);
    for (;;) {
        if (q->closed) {
            err = MP_ECLOSED;
            break;
        }
        if (q->maxsize == 0 || queued(q) < q->maxsize) {
            err = grow_if_full(q);
            break;
        }
        if (!wait_change(q, &q->space, &q->put_sleepers, deadline)) {
            err = MP_EFULL;
            break;
        }
    }
    if (err == 0 && m == NULL) {
        m = msg_get(q, len, &err);
        if (m != NULL && len > 0)
            memcpy(payload(m), data, len);
    }
    if (err == 0)
        push(q, m, prio);
    else if (m != NULL)
        msg_put(q, m);
    unlock(q);
    if (err == 0)
        bump(&q->items, &q->get_sleepers, 1);
    return err;
}

int mp_queue_put(mp_queue *q, const void *data, size_t len, double timeout)
{
    return mp_queue_put_prio(q, 0, data, len, timeout);
}

/* Wait for a message (lock held on return 0).  Returns 0 with the lock
 * held and a message queued, or an error with the lock released. */
static int wait_message(mp_queue *q, int64_t deadline)
{
    lock(q);
    while (queued(q) == 0) {
        if (q->closed) {
            unlock(q);
            return MP_ECLOSED;
        }
        if (!wait_change(q, &q->items, &q->get_sleepers, deadline)) {
            unlock(q);
            return MP_EEMPTY;
        }
    }
    return 0;
}

/* pop() for a get: the message is held by the caller from its commit. */
static void take(mp_queue *q, mp__holder *me)
{
    mp__holder_taking(me, load64(&q->gets));
    pop(q);
    mp__holder_took(me);
}

static void after_get(mp_queue *q)
{
    if (q->maxsize > 0)
        bump(&q->space, &q->put_sleepers, 1);
}

int mp_queue_get(mp_queue *q, void *buf, size_t cap, size_t *len, double timeout)
{
    int64_t deadline;
    if (q == NULL || len == NULL || (buf == NULL && cap > 0) ||
        mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    if (q->fifo != NULL)
        return mp__fifo_get(q->fifo, buf, cap, len, NULL, deadline);
    mp__holder *me = mp__holders_self(&q->holders);
    int rc = wait_message(q, deadline);
    if (rc < 0)
        return rc;
    msg *m = peek(q)->m;
    *len = m->len;
    if (m->len > cap) {
        unlock(q);
        return MP_ETOOBIG;
    }
    take(q, me);
    if (m->bucket < NBUCKETS) { /* small: copy under the lock, recycle */
        if (m->len > 0)
            memcpy(buf, payload(m), m->len);
        msg_put(q, m);
        unlock(q);
    } else {
        unlock(q);
        memcpy(buf, payload(m), m->len);
        mp__heap_free_any(m);
    }
    after_get(q);
    return 0;
}

int mp_queue_get_alloc(mp_queue *q, void **data, size_t *len, double timeout)
{
    int64_t deadline;
    if (q == NULL || data == NULL || len == NULL || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    *data = NULL;
    if (q->fifo != NULL)
        return mp__fifo_get(q->fifo, NULL, 0, len, data, deadline);
    mp__holder *me = mp__holders_self(&q->holders);
    int rc = wait_message(q, deadline);
    if (rc < 0)
        return rc;
    msg *m = peek(q)->m;
    char *out = malloc(m->len ? m->len : 1);
    if (out == NULL) {
        unlock(q);
        return -ENOMEM;
    }
    take(q, me);
    *len = m->len;
    if (m->bucket < NBUCKETS) {
        memcpy(out, payload(m), m->len);
        msg_put(q, m);
        unlock(q);
    } else {
        unlock(q);
        memcpy(out, payload(m), m->len);
        mp__heap_free_any(m);
    }
    *data = out;
    after_get(q);
    return 0;
}

size_t mp_queue_qsize(mp_queue *q)
{
    if (q == NULL)
        return 0;
    if (q->fifo != NULL)
        return mp__fifo_qsize(q->fifo);
    uint64_t g = atomic_load_explicit(&q->gets, memory_order_acquire);
    uint64_t p = atomic_load_explicit(&q->puts, memory_order_acquire);
    return p > g ? (size_t)(p - g) : 0;
}

bool mp_queue_empty(mp_queue *q)
{
    return q != NULL && mp_queue_qsize(q) == 0;
}

bool mp_queue_full(mp_queue *q)
{
    return q != NULL && q->maxsize > 0 && mp_queue_qsize(q) >= q->maxsize;
}

int mp_queue_task_done(mp_queue *q)
{
    if (q == NULL)
        return -EINVAL;
    if (q->fifo != NULL)
        return mp__fifo_task_done(q->fifo);
    mp__holder *me = mp__holders_mine(&q->holders);
    lock(q);
    uint64_t d = load64(&q->done);
    if (d >= load64(&q->puts)) {
        unlock(q);
        return -EOVERFLOW;
    }
    mp__holder_finishing(me, d);
    commit64(&q->done, d + 1);
    mp__holder_finished(me);
    bool all = d + 1 == load64(&q->puts);
    unlock(q);
    if (all)
        bump(&q->done_word, &q->join_sleepers, INT32_MAX);
    return 0;
}

/* Count n messages as done (dropped, or held by the dead), never past the
 * messages put (lock held). */
static void count_done(mp_queue *q, uint64_t n)
{
    uint64_t d = load64(&q->done), puts = load64(&q->puts);
    commit64(&q->done, puts - d < n ? puts : d + n);
}

int mp_queue_join(mp_queue *q, double timeout)
{
    int64_t deadline;
    if (q == NULL || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    if (q->fifo != NULL)
        return mp__fifo_join(q->fifo, deadline);
    lock(q);
    int rc = 0;
    for (;;) {
        if (mp__holders_claim_death(&q->holders)) {
            rc = MP_EOWNERDEAD;
            break;
        }
        if (load64(&q->done) >= load64(&q->puts))
            break;
        /* Without the lock the look at /proc is; the count is under it. */
        unlock(q);
        bool dead = mp__holders_any_dead(&q->holders);
        lock(q);
        if (dead) {
            uint64_t n = mp__holders_collect(&q->holders);
            count_done(q, n);
            if (n > 0) {
                bump(&q->done_word, &q->join_sleepers, INT32_MAX);
                continue;
            }
        }
        if (!wait_change(q, &q->done_word, &q->join_sleepers, deadline)) {
            rc = MP_ETIMEDOUT;
            break;
        }
    }
    unlock(q);
    return rc;
}

int mp_queue_shutdown(mp_queue *q, bool immediate)
{
    if (q == NULL)
        return -EINVAL;
    if (q->fifo != NULL) {
        mp__fifo_shutdown(q->fifo, immediate);
        return 0;
    }
    bool dropped = false;
    lock(q);
    q->closed = true;
    if (immediate) {
        /* Python's shutdown(immediate=True): what is queued is dropped,
         * and each dropped message counts as done for join. */
        uint64_t n = 0;
        while (queued(q) > 0) {
            msg_put(q, pop(q));
            n++;
        }
        count_done(q, n);
        dropped = n > 0;
    }
    unlock(q);
    bump(&q->items, &q->get_sleepers, INT32_MAX);
    bump(&q->space, &q->put_sleepers, INT32_MAX);
    if (dropped)
        bump(&q->done_word, &q->join_sleepers, INT32_MAX);
    return 0;
}

int mp_queue_close(mp_queue *q)
{
    return mp_queue_shutdown(q, false);
}

void mp_queue_free(mp_queue *q)
{
    if (q == NULL || !mp__heap_owned(q))
        return;
    if (q->fifo != NULL) {
        mp__fifo_free(q->fifo);
        mp__heap_free(q);
        return;
    }
    while (queued(q) > 0)
        mp__heap_free_any(pop(q));
    mp__holders_free(&q->holders);
    for (int b = 0; b < NBUCKETS; b++)
        while (q->cache[b] != NULL) {
            msg *m = q->cache[b];
            q->cache[b] = m->next;
            mp__heap_free_any(m);
        }
    mp__heap_free_any(index_of(q));
    mp__heap_free(q);
}
