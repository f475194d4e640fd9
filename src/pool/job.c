/* Jobs: the state transitions of job.h and the parent's table of jobs.
 *
 * Memory orders: a dispatch publishes a job to workers with the ring's
 * release store, and a worker's final CAS publishes the result to whoever
 * loads the state with acquire.  Transitions are sequentially consistent
 * RMWs because waiters rely on them (wait_int.h).  ORPHAN is kept across
 * every transition by CAS loops: the parent may set it at any moment.
 *
 * The table names every job by id so that the supervisor can check a
 * pointer it read from shared memory before following it.  Jobs are
 * recycled, not freed, up to JOB_FREE_MAX; past it they go to a trash list
 * that only the supervisor empties, because only the supervisor looks jobs
 * up: a job is never destroyed under a lookup. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "heap_int.h"
#include "os/os.h"
#include "pool/job.h"
#include "wait_int.h"

#define JOB_FREE_MAX 16384
#define KEEP_MAX ((size_t)64 << 20) /* bytes of argument blocks kept */

/* ---- transitions ---- */

/* CAS the state part of the word from one of `from` (a bit set of states)
 * to `to`, keeping ORPHAN.  Returns the word seen (to tell which state it
 * left, and whether ORPHAN was set), or UINT32_MAX if the state was none
 * of `from`. */
static uint32_t move(job_shm *s, uint32_t from, uint32_t to)
{
    uint32_t v = atomic_load_explicit(&s->state, memory_order_acquire);
    for (;;) {
        if (!(from & (1u << (v & JOB_STATE_MASK))))
            return UINT32_MAX;
        if (atomic_compare_exchange_weak_explicit(&s->state, &v, (v & JOB_ORPHAN) | to,
                                                  memory_order_seq_cst, memory_order_acquire))
            return v;
    }
}

#define ST(x) (1u << (x))

static void wake(job_shm *s)
{
    mp__wake_word(&s->state, &s->waiters);
}

void mp__job_queue(job_shm *s, uint64_t seq)
{
    atomic_store_explicit(&s->seq, seq, memory_order_relaxed);
    /* Fresh from mp__job_get, the job is its submitter's alone (nobody
     * holds a handle to it yet): a plain store does, and spares waiting
     * for the line a CAS needs (the ring's push publishes it).  A job
     * dispatched again may be orphaned meanwhile: that takes the CAS. */
    if (atomic_load_explicit(&s->state, memory_order_relaxed) == JOB_FREE) {
        atomic_store_explicit(&s->state, JOB_QUEUED, memory_order_relaxed);
        return;
    }
    move(s, ST(JOB_FREE) | ST(JOB_QUEUED) | ST(JOB_STOPPED) | ST(JOB_DONE) | ST(JOB_RUNNING),
         JOB_QUEUED);
}

bool mp__job_begin(job_shm *s)
{
    return move(s, ST(JOB_QUEUED), JOB_RUNNING) != UINT32_MAX;
}

bool mp__job_cancel(job_shm *s)
{
    if (move(s, ST(JOB_QUEUED), JOB_CANCELED_QUEUED) == UINT32_MAX)
        return false;
    if (!atomic_load_explicit(&s->notify, memory_order_relaxed))
        wake(s); /* final for waiters of a job without callbacks */
    return true;
}

bool mp__job_drop(job_shm *s)
{
    if (atomic_load_explicit(&s->notify, memory_order_relaxed))
        return true; /* its error callback runs first */
    uint32_t v = move(s, ST(JOB_CANCELED_QUEUED), JOB_CANCELED);
    return v != UINT32_MAX && (v & JOB_ORPHAN);
}

bool mp__job_end(job_shm *s)
{
    bool notify = atomic_load_explicit(&s->notify, memory_order_relaxed);
    uint32_t v = move(s, ST(JOB_RUNNING), notify ? JOB_ENDED : JOB_DONE);
    if (v == UINT32_MAX)
        return true; /* not ours to end (terminated): let the supervisor look */
    if (!notify)
        wake(s); /* after this the job may be reused: touch nothing more */
    return notify || (v & JOB_ORPHAN);
}

void mp__job_stop(job_shm *s)
{
    move(s, ST(JOB_RUNNING), JOB_STOPPED);
}

bool mp__job_finish(job_shm *s, bool cancel)
{
    uint32_t v = atomic_load_explicit(&s->state, memory_order_acquire);
    for (;;) {
        uint32_t st = v & JOB_STATE_MASK;
        if (job_is_recyclable(st))
            return v & JOB_ORPHAN;
        uint32_t to = cancel || st == JOB_CANCELED_QUEUED ? JOB_CANCELED : JOB_DONE;
        if (atomic_compare_exchange_weak_explicit(&s->state, &v, (v & JOB_ORPHAN) | to,
                                                  memory_order_seq_cst, memory_order_acquire))
            break;
    }
    bool orphan = v & JOB_ORPHAN;
    /* The waiters may free and reuse it as soon as they see it final: the
     * wake must not touch it then.  Futex wakes name an address, not an
     * object: a wake that reaches a reused job is a spurious wake-up. */
    wake(s);
    return orphan;
}

bool mp__job_orphan(job_shm *s)
{
    uint32_t v = atomic_fetch_or(&s->state, JOB_ORPHAN);
    return job_is_recyclable(v & JOB_STATE_MASK);
}

/* ---- the table ---- */

int mp__jobs_init(job_table *t)
{
    memset(t, 0, sizeof *t);
    return -pthread_mutex_init(&t->lock, NULL);
}

static void job_destroy(job *j)
{
    free(j->died);
    if (j->block)
        mp__heap_free(j->block);
    mp__heap_free(j->shm);
    free(j);
}

void mp__jobs_destroy(job_table *t)
{
    uint32_t n = atomic_load(&t->njobs);
    for (uint32_t id = 0; id < n; id++) {
        job *_Atomic *page = atomic_load(&t->dir[id / JOB_PAGE]);
        job *j = page ? atomic_load(&page[id % JOB_PAGE]) : NULL;
        if (j)
            job_destroy(j);
    }
    for (size_t i = 0; i < JOB_PAGES; i++)
        free(atomic_load(&t->dir[i]));
    free(t->free_ids);
    pthread_mutex_destroy(&t->lock);
}

/* Give j an id and enter it in the table (lock held).  0 or -ENOMEM. */
static int enter(job_table *t, job *j)
{
    uint32_t id;
    if (t->nfree_ids) {
        id = t->free_ids[--t->nfree_ids];
    } else {
        id = atomic_load(&t->njobs);
        if (id >= (uint32_t)JOB_PAGES * JOB_PAGE)
            return -ENOMEM;
        if (atomic_load(&t->dir[id / JOB_PAGE]) == NULL) {
            job *_Atomic *page = calloc(JOB_PAGE, sizeof *page);
            if (page == NULL)
                return -ENOMEM;
            atomic_store(&t->dir[id / JOB_PAGE], page);
        }
        atomic_store(&t->njobs, id + 1);
    }
    j->shm->id = id;
    j->id = id;
    atomic_store_explicit(&atomic_load(&t->dir[id / JOB_PAGE])[id % JOB_PAGE], j,
                          memory_order_release);
    return 0;
}

/* Move the jobs returned since the last look to the free list, or to the
 * trash past its bound (lock held). */
static void take_returned(job_table *t)
{
    job *j = atomic_exchange(&t->returned, NULL);
    while (j) {
        job *n = j->next;
        if (j->block && t->kept + j->block_size > KEEP_MAX) {
            mp__heap_free(j->block);
            j->block = NULL;
            j->block_size = 0;
        }
        if (t->nfree < JOB_FREE_MAX) {
            j->next = t->free;
            t->free = j;
            t->nfree++;
            t->kept += j->block_size;
        } else {
            j->next = t->trash;
            t->trash = j;
        }
        j = n;
    }
}

job *mp__job_get(pool_core *c, job_table *t)
{
    pthread_mutex_lock(&t->lock);
    if (t->free == NULL)
        take_returned(t);
    job *j = t->free;
    if (j) {
        t->free = j->next;
        t->nfree--;
        t->kept -= j->block_size;
    }
    pthread_mutex_unlock(&t->lock);
    if (j == NULL) {
        j = calloc(1, sizeof *j);
        if (j == NULL)
            return NULL;
        j->shm = mp__heap_calloc(sizeof *j->shm, NULL);
        if (j->shm == NULL) {
            free(j);
            return NULL;
        }
        pthread_mutex_lock(&t->lock);
        int rc = enter(t, j);
        pthread_mutex_unlock(&t->lock);
        if (rc < 0) {
            job_destroy(j);
            return NULL;
        }
    }
    /* Reset what the next dispatch does not set itself (the submitters set
     * the task, its options and limits; the argument block is kept, so
     * that its pages, mapped in the workers, are used again).  Field by
     * field: this is on every task's way, and a memset of the halves cost
     * more than the rest of the submission.  The state word is set with an
     * atomic store, and its waiter count left as it is (back to 0): the
     * worker that ended the last dispatch may still be reading them in its
     * wake-up (mp__job_end), which at worst wakes a waiter of the reused
     * job spuriously, which every wait tolerates. */
    job_shm *s = j->shm;
    atomic_store_explicit(&s->state, JOB_FREE, memory_order_relaxed);
    s->id = j->id; /* (a task may have scribbled over it) */
    s->kind = 0;
    atomic_store_explicit(&s->notify, 0, memory_order_relaxed);
    s->nfds = 0;
    s->next_done = NULL;
    s->info = (task_outcome){0};
    s->res = NULL;
    s->res_len = 0;
    s->batch = NULL;
    s->nfail = 0;
    /* Not in an item (a map helper is between items until it claims one,
     * and its deadline does not run; an apply task sets 0: its one item
     * runs from its start). */
    atomic_store_explicit(&s->cur, UINT64_MAX, memory_order_relaxed);
    j->core = c;
    j->done = NULL;
    j->batch = NULL;
    j->bs = NULL;
    j->collected_seq = 0;
    j->next = j->next_retired = NULL;
    j->nfds = 0;
    j->pending = false;
    j->notify = false;
    atomic_store_explicit(&j->reported, false, memory_order_relaxed);
    j->owner = mp__getpid();
    return j;
}

void mp__job_recycle(job_table *t, job *j)
{
    job_shm *s = j->shm;
    unsigned char *in = s->inline_buf;
    if (s->res && ((unsigned char *)s->res < in || (unsigned char *)s->res >= in + JOB_INLINE))
        mp__heap_free_any(s->res); /* (checks it is a live block) */
    s->res = NULL;
    for (uint32_t i = 0; i < j->nfds && i < MP_TASK_MAX_FDS; i++)
        close(j->fds[i]);
    j->nfds = 0;
    free(j->died);
    j->died = NULL;
    /* Onto the returned stack without the lock (a push-only stack has no
     * ABA: it is only ever taken whole); the next get or trim sorts it. */
    job *head = atomic_load_explicit(&t->returned, memory_order_relaxed);
    do
        j->next = head;
    while (!atomic_compare_exchange_weak_explicit(&t->returned, &head, j, memory_order_release,
                                                  memory_order_relaxed));
}

void mp__jobs_trim(job_table *t)
{
    pthread_mutex_lock(&t->lock);
    take_returned(t);
    job *list = t->trash;
    t->trash = NULL;
    for (job *j = list; j; j = j->next) {
        uint32_t id = j->id;
        atomic_store(&atomic_load(&t->dir[id / JOB_PAGE])[id % JOB_PAGE], NULL);
        if (t->nfree_ids == t->cap_ids) {
            size_t cap = t->cap_ids ? t->cap_ids * 2 : 256;
            uint32_t *ids = realloc(t->free_ids, cap * sizeof *ids);
            if (ids == NULL) {
                continue; /* the id is lost, the job still freed */
            }
            t->free_ids = ids;
            t->cap_ids = cap;
        }
        t->free_ids[t->nfree_ids++] = id;
    }
    pthread_mutex_unlock(&t->lock);
    while (list) {
        job *n = list->next;
        job_destroy(list);
        list = n;
    }
}

job *mp__job_by_id(job_table *t, uint32_t id)
{
    if (id >= atomic_load(&t->njobs))
        return NULL;
    job *_Atomic *page = atomic_load(&t->dir[id / JOB_PAGE]);
    return page ? atomic_load_explicit(&page[id % JOB_PAGE], memory_order_acquire) : NULL;
}

job *mp__job_of(job_table *t, const job_shm *s)
{
    if (s == NULL || ((uintptr_t)s & 15) || !mp__heap_contains(s) ||
        !mp__heap_contains((const char *)s + sizeof *s - 1))
        return NULL;
    uint32_t id = ((const volatile job_shm *)s)->id; /* read once */
    if (id >= atomic_load(&t->njobs))
        return NULL;
    job *_Atomic *page = atomic_load(&t->dir[id / JOB_PAGE]);
    job *j = page ? atomic_load_explicit(&page[id % JOB_PAGE], memory_order_acquire) : NULL;
    return j && j->shm == s ? j : NULL;
}

void mp__jobs_each(job_table *t, void (*fn)(job *j, void *arg), void *arg)
{
    uint32_t n = atomic_load(&t->njobs);
    for (uint32_t id = 0; id < n; id++) {
        job *_Atomic *page = atomic_load(&t->dir[id / JOB_PAGE]);
        job *j = page ? atomic_load_explicit(&page[id % JOB_PAGE], memory_order_acquire) : NULL;
        if (j)
            fn(j, arg);
    }
}

void *mp__job_block(job *j, size_t size, int *err)
{
    if (j->block && j->block_size >= size)
        return j->block;
    if (j->block) {
        mp__heap_free(j->block);
        j->block = NULL;
        j->block_size = 0;
    }
    j->block = mp__heap_alloc(size, err);
    if (j->block)
        j->block_size = mp__heap_block_size(j->block);
    return j->block;
}
