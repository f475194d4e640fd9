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


/* MP_CO_UCONTEXT forces the portable fallback (to test it). */
#if (defined(__x86_64__) || defined(__aarch64__)) && !defined(MP_CO_UCONTEXT)
#define CO_ASM 1
#else
#include <ucontext.h>
#endif

#define STACK_CACHE_MAX 256 /* default-size stacks kept for reuse */

enum { CO_READY, CO_RUNNING, CO_WAITING, CO_DONE };

typedef struct sched sched;

typedef struct waitq {
    mp_co *head, *tail;
} waitq;

struct mp_co {
    void *sp;                  /* saved stack pointer while switched out */
    sched *s;
    mp_co_fn fn;
    void *arg;
    char *stack;               /* the mapping (guard page first), NULL for main */
    size_t stack_size;
    int state;
    bool detached;             /* free when it ends */
    mp_co *next;               /* ready queue */
    bool queued;
    /* what it waits for */
    bool woken;
    int wake_rc;
    size_t heap_idx;           /* in the timer heap, or SIZE_MAX */
    int64_t deadline;
    waitq *wq;                 /* the wait list it is on, if any */
    mp_co *wq_next, *wq_prev;
    int wait_fd;               /* fd it waits on, or -1 */
    int ready_events;
    void *xfer;                /* channel: element to send / receive into */
    int xfer_rc;
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
    size_t live;               /* coroutines spawned and not ended */
    mp_co *zombie;             /* an ended detached coroutine to free */
    bool main_turn;            /* main was taken from the ready queue */
    char *stack_cache[STACK_CACHE_MAX];
    size_t ncache;
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
/* Wait lists (channels, joiners). */
void mp__co_wq_add(waitq *q, mp_co *co);
void mp__co_wq_del(mp_co *co);
mp_co *mp__co_wq_pop(waitq *q);

/* coro_fd.c: stop co waiting on its descriptor; wait for descriptors and
 * timers until deadline (the scheduler's idle step): 0 or -errno. */
void mp__co_fd_forget(sched *s, mp_co *co);
int mp__co_poll_io(sched *s, int64_t deadline);

#endif
