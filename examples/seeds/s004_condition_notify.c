/* Seed 004, "Condition": ten threads wait on a condition; the seed's main
 * loop reads a number n and notifies n of them.  Here the numbers come from
 * the command line (default 3 3 4; "q" stops early), echoed after the
 * prompt, and each batch is seen through before the next is sent. */
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static mp_cond *con;
static mp_sem *woke;   /* released by each thread after it ran */

static int run(void *arg)
{
    int n = (int)(intptr_t)arg;
    mp_cond_acquire(con, MP_FOREVER);
    mp_sem_release(woke); /* "I am waiting" (see main) */
    mp_cond_wait(con, MP_FOREVER);
    printf("run the thread :%d\n", n);
    fflush(stdout);
    mp_cond_release(con);
    mp_sem_release(woke);
    return 0;
}

int main(int argc, char **argv)
{
    static const char *dflt[] = {"3", "3", "4"};
    const char **inputs = argc > 1 ? (const char **)argv + 1 : dflt;
    int ninputs = argc > 1 ? argc - 1 : 3;
    int rc;
    if ((rc = mp_cond_new(&con, NULL)) < 0 || (rc = mp_sem_new(&woke, 0, 0)) < 0) {
        fprintf(stderr, "condition: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_thread *t[10];
    for (int i = 0; i < 10; i++) {
        mp_thread_new(&t[i], run, (void *)(intptr_t)i, &(mp_thread_opts){.daemon = true});
        mp_thread_start(t[i]);
    }
    /* All ten are waiting before the first notify (each said so while
     * holding the lock, so it is inside wait once we get the lock). */
    for (int i = 0; i < 10; i++)
        mp_sem_acquire(woke, MP_FOREVER);
    int left = 10;
    for (int k = 0; k < ninputs; k++) {
        printf(">>>>%s\n", inputs[k]);
        fflush(stdout);
        if (strcmp(inputs[k], "q") == 0)
            break;
        int n = atoi(inputs[k]);
        if (n > left)
            n = left;
        mp_cond_acquire(con, MP_FOREVER);
        mp_cond_notify(con, (unsigned)n);
        mp_cond_release(con);
        for (int i = 0; i < n; i++)
            mp_sem_acquire(woke, MP_FOREVER);
        left -= n;
    }
    /* Python's program leaves the others waiting forever (its threads are
     * not daemons, so it never ends); ours are daemons: exit ends them. */
    for (int i = 0; i < 10; i++) {
        mp_thread_join(t[i], left == 0 ? MP_FOREVER : 0);
        mp_thread_free(t[i]);
    }
    return 0;
}
