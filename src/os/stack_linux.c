/* Coroutine stacks: private anonymous mappings with a guard page at the
 * low end.  The guard is a guard region (MADV_GUARD_INSTALL, Linux 6.13+)
 * where the kernel has it, which does not split the mapping (so adjacent
 * stacks merge into few VMAs and 100,000 stacks stay far below
 * vm.max_map_count); otherwise a PROT_NONE page. */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/mman.h>

#include "os.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

void *mp__stack_map(size_t size, int *err)
{
    long page = mp__page_size();
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) {
        *err = -errno;
        return NULL;
    }
    if (madvise(p, (size_t)page, MADV_GUARD_INSTALL) != 0 &&
        mprotect(p, (size_t)page, PROT_NONE) != 0) {
        *err = -errno;
        munmap(p, size);
        return NULL;
    }
    return p;
}

void mp__stack_unmap(void *base, size_t size)
{
    munmap(base, size);
}
