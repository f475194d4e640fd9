/* The FIFO queue's ring (queue_fifo.c), behind mp_queue for MP_FIFO. */
#ifndef MPROC_QUEUE_INT_H
#define MPROC_QUEUE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mproc/queue.h"

typedef struct mp__fifo mp__fifo;

/* A ring in the shared heap; maxsize 0: unbounded.  0 or -errno. */
int mp__fifo_new(mp__fifo **out, size_t maxsize);
void mp__fifo_free(mp__fifo *f);
/* Arguments are checked by the caller.  The returns of mp_queue_put. */
int mp__fifo_put(mp__fifo *f, const void *data, size_t len, int64_t deadline);
/* Into buf (cap bytes), or, if out is not NULL, into a malloc'd buffer
 * stored in *out.  The returns of mp_queue_get / mp_queue_get_alloc. */
int mp__fifo_get(mp__fifo *f, void *buf, size_t cap, size_t *len, void **out,
                 int64_t deadline);
size_t mp__fifo_qsize(mp__fifo *f);
bool mp__fifo_full(mp__fifo *f);
int mp__fifo_task_done(mp__fifo *f);
int mp__fifo_join(mp__fifo *f, int64_t deadline);
/* mp_queue_shutdown: puts fail from now on; immediate: the queued
 * messages are dropped (and count as done for join). */
void mp__fifo_shutdown(mp__fifo *f, bool immediate);

#endif
