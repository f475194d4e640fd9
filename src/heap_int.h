/* The shared heap: one MAP_SHARED anonymous region, reserved once by the
 * first process that needs it and inherited at the same address by every
 * process forked afterwards, so a pointer into it is valid in the whole
 * process tree.  Every shareable object of the library lives here. */
#ifndef MPROC_HEAP_INT_H
#define MPROC_HEAP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "export_int.h"

/* Allocate size bytes (aligned to max_align_t, at least 16), owned by the
 * calling process.  Maps the heap on first use.  NULL when the heap's budget
 * is exhausted or size is 0 or too large; *err (if not NULL) says why:
 * -EINVAL, -ENOMEM, or the mapping's error. */
MP_INTERNAL void *mp__heap_alloc(size_t size, int *err);
/* Same, zero-filled. */
void *mp__heap_calloc(size_t size, int *err);
/* Free a block if the calling process allocated it; otherwise, or if p is
 * not a live block of the heap, do nothing.  Returns 0, -EPERM (another
 * process's block), or -EINVAL (not a live block). */
MP_INTERNAL int mp__heap_free(void *p);
/* Free a block whoever allocated it (internal hand-offs between processes,
 * e.g. a result allocated by a worker and freed by the parent). */
int mp__heap_free_any(void *p);
/* True if p is a live block allocated by the calling process (the test
 * every shared object's _free makes before touching its insides). */
bool mp__heap_owned(const void *p);
/* True if p points into the heap's data area of this process tree. */
bool mp__heap_contains(const void *p);
/* Usable size of a live block (its size class), or 0. */
size_t mp__heap_block_size(const void *p);
/* Bytes of the heap's data area (0 before it is mapped). */
size_t mp__heap_capacity(void);
/* Make sure the heap is mapped (done before every fork of ours, so that
 * children share it).  Returns 0 or -errno. */
int mp__heap_ensure(void);
/* Walk all of the heap's lists and spans (tests): 0, or -EUCLEAN with what
 * is wrong written to why. */
int mp__heap_check(char *why, size_t cap);

#endif
