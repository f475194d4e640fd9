/* imap_items: items of any size, copied at the call, run in pieces (apply
 * tasks of mp__items_task, items.h), their results handed out one by one.
 *
 * The items are copied at the call into private memory, laid out as the
 * pieces want them (lengths together, then the bytes, each item 8-aligned),
 * so that any run of items is one slice of each: a piece's argument is
 * gathered from the two slices into its job, in the shared heap, as it is
 * sent.  At most a window of pieces (WINDOW_PIECES, WINDOW_BYTES) is out at
 * a time, whatever the items' total.
 *
 * A piece's life (the iterator's, on the caller's thread):
 *
 *     waiting ──send──► out ──its result──► handed out item by item ──► freed
 *                        │
 *                        └─ its worker died (or was killed at an item's
 *                           deadline): the items it published are handed
 *                           out, the one it was on fails with how the worker
 *                           ended, the rest become a new piece, next in line
 *
 * In order (ordered), pieces are handed out as they were cut; otherwise as
 * their results come. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "os/os.h"
#include "pool/core.h"
#include "pool/items.h"
#include "pool/items_iter.h"

#define PIECE_BYTES (1u << 20)       /* a piece's items, bytes (but one item) */
#define WINDOW_PIECES_PER_WORKER 4
#define WINDOW_BYTES ((size_t)64 << 20) /* at most, and an eighth of the heap */

typedef struct {
    size_t first;               /* its first item */
    uint32_t count;
    size_t off;                 /* its first item's bytes in the copy */
    size_t bytes;
    mp_result *r;               /* out: its task */
} piece;

struct items_iter {
    mp_pool *p;
    pool_core *c;
    mp_task_fn fn;
    bool ordered;
    size_t n;
    uint32_t *lens;             /* the copy: every item's length */
    unsigned char *data;        /* ... and bytes */
    size_t chunk;               /* items a piece, at most */
    size_t next_item, next_off; /* the first item not yet in a piece */
    piece *out;                 /* pieces out, oldest first */
    size_t nout, cap_out, out_bytes, max_out, max_bytes;

    /* the piece being handed out */
    bool in_piece;
    piece cur;
    const unsigned char *res;   /* its records */
    size_t res_len, res_pos;
    uint32_t handed;            /* its items handed out */
    mp_task_info fail;          /* how its task ended (failed: at item handed) */
    size_t yielded;
    bool any;
    task_outcome last;          /* the last item's outcome (per item: small) */
    mp_task_info died;          /* ... its piece's death, when died_last */
    bool died_last;
    _Atomic uint64_t back;      /* items whose results came back (progress) */
    progress_rec prog;
};

static uint64_t items_back(void *arg)
{
    return atomic_load_explicit(&((items_iter *)arg)->back, memory_order_relaxed);
}

void mp__items_free(items_iter *it)
{
    if (it == NULL)
        return;
    mp__progress_drop(it->c, &it->prog);
    for (size_t i = 0; i < it->nout; i++) {
        mp_result_cancel(it->out[i].r); /* (not started: never runs) */
        mp_result_free(it->out[i].r);
    }
    if (it->in_piece && it->cur.r)
        mp_result_free(it->cur.r);
    free(it->out);
    free(it->lens);
    free(it->data);
    free(it);
}

/* Cut the next piece from the items not yet sent, and send it. */
static int send_piece(items_iter *it, size_t first, uint32_t count, size_t off, bool front)
{
    size_t bytes = 0;
    for (uint32_t i = 0; i < count; i++)
        bytes += items_align(it->lens[first + i]);
    items_head h = {.magic = ITEMS_MAGIC, .fn = it->fn, .count = count};
    static const unsigned char pad[8];
    size_t lb = (size_t)count * sizeof(uint32_t);
    size_t hb = sizeof h + lb;
    struct iovec iov[4] = {{&h, sizeof h},
                           {it->lens + first, lb},
                           {(void *)pad, items_align(hb) - hb},
                           {it->data + off, bytes}};
    piece pc = {.first = first, .count = count, .off = off, .bytes = bytes};
    int rc = mp__pool_apply_v(it->p, mp__items_task, iov, 4, NULL, &pc.r);
    if (rc < 0)
        return rc;
    if (it->nout == it->cap_out) {
        size_t cap = it->cap_out ? it->cap_out * 2 : 16;
        piece *o = realloc(it->out, cap * sizeof *o);
        if (o == NULL) {
            mp_result_cancel(pc.r);
            mp_result_free(pc.r);
            return -ENOMEM;
        }
        it->out = o;
        it->cap_out = cap;
    }
    if (front) {
        memmove(it->out + 1, it->out, it->nout * sizeof *it->out);
        it->out[0] = pc;
    } else {
        it->out[it->nout] = pc;
    }
    it->nout++;
    it->out_bytes += bytes;
    return 0;
}

/* Send pieces while the window has room. */
static int fill(items_iter *it)
{
    while (it->next_item < it->n && it->nout < it->max_out &&
           (it->nout == 0 || it->out_bytes < it->max_bytes)) {
        size_t first = it->next_item, off = it->next_off, bytes = 0;
        uint32_t count = 0;
        while (first + count < it->n && count < it->chunk &&
               (count == 0 || bytes + it->lens[first + count] <= PIECE_BYTES)) {
            bytes += items_align(it->lens[first + count]);
            count++;
        }
        int rc = send_piece(it, first, count, off, false);
        if (rc < 0)
            return rc;
        it->next_item += count;
        it->next_off += bytes;
    }
    return 0;
}

int mp__items_start(mp_pool *p, mp_task_fn fn, const mp_item *items, size_t n, size_t chunksize,
                    bool ordered, items_iter **out)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    pool_core *c;
    int rc = mp__pool_check(p, &c);
    if (rc < 0)
        return rc;
    if (fn == NULL || (items == NULL && n > 0))
        return -EINVAL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].data == NULL && items[i].len > 0)
            return -EINVAL;
        if (items[i].len > UINT32_MAX - 8)
            return MP_ETOOBIG;
        size_t a = items_align(items[i].len);
        if (a > SIZE_MAX - total)
            return -EOVERFLOW;
        total += a;
    }
    if (c->be->fn_check && (rc = c->be->fn_check((void (*)(void))fn)) < 0)
        return rc;
    if (!mp__pool_accepting(c))
        return MP_ECLOSED;
    items_iter *it = calloc(1, sizeof *it);
    if (it == NULL)
        return -ENOMEM;
    it->p = p;
    it->c = c;
    it->fn = fn;
    it->ordered = ordered;
    it->n = n;
    it->lens = malloc(n ? n * sizeof *it->lens : 1);
    it->data = malloc(total ? total : 1);
    if (it->lens == NULL || it->data == NULL) {
        mp__items_free(it);
        return -ENOMEM;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        it->lens[i] = (uint32_t)items[i].len;
        if (items[i].len)
            memcpy(it->data + off, items[i].data, items[i].len);
        size_t a = items_align(items[i].len);
        memset(it->data + off + items[i].len, 0, a - items[i].len);
        off += a;
    }
    unsigned nw = c->nworkers ? c->nworkers : 1;
    if (chunksize == 0) {
        size_t parts = (size_t)nw * 16;
        chunksize = n / parts + (n % parts ? 1 : 0);
    }
    if (chunksize == 0)
        chunksize = 1;
    if (chunksize > UINT32_MAX / 8)
        chunksize = UINT32_MAX / 8;
    it->chunk = chunksize;
    it->max_bytes = mp__heap_capacity() / 8;
    if (it->max_bytes > WINDOW_BYTES)
        it->max_bytes = WINDOW_BYTES;
    it->max_out = (size_t)nw * WINDOW_PIECES_PER_WORKER;
    if (it->max_out < 8)
        it->max_out = 8;
    mp__progress_begin(c, &it->prog, n, items_back, it);
    if ((rc = fill(it)) < 0) {
        mp__items_free(it);
        return rc;
    }
    *out = it;
    return 0;
}

/* Take piece k out of the window to hand it out (its result is final). */
static void enter(items_iter *it, size_t k)
{
    it->cur = it->out[k];
    memmove(it->out + k, it->out + k + 1, (it->nout - k - 1) * sizeof *it->out);
    it->nout--;
    it->out_bytes -= it->cur.bytes;
    it->in_piece = true;
    it->handed = 0;
    it->res_pos = 0;
    const void *res = NULL;
    size_t len = 0;
    int code = mp_result_get(it->cur.r, 0, &res, &len);
    it->fail = (mp_task_info){0};
    if (code != 0) {
        mp_result_info(it->cur.r, &it->fail);
        it->fail.code = code;
        mp__result_partial(it->cur.r, &res, &len); /* what it published */
    }
    it->res = res;
    it->res_len = len;
    /* Its items are back: all, or those it ran and the one it ended on. */
    size_t back = 0, at = 0;
    items_rec r;
    while (back < it->cur.count && items_next_rec(res, len, &at, &r))
        back++;
    if (back < it->cur.count && it->fail.code != MP_ECANCELED)
        back++;
    atomic_store_explicit(&it->back, atomic_load_explicit(&it->back, memory_order_relaxed) + back,
                          memory_order_relaxed);
}

/* Wait for the next piece to hand out. */
static int next_piece(items_iter *it, double timeout)
{
    int rc = fill(it);
    if (rc < 0)
        return rc;
    if (it->nout == 0)
        return MP_EDONE; /* (not reached: yielded counts the end) */
    size_t k = 0;
    if (it->ordered) {
        if ((rc = mp_result_wait(it->out[0].r, timeout)) < 0)
            return rc;
    } else {
        mp_result **rs = malloc(it->nout * sizeof *rs);
        if (rs == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < it->nout; i++)
            rs[i] = it->out[i].r;
        rc = mp_result_wait_any(rs, it->nout, timeout);
        free(rs);
        if (rc < 0)
            return rc;
        k = (size_t)rc;
    }
    enter(it, k);
    return 0;
}

/* Done with the current piece: free its task. */
static void release_piece(items_iter *it)
{
    if (it->cur.r)
        mp_result_free(it->cur.r);
    it->in_piece = false;
}

/* The current piece's task ended at the item just handed out (its worker
 * died there, or it had no room for more): send the rest of it again, next
 * in line.  If that fails, the rest fail with why, one by one. */
static void resend_rest(items_iter *it)
{
    piece pc = it->cur;
    uint32_t rest = pc.count - it->handed;
    if (rest == 0) {
        release_piece(it);
        return;
    }
    size_t off = pc.off;
    for (uint32_t i = 0; i < it->handed; i++)
        off += items_align(it->lens[pc.first + i]);
    int rc = send_piece(it, pc.first + it->handed, rest, off, true);
    release_piece(it);
    if (rc < 0) {
        it->cur = (piece){.first = pc.first + it->handed, .count = rest};
        it->in_piece = true;
        it->handed = 0;
        it->res = NULL;
        it->res_len = it->res_pos = 0;
        it->fail = (mp_task_info){.code = rc};
    }
}

int mp__items_next(items_iter *it, const void **res, size_t *len, size_t *index, double timeout)
{
    if (it->yielded == it->n) {
        mp__progress_end(it->c, &it->prog); /* (once: off the list after) */
        return MP_EDONE;
    }
    int rc;
    for (;;) {
        if (!it->in_piece && (rc = next_piece(it, timeout)) < 0)
            return rc;
        if (it->handed < it->cur.count)
            break;
        release_piece(it);
    }
    size_t idx = it->cur.first + it->handed;
    items_rec r;
    size_t next = it->res_pos;
    bool have = items_next_rec(it->res, it->res_len, &next, &r);
    *res = NULL;
    *len = 0;
    if (index)
        *index = idx;
    if (!have) {
        /* The piece's task ended before this item's record: the item
         * fails with how (its worker died on it, its deadline, -ENOMEM
         * when the task ran out of room), the rest go out again. */
        if (it->fail.code == MP_ECANCELED)
            return MP_ECANCELED;
        mp_task_info f = it->fail;
        if (f.code == 0)
            f.code = -ENOMEM;
        it->handed++;
        it->yielded++;
        if (it->cur.r) {
            if (it->fail.code == 0) {
                /* (a piece that failed was counted where it ended: its
                 * worker, the supervisor, MPI's sender; a short one not) */
                atomic_fetch_add_explicit(&it->c->died_done, 1, memory_order_relaxed);
                atomic_fetch_add_explicit(&it->c->died_failed, 1, memory_order_relaxed);
            }
            resend_rest(it);
        }
        it->any = true;
        it->died = f;
        it->died_last = true;
        it->last = info_outcome(&f);
        return f.code;
    }
    size_t body_at = it->res_pos + sizeof r;
    it->res_pos = next;
    it->handed++;
    it->yielded++;
    it->any = true;
    if (r.len & ITEM_FAILED) {
        it->died_last = false;
        it->last = (r.len & ITEM_ERROR) ? (task_outcome){.code = r.rc}
                                        : (task_outcome){.code = MP_ETASK, .task_rc = r.rc};
        return it->last.code;
    }
    it->died_last = false;
    it->last = (task_outcome){0};
    *res = it->res + body_at;
    *len = r.len;
    return 0;
}

int mp__items_info(items_iter *it, mp_task_info *info)
{
    if (!it->any)
        return -EAGAIN;
    *info = it->died_last ? it->died : outcome_info(it->last);
    return 0;
}
