/* The FIFO queue: a byte ring with a lock for each end.
 *
 * Producers take the tail lock and consumers the head lock, so in the
 * common one-producer, one-consumer case neither side ever waits for the
 * other's lock and each lock stays in its owner's cache.  What crosses
 * between the two sides is the message bytes and the two commit words:
 *
 *   tail = (messages ever put    mod 2^32) << 32 | (byte position / 8)
 *   head = (messages ever taken  mod 2^32) << 32 | (byte position / 8)
 *
 * Each side reads the other's word only when its cached copy says the ring
 * is full (producer) or empty (consumer).  A record is an 8-byte header
 * {length, kind} and either the bytes (up to INLINE_MAX, padded to 8) or a
 * pointer to a shared-heap block holding them (bigger messages, copied
 * before the tail lock is taken).  Records may wrap around the end of the
 * ring; positions are logical, so growing the ring copies the live bytes
 * to the same logical positions and swaps one pointer.
 *
 * Kill -9 at any instruction: a put is committed by its one store of
 * `tail`, a get by its one store of `head`; a process dying before that
 * store leaves the message unwritten (put) or still queued (get); after
 * it, done.  Growth holds both locks and commits with the ring pointer.
 * The robust locks hand a dead holder's lock to the next caller, and there
 * is nothing to repair.  At worst one message block (or an old ring) is
 * leaked.
 *
 * Waiting: a consumer that finds the ring empty watches `tail` for up to
 * 20 us if a producer may run on another CPU, looking once a microsecond,
 * then registers as a sleeper and
 * sleeps on `items`; a producer bumps `items` only if it sees a sleeper
 * after its commit (a full fence on both sides orders the two).  Producers
 * of a bounded queue wait on `space` the same way. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "heap_int.h"
#include "mutex_int.h"
#include "os/os.h"
#include "queue_holders.h"
#include "queue_int.h"
#include "wait_int.h"

#define INLINE_MAX 4096
#define FIRST_RING ((uint64_t)16 << 10)
#define MAX_RING ((uint64_t)1 << 30)
#define KIND_INLINE 0u
#define KIND_BLOCK 1u

typedef struct {
    uint64_t cap; /* bytes, a power of two */
    uint64_t pad;
    unsigned char b[];
} ring;

#define LINE 64
struct mp__fifo {
    /* producer side */
    _Alignas(LINE) mp__mutex tl;
    uint64_t head_seen;
    /* consumer side */
    _Alignas(LINE) mp__mutex hl;
    uint64_t tail_seen;
    mp__holders holders; /* who took what, for join */
    _Alignas(LINE) _Atomic uint64_t tail;
    _Alignas(LINE) _Atomic uint64_t head;
    _Alignas(LINE) ring *_Atomic r;
    size_t maxsize;
    _Atomic uint32_t closed;
    _Alignas(LINE) mp__mutex dl; /* task_done's: the done count */
    _Atomic uint64_t done;
    _Alignas(LINE) _Atomic uint32_t items, space, done_word;
    _Atomic uint32_t get_sleepers, put_sleepers, join_sleepers;
};

static inline uint32_t cnt_of(uint64_t w) { return (uint32_t)(w >> 32); }
static inline uint32_t pos_of(uint64_t w) { return (uint32_t)w; }
static inline uint64_t word(uint32_t cnt, uint32_t pos) { return (uint64_t)cnt << 32 | pos; }
/* Bytes between two positions (in 8-byte units, modulo 2^32). */
static inline uint64_t span(uint32_t from, uint32_t to) { return (uint64_t)(uint32_t)(to - from) * 8; }
static inline uint64_t byte_at(uint32_t pos) { return (uint64_t)pos * 8; }
static inline uint64_t rec_size(size_t len, unsigned kind)
{
    return 8 + (kind == KIND_INLINE ? (len + 7) / 8 * 8 : 8);
}

static void ring_write(ring *r, uint64_t at, const void *src, size_t n)
{
    uint64_t o = at & (r->cap - 1);
    size_t first = n < r->cap - o ? n : (size_t)(r->cap - o);
    memcpy(r->b + o, src, first);
    if (n > first)
        memcpy(r->b, (const char *)src + first, n - first);
}

static void ring_read(const ring *r, uint64_t at, void *dst, size_t n)
{
    uint64_t o = at & (r->cap - 1);
    size_t first = n < r->cap - o ? n : (size_t)(r->cap - o);
    memcpy(dst, r->b + o, first);
    if (n > first)
        memcpy((char *)dst + first, r->b, n - first);
}

static ring *ring_new(uint64_t cap, int *err)
{
    ring *r = mp__heap_alloc(sizeof *r + cap, err);
    if (r != NULL)
        r->cap = cap;
    return r;
}

int mp__fifo_new(mp__fifo **out, size_t maxsize)
{
    int err = 0;
    mp__fifo *f = mp__heap_calloc(sizeof *f, &err);
    if (f == NULL)
        return err;
    ring *r = ring_new(FIRST_RING, &err);
    if (r == NULL) {
        mp__heap_free(f);
        return err;
    }
    if ((err = mp__mutex_init(&f->tl)) < 0 || (err = mp__mutex_init(&f->hl)) < 0 ||
        (err = mp__mutex_init(&f->dl)) < 0) {
        mp__heap_free(r);
        mp__heap_free(f);
        return err;
    }
    atomic_init(&f->r, r);
    mp__holders_init(&f->holders);
    f->maxsize = maxsize;
    *out = f;
    return 0;
}

/* Free the blocks of the big messages recorded from position h to t. */
static void free_blocks(ring *r, uint64_t h, uint64_t t)
{
    for (uint32_t pos = pos_of(h); pos != pos_of(t);) {
        uint32_t hdr[2];
        ring_read(r, byte_at(pos), hdr, sizeof hdr);
        if (hdr[1] == KIND_BLOCK) {
            void *blk;
            ring_read(r, byte_at(pos) + 8, &blk, sizeof blk);
            mp__heap_free_any(blk);
        }
        pos += (uint32_t)(rec_size(hdr[0], hdr[1]) / 8);
    }
}

void mp__fifo_free(mp__fifo *f)
{
    ring *r = atomic_load(&f->r);
    free_blocks(r, atomic_load(&f->head), atomic_load(&f->tail));
    mp__heap_free_any(r);
    mp__holders_free(&f->holders);
    mp__heap_free(f);
}

/* ---- the locks ---- */

/* A dead tail-lock holder leaves nothing to repair; a dead head-lock
 * holder may have been taking a message, a dead done-lock holder marking
 * one done (queue_holders.c settles both).  Lock order: tail, head, done. */
static void lock(mp__fifo *f, mp__mutex *m)
{
    if (mp__mutex_lock_forever(m) != MP_EOWNERDEAD)
        return;
    if (m == &f->hl)
        mp__holders_repair_take(&f->holders, atomic_load(&f->head));
    else if (m == &f->dl)
        mp__holders_repair_done(&f->holders, atomic_load(&f->done));
}

/* ---- waiting ---- */

static void wake(_Atomic uint32_t *w, _Atomic uint32_t *sleepers, int n)
{
    atomic_thread_fence(memory_order_seq_cst); /* the commit before the check */
    if (atomic_load_explicit(sleepers, memory_order_relaxed) > 0) {
        atomic_fetch_add(w, 1);
        mp__futex_wake(w, n);
    }
}

typedef struct {
    mp__fifo *f;
    _Atomic uint64_t *watch;
    uint64_t seen;
} moved_wait;

static bool watch_moved(void *arg)
{
    moved_wait *mw = arg;
    return atomic_load_explicit(mw->watch, memory_order_acquire) != mw->seen ||
           atomic_load_explicit(&mw->f->closed, memory_order_relaxed);
}

/* Release m and wait until *watch differs from seen (or the queue is
 * closed), until deadline; then take m again.  False at the deadline. */
static bool wait_for(mp__fifo *f, mp__mutex *m, _Atomic uint64_t *watch, uint64_t seen,
                     _Atomic uint32_t *w, _Atomic uint32_t *sleepers, int64_t deadline)
{
    if (mp__now_ns() >= deadline)
        return false;
    mp__mutex_unlock(m);
    /* The consumer looks sparsely (each look pulls the line the producer
     * writes); one slice at most, then the state is looked at again. */
    moved_wait mw = {f, watch, seen};
    mp__wait_word(w, sleepers, watch_moved, &mw, mp__wait_slice_end(deadline),
                  MP__WAIT_SPIN | MP__WAIT_SPARSE);
    lock(f, m);
    return true;
}

/* ---- put ---- */

/* With both locks held: a ring big enough for `need` more bytes, the live
 * bytes copied to the same logical positions.  Commits with the pointer. */
static int grow(mp__fifo *f, uint64_t need)
{
    ring *old = atomic_load_explicit(&f->r, memory_order_relaxed);
    uint64_t t = atomic_load(&f->tail), h = atomic_load(&f->head);
    uint64_t used = span(pos_of(h), pos_of(t)), cap = old->cap;
    while (cap - used < need) {
        if (cap >= MAX_RING)
            return -ENOMEM;
        cap *= 2;
    }
    int err = 0;
    ring *r = ring_new(cap, &err);
    if (r == NULL)
        return err;
    uint64_t p = byte_at(pos_of(h)), left = used;
    while (left > 0) {
        uint64_t so = p & (old->cap - 1), d = p & (cap - 1);
        uint64_t n = left;
        if (n > old->cap - so)
            n = old->cap - so;
        if (n > cap - d)
            n = cap - d;
        memcpy(r->b + d, old->b + so, n);
        p += n;
        left -= n;
    }
    atomic_store_explicit(&f->r, r, memory_order_release); /* commit */
    mp__heap_free_any(old);
    return 0;
}

int mp__fifo_put(mp__fifo *f, const void *data, size_t len, int64_t deadline)
{
    unsigned kind = len <= INLINE_MAX ? KIND_INLINE : KIND_BLOCK;
    void *blk = NULL;
    int err = 0;
    if (kind == KIND_BLOCK) { /* copy big messages before taking the lock */
        blk = mp__heap_alloc(len, &err);
        if (blk == NULL)
            return err;
        memcpy(blk, data, len);
    }
    uint64_t rec = rec_size(len, kind);
    lock(f, &f->tl);
    uint64_t t;
    for (;;) {
        if (atomic_load_explicit(&f->closed, memory_order_relaxed)) {
            err = MP_ECLOSED;
            break;
        }
        t = atomic_load_explicit(&f->tail, memory_order_relaxed);
        uint64_t h = f->head_seen;
        ring *r = atomic_load_explicit(&f->r, memory_order_relaxed);
        bool count_full = f->maxsize > 0 && (uint32_t)(cnt_of(t) - cnt_of(h)) >= f->maxsize;
        if (count_full || r->cap - span(pos_of(h), pos_of(t)) < rec) {
            h = f->head_seen = atomic_load_explicit(&f->head, memory_order_acquire);
            count_full = f->maxsize > 0 && (uint32_t)(cnt_of(t) - cnt_of(h)) >= f->maxsize;
        }
        if (count_full) {
            if (!wait_for(f, &f->tl, &f->head, h, &f->space, &f->put_sleepers, deadline)) {
                err = MP_EFULL;
                break;
            }
            continue;
        }
        if (r->cap - span(pos_of(h), pos_of(t)) < rec) {
            lock(f, &f->hl); /* lock order: tail, then head */
            err = grow(f, rec);
            mp__mutex_unlock(&f->hl);
            if (err < 0)
                break;
            continue;
        }
        uint32_t hdr[2] = {(uint32_t)len, kind};
        uint64_t at = byte_at(pos_of(t));
        ring_write(r, at, hdr, sizeof hdr);
        if (kind == KIND_INLINE) {
            if (len > 0)
                ring_write(r, at + 8, data, len);
        } else {
            ring_write(r, at + 8, &blk, sizeof blk);
        }
        atomic_store_explicit(&f->tail, word(cnt_of(t) + 1, pos_of(t) + (uint32_t)(rec / 8)),
                              memory_order_release); /* commit */
        break;
    }
    mp__mutex_unlock(&f->tl);
    if (err < 0) {
        if (blk != NULL)
            mp__heap_free_any(blk);
        return err;
    }
    wake(&f->items, &f->get_sleepers, 1);
    return 0;
}

/* ---- get ---- */

int mp__fifo_get(mp__fifo *f, void *buf, size_t cap, size_t *len, void **out,
                 int64_t deadline)
{
    mp__holder *me = mp__holders_self(&f->holders);
    lock(f, &f->hl);
    uint64_t h;
    for (;;) {
        h = atomic_load_explicit(&f->head, memory_order_relaxed);
        if (pos_of(f->tail_seen) == pos_of(h))
            f->tail_seen = atomic_load_explicit(&f->tail, memory_order_acquire);
        if (pos_of(f->tail_seen) != pos_of(h))
            break;
        if (atomic_load(&f->closed)) {
            mp__mutex_unlock(&f->hl);
            return MP_ECLOSED;
        }
        if (!wait_for(f, &f->hl, &f->tail, f->tail_seen, &f->items, &f->get_sleepers,
                      deadline)) {
            mp__mutex_unlock(&f->hl);
            return MP_EEMPTY;
        }
    }
    ring *r = atomic_load_explicit(&f->r, memory_order_acquire);
    uint64_t at = byte_at(pos_of(h));
    uint32_t hdr[2];
    ring_read(r, at, hdr, sizeof hdr);
    size_t n = hdr[0];
    *len = n;
    void *dst = buf;
    if (out != NULL) {
        dst = malloc(n ? n : 1);
        if (dst == NULL) {
            mp__mutex_unlock(&f->hl);
            return -ENOMEM;
        }
    } else if (n > cap) {
        mp__mutex_unlock(&f->hl);
        return MP_ETOOBIG; /* stays queued */
    }
    void *blk = NULL;
    if (hdr[1] == KIND_INLINE) {
        if (n > 0)
            ring_read(r, at + 8, dst, n);
    } else {
        ring_read(r, at + 8, &blk, sizeof blk);
    }
    uint64_t rec = rec_size(n, hdr[1]);
    mp__holder_taking(me, h);
    atomic_store_explicit(&f->head, word(cnt_of(h) + 1, pos_of(h) + (uint32_t)(rec / 8)),
                          memory_order_release); /* commit */
    mp__holder_took(me);
    mp__mutex_unlock(&f->hl);
    if (blk != NULL) {
        memcpy(dst, blk, n);
        mp__heap_free_any(blk);
    }
    if (out != NULL)
        *out = dst;
    if (f->maxsize > 0)
        wake(&f->space, &f->put_sleepers, 1);
    return 0;
}

/* ---- the rest ---- */

size_t mp__fifo_qsize(mp__fifo *f)
{
    uint64_t h = atomic_load_explicit(&f->head, memory_order_acquire);
    uint64_t t = atomic_load_explicit(&f->tail, memory_order_acquire);
    return (uint32_t)(cnt_of(t) - cnt_of(h));
}

bool mp__fifo_full(mp__fifo *f)
{
    return f->maxsize > 0 && mp__fifo_qsize(f) >= f->maxsize;
}

int mp__fifo_task_done(mp__fifo *f)
{
    mp__holder *me = mp__holders_mine(&f->holders);
    lock(f, &f->dl);
    uint64_t d = atomic_load_explicit(&f->done, memory_order_relaxed);
    if ((uint32_t)d == cnt_of(atomic_load(&f->tail))) {
        mp__mutex_unlock(&f->dl);
        return -EOVERFLOW;
    }
    mp__holder_finishing(me, d);
    atomic_store(&f->done, d + 1); /* commit */
    mp__holder_finished(me);
    mp__mutex_unlock(&f->dl);
    if ((uint32_t)(d + 1) == cnt_of(atomic_load(&f->tail)))
        wake(&f->done_word, &f->join_sleepers, INT32_MAX);
    return 0;
}

static bool all_done(void *arg)
{
    mp__fifo *f = arg;
    return (uint32_t)atomic_load(&f->done) == cnt_of(atomic_load(&f->tail));
}

/* Drop every queued message (both locks held, the queue closed, so no
 * put is under way and none can start).  The drop is committed by one
 * store of `head`; the blocks of big messages are freed after it (a
 * process killed in between leaks them, never frees one twice).  Returns
 * the messages dropped. */
static uint32_t drop_all(mp__fifo *f)
{
    uint64_t h = atomic_load(&f->head), t = atomic_load(&f->tail);
    ring *r = atomic_load_explicit(&f->r, memory_order_relaxed);
    atomic_store_explicit(&f->head, t, memory_order_release); /* commit */
    f->tail_seen = t;
    free_blocks(r, h, t);
    return cnt_of(t) - cnt_of(h);
}

/* Count n messages as done (dropped by shutdown(immediate), as Python
 * does, or held by the dead), never past the messages put; under the
 * done lock. */
static void done_dropped(mp__fifo *f, uint64_t n)
{
    uint64_t d = atomic_load(&f->done);
    uint32_t left = cnt_of(atomic_load(&f->tail)) - (uint32_t)d;
    atomic_store(&f->done, d + (n < left ? n : left)); /* commit */
}

/* Count the messages of consumers that died as done (queue_holders.c).
 * True if there were any. */
static bool reap_dead(mp__fifo *f)
{
    if (!mp__holders_any_dead(&f->holders))
        return false;
    lock(f, &f->hl);
    lock(f, &f->dl);
    uint64_t n = mp__holders_collect(&f->holders);
    if (n > 0)
        done_dropped(f, n);
    mp__mutex_unlock(&f->dl);
    mp__mutex_unlock(&f->hl);
    if (n == 0)
        return false;
    wake(&f->done_word, &f->join_sleepers, INT32_MAX);
    return true;
}

int mp__fifo_join(mp__fifo *f, int64_t deadline)
{
    for (;;) {
        if (mp__holders_claim_death(&f->holders))
            return MP_EOWNERDEAD;
        if (all_done(f))
            return 0;
        if (reap_dead(f))
            continue;
        if (mp__now_ns() >= deadline)
            return MP_ETIMEDOUT;
        /* A slice at most: deaths are looked for after each. */
        mp__wait_word(&f->done_word, &f->join_sleepers, all_done, f,
                      mp__wait_slice_end(deadline), 0);
    }
}

void mp__fifo_shutdown(mp__fifo *f, bool immediate)
{
    atomic_store(&f->closed, 1);
    if (immediate) {
        /* Lock order: tail, then head.  A put that passed its closed
         * check before our store has committed once we hold the tail
         * lock; every later one sees the flag. */
        lock(f, &f->tl);
        lock(f, &f->hl);
        lock(f, &f->dl);
        done_dropped(f, drop_all(f));
        mp__mutex_unlock(&f->dl);
        mp__mutex_unlock(&f->hl);
        mp__mutex_unlock(&f->tl);
        atomic_fetch_add(&f->done_word, 1);
        mp__futex_wake(&f->done_word, INT32_MAX);
    }
    atomic_fetch_add(&f->items, 1);
    atomic_fetch_add(&f->space, 1);
    mp__futex_wake(&f->items, INT32_MAX);
    mp__futex_wake(&f->space, INT32_MAX);
}
