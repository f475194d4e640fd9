/* MPI pools: the worker ranks (every rank but 0).
 *
 * Before MPI_Init a worker rank starts a local process pool of one
 * worker, so that the fork server that forks (and re-forks) its worker
 * processes is not a child of an MPI process (several MPI transports do
 * not support fork after MPI_Init).  Then it serves: each task is run in
 * that local pool, whose crash and time-limit handling gives the task's
 * outcome; a pool's settings (initializer, maxtasksperchild, time limit)
 * arrive with it, and the local workers are restarted with them.  Tasks
 * are started as soon as they arrive (the local worker finds the next one
 * queued when it ends one) and answered in order. */
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
#include "pool/map.h"
#include "pool/worker.h"

#define M mp__mpi
#define SLICE_S 0.001           /* a busy worker rank looks for messages this often */


/* A task received and started on the local pool, not yet answered. */
typedef struct {
    task_msg *t;                /* the message (items read in place) */
    bool heap;                  /* t is a heap block (else malloc'd) */
    mp_result *r;               /* apply */
    mp_iter *it;                /* chunk: items come back in order */
    char *msg;                  /* chunk: the reply being filled */
    size_t cap;                 /* chunk: failures the reply has room for */
} entry;

#define MAX_ENTRIES (2 * DEPTH)

typedef struct {
    mp_pool *local;
    int local_err;              /* the local pool could not start */
    int open_err;               /* this pool's initializer has no name here */
    void *initarg;              /* heap copy for the local workers */
    entry q[MAX_ENTRIES];       /* started tasks, oldest first */
    unsigned head, n;
} server;

static void handle_open(server *sv, const void *buf, int len)
{
    sv->open_err = 0;
    if ((size_t)len < sizeof(open_msg)) {
        sv->open_err = -EPROTO;
        return;
    }
    const open_msg *m = buf;
    if (m->initarg_len > (size_t)len - sizeof *m) {
        sv->open_err = -EPROTO;
        return;
    }
    mp__anyfn init = NULL;
    if (m->has_init && mp__fnref_resolve(&m->init, &init) < 0) {
        sv->open_err = MP_EFUNC;
        return;
    }
    void *arg = NULL;
    if (m->initarg_len) {
        arg = mp__heap_alloc(m->initarg_len, NULL);
        if (arg == NULL) {
            sv->open_err = -ENOMEM;
            return;
        }
        memcpy(arg, (const char *)buf + sizeof *m, m->initarg_len);
    }
    if (sv->local)
        mp__pool_restart(sv->local, (void (*)(void *))init, arg, m->maxtasks, m->timeout_ns);
    if (sv->initarg)
        mp__heap_free(sv->initarg);
    sv->initarg = arg;
}

static void reply(const void *buf, size_t len)
{
    MPI_Send(buf, (int)len, MPI_BYTE, 0, TAG_RESULT, M.comm);
}

static void reply_failure(uint64_t id, int code)
{
    result_msg r = {.id = id, .info = {.code = code}};
    reply(&r, sizeof r);
}

static size_t errs_at(const task_msg *t)
{
    return sizeof(result_msg) + mpi_align8((size_t)t->count * t->out_size);
}

/* Start a task on the local pool: 0, or the failure to answer with. */
static int start_task(server *sv, entry *e, task_msg *t, bool heap, int len)
{
    memset(e, 0, sizeof *e);
    e->t = t;
    e->heap = heap;
    if (t->len > (size_t)len - sizeof *t ||
        (t->kind == TASK_CHUNK && (t->in_size == 0 || t->len != t->count * t->in_size)) ||
        (t->kind != TASK_CHUNK && t->kind != TASK_APPLY))
        return -EPROTO;
    if (sv->local == NULL)
        return sv->local_err;
    if (sv->open_err)
        return sv->open_err;
    mp__anyfn fn = NULL;
    if (mp__fnref_resolve(&t->fn, &fn) < 0)
        return MP_EFUNC;
    if (t->kind == TASK_APPLY) {
        mp_task_opts o = {.timeout = t->timeout_ns > 0 ? (double)t->timeout_ns / 1e9 : -1};
        items_head *h = (items_head *)(void *)(t + 1);
        if (fn == (mp__anyfn)mp__items_task && t->len >= sizeof *h && h->magic == ITEMS_MAGIC) {
            /* imap_items' piece: its function came by reference too. */
            mp__anyfn f = NULL;
            if (!(h->flags & ITEMS_BY_REF) || mp__fnref_resolve(&h->ref, &f) < 0)
                return MP_EFUNC;
            h->fn = (mp_task_fn)f;
            h->flags &= ~ITEMS_BY_REF;
        }
        return mp_pool_apply_async(sv->local, (mp_task_fn)fn, t + 1, t->len, &o, &e->r);
    }
    if ((uint64_t)t->count * t->out_size > INT_MAX)
        return MP_ETOOBIG;
    e->cap = 16;
    e->msg = malloc(errs_at(t) + e->cap * sizeof(mp_map_error));
    if (e->msg == NULL)
        return -ENOMEM;
    /* One local chunk: rank 0's chunk is one task, for maxtasksperchild
     * as for the cost (a failing item still fails alone). */
    int rc = mp__pool_imap_fn(sv->local, (mp_map_fn)fn, t->flags & TASK_RANGE, t + 1, t->count,
                              t->in_size, t->out_size, t->count ? t->count : 1, true, &e->it);
    if (rc < 0) {
        free(e->msg);
        e->msg = NULL;
    }
    return rc;
}

/* Release an answered entry. */
static void drop(entry *e)
{
    mp_result_free(e->r);
    mp_iter_free(e->it);
    free(e->msg);
    mp__mpi_release(e->t, e->heap);
    memset(e, 0, sizeof *e);
}

static void answer_apply(entry *e, int force)
{
    const void *res = NULL;
    size_t len = 0;
    result_msg h = {.id = e->t->id};
    mp_result_get(e->r, 0, &res, &len);
    mp_task_info info = {0};
    mp_result_info(e->r, &info);
    h.info = info_outcome(&info);
    if (force)
        h.info = (task_outcome){.code = force};
    if (h.info.code != 0)
        len = 0;
    if (h.info.code != 0 && !force)
        mp__result_partial(e->r, &res, &len); /* (imap_items: the items it ran) */
    h.len = len;
    char *msg = sizeof h + len <= INT_MAX ? malloc(sizeof h + len) : NULL;
    if (msg == NULL) {
        reply_failure(h.id, sizeof h + len > INT_MAX ? MP_ETOOBIG : -ENOMEM);
        return;
    }
    memcpy(msg, &h, sizeof h);
    if (len)
        memcpy(msg + sizeof h, res, len);
    reply(msg, sizeof h + len);
    free(msg);
}

/* Wait up to timeout for a chunk's items; answer once all have ended.
 * False if they have not yet. */
static bool try_answer_chunk(entry *e, double timeout)
{
    const task_msg *t = e->t;
    mp_map_error *errs = NULL;
    size_t nerrs = 0;
    int rc = mp__iter_wait_all(e->it, timeout, e->msg + sizeof(result_msg), &errs, &nerrs);
    if (rc == MP_ETIMEDOUT)
        return false;
    size_t total = errs_at(t) + nerrs * sizeof(mp_map_error);
    if (rc == 0 && total > INT_MAX)
        rc = MP_ETOOBIG;
    if (rc == 0 && nerrs > e->cap) {
        char *m2 = realloc(e->msg, total);
        if (m2 == NULL)
            rc = -ENOMEM;
        else
            e->msg = m2;
    }
    if (rc < 0) {
        free(errs);
        reply_failure(t->id, rc);
        return true;
    }
    if (nerrs)
        memcpy(e->msg + errs_at(t), errs, nerrs * sizeof *errs);
    free(errs);
    result_msg h = {.id = t->id, .len = (size_t)t->count * t->out_size, .nerrs = nerrs};
    memcpy(e->msg, &h, sizeof h);
    reply(e->msg, total);
    return true;
}

/* Wait up to timeout for the oldest task; answer it if it has ended. */
static bool finish_oldest(server *sv, double timeout)
{
    entry *e = &sv->q[sv->head];
    if (e->r) {
        if (mp_result_wait(e->r, timeout) != 0)
            return false;
        answer_apply(e, 0);
    } else if (!try_answer_chunk(e, timeout)) {
        return false;
    }
    drop(e);
    sv->head = (sv->head + 1) % MAX_ENTRIES;
    sv->n--;
    return true;
}

/* Rank 0 terminated the pool: nothing started may go on.  Cancel what
 * has not started, kill the local worker (what it runs fails), and
 * answer everything with MP_ECANCELED. */
static void terminate_all(server *sv)
{
    for (unsigned i = 0; i < sv->n; i++) {
        entry *e = &sv->q[(sv->head + i) % MAX_ENTRIES];
        if (e->r)
            mp_result_cancel(e->r);
        else
            mp__iter_cancel(e->it);
    }
    if (sv->n)
        mp__pool_restart(sv->local, NULL, NULL, 0, 0);
    while (sv->n) {
        entry *e = &sv->q[sv->head];
        if (e->r) {
            mp_result_wait(e->r, MP_FOREVER);
            answer_apply(e, MP_ECANCELED);
        } else {
            reply_failure(e->t->id, MP_ECANCELED);
        }
        drop(e);
        sv->head = (sv->head + 1) % MAX_ENTRIES;
        sv->n--;
    }
}

/* Handle one message; false on SHUTDOWN. */
static bool handle(server *sv, const MPI_Status *st)
{
    int len;
    bool heap = st->MPI_TAG == TAG_TASK;
    void *buf = mp__mpi_receive(st, &heap, &len);
    if (buf == NULL) {
        mp__sleep_until(mp__now_ns() + NAP_MAX_NS); /* out of memory: later */
        return true;
    }
    switch (st->MPI_TAG) {
    case TAG_TASK: {
        if ((size_t)len < sizeof(task_msg)) {
            mp__mpi_release(buf, heap); /* no header: nothing to answer to */
            return true;
        }
        if (sv->n == MAX_ENTRIES) /* rank 0 keeps DEPTH out: cannot happen */
            finish_oldest(sv, MP_FOREVER);
        entry *e = &sv->q[(sv->head + sv->n) % MAX_ENTRIES];
        int rc = start_task(sv, e, buf, heap, len);
        if (rc < 0) {
            reply_failure(e->t->id, rc);
            drop(e);
        } else {
            sv->n++;
        }
        return true;
    }
    case TAG_OPEN:
        handle_open(sv, buf, len);
        break;
    case TAG_TERMINATE:
        terminate_all(sv);
        MPI_Send(NULL, 0, MPI_BYTE, 0, TAG_CLOSED, M.comm);
        break;
    case TAG_CLOSE:
        while (sv->n) /* rank 0 closes once all is answered: cannot wait */
            finish_oldest(sv, MP_FOREVER);
        MPI_Send(NULL, 0, MPI_BYTE, 0, TAG_CLOSED, M.comm);
        break;
    case TAG_SHUTDOWN:
        free(buf);
        return false;
    default:
        break;
    }
    free(buf);
    return true;
}

/* Tasks are started as soon as they arrive (the local worker finds the
 * next one queued when it ends one) and answered in order; between waits
 * for the oldest, new messages are taken in. */
static void serve(server *sv)
{
    for (;;) {
        MPI_Status st;
        int flag = 0;
        if (sv->n == 0) {
            mp__mpi_wait_message(0, MPI_ANY_TAG, &st);
            flag = 1;
        } else {
            MPI_Iprobe(0, MPI_ANY_TAG, M.comm, &flag, &st);
        }
        if (flag) {
            if (!handle(sv, &st))
                return;
            continue;
        }
        finish_oldest(sv, SLICE_S);
    }
}

_Noreturn void mp__mpi_rank_main(bool mpi_was_up)
{
    server sv = {0};
    /* The local pool first: its fork server must not descend from an
     * initialized MPI process. */
    mp__pool_index_base = M.rank - 1;
    /* Progress is rank 0's to show: the local pool's maps are its chunks. */
    unsetenv("MPROC_PROGRESS");
    mp_pool_opts lo = {.workers = 1, .kind = MP_POOL_PROCESS};
    sv.local_err = mp_pool_new(&sv.local, &lo);
    if (!mpi_was_up) {
        int provided;
        MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &M.comm);
    serve(&sv);
    terminate_all(&sv);
    mp_pool_free(sv.local);
    if (sv.initarg)
        mp__heap_free(sv.initarg);
    MPI_Comm_free(&M.comm);
    if (!mpi_was_up)
        MPI_Finalize();
    exit(0);
}

