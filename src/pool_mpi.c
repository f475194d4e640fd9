/* MPI pools: the pool engine of pool.c with the other ranks of an MPI job
 * as its workers.
 *
 * Rank 0: the pool's one worker thread is a sender.  For each worker rank
 * it keeps tasks out ahead of the one running (so the next is already there
 * when one ends: up to DEPTH_SHORT while tasks are short, DEPTH_LONG once
 * they take long enough that a queue would only unbalance the ranks),
 * taking them from the ring as a worker would; it polls for
 * their results and ends the jobs as a worker does, so that results,
 * callbacks, map, imap, close, join and terminate are the engine's own.
 *
 * Worker ranks: before MPI_Init they start a local process pool of one
 * worker, so that the fork server that forks (and re-forks) their worker
 * processes is not a child of an MPI process.  Then they serve: each task
 * is run in that local pool, whose crash and time-limit handling gives the
 * task's outcome; a pool's settings (initializer, maxtasksperchild, time
 * limit) arrive with it, and the local workers are restarted with them.
 *
 * Functions travel as mp__fnref (object + offset), arguments and results
 * as bytes.  All MPI calls are made by one thread at a time: rank 0's
 * sender while a pool is open, the main thread otherwise; MPI is
 * initialized with MPI_THREAD_SERIALIZED. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "heap_int.h"
#include "mproc/error.h"
#include "os/fnref.h"
#include "os/os.h"
#include "pool_int.h"

/* Launchers say who we are in the environment (Open MPI, then MPICH and
 * the PMI-based ones). */
static int env_int(const char *a, const char *b)
{
    const char *v = getenv(a);
    if (v == NULL)
        v = getenv(b);
    if (v == NULL || *v == '\0')
        return -1;
    char *end;
    long n = strtol(v, &end, 10);
    return *end == '\0' && n >= 0 && n <= INT_MAX ? (int)n : -1;
}

int mp_mpi_rank(void) { return env_int("OMPI_COMM_WORLD_RANK", "PMI_RANK"); }

#ifndef MP_HAVE_MPI

int mp__mpi_attach(void) { return MP_ENOMPI; }
int mp__mpi_pool_claim(mp_pool *p) { (void)p; return MP_ENOMPI; }
void mp__mpi_pool_release(void) {}
int mp__mpi_pool_start(pool_shm *s, pthread_t *th) { (void)s; (void)th; return MP_ENOMPI; }
int mp_mpi_init(void) { return MP_ENOMPI; }
int mp_mpi_finalize(void) { return 0; }

#else

#include <mpi.h>

enum { TAG_OPEN = 1, TAG_TASK, TAG_RESULT, TAG_CLOSE, TAG_TERMINATE, TAG_CLOSED, TAG_SHUTDOWN };

#define DEPTH 16                /* at most, tasks out to one rank */
#define DEPTH_LONG 2            /* ... when tasks take LONG_NS or more */
#define LONG_NS 500000
#define SPIN_ROUNDS 256         /* polls (with yields) before napping */
#define NAP_MIN_NS 20000
#define NAP_MAX_NS 1000000      /* an idle rank notices a task within 1 ms */
#define SLICE_S 0.001           /* a busy worker rank looks for messages this often */

/* Pool settings, rank 0 -> each worker rank; the initializer's argument
 * follows. */
typedef struct {
    mp__fnref init;
    uint32_t has_init, maxtasks;
    int64_t timeout_ns;
    uint64_t initarg_len;
} open_msg;

/* A task, rank 0 -> worker rank; its bytes (argument, or the chunk's
 * items) follow, 16-byte aligned. */
typedef struct {
    mp__fnref fn;
    uint64_t id;                /* rank 0's slot for it */
    uint32_t kind;              /* JOB_APPLY or JOB_CHUNK */
    uint32_t count;             /* chunk: items */
    int64_t timeout_ns;         /* apply: its limit; 0: none */
    uint64_t in_size, out_size, len;
    uint64_t pad;
} task_msg;

/* A task's end, worker rank -> rank 0.  Apply: the result bytes follow.
 * Chunk: info.code != 0 if no item ran; else count outputs, then, 8-byte
 * aligned, nerrs mp_map_error (indexes within the chunk). */
typedef struct {
    uint64_t id;
    mp_task_info info;
    uint64_t len, nerrs;
} result_msg;

_Static_assert(sizeof(task_msg) % 16 == 0, "items stay aligned");

static size_t align8(size_t v) { return (v + 7) & ~(size_t)7; }

static struct {
    pthread_mutex_t lock;
    pid_t pid;                  /* the process that joined the job */
    bool ready, ours, finalized;
    int rank, size;
    MPI_Comm comm;              /* our own: our tags meet nobody else's */
    mp_pool *open;              /* rank 0: the open MPI pool */
    bool busy;                  /* rank 0: a pool holds the slot */
} M = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void nap(unsigned *idle, int64_t *ns)
{
    if (++*idle < SPIN_ROUNDS) {
        mp__yield();
        return;
    }
    mp__sleep_until(mp__now_ns() + *ns);
    if (*ns < NAP_MAX_NS)
        *ns *= 2;
}

/* Wait for a message, polling (a blocking receive would spin a CPU). */
static void wait_message(int src, int tag, MPI_Status *st)
{
    unsigned idle = 0;
    int64_t ns = NAP_MIN_NS;
    for (;;) {
        int flag = 0;
        MPI_Iprobe(src, tag, M.comm, &flag, st);
        if (flag)
            return;
        nap(&idle, &ns);
    }
}

/* Receive the message a probe found, into a heap block if *heap (tasks:
 * the local pool then reads it in place; *heap is cleared if it had to be
 * malloc'd instead) or a malloc'd buffer.  NULL when out of memory: the
 * message is left where it is, for the caller to try again later. */
static void *receive(const MPI_Status *st, bool *heap, int *len)
{
    int n = 0;
    MPI_Get_count(st, MPI_BYTE, &n);
    size_t size = n > 0 ? (size_t)n : 1;
    void *buf = *heap ? mp__heap_alloc(size, NULL) : NULL;
    if (buf == NULL) {
        *heap = false;
        buf = malloc(size);
        if (buf == NULL)
            return NULL;
    }
    MPI_Recv(buf, n, MPI_BYTE, st->MPI_SOURCE, st->MPI_TAG, M.comm, MPI_STATUS_IGNORE);
    *len = n;
    return buf;
}

static void release(void *buf, bool heap)
{
    if (heap)
        mp__heap_free(buf);
    else
        free(buf);
}

/* ==== worker ranks ==== */

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
    return sizeof(result_msg) + align8((size_t)t->count * t->out_size);
}

/* Start a task on the local pool: 0, or the failure to answer with. */
static int start_task(server *sv, entry *e, task_msg *t, bool heap, int len)
{
    memset(e, 0, sizeof *e);
    e->t = t;
    e->heap = heap;
    if (t->len > (size_t)len - sizeof *t ||
        (t->kind == JOB_CHUNK && (t->in_size == 0 || t->len != t->count * t->in_size)) ||
        (t->kind != JOB_CHUNK && t->kind != JOB_APPLY))
        return -EPROTO;
    if (sv->local == NULL)
        return sv->local_err;
    if (sv->open_err)
        return sv->open_err;
    mp__anyfn fn = NULL;
    if (mp__fnref_resolve(&t->fn, &fn) < 0)
        return MP_EFUNC;
    if (t->kind == JOB_APPLY) {
        mp_task_opts o = {.timeout = t->timeout_ns > 0 ? (double)t->timeout_ns / 1e9 : -1};
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
    int rc = mp_pool_imap(sv->local, (mp_map_fn)fn, t + 1, t->count, t->in_size, t->out_size,
                          t->count ? t->count : 1, true, &e->it);
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
    release(e->t, e->heap);
    memset(e, 0, sizeof *e);
}

static void answer_apply(entry *e, int force)
{
    const void *res = NULL;
    size_t len = 0;
    result_msg h = {.id = e->t->id};
    mp_result_get(e->r, 0, &res, &len);
    mp_result_info(e->r, &h.info);
    if (force)
        h.info = (mp_task_info){.code = force};
    if (h.info.code != 0)
        len = 0;
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
    void *buf = receive(st, &heap, &len);
    if (buf == NULL) {
        mp__sleep_until(mp__now_ns() + NAP_MAX_NS); /* out of memory: later */
        return true;
    }
    switch (st->MPI_TAG) {
    case TAG_TASK: {
        if ((size_t)len < sizeof(task_msg)) {
            release(buf, heap); /* no header: nothing to answer to */
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
            wait_message(0, MPI_ANY_TAG, &st);
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

static _Noreturn void worker_rank_main(bool mpi_was_up)
{
    server sv = {0};
    /* The local pool first: its fork server must not descend from an
     * initialized MPI process. */
    mp__pool_index_base = M.rank - 1;
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

/* ==== rank 0 ==== */

typedef struct {
    job *j;
    void *sbuf;
    MPI_Request req;
    bool busy;
} out_slot;

typedef struct {
    pool_shm *s;
    unsigned nranks;
    out_slot *slots;            /* nranks * DEPTH */
    unsigned *nout;             /* per rank: tasks out */
    int64_t *last_end;          /* per rank: when its last answer came */
    int64_t task_ns;            /* a rank's time per task (moving average) */
    size_t total;
} sender;

/* End a job as its worker would, with a failure. */
static void fail_job(sender *sd, unsigned w, job *j, int code)
{
    memset(&j->info, 0, sizeof j->info);
    j->info.code = code;
    if (j->kind == JOB_APPLY) {
        j->res = NULL;
        j->res_len = 0;
        mp__pool_job_ended(j);
    } else {
        uint32_t n = j->count - j->start;
        j->xerrs = malloc(n * sizeof *j->xerrs);
        if (j->xerrs) {
            for (uint32_t i = 0; i < n; i++) {
                j->xerrs[i].index = j->first + j->start + i;
                j->xerrs[i].info = j->info;
            }
            j->nxerrs = n;
            atomic_store(&j->cur, j->count);
        }
        atomic_store(&j->state, JOB_STOPPED);
    }
    mp__pool_push_done(sd->s, w, j);
}

static int send_job(sender *sd, unsigned w, out_slot *o, job *j)
{
    task_msg t = {.id = (uint64_t)(o - sd->slots), .kind = j->kind};
    const void *payload;
    int rc = mp__fnref_make(j->kind == JOB_APPLY ? (mp__anyfn)j->fn : (mp__anyfn)j->mfn, &t.fn);
    if (rc < 0)
        return rc;
    if (j->kind == JOB_APPLY) {
        payload = j->arg;
        t.len = j->len;
        t.timeout_ns = j->timeout_ns;
    } else {
        t.count = j->count - j->start;
        t.in_size = j->in_size;
        t.out_size = j->out_size;
        t.len = (uint64_t)t.count * j->in_size;
        payload = j->in + (size_t)j->start * j->in_size;
        if ((uint64_t)t.count * j->out_size > INT_MAX)
            return MP_ETOOBIG;
    }
    if (t.len > (uint64_t)INT_MAX - sizeof t)
        return MP_ETOOBIG;
    char *buf = malloc(sizeof t + t.len);
    if (buf == NULL)
        return -ENOMEM;
    memcpy(buf, &t, sizeof t);
    if (t.len)
        memcpy(buf + sizeof t, payload, t.len);
    if (MPI_Isend(buf, (int)(sizeof t + t.len), MPI_BYTE, (int)w + 1, TAG_TASK, M.comm,
                  &o->req) != MPI_SUCCESS) {
        free(buf);
        return -EIO;
    }
    o->sbuf = buf;
    o->j = j;
    o->busy = true;
    sd->nout[w]++;
    sd->total++;
    return 0;
}

/* Hand out tasks: first one to each idle rank, then one more to each rank
 * (so that it has the next at hand when it ends one), and so on. */
static bool dispatch(sender *sd)
{
    bool progress = false;
    unsigned most = sd->task_ns < LONG_NS ? DEPTH : DEPTH_LONG;
    for (unsigned depth = 1; depth <= most; depth++) {
        for (unsigned w = 0; w < sd->nranks; w++) {
            while (sd->nout[w] < depth) {
                job *j = mp__pool_take(sd->s, w);
                if (j == NULL)
                    return progress;
                progress = true;
                if (!mp__pool_job_begin(sd->s, w, j))
                    continue; /* cancelled while queued */
                out_slot *o = &sd->slots[w * DEPTH];
                while (o->busy)
                    o++;
                int rc = send_job(sd, w, o, j);
                if (rc < 0)
                    fail_job(sd, w, j, rc);
            }
        }
    }
    return progress;
}

static void end_apply(job *j, const result_msg *h, const char *res)
{
    j->info = h->info;
    j->res = NULL;
    j->res_len = 0;
    if (h->info.code == 0 && h->len) {
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
    mp__pool_job_ended(j);
}

static void end_chunk(job *j, const result_msg *h, const char *body, size_t body_len)
{
    uint32_t n = j->count - j->start;
    size_t outb = (size_t)n * j->out_size;
    const mp_map_error *e = (const mp_map_error *)(const void *)(body + align8(outb));
    if (h->info.code == MP_ECANCELED) {
        atomic_store(&j->cur, j->start); /* nothing counts: terminated */
    } else if (h->info.code != 0 || h->len != outb ||
               body_len < align8(outb) + h->nerrs * sizeof *e) {
        /* The whole chunk failed on the rank (or the reply is malformed). */
        mp_task_info info = h->info;
        if (info.code == 0)
            info.code = -EPROTO;
        j->xerrs = malloc(n * sizeof *j->xerrs);
        if (j->xerrs) {
            for (uint32_t i = 0; i < n; i++) {
                j->xerrs[i].index = j->first + j->start + i;
                j->xerrs[i].info = info;
            }
            j->nxerrs = n;
        }
        atomic_store(&j->cur, j->count);
    } else {
        /* Outputs of the items that succeeded (failed ones stay as they
         * were, as with local workers that never wrote them). */
        size_t from = 0;
        for (size_t i = 0; i <= h->nerrs; i++) {
            size_t to = i < h->nerrs && e[i].index < n ? e[i].index : n;
            if (to > from && j->out_size)
                memcpy(j->out + ((size_t)j->start + from) * j->out_size,
                       body + from * j->out_size, (to - from) * j->out_size);
            from = to + 1;
        }
        if (h->nerrs) {
            j->xerrs = malloc(h->nerrs * sizeof *j->xerrs);
            if (j->xerrs) {
                for (size_t i = 0; i < h->nerrs; i++) {
                    j->xerrs[i].index = j->first + j->start + e[i].index;
                    j->xerrs[i].info = e[i].info;
                }
                j->nxerrs = (uint32_t)h->nerrs;
            }
        }
        atomic_store(&j->cur, j->count);
    }
    atomic_store(&j->state, JOB_STOPPED);
}

/* Take every result that has come in. */
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
        char *buf = receive(&st, &heap, &len);
        if (buf == NULL)
            return progress; /* out of memory: take it later */
        unsigned w = (unsigned)st.MPI_SOURCE - 1;
        if ((size_t)len < sizeof(result_msg) || w >= sd->nranks) {
            free(buf); /* cannot be matched to a task: the job hangs on */
            continue;
        }
        result_msg h;
        memcpy(&h, buf, sizeof h);
        size_t k = (size_t)h.id;
        if (k / DEPTH != w || !sd->slots[k].busy) {
            free(buf);
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
        job *j = o->j;
        size_t body = (size_t)len - sizeof h;
        if (j->kind == JOB_APPLY) {
            if (h.len > body) {
                h.info.code = -EPROTO;
                h.len = 0;
            }
            end_apply(j, &h, buf + sizeof h);
        } else {
            end_chunk(j, &h, buf + sizeof h, body);
        }
        free(buf);
        o->busy = false;
        o->j = NULL;
        o->sbuf = NULL;
        sd->nout[w]--;
        sd->total--;
        mp__pool_push_done(sd->s, w, j);
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

/* Nothing out and nothing queued: sleep as an idle worker does. */
static void idle_sleep(pool_shm *s)
{
    atomic_fetch_add(&s->sleepers, 1);
    atomic_store(&s->waking, 0);
    uint32_t seen = atomic_load(&s->task_seq);
    if (!mp__pool_ring_ready(s) && !atomic_load(&s->stopping))
        mp__futex_wait(&s->task_seq, seen, mp__now_ns() + 50000000);
    atomic_fetch_sub(&s->sleepers, 1);
    atomic_store(&s->waking, 0);
}

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
        }
        if (!terminating)
            progress |= dispatch(sd);
        if (sd->total == 0 &&
            (terminating || (atomic_load(&s->stopping) && !mp__pool_ring_ready(s))))
            break;
        if (progress) {
            idle = 0;
            ns = NAP_MIN_NS;
        } else if (sd->total == 0) {
            idle_sleep(s);
        } else {
            nap(&idle, &ns);
        }
    }
    if (!terminating)
        send_all(sd, TAG_CLOSE, NULL, 0);
    for (unsigned i = 0; i < sd->nranks; i++) {
        MPI_Status st;
        wait_message(MPI_ANY_SOURCE, TAG_CLOSED, &st);
        MPI_Recv(NULL, 0, MPI_BYTE, st.MPI_SOURCE, TAG_CLOSED, M.comm, MPI_STATUS_IGNORE);
    }
    free(sd->slots);
    free(sd->nout);
    free(sd->last_end);
    free(sd);
    mp__mpi_pool_release();
    atomic_store(&s->workers[0].exited, 1);
    mp__notify(s->notify_fd);
    return NULL;
}

int mp__mpi_pool_start(pool_shm *s, pthread_t *th)
{
    sender *sd = calloc(1, sizeof *sd);
    if (sd == NULL)
        return -ENOMEM;
    sd->s = s;
    sd->nranks = s->nworkers;
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

int mp__mpi_pool_claim(mp_pool *p)
{
    pthread_mutex_lock(&M.lock);
    int rc = M.busy ? -EBUSY : 0;
    if (rc == 0) {
        M.busy = true;
        M.open = p;
    }
    pthread_mutex_unlock(&M.lock);
    return rc;
}

void mp__mpi_pool_release(void)
{
    pthread_mutex_lock(&M.lock);
    M.busy = false;
    M.open = NULL;
    pthread_mutex_unlock(&M.lock);
}

/* ==== joining and leaving the job ==== */

static void at_exit(void) { mp_mpi_finalize(); }

int mp__mpi_attach(void)
{
    pthread_mutex_lock(&M.lock);
    int rc;
    if (M.ready) {
        rc = M.pid != mp__getpid() ? -EPERM : M.finalized ? MP_ENOMPI : M.size - 1;
        pthread_mutex_unlock(&M.lock);
        return rc;
    }
    M.rank = mp_mpi_rank();
    M.size = env_int("OMPI_COMM_WORLD_SIZE", "PMI_SIZE");
    int up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    if (M.rank < 0 || M.size < 2 || down) {
        pthread_mutex_unlock(&M.lock);
        return MP_ENOMPI;
    }
    M.pid = mp__getpid();
    M.ready = true;
    if (M.rank != 0) {
        pthread_mutex_unlock(&M.lock);
        worker_rank_main(up);
    }
    int provided = 0;
    if (!up) {
        MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
        M.ours = true;
    } else {
        MPI_Query_thread(&provided);
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &M.comm);
    if (provided < MPI_THREAD_SERIALIZED) {
        /* The sender thread could not call MPI. */
        M.finalized = true;
        pthread_mutex_unlock(&M.lock);
        return -ENOTSUP;
    }
    atexit(at_exit);
    rc = M.size - 1;
    pthread_mutex_unlock(&M.lock);
    return rc;
}

int mp_mpi_init(void)
{
    int rc = mp__mpi_attach();
    return rc < 0 ? rc : 0;
}

int mp_mpi_finalize(void)
{
    pthread_mutex_lock(&M.lock);
    if (!M.ready || M.finalized || M.rank != 0) {
        pthread_mutex_unlock(&M.lock);
        return 0;
    }
    if (M.pid != mp__getpid()) {
        pthread_mutex_unlock(&M.lock);
        return -EPERM;
    }
    mp_pool *open = M.open;
    pthread_mutex_unlock(&M.lock);
    if (open) {
        mp_pool_terminate(open);
        mp_pool_join(open, -1);
    }
    pthread_mutex_lock(&M.lock);
    M.finalized = true;
    for (int r = 1; r < M.size; r++)
        MPI_Send(NULL, 0, MPI_BYTE, r, TAG_SHUTDOWN, M.comm);
    MPI_Comm_free(&M.comm);
    if (M.ours)
        MPI_Finalize();
    pthread_mutex_unlock(&M.lock);
    return 0;
}

#endif
