/* Seed 004, section 1.2.1: a Process that says hello after a second; the
 * parent joins it (waits for it to finish). */
#include <mproc.h>
#include <stdio.h>
#include <time.h>

static int f(void *name)
{
    nanosleep(&(struct timespec){.tv_sec = 1}, NULL);
    printf("\033[31;1m hello %s\033[0m\n", (const char *)name);
    return 0;
}

int main(void)
{
    mp_process *p;
    int rc = mp_process_new(&p, f, "陈鑫", NULL);
    if (rc == 0)
        rc = mp_process_start(p);
    if (rc == 0)
        rc = mp_process_join(p, MP_FOREVER); /* wait for it to finish */
    mp_process_free(p);
    if (rc < 0) {
        fprintf(stderr, "process: %s\n", mp_strerror(rc));
        return 1;
    }
    return 0;
}
