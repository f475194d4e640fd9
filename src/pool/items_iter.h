/* The iterator of imap_items (items.c), behind mp_iter (iter.c, which
 * calls it; it never calls iter.c). */
#ifndef MPROC_POOL_ITEMS_ITER_H
#define MPROC_POOL_ITEMS_ITER_H

#include <stddef.h>

#include "mproc/pool.h"

typedef struct items_iter items_iter;

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
