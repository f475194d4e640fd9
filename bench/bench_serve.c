/* serve.*: a pre-fork HTTP/1.0 server under `ab -n N -c 50` on 127.0.0.1,
 * two workers: mproc's mp_pool_serve against a raw fork() + accept()
 * server (the floor: N children looping accept, handle, close).
 *
 *   serve.http_cpu       server CPU per request (user + system of the
 *                        server and all its processes, us), lower better
 *   serve.http_rate      requests per second ab saw
 *   serve.kill_under_load  mproc only: connections ab lost when a worker
 *                        is SIGKILLed in the middle of the run (the ones
 *                        that worker held; ab's largest failure
 *                        column, as it counts one lost connection in
 *                        several)
 *
 * Each run forks the server as a child of the benchmark, loads it with ab,
 * stops it with SIGTERM, and takes its CPU time from wait4 (which counts
 * every descendant it reaped, the workers included).  Without ab (Debian's
 * apache2-utils) it prints nothing. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <mproc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

enum { WORKERS = 2, CONCURRENCY = 50 };

static const char response[] = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                               "Content-Length: 13\r\n\r\nHello, world!";

/* Read the request head, answer, as every server here does. */
static int http_handle(int fd, void *ud)
{
    (void)ud;
    char buf[2048];
    size_t got = 0;
    while (got < sizeof buf - 1) {
        ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
        if (n <= 0)
            return 1;
        got += (size_t)n;
        buf[got] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            break;
    }
    return write(fd, response, sizeof response - 1) == (ssize_t)(sizeof response - 1) ? 0 : 1;
}

static int listen_local(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    MP_BENCH_CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    MP_BENCH_CHECK(listen(fd, 1024) == 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return fd;
}

/* ---- the servers, each in a child of the benchmark ---- */

static volatile sig_atomic_t term;
static mp_pool *serving;

static void on_term_mproc(int sig)
{
    (void)sig;
    mp_pool_serve_stop(serving);
}

static void on_term_raw(int sig)
{
    (void)sig;
    term = 1;
}

/* A byte on ctl asks to SIGKILL worker 0 (the kill-under-load run). */
static void *killer(void *arg)
{
    int ctl = (int)(intptr_t)arg;
    char c;
    if (read(ctl, &c, 1) == 1) {
        pid_t pid = mp_pool_worker_pid(serving, 0);
        if (pid > 0)
            kill(pid, SIGKILL);
    }
    return NULL;
}

static int run_mproc_server(int lfd, int ready, int ctl)
{
    mp_pool *p;
    if (mp_pool_new(&p, &(mp_pool_opts){.workers = WORKERS}) < 0)
        return 1;
    serving = p;
    struct sigaction sa = {.sa_handler = on_term_mproc};
    sigaction(SIGTERM, &sa, NULL);
    pthread_t t;
    pthread_create(&t, NULL, killer, (void *)(intptr_t)ctl);
    pthread_detach(t);
    char c = 1;
    if (write(ready, &c, 1) != 1)
        return 1;
    int rc = mp_pool_serve(p, lfd, http_handle, NULL, &(mp_serve_opts){.timeout = 30, .graceful_timeout = 0.3});
    mp_pool_close(p);
    mp_pool_join(p, MP_FOREVER);
    mp_pool_free(p);
    return rc != 0;
}

static int run_raw_server(int lfd, int ready)
{
    struct sigaction sa = {.sa_handler = on_term_raw};
    sigaction(SIGTERM, &sa, NULL);
    pid_t kids[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            signal(SIGTERM, SIG_DFL);
            for (;;) {
                int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                    continue;
                http_handle(c, NULL);
                close(c);
            }
        }
    }
    char c = 1;
    if (write(ready, &c, 1) != 1)
        return 1;
    while (!term)
        pause();
    for (int i = 0; i < WORKERS; i++)
        kill(kids[i], SIGTERM);
    for (int i = 0; i < WORKERS; i++)
        waitpid(kids[i], NULL, 0);
    return 0;
}

/* ---- one run ---- */

typedef struct {
    bool raw;
    bool kill_one;
    double cpu_s, wall_s; /* of the last run */
    long failed;
} run_ctx;

/* Run ab against port with n requests; its wall time, and the requests it
 * saw fail in *failed.  mid: written to after about half the time. */
static double load(int port, uint64_t n, long *failed, int mid)
{
    int out[2];
    MP_BENCH_CHECK(pipe(out) == 0);
    char url[64], num[32], conc[16];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    snprintf(num, sizeof num, "%llu", (unsigned long long)n);
    snprintf(conc, sizeof conc, "%d", CONCURRENCY);
    double t0 = mp_bench_now();
    pid_t ab = fork();
    if (ab == 0) {
        dup2(out[1], 1);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        execlp("ab", "ab", "-q", "-r", "-n", num, "-c", conc, url, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    if (mid >= 0) { /* the kill: once a third of the requests is through */
        struct timespec ts = {0, 150 * 1000 * 1000};
        nanosleep(&ts, NULL);
        char c = 1;
        MP_BENCH_CHECK(write(mid, &c, 1) == 1);
    }
    char buf[8192];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof buf - 1 && (r = read(out[0], buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)r;
    buf[got] = '\0';
    close(out[0]);
    int st;
    waitpid(ab, &st, 0);
    double wall = mp_bench_now() - t0;
    MP_BENCH_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    const char *f = strstr(buf, "Failed requests:");
    const char *c = strstr(buf, "Complete requests:");
    MP_BENCH_CHECK(f != NULL && c != NULL);
    /* Connections lost: ab counts one reset connection in several of its
     * columns at once (an exception, a response of the wrong length, a
     * receive error), so the lost ones are its largest column. */
    *failed = strtol(f + strlen("Failed requests:"), NULL, 10);
    long conn = 0, recv_ = 0, len_ = 0, exc = 0;
    const char *d = strstr(f, "(Connect:");
    if (*failed > 0 && d != NULL &&
        sscanf(d, "(Connect: %ld, Receive: %ld, Length: %ld, Exceptions: %ld)", &conn, &recv_,
               &len_, &exc) == 4)
        *failed = conn + recv_ > exc ? (conn + recv_ > len_ ? conn + recv_ : len_)
                                     : (exc > len_ ? exc : len_);
    if (*failed > 0 && getenv("BENCH_SERVE_DEBUG"))
        fprintf(stderr, "lost %ld: connect %ld receive %ld length %ld exceptions %ld\n", *failed,
                conn, recv_, len_, exc);
    MP_BENCH_CHECK((uint64_t)strtoll(c + strlen("Complete requests:"), NULL, 10) == n);
    return wall;
}

static double serve_body(void *arg, uint64_t n)
{
    run_ctx *x = arg;
    int port, lfd = listen_local(&port);
    int ready[2], ctl[2];
    MP_BENCH_CHECK(pipe(ready) == 0 && pipe(ctl) == 0);
    pid_t srv = fork();
    if (srv == 0) {
        close(ready[0]);
        close(ctl[1]);
        _exit(x->raw ? run_raw_server(lfd, ready[1]) : run_mproc_server(lfd, ready[1], ctl[0]));
    }
    close(ready[1]);
    close(ctl[0]);
    close(lfd);
    char c;
    MP_BENCH_CHECK(read(ready[0], &c, 1) == 1);
    close(ready[0]);
    x->wall_s = load(port, n, &x->failed, x->kill_one ? ctl[1] : -1);
    close(ctl[1]);
    kill(srv, SIGTERM);
    int st;
    struct rusage ru;
    MP_BENCH_CHECK(wait4(srv, &st, 0, &ru) == srv);
    MP_BENCH_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    x->cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    return x->cpu_s;
}

/* One JSON line (harness.h's format) from per-run figures. */
static void report(const char *bench, const char *impl, const char *metric, bool lower,
                   double *v, int runs, uint64_t n)
{
    qsort(v, (size_t)runs, sizeof v[0], mp_bench__cmp);
    double med = runs % 2 ? v[runs / 2] : (v[runs / 2 - 1] + v[runs / 2]) / 2;
    printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"metric\":\"%s\",\"better\":\"%s\","
           "\"median\":%.6g,\"min\":%.6g,\"max\":%.6g,\"runs\":%d,\"n\":%llu}\n",
           bench, impl, metric, lower ? "lower" : "higher", med, v[0], v[runs - 1], runs,
           (unsigned long long)n);
    fflush(stdout);
}

/* The kill-under-load runs: ab's failed requests. */
static void kill_under_load(uint64_t n, int runs)
{
    double v[16];
    for (int i = 0; i < runs; i++) {
        run_ctx x = {.raw = false, .kill_one = true};
        serve_body(&x, n);
        v[i] = (double)x.failed;
    }
    report("serve.kill_under_load", "mproc", "failed", true, v, runs, n);
}

int main(void)
{
    if (system("ab -V >/dev/null 2>&1") != 0) {
        fprintf(stderr, "bench_serve: no ab (apache2-utils): skipped\n");
        return 0;
    }
    uint64_t n = mp_bench_n(20000);
    enum { MAX_RUNS = 16 };
    int runs = mp_bench_quick() ? 3 : 7;
    double cpu[2][MAX_RUNS], rate[2][MAX_RUNS];
    run_ctx warm = {.raw = false}; /* (a warm-up) */
    serve_body(&warm, n / 10);
    /* Interleaved, run by run: the machine's speed drifts. */
    for (int r = 0; r < runs; r++)
        for (int k = 0; k < 2; k++) {
            run_ctx x = {.raw = k == 1};
            serve_body(&x, n);
            cpu[k][r] = x.cpu_s * 1e6 / (double)n;
            rate[k][r] = (double)n / x.wall_s;
        }
    report("serve.http_cpu", "mproc", "us/op", true, cpu[0], runs, n);
    report("serve.http_cpu", "posix", "us/op", true, cpu[1], runs, n);
    report("serve.http_rate", "mproc", "ops/s", false, rate[0], runs, n);
    report("serve.http_rate", "posix", "ops/s", false, rate[1], runs, n);
    kill_under_load(n, 3);
    return 0;
}
