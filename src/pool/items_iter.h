/* The iterator of imap_items (items.c), behind mp_iter (iter.c, which
 * calls it; it never calls iter.c). */
#ifndef MPROC_POOL_ITEMS_ITER_H
#define MPROC_POOL_ITEMS_ITER_H

#include <stddef.h>

#include "mproc/pool.h"
#include "pool/items.h"

typedef struct items_iter items_iter;

/* Where an items iterator is in the piece it hands out, as the way of
 * most items needs it: an items_iter begins with one, so that
 * mp_iter_next_item hands out an item whose record is whole and did not
 * fail without a call (items_cursor_next); every other case goes to
 * mp__items_next. */
typedef struct {
    const unsigned char *res;   /* the piece's records (a worker's: checked) */
    size_t res_len, res_pos;
    size_t first;               /* its first item */
    uint32_t handed, count;     /* its items handed out, of count (0 of 0
                                   between pieces) */
    size_t yielded;             /* items handed out in all */
    bool last_ok;               /* the last one handed out succeeded */
} items_cursor;

/* Hand out the next item of the cursor's piece if its record is whole
 * and it succeeded: true and *res, *len, *index (if not NULL). */
static inline bool items_cursor_next(items_cursor *k, const void **res, size_t *len,
                                     size_t *index)
{
    if (k->handed >= k->count || k->res_len - k->res_pos < sizeof(items_rec))
        return false;
    const unsigned char *at = k->res + k->res_pos;
    items_rec r;
    memcpy(&r, at, sizeof r);
    size_t body = items_align(r.len);
    if ((r.len & ITEM_FAILED) || body > k->res_len - k->res_pos - sizeof r)
        return false;
    *res = at + sizeof r;
    *len = r.len;
    if (index)
        *index = k->first + k->handed;
    k->res_pos += sizeof r + body;
    k->handed++;
    k->yielded++;
    k->last_ok = true;
    return true;
}

/* mp_iter_next_item on an items iterator. */
int mp__items_next(items_iter *it, const void **res, size_t *len, size_t *index, double timeout);
/* mp_iter_info on it: 0 or -EAGAIN (nothing handed out yet). */
int mp__items_info(items_iter *it, mp_task_info *info);
/* Cancel what is not done and free it. */
void mp__items_free(items_iter *it);
/* mp_pool_imap_items, but the iterator is ours (iter.c wraps it in an
 * mp_iter). */
int mp__items_start(mp_pool *p, mp_task_fn fn, const mp_item *items, size_t n, size_t chunksize,
                    bool ordered, items_iter **out);

#endif
