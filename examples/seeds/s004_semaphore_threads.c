/* Seed 004, "semaphore": twenty threads, at most five at a time inside a
 * BoundedSemaphore(5).  Each stays a moment (Python: one second; here a
 * fifth of one) and prints its number, so they finish in waves of five. */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static mp_sem *semaphore;

static int run(void *arg)
{
    if (mp_sem_acquire(semaphore, MP_FOREVER) != 0)
        return 1;
    nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL); /* the work */
    printf("run the thread :%d\n", (int)(intptr_t)arg);
    fflush(stdout);
    mp_sem_release(semaphore);
    return 0;
}

int main(void)
{
    int rc = mp_sem_new(&semaphore, 5, 5); /* BoundedSemaphore(5) */
    if (rc < 0) {
        fprintf(stderr, "semaphore: %s\n", mp_strerror(rc));
        return 1;
    }
    for (int i = 0; i < 20; i++) {
        mp_thread *t;
        if ((rc = mp_thread_new(&t, run, (void *)(intptr_t)i, NULL)) < 0 ||
            (rc = mp_thread_start(t)) < 0) {
            fprintf(stderr, "thread: %s\n", mp_strerror(rc));
            return 1;
        }
        mp_thread_free(t); /* exit waits for all twenty */
    }
    return 0;
}
