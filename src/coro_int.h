/* Coroutines, inside: the records of a coroutine and of a thread's
 * scheduler, and the calls the scheduler (coro.c), the descriptor waits
 * (coro_fd.c) and the channels (coro_chan.c) make of each other. */
#ifndef MPROC_CORO_INT_H
#define MPROC_CORO_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mproc/coro.h"

#if defined(__SANITIZE_ADDRESS__)
#define CO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CO_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define CO_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CO_TSAN 1
#endif
#endif
#ifdef CO_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef CO_TSAN
#include <sanitizer/tsan_interface.h>
#endif

/* MP_CO_UCONTEXT forces the portable fallback (to test it). */
#if (defined(__x86_64__) || defined(__aarch64__)) && !defined(MP_CO_UCONTEXT)
void mp__co_switch(void **save_sp, void *load_sp);
void mp__co_trampoline(void);
#define CO_ASM 1
#else
#include <ucontext.h>
#endif

/* x86_64 without the sanitizers (whose fiber switches cannot run in the
 * middle of a return): a coroutine is entered first by a jump, and it
 * makes its last switch from its first frame, once its entry function
 * has returned (co_switch.S).  Each `ret` of a switch then goes back
 * where its context called the switch, so the processor's prediction of
 * returns stays in step with the stacks. */
#if defined(CO_ASM) && defined(__x86_64__) && !defined(CO_ASAN) && !defined(CO_TSAN)
#define CO_EXIT_BY_RETURN 1
#endif

#define STACK_CACHE_MAX 256 /* ended records kept with their stacks */

enum { CO_READY, CO_RUNNING, CO_WAITING, CO_DONE };

typedef struct sched sched;

typedef struct waiter waiter;

typedef struct waitq {
    waiter *head, *tail;
} waitq;

/* One wait of a coroutine on a list (a channel's senders or receivers, a
 * coroutine's joiners).  A coroutine is on one list at a time, except in
 * mp_chan_select: one waiter per channel, all ended by the first that
 * fires (mp__co_wake takes them all off their lists). */
struct waiter {
    mp_co *co;
    waitq *q;                  /* the list it is on, or NULL */
    waiter *next, *prev;
    void *xfer;                /* channel: the element to send, or room
                                * for the one received */
    int rc;                    /* channel: 0 or MP_ECLOSED, set by the waker */
    unsigned idx;              /* select: which op it is */
};

struct mp_co {
    void *sp;                  /* saved stack pointer while switched out */
    sched *s;
    mp_co_fn fn;
    void *arg;
    char *stack;               /* the mapping (guard page first), NULL for main */
    size_t stack_size;
    int state;
    bool detached;             /* free when it ends */
    bool fresh;                /* it has not run yet */
    mp_co *next;               /* ready queue */
    bool queued;
    /* what it waits for */
    bool woken;
    int wake_rc;
    size_t heap_idx;           /* in the timer heap, or SIZE_MAX */
    int64_t deadline;
    int wait_fd;               /* fd it waits on, or -1 */
    int ready_events;
    waiter w;                  /* its one wait (a join, a channel call) */
    waiter *waits;             /* the waits it is in: &w, or select's */
    unsigned nwaits;
    waiter *fired;             /* the wait that ended it (channels) */
    waitq joiners;
#ifdef CO_ASAN
    void *asan_fake;
    const void *asan_bottom;
    size_t asan_size;
#endif
#ifdef CO_TSAN
    void *tsan_fiber;
#endif
#ifndef CO_ASM
    ucontext_t uc;
#endif
};

typedef struct {
    mp_co *rd, *wr;
} fd_slot;

struct sched {
    mp_co main;
    mp_co *current;
    mp_co *ready_head, *ready_tail;
    mp_co **heap;
    size_t nheap, capheap;
    int ep;
    fd_slot *fds;
    size_t nfds;
    size_t fd_waiters;
    /* Set by coro_fd.c on its first descriptor wait: the scheduler calls
     * down through these, never into coro_fd.c by name.  fd_forget: co
     * (wait_fd >= 0) stops waiting on its descriptor; fd_poll: wait for
     * descriptors (fd_waiters > 0) until deadline, waking their
     * coroutines: 0 or -errno. */
    void (*fd_forget)(sched *s, mp_co *co);
    int (*fd_poll)(sched *s, int64_t deadline);
    size_t live;               /* coroutines spawned and not ended */
    uint64_t rand;             /* mp_chan_select's choices */
    mp_co *zombie;             /* an ended detached coroutine to free */
    bool main_turn;            /* main was taken from the ready queue */
    mp_co *co_cache;           /* ended records with default stacks */
    size_t ncache;
    size_t default_stack;      /* its size (with the guard page) */
};

extern _Thread_local sched *mp__co_tls __attribute__((tls_model("initial-exec")));

/* This thread's scheduler, made on first use (NULL: out of memory). */
sched *mp__co_sched_create(void);
static inline sched *mp__co_sched(void)
{
    sched *s = mp__co_tls;
    return s ? s : mp__co_sched_create();
}

/* Make co ready, with rc as what its park returns (once). */
void mp__co_wake(sched *s, mp_co *co, int rc);
/* Block the current context until woken or deadline: 0 or the wake code
 * (MP_ETIMEDOUT), or -EDEADLK when main would wait forever. */
int mp__co_park(sched *s, int64_t deadline);
/* Wait lists.  mp__co_wait_on puts co's one waiter on q (its xfer and
 * rc set by the caller); mp__co_wq_add puts any waiter on q; pop takes
 * the first off (NULL: none); mp__co_unwait takes all of co's off. */
void mp__co_wait_on(mp_co *co, waitq *q);
void mp__co_wq_add(waitq *q, waiter *w);
waiter *mp__co_wq_pop(waitq *q);
void mp__co_unwait(mp_co *co);
/* End the wait w of a channel with rc (0 or MP_ECLOSED): wake its
 * coroutine, telling it which of its waits fired. */
void mp__co_fire(sched *s, waiter *w, int rc);


#endif
