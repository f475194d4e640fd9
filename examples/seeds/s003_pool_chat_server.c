/* Seed 003, "通过进程池利用socket实现并发聊天": a server whose pool of four
 * workers serves clients.  The seed's loop (accept in the parent, then
 * apply_async(talk, conn)) becomes mp_pool_serve: each of the four workers
 * accepts on the listening socket itself and talks to its client, so no
 * connection passes through the parent, a worker that dies is replaced,
 * and the service goes on.  With six clients at once, four are served and
 * two wait their turn until a worker is free.
 *
 *   s003_pool_chat_server             the seed's scene: six client
 *                                     processes of its own, then exit
 *   s003_pool_chat_server PORT        serve on 127.0.0.1:PORT until
 *                                     SIGINT or SIGTERM (try it with
 *                                     s003_pool_chat_client)
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <mproc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One client's conversation, on a pool worker: echo in upper case. */
static int talk(int conn, void *ud)
{
    (void)ud;
    printf("进程pid: %d\n", (int)getpid());
    fflush(stdout);
    char msg[1024];
    for (;;) {
        ssize_t n = recv(conn, msg, sizeof msg, 0);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            msg[i] = (char)toupper((unsigned char)msg[i]);
        if (send(conn, msg, (size_t)n, MSG_NOSIGNAL) != n)
            break;
    }
    return 0; /* mp_pool_serve closes conn */
}

static int listen_on(int port, int *bound)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 5) < 0 ||
        getsockname(s, (struct sockaddr *)&a, &alen) < 0) {
        perror("listen");
        exit(1);
    }
    *bound = ntohs(a.sin_port);
    return s;
}

/* ---- the seed's scene: six clients of our own ---- */

typedef struct {
    int port, id;
    mp_sem *answered;   /* released by each client once it has its answer */
    mp_event *hang_up;  /* clients keep their line open until this is set */
} client_arg;

static int client(void *argp)
{
    client_arg *a = argp;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)a->port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) < 0)
        return 1;
    char msg[64], reply[64];
    int n = snprintf(msg, sizeof msg, "hello from client %d", a->id);
    send(s, msg, (size_t)n, MSG_NOSIGNAL);
    ssize_t got = recv(s, reply, sizeof reply - 1, 0);
    if (got <= 0)
        return 1;
    reply[got] = '\0';
    printf("client %d got: %s\n", a->id, reply);
    fflush(stdout);
    mp_sem_release(a->answered);
    mp_event_wait(a->hang_up, MP_FOREVER);
    close(s);
    return 0;
}

/* The scene, on a thread of its own while main serves: six clients, four
 * served at once, then the rest; then stop the server. */
typedef struct {
    mp_pool *p;
    int port, rc;
} scene_arg;

static void *scene(void *argp)
{
    scene_arg *s = argp;
    mp_sem *answered;
    mp_event *hang_up;
    mp_sem_new(&answered, 0, 0);
    mp_event_new(&hang_up);
    mp_process *cl[6];
    client_arg args[6];
    for (int i = 0; i < 6; i++) {
        args[i] = (client_arg){s->port, i + 1, answered, hang_up};
        mp_process_new(&cl[i], client, &args[i], NULL);
        mp_process_start(cl[i]);
    }
    int rc = 0;
    /* Four workers, four conversations: the other two clients wait. */
    for (int i = 0; i < 4 && rc == 0; i++)
        rc = mp_sem_acquire(answered, 30);
    int early = rc == 0 && mp_sem_acquire(answered, 0.3) == 0; /* none, with 4 workers */
    printf("4 clients served, %d waiting for a free worker\n", 2 - early);
    fflush(stdout);
    mp_event_set(hang_up); /* the first four hang up: their workers are free */
    for (int i = early; i < 2 && rc == 0; i++)
        rc = mp_sem_acquire(answered, 30);
    for (int i = 0; i < 6; i++) {
        mp_process_join(cl[i], MP_FOREVER);
        mp_process_free(cl[i]);
    }
    printf("all 6 clients served\n");
    fflush(stdout);
    mp_sem_free(answered);
    mp_event_free(hang_up);
    s->rc = rc;
    mp_pool_serve_stop(s->p);
    return NULL;
}

static mp_pool *serving;

static void on_signal(int sig)
{
    (void)sig;
    mp_pool_serve_stop(serving); /* async-signal-safe */
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 0, bound;
    int lsock = listen_on(port, &bound);
    mp_pool *p;
    int rc = mp_pool_new(&p, &(mp_pool_opts){.workers = 4});
    if (rc < 0) {
        fprintf(stderr, "pool: %s\n", mp_strerror(rc));
        return 1;
    }
    scene_arg s = {p, bound, 0};
    pthread_t t;
    if (argc > 1) {
        serving = p;
        struct sigaction sa = {.sa_handler = on_signal};
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        printf("serving on 127.0.0.1:%d (Ctrl-C stops)\n", bound);
        fflush(stdout);
    } else if (pthread_create(&t, NULL, scene, &s) != 0) {
        return 1;
    }
    rc = mp_pool_serve(p, lsock, talk, NULL, NULL);
    if (rc < 0)
        fprintf(stderr, "serve: %s\n", mp_strerror(rc));
    if (argc == 1)
        pthread_join(t, NULL);
    close(lsock);
    mp_pool_close(p);
    mp_pool_join(p, MP_FOREVER);
    mp_pool_free(p);
    return rc < 0 || s.rc < 0;
}
