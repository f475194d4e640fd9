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

/* Publish the buffer's bytes so far in job j (res, res_len) and free the
 * block this replaces, if any. */
MP_INTERNAL void mp__buf_publish(mp_buf *b, job_shm *j);

#endif
