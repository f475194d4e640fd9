/* Lock and RLock on the recoverable process-shared mutex (mutex_int.h).
 *
 * The mutex gives owner-death recovery through the kernel's robust list and
 * an uncontended path of one compare-and-swap.  On top we keep the owner's
 * pid and tid so that "held by me?" (needed by Condition and by RLock) is a
 * plain read, and a recursion count for RLock. */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "mproc/sync.h"
#include "os/os.h"
#include "sync_int.h"

int mp__lock_init(struct mp_lock *l)
{
    atomic_init(&l->owner, 0);
    return mp__mutex_init(&l->m);
}

static inline void set_owner(struct mp_lock *l, pid_t tid)
{
    atomic_store_explicit(&l->owner, tid, memory_order_relaxed);
}

int mp__lock_acquire(struct mp_lock *l, int64_t deadline)
{
    int rc = mp__mutex_lock(&l->m, deadline);
    if (rc == -EBUSY)
        rc = MP_ETIMEDOUT;
    if (!MP_ACQUIRED(rc))
        return rc;
    set_owner(l, mp__gettid());
    return rc;
}

int mp__lock_release(struct mp_lock *l)
{
    pid_t me = mp__gettid();
    if (atomic_load_explicit(&l->owner, memory_order_relaxed) != me)
        return -EPERM;
    set_owner(l, 0);
    int rc = mp__mutex_unlock(&l->m);
    if (rc < 0) /* a dead owner's recycled tid: not really ours */
        set_owner(l, me);
    return rc;
}

/* Timeout 0 must not block: try once. */
static int acquire_with_timeout(struct mp_lock *l, double timeout)
{
    int64_t deadline;
    if (mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    if (timeout == 0) {
        int rc = mp__mutex_trylock(&l->m);
        if (rc == -EBUSY)
            return MP_ETIMEDOUT;
        if (!MP_ACQUIRED(rc))
            return rc;
        set_owner(l, mp__gettid());
        return rc;
    }
    return mp__lock_acquire(l, deadline);
}

/* ---- Lock ---- */

int mp_lock_new(mp_lock **out)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    int err = 0;
    mp_lock *l = mp__heap_calloc(sizeof *l, &err);
    if (l == NULL)
        return err;
    int rc = mp__lock_init(l);
    if (rc < 0) {
        mp__heap_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

int mp_lock_acquire(mp_lock *l, double timeout)
{
    if (l == NULL)
        return -EINVAL;
    if (timeout < 0) { /* forever: the fast path */
        int rc = mp__mutex_lock_forever(&l->m);
        if (MP_ACQUIRED(rc))
            set_owner(l, mp__gettid());
        return rc;
    }
    return acquire_with_timeout(l, timeout);
}

int mp_lock_release(mp_lock *l)
{
    if (l == NULL)
        return -EINVAL;
    return mp__lock_release(l);
}

bool mp_lock_locked(mp_lock *l)
{
    return l != NULL && atomic_load_explicit(&l->owner, memory_order_relaxed) != 0;
}

bool mp_lock_held(mp_lock *l)
{
    return l != NULL && mp__lock_held(l);
}

void mp_lock_free(mp_lock *l)
{
    if (l != NULL)
        mp__heap_free(l); /* no-op unless we allocated it */
}

/* ---- RLock ---- */

int mp_rlock_new(mp_rlock **out)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    int err = 0;
    mp_rlock *l = mp__heap_calloc(sizeof *l, &err);
    if (l == NULL)
        return err;
    int rc = mp__lock_init(&l->lock);
    if (rc < 0) {
        mp__heap_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

int mp_rlock_acquire(mp_rlock *l, double timeout)
{
    if (l == NULL)
        return -EINVAL;
    if (mp__lock_held(&l->lock)) {
        if (isnan(timeout))
            return -EINVAL;
        if (l->count == UINT32_MAX)
            return -EOVERFLOW;
        l->count++;
        return 0;
    }
    int rc = acquire_with_timeout(&l->lock, timeout);
    if (MP_ACQUIRED(rc))
        l->count = 1; /* also resets a dead owner's count */
    return rc;
}

int mp_rlock_release(mp_rlock *l)
{
    if (l == NULL)
        return -EINVAL;
    if (!mp__lock_held(&l->lock))
        return -EPERM;
    if (--l->count > 0)
        return 0;
    return mp__lock_release(&l->lock);
}

unsigned mp_rlock_count(mp_rlock *l)
{
    return l != NULL && mp__lock_held(&l->lock) ? l->count : 0;
}

void mp_rlock_free(mp_rlock *l)
{
    if (l != NULL)
        mp__heap_free(l);
}
