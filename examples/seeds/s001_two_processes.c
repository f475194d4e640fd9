/* Seed 001, "建立程序示例": two processes print ---1--- and ---2--- once a
 * second, side by side.  The seed's loops never end; these stop after three
 * rounds. */
#include <mproc.h>
#include <stdio.h>
#include <unistd.h>

#define ROUNDS 3

static int test1(void *arg)
{
    for (int i = 0; i < ROUNDS; i++) {
        printf("---1---\n");
        fflush(stdout);
        sleep(1);
    }
    return 0;
}

static int test2(void *arg)
{
    for (int i = 0; i < ROUNDS; i++) {
        printf("---2---\n");
        fflush(stdout);
        sleep(1);
    }
    return 0;
}

int main(void)
{
    mp_process *p1, *p2;
    int rc;
    if ((rc = mp_process_new(&p1, test1, NULL, NULL)) < 0 ||
        (rc = mp_process_new(&p2, test2, NULL, NULL)) < 0 ||
        (rc = mp_process_start(p1)) < 0 || (rc = mp_process_start(p2)) < 0) {
        fprintf(stderr, "process: %s\n", mp_strerror(rc));
        return 1;
    }
    /* As in Python, the parent's exit waits for its non-daemon children. */
    mp_process_free(p1);
    mp_process_free(p2);
    return 0;
}
