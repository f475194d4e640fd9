/* mproc — shared memory: the shared heap (RawValue/RawArray), and the
 * objects built on it.
 *
 * The shared heap is one region reserved by the first process that needs it
 * and inherited, at the same address, by every process forked afterwards
 * (by mproc or by plain fork()).  A pointer into it is valid in all of them.
 * Its size is a budget: exhausting it is an allocation failure, never a
 * SIGBUS.  Default: half the machine's memory, at most 32 GiB; set it with
 * the MPROC_HEAP_SIZE environment variable ("512M", "4G") or
 * mp_heap_configure() before first use. */
#ifndef MPROC_SHM_H
#define MPROC_SHM_H

#include <mproc/common.h>

MP_BEGIN_DECLS

/* Allocate size bytes of zero-filled shared memory (like RawArray), aligned
 * to max_align_t.  NULL if size is 0 or the heap is exhausted.  Thread-safe
 * and process-shared; the memory is visible to every process forked after
 * the heap was created (mproc creates it before its first fork). */
MP_API void *mp_shared_alloc(size_t size);

/* Free memory from mp_shared_alloc.  A no-op for NULL, for a pointer the
 * heap did not hand out, for a double free, and when called by a process
 * other than the one that allocated it.  Thread-safe. */
MP_API void mp_shared_free(void *p);

/* Set the shared heap's size in bytes (4 MiB .. 60 GiB) before its first
 * use.  Errors: -EINVAL (out of range), -EBUSY (heap already created). */
MP_API int mp_heap_configure(size_t size);

typedef struct {
    size_t capacity;    /* bytes the heap may hand out */
    size_t in_use;      /* bytes in live blocks (rounded to size classes) */
    size_t blocks;      /* live blocks */
    size_t chunks_used; /* bytes of the region ever carved into blocks */
} mp_heap_stats;

/* Snapshot of the heap's usage (creates the heap if needed).
 * Errors: -EINVAL (NULL), or the mapping's error.  Thread-safe. */
MP_API int mp_heap_usage(mp_heap_stats *out);

MP_END_DECLS

#endif
