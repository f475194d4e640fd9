/* Seed 002, section 2: start two processes, then join them.
 *
 * Each child says it started, sleeps 3 s, then prints its parent's pid and
 * its own.  Without the joins the parent would go on at once; with them it
 * prints "all sub process is done!" last. */
#include <mproc.h>
#include <stdio.h>
#include <time.h>

static int func(void *arg)
{
    (void)arg;
    printf("start a process\n");
    fflush(stdout);
    nanosleep(&(struct timespec){.tv_sec = 3}, NULL);
    printf("the process parent id : %d\n", (int)mp_getppid());
    printf("the process id is : %d\n", (int)mp_getpid());
    return 0;
}

int main(void)
{
    mp_process *processes[2];
    for (int i = 0; i < 2; i++) {
        int rc = mp_process_new(&processes[i], func, NULL, NULL);
        if (rc < 0) {
            fprintf(stderr, "process: %s\n", mp_strerror(rc));
            return 1;
        }
    }
    for (int i = 0; i < 2; i++) {
        int rc = mp_process_start(processes[i]);
        if (rc < 0) {
            fprintf(stderr, "start: %s\n", mp_strerror(rc));
            return 1;
        }
    }
    printf("start all process\n");
    fflush(stdout);
    for (int i = 0; i < 2; i++) {
        mp_process_join(processes[i], MP_FOREVER);
        mp_process_free(processes[i]);
    }
    printf("all sub process is done!\n");
    return 0;
}
