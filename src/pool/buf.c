/* A task's result buffer: see buf.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "copy_int.h"
#include "heap_int.h"
#include "pool/buf.h"

/* Grow b's block so that `more` bytes fit past its length. */
static int grow(mp_buf *b, size_t more)
{
    if (more > SIZE_MAX / 2 - b->len)
        return b->err = -ENOMEM;
    size_t need = b->len + more, cap = b->cap * 2;
    if (cap < need)
        cap = need;
    if (cap < 4096)
        cap = 4096;
    int err = 0;
    unsigned char *p = mp__heap_alloc(cap, &err);
    if (p == NULL)
        return b->err = err ? err : -ENOMEM;
    if (b->len)
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
    return 0;
}

int mp_buf_append(mp_buf *b, const void *data, size_t len)
{
    if (b == NULL || (data == NULL && len > 0))
        return -EINVAL;
    if (len == 0)
        return 0;
    if (len > b->cap - b->len) {
        int rc = grow(b, len);
        if (rc < 0)
            return rc;
    }
    mp__copy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

int mp__buf_reserve(mp_buf *b, size_t more)
{
    if (more <= b->cap - b->len)
        return 0;
    int rc = grow(b, more);
    if (rc < 0)
        b->err = 0; /* (a wish: the appends that need the room fail) */
    return rc;
}

void mp__buf_drop_stale(mp_buf *b)
{
    mp__heap_free(b->stale);
    b->stale = NULL;
}
