/* Seed 004, "Queues": a child process puts a record and the parent prints
 * it.  Python pickles [42, None, 'hello']; a C program sends a struct. */
#include <mproc.h>
#include <stdio.h>

typedef struct {
    int number;
    const char *nothing; /* None */
    char word[16];
} record;

static int f(void *arg)
{
    mp_queue *q = arg;
    record r = {.number = 42, .nothing = NULL, .word = "hello"};
    return mp_queue_put(q, &r, sizeof r, MP_FOREVER) == 0 ? 0 : 1;
}

int main(void)
{
    mp_queue *q;
    mp_process *p;
    int rc = mp_queue_new(&q, NULL);
    if (rc == 0)
        rc = mp_process_new(&p, f, q, NULL);
    if (rc == 0)
        rc = mp_process_start(p);
    if (rc < 0) {
        fprintf(stderr, "start: %s\n", mp_strerror(rc));
        return 1;
    }
    record r;
    size_t len;
    rc = mp_queue_get(q, &r, sizeof r, &len, 10.0);
    if (rc < 0 || len != sizeof r) {
        fprintf(stderr, "get: %s\n", mp_strerror(rc));
        return 1;
    }
    printf("[%d, %s, '%s']\n", r.number, r.nothing ? r.nothing : "None", r.word);
    mp_process_join(p, MP_FOREVER);
    mp_process_free(p);
    mp_queue_free(q);
    return 0;
}
