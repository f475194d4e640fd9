/* Seed 000, program 5: share memory between processes with Value and Array.
 *
 * The child sets the shared double and negates every element of the shared
 * array; the parent, after joining it, sees both changes. */
#include <mproc.h>
#include <stdio.h>

typedef struct {
    mp_value *num;
    mp_array *arr;
} shared;

static int foo(void *arg)
{
    shared *s = arg;
    *(double *)mp_value_ptr(s->num) = 3.1415926;
    int *a = mp_array_data(s->arr);
    for (size_t i = 0; i < mp_array_len(s->arr); i++)
        a[i] = -a[i];
    return 0;
}

int main(void)
{
    double zero = 0;
    int init[10];
    for (int i = 0; i < 10; i++)
        init[i] = i;
    shared s;
    int rc = mp_value_new(&s.num, sizeof(double), &zero);   /* Value('d', 0) */
    if (rc == 0)
        rc = mp_array_new(&s.arr, 10, sizeof(int), init);   /* Array('i', range(10)) */
    mp_process *p = NULL;
    if (rc == 0)
        rc = mp_process_new(&p, foo, &s, NULL);
    if (rc == 0)
        rc = mp_process_start(p);
    if (rc == 0)
        rc = mp_process_join(p, MP_FOREVER);
    if (rc < 0) {
        fprintf(stderr, "mproc: %s\n", mp_strerror(rc));
        return 1;
    }
    printf("%.7f\n", *(double *)mp_value_ptr(s.num));
    const int *a = mp_array_data(s.arr);
    printf("[");
    for (size_t i = 0; i < mp_array_len(s.arr); i++)
        printf(i ? ", %d" : "%d", a[i]);
    printf("]\n");
    mp_process_free(p);
    mp_array_free(s.arr);
    mp_value_free(s.num);
    return 0;
}
