/* Checking every list and span of the shared heap (tests: after a process
 * was killed inside the allocator, the metadata must be whole). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>

#include "heap_int.h"
#include "heap_meta.h"

/* ---- checking (tests) ---- */

#define BAD(...) do { snprintf(why, cap, __VA_ARGS__); return -EUCLEAN; } while (0)

static int check_small(uint32_t chunk, char *why, size_t cap, uint64_t *in_use,
                       uint64_t *blocks)
{
    chunk_rec *r = rec(chunk);
    int c = (int)(r->kind - K_SMALL);
    uint32_t n = class_blocks(c), first = chunk * BLOCKS_PER_CHUNK_MAX, live = 0, nfree = 0;
    if (carved_of(r) > n || used_of(r) > carved_of(r))
        BAD("chunk %u: carved %u, used %u of %u", chunk, carved_of(r), used_of(r), n);
    for (uint32_t i = 0; i < carved_of(r); i++)
        live += entry(first + i)->link == ALLOCATED;
    for (uint32_t f = free_head_of(r); f; f = entry(first + f - 1)->link) {
        if (f - 1 >= carved_of(r) || ++nfree > carved_of(r))
            BAD("chunk %u: free list broken at %u", chunk, f - 1);
    }
    if (live != used_of(r) || nfree != (uint32_t)(carved_of(r) - used_of(r)))
        BAD("chunk %u: %u live, %u free, used %u, carved %u", chunk, live, nfree, used_of(r),
            carved_of(r));
    *in_use += (uint64_t)live * small_sizes[c];
    *blocks += live;
    return 0;
}

/* Walk every list and span: 0, or -EUCLEAN with what is wrong in why. */
int mp__heap_check(char *why, size_t cap)
{
    int rc = mp__heap_ensure();
    if (rc < 0)
        return rc;
    mp__heap_lock();
    uint64_t in_use = 0, blocks = 0, free_chunks = 0;
    uint32_t nfree = 0, nsmall[NSMALL] = {0};
    bool prev_free = false;
    rc = 0;
    if (atomic_load(&mp__heap->undo_n) != 0)
        snprintf(why, cap, "%u stores of an operation not undone", atomic_load(&mp__heap->undo_n)),
            rc = -EUCLEAN;
    else if (mp__heap->bump > mp__heap->nchunks)
        snprintf(why, cap, "bump %u past %zu chunks", mp__heap->bump, mp__heap->nchunks), rc = -EUCLEAN;
    for (uint32_t c = 0; rc == 0 && c < mp__heap->bump;) {
        chunk_rec *r = rec(c);
        uint32_t len = r->kind >= K_SMALL ? 1 : r->len;
        if (r->kind == K_NONE || r->kind >= K_SMALL + (uint32_t)NSMALL || len == 0 ||
            len > mp__heap->bump - c) {
            snprintf(why, cap, "chunk %u: kind %u, len %u", c, r->kind, len);
            rc = -EUCLEAN;
            break;
        }
        for (uint32_t i = 1; i < len && rc == 0; i++)
            if (rec(c + i)->kind != K_NONE)
                snprintf(why, cap, "chunk %u inside span %u has kind %u", c + i, c,
                         rec(c + i)->kind), rc = -EUCLEAN;
        for (uint32_t i = 0; i + 1 < len && rc == 0; i++)
            if (rec(c + i)->tail_of)
                snprintf(why, cap, "chunk %u inside span %u is marked a tail", c + i, c),
                    rc = -EUCLEAN;
        if (rc)
            break;
        if (r->kind == K_FREE) {
            if (prev_free)
                snprintf(why, cap, "free span %u follows a free span", c), rc = -EUCLEAN;
            else if (rec(c + len - 1)->tail_of != c + 1)
                snprintf(why, cap, "free span %u: tail mark %u", c, rec(c + len - 1)->tail_of),
                    rc = -EUCLEAN;
            else if (c + len == mp__heap->bump)
                snprintf(why, cap, "free span %u ends at the wilderness", c), rc = -EUCLEAN;
            free_chunks += len;
            nfree++;
        } else if (rec(c + len - 1)->tail_of) {
            snprintf(why, cap, "span %u (kind %u) has a tail mark", c, r->kind), rc = -EUCLEAN;
        } else if (r->kind == K_LARGE) {
            block_entry *e = entry(c * BLOCKS_PER_CHUNK_MAX);
            if (e->link == ALLOCATED) {
                in_use += (uint64_t)len << CHUNK_SHIFT;
                blocks++;
            }
        } else {
            rc = check_small(c, why, cap, &in_use, &blocks);
            nsmall[r->kind - K_SMALL]++;
        }
        prev_free = r->kind == K_FREE;
        c += len;
    }
    /* The bins hold exactly the free spans, each in its own bin. */
    uint32_t listed = 0;
    for (unsigned b = 0; rc == 0 && b < NBINS; b++) {
        uint32_t prev = 0;
        if (!!(mp__heap->bin_map & 1u << b) != (mp__heap->bin_head[b] != 0))
            snprintf(why, cap, "bin %u: map bit wrong", b), rc = -EUCLEAN;
        for (uint32_t f = mp__heap->bin_head[b]; rc == 0 && f; prev = f, f = rec(f - 1)->next) {
            chunk_rec *r = rec(f - 1);
            if (f > mp__heap->bump || r->kind != K_FREE || bin_of(r->len) != b || r->prev != prev ||
                ++listed > nfree)
                snprintf(why, cap, "bin %u: span %u misfiled", b, f - 1), rc = -EUCLEAN;
        }
    }
    if (rc == 0 && listed != nfree)
        snprintf(why, cap, "%u free spans, %u in bins", nfree, listed), rc = -EUCLEAN;
    /* Each class lists its chunks with free blocks, and keeps one empty. */
    for (int k = 0; rc == 0 && k < NSMALL; k++) {
        uint32_t prev = 0, seen = 0;
        for (uint32_t f = mp__heap->partial[k]; rc == 0 && f; prev = f, f = rec(f - 1)->next) {
            chunk_rec *r = rec(f - 1);
            if (f > mp__heap->bump || r->kind != K_SMALL + (uint32_t)k || r->prev != prev ||
                used_of(r) == class_blocks(k) || (used_of(r) == 0 && prev != 0) || ++seen > nsmall[k])
                snprintf(why, cap, "class %d: chunk %u misfiled", k, f - 1), rc = -EUCLEAN;
        }
        /* The chunks neither listed nor kept are full. */
        uint32_t full = 0;
        for (uint32_t c = 0; rc == 0 && c < mp__heap->bump; c += rec(c)->kind >= K_SMALL ? 1 : rec(c)->len)
            full += rec(c)->kind == K_SMALL + (uint32_t)k && used_of(rec(c)) == class_blocks(k);
        if (rc == 0 && seen + full != nsmall[k])
            snprintf(why, cap, "class %d: %u chunks, %u listed or kept, %u full", k, nsmall[k],
                     seen, full), rc = -EUCLEAN;
    }
    uint64_t t_in_use, t_blocks;
    mp__heap_tally(&t_in_use, &t_blocks);
    if (rc == 0 && (t_in_use != in_use || t_blocks != blocks || free_chunks != mp__heap->free_chunks))
        snprintf(why, cap, "counts: in use %llu/%llu, blocks %llu/%llu, free chunks %llu/%llu",
                 (unsigned long long)in_use, (unsigned long long)t_in_use,
                 (unsigned long long)blocks, (unsigned long long)t_blocks,
                 (unsigned long long)free_chunks, (unsigned long long)mp__heap->free_chunks),
            rc = -EUCLEAN;
    mp__heap_unlock();
    return rc;
}

