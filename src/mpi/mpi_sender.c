/* MPI pools, rank 0: the sender, the pool's one worker.
 *
 * A thread that takes jobs from the pool's ring as a worker does and
 * keeps tasks out to each worker rank ahead of the one it runs (so that
 * the next is already there when one ends: up to DEPTH while tasks are
 * short, DEPTH_LONG once they take long enough that a queue would only
 * unbalance the ranks), one to each idle rank before a second to any.  A
 * map helper is worked through chunk by chunk: each chunk it claims goes
 * to a rank as one task, whose outputs come back into the map's arrays
 * (this is the caller's process: in place) and whose failures are recorded
 * before the chunk is marked done.  Jobs end as a worker ends them, so
 * results, callbacks, map, imap, close, join and terminate are the pool
 * engine's own.  It polls for answers: MPI has no descriptor to sleep on. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "heap_int.h"
#include "mpi/mpi_int.h"
#include "mproc/error.h"
#include "os/os.h"
#include "pool/items.h"
#include "pool/batch.h"
#include "pool/map.h"
#include "pool/worker.h"

#define M mp__mpi

/* A helper (map) being worked through. */
typedef struct helper {
    job_shm *j;
    map_batch *mb;              /* its map, as the parent made it: the shape
                                   (geom) is read from there, never from
                                   the shared heap */
    unsigned out;               /* its chunks out to ranks */
    bool claiming;              /* it may still have chunks to claim */
    struct helper *next;
} helper;

/* A task out to a rank. */
typedef struct {
    job_shm *j;                 /* apply job */
    helper *h;                  /* or a helper's chunk: */
    uint32_t k;                 /*   the chunk, */
    uint32_t start;             /*   its first item sent */
    void *sbuf;
    MPI_Request req;
    bool busy;
} out_slot;

typedef struct {
    pool_core *c;
    pool_shm *s;
    unsigned nranks;
    out_slot *slots;            /* nranks * DEPTH */
    unsigned *nout;             /* per rank: tasks out */
    int64_t *last_end;          /* per rank: when its last answer came */
    int64_t task_ns;            /* a rank's time per task (moving average) */
    size_t total;
    helper *helpers;
} sender;

/* ---- ending jobs ---- */

static void end_job(sender *sd, job_shm *j)
{
    bool notify = atomic_load(&j->notify);
    if (mp__job_end(j))
        mp__worker_push_done(sd->s, 0, j, notify);
}

/* A task or n map items finished on a rank (for mp_pool_get_stats). */
static void count_done(sender *sd, uint64_t n, uint64_t failed)
{
    worker_slot *ws = &sd->s->workers[0];
    atomic_fetch_add_explicit(&ws->done, n, memory_order_relaxed);
    if (failed)
        atomic_fetch_add_explicit(&ws->failed, failed, memory_order_relaxed);
}

/* An imap_items piece counts its items: those whose records came back,
 * and the one its rank's worker died on. */
static void count_piece(sender *sd, const result_msg *h, const char *res)
{
    uint64_t n = 0, failed = 0;
    size_t at = 0;
    items_rec r;
    while (items_next_rec(res, h->len, &at, &r)) {
        n++;
        failed += (r.len & ITEM_FAILED) != 0;
    }
    if (h->info.code != 0) {
        n++;
        failed++;
    }
    count_done(sd, n, failed);
}

static void end_apply(sender *sd, job_shm *j, const result_msg *h, const char *res)
{
    mp_task_fn fn = NULL;
    const void *arg;
    size_t len;
    if (h->info.code == MP_ECANCELED)
        ; /* (not run: not counted) */
    else if (mp__job_task(sd->c, j, &fn, &arg, &len) == 0 && fn == mp__items_task)
        count_piece(sd, h, res);
    else
        count_done(sd, 1, h->info.code != 0);
    j->info = h->info;
    j->res = NULL;
    j->res_len = 0;
    if (h->len) { /* (failed: what an imap_items piece ran, items.h) */
        size_t off = j->arg == j->inline_buf ? (j->len + 15) & ~(size_t)15 : 0;
        void *dst = NULL;
        if (off < JOB_INLINE && h->len <= JOB_INLINE - off)
            dst = j->inline_buf + off;
        else
            dst = mp__heap_alloc(h->len, NULL);
        if (dst == NULL) {
            j->info.code = -ENOMEM;
        } else {
            memcpy(dst, res, h->len);
            j->res = dst;
            j->res_len = h->len;
        }
    }
    end_job(sd, j);
}

static void fail_apply(sender *sd, job_shm *j, int code)
{
    result_msg h = {.info = {.code = code}};
    end_apply(sd, j, &h, NULL);
}

/* A helper that claims no more and has nothing out ends. */
static void helper_maybe_end(sender *sd, helper *h)
{
    if (h->claiming || h->out)
        return;
    for (helper **p = &sd->helpers; *p; p = &(*p)->next)
        if (*p == h) {
            *p = h->next;
            break;
        }
    atomic_store(&h->j->cur, BATCH_NO_ITEM);
    end_job(sd, h->j);
    free(h);
}

/* Items [start, start + n) of chunk k failed with info (or the chunk's
 * answer says which), then the chunk is done. */
static void fail_items(sender *sd, helper *h, uint32_t k, uint32_t start, const mp_task_info *info)
{
    const batch_geom *g = &h->mb->geom;
    size_t first;
    uint32_t count;
    mp__batch_range(g, k, &first, &count);
    for (uint32_t i = start; i < count; i++)
        mp__map_fail_item(sd->c, h->j, first + i, info);
    mp__batch_done(h->mb->shm, k, g->nchunks, g->nparts);
}

static void end_chunk(sender *sd, out_slot *o, const result_msg *r, const char *body,
                      size_t body_len)
{
    helper *h = o->h;
    const batch_geom *b = &h->mb->geom;
    size_t first;
    uint32_t count;
    mp__batch_range(b, o->k, &first, &count);
    uint32_t n = count - o->start;
    size_t outb = (size_t)n * b->out_size;
    const mp_map_error *e = (const mp_map_error *)(const void *)(body + mpi_align8(outb));
    if (r->info.code != MP_ECANCELED)
        count_done(sd, n, false); /* (failed items: as they are recorded) */
    if (r->info.code == MP_ECANCELED) {
        /* Terminated: nothing of it counts, and the map is over. */
    } else if (r->info.code != 0 || r->len != outb ||
               body_len < mpi_align8(outb) + r->nerrs * sizeof *e) {
        /* The whole chunk failed on the rank (or the answer is malformed). */
        mp_task_info info = outcome_info(r->info);
        if (info.code == 0)
            info.code = -EPROTO;
        fail_items(sd, h, o->k, o->start, &info);
    } else {
        /* Outputs of the items that succeeded (failed ones stay as they
         * were, as with local workers that never wrote them). */
        char *dst = b->out + (first + o->start) * b->out_size;
        size_t from = 0;
        for (size_t i = 0; i <= r->nerrs; i++) {
            size_t to = i < r->nerrs && e[i].index < n ? e[i].index : n;
            if (to > from && b->out_size)
                memcpy(dst + from * b->out_size, body + from * b->out_size,
                       (to - from) * b->out_size);
            from = to + 1;
        }
        for (size_t i = 0; i < r->nerrs; i++)
            if (e[i].index < n)
                mp__map_fail_item(sd->c, h->j, first + o->start + e[i].index, &e[i].info);
        mp__batch_done(h->mb->shm, o->k, b->nchunks, b->nparts);
    }
    h->out--;
    helper_maybe_end(sd, h);
}

/* ---- sending ---- */

static int send_task(sender *sd, unsigned w, out_slot *o, mp__anyfn fn, task_msg *t,
                     const void *payload)
{
    int rc = mp__fnref_make(fn, &t->fn);
    if (rc < 0)
        return rc;
    t->id = (uint64_t)(o - sd->slots);
    if (t->len > (uint64_t)INT_MAX - sizeof *t)
        return MP_ETOOBIG;
    char *buf = malloc(sizeof *t + t->len);
    if (buf == NULL)
        return -ENOMEM;
    memcpy(buf, t, sizeof *t);
    if (t->len)
        memcpy(buf + sizeof *t, payload, t->len);
    items_head *h = (items_head *)(void *)(buf + sizeof *t);
    if (fn == (mp__anyfn)mp__items_task && t->len >= sizeof *h && h->magic == ITEMS_MAGIC) {
        /* imap_items' piece: its function travels by reference too. */
        if (mp__fnref_make((mp__anyfn)h->fn, &h->ref) < 0) {
            free(buf);
            return MP_EFUNC;
        }
        h->fn = NULL;
        h->flags |= ITEMS_BY_REF;
    }
    if (MPI_Isend(buf, (int)(sizeof *t + t->len), MPI_BYTE, (int)w + 1, TAG_TASK, M.comm,
                  &o->req) != MPI_SUCCESS) {
        free(buf);
        return -EIO;
    }
    o->sbuf = buf;
    o->busy = true;
    sd->nout[w]++;
    sd->total++;
    atomic_store_explicit(&sd->s->workers[0].busy, (uint32_t)sd->total, memory_order_relaxed);
    return 0;
}

/* Send chunk k of helper h to rank w. */
static void send_chunk(sender *sd, unsigned w, out_slot *o, helper *h, uint32_t k)
{
    const batch_geom *b = &h->mb->geom;
    size_t first;
    uint32_t count;
    mp__batch_range(b, k, &first, &count);
    uint32_t start = h->mb->shm->chunks[k].start;
    if (start > count)
        start = count;
    task_msg t = {.kind = TASK_CHUNK, .count = count - start, .in_size = b->in_size,
                  .out_size = b->out_size, .flags = b->range ? TASK_RANGE : 0};
    t.len = (uint64_t)t.count * b->in_size;
    int rc = (uint64_t)t.count * b->out_size > INT_MAX ? MP_ETOOBIG : 0;
    if (rc == 0)
        rc = send_task(sd, w, o, (mp__anyfn)b->fn, &t, b->in + (first + start) * b->in_size);
    if (rc < 0) {
        mp_task_info info = {.code = rc};
        count_done(sd, count - start, false);
        fail_items(sd, h, k, start, &info);
        return;
    }
    o->h = h;
    o->k = k;
    o->start = start;
    h->out++;
}

/* The next thing to send to rank w, sent: a chunk of a helper at work,
 * else a job from the ring.  False when there is nothing. */
static bool send_next(sender *sd, unsigned w)
{
    out_slot *o = &sd->slots[w * DEPTH];
    while (o->busy)
        o++;
    for (;;) {
        helper *h = sd->helpers;
        while (h) {
            if (h->claiming) {
                int k = mp__batch_claim(h->mb->shm, 0, 0, h->mb->geom.nchunks,
                                        h->mb->geom.nparts, NULL);
                if (k >= 0) {
                    send_chunk(sd, w, o, h, (uint32_t)k);
                    return true;
                }
                h->claiming = false; /* (in place: nothing waits for staging) */
                helper_maybe_end(sd, h); /* (may take it off the list) */
                h = sd->helpers;        /* so look again from the start */
                continue;
            }
            h = h->next;
        }
        uint64_t pos;
        job_shm *j = mp__ring_claim(&sd->s->ring, 0, &pos);
        if (j == NULL)
            return false;
        mp__worker_release(sd->s, pos);
        if (!mp__job_begin(j)) {
            if (mp__job_drop(j)) /* cancelled while queued */
                mp__worker_push_done(sd->s, 0, j, atomic_load(&j->notify));
            continue;
        }
        atomic_fetch_add(&sd->s->workers[0].tasks, 1);
        if (j->kind == JOB_HELPER) {
            helper *nh = calloc(1, sizeof *nh);
            if (nh == NULL) {
                mp__job_stop(j); /* the supervisor sends it out again */
                mp__worker_push_done(sd->s, 0, j, true);
                return false;
            }
            nh->j = j;
            nh->mb = mp__map_of(sd->c, j);
            nh->claiming = nh->mb != NULL; /* (none: a scribbled job) */
            nh->next = sd->helpers;
            sd->helpers = nh;
            helper_maybe_end(sd, nh); /* (ends it at once if so) */
            continue;
        }
        mp_task_fn fn;
        const void *arg;
        size_t len;
        int rc = mp__job_task(sd->c, j, &fn, &arg, &len);
        task_msg t = {.kind = TASK_APPLY, .len = len, .timeout_ns = j->timeout_ns};
        if (rc == 0)
            rc = send_task(sd, w, o, (mp__anyfn)fn, &t, arg);
        if (rc < 0) {
            fail_apply(sd, j, rc);
            continue;
        }
        o->j = j;
        o->h = NULL;
        return true;
    }
}

/* Hand out tasks: first one to each idle rank, then one more to each rank
 * (so that it has the next at hand when it ends one), and so on. */
static bool dispatch(sender *sd)
{
    bool progress = false;
    unsigned most = sd->task_ns < LONG_NS ? DEPTH : DEPTH_LONG;
    for (unsigned depth = 1; depth <= most; depth++)
        for (unsigned w = 0; w < sd->nranks; w++)
            while (sd->nout[w] < depth) {
                if (!send_next(sd, w))
                    return progress;
                progress = true;
            }
    return progress;
}

/* ---- answers ---- */

/* Take every answer that has come in. */
static bool collect(sender *sd)
{
    bool progress = false;
    for (;;) {
        int flag = 0;
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, TAG_RESULT, M.comm, &flag, &st);
        if (!flag)
            return progress;
        progress = true;
        int len;
        bool heap = false;
        char *buf = mp__mpi_receive(&st, &heap, &len);
        if (buf == NULL)
            return progress; /* out of memory: take it later */
        unsigned w = (unsigned)st.MPI_SOURCE - 1;
        result_msg h;
        size_t k = SIZE_MAX;
        if ((size_t)len >= sizeof h && w < sd->nranks) {
            memcpy(&h, buf, sizeof h);
            k = (size_t)h.id;
        }
        if (k == SIZE_MAX || k / DEPTH != w || !sd->slots[k].busy) {
            free(buf); /* cannot be matched to a task */
            continue;
        }
        out_slot *o = &sd->slots[k];
        /* A rank with more than one task out works back to back: the time
         * between its answers is its time per task. */
        int64_t t = mp__now_ns();
        if (sd->nout[w] > 1 && sd->last_end[w])
            sd->task_ns += (t - sd->last_end[w] - sd->task_ns) / 8;
        sd->last_end[w] = t;
        /* The rank answered, so it has our task: its send is complete. */
        MPI_Wait(&o->req, MPI_STATUS_IGNORE);
        free(o->sbuf);
        size_t body = (size_t)len - sizeof h;
        if (o->h) {
            end_chunk(sd, o, &h, buf + sizeof h, body);
        } else {
            if (h.len > body) {
                h.info.code = -EPROTO;
                h.len = 0;
            }
            end_apply(sd, o->j, &h, buf + sizeof h);
        }
        free(buf);
        memset(o, 0, sizeof *o);
        sd->nout[w]--;
        sd->total--;
        atomic_store_explicit(&sd->s->workers[0].busy, (uint32_t)sd->total, memory_order_relaxed);
    }
}

/* Free the buffers of sends that are complete. */
static void reap_sends(sender *sd)
{
    for (size_t k = 0; k < (size_t)sd->nranks * DEPTH; k++) {
        out_slot *o = &sd->slots[k];
        if (o->busy && o->sbuf) {
            int done = 0;
            MPI_Test(&o->req, &done, MPI_STATUS_IGNORE);
            if (done) {
                free(o->sbuf);
                o->sbuf = NULL;
            }
        }
    }
}

/* ---- the thread ---- */

static void send_all(sender *sd, int tag, const void *buf, size_t len)
{
    for (unsigned w = 0; w < sd->nranks; w++)
        MPI_Send(buf, (int)len, MPI_BYTE, (int)w + 1, tag, M.comm);
}

static void open_ranks(sender *sd)
{
    pool_shm *s = sd->s;
    size_t len = sizeof(open_msg) + s->initarg_len;
    char *buf = calloc(1, len);
    open_msg m = {.maxtasks = s->maxtasks, .timeout_ns = s->pool_timeout_ns,
                  .initarg_len = s->initarg_len};
    if (s->initializer && mp__fnref_make((mp__anyfn)s->initializer, &m.init) == 0)
        m.has_init = 1;
    if (buf == NULL) {
        len = sizeof m; /* the ranks see a bad open and fail its tasks */
        m.initarg_len = UINT64_MAX;
        send_all(sd, TAG_OPEN, &m, len);
        return;
    }
    memcpy(buf, &m, sizeof m);
    if (s->initarg_len)
        memcpy(buf + sizeof m, s->initarg, s->initarg_len);
    send_all(sd, TAG_OPEN, buf, len);
    free(buf);
}

static void *sender_main(void *arg)
{
    sender *sd = arg;
    pool_shm *s = sd->s;
    open_ranks(sd);
    bool terminating = false;
    unsigned idle = 0;
    int64_t ns = NAP_MIN_NS;
    for (;;) {
        bool progress = collect(sd);
        reap_sends(sd);
        if (!terminating && atomic_load(&s->terminating)) {
            terminating = true;
            send_all(sd, TAG_TERMINATE, NULL, 0);
            for (helper *h = sd->helpers; h;) {
                helper *n = h->next;
                h->claiming = false;
                helper_maybe_end(sd, h);
                h = n;
            }
        }
        if (!terminating)
            progress |= dispatch(sd);
        if (sd->total == 0 && sd->helpers == NULL) {
            if (terminating)
                break;
            if (progress)
                continue;
            if (mp__ring_idle(&s->ring, false, 0))
                break; /* stopping, and nothing left */
            idle = 0;
            ns = NAP_MIN_NS;
        } else if (progress) {
            idle = 0;
            ns = NAP_MIN_NS;
        } else {
            mp__mpi_nap(&idle, &ns);
        }
    }
    if (!terminating)
        send_all(sd, TAG_CLOSE, NULL, 0);
    for (unsigned i = 0; i < sd->nranks; i++) {
        MPI_Status st;
        mp__mpi_wait_message(MPI_ANY_SOURCE, TAG_CLOSED, &st);
        MPI_Recv(NULL, 0, MPI_BYTE, st.MPI_SOURCE, TAG_CLOSED, M.comm, MPI_STATUS_IGNORE);
    }
    free(sd->slots);
    free(sd->nout);
    free(sd->last_end);
    free(sd);
    atomic_store(&s->workers[0].exited, 1);
    mp__notify(s->notify_fd);
    return NULL;
}

int mp__mpi_sender_start(pool_core *c, pthread_t *th)
{
    sender *sd = calloc(1, sizeof *sd);
    if (sd == NULL)
        return -ENOMEM;
    sd->c = c;
    sd->s = c->s;
    sd->nranks = c->nworkers;
    sd->slots = calloc((size_t)sd->nranks * DEPTH, sizeof *sd->slots);
    sd->nout = calloc(sd->nranks, sizeof *sd->nout);
    sd->last_end = calloc(sd->nranks, sizeof *sd->last_end);
    int rc = sd->slots && sd->nout && sd->last_end ? -pthread_create(th, NULL, sender_main, sd)
                                                   : -ENOMEM;
    if (rc < 0) {
        free(sd->slots);
        free(sd->nout);
        free(sd->last_end);
        free(sd);
    }
    return rc;
}
