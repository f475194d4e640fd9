/* Seed 003, last example: a pool of mp_cpu_count() workers, ten one-second
 * tasks; the parent waits for all (close + join), then gathers the results
 * to handle them together. */
#include <mproc.h>
#include <stdio.h>
#include <unistd.h>

static int work(const void *arg, size_t len, mp_buf *res)
{
    int n = *(const int *)arg, sq = n * n;
    sleep(1);
    return mp_buf_append(res, &sq, sizeof sq);
}

int main(void)
{
    mp_pool *p;
    int rc = mp_pool_new(&p, NULL);
    if (rc < 0) {
        fprintf(stderr, "pool: %s\n", mp_strerror(rc));
        return 1;
    }
    mp_result *res_l[10];
    for (int i = 0; i < 10; i++)
        if ((rc = mp_pool_apply_async(p, work, &i, sizeof i, NULL, &res_l[i])) < 0) {
            fprintf(stderr, "apply_async: %s\n", mp_strerror(rc));
            return 1;
        }
    mp_pool_close(p);
    mp_pool_join(p, MP_FOREVER);
    int nums[10];
    for (int i = 0; i < 10; i++) {
        const void *v;
        rc = mp_result_get(res_l[i], 0, &v, NULL);
        nums[i] = rc == 0 ? *(const int *)v : -1;
        mp_result_free(res_l[i]);
    }
    printf("[");
    for (int i = 0; i < 10; i++)
        printf("%s%d", i ? ", " : "", nums[i]);
    printf("]\n");
    mp_pool_free(p);
    return 0;
}
