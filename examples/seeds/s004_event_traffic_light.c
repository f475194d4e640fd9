/* Seed 004, "Event": a traffic light thread and three car threads.  The
 * light is an Event: set is green (and yellow), clear is red; cars run on
 * green and wait on red.  The seed loops forever with one-second ticks;
 * here a tick is 0.1 s and the program stops after two light cycles. */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define TICK 0.1
#define CYCLES 2

static mp_event *event;   /* the light: set = green */
static mp_event *stop;    /* end of the show */

static int light(void *arg)
{
    if (!mp_event_is_set(event))
        mp_event_set(event);
    int count = 0;
    for (int cycles = 0; cycles < CYCLES;) {
        if (count < 10) {
            printf("\033[42;1m---green light on ---\033[0m\n");
        } else if (count < 13) {
            printf("\033[43;1m---yellow light on ---\033[0m\n");
        } else if (count < 20) {
            if (mp_event_is_set(event))
                mp_event_clear(event);
            printf("\033[41;1m --red light on -- \033[0m\n");
        } else {
            count = 0;
            mp_event_set(event);
            cycles++;
            continue;
        }
        fflush(stdout);
        mp_event_wait(stop, TICK); /* time.sleep(1), but ends early on stop */
        count++;
    }
    mp_event_set(stop);
    return 0;
}

static int car(void *arg)
{
    int n = (int)(intptr_t)arg;
    unsigned seed = (unsigned)n * 7919u + 1;
    for (;;) {
        /* time.sleep(random.randrange(10)) */
        if (mp_event_wait(stop, TICK * (rand_r(&seed) % 10)) == 0)
            return 0;
        if (mp_event_is_set(event))
            printf("car [%d] is running..\n", n);
        else
            printf("car [%d] is waiting for the red light..\n", n);
        fflush(stdout);
    }
}

int main(void)
{
    int rc;
    if ((rc = mp_event_new(&event)) < 0 || (rc = mp_event_new(&stop)) < 0) {
        fprintf(stderr, "event: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_thread *t[4];
    for (int i = 0; i < 4; i++) {
        rc = mp_thread_new(&t[i], i == 0 ? light : car, (void *)(intptr_t)(i - 1), NULL);
        if (rc == 0)
            rc = mp_thread_start(t[i]);
        if (rc < 0) {
            fprintf(stderr, "thread: %s\n", mp_strerror(rc));
            return 1;
        }
    }
    for (int i = 0; i < 4; i++) {
        mp_thread_join(t[i], MP_FOREVER);
        mp_thread_free(t[i]);
    }
    mp_event_free(event);
    mp_event_free(stop);
    return 0;
}
