/* The shared heap's metadata, for the files that make the heap (heap.c:
 * bring-up, blocks, counting; heap_span.c: the chunk pool and the undo
 * log; heap_check.c: checking).  See heap.c for the design. */
#ifndef MPROC_HEAP_META_H
#define MPROC_HEAP_META_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>

#include "mproc/error.h"
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

#define SMALL_SIZES(X)                                                               \
    X(16) X(32) X(48) X(64) X(80) X(96) X(112) X(128) X(160) X(192) X(224) X(256)   \
    X(320) X(384) X(448) X(512) X(640) X(768) X(896) X(1024) X(1280) X(1536)        \
    X(1792) X(2048) X(2560) X(3072) X(3584) X(4096) X(5120) X(6144) X(7168) X(8192) \
    X(10240) X(12288) X(14336) X(16384) X(20480) X(24576) X(28672) X(32768)
#define SMALL_SIZE(s) s,
static const uint32_t small_sizes[] = {SMALL_SIZES(SMALL_SIZE)};
#define NSMALL ((int)(sizeof small_sizes / sizeof small_sizes[0]))

typedef struct {
    uint64_t where; /* byte offset from the header; bit 0: a 64-bit word */
    uint64_t old;
} undo_rec;

/* Laid out for the small-block path, which takes the lock, logs two
 * stores and reads where the tables are: the lock (40 bytes), the undo
 * count and the tables' offsets fill one cache line, the data's offset
 * and the first records of the log the next, so that an operation pulls
 * two lines of the header from the process that last held the lock (the
 * lock alone spanned two lines when it came after the read-only fields,
 * the log's count and records were two more). */
typedef struct {
    uint64_t magic;
    size_t map_size;     /* bytes mapped */
    /* Changed only through set32 / set64: */
    uint64_t free_chunks;/* chunks in free spans (not the wilderness) */
    uint32_t bin_map;    /* bit k: bin k is not empty */
    uint32_t bin_head[NBINS];   /* chunk + 1 */
    uint32_t partial[NSMALL];   /* chunk + 1: chunks with free blocks; the
                                 * first may be empty (kept for reuse) */
    /* What every operation touches, in two cache lines: */
    _Alignas(64) mp__mutex lock; /* guards everything that changes */
    _Atomic uint32_t undo_n;     /* records in the undo log */
    uint32_t bump;       /* chunks below it were handed out at least once
                          * (set32) */
    size_t chunk_off;    /* offset of the chunk table */
    size_t block_off;    /* offset of the block table */
    size_t data_off;     /* offset of chunk 0 */
    size_t nchunks;      /* data chunks available */
    undo_rec undo[UNDO_MAX]; /* the undo log of the operation under way */
} heap_hdr;
_Static_assert(offsetof(heap_hdr, block_off) + sizeof(size_t) - offsetof(heap_hdr, lock) <= 64,
               "the lock, the undo count and the table offsets share a line");

extern heap_hdr *mp__heap; /* NULL until mapped in this process tree */

static inline chunk_rec *rec(uint32_t chunk)
{
    return (chunk_rec *)((char *)mp__heap + mp__heap->chunk_off) + chunk;
}

static inline char *data_base(void) { return (char *)mp__heap + mp__heap->data_off; }

/* Block id: chunk index * 4096 + block index within the chunk. */
static inline block_entry *entry(uint32_t id)
{
    return (block_entry *)((char *)mp__heap + mp__heap->block_off) + id;
}

static inline uint32_t class_blocks(int c) { return (uint32_t)(CHUNK_SIZE / small_sizes[c]); }

/* ---- the undo log (see the top of the file) ---- */

static inline __attribute__((always_inline)) void log_old(void *word, uint64_t old, bool wide)
{
    uint32_t n = atomic_load_explicit(&mp__heap->undo_n, memory_order_relaxed);
    if (n == UNDO_MAX)
        abort(); /* broken invariant: no operation makes this many stores */
    mp__heap->undo[n].where = (uint64_t)((char *)word - (char *)mp__heap) | wide;
    mp__heap->undo[n].old = old;
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&mp__heap->undo_n, n + 1, memory_order_relaxed);
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
    atomic_store_explicit(&mp__heap->undo_n, 0, memory_order_relaxed);
}

/* The bin of a free span of len chunks. */
static inline unsigned bin_of(uint32_t len) { return 31u - (unsigned)__builtin_clz(len); }

/* ---- heap_span.c: lock, lists of chunks, spans ---- */

/* A holder of the lock died: undo its operation, newest store first. */
void mp__heap_roll_back(void);

/* Take the heap's lock (undoing a dead holder's operation). */
static inline void mp__heap_lock(void)
{
    int rc = mp__mutex_lock(&mp__heap->lock, MP__NO_DEADLINE);
    if (rc == MP_EOWNERDEAD)
        mp__heap_roll_back();
    else if (rc < 0)
        abort(); /* broken invariant: the heap lock is never misused */
}

static inline void mp__heap_unlock(void)
{
    mp__mutex_unlock(&mp__heap->lock);
}
/* Lists of chunks (a bin, a class's partial chunks): head is chunk + 1. */
void mp__chunks_push(uint32_t *head, uint32_t chunk);
void mp__chunks_insert_after(uint32_t after, uint32_t chunk);
void mp__chunks_unlink(uint32_t *head, uint32_t chunk);
/* Take need chunks (their records K_NONE), or UINT32_MAX: none left. */
uint32_t mp__span_take(uint32_t need);
/* Give [chunk, chunk + len) back, merged with its free neighbours. */
void mp__span_give(uint32_t chunk, uint32_t len);
/* Every class gives up the empty chunk it keeps; false if none did. */
bool mp__heap_release_empty(void);

/* ---- heap.c ---- */

/* Bytes and number of live blocks (a walk of the spans).  Lock held. */
void mp__heap_tally(uint64_t *in_use, uint64_t *blocks);

#endif
