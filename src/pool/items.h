/* imap_items: items of any size, run in chunks ("pieces") as apply tasks
 * of one internal task, mp__items_task, whose argument and result are laid
 * out here.
 *
 * Argument:  items_head | uint32_t len[count] | pad to 8 | the items, each
 *            at an 8-aligned offset
 * Result:    for each item run, in order: items_rec | its bytes | pad to 8
 *
 * The task publishes its result in its job after every item (buf.h's
 * pinning), so that when its worker dies or is killed at an item's
 * deadline, the items before are kept, the one it was on fails with the
 * worker's end, and the rest go out again as another piece. */
#ifndef MPROC_POOL_ITEMS_H
#define MPROC_POOL_ITEMS_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "mproc/pool.h"
#include "os/fnref.h"
#include "export_int.h"

#define ITEMS_MAGIC 0x736d657469706dULL /* "mpitems" */
#define ITEMS_BY_REF 1u                 /* fn travels as ref: MPI's sender
                                           sets it, the rank resolves it */

typedef struct {
    uint64_t magic;
    mp_task_fn fn;
    mp__fnref ref;
    uint32_t flags;
    uint32_t count;
} items_head;

typedef struct {
    uint32_t len;               /* bytes of the result, or ITEM_FAILED | ... */
    int32_t rc;                 /* failed: fn's value, or the error */
} items_rec;

#define ITEM_FAILED 0x80000000u  /* fn returned rc (MP_ETASK) */
#define ITEM_ERROR 0x40000000u   /* with FAILED: rc is the error itself */
#define ITEM_LEN_MAX 0x3fffffffu

static inline size_t items_align(size_t n) { return (n + 7) & ~(size_t)7; }

/* Read the record at *at of a piece's result (len bytes, written by a
 * worker: checked): false past the last whole one; else *r, and *at moved
 * past it and its bytes. */
static inline bool items_next_rec(const void *res, size_t len, size_t *at, items_rec *r)
{
    if (res == NULL || *at > len || len - *at < sizeof *r)
        return false;
    memcpy(r, (const unsigned char *)res + *at, sizeof *r);
    size_t body = r->len & ITEM_FAILED ? 0 : items_align(r->len);
    if (body > len - *at - sizeof *r)
        return false;
    *at += sizeof *r + body;
    return true;
}

/* The task that runs a piece's items (in a worker). */
MP_INTERNAL int mp__items_task(const void *arg, size_t len, mp_buf *res);

#endif
