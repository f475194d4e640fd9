/* Seed 001, "程序池建立演示": a pool of three runs ten tasks; each prints
 * when it starts (with its pid), sleeps a random 0-2 s and prints how long
 * it took.  close() stops new submissions, join() waits for all. */
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int worker(const void *arg, size_t len, mp_buf *res)
{
    int msg = *(const int *)arg;
    double t_start = now();
    printf("%d開始執行,程序號為%d\n", msg, (int)getpid());
    fflush(stdout);
    /* Each worker is a fork: seed its generator apart from the others. */
    srand((unsigned)getpid() ^ (unsigned)msg);
    usleep((useconds_t)(rand() / (RAND_MAX + 1.0) * 2e6));
    printf("%d 執行完畢,耗時%0.2f\n", msg, now() - t_start);
    fflush(stdout);
    return 0;
}

int main(void)
{
    mp_pool *po;
    int rc = mp_pool_new(&po, &(mp_pool_opts){.workers = 3});
    if (rc < 0) {
        fprintf(stderr, "pool: %s\n", mp_strerror(rc));
        return 1;
    }
    for (int i = 0; i < 10; i++) {
        mp_result *r;
        if (mp_pool_apply_async(po, worker, &i, sizeof i, NULL, &r) == 0)
            mp_result_free(r); /* the task runs on; we do not need its result */
    }
    printf("----start----\n");
    fflush(stdout);
    mp_pool_close(po);
    mp_pool_join(po, MP_FOREVER);
    printf("-----end-----\n");
    mp_pool_free(po);
    return 0;
}
