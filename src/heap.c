/* The shared heap: a size-class allocator over one MAP_SHARED region.
 *
 * Layout of the region (all offsets fixed at creation):
 *   [header page][chunk table][block table][data chunks ...]
 * The data area is cut into 64 KiB chunks.  A chunk serves one small size
 * class (16 B .. 32 KiB, cut into equal blocks) or starts a large block of
 * 2^k whole chunks.  The chunk table holds one byte per chunk (its class);
 * the block table holds one entry per possible block of each chunk (the
 * free-list link, or the ALLOCATED tag, and the owning pid).  Metadata never
 * lives inside user data, so a wild write by user code cannot corrupt the
 * free lists; and a double or foreign free is detected by the tag.
 *
 * Concurrency: one robust process-shared mutex guards all metadata.
 *
 * Kill -9 at any instruction: every operation prepares its changes where no
 * other process looks (entries of blocks it holds, chunks past the bump
 * pointer) and commits them with one final store (a free-list head, the bump
 * pointer).  A process that dies inside the allocator therefore leaves the
 * lists and counters consistent; the worst case is that the block or chunk
 * it was taking or returning is leaked.  Recovery (EOWNERDEAD) only has to
 * make the mutex consistent again. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "mproc/shm.h"
#include "mutex_int.h"
#include "os/os.h"

#define HEAP_MAGIC 0x6d70726f63686561ULL /* "mprochea" */
#define CHUNK_SHIFT 16
#define CHUNK_SIZE ((size_t)1 << CHUNK_SHIFT)
#define GRANULE 16
#define BLOCKS_PER_CHUNK_MAX (CHUNK_SIZE / GRANULE) /* 4096 */
#define MIN_HEAP ((size_t)4 << 20)
#define MAX_HEAP ((size_t)60 << 30)  /* block ids must fit 32 bits */
#define DEFAULT_HEAP_CAP ((size_t)32 << 30)
/* Large blocks at least this big give their pages back when freed. */
#define DISCARD_MIN ((size_t)4 << 20)

/* Chunk table values. */
enum {
    CHUNK_UNUSED = 0,    /* past the bump pointer, or leaked */
    CHUNK_CONT = 0xff    /* continuation of a large block */
    /* 1 .. NCLASSES: class index + 1 of the block starting here */
};

/* Block table entry.  `link` holds the next free block's id + 1 (0 = end)
 * while the block is free, or ALLOCATED while it is in use. */
#define ALLOCATED UINT32_MAX
typedef struct {
    uint32_t link;
    int32_t owner; /* pid that allocated it */
} block_entry;

/* Small classes first, then large classes of 1, 2, 4, ... chunks. */
static const uint32_t small_sizes[] = {
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512,
    640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096,
    5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384, 20480, 24576, 28672,
    32768};
#define NSMALL ((int)(sizeof small_sizes / sizeof small_sizes[0]))
#define NLARGE 20 /* 1 chunk .. 2^19 chunks (32 GiB) */
#define NCLASSES (NSMALL + NLARGE)

typedef struct {
    uint64_t magic;
    size_t map_size;     /* bytes mapped */
    size_t nchunks;      /* data chunks available */
    size_t chunk_off;    /* offset of the chunk table */
    size_t block_off;    /* offset of the block table */
    size_t data_off;     /* offset of chunk 0 */
    mp__mutex lock;      /* guards everything below */
    size_t bump;         /* chunks handed out so far; commit point */
    size_t in_use;       /* bytes in live blocks (by class size) */
    size_t blocks;       /* live blocks */
    uint32_t free_head[NCLASSES]; /* block id + 1 of first free block */
} heap_hdr;

static heap_hdr *heap;           /* NULL until mapped in this process tree */
static size_t configured_size;   /* 0: default */
static pthread_mutex_t bringup = PTHREAD_MUTEX_INITIALIZER;

static inline uint8_t *chunk_table(void) { return (uint8_t *)heap + heap->chunk_off; }
static inline char *data_base(void) { return (char *)heap + heap->data_off; }

/* Block id: chunk index * 4096 + block index within the chunk. */
static inline block_entry *entry(uint32_t id)
{
    return (block_entry *)((char *)heap + heap->block_off) + id;
}

static inline size_t class_size(int c)
{
    return c < NSMALL ? small_sizes[c] : CHUNK_SIZE << (c - NSMALL);
}

static int class_of(size_t size)
{
    if (size <= 128)
        return (int)((size + 15) / 16) - 1 + (size == 0);
    if (size <= 32768) {
        /* Binary search; the table is short. */
        int lo = 8, hi = NSMALL - 1;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (small_sizes[mid] >= size)
                hi = mid;
            else
                lo = mid + 1;
        }
        return lo;
    }
    if (size > MAX_HEAP)
        return -1;
    size_t chunks = (size + CHUNK_SIZE - 1) >> CHUNK_SHIFT;
    int k = 0;
    while (((size_t)1 << k) < chunks)
        k++;
    return k < NLARGE ? NSMALL + k : -1;
}

static inline size_t chunk_blocks(int c)
{
    return c < NSMALL ? CHUNK_SIZE / small_sizes[c] : 1;
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
    *block_off = (*chunk_off + n + page - 1) / page * page;
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

/* ---- allocation ---- */

static void heap_lock(void)
{
    /* MP_EOWNERDEAD needs no repair: see the design note at the top. */
    int rc = mp__mutex_lock(&heap->lock, MP__NO_DEADLINE);
    if (rc < 0 && rc != MP_EOWNERDEAD)
        abort(); /* broken invariant: the heap lock is never misused */
}

static void heap_unlock(void)
{
    mp__mutex_unlock(&heap->lock);
}

/* Take `count` fresh chunks at the bump pointer.  Returns the first chunk
 * index, or SIZE_MAX when the budget is exhausted.  Lock held. */
static size_t take_chunks(size_t count)
{
    if (heap->nchunks - heap->bump < count)
        return SIZE_MAX;
    return heap->bump; /* the caller commits by advancing heap->bump */
}

static void *block_ptr(uint32_t id)
{
    size_t chunk = id / BLOCKS_PER_CHUNK_MAX, idx = id % BLOCKS_PER_CHUNK_MAX;
    int c = chunk_table()[chunk] - 1;
    return data_base() + (chunk << CHUNK_SHIFT) + idx * class_size(c);
}

/* Pop a block of class c, carving a fresh chunk if the list is empty.
 * Returns its id, or UINT32_MAX.  Lock held. */
static uint32_t pop_block(int c)
{
    uint32_t head = heap->free_head[c];
    if (head != 0) {
        uint32_t id = head - 1;
        heap->free_head[c] = entry(id)->link; /* commit */
        return id;
    }
    size_t need = c < NSMALL ? 1 : (size_t)1 << (c - NSMALL);
    size_t chunk = SIZE_MAX;
    if (c < NSMALL && heap->free_head[NSMALL] != 0) {
        /* Reuse a free single-chunk large block for small blocks. */
        uint32_t id = heap->free_head[NSMALL] - 1;
        chunk = id / BLOCKS_PER_CHUNK_MAX;
        uint32_t next = entry(id)->link;
        /* Prepare the chunk's entries before the commit: nobody looks at
         * them while the chunk is on no list.  But the chunk is still on
         * the list, so unlink it first (commit 1), then carve. */
        heap->free_head[NSMALL] = next;
    } else {
        chunk = take_chunks(need);
        if (chunk == SIZE_MAX)
            return UINT32_MAX;
    }
    uint8_t *ct = chunk_table();
    uint32_t first = (uint32_t)(chunk * BLOCKS_PER_CHUNK_MAX);
    size_t n = chunk_blocks(c);
    /* Link blocks 1..n-1 into a chain ending at the current (empty) head,
     * mark the continuation chunks, set the class: all invisible until
     * the commits below. */
    for (size_t i = 1; i < n; i++)
        entry(first + (uint32_t)i)->link = i + 1 < n ? first + (uint32_t)i + 2 : 0;
    for (size_t i = 1; i < need; i++)
        ct[chunk + i] = CHUNK_CONT;
    ct[chunk] = (uint8_t)(c + 1);
    if (chunk == heap->bump)
        heap->bump = chunk + need; /* commit: the chunk is ours */
    if (n > 1)
        heap->free_head[c] = first + 2; /* commit: blocks 1.. are free */
    return first;
}

void *mp__heap_alloc(size_t size, int *err)
{
    int c = size == 0 ? -1 : class_of(size);
    if (c < 0) {
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
    uint32_t id = pop_block(c);
    if (id == UINT32_MAX) {
        heap_unlock();
        if (err) *err = -ENOMEM;
        return NULL;
    }
    block_entry *e = entry(id);
    e->owner = me;
    e->link = ALLOCATED;
    heap->in_use += class_size(c);
    heap->blocks++;
    void *p = block_ptr(id);
    heap_unlock();
    return p;
}

void *mp__heap_calloc(size_t size, int *err)
{
    void *p = mp__heap_alloc(size, err);
    if (p != NULL)
        memset(p, 0, size);
    return p;
}

/* Find the block id of p and its class; false if p is not a block start. */
static bool locate(const void *p, uint32_t *id, int *cls)
{
    heap_hdr *h = __atomic_load_n(&heap, __ATOMIC_ACQUIRE);
    if (h == NULL || p == NULL)
        return false;
    const char *base = (const char *)h + h->data_off;
    const char *cp = p;
    if (cp < base || cp >= base + (h->nchunks << CHUNK_SHIFT))
        return false;
    size_t off = (size_t)(cp - base);
    size_t chunk = off >> CHUNK_SHIFT;
    uint8_t tag = ((uint8_t *)h + h->chunk_off)[chunk];
    if (tag == CHUNK_UNUSED || tag == CHUNK_CONT)
        return false;
    int c = tag - 1;
    size_t in = off & (CHUNK_SIZE - 1);
    size_t sz = class_size(c);
    if (c >= NSMALL ? in != 0 : in % sz != 0 || in / sz >= chunk_blocks(c))
        return false;
    *id = (uint32_t)(chunk * BLOCKS_PER_CHUNK_MAX + (c >= NSMALL ? 0 : in / sz));
    *cls = c;
    return true;
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
    uint32_t id;
    int c;
    if (!locate(p, &id, &c))
        return 0;
    return entry(id)->link == ALLOCATED ? class_size(c) : 0;
}

bool mp__heap_owned(const void *p)
{
    uint32_t id;
    int c;
    if (!locate(p, &id, &c))
        return false;
    block_entry *e = entry(id);
    return e->link == ALLOCATED && e->owner == mp__getpid();
}

static int heap_free(void *p, bool any_owner)
{
    uint32_t id;
    int c;
    if (!locate(p, &id, &c))
        return -EINVAL;
    size_t sz = class_size(c);
    pid_t me = mp__getpid();
    heap_lock();
    block_entry *e = entry(id);
    if (e->link != ALLOCATED) {
        heap_unlock();
        return -EINVAL; /* double free, or not a block */
    }
    if (!any_owner && e->owner != me) {
        heap_unlock();
        return -EPERM;
    }
    if (sz >= DISCARD_MIN) {
        /* Drop the pages while the block is still ours.  Marking it
         * not-allocated first keeps a racing double free out. */
        e->link = 0;
        heap_unlock();
        mp__discard(p, sz);
        heap_lock();
    }
    e->link = heap->free_head[c];
    heap->free_head[c] = id + 1; /* commit */
    heap->in_use -= sz;
    heap->blocks--;
    heap_unlock();
    return 0;
}

int mp__heap_free(void *p) { return heap_free(p, false); }
int mp__heap_free_any(void *p) { return heap_free(p, true); }

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
    out->capacity = heap->nchunks << CHUNK_SHIFT;
    out->in_use = heap->in_use;
    out->blocks = heap->blocks;
    out->chunks_used = heap->bump << CHUNK_SHIFT;
    heap_unlock();
    return 0;
}
