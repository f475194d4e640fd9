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
    size_t chunks_used; /* bytes in 64 KiB chunks that hold live blocks */
    size_t free_bytes;  /* bytes in free chunks: free for a block of any size */
    size_t largest_free;/* the largest block that fits now (bytes) */
} mp_heap_stats;

/* Snapshot of the heap's usage (creates the heap if needed).  Memory freed
 * returns to a common pool of 64 KiB chunks, where free neighbours merge:
 * capacity - free_bytes is what live blocks hold, with the unused rest of
 * the chunks they sit in; free_bytes - largest_free is fragmentation.  It
 * walks the chunks in use (about 30 µs a GiB) and gives back
 * the empty chunk each size class keeps for reuse.
 * Errors: -EINVAL (NULL), or the mapping's error.  Thread-safe. */
MP_API int mp_heap_usage(mp_heap_stats *out);

/* ---- Value and Array: shared memory with a lock (multiprocessing.Value,
 * multiprocessing.Array).  Like every shared-heap object they work in
 * every process forked after their creation; `_free` by another process
 * is a no-op.  The lock is an ordinary mp_lock (see sync.h): hold it for
 * read-modify-write updates, as in Python's `with v.get_lock():`. ---- */

typedef struct mp_value mp_value;
typedef struct mp_array mp_array;
typedef struct mp_lock mp_lock;

/* A shared value of `size` bytes, initialised from init (NULL: zeroed).
 * Errors: -EINVAL (out NULL, size 0), -ENOMEM (heap exhausted). */
MP_API int mp_value_new(mp_value **out, size_t size, const void *init);
/* The value's memory (aligned to max_align_t); NULL for NULL. */
MP_API void *mp_value_ptr(mp_value *v);
/* Its size in bytes; 0 for NULL. */
MP_API size_t mp_value_size(const mp_value *v);
/* The lock that goes with it; NULL for NULL. */
MP_API mp_lock *mp_value_lock(mp_value *v);
MP_API void mp_value_free(mp_value *v);

/* A shared array of n elements of elem_size bytes, initialised from init
 * (n * elem_size bytes; NULL: zeroed).  Errors: -EINVAL (out NULL, n or
 * elem_size 0, overflow), -ENOMEM. */
MP_API int mp_array_new(mp_array **out, size_t n, size_t elem_size, const void *init);
/* The elements (aligned to max_align_t); NULL for NULL. */
MP_API void *mp_array_data(mp_array *a);
/* Number of elements / size of one; 0 for NULL. */
MP_API size_t mp_array_len(const mp_array *a);
MP_API size_t mp_array_elem_size(const mp_array *a);
/* The lock that goes with it; NULL for NULL. */
MP_API mp_lock *mp_array_lock(mp_array *a);
MP_API void mp_array_free(mp_array *a);

/* ---- Named shared memory (shared_memory.SharedMemory), for processes
 * that are not related by fork.  A handle (mp_shm) is local to the process
 * that made it; the segment is shared.  Names: 1-250 characters of
 * letters, digits and "._-", with or without a leading '/'.
 *
 * Cleanup: a segment is removed when its creator and every process forked
 * from the creator after the creation have exited — normally, by a crash
 * or by SIGKILL — as Python's resource tracker does, unless
 * mp_shm_persist() was called.  A small tracker process (not a child of
 * yours; it ignores SIGINT and SIGTERM) does the removal, for any number
 * of segments, and removes only the segment that was made: if the name
 * was removed and made again by someone else meanwhile, the new segment
 * stays. ---- */

typedef struct mp_shm mp_shm;

/* Create a new segment of size bytes (zero-filled) and map it.  Errors:
 * -EINVAL (bad name, size 0, out NULL), -EEXIST (the name exists),
 * -ENOSPC/-ENOMEM (no room in /dev/shm), -EACCES. */
MP_API int mp_shm_create(mp_shm **out, const char *name, size_t size);
/* Map an existing segment (its size is the segment's).  Errors: -EINVAL,
 * -ENOENT (no such name), -EACCES. */
MP_API int mp_shm_open(mp_shm **out, const char *name);
/* The mapping and its size; NULL / 0 for NULL. */
MP_API void *mp_shm_data(mp_shm *s);
MP_API size_t mp_shm_size(const mp_shm *s);
/* The name without the leading '/'; NULL for NULL. */
MP_API const char *mp_shm_name(const mp_shm *s);
/* Remove the name now (mappings stay valid until freed), if it still
 * stands for the segment this handle maps.  Errors: -EINVAL, -ENOENT
 * (already removed, or removed and made again by someone else since: that
 * new segment is left alone). */
MP_API int mp_shm_unlink(mp_shm *s);
/* Keep the segment after the creator's tree exits (only the creator's
 * handle can do this; 0 and nothing to do for others).  Remove it later
 * with mp_shm_unlink.  Errors: -EINVAL. */
MP_API int mp_shm_persist(mp_shm *s);
/* Unmap and close this process's handle; never removes the name. */
MP_API void mp_shm_free(mp_shm *s);

MP_END_DECLS

#endif
