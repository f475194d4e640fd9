/* The iterator of imap_items (items.c), behind mp_iter (iter.c). */
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
/* (iter.c) An mp_iter for it: 0 or -ENOMEM. */
int mp__iter_wrap_items(items_iter *it, mp_iter **out);

#endif
