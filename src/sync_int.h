/* Private layout of the locks, for the objects that embed or wrap them
 * (condition, value, array). */
#ifndef MPROC_SYNC_INT_H
#define MPROC_SYNC_INT_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "mproc/sync.h"
#include "mutex_int.h"
#include "os/os.h"

/* The owner's thread id is written by the holder only, just after
 * acquiring and just before releasing; others read it as a snapshot.
 * Thread ids are unique system-wide among live threads, so the id alone
 * says "held by me" in any process. */
struct mp_lock {
    mp__mutex m;
    _Atomic pid_t owner; /* tid of the holder; 0: free */
};

struct mp_rlock {
    struct mp_lock lock;
    unsigned count; /* recursion depth; touched by the owner only */
};

/* Initialise a lock in place (shared memory).  0 or -errno. */
int mp__lock_init(struct mp_lock *l);
/* Acquire / release with an absolute deadline (MP__NO_DEADLINE). */
int mp__lock_acquire(struct mp_lock *l, int64_t deadline);
int mp__lock_release(struct mp_lock *l);
/* True if the calling thread holds l. */
static inline bool mp__lock_held(struct mp_lock *l)
{
    return atomic_load_explicit(&l->owner, memory_order_relaxed) == mp__gettid();
}

#endif
