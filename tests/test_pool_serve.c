/* mp_pool_serve: every worker accepts on the shared socket and handles
 * its connections; a worker that dies is replaced and the service goes
 * on; a connection past its time limit has its worker killed; workers are
 * recycled after max_requests; a stop drains (within graceful_timeout);
 * coroutine workers hold many connections at once; bad calls fail with a
 * code. */
// labels: unit
#include <mproc.h>
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "mp_test.h"

/* ---- a listening socket and clients ---- */

static int listen_local(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(fd, 256), 0);
    socklen_t len = sizeof a;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

typedef struct {
    pid_t pid;
    uint32_t n; /* connections this worker process handled before this one */
} reply;

/* Send one request byte; the reply, or 0 bytes (the connection was lost:
 * returns false). */
static bool ask(int port, char what, reply *out, double timeout)
{
    int fd = dial(port);
    cr_assert_eq(write(fd, &what, 1), 1);
    ssize_t got = mp_test_read(fd, out, sizeof *out, timeout);
    close(fd);
    return got == (ssize_t)sizeof *out;
}

/* ---- the handler, in the workers ---- */

static uint32_t handled; /* per worker process */
static _Atomic int *begun; /* slow requests ('s', 'w') begun, in all workers */

/* Wait until more than `seen` slow requests have begun in the workers. */
static void wait_begun(int seen)
{
    double end = mp_test_now() + MP_TMO(10);
    while (atomic_load(begun) <= seen)
        cr_assert_lt(mp_test_now(), end, "the request reached a worker");
}

static int handle(int fd, void *ud)
{
    (void)ud;
    char what;
    if (read(fd, &what, 1) != 1)
        return 1;
    if (what == 'k')
        raise(SIGKILL); /* a crash with the connection held */
    if (what == 's' || what == 'w')
        atomic_fetch_add(begun, 1);
    if (what == 's')
        sleep(30); /* past any time limit */
    if (what == 'w') {
        struct timespec ts = {0, 300 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    reply r = {getpid(), handled++};
    if (write(fd, &r, sizeof r) != (ssize_t)sizeof r)
        return 1;
    return what == 'f'; /* 'f': the handler says it failed */
}

/* ---- serving on a thread of the test ---- */

typedef struct {
    mp_pool *p;
    int lfd;
    mp_serve_fn fn;
    mp_serve_opts opts;
    int rc;
    pthread_t th;
} server;

static void *serve_thread(void *arg)
{
    server *s = arg;
    s->rc = mp_pool_serve(s->p, s->lfd, s->fn, NULL, &s->opts);
    return NULL;
}

static void start(server *s, unsigned workers, int *port, mp_serve_opts opts)
{
    if (begun == NULL) /* before the pool: its workers see it */
        cr_assert_not_null(begun = mp_shared_alloc(sizeof *begun));
    mp_expect_rc(mp_pool_new(&s->p, &(mp_pool_opts){.workers = workers}), 0);
    s->lfd = listen_local(port);
    s->fn = handle;
    s->opts = opts;
    s->rc = 1;
    cr_assert_eq(pthread_create(&s->th, NULL, serve_thread, s), 0);
}

static void stop(server *s, double within)
{
    double t0 = mp_test_now();
    /* (the serve may not have begun yet: stop until it has) */
    int rc;
    while ((rc = mp_pool_serve_stop(s->p)) == -ESRCH && s->rc == 1)
        sched_yield();
    pthread_join(s->th, NULL);
    mp_expect_rc(s->rc, 0);
    cr_assert_lt(mp_test_now() - t0, within, "stopped in %.3f s", mp_test_now() - t0);
}

static void finish(server *s)
{
    close(s->lfd);
    mp_expect_rc(mp_pool_close(s->p), 0);
    mp_expect_rc(mp_pool_join(s->p, MP_TMO(30)), 0);
    mp_pool_free(s->p);
}

static bool is_worker(mp_pool *p, unsigned workers, pid_t pid)
{
    for (unsigned i = 0; i < workers; i++)
        if (mp_pool_worker_pid(p, i) == pid)
            return true;
    return false;
}

static int echo_task(const void *arg, size_t len, mp_buf *out)
{
    return mp_buf_append(out, arg, len);
}

Test(pool_serve, workers_accept_and_handle, .timeout = MP_TMO(60))
{
    server s;
    int port;
    start(&s, 2, &port, (mp_serve_opts){0});
    enum { N = 300 };
    unsigned per[2] = {0};
    pid_t pids[2] = {0};
    for (int i = 0; i < N; i++) {
        reply r;
        cr_assert(ask(port, i == 7 ? 'f' : 'x', &r, MP_TMO(10)), "connection %d answered", i);
        cr_assert(is_worker(s.p, 2, r.pid), "answered by a worker of the pool (%d)", (int)r.pid);
        int k = r.pid == pids[0] || pids[0] == 0 ? 0 : 1;
        pids[k] = r.pid;
        per[k]++;
    }
    cr_assert_eq(per[0] + per[1], N);
    stop(&s, MP_TMO(5));
    /* (counted once the serve has ended: a worker counts a connection
     * after its client has the reply) */
    mp_serve_stats st;
    mp_expect_rc(mp_pool_serve_stats(s.p, &st), 0);
    cr_assert_eq(st.connections, N);
    cr_assert_eq(st.failed, 1);
    cr_assert_eq(st.worker_deaths, 0);
    /* The socket is the caller's again, blocking as it was. */
    cr_assert_eq(fcntl(s.lfd, F_GETFL) & O_NONBLOCK, 0);
    /* The pool runs tasks again. */
    mp_expect_rc(mp_pool_apply(s.p, echo_task, "hi", 2, NULL, NULL), 0);
    finish(&s);
}

Test(pool_serve, a_worker_that_dies_costs_its_connection_only, .timeout = MP_TMO(60))
{
    server s;
    int port;
    start(&s, 2, &port, (mp_serve_opts){0});
    reply r;
    cr_assert(ask(port, 'x', &r, MP_TMO(10)));
    cr_assert_not(ask(port, 'k', &r, MP_TMO(10)), "the killed worker's client gets no reply");
    for (int i = 0; i < 100; i++)
        cr_assert(ask(port, 'x', &r, MP_TMO(10)), "served after the death (%d)", i);
    stop(&s, MP_TMO(5));
    /* (counted once the serve has ended: a worker counts a connection
     * after its client has the reply) */
    mp_serve_stats st;
    mp_expect_rc(mp_pool_serve_stats(s.p, &st), 0);
    cr_assert_eq(st.worker_deaths, 1);
    cr_assert_eq(st.connections, 102, "%llu", (unsigned long long)st.connections); /* the lost one too */
    cr_assert_eq(st.failed, 1);
    finish(&s);
}

Test(pool_serve, a_connection_past_its_time_limit_kills_its_worker, .timeout = MP_TMO(60))
{
    server s;
    int port;
    start(&s, 2, &port, (mp_serve_opts){.timeout = 0.3});
    reply r;
    double t0 = mp_test_now();
    cr_assert_not(ask(port, 's', &r, MP_TMO(10)), "no reply from the killed worker");
    double took = mp_test_now() - t0;
    cr_assert(took >= 0.3 && took < MP_TMO(1.8), "killed after %.3f s", took);
    for (int i = 0; i < 50; i++)
        cr_assert(ask(port, 'x', &r, MP_TMO(10)));
    /* An idle worker is not killed: its time limit runs per connection. */
    struct timespec ts = {0, 600 * 1000 * 1000};
    nanosleep(&ts, NULL);
    cr_assert(ask(port, 'x', &r, MP_TMO(10)));
    stop(&s, MP_TMO(5));
    /* (counted once the serve has ended: a worker counts a connection
     * after its client has the reply) */
    mp_serve_stats st;
    mp_expect_rc(mp_pool_serve_stats(s.p, &st), 0);
    cr_assert_eq(st.timeouts, 1);
    cr_assert_eq(st.worker_deaths, 1);
    finish(&s);
}

Test(pool_serve, workers_are_recycled_after_max_requests, .timeout = MP_TMO(60))
{
    server s;
    int port;
    start(&s, 2, &port, (mp_serve_opts){.max_requests = 5});
    for (int i = 0; i < 40; i++) {
        reply r;
        cr_assert(ask(port, 'x', &r, MP_TMO(10)));
        cr_assert_lt(r.n, 5, "a worker handles at most 5 (this one %u)", r.n);
    }
    stop(&s, MP_TMO(5));
    /* (counted once the serve has ended: a worker counts a connection
     * after its client has the reply) */
    mp_serve_stats st;
    mp_expect_rc(mp_pool_serve_stats(s.p, &st), 0);
    cr_assert_geq(st.recycled, 6);
    cr_assert_eq(st.worker_deaths, 0);
    cr_assert_eq(st.connections, 40);
    finish(&s);
}

typedef struct {
    int port;
    bool ok;
} client_arg;

static void *slow_client(void *arg)
{
    client_arg *c = arg;
    reply r;
    c->ok = ask(c->port, 'w', &r, MP_TMO(10));
    return NULL;
}

Test(pool_serve, stop_lets_connections_finish, .timeout = MP_TMO(60))
{
    server s;
    int port;
    start(&s, 2, &port, (mp_serve_opts){0});
    reply r;
    cr_assert(ask(port, 'x', &r, MP_TMO(10)));
    client_arg c = {port, false};
    int seen = atomic_load(begun);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, slow_client, &c), 0);
    wait_begun(seen); /* the request is being handled */
    stop(&s, MP_TMO(5));
    pthread_join(t, NULL);
    cr_assert(c.ok, "the connection held at the stop was answered");
    mp_serve_stats st;
    mp_expect_rc(mp_pool_serve_stats(s.p, &st), 0);
    cr_assert_eq(st.connections, 2);
    cr_assert_eq(st.worker_deaths, 0);
    finish(&s);
}

Test(pool_serve, stop_kills_what_outlives_graceful_timeout, .timeout = MP_TMO(60))
{
    server s;
    int port;
    start(&s, 2, &port, (mp_serve_opts){.graceful_timeout = 0.2});
    reply r;
    cr_assert(ask(port, 'x', &r, MP_TMO(10)));
    int seen = atomic_load(begun);
    int fd = dial(port);
    char what = 's';
    cr_assert_eq(write(fd, &what, 1), 1);
    wait_begun(seen);
    stop(&s, MP_TMO(3));
    cr_assert_eq(mp_test_read(fd, &r, sizeof r, MP_TMO(5)), 0, "its client sees the end");
    close(fd);
    mp_serve_stats st;
    mp_expect_rc(mp_pool_serve_stats(s.p, &st), 0);
    cr_assert_eq(st.worker_deaths, 1);
    finish(&s);
}

/* ---- coroutine workers ---- */

static int co_handle(int fd, void *ud)
{
    (void)ud;
    char what;
    if (mp_co_read(fd, &what, 1, 20) != 1)
        return 1;
    reply r = {getpid(), handled++};
    return mp_co_write(fd, &r, sizeof r, 20) == (ssize_t)sizeof r ? 0 : 1;
}

Test(pool_serve, coroutine_workers_hold_many_connections, .timeout = MP_TMO(60))
{
    server s;
    int port;
    mp_expect_rc(mp_pool_new(&s.p, &(mp_pool_opts){.workers = 2}), 0);
    s.lfd = listen_local(&port);
    s.fn = co_handle;
    s.opts = (mp_serve_opts){.coroutines = 100, .timeout = 2};
    s.rc = 1;
    cr_assert_eq(pthread_create(&s.th, NULL, serve_thread, &s), 0);
    /* 60 clients connect; the first two say nothing until the others are
     * answered.  Workers handling one connection at a time would take
     * those two and wait on them, and no one else would be answered. */
    enum { N = 60, SILENT = 2 };
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = dial(port);
    for (int pass = 0; pass < 2; pass++) {
        int from = pass == 0 ? SILENT : 0, to = pass == 0 ? N : SILENT;
        for (int i = from; i < to; i++) {
            char what = 'x';
            cr_assert_eq(write(fds[i], &what, 1), 1);
        }
        for (int i = from; i < to; i++) {
            reply r;
            cr_assert_eq(mp_test_read(fds[i], &r, sizeof r, MP_TMO(10)), (ssize_t)sizeof r,
                         "client %d answered", i);
            cr_assert(is_worker(s.p, 2, r.pid));
            close(fds[i]);
        }
    }
    /* Idle past the heartbeat: the workers are not killed. */
    nanosleep(&(struct timespec){2, 500 * 1000 * 1000}, NULL);
    stop(&s, MP_TMO(5));
    /* (counted once the serve has ended: a worker counts a connection
     * after its client has the reply) */
    mp_serve_stats st;
    mp_expect_rc(mp_pool_serve_stats(s.p, &st), 0);
    cr_assert_eq(st.connections, N);
    cr_assert_eq(st.worker_deaths, 0);
    finish(&s);
}

/* ---- a stop from a signal handler ---- */

static mp_pool *signalled_pool;

static void on_term(int sig)
{
    (void)sig;
    mp_pool_serve_stop(signalled_pool);
}

Test(pool_serve, stop_from_a_signal_handler, .timeout = MP_TMO(60))
{
    server s;
    int port;
    start(&s, 2, &port, (mp_serve_opts){0});
    signalled_pool = s.p;
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGUSR1, &sa, NULL);
    reply r;
    cr_assert(ask(port, 'x', &r, MP_TMO(10)));
    pthread_kill(s.th, SIGUSR1);
    pthread_join(s.th, NULL);
    mp_expect_rc(s.rc, 0);
    finish(&s);
}

/* ---- bad calls ---- */

static void *serve_again(void *arg)
{
    server *s = arg;
    return (void *)(intptr_t)mp_pool_serve(s->p, s->lfd, handle, NULL, NULL);
}

Test(pool_serve, bad_calls, .timeout = MP_TMO(60))
{
    mp_pool *tp;
    mp_expect_rc(mp_pool_new(&tp, &(mp_pool_opts){.workers = 1, .kind = MP_POOL_THREAD}), 0);
    int port;
    int lfd = listen_local(&port);
    mp_expect_rc(mp_pool_serve(tp, lfd, handle, NULL, NULL), -ENOTSUP);
    mp_pool_free(tp);

    server s;
    start(&s, 1, &port, (mp_serve_opts){0});
    mp_expect_rc(mp_pool_serve(NULL, lfd, handle, NULL, NULL), -EINVAL);
    mp_expect_rc(mp_pool_serve(s.p, lfd, NULL, NULL, NULL), -EINVAL);
    mp_expect_rc(mp_pool_serve(s.p, lfd, handle, NULL, &(mp_serve_opts){.graceful_timeout = -1}),
                 -EINVAL);
    mp_expect_rc(mp_pool_serve(s.p, lfd, handle, NULL, &(mp_serve_opts){.timeout = NAN}),
                 -EINVAL);
    int unlistened = socket(AF_INET, SOCK_STREAM, 0);
    mp_expect_rc(mp_pool_serve(s.p, unlistened, handle, NULL, NULL), -EINVAL);
    close(unlistened);
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    mp_expect_rc(mp_pool_serve(s.p, pfd[0], handle, NULL, NULL), -ENOTSOCK);
    close(pfd[0]);
    close(pfd[1]);
    mp_expect_rc(mp_pool_serve(s.p, 1000, handle, NULL, NULL), -EBADF);
    mp_expect_rc(mp_pool_serve_stop(NULL), -EINVAL);
    mp_expect_rc(mp_pool_serve_stats(s.p, NULL), -EINVAL);
    /* Serving already (once it has begun): a second serve is -EBUSY. */
    reply r;
    cr_assert(ask(port, 'x', &r, MP_TMO(10)));
    server again = s;
    again.lfd = lfd;
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, serve_again, &again), 0);
    void *rc;
    pthread_join(t, &rc);
    mp_expect_rc((int)(intptr_t)rc, -EBUSY);
    stop(&s, MP_TMO(5));
    mp_expect_rc(mp_pool_serve_stop(s.p), -ESRCH);
    close(lfd);
    /* A closed pool does not serve. */
    mp_expect_rc(mp_pool_close(s.p), 0);
    mp_expect_rc(mp_pool_serve(s.p, s.lfd, handle, NULL, NULL), MP_ECLOSED);
    mp_expect_rc(mp_pool_join(s.p, MP_TMO(30)), 0);
    close(s.lfd);
    mp_pool_free(s.p);
}
