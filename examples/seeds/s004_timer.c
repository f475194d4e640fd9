/* Seed 004, "Timer": call hello after a delay (Python's example waits ten
 * seconds; one is enough to see it).  The program waits for the pending
 * timer at exit, as Python does. */
#include <mproc.h>
#include <stdio.h>

static void hello(void *arg)
{
    (void)arg;
    printf("hello,world\n");
    fflush(stdout);
}

int main(void)
{
    mp_timer *t;
    int rc = mp_timer_new(&t, 1.0, hello, NULL);
    if (rc == 0)
        rc = mp_timer_start(t);
    if (rc < 0) {
        fprintf(stderr, "timer: %s\n", mp_strerror(rc));
        return 1;
    }
    return 0; /* exit waits for the timer thread */
}
