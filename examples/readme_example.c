/* The README's example: fork a process, share a value, join. */
#include <mproc.h>
#include <stdio.h>

static int child(void *arg)
{
    double *shared = arg;  /* same address in the child */
    *shared = 3.1415926;
    return 0;              /* the exit status */
}

int main(void)
{
    double *value = mp_shared_alloc(sizeof *value); /* zeroed, shared */
    mp_process *p;
    int rc = mp_process_new(&p, child, value, NULL);
    if (rc == 0)
        rc = mp_process_start(p);
    if (rc == 0)
        rc = mp_process_join(p, 5.0);  /* seconds; MP_FOREVER blocks */
    if (rc < 0) {
        fprintf(stderr, "mproc: %s\n", mp_strerror(rc));
        return 1;
    }
    int code;
    mp_process_exitcode(p, &code);
    printf("child exited with %d, value = %g\n", code, *value);
    mp_process_free(p);
    mp_shared_free(value);
    return 0;
}
