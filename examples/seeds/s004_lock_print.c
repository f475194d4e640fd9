/* Seed 004, "process synchronisation": ten processes print under one Lock,
 * so their lines never mix.  The order of the lines is up to the scheduler. */
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>

static mp_lock *lock;

static int f(void *arg)
{
    int rc = mp_lock_acquire(lock, MP_FOREVER);
    if (!MP_ACQUIRED(rc))
        return 1;
    printf("hello world %d\n", (int)(intptr_t)arg);
    fflush(stdout);
    mp_lock_release(lock);
    return 0;
}

int main(void)
{
    int rc = mp_lock_new(&lock);
    if (rc < 0) {
        fprintf(stderr, "lock: %s\n", mp_strerror(rc));
        return 1;
    }
    for (int num = 0; num < 10; num++) {
        mp_process *p;
        rc = mp_process_new(&p, f, (void *)(intptr_t)num, NULL);
        if (rc == 0)
            rc = mp_process_start(p);
        if (rc < 0) {
            fprintf(stderr, "process: %s\n", mp_strerror(rc));
            return 1;
        }
        mp_process_free(p); /* detached: joined at exit, as Python does */
    }
    return 0;
}
