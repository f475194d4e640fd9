/* Seed 004, "未使用锁": ten threads each add one to a global and print it,
 * without a lock.  The seed notes that it happens to work in Python 3 (the
 * GIL); in C the increment is three instructions and can lose updates, so
 * this version makes the counter atomic: what a C programmer must do when
 * there is no lock.  All ten print after a pause (the seed: two seconds). */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static atomic_int gl_num;

static int show(void *arg)
{
    nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
    int now = atomic_fetch_add(&gl_num, 1) + 1;
    printf("%d\n", now);
    fflush(stdout);
    return 0;
}

int main(void)
{
    for (int i = 0; i < 10; i++) {
        mp_thread *t;
        int rc = mp_thread_new(&t, show, NULL, NULL);
        if (rc == 0)
            rc = mp_thread_start(t);
        if (rc < 0) {
            fprintf(stderr, "thread: %s\n", mp_strerror(rc));
            return 1;
        }
        mp_thread_free(t); /* exit waits for the ten */
    }
    printf("main thread stop\n");
    fflush(stdout);
    return 0;
}
