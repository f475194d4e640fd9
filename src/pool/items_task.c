/* The worker's side of imap_items: run a piece's items one by one and
 * publish the result after each (items.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "copy_int.h"
#include "mproc/error.h"
#include "os/os.h"
#include "pool/buf.h"
#include "pool/items.h"
#include "pool/worker.h"

static const unsigned char zeros[8];

int mp__items_task(const void *arg, size_t len, mp_buf *res)
{
    const items_head *h = arg;
    if (len < sizeof *h || h->magic != ITEMS_MAGIC ||
        h->count > (len - sizeof *h) / sizeof(uint32_t))
        return -EPROTO;
    const uint32_t *lens = (const uint32_t *)(h + 1);
    size_t at = items_align(sizeof *h + (size_t)h->count * sizeof *lens);
    if (at > len)
        return -EPROTO;
    /* (an MPI rank resolves a reference before the piece gets here) */
    mp_task_fn fn = h->fn;
    if ((h->flags & ITEMS_BY_REF) || fn == NULL)
        return MP_EFUNC;
    const unsigned char *data = (const unsigned char *)arg + at;
    size_t room = len - at, off = 0;
    job_shm *j = mp__worker_job();
    item_counts n = mp__worker_item_counts();
    /* Room for results the size of the items, and a record each: for most
     * functions no growth (a copy of all so far) on the way. */
    mp__buf_reserve(res, room + (size_t)h->count * sizeof(items_rec));
    uint32_t i;
    for (i = 0; i < h->count; i++) {
        if (lens[i] > room - off)
            break; /* (malformed: the parent sees a short result) */
        if (j && j->timeout_ns)
            atomic_store_explicit(&j->item_start, mp__now_ns(), memory_order_relaxed);
        size_t head_at = res->len;
        if (res->cap - res->len < sizeof(items_rec) &&
            mp_buf_append(res, &(items_rec){0}, sizeof(items_rec)) < 0)
            break; /* no room left: the parent fails the item (-ENOMEM) */
        res->len = head_at + sizeof(items_rec);
        size_t body = res->len;
        int rc = fn(data + off, lens[i], res);
        int err = res->err;
        size_t out = res->len - body;
        if (rc == 0 && err == 0 && out > ITEM_LEN_MAX)
            err = MP_ETOOBIG;
        if (rc == 0 && err == 0 && res->len % 8) {
            size_t pad = 8 - res->len % 8;
            if (res->cap - res->len >= pad) {
                mp__copy(res->data + res->len, zeros, pad);
                res->len += pad;
            } else if (mp_buf_append(res, zeros, pad) < 0) {
                err = res->err;
            }
        }
        /* (the record's place may have moved as the buffer grew) */
        items_rec *r = (items_rec *)(void *)(res->data + head_at);
        bool failed = rc != 0 || err != 0;
        if (failed) {
            res->len = body;
            res->err = 0;
            r->len = ITEM_FAILED | (rc == 0 ? ITEM_ERROR : 0);
            r->rc = rc != 0 ? rc : err;
        } else {
            r->len = (uint32_t)out;
            r->rc = 0;
        }
        if (j)
            mp__buf_publish(res, j);
        item_count_add(n.done, 1);
        if (failed)
            item_count_add(n.failed, 1);
        off += items_align(lens[i]);
    }
    return 0; /* (the items not run: the parent counts them) */
}
