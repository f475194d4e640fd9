/* The shared heap's chunk pool: spans of whole 64 KiB chunks, their bins,
 * coalescing, and the undo log that makes every change crash-safe (see
 * the design note atop heap.c).
 *
 * A free span waits in bin k when it has 2^k .. 2^(k+1)-1 chunks.  A
 * request for n chunks looks at a few spans of n's own bin, then takes any
 * span of a larger bin (all fit), then the wilderness past the bump
 * pointer, and only then all of n's bin.  The rest of the span it takes is
 * filed again.  A span given back merges with the free span that ends
 * where it starts (the tail mark of that span's last chunk says where it
 * begins), with the free span that starts where it ends, and with the
 * wilderness when it reaches the bump pointer. */
#define _GNU_SOURCE
#include <stdlib.h>

#include "heap_meta.h"
#include "mproc/error.h"
#include "os/os.h"

/* ---- the undo log ---- */

/* A holder of the lock died: undo its operation, newest store first. */
void mp__heap_roll_back(void)
{
    uint32_t n = atomic_load_explicit(&mp__heap->undo_n, memory_order_relaxed);
    if (n > UNDO_MAX)
        abort(); /* broken invariant */
    while (n-- > 0) {
        undo_rec *u = &mp__heap->undo[n];
        char *word = (char *)mp__heap + (u->where & ~(uint64_t)1);
        if (u->where & 1)
            *(uint64_t *)word = u->old;
        else
            *(uint32_t *)word = (uint32_t)u->old;
    }
    commit();
}

/* ---- lists of chunks: bins of free spans, classes' partial chunks ---- */

void mp__chunks_push(uint32_t *head, uint32_t chunk)
{
    chunk_rec *r = rec(chunk);
    set32(&r->prev, 0);
    set32(&r->next, *head);
    if (*head)
        set32(&rec(*head - 1)->prev, chunk + 1);
    set32(head, chunk + 1);
}

/* Put chunk right after `after` in its list. */
void mp__chunks_insert_after(uint32_t after, uint32_t chunk)
{
    chunk_rec *a = rec(after), *r = rec(chunk);
    set32(&r->prev, after + 1);
    set32(&r->next, a->next);
    if (a->next)
        set32(&rec(a->next - 1)->prev, chunk + 1);
    set32(&a->next, chunk + 1);
}

void mp__chunks_unlink(uint32_t *head, uint32_t chunk)
{
    chunk_rec *r = rec(chunk);
    if (r->prev)
        set32(&rec(r->prev - 1)->next, r->next);
    else
        set32(head, r->next);
    if (r->next)
        set32(&rec(r->next - 1)->prev, r->prev);
    set32(&r->prev, 0);
    set32(&r->next, 0);
}

/* ---- spans of chunks ---- */


/* Make [chunk, chunk + len) a free span in its bin. */
static void span_file(uint32_t chunk, uint32_t len)
{
    chunk_rec *r = rec(chunk);
    unsigned b = bin_of(len);
    set32(&r->kind, K_FREE);
    set32(&r->len, len);
    set32(&rec(chunk + len - 1)->tail_of, chunk + 1);
    mp__chunks_push(&mp__heap->bin_head[b], chunk);
    set32(&mp__heap->bin_map, mp__heap->bin_map | 1u << b);
    set64(&mp__heap->free_chunks, mp__heap->free_chunks + len);
}

/* Take the free span at chunk out of its bin: its chunks become K_NONE. */
static void span_unfile(uint32_t chunk)
{
    chunk_rec *r = rec(chunk);
    uint32_t len = r->len;
    unsigned b = bin_of(len);
    mp__chunks_unlink(&mp__heap->bin_head[b], chunk);
    if (mp__heap->bin_head[b] == 0)
        set32(&mp__heap->bin_map, mp__heap->bin_map & ~(1u << b));
    set32(&rec(chunk + len - 1)->tail_of, 0);
    set32(&r->kind, K_NONE);
    set64(&mp__heap->free_chunks, mp__heap->free_chunks - len);
}

/* A free span of at least need chunks, or UINT32_MAX.  Looks at a few of
 * need's own bin, then takes any span of a larger bin, then the
 * wilderness; all of need's bin only when nothing else is left. */
static uint32_t span_find(uint32_t need)
{
    unsigned b = bin_of(need);
    uint32_t c = mp__heap->bin_head[b];
    for (int i = 0; c && i < BIN_SCAN; i++, c = rec(c - 1)->next)
        if (rec(c - 1)->len >= need)
            return c - 1;
    uint32_t larger = b + 1 < NBINS ? mp__heap->bin_map & ~((2u << b) - 1) : 0;
    if (larger)
        return mp__heap->bin_head[__builtin_ctz(larger)] - 1;
    if (mp__heap->nchunks - mp__heap->bump >= need)
        return UINT32_MAX - 1; /* the wilderness */
    for (; c; c = rec(c - 1)->next)
        if (rec(c - 1)->len >= need)
            return c - 1;
    return UINT32_MAX;
}

/* Take need chunks; their records are K_NONE.  UINT32_MAX: none left. */
uint32_t mp__span_take(uint32_t need)
{
    uint32_t c = span_find(need);
    if (c == UINT32_MAX)
        return c;
    if (c == UINT32_MAX - 1) {
        c = mp__heap->bump;
        set32(&mp__heap->bump, c + need);
        return c;
    }
    uint32_t len = rec(c)->len;
    span_unfile(c);
    if (len > need)
        span_file(c + need, len - need);
    return c;
}

/* Give [chunk, chunk + len) back, merged with its free neighbours. */
void mp__span_give(uint32_t chunk, uint32_t len)
{
    set32(&rec(chunk)->kind, K_NONE);
    if (chunk > 0 && rec(chunk - 1)->tail_of) {
        uint32_t left = rec(chunk - 1)->tail_of - 1;
        len += rec(left)->len;
        span_unfile(left);
        chunk = left;
    }
    uint32_t end = chunk + len;
    if (end < mp__heap->bump && rec(end)->kind == K_FREE) {
        len += rec(end)->len;
        span_unfile(end);
    }
    if (chunk + len == mp__heap->bump)
        set32(&mp__heap->bump, chunk); /* back to the wilderness */
    else
        span_file(chunk, len);
}

/* Every class gives up the empty chunk it keeps (one commit each). */
bool mp__heap_release_empty(void)
{
    bool any = false;
    for (int c = 0; c < NSMALL; c++) {
        uint32_t h = mp__heap->partial[c];
        if (h == 0 || used_of(rec(h - 1)) != 0)
            continue;
        mp__chunks_unlink(&mp__heap->partial[c], h - 1);
        mp__span_give(h - 1, 1);
        commit();
        any = true;
    }
    return any;
}

