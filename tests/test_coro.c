/* Coroutines: scheduling order, join/sleep/yield, timeouts that cancel a
 * wait, channels (buffered, rendezvous, close), descriptor waits and the
 * socket helpers, 100,000 live coroutines, guard pages, deadlock
 * detection, one scheduler per thread, bad input. */
// labels: unit tsan
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <mproc.h>
#include <mproc/coro.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "mp_test.h"

/* ---- order ---- */

static char order_log[64];
static int order_len;

static void stepper(void *arg)
{
    char c = *(const char *)arg;
    for (int i = 0; i < 3; i++) {
        order_log[order_len++] = c;
        mp_co_yield();
    }
}

Test(coro, yield_interleaves_in_spawn_order, .timeout = MP_TMO(10))
{
    mp_co *co[3];
    static const char names[3] = {'a', 'b', 'c'};
    for (int i = 0; i < 3; i++)
        mp_expect_rc(mp_co_spawn(&co[i], stepper, (void *)&names[i], 0), 0);
    cr_assert_eq(order_len, 0, "nothing runs before the scheduler");
    cr_assert_null(mp_co_self());
    mp_expect_rc(mp_co_run(), 0);
    order_log[order_len] = '\0';
    cr_assert_str_eq(order_log, "abcabcabc");
    for (int i = 0; i < 3; i++) {
        cr_assert_not(mp_co_alive(co[i]));
        mp_expect_rc(mp_co_join(co[i], 0), 0);
        mp_co_free(co[i]);
    }
    mp_expect_rc(mp_co_run(), 0); /* nothing left */
}

/* ---- join, sleep ---- */

static void sleeper(void *arg)
{
    mp_co_sleep(*(double *)arg);
}

static void joiner(void *arg)
{
    mp_co *target = arg;
    int *rc = malloc(2 * sizeof *rc);
    rc[0] = mp_co_join(target, 0.02);
    rc[1] = mp_co_join(target, MP_FOREVER);
    cr_assert_eq(rc[0], MP_ETIMEDOUT);
    cr_assert_eq(rc[1], 0);
    cr_assert_not(mp_co_alive(target));
    free(rc);
}

Test(coro, join_and_sleep, .timeout = MP_TMO(10))
{
    double d = 0.1;
    mp_co *s, *j;
    mp_expect_rc(mp_co_spawn(&s, sleeper, &d, 0), 0);
    mp_expect_rc(mp_co_spawn(&j, joiner, s, 0), 0);
    double t0 = mp_test_now();
    mp_expect_rc(mp_co_join(s, 0.01), MP_ETIMEDOUT); /* from outside: runs the scheduler */
    cr_assert(mp_co_alive(s));
    mp_expect_rc(mp_co_join(j, MP_FOREVER), 0);
    cr_assert_geq(mp_test_now() - t0, 0.1);
    mp_co_free(s);
    mp_co_free(j);
    /* Sleep outside a coroutine runs the others meanwhile. */
    mp_expect_rc(mp_co_spawn(NULL, sleeper, &d, 0), 0);
    t0 = mp_test_now();
    mp_expect_rc(mp_co_sleep(0.02), 0);
    cr_assert_geq(mp_test_now() - t0, 0.02);
    mp_expect_rc(mp_co_run(), 0);
    mp_expect_rc(mp_co_sleep(-1), -EINVAL);
    mp_expect_rc(mp_co_sleep(NAN), -EINVAL);
}

static void self_join(void *arg)
{
    *(int *)arg = mp_co_join(mp_co_self(), 0);
}

Test(coro, self_join_is_a_deadlock, .timeout = MP_TMO(10))
{
    int rc = 0;
    mp_expect_rc(mp_co_spawn(NULL, self_join, &rc, 0), 0);
    mp_expect_rc(mp_co_run(), 0);
    cr_assert_eq(rc, -EDEADLK);
}

/* ---- channels ---- */

typedef struct {
    mp_chan *ch;
    int n;
    int got[64];
    int ngot;
    int end_rc;
} chan_test;

static void producer(void *arg)
{
    chan_test *t = arg;
    for (int i = 0; i < t->n; i++)
        cr_assert_eq(mp_chan_send(t->ch, &i, MP_FOREVER), 0);
    mp_chan_close(t->ch);
}

static void consumer(void *arg)
{
    chan_test *t = arg;
    int v, rc;
    while ((rc = mp_chan_recv(t->ch, &v, MP_FOREVER)) == 0)
        t->got[t->ngot++] = v;
    t->end_rc = rc;
}

static void run_chan(size_t cap)
{
    chan_test t = {.n = 40};
    mp_expect_rc(mp_chan_new(&t.ch, sizeof(int), cap), 0);
    mp_expect_rc(mp_co_spawn(NULL, consumer, &t, 0), 0);
    mp_expect_rc(mp_co_spawn(NULL, producer, &t, 0), 0);
    mp_expect_rc(mp_co_run(), 0);
    cr_assert_eq(t.ngot, 40, "cap %zu", cap);
    for (int i = 0; i < 40; i++)
        cr_assert_eq(t.got[i], i);
    cr_assert_eq(t.end_rc, MP_ECLOSED);
    int v = 1;
    mp_expect_rc(mp_chan_send(t.ch, &v, 0), MP_ECLOSED);
    mp_chan_free(t.ch);
}

Test(coro, channels_buffered_and_rendezvous, .timeout = MP_TMO(10))
{
    run_chan(0);
    run_chan(1);
    run_chan(7);
    run_chan(100);
    run_chan(MP_CHAN_UNBOUNDED);
}

/* asyncio.Queue(): sends never wait, and the elements come out in order
 * across the ring's growth, also when it had wrapped around. */
Test(coro, unbounded_channel_never_blocks_a_sender, .timeout = MP_TMO(10))
{
    mp_chan *ch;
    mp_expect_rc(mp_chan_new(&ch, sizeof(int), MP_CHAN_UNBOUNDED), 0);
    int v, next_in = 0, next_out = 0;
    for (int round = 0; round < 12; round++) {
        int in = 3 << round, out = (3 << round) / 2 + 1; /* grows while wrapped */
        for (int i = 0; i < in; i++, next_in++)
            mp_expect_rc(mp_chan_send(ch, &next_in, 0), 0);
        for (int i = 0; i < out; i++, next_out++) {
            mp_expect_rc(mp_chan_recv(ch, &v, 0), 0);
            cr_assert_eq(v, next_out);
        }
        cr_assert_eq(mp_chan_len(ch), (size_t)(next_in - next_out));
    }
    mp_expect_rc(mp_chan_close(ch), 0);
    while (next_out < next_in) {
        mp_expect_rc(mp_chan_recv(ch, &v, 0), 0);
        cr_assert_eq(v, next_out++);
    }
    mp_expect_rc(mp_chan_recv(ch, &v, 0), MP_ECLOSED);
    mp_chan_free(ch);
    /* A huge element size cannot overflow the ring's size. */
    mp_expect_rc(mp_chan_new(&ch, SIZE_MAX / 8, MP_CHAN_UNBOUNDED), -EINVAL);
}

Test(coro, channel_close_drains_then_reports_closed, .timeout = MP_TMO(10))
{
    mp_chan *ch;
    mp_expect_rc(mp_chan_new(&ch, sizeof(int), 4), 0);
    for (int i = 0; i < 3; i++)
        mp_expect_rc(mp_chan_send(ch, &i, 0), 0);
    cr_assert_eq(mp_chan_len(ch), 3);
    mp_expect_rc(mp_chan_close(ch), 0);
    int v;
    for (int i = 0; i < 3; i++) {
        mp_expect_rc(mp_chan_recv(ch, &v, 0), 0);
        cr_assert_eq(v, i);
    }
    mp_expect_rc(mp_chan_recv(ch, &v, 0), MP_ECLOSED);
    mp_chan_free(ch);
}

static void timed_recv(void *arg)
{
    chan_test *t = arg;
    int v;
    double t0 = mp_test_now();
    t->end_rc = mp_chan_recv(t->ch, &v, 0.05);
    cr_assert_geq(mp_test_now() - t0, 0.05);
}

static void counter(void *arg)
{
    int *n = arg;
    for (int i = 0; i < 10; i++) {
        (*n)++;
        mp_co_sleep(0.001);
    }
}

Test(coro, timeouts_cancel_waits_and_others_go_on, .timeout = MP_TMO(10))
{
    chan_test t = {0};
    int n = 0;
    mp_expect_rc(mp_chan_new(&t.ch, sizeof(int), 0), 0);
    mp_expect_rc(mp_co_spawn(NULL, timed_recv, &t, 0), 0);
    mp_expect_rc(mp_co_spawn(NULL, counter, &n, 0), 0);
    mp_expect_rc(mp_co_run(), 0);
    cr_assert_eq(t.end_rc, MP_ETIMEDOUT);
    cr_assert_eq(n, 10);
    /* The timed-out receiver is off the channel: a send finds nobody. */
    int v = 5;
    mp_expect_rc(mp_chan_send(t.ch, &v, 0), MP_ETIMEDOUT);
    mp_expect_rc(mp_chan_send(t.ch, &v, 0.01), MP_ETIMEDOUT);
    /* Blocking with nothing that could ever answer: a deadlock, reported. */
    mp_expect_rc(mp_chan_recv(t.ch, &v, MP_FOREVER), -EDEADLK);
    mp_chan_free(t.ch);
}

static void stuck(void *arg)
{
    int v;
    mp_chan_recv(arg, &v, MP_FOREVER);
}

Test(coro, run_reports_a_deadlock, .timeout = MP_TMO(10))
{
    mp_chan *ch;
    mp_expect_rc(mp_chan_new(&ch, sizeof(int), 0), 0);
    mp_expect_rc(mp_co_spawn(NULL, stuck, ch, 0), 0);
    mp_expect_rc(mp_co_run(), -EDEADLK);
    mp_expect_rc(mp_chan_close(ch), 0); /* frees the stuck one */
    mp_expect_rc(mp_co_run(), 0);
    mp_chan_free(ch);
}

/* ---- descriptors ---- */

typedef struct {
    int fd;
    int rc;
    char buf[32];
} io_test;

static void reader(void *arg)
{
    io_test *t = arg;
    t->rc = mp_co_wait_fd(t->fd, MP_READABLE, 0.02);
    cr_assert_eq(t->rc, MP_ETIMEDOUT);
    t->rc = (int)mp_co_read(t->fd, t->buf, sizeof t->buf, MP_TMO(5));
}

static void writer(void *arg)
{
    io_test *t = arg;
    mp_co_sleep(0.05);
    t->rc = (int)mp_co_write(t->fd, "hello", 5, MP_TMO(5));
}

Test(coro, wait_fd_read_write, .timeout = MP_TMO(10))
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    mp_expect_rc(mp_co_nonblock(sv[0]), 0);
    mp_expect_rc(mp_co_nonblock(sv[1]), 0);
    io_test r = {.fd = sv[0]}, w = {.fd = sv[1]};
    mp_expect_rc(mp_co_spawn(NULL, reader, &r, 0), 0);
    mp_expect_rc(mp_co_spawn(NULL, writer, &w, 0), 0);
    mp_expect_rc(mp_co_run(), 0);
    cr_assert_eq(w.rc, 5);
    cr_assert_eq(r.rc, 5);
    cr_assert_eq(memcmp(r.buf, "hello", 5), 0);
    /* Writable at once; bad input. */
    mp_expect_rc(mp_co_wait_fd(sv[1], MP_WRITABLE, 1), MP_WRITABLE);
    mp_expect_rc(mp_co_wait_fd(-1, MP_READABLE, 1), -EINVAL);
    mp_expect_rc(mp_co_wait_fd(sv[1], 0, 1), -EINVAL);
    mp_expect_rc(mp_co_wait_fd(sv[1], 8, 1), -EINVAL);
    close(sv[0]);
    close(sv[1]);
}

typedef struct {
    int lfd;
    struct sockaddr_storage addr;
    socklen_t alen;
    int served;
    int replies;
} echo_test;

static void echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[256];
    ssize_t n;
    while ((n = mp_co_read(fd, buf, sizeof buf, MP_TMO(5))) > 0)
        if (mp_co_write(fd, buf, (size_t)n, MP_TMO(5)) != n)
            break;
    close(fd);
}

static void echo_server(void *arg)
{
    echo_test *t = arg;
    for (int i = 0; i < 50; i++) {
        int fd = mp_co_accept(t->lfd, NULL, NULL, MP_TMO(5));
        cr_assert_geq(fd, 0, "%s", mp_strerror(fd));
        t->served++;
        mp_co_spawn(NULL, echo_conn, (void *)(intptr_t)fd, 0);
    }
}

static void echo_client(void *arg)
{
    echo_test *t = arg;
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    mp_expect_rc(mp_co_connect(fd, (struct sockaddr *)&t->addr, t->alen, MP_TMO(5)), 0);
    static int next_id;
    char msg[32], back[32];
    int n = snprintf(msg, sizeof msg, "ping %d", next_id++);
    cr_assert_eq(mp_co_write(fd, msg, (size_t)n, MP_TMO(5)), n);
    size_t got = 0;
    while (got < (size_t)n) {
        ssize_t r = mp_co_read(fd, back + got, (size_t)n - got, MP_TMO(5));
        cr_assert_gt(r, 0);
        got += (size_t)r;
    }
    cr_assert_eq(memcmp(msg, back, (size_t)n), 0);
    t->replies++;
    close(fd);
}

Test(coro, echo_server_and_clients, .timeout = MP_TMO(20))
{
    echo_test t = {.alen = sizeof t.addr};
    t.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(t.lfd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(t.lfd, 64), 0);
    cr_assert_eq(getsockname(t.lfd, (struct sockaddr *)&t.addr, &t.alen), 0);
    mp_expect_rc(mp_co_nonblock(t.lfd), 0);
    mp_expect_rc(mp_co_spawn(NULL, echo_server, &t, 0), 0);
    for (int i = 0; i < 50; i++)
        mp_expect_rc(mp_co_spawn(NULL, echo_client, &t, 0), 0);
    mp_expect_rc(mp_co_run(), 0);
    cr_assert_eq(t.served, 50);
    cr_assert_eq(t.replies, 50);
    /* accept with a timeout and nobody coming */
    mp_expect_rc(mp_co_accept(t.lfd, NULL, NULL, 0.02), MP_ETIMEDOUT);
    close(t.lfd);
}

/* ---- many ---- */

static void park_on(void *arg)
{
    int v;
    mp_chan_recv(arg, &v, MP_FOREVER);
    mp_co_yield();
}

#ifdef MP_TEST_MINI
/* ThreadSanitizer counts each coroutine as a thread (8128 at most). */
#define MANY 5000
#else
#define MANY 100000
#endif

Test(coro, hundred_thousand_live_coroutines, .timeout = MP_TMO(60))
{
    enum { N = MANY };
    mp_chan *ch;
    mp_expect_rc(mp_chan_new(&ch, sizeof(int), 0), 0);
    for (int i = 0; i < N; i++) {
        int rc = mp_co_spawn(NULL, park_on, ch, 0);
        cr_assert_eq(rc, 0, "coroutine %d: %s", i, mp_strerror(rc));
    }
    /* All start and park on the channel; then closing it ends them all. */
    mp_expect_rc(mp_co_run(), -EDEADLK);
    mp_expect_rc(mp_chan_close(ch), 0);
    mp_expect_rc(mp_co_run(), 0);
    mp_chan_free(ch);
}

static volatile int depth_limit = 1 << 30; /* never reached: the guard is */

static void deep(void *arg)
{
    volatile char pad[1024];
    pad[0] = (char)(intptr_t)arg;
    if ((intptr_t)arg < depth_limit)
        deep((void *)((intptr_t)arg + 1));
    depth_limit += pad[0]; /* uses the frame after the call: no tail call */
}

static void use_8k(void *arg)
{
    volatile char pad[8 * 1024];
    memset((char *)pad, 1, sizeof pad);
    *(int *)arg = pad[sizeof pad - 1];
}

Test(coro, tiny_stack_is_raised_to_the_minimum, .timeout = MP_TMO(10))
{
    /* As coro.h says: under 16 KiB is raised to 16 KiB (not refused). */
    int got = 0;
    mp_co *co;
    mp_expect_rc(mp_co_spawn(&co, use_8k, &got, 1), 0);
    mp_expect_rc(mp_co_run(), 0);
    cr_assert_eq(got, 1);
    mp_co_free(co);
    mp_expect_rc(mp_co_spawn(&co, use_8k, &got, (size_t)1 << 41), -EINVAL);
}

Test(coro, stack_overflow_hits_the_guard_page, .timeout = MP_TMO(20))
{
    pid_t pid = fork();
    if (pid == 0) {
        mp_co_spawn(NULL, deep, NULL, 16 * 1024);
        mp_co_run();
        _exit(0);
    }
    int st = mp_test_waitpid(pid, MP_TMO(10));
    cr_assert(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV, "status %#x", st);
}

/* ---- threads ---- */

static void add_up(void *arg)
{
    long *sum = arg;
    for (int i = 0; i < 1000; i++) {
        (*sum)++;
        mp_co_yield();
    }
}

static void *thread_sched(void *arg)
{
    long *sum = arg;
    for (int i = 0; i < 20; i++)
        if (mp_co_spawn(NULL, add_up, sum, 0) < 0)
            return NULL;
    mp_co_run();
    return NULL;
}

Test(coro, one_scheduler_per_thread, .timeout = MP_TMO(20))
{
    long sums[4] = {0};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, thread_sched, &sums[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(sums[i], 20000);
    }
}

/* ---- bad input ---- */

Test(coro, bad_input, .timeout = MP_TMO(10))
{
    mp_co *co;
    mp_chan *ch;
    mp_expect_rc(mp_co_spawn(&co, NULL, NULL, 0), -EINVAL);
    cr_assert_null(co);
    mp_expect_rc(mp_co_join(NULL, 0), -EINVAL);
    mp_expect_rc(mp_chan_new(NULL, 4, 1), -EINVAL);
    mp_expect_rc(mp_chan_new(&ch, 0, 1), -EINVAL);
    mp_expect_rc(mp_chan_new(&ch, SIZE_MAX, 2), -EINVAL);
    mp_expect_rc(mp_chan_send(NULL, &co, 0), -EINVAL);
    mp_expect_rc(mp_chan_recv(NULL, &co, 0), -EINVAL);
    mp_expect_rc(mp_chan_close(NULL), -EINVAL);
    mp_expect_rc(mp_chan_new(&ch, sizeof(int), 1), 0);
    mp_expect_rc(mp_chan_send(ch, NULL, 0), -EINVAL);
    mp_expect_rc(mp_chan_send(ch, &co, NAN), -EINVAL);
    mp_chan_free(ch);
    cr_assert_eq(mp_chan_len(NULL), 0);
    cr_assert_not(mp_co_alive(NULL));
    mp_co_free(NULL);
    mp_chan_free(NULL);
    mp_co_yield(); /* nothing to run: returns */
    mp_expect_rc(mp_co_read(-1, NULL, 1, 0), -EINVAL);
    mp_expect_rc(mp_co_connect(-1, NULL, 0, 0), -EINVAL);
}

/* ---- select ---- */

static int chan_put(mp_chan *ch, int v) { return mp_chan_send(ch, &v, 0); }

Test(coro, select_does_the_ready_operation_only, .timeout = MP_TMO(10))
{
    mp_chan *a, *b;
    mp_expect_rc(mp_chan_new(&a, sizeof(int), 1), 0);
    mp_expect_rc(mp_chan_new(&b, sizeof(int), 1), 0);
    mp_expect_rc(chan_put(b, 7), 0);
    int va = -1, vb = -1;
    mp_chan_op ops[] = {{a, MP_CHAN_RECV, &va, 1}, {b, MP_CHAN_RECV, &vb, 1}};
    mp_expect_rc(mp_chan_select(ops, 2, 0), 1);
    cr_assert_eq(vb, 7);
    cr_assert_eq(ops[1].rc, 0);
    cr_assert_eq(va, -1, "the other was not done");
    /* Sends: a is full, b has room. */
    mp_expect_rc(chan_put(a, 1), 0);
    int x = 5, y = 6;
    mp_chan_op sends[] = {{a, MP_CHAN_SEND, &x, 1}, {b, MP_CHAN_SEND, &y, 1}};
    mp_expect_rc(mp_chan_select(sends, 2, 0), 1);
    cr_assert_eq(mp_chan_len(a), 1);
    cr_assert_eq(mp_chan_len(b), 1);
    /* Nothing can go on: a timeout, waited out. */
    mp_chan_op both_full[] = {{a, MP_CHAN_SEND, &x, 1}, {b, MP_CHAN_SEND, &y, 1}};
    double t0 = mp_test_now();
    mp_expect_rc(mp_chan_select(both_full, 2, 0.05), MP_ETIMEDOUT);
    cr_assert_geq(mp_test_now() - t0, 0.05);
    /* A closed channel's operation is done at once, with MP_ECLOSED. */
    mp_expect_rc(mp_chan_close(a), 0);
    mp_expect_rc(mp_chan_select(both_full, 2, 0), 0);
    cr_assert_eq(both_full[0].rc, MP_ECLOSED);
    mp_chan_free(a);
    mp_chan_free(b);
}

typedef struct {
    mp_chan *a, *b;
    int got[64], ngot, from_b;
} select_test;

static void late_sender(void *arg)
{
    select_test *t = arg;
    mp_co_sleep(0.02);
    int v = 42;
    cr_assert_eq(mp_chan_send(t->b, &v, MP_FOREVER), 0);
}

/* A select that waits is woken by the first operation possible, and is
 * then off the other channels' lists. */
Test(coro, select_waits_for_the_first_and_leaves_the_others, .timeout = MP_TMO(10))
{
    select_test t = {0};
    mp_expect_rc(mp_chan_new(&t.a, sizeof(int), 0), 0);
    mp_expect_rc(mp_chan_new(&t.b, sizeof(int), 0), 0);
    mp_expect_rc(mp_co_spawn(NULL, late_sender, &t, 0), 0);
    int va = -1, vb = -1;
    mp_chan_op ops[] = {{t.a, MP_CHAN_RECV, &va, 1}, {t.b, MP_CHAN_RECV, &vb, 1}};
    mp_expect_rc(mp_chan_select(ops, 2, MP_FOREVER), 1);
    cr_assert_eq(vb, 42);
    cr_assert_eq(va, -1);
    mp_expect_rc(chan_put(t.a, 1), MP_ETIMEDOUT); /* nobody waits on a any more */
    mp_expect_rc(mp_co_run(), 0);
    mp_chan_free(t.a); /* (refused while anyone waits on it) */
    mp_chan_free(t.b);
}

static void selector(void *arg)
{
    select_test *t = arg;
    for (;;) {
        int va, vb;
        mp_chan_op ops[] = {{t->a, MP_CHAN_RECV, &va, 0}, {t->b, MP_CHAN_RECV, &vb, 0}};
        int i = mp_chan_select(ops, 2, MP_FOREVER);
        cr_assert(i == 0 || i == 1, "select: %d", i);
        if (ops[i].rc == MP_ECLOSED)
            return;
        t->got[t->ngot++] = i == 0 ? va : vb;
        t->from_b += i == 1;
    }
}

static void feeder(void *arg)
{
    select_test *t = arg;
    for (int i = 0; i < 60; i++)
        cr_assert_eq(mp_chan_send(i % 2 ? t->b : t->a, &i, MP_FOREVER), 0);
    mp_chan_close(t->a);
    mp_chan_close(t->b);
}

/* Three coroutines select on the same two rendezvous channels: each
 * element reaches exactly one of them. */
Test(coro, selects_on_shared_channels_lose_and_repeat_nothing, .timeout = MP_TMO(10))
{
    select_test t[3] = {{0}};
    mp_chan *a, *b;
    mp_expect_rc(mp_chan_new(&a, sizeof(int), 0), 0);
    mp_expect_rc(mp_chan_new(&b, sizeof(int), 0), 0);
    for (int k = 0; k < 3; k++) {
        t[k].a = a;
        t[k].b = b;
        mp_expect_rc(mp_co_spawn(NULL, selector, &t[k], 0), 0);
    }
    select_test f = {.a = a, .b = b};
    mp_expect_rc(mp_co_spawn(NULL, feeder, &f, 0), 0);
    mp_expect_rc(mp_co_run(), 0);
    int seen[60] = {0}, total = 0;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < t[k].ngot; i++, total++)
            seen[t[k].got[i]]++;
    cr_assert_eq(total, 60);
    for (int i = 0; i < 60; i++)
        cr_assert_eq(seen[i], 1, "element %d received %d times", i, seen[i]);
    mp_chan_free(a);
    mp_chan_free(b);
}

/* When both can go on, both are chosen, about equally. */
Test(coro, select_is_fair_between_ready_channels, .timeout = MP_TMO(10))
{
    mp_chan *a, *b;
    mp_expect_rc(mp_chan_new(&a, sizeof(int), MP_CHAN_UNBOUNDED), 0);
    mp_expect_rc(mp_chan_new(&b, sizeof(int), MP_CHAN_UNBOUNDED), 0);
    for (int i = 0; i < 1000; i++) {
        mp_expect_rc(chan_put(a, i), 0);
        mp_expect_rc(chan_put(b, i), 0);
    }
    int n[2] = {0}, v;
    for (int i = 0; i < 1000; i++) {
        mp_chan_op ops[] = {{a, MP_CHAN_RECV, &v, 0}, {b, MP_CHAN_RECV, &v, 0}};
        int k = mp_chan_select(ops, 2, 0);
        cr_assert(k == 0 || k == 1);
        n[k]++;
    }
    cr_assert(n[0] > 350 && n[1] > 350, "chosen %d and %d times", n[0], n[1]);
    mp_chan_free(a);
    mp_chan_free(b);
}

Test(coro, select_bad_input, .timeout = MP_TMO(10))
{
    mp_chan *a;
    mp_expect_rc(mp_chan_new(&a, sizeof(int), 1), 0);
    int v;
    mp_chan_op ok = {a, MP_CHAN_RECV, &v, 0};
    mp_chan_op bad_op = {a, 3, &v, 0}, no_chan = {NULL, MP_CHAN_RECV, &v, 0};
    mp_chan_op no_elem = {a, MP_CHAN_RECV, NULL, 0};
    mp_expect_rc(mp_chan_select(NULL, 1, 0), -EINVAL);
    mp_expect_rc(mp_chan_select(&ok, 0, 0), -EINVAL);
    mp_expect_rc(mp_chan_select(&bad_op, 1, 0), -EINVAL);
    mp_expect_rc(mp_chan_select(&no_chan, 1, 0), -EINVAL);
    mp_expect_rc(mp_chan_select(&no_elem, 1, 0), -EINVAL);
    mp_expect_rc(mp_chan_select(&ok, 1, NAN), -EINVAL);
    mp_chan_op many[MP_CHAN_SELECT_MAX + 1];
    for (int i = 0; i <= MP_CHAN_SELECT_MAX; i++)
        many[i] = ok;
    mp_expect_rc(mp_chan_select(many, MP_CHAN_SELECT_MAX + 1, 0), -EINVAL);
    mp_expect_rc(mp_chan_select(many, MP_CHAN_SELECT_MAX, 0), MP_ETIMEDOUT);
    mp_chan_free(a);
}
