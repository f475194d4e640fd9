/* Seed 000, program 3 (process half): processes do not share memory.
 *
 * Each child appends to its own copy of the parent's list, so every child
 * prints a one-element list.  (The thread half of the seed, where threads
 * share the list, is in s000_process_vs_thread once threads exist.) With
 * mproc, memory is shared only when asked for: see s000_value_array. */
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
    return 0;
}
