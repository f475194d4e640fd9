/* imap: a map batch whose results are handed out as chunks are done, in
 * index order or in the order they end (batch.h's `order`).
 *
 * The batch owns its output array (where the workers write it: the shared
 * heap for process pools) and stages its whole input at the start, so
 * that it goes on while the caller does not look at it.  A chunk is done
 * only once its failures are recorded (map.c), so the failures of a chunk
 * handed out are known. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "os/os.h"
#include "pool/items_iter.h"
#include "pool/map.h"
#include "wait_int.h"

struct mp_iter {
    map_batch *mb;
    pid_t owner;
    bool ordered;
    size_t yielded;             /* items handed out */
    uint32_t taken;             /* chunks entered (ordered: also the next) */
    uint32_t k;                 /* the chunk being handed out */
    uint32_t item, cnt;         /* ... its next item, its items */
    bool in_chunk;
    mp_map_error *cerrs;        /* failures of the current chunk */
    size_t ncerrs, cerr_pos;
    bool any;                   /* an item has been handed out */
    bool last_failed;           /* ... the last one failed: */
    mp_task_info last;          /*   why (copied only then: per item, small) */
    items_iter *items;          /* imap_items: all is there (items.c) */
};

int mp_pool_imap_items(mp_pool *p, mp_task_fn fn, const mp_item *items, size_t n,
                       size_t chunksize, bool ordered, mp_iter **out)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    mp_iter *it = calloc(1, sizeof *it);
    if (it == NULL)
        return -ENOMEM;
    int rc = mp__items_start(p, fn, items, n, chunksize, ordered, &it->items);
    if (rc < 0) {
        free(it);
        return rc;
    }
    it->owner = mp__getpid();
    *out = it;
    return 0;
}

int mp_pool_imap(mp_pool *p, mp_map_fn fn, const void *in, size_t n, size_t in_size,
                 size_t out_size, size_t chunksize, bool ordered, mp_iter **out)
{
    return mp__pool_imap_fn(p, fn, false, in, n, in_size, out_size, chunksize, ordered, out);
}

int mp__pool_imap_fn(mp_pool *p, mp_map_fn fn, bool range, const void *in, size_t n,
                     size_t in_size, size_t out_size, size_t chunksize, bool ordered,
                     mp_iter **out)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    mp_iter *it = calloc(1, sizeof *it);
    if (it == NULL)
        return -ENOMEM;
    map_batch *mb;
    int rc = mp__map_start(p, fn, range, in, n, in_size, NULL, out_size, chunksize, false, &mb);
    if (rc < 0) {
        free(it);
        return rc;
    }
    it->mb = mb;
    it->owner = mp__getpid();
    it->ordered = ordered;
    *out = it;
    return 0;
}

/* The chunk to hand out next, when it is done: its index, or -1. */
static int64_t next_chunk(mp_iter *it)
{
    batch_shm *b = it->mb->shm;
    uint32_t nchunks = it->mb->geom.nchunks;
    if (it->taken >= nchunks)
        return -1;
    if (it->ordered) {
        uint32_t k = it->taken;
        return atomic_load_explicit(&b->chunks[k].claim, memory_order_acquire) == CHUNK_DONE
                   ? (int64_t)k
                   : -1;
    }
    if (atomic_load(&b->ndone) <= it->taken)
        return -1;
    uint32_t k = atomic_load_explicit(&mp__batch_order(b, nchunks)[it->taken],
                                      memory_order_acquire);
    return k >= nchunks ? -1 : (int64_t)k; /* (being written, or scribbled) */
}

static bool chunk_ready(void *arg)
{
    mp_iter *it = arg;
    return next_chunk(it) >= 0 || mp__map_over(it->mb);
}

static int enter_chunk(mp_iter *it, int64_t deadline)
{
    map_batch *mb = it->mb;
    batch_shm *b = mb->shm;
    int rc = mp__wait_word(&b->events, &b->waiters, chunk_ready, it, deadline, MP__WAIT_SPIN);
    if (rc < 0)
        return MP_ETIMEDOUT;
    int64_t k = next_chunk(it);
    if (k < 0) {
        /* Over without it: cancelled, or order is being written (then the
         * wait ended on its way: look again). */
        if (atomic_load(&b->ndone) > it->taken && !it->ordered)
            return enter_chunk(it, deadline);
        return MP_ECANCELED;
    }
    size_t first;
    uint32_t cnt;
    mp__batch_range(&mb->geom, (uint32_t)k, &first, &cnt);
    free(it->cerrs);
    it->cerrs = NULL;
    it->ncerrs = it->cerr_pos = 0;
    pthread_mutex_lock(&mb->lock);
    size_t m = 0;
    for (size_t i = 0; i < mb->nerrs; i++)
        if (mb->errs[i].index >= first && mb->errs[i].index < first + cnt)
            m++;
    if (m) {
        it->cerrs = malloc(m * sizeof *it->cerrs);
        if (it->cerrs == NULL) {
            pthread_mutex_unlock(&mb->lock);
            return -ENOMEM;
        }
        for (size_t i = 0; i < mb->nerrs; i++)
            if (mb->errs[i].index >= first && mb->errs[i].index < first + cnt)
                it->cerrs[it->ncerrs++] = (mp_map_error){
                    (size_t)mb->errs[i].index, mp__map_err_info(mb, &mb->errs[i])};
    }
    bool oom = mb->oom;
    pthread_mutex_unlock(&mb->lock);
    if (oom)
        return -ENOMEM; /* a failure was lost: results cannot be trusted */
    if (it->ncerrs > 1) {
        /* index order within the chunk */
        for (size_t i = 1; i < it->ncerrs; i++)
            for (size_t j = i; j > 0 && it->cerrs[j - 1].index > it->cerrs[j].index; j--) {
                mp_map_error t = it->cerrs[j];
                it->cerrs[j] = it->cerrs[j - 1];
                it->cerrs[j - 1] = t;
            }
    }
    it->taken++;
    it->k = (uint32_t)k;
    it->item = 0;
    it->cnt = cnt;
    it->in_chunk = true;
    return 0;
}

/* The next item of a map iterator: *item set and its index in *idx_out,
 * returning 0 or its failure; or an error with no item. */
static int next_index(mp_iter *it, size_t *idx_out, bool *item, double timeout)
{
    *item = false;
    int64_t deadline;
    int rc = mp__deadline(timeout, &deadline);
    if (rc < 0)
        return rc;
    const batch_geom *b = &it->mb->geom;
    if (it->yielded == b->n) {
        mp__progress_end(it->mb->c, &it->mb->prog); /* (once: off the list after) */
        return MP_EDONE;
    }
    if (!it->in_chunk && (rc = enter_chunk(it, deadline)) < 0)
        return rc;
    size_t idx = (size_t)it->k * b->chunk + it->item;
    if (++it->item == it->cnt)
        it->in_chunk = false;
    it->yielded++;
    it->any = true;
    *idx_out = idx;
    *item = true;
    if (it->cerr_pos < it->ncerrs && it->cerrs[it->cerr_pos].index == idx) {
        it->last = it->cerrs[it->cerr_pos++].info;
        it->last_failed = true;
        return it->last.code;
    }
    it->last_failed = false;
    return 0;
}

int mp_iter_next(mp_iter *it, void *out, size_t *index, double timeout)
{
    if (it == NULL || it->items)
        return -EINVAL;
    if (it->owner != mp__getpid())
        return -EPERM;
    size_t idx = 0;
    bool item;
    int rc = next_index(it, &idx, &item, timeout);
    if (!item)
        return rc;
    if (index)
        *index = idx;
    const batch_geom *b = &it->mb->geom;
    if (rc == 0 && out && b->out_size)
        memcpy(out, b->out + idx * b->out_size, b->out_size);
    return rc;
}

int mp_iter_next_item(mp_iter *it, const void **res, size_t *len, size_t *index, double timeout)
{
    if (res)
        *res = NULL;
    if (len)
        *len = 0;
    if (it == NULL || res == NULL)
        return -EINVAL;
    if (it->owner != mp__getpid())
        return -EPERM;
    size_t l = 0;
    int rc;
    if (it->items) {
        /* (an items_iter begins with its cursor: items_iter.h) */
        if (items_cursor_next((items_cursor *)(void *)it->items, res, &l, index))
            rc = 0;
        else
            rc = mp__items_next(it->items, res, &l, index, timeout);
    } else {
        size_t idx = 0;
        bool item;
        rc = next_index(it, &idx, &item, timeout);
        if (!item)
            return rc;
        if (index)
            *index = idx;
        const batch_geom *b = &it->mb->geom;
        if (rc == 0) {
            *res = b->out + idx * b->out_size; /* (the iterator's own array) */
            l = b->out_size;
        }
    }
    if (len)
        *len = l;
    return rc;
}

int mp_iter_info(mp_iter *it, mp_task_info *info)
{
    if (it == NULL || info == NULL)
        return -EINVAL;
    if (it->owner != mp__getpid())
        return -EPERM;
    if (it->items)
        return mp__items_info(it->items, info);
    if (!it->any)
        return -EAGAIN;
    *info = it->last_failed ? it->last : (mp_task_info){0};
    return 0;
}

void mp__iter_cancel(mp_iter *it) { mp__map_cancel(it->mb); }

static bool batch_over(void *arg) { return mp__map_over(arg); }

int mp__iter_wait_all(mp_iter *it, double timeout, void *out, mp_map_error **errs,
                      size_t *nerrs)
{
    map_batch *mb = it->mb;
    batch_shm *bs = mb->shm;
    const batch_geom *b = &mb->geom;
    int64_t deadline;
    int rc = mp__deadline(timeout, &deadline);
    if (rc < 0)
        return rc;
    if (mp__wait_word(&bs->events, &bs->waiters, batch_over, mb, deadline, MP__WAIT_SPIN) < 0)
        return MP_ETIMEDOUT;
    if (atomic_load(&bs->ndone) < b->nchunks)
        return MP_ECANCELED;
    pthread_mutex_lock(&mb->lock);
    if (mb->oom) {
        pthread_mutex_unlock(&mb->lock);
        return -ENOMEM;
    }
    if (b->out_size && b->n)
        memcpy(out, b->out, b->n * b->out_size);
    rc = mp__map_take_errors(mb, errs, nerrs);
    pthread_mutex_unlock(&mb->lock);
    return rc;
}

void mp_iter_free(mp_iter *it)
{
    if (it == NULL || it->owner != mp__getpid())
        return;
    if (it->items) {
        mp__items_free(it->items);
        free(it);
        return;
    }
    map_batch *mb = it->mb;
    mp__progress_drop(mb->c, &mb->prog);
    mp__map_cancel(mb);
    mp__map_wait_helpers(mb); /* nobody writes the output any more */
    const batch_geom *b = &mb->geom;
    if (b->out) {
        if (mp__heap_contains(b->out))
            mp__heap_free(b->out);
        else
            free(b->out);
    }
    free(it->cerrs);
    mp__map_unref(mb);
    free(it);
}
