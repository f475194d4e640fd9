/* The shared heap: size classes over spans of whole chunks, in one
 * MAP_SHARED region.
 *
 * Layout of the region (all offsets fixed at creation):
 *   [header page][chunk table][block table][data chunks ...]
 * The data area is cut into 64 KiB chunks, handed out as spans of whole
 * chunks:
 *   - a small chunk serves one size class (16 B .. 32 KiB), cut into equal
 *     blocks, carved lazily (blocks past `carved` were never handed out);
 *   - a large block is a span of as many chunks as it needs;
 *   - a free span waits in a bin by its length (bin k: 2^k .. 2^(k+1)-1
 *     chunks); the chunks past the bump pointer (the wilderness) were never
 *     handed out, or came back at its edge.
 * Freed memory returns to the common pool: a small chunk whose last block
 * is freed becomes a free span again (each class keeps at most one empty
 * chunk for reuse, and gives it up when no span is found otherwise, or
 * for mp_heap_usage); a
 * freed span coalesces with the free spans on both sides and with the
 * wilderness.  After any fill-and-free cycle the whole heap is available
 * to any size again.
 *
 * Chunk table: one record per chunk.  Only the first chunk of a span (a
 * small chunk, a large block, a free span) has a kind; every other chunk,
 * and every chunk of the wilderness, is K_NONE, so a pointer is located
 * from its chunk's record alone.  The last chunk of a free span names its
 * first (tail_of), so a span freed to its right merges in O(1).
 * Block table: one entry per possible block of each chunk (the link of
 * its chunk's free list, or ALLOCATED, and the owning pid).  Metadata never
 * lives inside user data, so a wild write by user code cannot corrupt the
 * lists, and a double or foreign free is caught by the tag.
 *
 * Concurrency: one robust process-shared mutex guards all metadata.
 *
 * Kill -9 at any instruction: every store to metadata goes through set32 /
 * set64, which first append the word's old value to an undo log in the
 * header: the record, then the log's length, then the store, in that order
 * (compiler fences; a killed process's stores all reach the shared pages).
 * An operation ends by emptying the log (commit), at a point where the
 * metadata is whole again.  The next process to take the lock after a
 * holder died (EOWNERDEAD) restores the logged words newest first: the
 * half-done operation never happened.  A block the dead process was taking
 * is not taken; one it was freeing stays allocated to it (leaked).  Only a
 * large block freed in two steps (its pages are discarded outside the
 * lock) is leaked whole if its owner dies between them. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "heap_int.h"
#include "heap_meta.h"
#include "mproc/error.h"
#include "mproc/shm.h"
#include "os/os.h"

heap_hdr *mp__heap;
static size_t configured_size;   /* 0: default */
static pthread_mutex_t bringup = PTHREAD_MUTEX_INITIALIZER;

/* The small class of size (<= 32 KiB). */
static int class_of(size_t size)
{
    if (size <= 128)
        return (int)((size + 15) / 16) - 1 + (size == 0);
    int lo = 8, hi = NSMALL - 1; /* binary search; the table is short */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (small_sizes[mid] >= size)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* ---- bring-up ---- */

static size_t parse_size(const char *s)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'B') end++;
    if (*end == 'B') end++;
    return *end == '\0' ? (size_t)v : 0;
}

static size_t default_size(void)
{
    const char *env = getenv("MPROC_HEAP_SIZE");
    if (env != NULL) {
        size_t v = parse_size(env);
        if (v >= MIN_HEAP)
            return v > MAX_HEAP ? MAX_HEAP : v;
    }
    /* Half the machine's memory: the budget that keeps shmem from running
     * the system out of memory (which would be SIGBUS, not an error). */
    size_t s = (size_t)(mp__mem_total() / 2);
    if (s > DEFAULT_HEAP_CAP)
        s = DEFAULT_HEAP_CAP;
    if (s < MIN_HEAP)
        s = MIN_HEAP;
    return s;
}

/* Lay out a heap whose data budget is `budget` bytes. */
static size_t layout(size_t budget, size_t *nchunks, size_t *chunk_off,
                     size_t *block_off, size_t *data_off)
{
    size_t n = budget / CHUNK_SIZE;
    size_t page = (size_t)mp__page_size();
    *nchunks = n;
    *chunk_off = (sizeof(heap_hdr) + page - 1) / page * page;
    *block_off = (*chunk_off + n * sizeof(chunk_rec) + page - 1) / page * page;
    size_t blocks = n * BLOCKS_PER_CHUNK_MAX * sizeof(block_entry);
    *data_off = (*block_off + blocks + CHUNK_SIZE - 1) / CHUNK_SIZE * CHUNK_SIZE;
    return *data_off + n * CHUNK_SIZE;
}

static int heap_map(void)
{
    size_t budget = configured_size ? configured_size : default_size();
    for (;;) {
        size_t n, co, bo, dof;
        size_t total = layout(budget, &n, &co, &bo, &dof);
        int err = 0;
        heap_hdr *h = mp__map_shared(total, &err);
        if (h == NULL) {
            /* MAP_NORESERVE is ignored under strict overcommit: shrink. */
            if (err == -ENOMEM && budget / 2 >= MIN_HEAP) {
                budget /= 2;
                continue;
            }
            return err;
        }
        int rc = mp__mutex_init(&h->lock);
        if (rc < 0) {
            mp__unmap(h, total);
            return rc;
        }
        h->map_size = total;
        h->nchunks = n;
        h->chunk_off = co;
        h->block_off = bo;
        h->data_off = dof;
        h->magic = HEAP_MAGIC;
        __atomic_store_n(&mp__heap, h, __ATOMIC_RELEASE);
        return 0;
    }
}

size_t mp__heap_capacity(void)
{
    heap_hdr *h = __atomic_load_n(&mp__heap, __ATOMIC_ACQUIRE);
    return h ? h->nchunks * CHUNK_SIZE : 0;
}

int mp__heap_ensure(void)
{
    if (__atomic_load_n(&mp__heap, __ATOMIC_ACQUIRE) != NULL)
        return 0;
    pthread_mutex_lock(&bringup);
    int rc = mp__heap ? 0 : heap_map();
    pthread_mutex_unlock(&bringup);
    return rc;
}

static void bringup_prepare(void) { pthread_mutex_lock(&bringup); }
static void bringup_release(void) { pthread_mutex_unlock(&bringup); }

__attribute__((constructor)) static void heap_register_fork_hooks(void)
{
    static const mp__fork_hooks hooks = {
        .rank = MP__RANK_HEAP,
        .prepare = bringup_prepare,
        .parent = bringup_release,
        .child = bringup_release,
    };
    mp__fork_hooks_add(&hooks);
}

int mp_heap_configure(size_t size)
{
    if (size < MIN_HEAP || size > MAX_HEAP)
        return -EINVAL;
    pthread_mutex_lock(&bringup);
    int rc = 0;
    if (mp__heap != NULL)
        rc = -EBUSY;
    else
        configured_size = size;
    pthread_mutex_unlock(&bringup);
    return rc;
}

/* ---- allocation ---- */

/* A chunk of class c with a free block, or UINT32_MAX.  Lock held. */
static uint32_t class_chunk(int c)
{
    uint32_t h = mp__heap->partial[c];
    if (h)
        return h - 1;
    uint32_t chunk = mp__span_take(1);
    if (chunk == UINT32_MAX && mp__heap_release_empty())
        chunk = mp__span_take(1);
    if (chunk == UINT32_MAX)
        return chunk;
    chunk_rec *r = rec(chunk);
    set32(&r->kind, K_SMALL + (uint32_t)c);
    set32(&r->len, 1);
    set64(&r->blocks, 0);
    mp__chunks_push(&mp__heap->partial[c], chunk);
    return chunk;
}

/* idx / small_sizes[c] for idx < CHUNK_SIZE, by a multiplication: the
 * error of the rounded-up reciprocal stays below 1 / size. */
#define SMALL_RECIP(s) (uint32_t)((((uint64_t)1 << 32) + (s) - 1) / (s)),
static const uint32_t recip[] = {SMALL_SIZES(SMALL_RECIP)};

static inline uint32_t block_index(size_t in, int c)
{
    return (uint32_t)(((uint64_t)in * recip[c]) >> 32);
}

static void *alloc_small(int c, pid_t me)
{
    uint32_t chunk = class_chunk(c);
    if (chunk == UINT32_MAX)
        return NULL;
    chunk_rec *r = rec(chunk);
    uint32_t first = chunk * BLOCKS_PER_CHUNK_MAX, idx, head = free_head_of(r),
             carved = carved_of(r), used = used_of(r) + 1u;
    if (head) {
        idx = head - 1;
        head = entry(first + idx)->link;
    } else {
        idx = carved++;
    }
    set64(&r->blocks, pack_blocks(head, used, carved));
    if (used == class_blocks(c))
        mp__chunks_unlink(&mp__heap->partial[c], chunk);
    set_entry(entry(first + idx), ALLOCATED, me);
    commit();
    return data_base() + ((size_t)chunk << CHUNK_SHIFT) + (size_t)idx * small_sizes[c];
}

static void *alloc_large(size_t size, pid_t me)
{
    uint32_t need = (uint32_t)((size + CHUNK_SIZE - 1) >> CHUNK_SHIFT);
    uint32_t chunk = mp__span_take(need);
    if (chunk == UINT32_MAX && mp__heap_release_empty())
        chunk = mp__span_take(need);
    if (chunk == UINT32_MAX)
        return NULL;
    chunk_rec *r = rec(chunk);
    set32(&r->kind, K_LARGE);
    set32(&r->len, need);
    set_entry(entry(chunk * BLOCKS_PER_CHUNK_MAX), ALLOCATED, me);
    commit();
    return data_base() + ((size_t)chunk << CHUNK_SHIFT);
}

void *mp__heap_alloc(size_t size, int *err)
{
    if (size == 0 || size > MAX_HEAP) {
        if (err) *err = size == 0 ? -EINVAL : -ENOMEM;
        return NULL;
    }
    int rc = mp__heap_ensure();
    if (rc < 0) {
        if (err) *err = rc;
        return NULL;
    }
    pid_t me = mp__getpid();
    mp__heap_lock();
    void *p = size <= small_sizes[NSMALL - 1] ? alloc_small(class_of(size), me)
                                               : alloc_large(size, me);
    mp__heap_unlock();
    if (p == NULL && err)
        *err = -ENOMEM;
    return p;
}

void *mp__heap_calloc(size_t size, int *err)
{
    void *p = mp__heap_alloc(size, err);
    if (p != NULL)
        memset(p, 0, size);
    return p;
}

/* ---- finding a block ---- */

typedef struct {
    uint32_t chunk, idx; /* idx: the block's index in its chunk */
    int cls;             /* small class, or -1 for a large block */
    size_t size;
} place;

/* Where p's block is; false if p is not the start of a block handed out in
 * its chunk's present use.  Reads records another process may be
 * changing: the caller checks the block's tag (under the lock, to act). */
static inline __attribute__((always_inline)) bool locate(const void *p, place *at)
{
    heap_hdr *h = __atomic_load_n(&mp__heap, __ATOMIC_ACQUIRE);
    if (h == NULL || p == NULL)
        return false;
    const char *base = (const char *)h + h->data_off;
    const char *cp = p;
    if (cp < base || cp >= base + (h->nchunks << CHUNK_SHIFT))
        return false;
    size_t off = (size_t)(cp - base), in = off & (CHUNK_SIZE - 1);
    at->chunk = (uint32_t)(off >> CHUNK_SHIFT);
    const chunk_rec *r = (const chunk_rec *)((const char *)h + h->chunk_off) + at->chunk;
    uint32_t kind = r->kind;
    if (kind == K_LARGE) {
        at->idx = 0;
        at->cls = -1;
        at->size = (size_t)r->len << CHUNK_SHIFT;
        return in == 0;
    }
    if (kind < K_SMALL || kind >= K_SMALL + (uint32_t)NSMALL)
        return false;
    at->cls = (int)(kind - K_SMALL);
    at->size = small_sizes[at->cls];
    at->idx = block_index(in, at->cls);
    return in == at->idx * at->size && at->idx < carved_of(r);
}

static inline block_entry *entry_at(const place *at)
{
    return entry(at->chunk * BLOCKS_PER_CHUNK_MAX + at->idx);
}

bool mp__heap_contains(const void *p)
{
    heap_hdr *h = __atomic_load_n(&mp__heap, __ATOMIC_ACQUIRE);
    if (h == NULL || p == NULL)
        return false;
    const char *base = (const char *)h + h->data_off;
    return (const char *)p >= base &&
           (const char *)p < base + (h->nchunks << CHUNK_SHIFT);
}

size_t mp__heap_block_size(const void *p)
{
    place at;
    if (!locate(p, &at))
        return 0;
    return entry_at(&at)->link == ALLOCATED ? at.size : 0;
}

bool mp__heap_owned(const void *p)
{
    place at;
    if (!locate(p, &at))
        return false;
    block_entry *e = entry_at(&at);
    return e->link == ALLOCATED && e->owner == mp__getpid();
}

/* ---- freeing ---- */

/* (Scalars, not the place: its fields stored one by one and read back as
 * one word stall the store buffer.) */
static void free_small(uint32_t chunk, uint32_t idx, int c, size_t size)
{
    chunk_rec *r = rec(chunk);
    uint32_t used = used_of(r) - 1u;
    bool was_full = used_of(r) == class_blocks(c);
    set32(&entry(chunk * BLOCKS_PER_CHUNK_MAX + idx)->link, free_head_of(r));
    set64(&r->blocks, pack_blocks(idx + 1, used, carved_of(r)));
    if (was_full) {
        /* Behind the kept empty chunk, if there is one: only the first
         * chunk of the list may be empty. */
        uint32_t h = mp__heap->partial[c];
        if (h && used_of(rec(h - 1)) == 0)
            mp__chunks_insert_after(h - 1, chunk);
        else
            mp__chunks_push(&mp__heap->partial[c], chunk);
    }
    if (used == 0 && mp__heap->partial[c] != chunk + 1) {
        mp__chunks_unlink(&mp__heap->partial[c], chunk); /* the class keeps one */
        mp__span_give(chunk, 1);
    }
    commit();
}

static int heap_free(void *p, bool any_owner)
{
    if (!mp__heap_contains(p))
        return -EINVAL;
    pid_t me = mp__getpid();
    mp__heap_lock();
    place at;
    block_entry *e = locate(p, &at) ? entry_at(&at) : NULL;
    if (e == NULL || e->link != ALLOCATED) {
        mp__heap_unlock();
        return -EINVAL; /* double free, or not a block */
    }
    if (!any_owner && e->owner != me) {
        mp__heap_unlock();
        return -EPERM;
    }
    if (at.cls >= 0) {
        free_small(at.chunk, at.idx, at.cls, at.size);
        mp__heap_unlock();
        return 0;
    }
    if (at.size >= DISCARD_MIN) {
        /* Drop the pages while the span is still ours.  Marking it
         * not-allocated first keeps a racing double free out. */
        set32(&e->link, 0);
        commit();
        mp__heap_unlock();
        mp__discard(p, at.size);
        mp__heap_lock();
    } else {
        set32(&e->link, 0);
    }
    mp__span_give(at.chunk, (uint32_t)(at.size >> CHUNK_SHIFT));
    commit();
    mp__heap_unlock();
    return 0;
}

int mp__heap_free(void *p) { return heap_free(p, false); }
int mp__heap_free_any(void *p) { return heap_free(p, true); }

/* ---- counting ---- */

/* The bytes and number of live blocks: a walk over the spans handed out
 * (no counter on the allocation path: each would be one more store to
 * log).  Lock held. */
void mp__heap_tally(uint64_t *in_use, uint64_t *blocks)
{
    uint64_t bytes = 0, n = 0;
    for (uint32_t c = 0; c < mp__heap->bump;) {
        chunk_rec *r = rec(c);
        if (r->kind >= K_SMALL) {
            bytes += (uint64_t)used_of(r) * small_sizes[r->kind - K_SMALL];
            n += used_of(r);
            c++;
            continue;
        }
        if (r->kind == K_LARGE && entry(c * BLOCKS_PER_CHUNK_MAX)->link == ALLOCATED) {
            bytes += (uint64_t)r->len << CHUNK_SHIFT;
            n++;
        }
        c += r->len ? r->len : 1; /* (a guard: a span is never empty) */
    }
    *in_use = bytes;
    *blocks = n;
}

/* ---- public face ---- */

void *mp_shared_alloc(size_t size)
{
    return mp__heap_calloc(size, NULL);
}

void mp_shared_free(void *p)
{
    if (p != NULL)
        (void)mp__heap_free(p);
}

int mp_heap_usage(mp_heap_stats *out)
{
    if (out == NULL)
        return -EINVAL;
    int rc = mp__heap_ensure();
    if (rc < 0)
        return rc;
    mp__heap_lock();
    mp__heap_release_empty(); /* so that what is free is counted as such */
    uint32_t largest = (uint32_t)(mp__heap->nchunks - mp__heap->bump);
    for (int b = NBINS - 1; b >= 0; b--) {
        if (!(mp__heap->bin_map & 1u << b) || ((2u << b) - 1) <= largest)
            continue;
        for (uint32_t f = mp__heap->bin_head[b]; f; f = rec(f - 1)->next)
            if (rec(f - 1)->len > largest)
                largest = rec(f - 1)->len;
        break;
    }
    out->capacity = mp__heap->nchunks << CHUNK_SHIFT;
    uint64_t in_use, blocks;
    mp__heap_tally(&in_use, &blocks);
    out->in_use = (size_t)in_use;
    out->blocks = (size_t)blocks;
    out->free_bytes = (mp__heap->free_chunks + mp__heap->nchunks - mp__heap->bump) << CHUNK_SHIFT;
    out->chunks_used = out->capacity - out->free_bytes;
    out->largest_free = (size_t)largest << CHUNK_SHIFT;
    mp__heap_unlock();
    return 0;
}
