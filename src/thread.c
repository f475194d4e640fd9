/* Threads and timers on pthreads.
 *
 * A thread's state is shared by its object and the running thread, with a
 * reference count, so that freeing the object of a running thread only
 * detaches it.  `finished` is a futex word: join with a timeout sleeps on
 * it; a join without one goes straight to pthread_join, so start+join
 * costs what pthread_create+pthread_join cost, plus an allocation.
 *
 * Exit: running non-daemon threads are counted; the atexit handler waits
 * until the count is zero (less the calling thread, if it is one of them).
 * A child of mp_process_start, which ends with _exit, makes the same wait
 * itself after its target.  The count starts again at zero in every forked
 * child: threads do not cross fork. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mproc/error.h"
#include "mproc/thread.h"
#include "os/os.h"
#include "thread_int.h"
#include "wait_int.h"


enum { NEW, STARTED, JOINING, JOINED };

struct mp_thread {
    pthread_t th;
    mp_target fn;
    void *arg;
    char *name;
    bool daemon;
    size_t stack_size;          /* page-rounded, or 0: pthread's default */
    pid_t owner;
    int state;                  /* NEW, STARTED, JOINED: the owner's view */
    pthread_mutex_t lock;       /* guards state for concurrent joins */
    _Atomic uint32_t finished;  /* fn has returned */
    _Atomic uint32_t waiters;   /* joiners asleep on finished */
    int result;
    _Atomic int refs;           /* the object, and the thread while it runs */
};

/* ---- the exit wait ---- */

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t live_cond = PTHREAD_COND_INITIALIZER;
static int live_nondaemon;
static _Thread_local bool self_nondaemon;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static _Atomic unsigned thread_counter;

void mp__thread_wait_nondaemon(void)
{
    pthread_mutex_lock(&live_lock);
    int self = self_nondaemon ? 1 : 0;
    while (live_nondaemon > self)
        pthread_cond_wait(&live_cond, &live_lock);
    pthread_mutex_unlock(&live_lock);
}

static void install_exit_wait(void) { atexit(mp__thread_wait_nondaemon); }

static void live_prepare(void) { pthread_mutex_lock(&live_lock); }
static void live_parent(void) { pthread_mutex_unlock(&live_lock); }
static void live_child(void)
{
    live_nondaemon = 0; /* threads do not cross fork */
    self_nondaemon = false;
    pthread_mutex_unlock(&live_lock);
}

__attribute__((constructor)) static void thread_register_fork_hooks(void)
{
    static const mp__fork_hooks hooks = {
        .rank = MP__RANK_USER,
        .prepare = live_prepare,
        .parent = live_parent,
        .child = live_child,
    };
    mp__fork_hooks_add(&hooks);
}

/* ---- threads ---- */

static void release(mp_thread *t)
{
    if (atomic_fetch_sub(&t->refs, 1) == 1) {
        pthread_mutex_destroy(&t->lock);
        free(t->name);
        free(t);
    }
}

static void *thread_main(void *p)
{
    mp_thread *t = p;
    if (!t->daemon)
        self_nondaemon = true;
    t->result = t->fn(t->arg);
    atomic_store(&t->finished, 1); /* seq_cst: see wait_int.h */
    mp__wake_word(&t->finished, &t->waiters);
    bool daemon = t->daemon;
    release(t);
    if (!daemon) {
        pthread_mutex_lock(&live_lock);
        live_nondaemon--;
        self_nondaemon = false;
        pthread_cond_broadcast(&live_cond);
        pthread_mutex_unlock(&live_lock);
    }
    return NULL;
}

/* Python's threading.stack_size refuses less than 32 KiB. */
#define MIN_STACK_SIZE ((size_t)32 * 1024)

/* A requested stack size checked and rounded up to the page size; 0 stays
 * 0 (the default).  Returns 0 or -EINVAL. */
static int stack_size_round(size_t want, size_t *out)
{
    *out = 0;
    if (want == 0)
        return 0;
    size_t page = (size_t)mp__page_size();
    if (want < MIN_STACK_SIZE || want < (size_t)PTHREAD_STACK_MIN ||
        want > SIZE_MAX - page)
        return -EINVAL;
    *out = (want + page - 1) / page * page;
    return 0;
}

int mp_thread_new(mp_thread **out, mp_target fn, void *arg, const mp_thread_opts *opts)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (fn == NULL)
        return -EINVAL;
    size_t stack_size;
    if (stack_size_round(opts != NULL ? opts->stack_size : 0, &stack_size) < 0)
        return -EINVAL;
    mp_thread *t = calloc(1, sizeof *t);
    if (t == NULL)
        return -ENOMEM;
    if (opts != NULL && opts->name != NULL && opts->name[0] != '\0') {
        t->name = strdup(opts->name);
    } else {
        char buf[32];
        snprintf(buf, sizeof buf, "Thread-%u", atomic_fetch_add(&thread_counter, 1) + 1);
        t->name = strdup(buf);
    }
    if (t->name == NULL) {
        free(t);
        return -ENOMEM;
    }
    t->fn = fn;
    t->arg = arg;
    t->daemon = opts != NULL && opts->daemon;
    t->stack_size = stack_size;
    t->owner = mp__getpid();
    pthread_mutex_init(&t->lock, NULL);
    atomic_init(&t->refs, 1);
    *out = t;
    return 0;
}

static int check(const mp_thread *t)
{
    if (t == NULL)
        return -EINVAL;
    return t->owner == mp__getpid() ? 0 : -EPERM;
}

/* pthread_create with the object's stack size: 0 or a pthread error. */
static int create_thread(mp_thread *t)
{
    if (t->stack_size == 0)
        return pthread_create(&t->th, NULL, thread_main, t);
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc != 0)
        return rc;
    rc = pthread_attr_setstacksize(&attr, t->stack_size);
    if (rc == 0)
        rc = pthread_create(&t->th, &attr, thread_main, t);
    pthread_attr_destroy(&attr);
    return rc;
}

int mp_thread_start(mp_thread *t)
{
    int rc = check(t);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&t->lock);
    if (t->state != NEW) {
        pthread_mutex_unlock(&t->lock);
        return -EALREADY;
    }
    if (!t->daemon) {
        pthread_once(&exit_once, install_exit_wait);
        pthread_mutex_lock(&live_lock);
        live_nondaemon++;
        pthread_mutex_unlock(&live_lock);
    }
    atomic_fetch_add(&t->refs, 1);
    rc = create_thread(t);
    if (rc != 0) {
        atomic_fetch_sub(&t->refs, 1);
        if (!t->daemon) {
            pthread_mutex_lock(&live_lock);
            live_nondaemon--;
            pthread_cond_broadcast(&live_cond);
            pthread_mutex_unlock(&live_lock);
        }
        pthread_mutex_unlock(&t->lock);
        return -rc;
    }
    t->state = STARTED;
    pthread_mutex_unlock(&t->lock);
    return 0;
}

int mp_thread_join(mp_thread *t, double timeout)
{
    int64_t deadline;
    int rc = check(t);
    if (rc < 0)
        return rc;
    if (mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    pthread_mutex_lock(&t->lock);
    int state = t->state;
    bool reap = state == STARTED && deadline == MP__NO_DEADLINE;
    if (reap)
        t->state = JOINING; /* this caller reaps; others wait for fn */
    pthread_mutex_unlock(&t->lock);
    if (state == NEW)
        return -EINVAL;
    if (state == JOINED)
        return 0;
    if (pthread_equal(t->th, pthread_self())) {
        if (reap) {
            pthread_mutex_lock(&t->lock);
            t->state = STARTED;
            pthread_mutex_unlock(&t->lock);
        }
        return -EDEADLK;
    }
    if (reap) { /* forever: straight to pthread_join, one wake-up */
        pthread_join(t->th, NULL);
        pthread_mutex_lock(&t->lock);
        t->state = JOINED;
        pthread_mutex_unlock(&t->lock);
        return 0;
    }
    if (mp__wait_change(&t->finished, &t->waiters, 0, deadline, 0) < 0)
        return MP_ETIMEDOUT;
    pthread_mutex_lock(&t->lock);
    if (t->state == STARTED) { /* nobody reaps it yet: the thread is ending */
        pthread_join(t->th, NULL);
        t->state = JOINED;
    }
    pthread_mutex_unlock(&t->lock);
    return 0;
}

bool mp_thread_is_alive(mp_thread *t)
{
    if (check(t) < 0)
        return false;
    pthread_mutex_lock(&t->lock);
    bool started = t->state != NEW;
    pthread_mutex_unlock(&t->lock);
    return started && !atomic_load_explicit(&t->finished, memory_order_acquire);
}

int mp_thread_result(mp_thread *t, int *result)
{
    int rc = check(t);
    if (rc < 0 || result == NULL)
        return rc < 0 ? rc : -EINVAL;
    if (!atomic_load_explicit(&t->finished, memory_order_acquire))
        return -EAGAIN;
    *result = t->result;
    return 0;
}

const char *mp_thread_name(const mp_thread *t)
{
    return t == NULL ? NULL : t->name;
}

bool mp_thread_daemon(const mp_thread *t)
{
    return t != NULL && t->daemon;
}

void mp_thread_free(mp_thread *t)
{
    if (t == NULL)
        return;
    if (t->owner == mp__getpid()) {
        pthread_mutex_lock(&t->lock);
        if (t->state == STARTED) {
            pthread_detach(t->th);
            t->state = JOINED;
        }
        /* JOINING: a join in another thread is reaping it. */
        pthread_mutex_unlock(&t->lock);
    }
    release(t);
}

/* ---- timers ---- */

enum { PENDING, CANCELLED, FIRED };

struct mp_timer {
    mp_thread *thread;
    int64_t delay_ns;
    void (*fn)(void *);
    void *arg;
    _Atomic uint32_t state; /* PENDING, CANCELLED, FIRED */
};

static int timer_main(void *p)
{
    mp_timer *t = p;
    int64_t deadline = mp__now_ns() + t->delay_ns;
    for (;;) {
        if (atomic_load(&t->state) != PENDING)
            return 0; /* cancelled */
        int64_t now = mp__now_ns();
        if (now >= deadline)
            break;
        mp__wait_change(&t->state, NULL, PENDING, deadline, 0); /* until cancelled */
    }
    uint32_t expect = PENDING;
    if (atomic_compare_exchange_strong(&t->state, &expect, FIRED))
        t->fn(t->arg);
    return 0;
}

int mp_timer_new(mp_timer **out, double delay, void (*fn)(void *), void *arg)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (fn == NULL || !(delay >= 0))
        return -EINVAL;
    mp_timer *t = calloc(1, sizeof *t);
    if (t == NULL)
        return -ENOMEM;
    t->delay_ns = delay > 1e9 ? INT64_MAX / 2 : (int64_t)(delay * 1e9);
    t->fn = fn;
    t->arg = arg;
    int rc = mp_thread_new(&t->thread, timer_main, t, &(mp_thread_opts){.name = NULL});
    if (rc < 0) {
        free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int mp_timer_start(mp_timer *t)
{
    return t == NULL ? -EINVAL : mp_thread_start(t->thread);
}

int mp_timer_cancel(mp_timer *t)
{
    int rc = t == NULL ? -EINVAL : check(t->thread);
    if (rc < 0)
        return rc;
    uint32_t expect = PENDING;
    if (atomic_compare_exchange_strong(&t->state, &expect, CANCELLED))
        mp__wake_word(&t->state, NULL);
    return 0;
}

bool mp_timer_fired(mp_timer *t)
{
    return t != NULL && check(t->thread) == 0 && atomic_load(&t->state) == FIRED;
}

void mp_timer_free(mp_timer *t)
{
    if (t == NULL)
        return;
    if (check(t->thread) == 0) {
        mp_timer_cancel(t);
        mp_thread_join(t->thread, MP_FOREVER); /* -EINVAL if never started */
    }
    mp_thread_free(t->thread);
    free(t);
}
