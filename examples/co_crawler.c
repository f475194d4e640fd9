/* A crawler-style fan-out: one coroutine per page fetches it with its own
 * timeout; the results arrive on a channel in the order they complete.
 * The "sites" are coroutine servers on loopback in the same thread, each
 * answering after its own delay; the fetch timeout is 0.5 s, so the slow
 * ones time out, and the whole crawl takes about 0.5 s, not the sum of
 * the delays. */
#include <arpa/inet.h>
#include <mproc.h>
#include <mproc/coro.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NSITES 6
#define FETCH_TIMEOUT 0.5

static const double delays[NSITES] = {0.05, 0.1, 0.2, 0.3, 0.8, 1.5};

typedef struct {
    int id;
    int lfd;
    struct sockaddr_in addr;
} site;

typedef struct {
    int id;
    int rc;        /* bytes, or an error code */
    double took;
} result;

static mp_chan *results;
static double start;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void serve_site(void *arg)
{
    site *s = arg;
    int fd = mp_co_accept(s->lfd, NULL, NULL, 10);
    if (fd >= 0) {
        char page[64];
        int n = snprintf(page, sizeof page, "<html>site %d</html>", s->id);
        mp_co_sleep(delays[s->id]); /* a slow site */
        mp_co_write(fd, page, (size_t)n, 1); /* may find the fetcher gone */
        close(fd);
    }
    close(s->lfd);
}

static void fetch(void *arg)
{
    site *s = arg;
    double t0 = now(), deadline = t0 + FETCH_TIMEOUT;
    result r = {.id = s->id};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    r.rc = fd < 0 ? -1 : mp_co_connect(fd, (struct sockaddr *)&s->addr, sizeof s->addr, FETCH_TIMEOUT);
    char buf[256];
    int total = 0;
    while (r.rc == 0) {
        double left = deadline - now();
        ssize_t n = left > 0 ? mp_co_read(fd, buf, sizeof buf, left) : MP_ETIMEDOUT;
        if (n <= 0) {
            r.rc = n < 0 ? (int)n : 0;
            break;
        }
        total += (int)n;
    }
    if (r.rc == 0)
        r.rc = total;
    r.took = now() - t0;
    if (fd >= 0)
        close(fd);
    mp_chan_send(results, &r, MP_FOREVER);
}

static void crawl(void *arg)
{
    site *sites = arg;
    for (int i = 0; i < NSITES; i++)
        mp_co_spawn(NULL, fetch, &sites[i], 0);
    for (int i = 0; i < NSITES; i++) {
        result r;
        mp_chan_recv(results, &r, MP_FOREVER);
        if (r.rc >= 0)
            printf("site %d: %d bytes in %.2f s\n", r.id, r.rc, r.took);
        else
            printf("site %d: %s after %.2f s\n", r.id, mp_strerror(r.rc), r.took);
    }
    printf("crawl finished in %.2f s (the delays add up to %.2f s)\n", now() - start,
           delays[0] + delays[1] + delays[2] + delays[3] + delays[4] + delays[5]);
    fflush(stdout);
}

int main(void)
{
    static site sites[NSITES];
    for (int i = 0; i < NSITES; i++) {
        site *s = &sites[i];
        s->id = i;
        s->addr.sin_family = AF_INET;
        s->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t alen = sizeof s->addr;
        s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&s->addr, sizeof s->addr) < 0 ||
            listen(s->lfd, 8) < 0 || getsockname(s->lfd, (struct sockaddr *)&s->addr, &alen) < 0 ||
            mp_co_nonblock(s->lfd) < 0) {
            perror("site");
            return 1;
        }
        mp_co_spawn(NULL, serve_site, s, 0);
    }
    if (mp_chan_new(&results, sizeof(result), NSITES) < 0)
        return 1;
    start = now();
    mp_co_spawn(NULL, crawl, sites, 0);
    int rc = mp_co_run();
    mp_chan_free(results);
    return rc < 0;
}
