/* Seed 000, program 2: a child process and its parent.
 *
 * The parent prints its own ppid and pid, then starts a child running the
 * same function: the child's ppid is the parent's pid. */
#include <mproc.h>
#include <stdio.h>

static int info(void *title)
{
    printf("+++++++++++++%s++++++++++++++\n", (const char *)title);
    printf("ppid: %d\n", (int)mp_getppid());
    printf("pid: %d\n", (int)mp_getpid());
    return 0;
}

int main(void)
{
    info("main process");
    fflush(stdout); /* the child inherits unflushed output otherwise */

    mp_process *p;
    int rc = mp_process_new(&p, info, "other process", NULL);
    if (rc == 0)
        rc = mp_process_start(p);
    if (rc == 0)
        rc = mp_process_join(p, MP_FOREVER);
    if (rc < 0) {
        fprintf(stderr, "process: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_process_free(p);
    return 0;
}
