/* A task's result buffer (mp_buf): bytes appended by the task, first in
 * the room left in its job, then in a shared heap block that grows.  Only
 * the worker running the task touches it.
 *
 * Pinning, for tasks whose partial result must outlive a crash (items
 * chunks, items_task.c): the block last published in the job (`pinned`)
 * is not freed when the buffer grows, only once the next publication no
 * longer names it, so that whatever instruction the worker dies at, the
 * job names a live block holding every byte published. */
#ifndef MPROC_POOL_BUF_H
#define MPROC_POOL_BUF_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "mproc/pool.h"
#include "pool/job.h"
#include "export_int.h"

struct mp_buf {
    unsigned char *data;
    size_t len, cap;
    bool heap;                  /* data is a heap block of ours */
    int err;                    /* an append failed */
    const unsigned char *pinned; /* published in the job: kept on growth */
    unsigned char *stale;       /* ... the pinned block outgrown: freed at
                                   the next publication */
};

/* (mp__buf_publish) Free the block the last publication replaced. */
MP_INTERNAL void mp__buf_drop_stale(mp_buf *b);

/* Publish the buffer's bytes so far in job j (res, res_len) and free the
 * block this replaces, if any. */
static inline void mp__buf_publish(mp_buf *b, job_shm *j)
{
    /* The pointer first, then the length: a crash between leaves the new
     * block with the old length, which it holds (a copy). */
    j->res = b->data;
    atomic_signal_fence(memory_order_seq_cst);
    j->res_len = b->len;
    b->pinned = b->data;
    if (b->stale)
        mp__buf_drop_stale(b);
}

/* Make room for `more` bytes past the buffer's length now, in one block,
 * so that appends up to it neither copy nor allocate; 0, or the error
 * (the buffer is then as before, with no error recorded). */
MP_INTERNAL int mp__buf_reserve(mp_buf *b, size_t more);

#endif
