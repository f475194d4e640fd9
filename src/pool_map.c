/* map and imap: an array cut into chunks, a window of chunk jobs in flight.
 *
 * Each chunk job runs items [start, count) and records the items that fail
 * (up to CHUNK_FAILS, then it stops early).  When it stops, the collector
 * records the failures and either sends the rest of the chunk back to the
 * ring (after an early stop, or after its worker died on item `cur`, which
 * alone fails) or, once the chunk is complete, copies its output out of the
 * staging buffer and reuses the job for the next chunk not yet started.
 *
 * Arrays in the shared heap are read and written in place; others are
 * staged through one heap buffer per job, copied once each way. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "os/os.h"
#include "pool_int.h"

struct map_batch {
    pool_core *c;
    mp_map_fn fn;
    const char *in;
    char *out;                  /* the caller's array, or the iterator's */
    size_t n, in_size, out_size, chunk, nchunks;
    bool in_shared, out_shared;
    int64_t timeout_ns;

    pthread_mutex_t lock;       /* everything below */
    size_t next_chunk;
    size_t active;              /* jobs not yet retired */
    bool canceled, incomplete;
    job **jobs;                 /* the window; NULL once retired */
    size_t njobs;
    mp_map_error *errs;
    size_t nerrs, cap;
    unsigned char *done;        /* per chunk: complete */
    size_t *order;              /* chunks in order of completion */
    _Atomic size_t finished;

    _Atomic uint32_t events;    /* futex: bumped at every chunk's end */
    _Atomic uint32_t waiters;
};

struct mp_iter {
    map_batch *b;
    pool_core *c;
    pid_t owner;
    bool ordered;
    size_t yielded, next_k, k, item, cnt;
    bool in_chunk;
    mp_map_error *cerrs;        /* failures of the current chunk */
    size_t ncerrs, cerr_pos;
};

static size_t align16(size_t v) { return (v + 15) & ~(size_t)15; }

static void batch_event(map_batch *b)
{
    atomic_fetch_add(&b->events, 1);
    mp__pool_wake_word(&b->events, &b->waiters);
}

static int add_err(map_batch *b, size_t index, const mp_task_info *info)
{
    if (b->nerrs == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        mp_map_error *e = realloc(b->errs, cap * sizeof *e);
        if (e == NULL)
            return -ENOMEM;
        b->errs = e;
        b->cap = cap;
    }
    b->errs[b->nerrs].index = index;
    b->errs[b->nerrs].info = *info;
    b->nerrs++;
    return 0;
}

/* Point job j at chunk k, staging its input.  0 or -ENOMEM. */
static int setup_chunk(map_batch *b, job *j, size_t k)
{
    size_t first = k * b->chunk;
    size_t cnt = b->n - first < b->chunk ? b->n - first : b->chunk;
    size_t in_bytes = b->in_shared ? 0 : align16(b->chunk * b->in_size);
    size_t out_bytes = b->out_shared ? 0 : b->chunk * b->out_size;
    char *stage = NULL;
    if (in_bytes + out_bytes > 0) {
        int err = 0;
        stage = mp__pool_job_block(j, in_bytes + out_bytes, &err);
        if (stage == NULL)
            return err ? err : -ENOMEM;
    }
    j->kind = JOB_CHUNK;
    j->mfn = b->fn;
    j->in_size = b->in_size;
    j->out_size = b->out_size;
    j->first = first;
    j->start = 0;
    j->count = (uint32_t)cnt;
    atomic_store(&j->cur, 0);
    j->nfail = 0;
    j->chunk_no = (uint32_t)k;
    j->batch = b;
    j->notify = 1;
    j->timeout_ns = b->timeout_ns;
    if (b->in_shared) {
        j->in = b->in + first * b->in_size;
    } else {
        memcpy(stage, b->in + first * b->in_size, cnt * b->in_size);
        j->in = stage;
    }
    j->out = b->out_shared ? b->out + first * b->out_size : stage + in_bytes;
    return 0;
}

static void forget_job(map_batch *b, job *j)
{
    for (size_t i = 0; i < b->njobs; i++)
        if (b->jobs[i] == j)
            b->jobs[i] = NULL;
}

void mp__pool_chunk_ended(job *j, const mp_task_info *failed)
{
    map_batch *b = j->batch;
    pool_core *c = b->c;
    pthread_mutex_lock(&b->lock);
    for (uint32_t i = 0; i < j->nfail && i < CHUNK_FAILS; i++) {
        mp_task_info info = {.code = MP_ETASK, .task_rc = j->fails[i].rc};
        add_err(b, j->first + j->fails[i].item, &info);
    }
    j->nfail = 0;
    for (uint32_t i = 0; i < j->nxerrs; i++)
        add_err(b, j->xerrs[i].index, &j->xerrs[i].info);
    free(j->xerrs);
    j->xerrs = NULL;
    j->nxerrs = 0;
    uint32_t resume = atomic_load(&j->cur);
    if (failed) {
        add_err(b, j->first + resume, failed);
        resume++;
    }
    /* A closed pool still finishes its work; cancellation stops it. */
    bool stop = atomic_load(&j->state) == JOB_CANCELED || b->canceled || mp__pool_terminated(c);
    if (!stop && resume < j->count) {
        pthread_mutex_unlock(&b->lock);
        j->start = resume;
        mp__pool_lock(c);
        mp__pool_dispatch(c, j);
        mp__pool_unlock(c);
        return;
    }
    if (resume < j->count) {
        b->incomplete = true;
    } else {
        if (!b->out_shared && b->out_size)
            memcpy(b->out + j->first * b->out_size, j->out, (size_t)j->count * b->out_size);
        b->done[j->chunk_no] = 1;
        size_t f = atomic_load(&b->finished);
        b->order[f] = j->chunk_no;
        atomic_store(&b->finished, f + 1);
    }
    if (!stop && b->next_chunk < b->nchunks) {
        size_t k = b->next_chunk++;
        pthread_mutex_unlock(&b->lock);
        setup_chunk(b, j, k); /* the job's staging buffer is big enough */
        mp__pool_lock(c);
        mp__pool_dispatch(c, j);
        mp__pool_unlock(c);
        batch_event(b);
        return;
    }
    forget_job(b, j);
    b->active--;
    batch_event(b); /* under the lock: the batch may be freed once it is idle */
    pthread_mutex_unlock(&b->lock);
    mp__pool_job_retire(j);
}

void mp__pool_chunk_cancel(job *j)
{
    map_batch *b = j->batch;
    pthread_mutex_lock(&b->lock);
    b->incomplete = true;
    forget_job(b, j);
    b->active--;
    batch_event(b); /* under the lock: the batch may be freed once it is idle */
    pthread_mutex_unlock(&b->lock);
    mp__pool_job_retire(j);
}

/* ---- batches ---- */

static bool in_heap(const void *p, size_t bytes)
{
    return p && bytes && mp__heap_contains(p) && mp__heap_contains((const char *)p + bytes - 1);
}

static void batch_free(map_batch *b)
{
    if (b == NULL)
        return;
    pthread_mutex_destroy(&b->lock);
    free(b->jobs);
    free(b->errs);
    free(b->done);
    free(b->order);
    free(b);
}

static bool batch_idle(void *arg)
{
    map_batch *b = arg;
    pthread_mutex_lock(&b->lock);
    bool idle = b->active == 0;
    pthread_mutex_unlock(&b->lock);
    return idle;
}

static void batch_cancel(map_batch *b)
{
    pthread_mutex_lock(&b->lock);
    b->canceled = true;
    for (size_t i = 0; i < b->njobs; i++) {
        job *j = b->jobs[i];
        uint32_t st = JOB_QUEUED;
        if (j && atomic_compare_exchange_strong(&j->state, &st, JOB_CANCELED))
            mp__pool_wake_word(&j->state, &j->waiters);
    }
    pthread_mutex_unlock(&b->lock);
}

/* Validate, make the batch and start its first window of chunks. */
static int batch_start(mp_pool *p, mp_map_fn fn, const void *in, size_t n, size_t in_size,
                       void *out, size_t out_size, size_t chunksize, bool blocking,
                       map_batch **bp)
{
    pool_core *c;
    int rc = mp__pool_check(p, &c);
    if (rc < 0)
        return rc;
    if (fn == NULL || in_size == 0 || (in == NULL && n > 0) ||
        (blocking && out == NULL && out_size > 0 && n > 0))
        return -EINVAL;
    if (n > 0 && (in_size > SIZE_MAX / n || (out_size && out_size > SIZE_MAX / n)))
        return -EOVERFLOW;
    if (blocking && mp__pool_in_callback(c))
        return -EDEADLK;
    if ((rc = mp__pool_fn_check(c, (void (*)(void))fn)) < 0)
        return rc;
    if (!mp__pool_accepting(c))
        return MP_ECLOSED;
    unsigned nw = mp__pool_nworkers(c);
    if (chunksize == 0) {
        /* As Python: about four chunks per worker. */
        size_t parts = (size_t)nw * 4;
        chunksize = n / parts + (n % parts ? 1 : 0);
        if (chunksize == 0)
            chunksize = 1;
    }
    if (chunksize > n)
        chunksize = n ? n : 1; /* a chunk never holds more than the items */
    if (chunksize > UINT32_MAX)
        chunksize = UINT32_MAX;
    map_batch *b = calloc(1, sizeof *b);
    if (b == NULL)
        return -ENOMEM;
    pthread_mutex_init(&b->lock, NULL);
    b->c = c;
    b->fn = fn;
    b->in = in;
    b->n = n;
    b->in_size = in_size;
    b->out_size = out_size;
    b->chunk = chunksize;
    b->nchunks = n == 0 ? 0 : (n - 1) / chunksize + 1;
    b->timeout_ns = mp__pool_timeout_ns(c);
    b->in_shared = in_heap(in, n * in_size);
    if (blocking) {
        b->out = out;
        b->out_shared = out_size == 0 || in_heap(out, n * out_size);
    } else if (out_size && n) {
        b->out = malloc(n * out_size);
        if (b->out == NULL)
            goto nomem;
    }
    size_t window = (size_t)nw * 4 > 64 ? (size_t)nw * 4 : 64;
    b->njobs = b->nchunks < window ? b->nchunks : window;
    b->jobs = calloc(b->njobs ? b->njobs : 1, sizeof *b->jobs);
    b->done = calloc(b->nchunks ? b->nchunks : 1, 1);
    b->order = calloc(b->nchunks ? b->nchunks : 1, sizeof *b->order);
    if (b->jobs == NULL || b->done == NULL || b->order == NULL)
        goto nomem;
    rc = 0;
    for (size_t i = 0; i < b->njobs && rc == 0; i++) {
        job *j = mp__pool_job_get(c);
        if (j == NULL) {
            rc = -ENOMEM;
            break;
        }
        atomic_init(&j->refs, 1);
        /* The collector may have started later chunks on finished jobs. */
        pthread_mutex_lock(&b->lock);
        size_t k = b->next_chunk < b->nchunks ? b->next_chunk++ : SIZE_MAX;
        pthread_mutex_unlock(&b->lock);
        if (k == SIZE_MAX) {
            mp__pool_job_unref(j);
            break;
        }
        if ((rc = setup_chunk(b, j, k)) < 0) {
            mp__pool_job_unref(j);
            break;
        }
        pthread_mutex_lock(&b->lock);
        b->jobs[i] = j;
        b->active++;
        pthread_mutex_unlock(&b->lock);
        mp__pool_lock(c);
        if (!mp__pool_accepting(c)) {
            mp__pool_unlock(c);
            pthread_mutex_lock(&b->lock);
            b->jobs[i] = NULL;
            b->active--;
            pthread_mutex_unlock(&b->lock);
            mp__pool_job_unref(j);
            rc = MP_ECLOSED;
            break;
        }
        mp__pool_dispatch(c, j);
        mp__pool_unlock(c);
    }
    if (rc < 0) {
        batch_cancel(b);
        mp__pool_wait_word(&b->events, &b->waiters, batch_idle, b, MP__NO_DEADLINE, true);
        if (!blocking)
            free(b->out);
        batch_free(b);
        return rc;
    }
    *bp = b;
    return 0;
nomem:
    if (!blocking)
        free(b->out);
    batch_free(b);
    return -ENOMEM;
}

static int cmp_err(const void *a, const void *b)
{
    size_t x = ((const mp_map_error *)a)->index, y = ((const mp_map_error *)b)->index;
    return x < y ? -1 : x > y;
}

int mp_pool_map_ex(mp_pool *p, mp_map_fn fn, const void *in, size_t n, size_t in_size,
                   void *out, size_t out_size, size_t chunksize,
                   mp_map_error **errs, size_t *nerrs)
{
    if (errs)
        *errs = NULL;
    if (nerrs)
        *nerrs = 0;
    map_batch *b;
    int rc = batch_start(p, fn, in, n, in_size, out, out_size, chunksize, true, &b);
    if (rc < 0)
        return rc;
    mp__pool_wait_word(&b->events, &b->waiters, batch_idle, b, MP__NO_DEADLINE, true);
    if (b->nerrs) {
        qsort(b->errs, b->nerrs, sizeof *b->errs, cmp_err);
        rc = b->errs[0].info.code;
    } else if (b->incomplete) {
        rc = MP_ECANCELED;
    }
    if (errs && b->nerrs) {
        *errs = b->errs;
        b->errs = NULL;
    }
    if (nerrs)
        *nerrs = b->nerrs;
    batch_free(b);
    return rc;
}

int mp_pool_map(mp_pool *p, mp_map_fn fn, const void *in, size_t n, size_t in_size,
                void *out, size_t out_size, size_t chunksize)
{
    return mp_pool_map_ex(p, fn, in, n, in_size, out, out_size, chunksize, NULL, NULL);
}

/* ---- imap ---- */

int mp_pool_imap(mp_pool *p, mp_map_fn fn, const void *in, size_t n, size_t in_size,
                 size_t out_size, size_t chunksize, bool ordered, mp_iter **out)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    mp_iter *it = calloc(1, sizeof *it);
    if (it == NULL)
        return -ENOMEM;
    map_batch *b;
    int rc = batch_start(p, fn, in, n, in_size, NULL, out_size, chunksize, false, &b);
    if (rc < 0) {
        free(it);
        return rc;
    }
    it->b = b;
    it->c = b->c;
    it->owner = mp__getpid();
    it->ordered = ordered;
    mp__pool_core_ref(it->c);
    *out = it;
    return 0;
}

typedef struct {
    map_batch *b;
    size_t k;       /* ordered: the chunk wanted */
    size_t ord;     /* unordered: how many chunks consumed */
    bool ordered;
} iter_wait;

static bool iter_ready(void *arg)
{
    iter_wait *w = arg;
    map_batch *b = w->b;
    pthread_mutex_lock(&b->lock);
    bool ready = (w->ordered ? b->done[w->k] != 0 : atomic_load(&b->finished) > w->ord) ||
                 b->active == 0;
    pthread_mutex_unlock(&b->lock);
    return ready;
}

static int enter_chunk(mp_iter *it, int64_t deadline)
{
    map_batch *b = it->b;
    iter_wait w = {b, it->next_k, atomic_load(&b->finished), it->ordered};
    if (!it->ordered)
        w.ord = it->next_k; /* next_k counts chunks consumed when unordered */
    int rc = mp__pool_wait_word(&b->events, &b->waiters, iter_ready, &w, deadline, true);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&b->lock);
    size_t k;
    if (it->ordered) {
        if (!b->done[it->next_k]) {
            pthread_mutex_unlock(&b->lock);
            return MP_ECANCELED;
        }
        k = it->next_k;
    } else {
        if (atomic_load(&b->finished) <= it->next_k) {
            pthread_mutex_unlock(&b->lock);
            return MP_ECANCELED;
        }
        k = b->order[it->next_k];
    }
    it->next_k++;
    size_t first = k * b->chunk;
    it->k = k;
    it->item = 0;
    it->cnt = b->n - first < b->chunk ? b->n - first : b->chunk;
    it->ncerrs = it->cerr_pos = 0;
    free(it->cerrs);
    it->cerrs = NULL;
    size_t m = 0;
    for (size_t i = 0; i < b->nerrs; i++)
        if (b->errs[i].index >= first && b->errs[i].index < first + it->cnt)
            m++;
    if (m) {
        it->cerrs = malloc(m * sizeof *it->cerrs);
        if (it->cerrs == NULL) {
            pthread_mutex_unlock(&b->lock);
            it->next_k--;
            return -ENOMEM;
        }
        for (size_t i = 0; i < b->nerrs; i++)
            if (b->errs[i].index >= first && b->errs[i].index < first + it->cnt)
                it->cerrs[it->ncerrs++] = b->errs[i];
        qsort(it->cerrs, it->ncerrs, sizeof *it->cerrs, cmp_err);
    }
    pthread_mutex_unlock(&b->lock);
    it->in_chunk = true;
    return 0;
}

int mp_iter_next(mp_iter *it, void *out, size_t *index, double timeout)
{
    if (it == NULL)
        return -EINVAL;
    if (it->owner != mp__getpid())
        return -EPERM;
    int64_t deadline;
    int rc = mp__deadline(timeout, &deadline);
    if (rc < 0)
        return rc;
    map_batch *b = it->b;
    if (it->yielded == b->n)
        return MP_EDONE;
    if (!it->in_chunk && (rc = enter_chunk(it, deadline)) < 0)
        return rc;
    size_t idx = it->k * b->chunk + it->item;
    if (++it->item == it->cnt)
        it->in_chunk = false;
    it->yielded++;
    if (index)
        *index = idx;
    if (it->cerr_pos < it->ncerrs && it->cerrs[it->cerr_pos].index == idx)
        return it->cerrs[it->cerr_pos++].info.code;
    if (out && b->out_size)
        memcpy(out, b->out + idx * b->out_size, b->out_size);
    return 0;
}

void mp__iter_cancel(mp_iter *it) { batch_cancel(it->b); }

int mp__iter_wait_all(mp_iter *it, double timeout, void *out, mp_map_error **errs,
                      size_t *nerrs)
{
    map_batch *b = it->b;
    int64_t deadline;
    int rc = mp__deadline(timeout, &deadline);
    if (rc < 0)
        return rc;
    rc = mp__pool_wait_word(&b->events, &b->waiters, batch_idle, b, deadline, true);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&b->lock);
    if (b->incomplete) {
        pthread_mutex_unlock(&b->lock);
        return MP_ECANCELED;
    }
    if (b->out_size && b->n)
        memcpy(out, b->out, b->n * b->out_size);
    if (b->nerrs)
        qsort(b->errs, b->nerrs, sizeof *b->errs, cmp_err);
    *errs = b->errs;
    *nerrs = b->nerrs;
    b->errs = NULL;
    b->nerrs = b->cap = 0;
    pthread_mutex_unlock(&b->lock);
    return 0;
}

void mp_iter_free(mp_iter *it)
{
    if (it == NULL || it->owner != mp__getpid())
        return;
    map_batch *b = it->b;
    batch_cancel(b);
    mp__pool_wait_word(&b->events, &b->waiters, batch_idle, b, MP__NO_DEADLINE, true);
    free(b->out);
    batch_free(b);
    free(it->cerrs);
    mp__pool_core_unref(it->c);
    free(it);
}
