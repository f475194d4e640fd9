/* Seed 004, "join & daemon": a daemon thread `main` starts five workers one
 * after the other, giving each one second (join with a timeout) though each
 * takes two; the main thread gives `main` two seconds, then ends, and the
 * program exits without waiting for the daemon or its workers.  (Python
 * makes threads started by a daemon daemons too; here they are made daemons
 * explicitly.) */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static int run(void *arg)
{
    printf("[%d]---running---\n\n", (int)(intptr_t)arg);
    fflush(stdout);
    nanosleep(&(struct timespec){2, 0}, NULL); /* time.sleep(2) */
    printf("---done----\n");
    fflush(stdout);
    return 0;
}

static int main_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++) {
        mp_thread *t;
        mp_thread_opts o = {.daemon = true};
        if (mp_thread_new(&t, run, (void *)(intptr_t)i, &o) != 0 || mp_thread_start(t) != 0)
            return 1;
        mp_thread_join(t, 1.0); /* t.join(1): gives up after a second */
        printf("starting thread %s\n", mp_thread_name(t));
        fflush(stdout);
        mp_thread_free(t);
    }
    return 0;
}

int main(void)
{
    mp_thread *m;
    mp_thread_opts o = {.daemon = true}; /* m.setDaemon(True) */
    int rc = mp_thread_new(&m, main_thread, NULL, &o);
    if (rc == 0)
        rc = mp_thread_start(m);
    if (rc < 0) {
        fprintf(stderr, "thread: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_thread_join(m, 2.0); /* m.join(timeout=2) */
    printf("---main thread done----\n");
    fflush(stdout);
    return 0; /* daemons do not hold the exit */
}
