/* Seed 001, "a queue decouples processes": one process downloads data and
 * puts it on a queue that holds at most three items; another takes the
 * items and collects them for analysis.  The one producer shuts the queue
 * down when it is done (Python 3.13's Queue.shutdown()), so the consumer
 * knows the end without guessing from empty(). */
#include <mproc.h>
#include <stdio.h>

static int download_from_web(void *arg)
{
    mp_queue *q = arg;
    int data[] = {11, 22, 33, 44};
    for (size_t i = 0; i < sizeof data / sizeof data[0]; i++)
        if (mp_queue_put(q, &data[i], sizeof data[i], MP_FOREVER) != 0)
            return 1;
    printf("download finished\n");
    fflush(stdout);
    mp_queue_shutdown(q, false);
    return 0;
}

static int analysis_data(void *arg)
{
    mp_queue *q = arg;
    int waiting_analysis_data[16], n = 0, temp;
    size_t len;
    int rc;
    while ((rc = mp_queue_get(q, &temp, sizeof temp, &len, MP_FOREVER)) == 0 && n < 16)
        waiting_analysis_data[n++] = temp;
    if (rc != MP_ECLOSED)
        return 1;
    printf("[");
    for (int i = 0; i < n; i++)
        printf(i ? ", %d" : "%d", waiting_analysis_data[i]);
    printf("]\nqueue empty: %s\n", mp_queue_empty(q) ? "True" : "False");
    return 0;
}

int main(void)
{
    mp_queue *q;
    mp_queue_opts opts = {.maxsize = 3}; /* at most three messages at once */
    int rc = mp_queue_new(&q, &opts);
    if (rc < 0) {
        fprintf(stderr, "queue: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_process *p1, *p2;
    if ((rc = mp_process_new(&p1, download_from_web, q, NULL)) < 0 ||
        (rc = mp_process_new(&p2, analysis_data, q, NULL)) < 0 ||
        (rc = mp_process_start(p1)) < 0 || (rc = mp_process_start(p2)) < 0 ||
        (rc = mp_process_join(p1, MP_FOREVER)) < 0 || (rc = mp_process_join(p2, MP_FOREVER)) < 0) {
        fprintf(stderr, "process: %s\n", mp_strerror(rc));
        return 1;
    }
    int c1, c2;
    mp_process_exitcode(p1, &c1);
    mp_process_exitcode(p2, &c2);
    mp_process_free(p1);
    mp_process_free(p2);
    mp_queue_free(q);
    return c1 == 0 && c2 == 0 ? 0 : 1;
}
