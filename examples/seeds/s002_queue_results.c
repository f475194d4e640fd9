/* Seed 002, "processes hand results back through a Queue": three processes
 * each put name.upper(); once all are joined the parent prints what the
 * queue holds. */
#include <ctype.h>
#include <mproc.h>
#include <stdio.h>
#include <string.h>

static mp_queue *q;

static int func(void *arg)
{
    const char *name = arg;
    char up[64];
    size_t n = strlen(name);
    if (n >= sizeof up)
        return 1;
    for (size_t i = 0; i <= n; i++)
        up[i] = (char)toupper((unsigned char)name[i]);
    printf("start process...\n");
    fflush(stdout);
    return mp_queue_put(q, up, n, MP_FOREVER) == 0 ? 0 : 1;
}

int main(void)
{
    int rc = mp_queue_new(&q, NULL);
    if (rc < 0) {
        fprintf(stderr, "queue: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_process *processes[3];
    for (int i = 0; i < 3; i++) {
        mp_process_opts o = {.name = "process"};
        if ((rc = mp_process_new(&processes[i], func, "kel", &o)) < 0) {
            fprintf(stderr, "process: %s\n", mp_strerror(rc));
            return 1;
        }
    }
    for (int i = 0; i < 3; i++)
        mp_process_start(processes[i]);
    for (int i = 0; i < 3; i++) {
        mp_process_join(processes[i], MP_FOREVER);
        mp_process_free(processes[i]);
    }
    while (mp_queue_qsize(q) > 0) {
        char buf[64];
        size_t len;
        if (mp_queue_get(q, buf, sizeof buf, &len, 0) == 0)
            printf("%.*s\n", (int)len, buf);
    }
    mp_queue_free(q);
    return 0;
}
