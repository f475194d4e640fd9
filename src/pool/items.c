/* imap_items: items of any size, copied at the call, run in pieces (apply
 * tasks of mp__items_task, items.h), their results handed out one by one.
 *
 * The call cuts the items into pieces and sends as many as the window
 * holds (WINDOW_PIECES_PER_WORKER, WINDOW_BYTES) at once, each gathered
 * straight from the caller's items into its job, in the shared heap: the
 * workers start on the first while the rest are cut.  What is left is
 * copied into private memory, laid out as the pieces want it (lengths
 * together, then the bytes, each item 8-aligned), so that any run of
 * items is one slice of each; pieces go out from there as the window
 * frees.  So at most a window is in the shared heap, whatever the items'
 * total, and every item is copied once at the call.
 *
 * A piece's life (the iterator's, on the caller's thread):
 *
 *     waiting ──send──► out ──its result──► handed out item by item ──► freed
 *                        │
 *                        └─ its worker died (or was killed at an item's
 *                           deadline): the items it published are handed
 *                           out, the one it was on fails with how the worker
 *                           ended, the rest become a new piece, next in line,
 *                           copied from the old one's argument
 *
 * In order (ordered), pieces are handed out as they were cut; otherwise as
 * their results come. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "copy_int.h"
#include "heap_int.h"
#include "mproc/error.h"
#include "os/os.h"
#include "pool/core.h"
#include "pool/items.h"
#include "pool/items_iter.h"

#define PIECE_BYTES (1u << 20)       /* a piece's items, bytes (but one item) */
#define WINDOW_PIECES_PER_WORKER 16 /* (the default cut: all at once) */
#define WINDOW_BYTES ((size_t)64 << 20) /* at most, and an eighth of the heap */

typedef struct {
    size_t first;               /* its first item */
    uint32_t count;
    size_t bytes;               /* its items' bytes, each 8-aligned */
    bool counted;               /* its items are counted back already (the
                                   rest of a piece that ended short) */
    mp_result *r;               /* out: its task */
} piece;

struct items_iter {
    items_cursor k;             /* (first: items_iter.h) */
    mp_pool *p;
    pool_core *c;
    mp_task_fn fn;
    bool ordered;
    size_t n;
    size_t base;                /* the copy holds items base.. */
    uint32_t *lens;             /* ... their lengths */
    unsigned char *data;        /* ... and bytes */
    size_t chunk;               /* items a piece, at most */
    size_t next_item, next_off; /* the first item not yet in a piece (its
                                   bytes in the copy, once past base) */
    piece *out;                 /* pieces out, oldest first */
    size_t nout, cap_out, out_bytes, max_out, max_bytes;

    /* the piece being handed out (and k: where in it) */
    bool in_piece;
    piece cur;
    mp_task_info fail;          /* how its task ended (failed: at item handed) */
    task_outcome last;          /* the last item's outcome, unless k.last_ok */
    mp_task_info died;          /* ... its piece's death, when died_last */
    bool died_last;
    _Atomic uint64_t back;      /* items whose results came back (progress) */
    progress_rec prog;
};

/* Where a piece's items come from, to gather its argument (items.h's
 * layout) into its job: the caller's items (at the call), or lengths and
 * bytes laid out already (the copy, or a piece sent before). */
typedef struct {
    items_head h;
    const mp_item *items;       /* items[0..count), or */
    const uint32_t *lens;       /* lens[0..count) and */
    const unsigned char *data;  /* their bytes, laid out */
    size_t bytes;
    bool counted;               /* (piece.counted) */
} piece_src;

static size_t head_bytes(uint32_t count)
{
    return items_align(sizeof(items_head) + (size_t)count * sizeof(uint32_t));
}

/* Lay one item out at dst: its bytes, zeros to the next 8 bytes; the
 * room it took. */
static inline size_t put_item(unsigned char *dst, const mp_item *item)
{
    size_t len = item->len, a = items_align(len);
    if (a > len)
        memset(dst + a - 8, 0, 8); /* (the pad, before the bytes in front) */
    mp__copy(dst, item->data, len);
    return a;
}

static void fill_piece(unsigned char *dst, void *arg)
{
    const piece_src *ps = arg;
    uint32_t n = ps->h.count;
    memcpy(dst, &ps->h, sizeof ps->h);
    uint32_t *lens = (uint32_t *)(void *)(dst + sizeof ps->h);
    size_t at = head_bytes(n), end = sizeof ps->h + (size_t)n * sizeof *lens;
    memset(dst + end, 0, at - end);
    if (ps->items == NULL) {
        memcpy(lens, ps->lens, (size_t)n * sizeof *lens);
        memcpy(dst + at, ps->data, ps->bytes);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        lens[i] = (uint32_t)ps->items[i].len;
        at += put_item(dst + at, &ps->items[i]);
    }
}

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

/* Send a piece of the items ps names, first its first: last in line, or
 * next in line (front). */
static int send_piece(items_iter *it, piece_src *ps, size_t first, bool front)
{
    ps->h = (items_head){.magic = ITEMS_MAGIC, .fn = it->fn, .count = ps->h.count};
    piece pc = {.first = first, .count = ps->h.count, .bytes = ps->bytes,
                .counted = ps->counted};
    if (it->nout == it->cap_out) {
        size_t cap = it->cap_out ? it->cap_out * 2 : 16;
        piece *o = realloc(it->out, cap * sizeof *o);
        if (o == NULL)
            return -ENOMEM;
        it->out = o;
        it->cap_out = cap;
    }
    int rc = mp__pool_apply_fill(it->p, mp__items_task, head_bytes(pc.count) + ps->bytes,
                                 fill_piece, ps, NULL, &pc.r);
    if (rc < 0)
        return rc;
    if (front) {
        memmove(it->out + 1, it->out, it->nout * sizeof *it->out);
        it->out[0] = pc;
    } else {
        it->out[it->nout] = pc;
    }
    it->nout++;
    it->out_bytes += pc.bytes;
    return 0;
}

static bool window_open(const items_iter *it)
{
    return it->next_item < it->n && it->nout < it->max_out &&
           (it->nout == 0 || it->out_bytes < it->max_bytes);
}

/* Cut the next piece from the items at `first` (lengths: len(i) for the
 * i-th from it), the most a piece takes: *count of them, *bytes. */
#define CUT_PIECE(it, first, len, count, bytes)                                   \
    do {                                                                          \
        while ((first) + (count) < (it)->n && (count) < (it)->chunk &&            \
               ((count) == 0 || (bytes) + (len((count))) <= PIECE_BYTES)) {       \
            (bytes) += items_align(len((count)));                                 \
            (count)++;                                                            \
        }                                                                         \
    } while (0)

/* Send pieces from the copy while the window has room. */
static int fill(items_iter *it)
{
    while (window_open(it)) {
        size_t first = it->next_item, bytes = 0;
        const uint32_t *lens = it->lens + (first - it->base);
        uint32_t count = 0;
#define COPY_LEN(i) lens[i]
        CUT_PIECE(it, first, COPY_LEN, count, bytes);
#undef COPY_LEN
        piece_src ps = {.h.count = count, .lens = lens, .data = it->data + it->next_off,
                        .bytes = bytes};
        int rc = send_piece(it, &ps, first, false);
        if (rc < 0)
            return rc;
        it->next_item += count;
        it->next_off += bytes;
    }
    return 0;
}

/* At the call: send pieces straight from the caller's items while the
 * window has room. */
static int fill_from(items_iter *it, const mp_item *items)
{
    while (window_open(it)) {
        size_t first = it->next_item, bytes = 0;
        const mp_item *from = items + first;
        uint32_t count = 0;
#define ITEM_LEN(i) from[i].len
        CUT_PIECE(it, first, ITEM_LEN, count, bytes);
#undef ITEM_LEN
        piece_src ps = {.h.count = count, .items = from, .bytes = bytes};
        int rc = send_piece(it, &ps, first, false);
        if (rc < 0)
            return rc;
        it->next_item += count;
    }
    return 0;
}

/* At the call, once the window is full: copy the items not sent (total:
 * all the items' bytes, aligned). */
static int copy_rest(items_iter *it, const mp_item *items, size_t total)
{
    size_t n = it->n - it->next_item, bytes = total - it->out_bytes;
    if (n == 0)
        return 0;
    it->base = it->next_item;
    it->lens = malloc(n * sizeof *it->lens);
    it->data = malloc(bytes ? bytes : 1);
    if (it->lens == NULL || it->data == NULL)
        return -ENOMEM;
    const mp_item *from = items + it->base;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        it->lens[i] = (uint32_t)from[i].len;
        off += put_item(it->data + off, &from[i]);
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
    if ((rc = fill_from(it, items)) < 0 || (rc = copy_rest(it, items, total)) < 0) {
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
    it->k.first = it->cur.first;
    it->k.count = it->cur.count;
    it->k.handed = 0;
    it->k.res_pos = 0;
    const void *res = NULL;
    size_t len = 0;
    int code = mp_result_get(it->cur.r, 0, &res, &len);
    it->fail = (mp_task_info){0};
    if (code != 0) {
        mp_result_info(it->cur.r, &it->fail);
        it->fail.code = code;
        mp__result_partial(it->cur.r, &res, &len); /* what it published */
    }
    it->k.res = res;
    it->k.res_len = len;
    /* Its items are back: all, or those it ran and the one it ended on. */
    if (it->cur.counted)
        return;
    size_t back = it->cur.count;
    if (code != 0) {
        size_t at = 0;
        items_rec r;
        for (back = 0; back < it->cur.count && items_next_rec(res, len, &at, &r);)
            back++;
        if (back < it->cur.count && it->fail.code != MP_ECANCELED)
            back++;
    }
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
    it->k.count = it->k.handed = 0;
}

/* Send items from..count of piece pc again, next in line, copied from its
 * argument: lengths and bytes there were written by us but lie in the
 * shared heap, so they are only trusted as far as pc's own size. */
static int rest_of(items_iter *it, const piece *pc, uint32_t from, piece_src *ps)
{
    size_t len;
    const unsigned char *arg = mp__result_arg(pc->r, &len);
    size_t at = head_bytes(pc->count);
    if (arg == NULL || len != at + pc->bytes)
        return -EPROTO;
    const uint32_t *lens = (const uint32_t *)(const void *)(arg + sizeof(items_head));
    size_t off = 0;
    for (uint32_t i = 0; i < from; i++) {
        off += items_align(lens[i]);
        if (off > pc->bytes)
            return -EPROTO;
    }
    ps->h.count = pc->count - from;
    ps->lens = lens + from;
    ps->data = arg + at + off;
    ps->bytes = pc->bytes - off;
    return send_piece(it, ps, pc->first + from, true);
}

/* The current piece's task ended at the item just handed out (its worker
 * died there, or it had no room for more): send the rest of it again, next
 * in line.  If that fails, the rest fail with why, one by one. */
static void resend_rest(items_iter *it)
{
    piece pc = it->cur;
    uint32_t rest = pc.count - it->k.handed;
    if (rest == 0) {
        release_piece(it);
        return;
    }
    /* (a piece that ended short without failing counted all its items) */
    int rc = rest_of(it, &pc, it->k.handed, &(piece_src){.counted = it->fail.code == 0});
    release_piece(it);
    if (rc < 0) {
        it->cur = (piece){.first = pc.first + it->k.handed, .count = rest};
        it->in_piece = true;
        it->k.first = it->cur.first;
        it->k.count = rest;
        it->k.handed = 0;
        it->k.res = NULL;
        it->k.res_len = it->k.res_pos = 0;
        it->fail = (mp_task_info){.code = rc};
    }
}

int mp__items_next(items_iter *it, const void **res, size_t *len, size_t *index, double timeout)
{
    if (it->k.yielded == it->n) {
        mp__progress_end(it->c, &it->prog); /* (once: off the list after) */
        return MP_EDONE;
    }
    if (items_cursor_next(&it->k, res, len, index))
        return 0;
    int rc;
    for (;;) {
        if (!it->in_piece && (rc = next_piece(it, timeout)) < 0)
            return rc;
        if (it->k.handed < it->k.count)
            break;
        release_piece(it);
    }
    size_t idx = it->k.first + it->k.handed;
    items_rec r;
    size_t next = it->k.res_pos;
    bool have = items_next_rec(it->k.res, it->k.res_len, &next, &r);
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
        it->k.handed++;
        it->k.yielded++;
        if (it->cur.r) {
            if (it->fail.code == 0) {
                /* (a piece that failed was counted where it ended: its
                 * worker, the supervisor, MPI's sender; a short one not) */
                atomic_fetch_add_explicit(&it->c->died_done, 1, memory_order_relaxed);
                atomic_fetch_add_explicit(&it->c->died_failed, 1, memory_order_relaxed);
            }
            resend_rest(it);
        }
        it->k.last_ok = false;
        it->died = f;
        it->died_last = true;
        it->last = info_outcome(&f);
        return f.code;
    }
    size_t body_at = it->k.res_pos + sizeof r;
    it->k.res_pos = next;
    it->k.handed++;
    it->k.yielded++;
    if (r.len & ITEM_FAILED) {
        it->k.last_ok = false;
        it->died_last = false;
        it->last = (r.len & ITEM_ERROR) ? (task_outcome){.code = r.rc}
                                        : (task_outcome){.code = MP_ETASK, .task_rc = r.rc};
        return it->last.code;
    }
    it->k.last_ok = true;
    *res = it->k.res + body_at;
    *len = r.len;
    return 0;
}

int mp__items_info(items_iter *it, mp_task_info *info)
{
    if (it->k.yielded == 0)
        return -EAGAIN;
    *info = it->k.last_ok ? (mp_task_info){0} : it->died_last ? it->died : outcome_info(it->last);
    return 0;
}
