/* Seed 000, part 6: a pool of four runs ten tasks submitted with
 * apply_async; each prints its square and sleeps a second.  The parent then
 * prints every result in submission order.  At most four tasks run at once,
 * so the ten take about three seconds. */
#include <mproc.h>
#include <stdio.h>
#include <unistd.h>

static int foo(const void *arg, size_t len, mp_buf *res)
{
    int x = *(const int *)arg, sq = x * x;
    printf("%d\n", sq);
    fflush(stdout);
    sleep(1);
    return mp_buf_append(res, &sq, sizeof sq);
}

int main(void)
{
    mp_pool *pool;
    int rc = mp_pool_new(&pool, &(mp_pool_opts){.workers = 4});
    if (rc < 0) {
        fprintf(stderr, "pool: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_result *res_list[10];
    for (int i = 0; i < 10; i++) {
        rc = mp_pool_apply_async(pool, foo, &i, sizeof i, NULL, &res_list[i]);
        if (rc < 0) {
            fprintf(stderr, "apply_async: %s\n", mp_strerror(rc));
            return 1;
        }
    }
    for (int i = 0; i < 10; i++) {
        const void *v;
        rc = mp_result_get(res_list[i], MP_FOREVER, &v, NULL);
        if (rc == 0)
            printf("%d\n", *(const int *)v);
        else
            printf("task %d failed: %s\n", i, mp_strerror(rc));
        fflush(stdout);
        mp_result_free(res_list[i]);
    }
    mp_pool_close(pool);
    mp_pool_join(pool, MP_FOREVER);
    mp_pool_free(pool);
    return 0;
}
