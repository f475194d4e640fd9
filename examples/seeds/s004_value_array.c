/* Seed 004, "Array, Value": two processes share a Value and an Array.
 *
 * Each sets the value to 3.333333333333333 and negates every element, so
 * after both the array is back where it started.  Each does its whole
 * update under the array's lock, so the two never interleave (in Python's
 * version, without a lock, they usually do not either). */
#include <mproc.h>
#include <stdio.h>

typedef struct {
    mp_value *num;
    mp_array *arr;
} shared;

static int func(void *arg)
{
    shared *s = arg;
    *(double *)mp_value_ptr(s->num) = 3.333333333333333;
    mp_lock *lock = mp_array_lock(s->arr);
    if (!MP_ACQUIRED(mp_lock_acquire(lock, MP_FOREVER)))
        return 1;
    int *b = mp_array_data(s->arr);
    for (size_t i = 0; i < mp_array_len(s->arr); i++)
        b[i] = -b[i];
    mp_lock_release(lock);
    return 0;
}

int main(void)
{
    double zero = 0.0;
    int init[11];
    for (int i = 0; i < 11; i++)
        init[i] = i;
    shared s;
    int rc = mp_value_new(&s.num, sizeof(double), &zero);  /* Value('d', 0.0) */
    if (rc == 0)
        rc = mp_array_new(&s.arr, 11, sizeof(int), init);  /* Array('i', range(11)) */
    mp_process *c = NULL, *d = NULL;
    if (rc == 0)
        rc = mp_process_new(&c, func, &s, NULL);
    if (rc == 0)
        rc = mp_process_new(&d, func, &s, NULL);
    if (rc == 0)
        rc = mp_process_start(c);
    if (rc == 0)
        rc = mp_process_start(d);
    if (rc == 0)
        rc = mp_process_join(c, MP_FOREVER);
    if (rc == 0)
        rc = mp_process_join(d, MP_FOREVER);
    if (rc < 0) {
        fprintf(stderr, "mproc: %s\n", mp_strerror(rc));
        return 1;
    }
    printf("%.15f\n", *(double *)mp_value_ptr(s.num));
    const int *a = mp_array_data(s.arr);
    for (size_t i = 0; i < mp_array_len(s.arr); i++)
        printf("%d\n", a[i]);
    mp_process_free(c);
    mp_process_free(d);
    mp_array_free(s.arr);
    mp_value_free(s.num);
    return 0;
}
