/* Tasks shared by the pool tests: one task function whose behaviour the
 * argument chooses, so that every fault can be mixed into one load. */
#ifndef TEST_POOL_COMMON_H
#define TEST_POOL_COMMON_H

#include <mproc.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    OP_SQUARE,   /* result: value * value */
    OP_SEGV,
    OP_ABORT,
    OP_EXIT,     /* _exit(value) */
    OP_HANG,     /* never returns */
    OP_FAIL,     /* returns value */
    OP_WAIT,     /* sets started (if any), waits for ev, returns value */
    OP_PID,      /* result: the worker's pid */
    OP_PARK,     /* stores its pid in *slot, sets ev, never returns */
    OP_ECHO,     /* result: the argument's payload, as is */
    OP_INIT,     /* result: what the initializer left */
    OP_INDEX,    /* result: mp_pool_worker_index() */
    OP_PPID,     /* result: the worker's parent (the fork server) */
    OP_FDS       /* writes its index to each passed fd; result: their number */
};

typedef struct {
    int op;
    int value;
    mp_event *ev;
    mp_event *started;
    _Atomic int *slot;
    unsigned char payload[];
} task_arg;

static int init_mark;

static inline void test_initializer(void *arg) { init_mark = *(int *)arg; }

static inline int run_op(const void *argp, size_t len, mp_buf *res)
{
    const task_arg *a = argp;
    int v;
    switch (a->op) {
    case OP_SQUARE:
        v = a->value * a->value;
        return mp_buf_append(res, &v, sizeof v);
    case OP_SEGV:
        raise(SIGSEGV);
        return 0;
    case OP_ABORT:
        abort();
    case OP_EXIT:
        _exit(a->value);
    case OP_HANG:
        for (;;)
            pause();
    case OP_FAIL:
        return a->value;
    case OP_WAIT:
        if (a->started)
            mp_event_set(a->started);
        mp_event_wait(a->ev, MP_FOREVER);
        return a->value;
    case OP_PID:
        v = (int)getpid();
        return mp_buf_append(res, &v, sizeof v);
    case OP_PARK:
        atomic_store(a->slot, (int)getpid());
        mp_event_set(a->ev);
        for (;;)
            pause();
    case OP_ECHO:
        return mp_buf_append(res, a->payload, len - sizeof *a);
    case OP_INIT:
        return mp_buf_append(res, &init_mark, sizeof init_mark);
    case OP_INDEX:
        v = mp_pool_worker_index();
        return mp_buf_append(res, &v, sizeof v);
    case OP_PPID:
        v = (int)getppid();
        return mp_buf_append(res, &v, sizeof v);
    case OP_FDS:
        v = (int)mp_task_nfds();
        for (int i = 0; i < v; i++) {
            char c = (char)('a' + i);
            if (write(mp_task_fd((unsigned)i), &c, 1) != 1)
                return 1;
        }
        if (mp_task_fd((unsigned)v) != -EBADF)
            return 2;
        return mp_buf_append(res, &v, sizeof v);
    }
    return -1;
}

static inline int submit(mp_pool *p, int op, int value, mp_event *ev, const mp_task_opts *o,
                         mp_result **r)
{
    task_arg a = {.op = op, .value = value, .ev = ev};
    return mp_pool_apply_async(p, run_op, &a, sizeof a, o, r);
}

/* Submit an OP_WAIT task and wait until a worker runs it. */
static inline int submit_running(mp_pool *p, mp_event *ev, mp_result **r)
{
    mp_event *started;
    int rc = mp_event_new(&started);
    if (rc < 0)
        return rc;
    task_arg a = {.op = OP_WAIT, .ev = ev, .started = started};
    rc = mp_pool_apply_async(p, run_op, &a, sizeof a, NULL, r);
    if (rc == 0)
        rc = mp_event_wait(started, 30);
    mp_event_free(started);
    return rc;
}

/* Map items: 2*x + 1, with special inputs that fault. */
enum { ITEM_SEGV = -1, ITEM_HANG = -2, ITEM_FAIL = -3, ITEM_EXIT = -4 };

static inline int map_item(const void *in, void *out)
{
    int x = *(const int *)in;
    switch (x) {
    case ITEM_SEGV:
        raise(SIGSEGV);
        break;
    case ITEM_HANG:
        for (;;)
            pause();
    case ITEM_FAIL:
        return 9;
    case ITEM_EXIT:
        _exit(4);
    }
    *(int *)out = 2 * x + 1;
    return 0;
}


/* Pass the write ends of n pipes to an OP_FDS task; check what arrives. */
static inline void check_fd_passing(mp_pool *p, int n)
{
    int rd[MP_TASK_MAX_FDS], wr[MP_TASK_MAX_FDS];
    for (int i = 0; i < n; i++) {
        int f[2];
        cr_assert_eq(pipe(f), 0);
        rd[i] = f[0];
        wr[i] = f[1];
    }
    mp_result *r;
    task_arg a = {.op = OP_FDS};
    mp_expect_rc(mp_pool_apply_async(p, run_op, &a, sizeof a,
                                     &(mp_task_opts){.fds = wr, .nfds = (unsigned)n}, &r), 0);
    for (int i = 0; i < n; i++)
        close(wr[i]); /* the pool has its own copies */
    const void *v;
    mp_expect_rc(mp_result_get(r, MP_TMO(10), &v, NULL), 0);
    cr_assert_eq(*(const int *)v, n);
    mp_result_free(r);
    for (int i = 0; i < n; i++) {
        char c = 0;
        cr_assert_eq(read(rd[i], &c, 1), 1);
        cr_assert_eq(c, 'a' + i);
        close(rd[i]);
    }
}

#endif
