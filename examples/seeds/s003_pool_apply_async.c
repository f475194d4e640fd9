/* Seed 003, part 2: apply_async on a pool of three; tasks sleep a random
 * time, the parent closes the pool, joins it, then collects every result
 * with get. */
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int work(const void *arg, size_t len, mp_buf *res)
{
    int n = *(const int *)arg, sq = n * n;
    printf("%d run\n", (int)getpid());
    fflush(stdout);
    srand((unsigned)getpid() ^ (unsigned)n);
    usleep((useconds_t)(rand() / (RAND_MAX + 1.0) * 1e6));
    return mp_buf_append(res, &sq, sizeof sq);
}

int main(void)
{
    mp_pool *p;
    int rc = mp_pool_new(&p, &(mp_pool_opts){.workers = 3});
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
    for (int i = 0; i < 10; i++) {
        const void *v;
        if (mp_result_get(res_l[i], MP_FOREVER, &v, NULL) == 0)
            printf("%d\n", *(const int *)v);
        mp_result_free(res_l[i]);
    }
    mp_pool_free(p);
    return 0;
}
