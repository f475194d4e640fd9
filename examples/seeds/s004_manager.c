/* Seed 004, "Manager shares memory": ten processes set the same three keys
 * of a shared dict and append to a shared list that starts as range(5);
 * each prints the list as it sees it, then the parent prints both.  Keys
 * and values are bytes in C: Python's 1, 2, 0.25 and None are written as
 * strings. */
#include <mproc.h>
#include <stdio.h>
#include <string.h>

static mp_dict *d;
static mp_list *l;

static void print_list(void)
{
    char line[512];
    int n = snprintf(line, sizeof line, "[");
    size_t len = mp_list_len(l);
    for (size_t i = 0; i < len && n < (int)sizeof line - 16; i++) {
        int v;
        size_t vl;
        if (mp_list_get(l, i, &v, sizeof v, &vl) == 0)
            n += snprintf(line + n, sizeof line - (size_t)n, i ? ", %d" : "%d", v);
    }
    printf("%s]\n", line);
    fflush(stdout);
}

static int f(void *arg)
{
    (void)arg;
    mp_dict_set(d, "1", 1, "1", 1);
    mp_dict_set(d, "2", 1, "2", 1);
    mp_dict_set(d, "0.25", 4, "None", 4);
    int one = 1;
    if (mp_list_append(l, &one, sizeof one) != 0)
        return 1;
    print_list();
    return 0;
}

int main(void)
{
    int rc = mp_dict_new(&d);
    if (rc == 0)
        rc = mp_list_new(&l);
    for (int i = 0; rc == 0 && i < 5; i++) /* manager.list(range(5)) */
        rc = mp_list_append(l, &i, sizeof i);
    if (rc < 0) {
        fprintf(stderr, "manager: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_process *p_list[10];
    for (int i = 0; i < 10; i++) {
        if ((rc = mp_process_new(&p_list[i], f, NULL, NULL)) < 0 ||
            (rc = mp_process_start(p_list[i])) < 0) {
            fprintf(stderr, "process: %s\n", mp_strerror(rc));
            return 1;
        }
    }
    for (int i = 0; i < 10; i++) {
        mp_process_join(p_list[i], MP_FOREVER);
        mp_process_free(p_list[i]);
    }
    /* print(d): the keys in the order the program wrote them */
    const char *keys[] = {"1", "2", "0.25"};
    printf("{");
    for (int i = 0; i < 3; i++) {
        char v[16];
        size_t vl;
        if (mp_dict_get(d, keys[i], strlen(keys[i]), v, sizeof v, &vl) == 0)
            printf("%s%s: %.*s", i ? ", " : "", keys[i], (int)vl, v);
    }
    printf("}\n");
    print_list();
    mp_dict_free(d);
    mp_list_free(l);
    return 0;
}
