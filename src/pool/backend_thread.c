/* Thread workers: the same worker loop on threads of the parent.  No crash
 * isolation and no kill: deadlines are refused (-ENOTSUP) and terminate
 * lets a running task finish.  A worker says it has ended by setting its
 * slot's `exited` and waking the supervisor, which then joins it. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "os/os.h"
#include "pool/core.h"
#include "pool/worker.h"

typedef struct {
    pool_shm *s;
    unsigned w;
} thread_arg;

static void *thread_main(void *arg)
{
    thread_arg ta = *(thread_arg *)arg;
    free(arg);
    mp__worker_run(ta.s, ta.w, false);
    atomic_store(&ta.s->workers[ta.w].exited, 1);
    mp__notify(ta.s->notify_fd);
    return NULL;
}

static int thread_spawn(pool_core *c, unsigned w)
{
    worker_rec *r = &c->w[w];
    atomic_store(&c->s->workers[w].exited, 0);
    thread_arg *ta = malloc(sizeof *ta);
    if (ta == NULL)
        return -ENOMEM;
    ta->s = c->s;
    ta->w = w;
    /* Library threads block every signal (the supervisor does, and a new
     * thread inherits its mask). */
    int rc = pthread_create(&r->th, NULL, thread_main, ta);
    if (rc != 0) {
        free(ta);
        return -rc;
    }
    r->life = WK_RUNNING;
    return 0;
}

static void thread_reap(pool_core *c, unsigned w) { pthread_join(c->w[w].th, NULL); }

static int thread_prepare(mp_pool_opts *o)
{
    return o->task_timeout > 0 ? -ENOTSUP : 0;
}

const pool_backend mp__backend_thread = {
    .name = "thread",
    .caps = BACKEND_SHARES | BACKEND_FDS | BACKEND_POLLED,
    .prepare = thread_prepare,
    .spawn = thread_spawn,
    .reap = thread_reap,
};
