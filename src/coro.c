/* Coroutines: one scheduler per thread, stackful coroutines switched by
 * src/os/<arch>/co_switch.S, timers in a binary heap, descriptor waits in
 * a one-shot epoll set (coro_fd.c), and channels (coro_chan.c).  Both
 * call into this file; it calls coro_fd.c only through the two hooks that
 * file sets in the scheduler on its first wait (coro_int.h).
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
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coro_int.h"
#include "mproc/error.h"
#include "os/os.h"

#ifdef CO_ASM
void mp__co_switch(void **save_sp, void *load_sp);
void mp__co_switch_ret(void **save_sp, void *load_sp);
/* (src/os/<arch>/co_frame.c) */
void *mp__co_frame(char *top, void (*entry)(void *), void *arg);
#endif

#define MIN_STACK ((size_t)16 * 1024)

_Thread_local sched *mp__co_tls __attribute__((tls_model("initial-exec")));
static pthread_key_t sched_key;
static pthread_once_t sched_once = PTHREAD_ONCE_INIT;

/* ---- records and their stacks ---- */

/* A coroutine's record with a stack of the default size is kept when it
 * ends (up to STACK_CACHE_MAX of them), its stack still mapped, and the
 * next spawn takes both: no malloc, no mmap. */
static mp_co *co_alloc(sched *s, size_t stack_size, int *err)
{
    mp_co *co = s->co_cache;
    if (co != NULL && stack_size == s->default_stack) {
        s->co_cache = co->next;
        s->ncache--;
        /* Field by field, what spawn and co_prepare do not set (a memset
         * of the record was half of a spawn). */
        co->detached = false;
        co->next = NULL;
        co->queued = false;
        co->woken = false;
        co->wake_rc = 0;
        co->deadline = 0;
        co->ready_events = 0;
        co->w = (waiter){0};
        co->waits = NULL;
        co->nwaits = 0;
        co->fired = NULL;
        co->joiners = (waitq){0};
#ifdef CO_TSAN
        co->tsan_fiber = NULL;
#endif
#ifdef CO_ASAN
        /* Frames of the coroutine that ended on it may still be poisoned. */
        __asan_unpoison_memory_region(co->stack, stack_size);
#endif
        return co;
    }
    co = calloc(1, sizeof *co);
    if (co == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    co->stack = mp__stack_map(stack_size, err);
    if (co->stack == NULL) {
        free(co);
        return NULL;
    }
#ifdef CO_ASAN
    /* The mapping may reuse the addresses of a stack unmapped with frames
     * still poisoned on it (a coroutine's last frames never return). */
    __asan_unpoison_memory_region(co->stack, stack_size);
#endif
    co->stack_size = stack_size;
    return co;
}

static void co_release(sched *s, mp_co *co)
{
#ifdef CO_TSAN
    if (co->tsan_fiber)
        __tsan_destroy_fiber(co->tsan_fiber);
#endif
    if (co->stack_size == s->default_stack && s->ncache < STACK_CACHE_MAX) {
        co->next = s->co_cache;
        s->co_cache = co;
        s->ncache++;
        return;
    }
    mp__stack_unmap(co->stack, co->stack_size);
    free(co);
}

/* ---- the scheduler of this thread ---- */

static void sched_destroy(void *arg)
{
    sched *s = arg;
    if (s == NULL)
        return;
    /* Coroutines still parked when the thread ends are abandoned. */
    while (s->co_cache) {
        mp_co *co = s->co_cache;
        s->co_cache = co->next;
        mp__stack_unmap(co->stack, co->stack_size);
        free(co);
    }
    if (s->ep >= 0)
        close(s->ep);
    free(s->heap);
    free(s->fds);
    free(s);
}

static void make_key(void) { pthread_key_create(&sched_key, sched_destroy); }

/* Coroutines do not cross fork: a child starts with no scheduler (its
 * copy of the parent's is left alone). */
static void sched_forget_in_child(void) { mp__co_tls = NULL; }

__attribute__((constructor)) static void coro_register_fork_hooks(void)
{
    static const mp__fork_hooks hooks = {.rank = MP__RANK_USER, .child = sched_forget_in_child};
    mp__fork_hooks_add(&hooks);
}

sched *mp__co_sched_create(void)
{
    sched *s;
    pthread_once(&sched_once, make_key);
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->ep = -1;
    s->default_stack = MP_CO_STACK_DEFAULT + (size_t)mp__page_size();
    s->main.s = s;
    s->main.state = CO_RUNNING;
    s->main.heap_idx = SIZE_MAX;
    s->main.wait_fd = -1;
#ifdef CO_TSAN
    s->main.tsan_fiber = __tsan_get_current_fiber();
#endif
    s->current = &s->main;
    mp__co_tls = s;
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

static void heap_take_out(sched *s, mp_co *co)
{
    size_t i = co->heap_idx;
    co->heap_idx = SIZE_MAX;
    if (i != --s->nheap) {
        s->heap[i] = s->heap[s->nheap];
        s->heap[i]->heap_idx = i;
        heap_down(s, i);
        heap_up(s, i);
    }
}

/* Take co off the timer heap if it is on it (most waits have no time
 * limit: no call then). */
static inline void heap_remove(sched *s, mp_co *co)
{
    if (co->heap_idx != SIZE_MAX)
        heap_take_out(s, co);
}

/* ---- wait lists ---- */

void mp__co_wq_add(waitq *q, waiter *w)
{
    w->q = q;
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
}

static void wq_del(waiter *w)
{
    waitq *q = w->q;
    if (q == NULL)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->q = NULL;
    w->next = w->prev = NULL;
}

waiter *mp__co_wq_pop(waitq *q)
{
    waiter *w = q->head;
    if (w)
        wq_del(w);
    return w;
}

void mp__co_wait_on(mp_co *co, waitq *q)
{
    co->w.co = co;
    co->waits = &co->w;
    co->nwaits = 1;
    co->fired = NULL;
    mp__co_wq_add(q, &co->w);
}

void mp__co_unwait(mp_co *co)
{
    for (unsigned i = 0; i < co->nwaits; i++)
        wq_del(&co->waits[i]);
    co->nwaits = 0;
}

void mp__co_fire(sched *s, waiter *w, int rc)
{
    w->rc = rc;
    w->co->fired = w;
    mp__co_wake(s, w->co, 0);
}

/* ---- waking and parking ---- */

void mp__co_wake(sched *s, mp_co *co, int rc)
{
    if (co->woken)
        return;
    co->woken = true;
    co->wake_rc = rc;
    heap_remove(s, co);
    mp__co_unwait(co);
    if (co->wait_fd >= 0)
        s->fd_forget(s, co);
    if (co->state == CO_WAITING)
        co->state = CO_READY;
    push_ready(s, co);
}

static void after_switch(sched *s)
{
    mp_co *z = s->zombie;
    if (z && z != s->current) {
        s->zombie = NULL;
        co_release(s, z);
    }
}

/* `to` runs from now on (for the sanitizers too). */
static inline void hand_over(sched *s, mp_co *from, mp_co *to)
{
    (void)from;
    s->current = to;
    to->state = CO_RUNNING;
#ifdef CO_ASAN
    __sanitizer_start_switch_fiber(from->state == CO_DONE ? NULL : &from->asan_fake,
                                   to->asan_bottom, to->asan_size);
#endif
#ifdef CO_TSAN
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
}

static void co_switch(sched *s, mp_co *from, mp_co *to)
{
    if (from == to)
        return;
    hand_over(s, from, to);
#ifdef CO_EXIT_BY_RETURN
    if (to->fresh) {
        to->fresh = false;
        mp__co_switch(&from->sp, to->sp); /* (a jump: see coro_int.h) */
    } else {
        mp__co_switch_ret(&from->sp, to->sp);
    }
#elif defined(CO_ASM)
    mp__co_switch_ret(&from->sp, to->sp); /* (why `ret`: see co_switch.S) */
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

/* Nothing is ready: wait for descriptors (coro_fd.c) or sleep, until
 * deadline; then wake the coroutines whose time is up. */
static int idle(sched *s, int64_t deadline)
{
    if (s->fd_waiters > 0) {
        int rc = s->fd_poll(s, deadline);
        if (rc < 0)
            return rc;
    } else if (deadline > mp__now_ns()) {
        mp__sleep_until(deadline);
    }
    int64_t now = mp__now_ns();
    while (s->nheap && s->heap[0]->deadline <= now)
        mp__co_wake(s, s->heap[0], MP_ETIMEDOUT);
    return 0;
}

typedef enum { UNTIL_ALL_DONE, UNTIL_MAIN_WOKEN, UNTIL_MAIN_TURN } run_mode;

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
            return -EDEADLK; /* nothing left that could mp__co_wake anyone */
        int rc = idle(s, deadline);
        if (rc < 0)
            return rc;
    }
}

/* Block the current context until woken or deadline: 0 or the mp__co_wake code
 * (MP_ETIMEDOUT), or -EDEADLK when main would wait forever. */
int mp__co_park(sched *s, int64_t deadline)
{
    mp_co *self = s->current;
    self->woken = false;
    self->wake_rc = 0;
    if (deadline != MP__NO_DEADLINE && heap_push(s, self, deadline) < 0) {
        mp__co_unwait(self);
        if (self->wait_fd >= 0)
            s->fd_forget(s, self);
        return -ENOMEM;
    }
    if (self == &s->main) {
        int rc = run_loop(s, UNTIL_MAIN_WOKEN);
        if (rc < 0 && !self->woken) {
            heap_remove(s, self);
            mp__co_unwait(self);
            if (self->wait_fd >= 0)
                s->fd_forget(s, self);
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

/* co has ended: wake its joiners; the next to run (never co). */
static mp_co *co_end(sched *s, mp_co *co)
{
    co->state = CO_DONE;
    s->live--;
    waiter *j;
    while ((j = mp__co_wq_pop(&co->joiners)) != NULL)
        mp__co_wake(s, j->co, 0);
    if (co->detached)
        s->zombie = co; /* freed by whoever runs next, off this stack */
    return pick_next(s);
}

#ifdef CO_EXIT_BY_RETURN
/* The entry returns the stack to switch to; the trampoline switches. */
static void *co_entry(void *arg)
#else
static void co_entry(void *arg)
#endif
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
    mp_co *to = co_end(s, co);
#ifdef CO_EXIT_BY_RETURN
    hand_over(s, co, to);
    if (to->fresh)
        to->fresh = false; /* (its first frame's return goes to the trampoline) */
    return to->sp;
#else
    co_switch(s, co, to);
    abort(); /* a finished coroutine is never resumed */
#endif
}

#ifndef CO_ASM
static void co_entry_uc(unsigned hi, unsigned lo)
{
    co_entry((mp_co *)(((uintptr_t)hi << 32) | (uintptr_t)lo));
}
#endif

/* Lay out a new stack so that switching to it enters co_entry(co). */
static int co_prepare(mp_co *co)
{
#ifdef CO_ASM
    co->sp = mp__co_frame(co->stack + co->stack_size, (void (*)(void *))(void (*)(void))co_entry,
                          co);
    co->fresh = true;
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
    sched *s = mp__co_sched();
    if (s == NULL)
        return -ENOMEM;
    if (stack_size == 0) {
        stack_size = s->default_stack; /* (with its guard page) */
    } else {
        size_t page = (size_t)mp__page_size();
        if (stack_size < MIN_STACK)
            stack_size = MIN_STACK;
        if (stack_size > ((size_t)1 << 40))
            return -EINVAL;
        stack_size = (stack_size + page - 1) / page * page + page; /* + the guard */
    }
    int err = -ENOMEM;
    mp_co *co = co_alloc(s, stack_size, &err);
    if (co == NULL)
        return err;
    co->s = s;
    co->fn = fn;
    co->arg = arg;
    co->heap_idx = SIZE_MAX;
    co->wait_fd = -1;
    co->detached = out == NULL;
    if ((err = co_prepare(co)) < 0) {
        co_release(s, co);
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

void mp_co_free(mp_co *co)
{
    if (co == NULL || co == &co->s->main || co->s != mp__co_tls)
        return;
    if (co->state == CO_DONE)
        co_release(co->s, co);
    else
        co->detached = true;
}

bool mp_co_alive(const mp_co *co)
{
    return co != NULL && co->state != CO_DONE;
}

mp_co *mp_co_self(void)
{
    sched *s = mp__co_tls;
    return s && s->current != &s->main ? s->current : NULL;
}

int mp_co_join(mp_co *co, double timeout)
{
    int64_t deadline = MP__NO_DEADLINE;
    int rc = timeout == MP_FOREVER ? 0 : mp__deadline(timeout, &deadline);
    if (co == NULL || rc < 0)
        return -EINVAL;
    sched *s = mp__co_sched();
    if (s == NULL || co->s != s)
        return -EPERM;
    if (co == s->current)
        return -EDEADLK;
    while (co->state != CO_DONE) {
        if (deadline != MP__NO_DEADLINE && mp__now_ns() >= deadline)
            return MP_ETIMEDOUT;
        mp__co_wait_on(s->current, &co->joiners);
        rc = mp__co_park(s, deadline);
        if (rc < 0 && co->state != CO_DONE)
            return rc;
    }
    return 0;
}

void mp_co_yield(void)
{
    sched *s = mp__co_sched();
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
    sched *s = mp__co_sched();
    if (s == NULL)
        return -ENOMEM;
    while (mp__now_ns() < deadline) {
        int rc = mp__co_park(s, deadline);
        if (rc < 0 && rc != MP_ETIMEDOUT)
            return rc;
    }
    return 0;
}

int mp_co_run(void)
{
    sched *s = mp__co_sched();
    if (s == NULL)
        return -ENOMEM;
    if (s->current != &s->main)
        return -EBUSY;
    return run_loop(s, UNTIL_ALL_DONE);
}

