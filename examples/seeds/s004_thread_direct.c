/* Seed 004, "threads, called directly": ten threads each wait a second and
 * print their number; the main thread says it stops first, and the program
 * still waits for the ten (they are not daemons) before it exits. */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static int show(void *arg)
{
    nanosleep(&(struct timespec){1, 0}, NULL); /* time.sleep(1) */
    printf("threading %d\n", (int)(intptr_t)arg);
    fflush(stdout);
    return 0;
}

int main(void)
{
    for (int i = 0; i < 10; i++) {
        mp_thread *t;
        int rc = mp_thread_new(&t, show, (void *)(intptr_t)i, NULL);
        if (rc == 0)
            rc = mp_thread_start(t);
        if (rc < 0) {
            fprintf(stderr, "thread: %s\n", mp_strerror(rc));
            return 1;
        }
        mp_thread_free(t); /* runs on; exit waits for it */
    }
    printf("main thread stop\n");
    fflush(stdout);
    return 0;
}
