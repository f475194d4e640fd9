/* Coroutines: one scheduler per thread, stackful coroutines switched by
 * src/os/<arch>/co_switch.S, timers in a binary heap, descriptor waits in
 * a one-shot epoll set, and channels.
 *
 * The thread's own context ("main") is a coroutine record too.  It is the
 * scheduler: whenever main blocks in a call of this module it runs
 * run_loop, which switches to ready coroutines, and polls for I/O and
 * timers when none is ready.  A coroutine that blocks switches straight to
 * the next ready one, or back to main when none is (so a switch between
 * two coroutines is one context switch, not two).  Main is queued like any
 * other when something it waits for happens. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mproc/coro.h"
#include "mproc/error.h"
#include "os/os.h"

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

#define MIN_STACK ((size_t)16 * 1024)
#define STACK_CACHE_MAX 256

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

static _Thread_local sched *tls_sched __attribute__((tls_model("initial-exec")));
static pthread_key_t sched_key;
static pthread_once_t sched_once = PTHREAD_ONCE_INIT;

/* ---- stacks ---- */

static size_t default_stack(void) { return MP_CO_STACK_DEFAULT + (size_t)mp__page_size(); }

static char *stack_get(sched *s, size_t size, int *err)
{
    if (size == default_stack() && s->ncache > 0) {
        char *st = s->stack_cache[--s->ncache];
#ifdef CO_ASAN
        /* Frames of the coroutine that ended on it may still be poisoned. */
        __asan_unpoison_memory_region(st, size);
#endif
        return st;
    }
    return mp__stack_map(size, err);
}

static void stack_put(sched *s, char *st, size_t size)
{
    if (size == default_stack() && s->ncache < STACK_CACHE_MAX)
        s->stack_cache[s->ncache++] = st;
    else
        mp__stack_unmap(st, size);
}

/* ---- the scheduler of this thread ---- */

static void sched_destroy(void *arg)
{
    sched *s = arg;
    if (s == NULL)
        return;
    /* Coroutines still parked when the thread ends are abandoned. */
    for (size_t i = 0; i < s->ncache; i++)
        mp__stack_unmap(s->stack_cache[i], default_stack());
    if (s->ep >= 0)
        close(s->ep);
    free(s->heap);
    free(s->fds);
    free(s);
}

static void make_key(void) { pthread_key_create(&sched_key, sched_destroy); }

/* Coroutines do not cross fork: a child starts with no scheduler (its
 * copy of the parent's is left alone). */
static void sched_forget_in_child(void) { tls_sched = NULL; }

__attribute__((constructor)) static void coro_register_fork_hooks(void)
{
    static const mp__fork_hooks hooks = {.rank = MP__RANK_USER, .child = sched_forget_in_child};
    mp__fork_hooks_add(&hooks);
}

static sched *sched_create(void);

static inline sched *get_sched(void)
{
    sched *s = tls_sched;
    return s ? s : sched_create();
}

static sched *sched_create(void)
{
    sched *s;
    pthread_once(&sched_once, make_key);
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->ep = -1;
    s->main.s = s;
    s->main.state = CO_RUNNING;
    s->main.heap_idx = SIZE_MAX;
    s->main.wait_fd = -1;
#ifdef CO_TSAN
    s->main.tsan_fiber = __tsan_get_current_fiber();
#endif
    s->current = &s->main;
    tls_sched = s;
    pthread_setspecific(sched_key, s);
    return s;
}

/* ---- ready queue ---- */

static void push_ready(sched *s, mp_co *co)
{
    if (co->queued)
        return;
    co->queued = true;
    co->next = NULL;
    if (s->ready_tail)
        s->ready_tail->next = co;
    else
        s->ready_head = co;
    s->ready_tail = co;
}

static mp_co *pop_ready(sched *s)
{
    mp_co *co = s->ready_head;
    if (co) {
        s->ready_head = co->next;
        if (s->ready_head == NULL)
            s->ready_tail = NULL;
        co->queued = false;
    }
    return co;
}

/* ---- timer heap ---- */

static void heap_swap(sched *s, size_t a, size_t b)
{
    mp_co *t = s->heap[a];
    s->heap[a] = s->heap[b];
    s->heap[b] = t;
    s->heap[a]->heap_idx = a;
    s->heap[b]->heap_idx = b;
}

static void heap_up(sched *s, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (s->heap[p]->deadline <= s->heap[i]->deadline)
            break;
        heap_swap(s, i, p);
        i = p;
    }
}

static void heap_down(sched *s, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->nheap && s->heap[l]->deadline < s->heap[m]->deadline)
            m = l;
        if (r < s->nheap && s->heap[r]->deadline < s->heap[m]->deadline)
            m = r;
        if (m == i)
            break;
        heap_swap(s, i, m);
        i = m;
    }
}

static int heap_push(sched *s, mp_co *co, int64_t deadline)
{
    if (s->nheap == s->capheap) {
        size_t cap = s->capheap ? s->capheap * 2 : 64;
        mp_co **h = realloc(s->heap, cap * sizeof *h);
        if (h == NULL)
            return -ENOMEM;
        s->heap = h;
        s->capheap = cap;
    }
    co->deadline = deadline;
    co->heap_idx = s->nheap;
    s->heap[s->nheap++] = co;
    heap_up(s, co->heap_idx);
    return 0;
}

static void heap_remove(sched *s, mp_co *co)
{
    size_t i = co->heap_idx;
    if (i == SIZE_MAX)
        return;
    co->heap_idx = SIZE_MAX;
    if (i != --s->nheap) {
        s->heap[i] = s->heap[s->nheap];
        s->heap[i]->heap_idx = i;
        heap_down(s, i);
        heap_up(s, i);
    }
}

/* ---- wait lists ---- */

static void wq_add(waitq *q, mp_co *co)
{
    co->wq = q;
    co->wq_next = NULL;
    co->wq_prev = q->tail;
    if (q->tail)
        q->tail->wq_next = co;
    else
        q->head = co;
    q->tail = co;
}

static void wq_del(mp_co *co)
{
    waitq *q = co->wq;
    if (q == NULL)
        return;
    if (co->wq_prev)
        co->wq_prev->wq_next = co->wq_next;
    else
        q->head = co->wq_next;
    if (co->wq_next)
        co->wq_next->wq_prev = co->wq_prev;
    else
        q->tail = co->wq_prev;
    co->wq = NULL;
    co->wq_next = co->wq_prev = NULL;
}

static mp_co *wq_pop(waitq *q)
{
    mp_co *co = q->head;
    if (co)
        wq_del(co);
    return co;
}

/* ---- descriptors ---- */

static void fd_rearm(sched *s, int fd)
{
    fd_slot *slot = &s->fds[fd];
    unsigned ev = (slot->rd ? MP__POLL_IN : 0) | (slot->wr ? MP__POLL_OUT : 0);
    if (ev)
        mp__poller_arm(s->ep, fd, ev, (uint64_t)fd);
}

/* Stop co waiting on its descriptor (woken or timed out). */
static void fd_forget(sched *s, mp_co *co)
{
    int fd = co->wait_fd;
    if (fd < 0)
        return;
    co->wait_fd = -1;
    s->fd_waiters--;
    fd_slot *slot = &s->fds[fd];
    bool other = false;
    if (slot->rd == co)
        slot->rd = NULL;
    else if (slot->rd)
        other = true;
    if (slot->wr == co)
        slot->wr = NULL;
    else if (slot->wr)
        other = true;
    if (other)
        fd_rearm(s, fd); /* the one-shot arming may have been used up */
}

/* ---- waking and parking ---- */

static void wake(sched *s, mp_co *co, int rc)
{
    if (co->woken)
        return;
    co->woken = true;
    co->wake_rc = rc;
    heap_remove(s, co);
    wq_del(co);
    fd_forget(s, co);
    if (co->state == CO_WAITING)
        co->state = CO_READY;
    push_ready(s, co);
}

static void after_switch(sched *s)
{
    mp_co *z = s->zombie;
    if (z && z != s->current) {
        s->zombie = NULL;
        stack_put(s, z->stack, z->stack_size);
#ifdef CO_TSAN
        __tsan_destroy_fiber(z->tsan_fiber);
#endif
        free(z);
    }
}

static void co_switch(sched *s, mp_co *from, mp_co *to)
{
    if (from == to)
        return;
    s->current = to;
    to->state = CO_RUNNING;
#ifdef CO_ASAN
    __sanitizer_start_switch_fiber(from->state == CO_DONE ? NULL : &from->asan_fake,
                                   to->asan_bottom, to->asan_size);
#endif
#ifdef CO_TSAN
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
#ifdef CO_ASM
    mp__co_switch(&from->sp, to->sp);
#else
    swapcontext(&from->uc, &to->uc);
#endif
    /* Back in `from`, now running again. */
#ifdef CO_ASAN
    const void *bottom;
    size_t size;
    __sanitizer_finish_switch_fiber(from->asan_fake, &bottom, &size);
    if (s->main.asan_bottom == NULL && from != &s->main) {
        s->main.asan_bottom = bottom; /* learnt on the first switch away */
        s->main.asan_size = size;
    }
#endif
    after_switch(s);
}

/* The next to run when the current one blocks: a ready one, else main
 * (the scheduler). */
static mp_co *pick_next(sched *s)
{
    mp_co *co = pop_ready(s);
    if (co == &s->main)
        s->main_turn = true;
    return co ? co : &s->main;
}

typedef enum { UNTIL_ALL_DONE, UNTIL_MAIN_WOKEN, UNTIL_MAIN_TURN } run_mode;

static int poll_io(sched *s, int64_t deadline);

/* Run the scheduler from main until the mode's condition holds. */
static int run_loop(sched *s, run_mode mode)
{
    for (;;) {
        if ((mode == UNTIL_ALL_DONE && s->live == 0) ||
            (mode == UNTIL_MAIN_WOKEN && s->main.woken) ||
            (mode == UNTIL_MAIN_TURN && s->main_turn))
            return 0;
        mp_co *co = pop_ready(s);
        if (co == &s->main) {
            s->main_turn = true;
            continue;
        }
        if (co) {
            co_switch(s, &s->main, co);
            continue;
        }
        int64_t deadline = s->nheap ? s->heap[0]->deadline : MP__NO_DEADLINE;
        if (deadline == MP__NO_DEADLINE && s->fd_waiters == 0)
            return -EDEADLK; /* nothing left that could wake anyone */
        int rc = poll_io(s, deadline);
        if (rc < 0)
            return rc;
    }
}

static int poll_io(sched *s, int64_t deadline)
{
    int64_t now = mp__now_ns();
    if (s->fd_waiters > 0 && s->ep >= 0) {
        uint64_t tags[64];
        unsigned evs[64];
        int n = mp__poller_wait_events(s->ep, tags, evs, 64, deadline > now ? deadline : now);
        if (n < 0)
            return n;
        for (int i = 0; i < n; i++) {
            int fd = (int)tags[i];
            if (fd < 0 || (size_t)fd >= s->nfds)
                continue;
            fd_slot *slot = &s->fds[fd];
            mp_co *rd = slot->rd, *wr = slot->wr;
            if (rd && (evs[i] & MP__POLL_IN)) {
                rd->ready_events |= MP_READABLE;
                wake(s, rd, 0);
            }
            if (wr && (evs[i] & MP__POLL_OUT)) {
                wr->ready_events |= MP_WRITABLE;
                wake(s, wr, 0);
            }
            if (slot->rd || slot->wr)
                fd_rearm(s, fd);
        }
        now = mp__now_ns();
    } else if (deadline > now) {
        mp__sleep_until(deadline);
        now = mp__now_ns();
    }
    while (s->nheap && s->heap[0]->deadline <= now)
        wake(s, s->heap[0], MP_ETIMEDOUT);
    return 0;
}

/* Block the current context until woken or deadline: 0 or the wake code
 * (MP_ETIMEDOUT), or -EDEADLK when main would wait forever. */
static int park(sched *s, int64_t deadline)
{
    mp_co *self = s->current;
    self->woken = false;
    self->wake_rc = 0;
    if (deadline != MP__NO_DEADLINE && heap_push(s, self, deadline) < 0) {
        wq_del(self);
        fd_forget(s, self);
        return -ENOMEM;
    }
    if (self == &s->main) {
        int rc = run_loop(s, UNTIL_MAIN_WOKEN);
        if (rc < 0 && !self->woken) {
            heap_remove(s, self);
            wq_del(self);
            fd_forget(s, self);
            return rc;
        }
        if (self->queued) { /* its ready-queue entry is no longer needed */
            mp_co **pp = &s->ready_head, *prev = NULL;
            while (*pp != self) {
                prev = *pp;
                pp = &(*pp)->next;
            }
            *pp = self->next;
            if (s->ready_tail == self)
                s->ready_tail = prev;
            self->queued = false;
        }
    } else {
        self->state = CO_WAITING;
        co_switch(s, self, pick_next(s));
    }
    return self->wake_rc;
}

/* ---- coroutines ---- */

static _Noreturn void co_exit(sched *s, mp_co *co)
{
    co->state = CO_DONE;
    s->live--;
    mp_co *j;
    while ((j = wq_pop(&co->joiners)) != NULL)
        wake(s, j, 0);
    if (co->detached)
        s->zombie = co; /* freed by whoever runs next, off this stack */
    co_switch(s, co, pick_next(s));
    abort(); /* a finished coroutine is never resumed */
}

static void co_entry(void *arg)
{
    mp_co *co = arg;
    sched *s = co->s;
#ifdef CO_ASAN
    const void *bottom;
    size_t size;
    __sanitizer_finish_switch_fiber(NULL, &bottom, &size);
    if (s->main.asan_bottom == NULL) {
        s->main.asan_bottom = bottom;
        s->main.asan_size = size;
    }
#endif
    after_switch(s);
    co->fn(co->arg);
    co_exit(s, co);
}

#ifndef CO_ASM
static void co_entry_uc(unsigned hi, unsigned lo)
{
    co_entry((mp_co *)(((uintptr_t)hi << 32) | (uintptr_t)lo));
}
#endif

#ifdef CO_ASM
/* Lay out a frame below top (16-byte aligned) such that switching to the
 * returned stack pointer calls entry(arg) through mp__co_trampoline, as if
 * mp__co_switch had been called from there.  (Also used by the bare-switch
 * benchmark.) */
void *mp__co_frame(char *top, void (*entry)(void *), void *arg);
void *mp__co_frame(char *top, void (*entry)(void *), void *arg)
{
#if defined(__x86_64__)
    /* mxcsr+fpucw, r15, r14, r13 = entry, r12 = arg, rbx, rbp, return
     * address: after the switch pops them, rsp = top - 16 (aligned). */
    uint64_t *sp = (uint64_t *)(top - 80);
    uint32_t mxcsr;
    uint16_t fpucw;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(fpucw));
    memset(sp, 0, 80);
    memcpy(&sp[0], &mxcsr, sizeof mxcsr);
    memcpy((char *)&sp[0] + 4, &fpucw, sizeof fpucw);
    sp[3] = (uint64_t)(uintptr_t)entry;
    sp[4] = (uint64_t)(uintptr_t)arg;
    sp[7] = (uint64_t)(uintptr_t)mp__co_trampoline;
#else
    /* x19 = arg, x20 = entry, ..., x30 = trampoline, ..., fpcr. */
    uint64_t *sp = (uint64_t *)(top - 176);
    uint64_t fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    memset(sp, 0, 176);
    sp[0] = (uint64_t)(uintptr_t)arg;
    sp[1] = (uint64_t)(uintptr_t)entry;
    sp[11] = (uint64_t)(uintptr_t)mp__co_trampoline;
    sp[20] = fpcr;
#endif
    return sp;
}
#endif

/* Lay out a new stack so that switching to it enters co_entry(co). */
static int co_prepare(mp_co *co)
{
#ifdef CO_ASM
    co->sp = mp__co_frame(co->stack + co->stack_size, co_entry, co);
#else
    if (getcontext(&co->uc) < 0)
        return -errno;
    co->uc.uc_stack.ss_sp = co->stack + mp__page_size();
    co->uc.uc_stack.ss_size = co->stack_size - (size_t)mp__page_size();
    co->uc.uc_link = NULL;
    uintptr_t p = (uintptr_t)co;
    makecontext(&co->uc, (void (*)(void))co_entry_uc, 2, (unsigned)(p >> 32), (unsigned)p);
#endif
#ifdef CO_ASAN
    co->asan_bottom = co->stack + mp__page_size();
    co->asan_size = co->stack_size - (size_t)mp__page_size();
#endif
    return 0;
}

int mp_co_spawn(mp_co **out, mp_co_fn fn, void *arg, size_t stack_size)
{
    if (out)
        *out = NULL;
    if (fn == NULL)
        return -EINVAL;
    sched *s = get_sched();
    if (s == NULL)
        return -ENOMEM;
    size_t page = (size_t)mp__page_size();
    if (stack_size == 0)
        stack_size = MP_CO_STACK_DEFAULT;
    if (stack_size < MIN_STACK)
        stack_size = MIN_STACK;
    if (stack_size > ((size_t)1 << 40))
        return -EINVAL;
    stack_size = (stack_size + page - 1) / page * page + page; /* + the guard */
    mp_co *co = calloc(1, sizeof *co);
    if (co == NULL)
        return -ENOMEM;
    int err = 0;
    co->stack = stack_get(s, stack_size, &err);
    if (co->stack == NULL) {
        free(co);
        return err ? err : -ENOMEM;
    }
    co->stack_size = stack_size;
    co->s = s;
    co->fn = fn;
    co->arg = arg;
    co->heap_idx = SIZE_MAX;
    co->wait_fd = -1;
    co->detached = out == NULL;
    if ((err = co_prepare(co)) < 0) {
        stack_put(s, co->stack, co->stack_size);
        free(co);
        return err;
    }
#ifdef CO_TSAN
    co->tsan_fiber = __tsan_create_fiber(0);
#endif
    co->state = CO_READY;
    s->live++;
    push_ready(s, co);
    if (out)
        *out = co;
    return 0;
}

static void co_destroy(sched *s, mp_co *co)
{
    stack_put(s, co->stack, co->stack_size);
#ifdef CO_TSAN
    __tsan_destroy_fiber(co->tsan_fiber);
#endif
    free(co);
}

void mp_co_free(mp_co *co)
{
    if (co == NULL || co == &co->s->main || co->s != tls_sched)
        return;
    if (co->state == CO_DONE)
        co_destroy(co->s, co);
    else
        co->detached = true;
}

bool mp_co_alive(const mp_co *co)
{
    return co != NULL && co->state != CO_DONE;
}

mp_co *mp_co_self(void)
{
    sched *s = tls_sched;
    return s && s->current != &s->main ? s->current : NULL;
}

int mp_co_join(mp_co *co, double timeout)
{
    int64_t deadline;
    int rc = mp__deadline(timeout, &deadline);
    if (co == NULL || rc < 0)
        return -EINVAL;
    sched *s = get_sched();
    if (s == NULL || co->s != s)
        return -EPERM;
    if (co == s->current)
        return -EDEADLK;
    while (co->state != CO_DONE) {
        if (deadline != MP__NO_DEADLINE && mp__now_ns() >= deadline)
            return MP_ETIMEDOUT;
        wq_add(&co->joiners, s->current);
        rc = park(s, deadline);
        if (rc < 0 && co->state != CO_DONE)
            return rc;
    }
    return 0;
}

void mp_co_yield(void)
{
    sched *s = get_sched();
    if (s == NULL)
        return;
    mp_co *self = s->current;
    if (self == &s->main) {
        if (s->ready_head == NULL)
            return;
        s->main_turn = false;
        push_ready(s, &s->main);
        run_loop(s, UNTIL_MAIN_TURN);
        s->main_turn = false;
        return;
    }
    if (s->ready_head == NULL)
        return;
    self->state = CO_READY;
    push_ready(s, self);
    co_switch(s, self, pick_next(s));
}

int mp_co_sleep(double seconds)
{
    if (isnan(seconds) || seconds < 0)
        return -EINVAL;
    int64_t deadline;
    mp__deadline(seconds, &deadline);
    sched *s = get_sched();
    if (s == NULL)
        return -ENOMEM;
    while (mp__now_ns() < deadline) {
        int rc = park(s, deadline);
        if (rc < 0 && rc != MP_ETIMEDOUT)
            return rc;
    }
    return 0;
}

int mp_co_run(void)
{
    sched *s = get_sched();
    if (s == NULL)
        return -ENOMEM;
    if (s->current != &s->main)
        return -EBUSY;
    return run_loop(s, UNTIL_ALL_DONE);
}

int mp_co_wait_fd(int fd, int events, double timeout)
{
    int64_t deadline;
    if (fd < 0 || events == 0 || (events & ~(MP_READABLE | MP_WRITABLE)) ||
        mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    sched *s = get_sched();
    if (s == NULL)
        return -ENOMEM;
    if (s->ep < 0) {
        s->ep = mp__poller_new();
        if (s->ep < 0) {
            int rc = s->ep;
            s->ep = -1;
            return rc;
        }
    }
    if ((size_t)fd >= s->nfds) {
        size_t n = s->nfds ? s->nfds : 64;
        while (n <= (size_t)fd)
            n *= 2;
        fd_slot *f = realloc(s->fds, n * sizeof *f);
        if (f == NULL)
            return -ENOMEM;
        memset(f + s->nfds, 0, (n - s->nfds) * sizeof *f);
        s->fds = f;
        s->nfds = n;
    }
    fd_slot *slot = &s->fds[fd];
    mp_co *self = s->current;
    if (((events & MP_READABLE) && slot->rd) || ((events & MP_WRITABLE) && slot->wr))
        return -EBUSY;
    if (events & MP_READABLE)
        slot->rd = self;
    if (events & MP_WRITABLE)
        slot->wr = self;
    unsigned ev = (slot->rd ? MP__POLL_IN : 0) | (slot->wr ? MP__POLL_OUT : 0);
    int rc = mp__poller_arm(s->ep, fd, ev, (uint64_t)fd);
    if (rc < 0) {
        if (slot->rd == self)
            slot->rd = NULL;
        if (slot->wr == self)
            slot->wr = NULL;
        return rc;
    }
    self->wait_fd = fd;
    self->ready_events = 0;
    s->fd_waiters++;
    rc = park(s, deadline);
    fd_forget(s, self);
    if (rc < 0)
        return rc;
    return self->ready_events;
}

/* ---- socket helpers ---- */

int mp_co_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

static double left_of(int64_t deadline)
{
    if (deadline == MP__NO_DEADLINE)
        return MP_FOREVER;
    double left = (double)(deadline - mp__now_ns()) / 1e9;
    return left > 0 ? left : 0;
}

/* A non-blocking call on fd failed with errno: 0 once it is worth trying
 * again (interrupted, or fd became ready), or the error to return. */
static int await_retry(int fd, int events, int64_t deadline)
{
    if (errno == EINTR)
        return 0;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
        return -errno;
    if (deadline != MP__NO_DEADLINE && mp__now_ns() >= deadline)
        return MP_ETIMEDOUT;
    int rc = mp_co_wait_fd(fd, events, left_of(deadline));
    return rc < 0 ? rc : 0;
}

int mp_co_accept(int lfd, struct sockaddr *addr, socklen_t *addrlen, double timeout)
{
    int64_t deadline;
    if (mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    for (;;) {
        int fd = accept4(lfd, addr, addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0)
            return fd;
        int rc = await_retry(lfd, MP_READABLE, deadline);
        if (rc < 0)
            return rc;
    }
}

int mp_co_connect(int fd, const struct sockaddr *addr, socklen_t addrlen, double timeout)
{
    int64_t deadline;
    if (mp__deadline(timeout, &deadline) < 0 || addr == NULL)
        return -EINVAL;
    int rc = mp_co_nonblock(fd);
    if (rc < 0)
        return rc;
    while (connect(fd, addr, addrlen) < 0) {
        if (errno == EINTR)
            continue;
        if (errno != EINPROGRESS)
            return -errno;
        rc = mp_co_wait_fd(fd, MP_WRITABLE, left_of(deadline));
        if (rc < 0)
            return rc;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            return -errno;
        return -err;
    }
    return 0;
}

ssize_t mp_co_read(int fd, void *buf, size_t n, double timeout)
{
    int64_t deadline;
    if (mp__deadline(timeout, &deadline) < 0 || (buf == NULL && n > 0))
        return -EINVAL;
    for (;;) {
        ssize_t r = read(fd, buf, n);
        if (r >= 0)
            return r;
        int rc = await_retry(fd, MP_READABLE, deadline);
        if (rc < 0)
            return rc;
    }
}

ssize_t mp_co_write(int fd, const void *buf, size_t n, double timeout)
{
    int64_t deadline;
    if (mp__deadline(timeout, &deadline) < 0 || (buf == NULL && n > 0))
        return -EINVAL;
    size_t done = 0;
    while (done < n) {
        ssize_t w = send(fd, (const char *)buf + done, n - done, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK)
            w = write(fd, (const char *)buf + done, n - done);
        if (w >= 0) {
            done += (size_t)w;
            continue;
        }
        int rc = await_retry(fd, MP_WRITABLE, deadline);
        if (rc < 0)
            return rc;
    }
    return (ssize_t)n;
}

/* ---- channels ---- */

struct mp_chan {
    sched *s;
    size_t esz, cap;
    char *buf;
    size_t head, count;
    bool closed;
    waitq senders, receivers;
};

int mp_chan_new(mp_chan **out, size_t elem_size, size_t capacity)
{
    if (out == NULL || elem_size == 0 || (capacity && elem_size > SIZE_MAX / capacity))
        return -EINVAL;
    *out = NULL;
    sched *s = get_sched();
    if (s == NULL)
        return -ENOMEM;
    mp_chan *ch = calloc(1, sizeof *ch);
    if (ch == NULL)
        return -ENOMEM;
    if (capacity && (ch->buf = malloc(capacity * elem_size)) == NULL) {
        free(ch);
        return -ENOMEM;
    }
    ch->s = s;
    ch->esz = elem_size;
    ch->cap = capacity;
    *out = ch;
    return 0;
}

int mp_chan_send(mp_chan *ch, const void *elem, double timeout)
{
    int64_t deadline;
    if (ch == NULL || elem == NULL || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    sched *s = ch->s;
    if (s != tls_sched)
        return -EPERM;
    if (ch->closed)
        return MP_ECLOSED;
    mp_co *r = wq_pop(&ch->receivers);
    if (r) {
        memcpy(r->xfer, elem, ch->esz);
        r->xfer_rc = 0;
        wake(s, r, 0);
        return 0;
    }
    if (ch->count < ch->cap) {
        memcpy(ch->buf + ((ch->head + ch->count) % ch->cap) * ch->esz, elem, ch->esz);
        ch->count++;
        return 0;
    }
    if (deadline != MP__NO_DEADLINE && mp__now_ns() >= deadline)
        return MP_ETIMEDOUT;
    mp_co *self = s->current;
    self->xfer = (void *)elem;
    self->xfer_rc = MP_ETIMEDOUT;
    wq_add(&ch->senders, self);
    int rc = park(s, deadline);
    return rc < 0 ? rc : self->xfer_rc;
}

int mp_chan_recv(mp_chan *ch, void *elem, double timeout)
{
    int64_t deadline;
    if (ch == NULL || elem == NULL || mp__deadline(timeout, &deadline) < 0)
        return -EINVAL;
    sched *s = ch->s;
    if (s != tls_sched)
        return -EPERM;
    if (ch->count > 0) {
        memcpy(elem, ch->buf + ch->head * ch->esz, ch->esz);
        ch->head = (ch->head + 1) % ch->cap;
        ch->count--;
        mp_co *sd = wq_pop(&ch->senders); /* room now: take a waiting sender's */
        if (sd) {
            memcpy(ch->buf + ((ch->head + ch->count) % ch->cap) * ch->esz, sd->xfer, ch->esz);
            ch->count++;
            sd->xfer_rc = 0;
            wake(s, sd, 0);
        }
        return 0;
    }
    mp_co *sd = wq_pop(&ch->senders);
    if (sd) { /* rendezvous */
        memcpy(elem, sd->xfer, ch->esz);
        sd->xfer_rc = 0;
        wake(s, sd, 0);
        return 0;
    }
    if (ch->closed)
        return MP_ECLOSED;
    if (deadline != MP__NO_DEADLINE && mp__now_ns() >= deadline)
        return MP_ETIMEDOUT;
    mp_co *self = s->current;
    self->xfer = elem;
    self->xfer_rc = MP_ETIMEDOUT;
    wq_add(&ch->receivers, self);
    int rc = park(s, deadline);
    return rc < 0 ? rc : self->xfer_rc;
}

int mp_chan_close(mp_chan *ch)
{
    if (ch == NULL)
        return -EINVAL;
    if (ch->s != tls_sched)
        return -EPERM;
    ch->closed = true;
    mp_co *co;
    while ((co = wq_pop(&ch->senders)) != NULL) {
        co->xfer_rc = MP_ECLOSED;
        wake(ch->s, co, 0);
    }
    while ((co = wq_pop(&ch->receivers)) != NULL) {
        co->xfer_rc = MP_ECLOSED;
        wake(ch->s, co, 0);
    }
    return 0;
}

size_t mp_chan_len(const mp_chan *ch)
{
    return ch ? ch->count : 0;
}

void mp_chan_free(mp_chan *ch)
{
    if (ch == NULL || ch->senders.head || ch->receivers.head)
        return;
    free(ch->buf);
    free(ch);
}
