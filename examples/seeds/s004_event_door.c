/* Seed 004, "Event": a door that opens when a card is swiped.  The door
 * thread shows its state every half tick; a staff member who finds it
 * closed swipes (sets the event) and passes once it is open; the door
 * closes itself after a while (clears the event).  The seed's door runs
 * forever; this one shuts after the fifth person has passed. */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define HALF 0.1 /* the seed's time.sleep(0.5) */

static mp_event *door_swiping_event;
static atomic_int passed;

static void pause_for(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static int door(void *arg)
{
    int door_open_time_counter = 0;
    for (;;) {
        if (mp_event_is_set(door_swiping_event)) {
            printf("\033[32;1m door opening...\033[0m\n");
            door_open_time_counter++;
        } else {
            printf("\033[31;1m door closed....,swipe to open.\033[0m\n");
            fflush(stdout);
            door_open_time_counter = 0;
            if (atomic_load(&passed) == 5)
                return 0; /* everyone is in: lock up */
            /* Wait for a swipe; look up now and then to see if all passed. */
            while (mp_event_wait(door_swiping_event, HALF) == MP_ETIMEDOUT)
                if (atomic_load(&passed) == 5)
                    return 0;
        }
        fflush(stdout);
        if (door_open_time_counter > 3)
            mp_event_clear(door_swiping_event);
        pause_for(HALF);
    }
}

static int staff(void *arg)
{
    int n = (int)(intptr_t)arg;
    printf("staff [%d] is comming...\n", n);
    fflush(stdout);
    for (;;) {
        if (mp_event_is_set(door_swiping_event)) {
            printf("\033[34;1m door is opened ,passing....\033[0m\n");
            fflush(stdout);
            atomic_fetch_add(&passed, 1);
            return 0;
        }
        printf("staff [%d] sees door got closed,swipping the card....\n", n);
        mp_event_set(door_swiping_event);
        printf("after set %s\n", mp_event_is_set(door_swiping_event) ? "True" : "False");
        fflush(stdout);
        pause_for(HALF);
    }
}

int main(void)
{
    int rc = mp_event_new(&door_swiping_event);
    if (rc < 0) {
        fprintf(stderr, "event: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_thread *door_thread, *p[5];
    mp_thread_new(&door_thread, door, NULL, NULL);
    mp_thread_start(door_thread);
    unsigned seed = 42;
    for (int i = 0; i < 5; i++) {
        mp_thread_new(&p[i], staff, (void *)(intptr_t)i, NULL);
        pause_for(HALF * 2 * (rand_r(&seed) % 3)); /* time.sleep(random.randrange(3)) */
        mp_thread_start(p[i]);
    }
    for (int i = 0; i < 5; i++) {
        mp_thread_join(p[i], MP_FOREVER);
        mp_thread_free(p[i]);
    }
    mp_thread_join(door_thread, MP_FOREVER);
    mp_thread_free(door_thread);
    mp_event_free(door_swiping_event);
    return 0;
}
