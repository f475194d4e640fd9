/* A task's result buffer: see buf.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "heap_int.h"
#include "pool/buf.h"

int mp_buf_append(mp_buf *b, const void *data, size_t len)
{
    if (b == NULL || (data == NULL && len > 0))
        return -EINVAL;
    if (len == 0)
        return 0;
    if (len > b->cap - b->len) {
        if (len > SIZE_MAX / 2 - b->len)
            return b->err = -ENOMEM;
        size_t need = b->len + len, cap = b->cap * 2;
        if (cap < need)
            cap = need;
        if (cap < 4096)
            cap = 4096;
        int err = 0;
        unsigned char *p = mp__heap_alloc(cap, &err);
        if (p == NULL)
            return b->err = err ? err : -ENOMEM;
        memcpy(p, b->data, b->len);
        if (b->heap) {
            if (b->data == b->pinned)
                b->stale = b->data; /* still named by the job */
            else
                mp__heap_free(b->data);
        }
        b->data = p;
        b->cap = mp__heap_block_size(p);
        b->heap = true;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

void mp__buf_publish(mp_buf *b, job_shm *j)
{
    /* The pointer first, then the length: a crash between leaves the new
     * block with the old length, which it holds (a copy). */
    j->res = b->data;
    atomic_signal_fence(memory_order_seq_cst);
    j->res_len = b->len;
    b->pinned = b->data;
    if (b->stale) {
        mp__heap_free(b->stale);
        b->stale = NULL;
    }
}
