/* Seed 004, "自定义线程类": Python subclasses Thread and overrides run; in C
 * the object and its run function travel together as the target's
 * argument.  Two threads print their number, then work a while (the seed
 * sleeps three seconds; here 0.3). */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdio.h>
#include <time.h>

typedef struct {
    int num;
} my_thread;

static int run(void *arg) /* the run method */
{
    my_thread *self = arg;
    printf("running on number:%d\n", self->num);
    fflush(stdout);
    nanosleep(&(struct timespec){0, 300 * 1000 * 1000}, NULL);
    return 0;
}

int main(void)
{
    my_thread one = {1}, two = {2};
    mp_thread *t1, *t2;
    int rc;
    if ((rc = mp_thread_new(&t1, run, &one, NULL)) < 0 || (rc = mp_thread_new(&t2, run, &two, NULL)) < 0) {
        fprintf(stderr, "thread: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_thread_start(t1);
    mp_thread_start(t2);
    mp_thread_join(t1, MP_FOREVER);
    mp_thread_join(t2, MP_FOREVER);
    mp_thread_free(t1);
    mp_thread_free(t2);
    return 0;
}
