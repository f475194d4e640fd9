/* apply, apply_async and result handles.
 *
 * A result handle is the private half of its job.  A task without
 * callbacks never involves the supervisor: its worker ends it (DONE) and
 * wakes the waiters; the handle's free recycles it if it has ended, or
 * leaves it orphaned for its end to recycle (job.h).  A task with
 * callbacks ends ENDED, and the supervisor runs its callback and then
 * makes it DONE, so that waiters see it final only after the callback has
 * returned (as Python's AsyncResult).  A cancelled task with callbacks has
 * its error callback run by the supervisor at once (the cancel kicks it),
 * not when a worker later pops the cancelled job. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mproc/error.h"
#include "os/os.h"
#include "heap_int.h"
#include "pool/core.h"
#include "pool/items.h"
#include "pool/map.h"
#include "wait_int.h"

static int64_t seconds_to_ns(double t)
{
    if (t > 1e9)
        t = 1e9;
    int64_t ns = (int64_t)(t * 1e9);
    return ns > 0 ? ns : 1;
}

/* Final for the task's waiters: ended, callbacks returned. */
static bool result_final(job *j)
{
    uint32_t st = job_state(j->shm);
    if (st == JOB_CANCELED_QUEUED && j->notify)
        return atomic_load(&j->reported);
    return job_is_final(st, j->notify);
}

static int result_code(job *j)
{
    uint32_t st = job_state(j->shm);
    return st == JOB_CANCELED || st == JOB_CANCELED_QUEUED ? MP_ECANCELED : j->shm->info.code;
}

/* Run the task's callback or error callback, once. */
static void report(job *j, bool canceled)
{
    if (atomic_exchange(&j->reported, true))
        return;
    int code = canceled ? MP_ECANCELED : j->shm->info.code;
    mp__pool_enter_callback(j->core);
    if (code == 0 && j->opts.callback)
        j->opts.callback(j->shm->res, j->shm->res_len, j->opts.ud);
    else if (code != 0 && j->opts.error_callback)
        j->opts.error_callback(code, j->opts.ud);
    mp__pool_leave_callback();
}

/* The completion hook of an apply job (supervisor thread). */
static void apply_done(job *j, int how, const mp_task_info *died, unsigned w)
{
    (void)w;
    job_shm *s = j->shm;
    pool_core *c = j->core;
    if (how == JOB_CANCEL_NOTICE) {
        report(j, true);
        mp__wake_word(&s->state, &s->waiters);
        return;
    }
    if (how == JOB_END_DIED) {
        if (died->code != MP_ECANCELED) {
            atomic_fetch_add_explicit(&c->died_done, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&c->died_failed, 1, memory_order_relaxed);
        }
        s->info = info_outcome(died);
        if (died->fault_addr || died->crash[0]) {
            free(j->died); /* (an earlier dispatch's: none today) */
            j->died = malloc(sizeof *j->died);
            if (j->died)
                *j->died = *died; /* (without it: the outcome, no report) */
        }
        if (j->fn != mp__items_task) {
            s->res = NULL;
            s->res_len = 0;
        } /* (else what the piece published: its items so far, items.h) */
        if (!mp__job_end(s))
            return; /* final, the user's: touch nothing more */
        if (!j->notify) {
            mp__job_recycle(&c->jobs, j); /* orphaned */
            return;
        }
    }
    if (j->notify) {
        uint32_t st = job_state(s);
        report(j, how == JOB_END_CANCELED || st == JOB_CANCELED_QUEUED || st == JOB_CANCELED);
    }
    if (mp__job_finish(s, how == JOB_END_CANCELED))
        mp__job_recycle(&c->jobs, j);
}

/* A bounded pool's waiter may go on: room, or the pool closed. */
static bool has_room(void *arg)
{
    pool_core *c = arg;
    pthread_mutex_lock(&c->lock);
    bool room = mp__pool_queued(c) < c->max_queued || !mp__pool_accepting(c);
    pthread_mutex_unlock(&c->lock);
    return room;
}

int mp_pool_apply_async(mp_pool *p, mp_task_fn fn, const void *arg, size_t len,
                        const mp_task_opts *opts, mp_result **out)
{
    if (arg == NULL && len > 0) {
        if (out)
            *out = NULL;
        return -EINVAL;
    }
    return mp__pool_apply_v(p, fn, &(struct iovec){(void *)arg, len}, 1, opts, out);
}

typedef struct {
    const struct iovec *iov;
    unsigned n;
} gather;

static void fill_gather(unsigned char *dst, void *arg)
{
    const gather *g = arg;
    for (unsigned i = 0; i < g->n; i++) {
        if (g->iov[i].iov_len)
            memcpy(dst, g->iov[i].iov_base, g->iov[i].iov_len);
        dst += g->iov[i].iov_len;
    }
}

int mp__pool_apply_v(mp_pool *p, mp_task_fn fn, const struct iovec *iov, unsigned niov,
                     const mp_task_opts *opts, mp_result **out)
{
    size_t len = 0;
    for (unsigned i = 0; i < niov; i++)
        len += iov[i].iov_len;
    return mp__pool_apply_fill(p, fn, len, fill_gather, &(gather){iov, niov}, opts, out);
}

int mp__pool_apply_fill(mp_pool *p, mp_task_fn fn, size_t len,
                        void (*fill)(unsigned char *dst, void *arg), void *fill_arg,
                        const mp_task_opts *opts, mp_result **out)
{
    pool_core *c;
    if (out)
        *out = NULL;
    int rc = mp__pool_check(p, &c);
    if (rc < 0)
        return rc;
    if (fn == NULL)
        return -EINVAL;
    int64_t timeout_ns = c->s->pool_timeout_ns;
    if (opts) {
        if (isnan(opts->timeout))
            return -EINVAL;
        if (opts->timeout > 0)
            timeout_ns = seconds_to_ns(opts->timeout);
        else if (opts->timeout < 0)
            timeout_ns = 0;
    }
    if (timeout_ns && !(c->be->caps & BACKEND_KILL) && !(c->be->caps & BACKEND_REMOTE))
        return -ENOTSUP;
    if (opts && (opts->nfds > MP_TASK_MAX_FDS || (opts->nfds && opts->fds == NULL)))
        return -EINVAL;
    if (opts && opts->nfds && !(c->be->caps & BACKEND_FDS))
        return -ENOTSUP; /* descriptors do not cross to other machines */
    if (c->be->fn_check && (rc = c->be->fn_check((void (*)(void))fn)) < 0)
        return rc;
    if (!mp__pool_accepting(c))
        return MP_ECLOSED;
    job *j = mp__job_get(c, &c->jobs);
    if (j == NULL)
        return -ENOMEM;
    job_shm *s = j->shm;
    for (unsigned i = 0; opts && i < opts->nfds; i++) {
        int fd = fcntl(opts->fds[i], F_DUPFD_CLOEXEC, 3);
        if (fd < 0) {
            rc = -errno;
            mp__job_recycle(&c->jobs, j);
            return rc;
        }
        j->fds[j->nfds++] = fd;
        s->fds[i] = fd;
    }
    s->nfds = j->nfds;
    unsigned char *dst;
    if (len <= JOB_INLINE) {
        dst = s->inline_buf;
    } else if ((dst = mp__job_block(j, len, &rc)) == NULL) {
        mp__job_recycle(&c->jobs, j);
        return rc ? rc : -ENOMEM;
    }
    s->arg = dst;
    fill(dst, fill_arg);
    s->kind = JOB_APPLY;
    atomic_store_explicit(&s->cur, 0, memory_order_relaxed); /* its deadline runs from its start */
    s->fn = fn;
    s->len = len;
    j->fn = fn;
    j->arg = s->arg;
    j->len = len;
    s->timeout_ns = timeout_ns;
    j->opts = opts ? *opts : (mp_task_opts){0};
    j->notify = j->opts.callback || j->opts.error_callback;
    atomic_store_explicit(&s->notify, j->notify, memory_order_relaxed);
    j->done = apply_done;
    pthread_mutex_lock(&c->lock);
    while (mp__pool_accepting(c) && c->max_queued && mp__pool_queued(c) >= c->max_queued) {
        pthread_mutex_unlock(&c->lock);
        /* From the collector we would wait for ourselves (it moves the
         * pending jobs into the ring). */
        if ((opts && opts->nowait) || mp__pool_in_callback(c)) {
            mp__job_recycle(&c->jobs, j);
            return -EAGAIN;
        }
        mp__wait_word(&c->s->room_seq, &c->s->room_waiters, has_room, c,
                      mp__wait_slice_end(MP__NO_DEADLINE), 0);
        pthread_mutex_lock(&c->lock);
    }
    if (!mp__pool_accepting(c)) {
        pthread_mutex_unlock(&c->lock);
        mp__job_recycle(&c->jobs, j);
        return MP_ECLOSED;
    }
    mp__pool_dispatch(c, j);
    pthread_mutex_unlock(&c->lock);
    if (out == NULL) {
        /* Fire and forget: as if its handle were freed at once, whoever
         * ends the task (its worker through the supervisor, or the
         * supervisor after its callbacks) recycles it. */
        if (mp__job_orphan(j->shm))
            mp__job_recycle(&c->jobs, j);
        return 0;
    }
    mp__pool_ref(c);
    *out = (mp_result *)j;
    return 0;
}

int mp__job_task(pool_core *c, job_shm *s, mp_task_fn *fn, const void **arg, size_t *len)
{
    job *j = mp__job_of(&c->jobs, s);
    if (j == NULL || j->done != apply_done)
        return -EINVAL;
    *fn = j->fn;
    *arg = j->arg;
    *len = j->len;
    return 0;
}

static int result_check(mp_result *r, job **jp)
{
    job *j = (job *)r;
    if (j == NULL || j->done != apply_done)
        return -EINVAL;
    if (j->owner != mp__getpid())
        return -EPERM;
    *jp = j;
    return 0;
}

static bool final_cond(void *arg) { return result_final(arg); }

int mp_result_wait(mp_result *r, double timeout)
{
    job *j = NULL;
    int64_t deadline;
    int rc = result_check(r, &j);
    if (rc < 0 || (rc = mp__deadline(timeout, &deadline)) < 0)
        return rc;
    if (result_final(j))
        return 0;
    /* Spin for a task that runs, or that a worker is about to take (an
     * idle one, or the next to be free: a few places from the ring's
     * head); not for one queued far behind busy workers: it will not end
     * within a spin, and spinning would take a CPU from them. */
    pool_core *c = j->core;
    ring *rg = &c->s->ring;
    uint32_t st = job_state(j->shm);
    bool spin = st == JOB_RUNNING || st == JOB_ENDED;
    if (st == JOB_QUEUED) {
        uint64_t head = atomic_load_explicit(&rg->head, memory_order_relaxed);
        spin = atomic_load(&rg->spinners) || atomic_load(&rg->sleepers) ||
               (!j->pending && j->ring_pos < head + 2 * (uint64_t)c->nworkers);
    }
    rc = mp__wait_word(&j->shm->state, &j->shm->waiters, final_cond, j, deadline,
                       spin ? MP__WAIT_SPIN : 0);
    return rc < 0 ? MP_ETIMEDOUT : 0;
}

int mp_result_get(mp_result *r, double timeout, const void **res, size_t *len)
{
    job *j = NULL;
    if (res)
        *res = NULL;
    if (len)
        *len = 0;
    int rc = mp_result_wait(r, timeout);
    if (rc < 0)
        return rc;
    result_check(r, &j);
    rc = result_code(j);
    if (rc == 0) {
        if (res)
            *res = j->shm->res;
        if (len)
            *len = j->shm->res_len;
    }
    return rc;
}

const void *mp__result_arg(mp_result *r, size_t *len)
{
    job *j = NULL;
    *len = 0;
    if (result_check(r, &j) < 0)
        return NULL;
    *len = j->len;
    return j->arg;
}

int mp__result_partial(mp_result *r, const void **res, size_t *len)
{
    job *j = NULL;
    *res = NULL;
    *len = 0;
    int rc = result_check(r, &j);
    if (rc < 0)
        return rc;
    if (!result_final(j))
        return -EAGAIN;
    /* Written by a worker that may have scribbled: check it names bytes
     * inside the job's own room or inside one live heap block. */
    job_shm *s = j->shm;
    const unsigned char *p = s->res, *in = s->inline_buf;
    size_t n = s->res_len;
    if (p == NULL || n == 0)
        return 0;
    bool ok = p >= in && p <= in + JOB_INLINE ? n <= (size_t)(in + JOB_INLINE - p)
                                              : n <= mp__heap_block_size(p);
    if (ok) {
        *res = p;
        *len = n;
    }
    return 0;
}

bool mp_result_ready(mp_result *r)
{
    job *j = NULL;
    return result_check(r, &j) == 0 && result_final(j);
}

int mp_result_cancel(mp_result *r)
{
    job *j = NULL;
    int rc = result_check(r, &j);
    if (rc < 0)
        return rc;
    if (!mp__job_cancel(j->shm)) {
        uint32_t st = job_state(j->shm);
        return st == JOB_CANCELED || st == JOB_CANCELED_QUEUED ? 0 : -EBUSY;
    }
    if (j->notify)
        mp__pool_report_cancel(j->core, j);
    return 0;
}

int mp_result_info(mp_result *r, mp_task_info *info)
{
    job *j = NULL;
    int rc = result_check(r, &j);
    if (rc < 0)
        return rc;
    if (info == NULL)
        return -EINVAL;
    if (!result_final(j))
        return -EAGAIN;
    *info = j->died ? *j->died : outcome_info(j->shm->info);
    info->code = result_code(j);
    return 0;
}

void mp_result_free(mp_result *r)
{
    job *j = NULL;
    if (result_check(r, &j) < 0)
        return;
    pool_core *c = j->core;
    if (mp__job_orphan(j->shm))
        mp__job_recycle(&c->jobs, j);
    mp__pool_unref(c);
}

static int wait_many(mp_result *const *rs, size_t n, double timeout, bool any)
{
    int64_t deadline;
    int rc = mp__deadline(timeout, &deadline);
    if (rc < 0)
        return rc;
    if (rs == NULL && n > 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        job *j;
        if (rs[i] && (rc = result_check(rs[i], &j)) < 0)
            return rc;
    }
    unsigned flags = MP__WAIT_SPIN;
    for (;;) {
        size_t live = 0, done = 0, first = SIZE_MAX;
        job *wait_on = NULL;
        for (size_t i = 0; i < n; i++) {
            job *j = (job *)rs[i];
            if (j == NULL)
                continue;
            live++;
            if (result_final(j)) {
                done++;
                if (first == SIZE_MAX)
                    first = i;
            } else if (wait_on == NULL) {
                wait_on = j;
            }
        }
        if (any) {
            if (live == 0)
                return MP_EDONE;
            if (first != SIZE_MAX)
                return first > INT32_MAX ? -EOVERFLOW : (int)first;
        } else if (done == live) {
            return 0;
        }
        int64_t now = mp__now_ns();
        if (now >= deadline)
            return MP_ETIMEDOUT;
        /* Sleep on one unfinished result; for `any`, in short slices for
         * the others. */
        int64_t until = any && deadline - now > 1000000 ? now + 1000000 : deadline;
        mp__wait_word(&wait_on->shm->state, &wait_on->shm->waiters, final_cond, wait_on, until,
                      flags);
        flags = 0; /* spun once */
    }
}

int mp_result_wait_any(mp_result *const *rs, size_t n, double timeout)
{
    return wait_many(rs, n, timeout, true);
}

int mp_result_wait_all(mp_result *const *rs, size_t n, double timeout)
{
    return wait_many(rs, n, timeout, false);
}

int mp_pool_apply(mp_pool *p, mp_task_fn fn, const void *arg, size_t len, void **res,
                  size_t *res_len)
{
    pool_core *c;
    if (res)
        *res = NULL;
    if (res_len)
        *res_len = 0;
    int rc = mp__pool_check(p, &c);
    if (rc < 0)
        return rc;
    if (mp__pool_in_callback(c))
        return -EDEADLK;
    mp_result *r;
    rc = mp_pool_apply_async(p, fn, arg, len, NULL, &r);
    if (rc < 0)
        return rc;
    const void *data;
    size_t n;
    rc = mp_result_get(r, MP_FOREVER, &data, &n);
    if (rc == 0 && res && n > 0) {
        void *copy = malloc(n);
        if (copy == NULL) {
            rc = -ENOMEM;
        } else {
            memcpy(copy, data, n);
            *res = copy;
        }
    }
    if (rc == 0 && res_len)
        *res_len = n;
    mp_result_free(r);
    return rc;
}
