/* A coroutine echo server holding 10,000 clients at once on loopback, one
 * coroutine per connection, all on one thread.  A child process plays the
 * clients: 10,000 coroutines connect, send a line, read the echo, and keep
 * the connection open until every client has its echo; then all hang up.
 *
 *   co_echo_server [clients]     (default 10000) */
#include <arpa/inet.h>
#include <mproc.h>
#include <mproc/coro.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int nclients = 10000;
static struct sockaddr_in server_addr;

/* ---- the server ---- */

static int open_now, open_max, served;

static void session(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[512];
    ssize_t n;
    if (++open_now > open_max)
        open_max = open_now;
    while ((n = mp_co_read(fd, buf, sizeof buf, 60)) > 0)
        if (mp_co_write(fd, buf, (size_t)n, 60) != n)
            break;
    open_now--;
    close(fd);
}

static void acceptor(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    while (served < nclients) {
        int fd = mp_co_accept(lfd, NULL, NULL, 60);
        if (fd < 0) {
            fprintf(stderr, "accept: %s\n", mp_strerror(fd));
            return;
        }
        served++;
        if (mp_co_spawn(NULL, session, (void *)(intptr_t)fd, 32 * 1024) < 0)
            close(fd);
    }
}

/* ---- the clients (in the child) ---- */

static int echoed, failed;
static mp_chan *all_done;

static void client(void *arg)
{
    int id = (int)(intptr_t)arg;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    char msg[64], back[64];
    int n = snprintf(msg, sizeof msg, "hello from client %d\n", id);
    size_t got = 0;
    if (fd < 0 || mp_co_connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr, 60) < 0 ||
        mp_co_write(fd, msg, (size_t)n, 60) != n) {
        failed++;
    } else {
        while (got < (size_t)n) {
            ssize_t r = mp_co_read(fd, back + got, (size_t)n - got, 60);
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        if (got == (size_t)n && memcmp(msg, back, (size_t)n) == 0)
            echoed++;
        else
            failed++;
    }
    if (echoed + failed == nclients)
        mp_chan_close(all_done); /* the last one lets everyone go */
    else {
        int v;
        mp_chan_recv(all_done, &v, MP_FOREVER); /* hold the line open */
    }
    if (fd >= 0)
        close(fd);
}

static int clients_main(void *arg)
{
    if (mp_chan_new(&all_done, sizeof(int), 0) < 0)
        return 1;
    for (int i = 0; i < nclients; i++)
        if (mp_co_spawn(NULL, client, (void *)(intptr_t)i, 32 * 1024) < 0)
            return 1;
    mp_co_run();
    printf("clients: %d echoes, %d failures\n", echoed, failed);
    fflush(stdout);
    return failed != 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        nclients = atoi(argv[1]);
    /* Each side needs a descriptor per client. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < (rlim_t)nclients + 64) {
        nclients = (int)rl.rlim_cur - 64;
        printf("descriptor limit %lu: %d clients\n", (unsigned long)rl.rlim_cur, nclients);
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    server_addr.sin_family = AF_INET;
    server_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof server_addr;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0 ||
        listen(lfd, 4096) < 0 || getsockname(lfd, (struct sockaddr *)&server_addr, &alen) < 0 ||
        mp_co_nonblock(lfd) < 0) {
        perror("listen");
        return 1;
    }
    printf("echo server on 127.0.0.1:%d, %d clients\n", ntohs(server_addr.sin_port), nclients);
    fflush(stdout);
    double t0 = now();
    mp_process *clients;
    if (mp_process_new(&clients, clients_main, NULL, NULL) < 0 || mp_process_start(clients) < 0)
        return 1;
    mp_co_spawn(NULL, acceptor, (void *)(intptr_t)lfd, 0);
    int rc = mp_co_run();
    int code = -1;
    mp_process_join(clients, MP_FOREVER);
    mp_process_exitcode(clients, &code);
    printf("server: %d connections, at most %d open at once, %.2f s\n", served, open_max, now() - t0);
    mp_process_free(clients);
    close(lfd);
    return rc < 0 || code != 0 || open_max != nclients;
}
