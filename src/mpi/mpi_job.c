/* MPI pools: joining and leaving the MPI job, and the pool backend
 * (libmproc-mpi, the only code that includes <mpi.h>).
 *
 * Rank 0 runs the program; the first of mp_mpi_init or an MPI pool's
 * mp_pool_new on any other rank turns it into a worker rank for good
 * (mpi_rank.c).  One MPI pool is open at a time: its backend claims the
 * job's one slot when it opens and gives it back when it closes.  At exit
 * (or mp_mpi_finalize) rank 0 terminates an open pool, releases the
 * worker ranks and finalizes MPI if it initialized it. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "heap_int.h"
#include "mpi/mpi_int.h"
#include "mproc/error.h"
#include "os/os.h"
#include "pool/mpi_module.h"

#define M mp__mpi

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

/* ---- joining and leaving ---- */

static int mpi_finalize(void);

static void at_exit(void) { mpi_finalize(); }

/* Join the MPI job (never returns on worker ranks): the number of worker
 * ranks, or MP_ENOMPI, -EPERM, -ENOTSUP. */
static int attach(void)
{
    pthread_mutex_lock(&M.lock);
    int rc;
    if (M.ready) {
        rc = M.pid != mp__getpid() ? -EPERM : M.finalized ? MP_ENOMPI : M.size - 1;
        pthread_mutex_unlock(&M.lock);
        return rc;
    }
    M.rank = env_int("OMPI_COMM_WORLD_RANK", "PMI_RANK");
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
        mp__mpi_rank_main(up);
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

static int mpi_init(void)
{
    int rc = attach();
    return rc < 0 ? rc : 0;
}

static int mpi_finalize(void)
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
        mp_pool_join(open, MP_FOREVER);
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

/* ---- the backend ---- */

static int mpi_prepare(mp_pool_opts *o)
{
    /* Ranks share no memory: the initializer travels by name, its
     * argument as bytes. */
    if (o->initarg != NULL && o->initarg_len == 0)
        return -EINVAL;
    mp__fnref ref;
    if (o->initializer && mp__fnref_make((mp__anyfn)o->initializer, &ref) < 0)
        return MP_EFUNC;
    int ranks = attach(); /* never returns on a worker rank */
    if (ranks < 0)
        return ranks;
    if (o->workers == 0 || o->workers > (unsigned)ranks)
        o->workers = (unsigned)ranks;
    return 0;
}

static int mpi_open(pool_core *c)
{
    pthread_mutex_lock(&M.lock);
    int rc = M.busy ? -EBUSY : 0;
    if (rc == 0) {
        M.busy = true;
        M.open = c->handle;
    }
    pthread_mutex_unlock(&M.lock);
    return rc;
}

static void mpi_close(pool_core *c)
{
    pthread_mutex_lock(&M.lock);
    if (M.busy && M.open == c->handle) {
        M.busy = false;
        M.open = NULL;
    }
    pthread_mutex_unlock(&M.lock);
}

static int mpi_spawn(pool_core *c, unsigned w)
{
    if (w != 0)
        return -EINVAL;
    atomic_store(&c->s->workers[0].exited, 0);
    int rc = mp__mpi_sender_start(c, &c->w[0].th);
    if (rc == 0)
        c->w[0].life = WK_RUNNING;
    return rc;
}

static void mpi_reap(pool_core *c, unsigned w) { pthread_join(c->w[w].th, NULL); }

static int mpi_fn_check(void (*fn)(void))
{
    mp__fnref ref;
    return mp__fnref_make(fn, &ref);
}

static const pool_backend mpi_backend = {
    .name = "mpi",
    /* The sender runs in this process: map arrays are read and written in
     * place; tasks' limits are kept on the ranks. */
    .caps = BACKEND_SHARES | BACKEND_POLLED | BACKEND_REMOTE,
    .prepare = mpi_prepare,
    .open = mpi_open,
    .close = mpi_close,
    .spawn = mpi_spawn,
    .reap = mpi_reap,
    .fn_check = mpi_fn_check,
};

static const mp__mpi_module module = {
    .abi = MP__MPI_ABI,
    .backend = &mpi_backend,
    .init = mpi_init,
    .finalize = mpi_finalize,
};

const mp__mpi_module *mp__mpi_module_get(void) { return &module; }
