/* Test helper: starts a non-daemon thread that writes "done" to fd 1 after
 * a moment of work, and a daemon thread that never ends, then returns from
 * main.  The exit must wait for the first thread and not for the second. */
#define _POSIX_C_SOURCE 200809L
#include <mproc.h>
#include <time.h>
#include <unistd.h>

static int slow_write(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 200 * 1000 * 1000}; /* the work exit waits for */
    nanosleep(&ts, NULL);
    return write(1, "done", 4) == 4 ? 0 : 1;
}

static int sleep_forever(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return 0;
}

int main(void)
{
    mp_thread *t, *d;
    if (mp_thread_new(&t, slow_write, NULL, NULL) != 0 ||
        mp_thread_new(&d, sleep_forever, NULL, &(mp_thread_opts){.daemon = true}) != 0 ||
        mp_thread_start(d) != 0 || mp_thread_start(t) != 0)
        return 3;
    mp_thread_free(t); /* detached: still waited for at exit */
    return 0;
}
