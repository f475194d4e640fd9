/* Seed 000, "share data between processes with a Queue": five processes
 * each put one number; the parent prints them in the order they arrive.
 * (The Python original loops on get() forever; here the parent stops after
 * the five it expects.) */
#include <mproc.h>
#include <stdint.h>
#include <stdio.h>

static mp_queue *que;

static int foo(void *arg)
{
    int item = (int)(intptr_t)arg;
    return mp_queue_put(que, &item, sizeof item, MP_FOREVER) == 0 ? 0 : 1;
}

int main(void)
{
    int rc = mp_queue_new(&que, NULL);
    if (rc < 0) {
        fprintf(stderr, "queue: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_process *procs[5];
    for (int item = 0; item < 5; item++) {
        rc = mp_process_new(&procs[item], foo, (void *)(intptr_t)item, NULL);
        if (rc == 0)
            rc = mp_process_start(procs[item]);
        if (rc < 0) {
            fprintf(stderr, "process: %s\n", mp_strerror(rc));
            return 1;
        }
    }
    for (int i = 0; i < 5; i++) {
        int item;
        size_t len;
        rc = mp_queue_get(que, &item, sizeof item, &len, 10.0);
        if (rc < 0) {
            fprintf(stderr, "get: %s\n", mp_strerror(rc));
            return 1;
        }
        printf("%d\n", item);
    }
    for (int i = 0; i < 5; i++) {
        mp_process_join(procs[i], MP_FOREVER);
        mp_process_free(procs[i]);
    }
    mp_queue_free(que);
    return 0;
}
