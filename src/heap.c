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
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "mproc/shm.h"
#include "mutex_int.h"
#include "os/os.h"

#define HEAP_MAGIC 0x6d70726f63686562ULL /* "mprocheb" */
#define CHUNK_SHIFT 16
#define CHUNK_SIZE ((size_t)1 << CHUNK_SHIFT)
#define GRANULE 16
#define BLOCKS_PER_CHUNK_MAX (CHUNK_SIZE / GRANULE) /* 4096 */
#define MIN_HEAP ((size_t)4 << 20)
#define MAX_HEAP ((size_t)60 << 30)  /* block ids must fit 32 bits */
#define DEFAULT_HEAP_CAP ((size_t)32 << 30)
/* Large blocks at least this big give their pages back when freed. */
#define DISCARD_MIN ((size_t)4 << 20)
#define NBINS 20      /* free spans of 1 .. 2^20-1 chunks (MAX_HEAP: 983040) */
#define BIN_SCAN 16   /* spans looked at in a bin before a larger bin's */
#define UNDO_MAX 64   /* stores of the largest operation (about 40) */

/* Chunk kinds: K_SMALL + c for a chunk of small class c. */
enum { K_NONE = 0, K_FREE = 1, K_LARGE = 2, K_SMALL = 3 };

typedef struct {
    uint32_t kind;
    uint32_t len;        /* K_FREE, K_LARGE: chunks in the span */
    uint32_t prev, next; /* chunk + 1 (0: none): its bin, or its class's
                          * list of chunks with free blocks */
    uint32_t tail_of;    /* last chunk of a free span: its first chunk + 1 */
    uint32_t spare;
    uint64_t blocks;     /* K_SMALL, in one word for one store: the first
                          * free block's index + 1 (bits 0-31), live blocks
                          * (32-47), blocks handed out at least once (48-63) */
} chunk_rec;

static inline uint32_t free_head_of(const chunk_rec *r) { return (uint32_t)r->blocks; }
static inline uint32_t used_of(const chunk_rec *r) { return (uint32_t)(r->blocks >> 32) & 0xffff; }
static inline uint32_t carved_of(const chunk_rec *r) { return (uint32_t)(r->blocks >> 48); }

/* Block table entry.  `link` holds the next free block's index + 1 within
 * its chunk (0 = end) while the block is free, or ALLOCATED. */
#define ALLOCATED UINT32_MAX
typedef union {
    struct {
        uint32_t link;
        int32_t owner; /* pid that allocated it */
    };
    uint64_t word; /* both, for one store */
} block_entry;

static const uint32_t small_sizes[] = {
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512,
    640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096,
    5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384, 20480, 24576, 28672,
    32768};
#define NSMALL ((int)(sizeof small_sizes / sizeof small_sizes[0]))

typedef struct {
    uint64_t where; /* byte offset from the header; bit 0: a 64-bit word */
    uint64_t old;
} undo_rec;

typedef struct {
    uint64_t magic;
    size_t map_size;     /* bytes mapped */
    size_t nchunks;      /* data chunks available */
    size_t chunk_off;    /* offset of the chunk table */
    size_t block_off;    /* offset of the block table */
    size_t data_off;     /* offset of chunk 0 */
    mp__mutex lock;      /* guards everything below */
    /* Changed only through set32 / set64: */
    uint64_t free_chunks;/* chunks in free spans (not the wilderness) */
    uint32_t bump;       /* chunks below it were handed out at least once */
    uint32_t bin_map;    /* bit k: bin k is not empty */
    uint32_t bin_head[NBINS];   /* chunk + 1 */
    uint32_t partial[NSMALL];   /* chunk + 1: chunks with free blocks; the
                                 * first may be empty (kept for reuse) */
    /* The undo log of the operation under way. */
    _Atomic uint32_t undo_n;
    undo_rec undo[UNDO_MAX];
} heap_hdr;

static heap_hdr *heap;           /* NULL until mapped in this process tree */
static size_t configured_size;   /* 0: default */
static pthread_mutex_t bringup = PTHREAD_MUTEX_INITIALIZER;

static inline chunk_rec *rec(uint32_t chunk)
{
    return (chunk_rec *)((char *)heap + heap->chunk_off) + chunk;
}

static inline char *data_base(void) { return (char *)heap + heap->data_off; }

/* Block id: chunk index * 4096 + block index within the chunk. */
static inline block_entry *entry(uint32_t id)
{
    return (block_entry *)((char *)heap + heap->block_off) + id;
}

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

static inline uint32_t class_blocks(int c) { return (uint32_t)(CHUNK_SIZE / small_sizes[c]); }

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
        __atomic_store_n(&heap, h, __ATOMIC_RELEASE);
        return 0;
    }
}

int mp__heap_ensure(void)
{
    if (__atomic_load_n(&heap, __ATOMIC_ACQUIRE) != NULL)
        return 0;
    pthread_mutex_lock(&bringup);
    int rc = heap ? 0 : heap_map();
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
    if (heap != NULL)
        rc = -EBUSY;
    else
        configured_size = size;
    pthread_mutex_unlock(&bringup);
    return rc;
}

/* ---- the undo log (see the top of the file) ---- */

static inline __attribute__((always_inline)) void log_old(void *word, uint64_t old, bool wide)
{
    uint32_t n = atomic_load_explicit(&heap->undo_n, memory_order_relaxed);
    if (n == UNDO_MAX)
        abort(); /* broken invariant: no operation makes this many stores */
    heap->undo[n].where = (uint64_t)((char *)word - (char *)heap) | wide;
    heap->undo[n].old = old;
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&heap->undo_n, n + 1, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
}

static inline void set32(uint32_t *word, uint32_t v)
{
    if (*word == v)
        return;
    log_old(word, *word, false);
    *word = v;
}

static inline void set64(uint64_t *word, uint64_t v)
{
    log_old(word, *word, true);
    *word = v;
}

static inline void set_entry(block_entry *e, uint32_t link, pid_t owner)
{
    block_entry v = {.link = link, .owner = owner};
    set64(&e->word, v.word);
}

/* A small chunk's block state, as chunk_rec.blocks holds it. */
static inline uint64_t pack_blocks(uint32_t free_head, uint32_t used, uint32_t carved)
{
    return free_head | (uint64_t)used << 32 | (uint64_t)carved << 48;
}

/* The metadata is whole: forget the old values. */
static inline void commit(void)
{
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&heap->undo_n, 0, memory_order_relaxed);
}

/* A holder died: undo its operation, newest store first. */
static void roll_back(void)
{
    uint32_t n = atomic_load_explicit(&heap->undo_n, memory_order_relaxed);
    if (n > UNDO_MAX)
        abort(); /* broken invariant */
    while (n-- > 0) {
        undo_rec *u = &heap->undo[n];
        char *word = (char *)heap + (u->where & ~(uint64_t)1);
        if (u->where & 1)
            *(uint64_t *)word = u->old;
        else
            *(uint32_t *)word = (uint32_t)u->old;
    }
    commit();
}

static void heap_lock(void)
{
    int rc = mp__mutex_lock(&heap->lock, MP__NO_DEADLINE);
    if (rc == MP_EOWNERDEAD)
        roll_back();
    else if (rc < 0)
        abort(); /* broken invariant: the heap lock is never misused */
}

static void heap_unlock(void)
{
    mp__mutex_unlock(&heap->lock);
}

/* ---- lists of chunks: bins of free spans, classes' partial chunks ---- */

static void list_push(uint32_t *head, uint32_t chunk)
{
    chunk_rec *r = rec(chunk);
    set32(&r->prev, 0);
    set32(&r->next, *head);
    if (*head)
        set32(&rec(*head - 1)->prev, chunk + 1);
    set32(head, chunk + 1);
}

/* Put chunk right after `after` in its list. */
static void list_insert_after(uint32_t after, uint32_t chunk)
{
    chunk_rec *a = rec(after), *r = rec(chunk);
    set32(&r->prev, after + 1);
    set32(&r->next, a->next);
    if (a->next)
        set32(&rec(a->next - 1)->prev, chunk + 1);
    set32(&a->next, chunk + 1);
}

static void list_unlink(uint32_t *head, uint32_t chunk)
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

static inline unsigned bin_of(uint32_t len) { return 31u - (unsigned)__builtin_clz(len); }

/* Make [chunk, chunk + len) a free span in its bin. */
static void span_file(uint32_t chunk, uint32_t len)
{
    chunk_rec *r = rec(chunk);
    unsigned b = bin_of(len);
    set32(&r->kind, K_FREE);
    set32(&r->len, len);
    set32(&rec(chunk + len - 1)->tail_of, chunk + 1);
    list_push(&heap->bin_head[b], chunk);
    set32(&heap->bin_map, heap->bin_map | 1u << b);
    set64(&heap->free_chunks, heap->free_chunks + len);
}

/* Take the free span at chunk out of its bin: its chunks become K_NONE. */
static void span_unfile(uint32_t chunk)
{
    chunk_rec *r = rec(chunk);
    uint32_t len = r->len;
    unsigned b = bin_of(len);
    list_unlink(&heap->bin_head[b], chunk);
    if (heap->bin_head[b] == 0)
        set32(&heap->bin_map, heap->bin_map & ~(1u << b));
    set32(&rec(chunk + len - 1)->tail_of, 0);
    set32(&r->kind, K_NONE);
    set64(&heap->free_chunks, heap->free_chunks - len);
}

/* A free span of at least need chunks, or UINT32_MAX.  Looks at a few of
 * need's own bin, then takes any span of a larger bin, then the
 * wilderness; all of need's bin only when nothing else is left. */
static uint32_t span_find(uint32_t need)
{
    unsigned b = bin_of(need);
    uint32_t c = heap->bin_head[b];
    for (int i = 0; c && i < BIN_SCAN; i++, c = rec(c - 1)->next)
        if (rec(c - 1)->len >= need)
            return c - 1;
    uint32_t larger = b + 1 < NBINS ? heap->bin_map & ~((2u << b) - 1) : 0;
    if (larger)
        return heap->bin_head[__builtin_ctz(larger)] - 1;
    if (heap->nchunks - heap->bump >= need)
        return UINT32_MAX - 1; /* the wilderness */
    for (; c; c = rec(c - 1)->next)
        if (rec(c - 1)->len >= need)
            return c - 1;
    return UINT32_MAX;
}

/* Take need chunks; their records are K_NONE.  UINT32_MAX: none left. */
static uint32_t span_take(uint32_t need)
{
    uint32_t c = span_find(need);
    if (c == UINT32_MAX)
        return c;
    if (c == UINT32_MAX - 1) {
        c = heap->bump;
        set32(&heap->bump, c + need);
        return c;
    }
    uint32_t len = rec(c)->len;
    span_unfile(c);
    if (len > need)
        span_file(c + need, len - need);
    return c;
}

/* Give [chunk, chunk + len) back, merged with its free neighbours. */
static void span_give(uint32_t chunk, uint32_t len)
{
    set32(&rec(chunk)->kind, K_NONE);
    if (chunk > 0 && rec(chunk - 1)->tail_of) {
        uint32_t left = rec(chunk - 1)->tail_of - 1;
        len += rec(left)->len;
        span_unfile(left);
        chunk = left;
    }
    uint32_t end = chunk + len;
    if (end < heap->bump && rec(end)->kind == K_FREE) {
        len += rec(end)->len;
        span_unfile(end);
    }
    if (chunk + len == heap->bump)
        set32(&heap->bump, chunk); /* back to the wilderness */
    else
        span_file(chunk, len);
}

/* Every class gives up the empty chunk it keeps (one commit each). */
static bool release_empty_chunks(void)
{
    bool any = false;
    for (int c = 0; c < NSMALL; c++) {
        uint32_t h = heap->partial[c];
        if (h == 0 || used_of(rec(h - 1)) != 0)
            continue;
        list_unlink(&heap->partial[c], h - 1);
        span_give(h - 1, 1);
        commit();
        any = true;
    }
    return any;
}

/* ---- allocation ---- */

/* A chunk of class c with a free block, or UINT32_MAX.  Lock held. */
static uint32_t class_chunk(int c)
{
    uint32_t h = heap->partial[c];
    if (h)
        return h - 1;
    uint32_t chunk = span_take(1);
    if (chunk == UINT32_MAX && release_empty_chunks())
        chunk = span_take(1);
    if (chunk == UINT32_MAX)
        return chunk;
    chunk_rec *r = rec(chunk);
    set32(&r->kind, K_SMALL + (uint32_t)c);
    set32(&r->len, 1);
    set64(&r->blocks, 0);
    list_push(&heap->partial[c], chunk);
    return chunk;
}

/* idx / small_sizes[c] for idx < CHUNK_SIZE, by a multiplication: the
 * error of the rounded-up reciprocal stays below 1 / size. */
static uint32_t recip[NSMALL];

__attribute__((constructor)) static void recip_init(void)
{
    for (int c = 0; c < NSMALL; c++)
        recip[c] = (uint32_t)((((uint64_t)1 << 32) + small_sizes[c] - 1) / small_sizes[c]);
}

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
        list_unlink(&heap->partial[c], chunk);
    set_entry(entry(first + idx), ALLOCATED, me);
    commit();
    return data_base() + ((size_t)chunk << CHUNK_SHIFT) + (size_t)idx * small_sizes[c];
}

static void *alloc_large(size_t size, pid_t me)
{
    uint32_t need = (uint32_t)((size + CHUNK_SIZE - 1) >> CHUNK_SHIFT);
    uint32_t chunk = span_take(need);
    if (chunk == UINT32_MAX && release_empty_chunks())
        chunk = span_take(need);
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
    heap_lock();
    void *p = size <= small_sizes[NSMALL - 1] ? alloc_small(class_of(size), me)
                                               : alloc_large(size, me);
    heap_unlock();
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
    heap_hdr *h = __atomic_load_n(&heap, __ATOMIC_ACQUIRE);
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
    heap_hdr *h = __atomic_load_n(&heap, __ATOMIC_ACQUIRE);
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
        uint32_t h = heap->partial[c];
        if (h && used_of(rec(h - 1)) == 0)
            list_insert_after(h - 1, chunk);
        else
            list_push(&heap->partial[c], chunk);
    }
    if (used == 0 && heap->partial[c] != chunk + 1) {
        list_unlink(&heap->partial[c], chunk); /* the class keeps one */
        span_give(chunk, 1);
    }
    commit();
}

static int heap_free(void *p, bool any_owner)
{
    if (!mp__heap_contains(p))
        return -EINVAL;
    pid_t me = mp__getpid();
    heap_lock();
    place at;
    block_entry *e = locate(p, &at) ? entry_at(&at) : NULL;
    if (e == NULL || e->link != ALLOCATED) {
        heap_unlock();
        return -EINVAL; /* double free, or not a block */
    }
    if (!any_owner && e->owner != me) {
        heap_unlock();
        return -EPERM;
    }
    if (at.cls >= 0) {
        free_small(at.chunk, at.idx, at.cls, at.size);
        heap_unlock();
        return 0;
    }
    if (at.size >= DISCARD_MIN) {
        /* Drop the pages while the span is still ours.  Marking it
         * not-allocated first keeps a racing double free out. */
        set32(&e->link, 0);
        commit();
        heap_unlock();
        mp__discard(p, at.size);
        heap_lock();
    } else {
        set32(&e->link, 0);
    }
    span_give(at.chunk, (uint32_t)(at.size >> CHUNK_SHIFT));
    commit();
    heap_unlock();
    return 0;
}

int mp__heap_free(void *p) { return heap_free(p, false); }
int mp__heap_free_any(void *p) { return heap_free(p, true); }

/* ---- counting ---- */

/* The bytes and number of live blocks: a walk over the spans handed out
 * (no counter on the allocation path: each would be one more store to
 * log).  Lock held. */
static void tally(uint64_t *in_use, uint64_t *blocks)
{
    uint64_t bytes = 0, n = 0;
    for (uint32_t c = 0; c < heap->bump;) {
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
    heap_lock();
    uint64_t in_use = 0, blocks = 0, free_chunks = 0;
    uint32_t nfree = 0, nsmall[NSMALL] = {0};
    bool prev_free = false;
    rc = 0;
    if (atomic_load(&heap->undo_n) != 0)
        snprintf(why, cap, "%u stores of an operation not undone", atomic_load(&heap->undo_n)),
            rc = -EUCLEAN;
    else if (heap->bump > heap->nchunks)
        snprintf(why, cap, "bump %u past %zu chunks", heap->bump, heap->nchunks), rc = -EUCLEAN;
    for (uint32_t c = 0; rc == 0 && c < heap->bump;) {
        chunk_rec *r = rec(c);
        uint32_t len = r->kind >= K_SMALL ? 1 : r->len;
        if (r->kind == K_NONE || r->kind >= K_SMALL + (uint32_t)NSMALL || len == 0 ||
            len > heap->bump - c) {
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
            else if (c + len == heap->bump)
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
        if (!!(heap->bin_map & 1u << b) != (heap->bin_head[b] != 0))
            snprintf(why, cap, "bin %u: map bit wrong", b), rc = -EUCLEAN;
        for (uint32_t f = heap->bin_head[b]; rc == 0 && f; prev = f, f = rec(f - 1)->next) {
            chunk_rec *r = rec(f - 1);
            if (f > heap->bump || r->kind != K_FREE || bin_of(r->len) != b || r->prev != prev ||
                ++listed > nfree)
                snprintf(why, cap, "bin %u: span %u misfiled", b, f - 1), rc = -EUCLEAN;
        }
    }
    if (rc == 0 && listed != nfree)
        snprintf(why, cap, "%u free spans, %u in bins", nfree, listed), rc = -EUCLEAN;
    /* Each class lists its chunks with free blocks, and keeps one empty. */
    for (int k = 0; rc == 0 && k < NSMALL; k++) {
        uint32_t prev = 0, seen = 0;
        for (uint32_t f = heap->partial[k]; rc == 0 && f; prev = f, f = rec(f - 1)->next) {
            chunk_rec *r = rec(f - 1);
            if (f > heap->bump || r->kind != K_SMALL + (uint32_t)k || r->prev != prev ||
                used_of(r) == class_blocks(k) || (used_of(r) == 0 && prev != 0) || ++seen > nsmall[k])
                snprintf(why, cap, "class %d: chunk %u misfiled", k, f - 1), rc = -EUCLEAN;
        }
        /* The chunks neither listed nor kept are full. */
        uint32_t full = 0;
        for (uint32_t c = 0; rc == 0 && c < heap->bump; c += rec(c)->kind >= K_SMALL ? 1 : rec(c)->len)
            full += rec(c)->kind == K_SMALL + (uint32_t)k && used_of(rec(c)) == class_blocks(k);
        if (rc == 0 && seen + full != nsmall[k])
            snprintf(why, cap, "class %d: %u chunks, %u listed or kept, %u full", k, nsmall[k],
                     seen, full), rc = -EUCLEAN;
    }
    uint64_t t_in_use, t_blocks;
    tally(&t_in_use, &t_blocks);
    if (rc == 0 && (t_in_use != in_use || t_blocks != blocks || free_chunks != heap->free_chunks))
        snprintf(why, cap, "counts: in use %llu/%llu, blocks %llu/%llu, free chunks %llu/%llu",
                 (unsigned long long)in_use, (unsigned long long)t_in_use,
                 (unsigned long long)blocks, (unsigned long long)t_blocks,
                 (unsigned long long)free_chunks, (unsigned long long)heap->free_chunks),
            rc = -EUCLEAN;
    heap_unlock();
    return rc;
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
    heap_lock();
    release_empty_chunks(); /* so that what is free is counted as such */
    uint32_t largest = (uint32_t)(heap->nchunks - heap->bump);
    for (int b = NBINS - 1; b >= 0; b--) {
        if (!(heap->bin_map & 1u << b) || ((2u << b) - 1) <= largest)
            continue;
        for (uint32_t f = heap->bin_head[b]; f; f = rec(f - 1)->next)
            if (rec(f - 1)->len > largest)
                largest = rec(f - 1)->len;
        break;
    }
    out->capacity = heap->nchunks << CHUNK_SHIFT;
    uint64_t in_use, blocks;
    tally(&in_use, &blocks);
    out->in_use = (size_t)in_use;
    out->blocks = (size_t)blocks;
    out->free_bytes = (heap->free_chunks + heap->nchunks - heap->bump) << CHUNK_SHIFT;
    out->chunks_used = out->capacity - out->free_bytes;
    out->largest_free = (size_t)largest << CHUNK_SHIFT;
    heap_unlock();
    return 0;
}
