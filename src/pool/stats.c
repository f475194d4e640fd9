/* What a pool has done and is doing: mp_pool_get_stats and the pids of its
 * workers.
 *
 * The totals are sums of counters kept where the work ends, so that no
 * lock is taken on any task's way: each worker counts, in its own slot,
 * the tasks it finished and the map items of each chunk it leaves; the
 * supervisor counts what a dead worker was running; the map counts items
 * as their failures are recorded.  Each sum is read without stopping the
 * pool: it is exact at some moment during the call. */
#define _GNU_SOURCE
#include <errno.h>
#include <unistd.h>

#include "os/os.h"
#include "pool/core.h"

void mp__pool_set_pid(pool_core *c, unsigned w, pid_t pid)
{
    if (w < c->nslots)
        atomic_store_explicit(&c->pids[w], pid, memory_order_relaxed);
}

int mp_pool_get_stats(mp_pool *p, mp_pool_stats *out)
{
    pool_core *c;
    int rc = mp__pool_check(p, &c);
    if (rc < 0)
        return rc;
    if (out == NULL)
        return -EINVAL;
    pool_shm *s = c->s;
    mp_pool_stats st = {.workers = c->nworkers};
    uint64_t failed = 0;
    for (unsigned w = 0; w < c->nslots; w++) {
        worker_slot *ws = &s->workers[w];
        st.tasks_done += atomic_load_explicit(&ws->done, memory_order_relaxed);
        failed += atomic_load_explicit(&ws->failed, memory_order_relaxed);
        if (c->be->caps & BACKEND_REMOTE)
            st.running += atomic_load_explicit(&ws->busy, memory_order_relaxed);
        else if (atomic_load_explicit(&ws->current, memory_order_relaxed))
            st.running++;
    }
    st.tasks_done += atomic_load_explicit(&c->died_done, memory_order_relaxed);
    failed += atomic_load_explicit(&c->died_failed, memory_order_relaxed) +
              atomic_load_explicit(&c->items_failed, memory_order_relaxed);
    /* (a failure recorded before its chunk was counted done) */
    st.tasks_failed = failed < st.tasks_done ? failed : st.tasks_done;
    st.worker_restarts = atomic_load_explicit(&c->restarts, memory_order_relaxed);
    pthread_mutex_lock(&c->lock);
    st.queued = mp__pool_queued(c);
    pthread_mutex_unlock(&c->lock);
    *out = st;
    return 0;
}

pid_t mp_pool_worker_pid(mp_pool *p, unsigned i)
{
    pool_core *c;
    int rc = mp__pool_check(p, &c);
    if (rc < 0)
        return rc;
    if (i >= c->nworkers)
        return -EINVAL;
    if (c->be->caps & BACKEND_REMOTE)
        return -ENOTSUP;
    if (!(c->be->caps & BACKEND_KILL))
        return getpid(); /* threads */
    pid_t pid = atomic_load_explicit(&c->pids[i], memory_order_relaxed);
    return pid > 0 ? pid : -ESRCH;
}
