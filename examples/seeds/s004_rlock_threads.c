/* Seed 004, "recursive thread lock": ten threads each increment a counter
 * and print it while holding an RLock, so the numbers come out 1 to 10.
 * Here main joins the ten before saying it stops, so that line is always
 * last (in Python it is last only because the threads happen to be fast). */
#include <mproc.h>
#include <stdio.h>

static mp_rlock *lock;
static int cx_num;

static int func(void *arg)
{
    (void)arg;
    if (!MP_ACQUIRED(mp_rlock_acquire(lock, MP_FOREVER)))
        return 1;
    cx_num += 1;
    printf("%d\n", cx_num);
    fflush(stdout);
    mp_rlock_release(lock);
    return 0;
}

int main(void)
{
    int rc = mp_rlock_new(&lock);
    if (rc < 0) {
        fprintf(stderr, "rlock: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_thread *t[10];
    for (int i = 0; i < 10; i++) {
        if ((rc = mp_thread_new(&t[i], func, NULL, NULL)) < 0 || (rc = mp_thread_start(t[i])) < 0) {
            fprintf(stderr, "thread: %s\n", mp_strerror(rc));
            return 1;
        }
    }
    for (int i = 0; i < 10; i++) {
        mp_thread_join(t[i], MP_FOREVER);
        mp_thread_free(t[i]);
    }
    printf("main threading stop\n");
    mp_rlock_free(lock);
    return 0;
}
