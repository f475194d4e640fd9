/* Seed 000, program 3: processes do not share memory, threads do.
 *
 * Each child process appends to its own copy of the parent's list, so every
 * child prints a one-element list and the parent's list stays empty.  Then
 * five threads append to the one list the process has, and it grows.  With
 * mproc, processes share memory only when asked: see s000_value_array. */
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    int items[16];
    int len;
} int_list;

static int_list li; /* the parent's list: each child gets a copy */

static void print_list(const int_list *l)
{
    printf("[");
    for (int i = 0; i < l->len; i++)
        printf(i ? ", %d" : "%d", l->items[i]);
    printf("]\n");
}

static int foo(void *arg)
{
    li.items[li.len++] = (int)(intptr_t)arg;
    print_list(&li);
    fflush(stdout);
    return 0;
}

int main(void)
{
    printf("+++++++++process+++++++++\n");
    fflush(stdout);
    for (int item = 0; item < 5; item++) {
        mp_process *p;
        int rc = mp_process_new(&p, foo, (void *)(intptr_t)item, NULL);
        if (rc == 0)
            rc = mp_process_start(p);
        if (rc == 0)
            rc = mp_process_join(p, MP_FOREVER);
        if (rc < 0) {
            fprintf(stderr, "process: %s\n", mp_strerror(rc));
            return 1;
        }
        mp_process_free(p);
    }
    printf("parent's list after the children: ");
    print_list(&li);

    printf("+++++++++thread++++++++++\n");
    fflush(stdout);
    for (int item = 0; item < 5; item++) {
        mp_thread *t;
        int rc = mp_thread_new(&t, foo, (void *)(intptr_t)item, NULL);
        if (rc == 0)
            rc = mp_thread_start(t);
        if (rc == 0)
            rc = mp_thread_join(t, MP_FOREVER);
        if (rc < 0) {
            fprintf(stderr, "thread: %s\n", mp_strerror(rc));
            return 1;
        }
        mp_thread_free(t);
    }
    return 0;
}
