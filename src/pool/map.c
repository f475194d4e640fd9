/* map and map_ex: an array cut into chunks that helper jobs work through
 * (batch.h), and the parent's side of it: staging, failures, the end.
 *
 * A map dispatches one helper per worker that can take part (no more than
 * there are chunks); each claims chunks until none is left.  The caller
 * waits on the batch's event word, which workers bump as chunks are done:
 * a map whose items all succeed ends without the supervisor.  Failures go
 * through it: a worker that saw an item fail stops holding its chunk, and
 * the supervisor's hook (helper_done) records the failures before it marks
 * the chunk done, so once every chunk is done every failure is known.  A
 * worker that dies fails the item it was running; the rest of its chunk
 * goes back to be claimed.
 *
 * Arrays the workers can reach (shared-heap arrays, or any array for
 * thread and MPI pools, whose workers run in this process) are read and
 * written in place.  Others are staged through the shared heap in a
 * window of chunk-sized slots: the caller copies a chunk in, the workers
 * claim it, the caller copies it out when it is done and reuses the slot,
 * all while other chunks run. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "os/os.h"
#include "pool/map.h"
#include "wait_int.h"

#define STAGE_MAX ((size_t)64 << 20) /* bytes of staging a map uses at most */
#define GROW_NS 1000000LL            /* a map adds helpers this often */

static size_t align16(size_t v) { return (v + 15) & ~(size_t)15; }

/* Keep a crash report for the failures of one death: 0 (none, or no
 * memory for it: the failures keep their outcome), else 1 + its index. */
static uint32_t add_report(map_batch *mb, const mp_task_info *info)
{
    if (info->fault_addr == 0 && info->crash[0] == '\0')
        return 0;
    mp_task_info *r = mp__os.realloc(mb->reports, (mb->nreports + 1) * sizeof *r);
    if (r == NULL)
        return 0;
    mb->reports = r;
    r[mb->nreports++] = *info;
    return (uint32_t)mb->nreports;
}

static int add_err(map_batch *mb, uint64_t index, task_outcome info, uint32_t report)
{
    atomic_fetch_add_explicit(&mb->c->items_failed, 1, memory_order_relaxed);
    if (mb->nerrs == mb->cap) {
        size_t cap = mb->cap ? mb->cap * 2 : 16;
        map_err *e = mp__os.realloc(mb->errs, cap * sizeof *e);
        if (e == NULL) {
            mb->oom = true; /* the map fails with -ENOMEM, never reports success */
            return -ENOMEM;
        }
        mb->errs = e;
        mb->cap = cap;
    }
    mb->errs[mb->nerrs++] = (map_err){.index = index, .info = info, .report = report};
    return 0;
}

mp_task_info mp__map_err_info(const map_batch *mb, const map_err *e)
{
    if (e->report && e->report <= mb->nreports) {
        mp_task_info i = mb->reports[e->report - 1];
        i.code = e->info.code;
        return i;
    }
    return outcome_info(e->info);
}

int mp__map_take_errors(map_batch *mb, mp_map_error **errs, size_t *nerrs)
{
    *errs = NULL;
    *nerrs = 0;
    mp__map_sort_errors(mb);
    if (mb->nerrs) {
        mp_map_error *out = malloc(mb->nerrs * sizeof *out);
        if (out == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < mb->nerrs; i++) {
            out[i].index = (size_t)mb->errs[i].index;
            out[i].info = mp__map_err_info(mb, &mb->errs[i]);
        }
        *errs = out;
        *nerrs = mb->nerrs;
    }
    free(mb->errs);
    free(mb->reports);
    mb->errs = NULL;
    mb->reports = NULL;
    mb->nerrs = mb->cap = mb->nreports = 0;
    return 0;
}

static void batch_event(batch_shm *b)
{
    atomic_fetch_add(&b->events, 1);
    mp__wake_word(&b->events, &b->waiters);
}

/* The completion hook of a helper (supervisor thread): record what its
 * dispatch found, finish the chunk it held, and send it out again while
 * work is left. */
static void helper_done(job *j, int how, const mp_task_info *died, unsigned w)
{
    map_batch *mb = j->batch;
    batch_shm *b = mb->shm;
    job_shm *s = j->shm;
    pool_core *c = mb->c;
    pthread_mutex_lock(&mb->lock);
    /* (Read from shared memory: each record is kept within the map.) */
    uint32_t nf = s->nfail < JOB_FAILS ? s->nfail : JOB_FAILS;
    for (uint32_t i = 0; i < nf; i++) {
        job_fail f = s->fails[i];
        if (f.index >= mb->geom.n)
            continue;
        uint64_t count = f.count ? f.count : 1;
        if (count > mb->geom.n - f.index)
            count = mb->geom.n - f.index;
        for (uint64_t x = 0; x < count; x++)
            add_err(mb, f.index + x, f.info, 0);
    }
    s->nfail = 0;
    const batch_geom *g = &mb->geom; /* ours: not the shared copy */
    /* The chunk this helper holds, not any its worker holds: the worker
     * may be running another helper of the map by now. */
    int k = how == JOB_END_CANCELED ? -1 : mp__batch_held(b, g->nchunks, w, atomic_load(&s->held));
    if (k >= 0) {
        size_t first;
        uint32_t count;
        mp__batch_range(g, (uint32_t)k, &first, &count);
        uint32_t start = b->chunks[k].start;
        uint64_t item = atomic_load(&s->cur);
        if (how == JOB_END_DIED && item >= first && item < first + count &&
            died->code != MP_ECANCELED) {
            /* The item its worker died on, or with runs the whole run. */
            uint32_t end = g->range ? count : (uint32_t)(item - first) + 1;
            /* (its worker counted none of this chunk: it counts a chunk
             * as it leaves it) */
            atomic_fetch_add_explicit(&c->died_done, end - start, memory_order_relaxed);
            uint32_t report = add_report(mb, died);
            for (uint64_t i = item; i < first + end; i++)
                add_err(mb, i, info_outcome(died), report);
            atomic_store(&b->any_fail, 1);
            start = end;
        }
        /* (Killed by terminate or a restart: the item did not fail, it
         * did not run; the chunk is not done.) */
        if (start >= count)
            mp__batch_done(b, (uint32_t)k, g->nchunks, g->nparts);
        else
            mp__batch_reset(b, (uint32_t)k, start, g->nchunks, g->nparts);
    }
    uint32_t st = job_state(s);
    bool more = !atomic_load(&b->stop) && !mp__pool_terminated(c) &&
                atomic_load(&b->ndone) < g->nchunks;
    if ((how == JOB_END_DIED || st == JOB_STOPPED) && more) {
        pthread_mutex_unlock(&mb->lock);
        mp__pool_dispatch_locked(c, j); /* the same helper, another dispatch */
        return;
    }
    mb->helpers_out--;
    batch_event(b);
    pthread_mutex_unlock(&mb->lock);
    mp__job_finish(s, how == JOB_END_CANCELED);
    mp__job_recycle(&c->jobs, j);
    mp__map_unref(mb);
}

map_batch *mp__map_of(pool_core *c, job_shm *s)
{
    job *j = mp__job_of(&c->jobs, s);
    return j && j->done == helper_done ? j->batch : NULL;
}

int mp__map_fail_item(pool_core *c, job_shm *s, uint64_t index, const mp_task_info *info)
{
    job *j = mp__job_of(&c->jobs, s);
    if (j == NULL || j->batch == NULL)
        return -EINVAL;
    map_batch *mb = j->batch;
    if (index >= mb->geom.n)
        return -EINVAL;
    pthread_mutex_lock(&mb->lock);
    int rc = add_err(mb, index, info_outcome(info), add_report(mb, info));
    pthread_mutex_unlock(&mb->lock);
    atomic_store(&mb->shm->any_fail, 1);
    return rc;
}

int mp__map_add_helpers(map_batch *mb, unsigned n)
{
    pool_core *c = mb->c;
    batch_shm *b = mb->shm;
    if (n > mb->max_helpers - mb->helpers_made)
        n = mb->max_helpers - mb->helpers_made;
    if (n == 0)
        return 0;
    job *hs[64], **helpers = n <= 64 ? hs : calloc(n, sizeof *helpers);
    if (helpers == NULL)
        return -ENOMEM;
    int rc = 0;
    unsigned got = 0;
    for (; got < n; got++) {
        job *j = mp__job_get(c, &c->jobs);
        if (j == NULL) {
            rc = -ENOMEM;
            break;
        }
        j->shm->kind = JOB_HELPER;
        j->shm->batch = b;
        j->shm->part = mb->helpers_made + got; /* helper i starts on part i */
        j->shm->timeout_ns = mb->geom.timeout_ns;
        atomic_store(&j->shm->cur, BATCH_NO_ITEM);
        atomic_store(&j->shm->held, BATCH_NO_CHUNK);
        atomic_store(&j->shm->notify, 1);
        j->notify = true;
        j->done = helper_done;
        j->batch = mb;
        j->bs = b;
        helpers[got] = j;
    }
    if (rc == 0) {
        pthread_mutex_lock(&c->lock);
        if (!mp__pool_accepting(c)) {
            rc = MP_ECLOSED;
        } else {
            pthread_mutex_lock(&mb->lock);
            mb->helpers_out += n;
            pthread_mutex_unlock(&mb->lock);
            mb->helpers_made += n;
            atomic_fetch_add(&mb->refs, (int)n);
            for (unsigned i = 0; i < n; i++)
                mp__pool_dispatch(c, helpers[i]);
            /* One wake-up for them all, not one passed on by each. */
            mp__ring_wake_n(&c->s->ring, n);
        }
        pthread_mutex_unlock(&c->lock);
    }
    if (rc < 0)
        for (unsigned i = 0; i < got; i++)
            mp__job_recycle(&c->jobs, helpers[i]);
    if (helpers != hs)
        free(helpers);
    return rc;
}

static bool in_heap(const void *p, size_t bytes)
{
    return p && bytes && mp__heap_contains(p) && mp__heap_contains((const char *)p + bytes - 1);
}

/* Items a chunk, when the caller leaves it to us. */
static size_t auto_chunk(size_t n, unsigned nw, unsigned maxtasks)
{
    /* With maxtasksperchild, chunks are tasks: as Python, about four a
     * worker.  Otherwise small ones (64 a worker), shared out as workers come free,
     * so that a late worker or a slow item leaves no one idle at the end. */
    size_t parts = (size_t)nw * (maxtasks ? 4 : 64);
    size_t chunk = n / parts + (n % parts ? 1 : 0);
    return chunk ? chunk : 1;
}

void mp__map_unref(map_batch *mb)
{
    if (atomic_fetch_sub(&mb->refs, 1) != 1)
        return;
    pool_core *c = mb->c;
    mp__batch_free(mb->shm);
    if (mb->stage)
        mp__pool_stage_put(c, mb->stage);
    pthread_mutex_destroy(&mb->lock);
    free(mb->errs);
    free(mb->reports);
    free(mb->copied);
    free(mb);
    mp__pool_unref(c);
}

/* Copy chunk k's input into its window slot and let it be claimed. */
static void stage_chunk(map_batch *mb, uint32_t k)
{
    const batch_geom *g = &mb->geom;
    size_t first;
    uint32_t count;
    mp__batch_range(g, k, &first, &count);
    if (g->stage_in)
        memcpy((char *)mp__batch_in(g, k), mb->user_in + first * g->in_size,
               (size_t)count * g->in_size);
    mp__batch_staged(mb->shm, k);
}

void mp__map_pump(map_batch *mb)
{
    batch_shm *b = mb->shm;
    const batch_geom *g = &mb->geom;
    if (g->window == 0)
        return;
    for (uint32_t k = mb->next_copy; k < mb->next_stage; k++) {
        if (mb->copied[k] ||
            atomic_load_explicit(&b->chunks[k].claim, memory_order_acquire) != CHUNK_DONE)
            continue;
        if (g->stage_out && g->out_size) {
            size_t first;
            uint32_t count;
            mp__batch_range(g, k, &first, &count);
            memcpy(mb->user_out + first * g->out_size, mp__batch_out(g, k),
                   (size_t)count * g->out_size);
        }
        mb->copied[k] = 1;
    }
    while (mb->next_copy < mb->next_stage && mb->copied[mb->next_copy])
        mb->next_copy++;
    while (mb->next_stage < g->nchunks &&
           (mb->next_stage < g->window || mb->copied[mb->next_stage - g->window]))
        stage_chunk(mb, mb->next_stage++);
}

bool mp__map_over(map_batch *mb)
{
    if (atomic_load(&mb->shm->ndone) >= mb->geom.nchunks)
        return true;
    pthread_mutex_lock(&mb->lock);
    bool over = mb->helpers_out == 0;
    pthread_mutex_unlock(&mb->lock);
    return over;
}

void mp__map_stop(map_batch *mb)
{
    pthread_mutex_lock(&mb->lock);
    mb->canceled = true;
    pthread_mutex_unlock(&mb->lock);
    /* Helpers still queued see it when they start, and end at once. */
    atomic_store(&mb->shm->stop, 1);
    atomic_fetch_add(&mb->shm->staged, 1);
    mp__wake_word(&mb->shm->staged, &mb->shm->stage_waiters);
}

void mp__map_cancel(map_batch *mb)
{
    mp__map_stop(mb);
    /* Helpers that ended before `stop` did not wake the supervisor. */
    mp__pool_kick(mb->c);
}

static bool helpers_gone(void *arg)
{
    map_batch *mb = arg;
    pthread_mutex_lock(&mb->lock);
    bool gone = mb->helpers_out == 0;
    pthread_mutex_unlock(&mb->lock);
    return gone;
}

/* A helper that ends pushes itself without waking the supervisor unless
 * someone waits for it; we say we do, then wake the supervisor: a push
 * before our count is collected after this kick, one after it sees the
 * count and wakes the supervisor itself. */
void mp__map_wait_helpers(map_batch *mb)
{
    pool_shm *s = mb->c->s;
    atomic_fetch_add(&s->helper_waiters, 1);
    mp__pool_kick(mb->c);
    mp__wait_word(&mb->shm->events, &mb->shm->waiters, helpers_gone, mb, MP__NO_DEADLINE,
                  MP__WAIT_SPIN);
    atomic_fetch_sub(&s->helper_waiters, 1);
}

static int cmp_err(const void *a, const void *b)
{
    uint64_t x = ((const map_err *)a)->index, y = ((const map_err *)b)->index;
    return x < y ? -1 : x > y;
}

void mp__map_sort_errors(map_batch *mb)
{
    if (mb->nerrs > 1)
        qsort(mb->errs, mb->nerrs, sizeof *mb->errs, cmp_err);
}

/* Staging: the window's slots and where they go.  0 or -ENOMEM. */
static int setup_staging(map_batch *mb, bool stage_in, bool stage_out, bool whole)
{
    batch_geom *b = &mb->geom;
    size_t isz = stage_in ? b->in_size : 0, osz = stage_out ? b->out_size : 0;
    size_t per = (size_t)b->chunk * (isz + osz);
    uint32_t w = b->nchunks;
    if (!whole && per && STAGE_MAX / per < w)
        w = STAGE_MAX / per ? (uint32_t)(STAGE_MAX / per) : 1;
    for (;;) {
        size_t in_bytes = align16((size_t)w * b->chunk * isz);
        mb->stage = mp__pool_stage_get(mb->c, in_bytes + (size_t)w * b->chunk * osz);
        if (mb->stage) {
            if (stage_in)
                b->in = mb->stage;
            if (stage_out)
                b->out = (char *)mb->stage + in_bytes;
            break;
        }
        if (whole || w == 1)
            return -ENOMEM;
        w = (w + 1) / 2; /* a smaller window, slower but it fits */
    }
    b->window = w;
    b->stage_in = stage_in;
    b->stage_out = stage_out;
    mb->copied = calloc(b->nchunks, 1);
    return mb->copied ? 0 : -ENOMEM;
}

static uint64_t map_items_done(void *arg)
{
    map_batch *mb = arg;
    return mp__batch_items_done(mb->shm, &mb->geom);
}

int mp__map_start(mp_pool *p, mp_map_fn fn, bool range, const void *in, size_t n,
                  size_t in_size, void *out, size_t out_size, size_t chunksize, bool blocking,
                  map_batch **mbp)
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
    if (c->be->fn_check && (rc = c->be->fn_check((void (*)(void))fn)) < 0)
        return rc;
    if (!mp__pool_accepting(c))
        return MP_ECLOSED;
    if (chunksize == 0)
        chunksize = auto_chunk(n, c->nworkers, c->s->maxtasks);
    if (chunksize > n)
        chunksize = n ? n : 1; /* a chunk never holds more than the items */
    if (chunksize > UINT32_MAX)
        chunksize = UINT32_MAX;
    size_t nchunks = n == 0 ? 0 : (n - 1) / chunksize + 1;
    if (nchunks > UINT32_MAX / 2) {
        chunksize = n / (UINT32_MAX / 2) + 1;
        nchunks = (n - 1) / chunksize + 1;
    }
    map_batch *mb = calloc(1, sizeof *mb);
    if (mb == NULL)
        return -ENOMEM;
    pthread_mutex_init(&mb->lock, NULL);
    atomic_init(&mb->refs, 1);
    mb->c = c;
    mp__pool_ref(c);
    /* A blocking map starts with a helper a CPU and adds more while it
     * waits, if the items are slow (mp_pool_map_ex); an iterator's has no
     * one to do that, so it starts with all.  A blocking map's first
     * helpers each start on their own part of the chunks (where they are
     * not staged). */
    mb->max_helpers = (c->be->caps & BACKEND_REMOTE) ? 1 : c->nworkers;
    if (mb->max_helpers > nchunks)
        mb->max_helpers = (unsigned)nchunks;
    unsigned nh = mb->max_helpers;
    if (blocking && nh > c->cpus)
        nh = c->cpus;
    uint32_t max_parts = !blocking || nh == 0 ? 1 : nh < BATCH_PARTS_MAX ? nh : BATCH_PARTS_MAX;
    mb->shm = mp__batch_new((uint32_t)nchunks, max_parts, &rc);
    if (mb->shm == NULL) {
        mp__map_unref(mb);
        return rc ? rc : -ENOMEM;
    }
    batch_geom *b = &mb->geom; /* the parent's copy; the workers get theirs below */
    b->nchunks = (uint32_t)nchunks;
    b->fn = fn;
    b->range = range;
    b->n = n;
    b->in_size = in_size;
    b->out_size = out_size;
    b->chunk = (uint32_t)chunksize;
    b->timeout_ns = c->s->pool_timeout_ns;
    bool shares = c->be->caps & BACKEND_SHARES;
    mb->user_in = in;
    b->in = in;
    bool stage_in = n > 0 && !shares && !in_heap(in, n * in_size);
    bool stage_out = false;
    if (blocking) {
        mb->user_out = out;
        b->out = out;
        stage_out = n > 0 && out_size && !shares && !in_heap(out, n * out_size);
    } else if (out_size && n) {
        /* imap: the batch's own output array, where workers can write it. */
        b->out = shares ? malloc(n * out_size) : mp__heap_alloc(n * out_size, NULL);
        mb->user_out = b->out;
        if (b->out == NULL) {
            mp__map_unref(mb);
            return -ENOMEM;
        }
    }
    rc = stage_in || stage_out ? setup_staging(mb, stage_in, stage_out, !blocking) : 0;
    b->nparts = stage_in || stage_out ? 1 : max_parts;
    mb->shm->geom = *b;
    mp__batch_set_parts(mb->shm, b->nchunks, b->nparts);
    mb->shm->wake_each = !blocking || stage_in || stage_out;
    mb->shm->log_order = !blocking;
    if (rc == 0 && !stage_in)
        for (uint32_t k = 0; k < b->nchunks; k++)
            atomic_init(&mb->shm->chunks[k].claim, CHUNK_FREE);
    if (rc == 0 && stage_in) {
        /* imap: all now (it goes on while nobody looks); map: the first
         * chunk, the rest while the workers run (mp_pool_map_ex's loop). */
        if (blocking)
            stage_chunk(mb, mb->next_stage++);
        else
            mp__map_pump(mb);
    }

    if (rc == 0)
        rc = mp__map_add_helpers(mb, nh);
    if (rc < 0) {
        if (!blocking && !shares && b->out)
            mp__heap_free(b->out);
        else if (!blocking)
            free(b->out);
        mp__map_unref(mb);
        return rc;
    }
    mp__progress_begin(c, &mb->prog, mb->geom.n, map_items_done, mb);
    *mbp = mb;
    return 0;
}

typedef struct {
    batch_shm *b;
    uint32_t seen;
} event_wait;

static bool event_moved(void *arg)
{
    event_wait *e = arg;
    return atomic_load(&e->b->events) != e->seen;
}

static int map_run(mp_pool *p, mp_map_fn fn, bool range, const void *in, size_t n,
                   size_t in_size, void *out, size_t out_size, size_t chunksize,
                   mp_map_error **errs, size_t *nerrs)
{
    if (errs)
        *errs = NULL;
    if (nerrs)
        *nerrs = 0;
    map_batch *mb;
    int rc = mp__map_start(p, fn, range, in, n, in_size, out, out_size, chunksize, true, &mb);
    if (rc < 0)
        return rc;
    batch_shm *b = mb->shm;
    uint32_t nchunks = mb->geom.nchunks;
    /* While the map is not done, every GROW_NS as many helpers again as it
     * has (up to one a worker): slow or blocking items get every worker,
     * quick ones finish before more processes than CPUs compete. */
    int64_t grow_at = mp__now_ns() + GROW_NS;
    for (;;) {
        event_wait e = {b, atomic_load(&b->events)};
        mp__map_pump(mb);
        if (mp__map_over(mb))
            break;
        int64_t until = MP__NO_DEADLINE;
        if (mb->helpers_made < mb->max_helpers) {
            if (mp__now_ns() >= grow_at) {
                mp__map_add_helpers(mb, mb->helpers_made);
                grow_at = mp__now_ns() + GROW_NS;
                continue;
            }
            until = grow_at;
        }
        mp__wait_word(&b->events, &b->waiters, event_moved, &e, until, MP__WAIT_SPIN);
    }
    bool complete = atomic_load(&b->ndone) >= nchunks;
    /* Helpers still queued have nothing to do.  Complete, nobody waits for
     * the helpers: they go to the supervisor when it next looks (waking it
     * for them takes a CPU from the workers at every map). */
    if (complete) {
        mp__map_stop(mb);
    } else {
        mp__map_cancel(mb);
        mp__map_wait_helpers(mb); /* the staging must outlive them */
    }
    mp__map_pump(mb);
    pthread_mutex_lock(&mb->lock);
    mp__map_sort_errors(mb);
    if (mb->oom)
        rc = -ENOMEM;
    else if (mb->nerrs)
        rc = mb->errs[0].info.code;
    else if (!complete)
        rc = MP_ECANCELED;
    mp_map_error *list = NULL;
    size_t nlist = 0;
    if (errs && mb->nerrs) {
        if (mp__map_take_errors(mb, &list, &nlist) < 0)
            rc = -ENOMEM;
    } else {
        nlist = mb->nerrs;
    }
    pthread_mutex_unlock(&mb->lock);
    if (errs)
        *errs = list;
    if (nerrs)
        *nerrs = nlist;
    /* No helper touches the staging once every chunk is done. */
    if (mb->stage) {
        mp__pool_stage_put(mb->c, mb->stage);
        mb->stage = NULL;
    }
    mp__progress_end(mb->c, &mb->prog);
    mp__map_unref(mb);
    return rc;
}

int mp_pool_map_ex(mp_pool *p, mp_map_fn fn, const void *in, size_t n, size_t in_size,
                   void *out, size_t out_size, size_t chunksize, mp_map_error **errs,
                   size_t *nerrs)
{
    return map_run(p, fn, false, in, n, in_size, out, out_size, chunksize, errs, nerrs);
}

int mp_pool_map(mp_pool *p, mp_map_fn fn, const void *in, size_t n, size_t in_size, void *out,
                size_t out_size, size_t chunksize)
{
    return map_run(p, fn, false, in, n, in_size, out, out_size, chunksize, NULL, NULL);
}

int mp_pool_map_chunks(mp_pool *p, mp_chunk_fn fn, const void *in, size_t n, size_t in_size,
                       void *out, size_t out_size, size_t chunksize, mp_map_error **errs,
                       size_t *nerrs)
{
    return map_run(p, (mp_map_fn)(void (*)(void))fn, true, in, n, in_size, out, out_size,
                   chunksize, errs, nerrs);
}
