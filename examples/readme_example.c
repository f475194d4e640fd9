/* The README's example: fork a process, share a Value, join. */
#include <mproc.h>
#include <stdio.h>

static int child(void *arg)
{
    mp_value *v = arg;                 /* same object in the child */
    mp_lock_acquire(mp_value_lock(v), MP_FOREVER);
    *(double *)mp_value_ptr(v) += 3.1415926;
    mp_lock_release(mp_value_lock(v));
    return 0;                          /* the exit status */
}

int main(void)
{
    mp_value *v;
    mp_process *p;
    int rc = mp_value_new(&v, sizeof(double), NULL);  /* Value('d', 0) */
    if (rc == 0)
        rc = mp_process_new(&p, child, v, NULL);
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
    printf("child exited with %d, value = %g\n", code, *(double *)mp_value_ptr(v));
    mp_process_free(p);
    mp_value_free(v);
    return 0;
}
