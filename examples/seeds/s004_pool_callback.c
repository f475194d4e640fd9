/* Seed 004, "进程池": a hundred tasks on a pool of five, each returning
 * i + 100 to a callback in the parent; "end" is printed as soon as all are
 * submitted, and join waits for the last callback.  (The seed's tasks sleep
 * a second, twenty seconds in all; here 0.1 s.) */
#include <mproc.h>
#include <stdio.h>
#include <unistd.h>

static int foo(const void *arg, size_t len, mp_buf *res)
{
    int i = *(const int *)arg + 100;
    usleep(100000);
    return mp_buf_append(res, &i, sizeof i);
}

static void bar(const void *res, size_t len, void *ud)
{
    printf("--->exec done: %d\n", *(const int *)res);
    fflush(stdout);
}

int main(void)
{
    mp_pool *pool;
    int rc = mp_pool_new(&pool, &(mp_pool_opts){.workers = 5});
    if (rc < 0) {
        fprintf(stderr, "pool: %s\n", mp_strerror(rc));
        return 1;
    }
    for (int i = 0; i < 100; i++) {
        mp_result *r;
        if (mp_pool_apply_async(pool, foo, &i, sizeof i, &(mp_task_opts){.callback = bar}, &r) == 0)
            mp_result_free(r);
    }
    printf("end\n");
    fflush(stdout);
    mp_pool_close(pool);
    mp_pool_join(pool, MP_FOREVER);
    mp_pool_free(pool);
    return 0;
}
