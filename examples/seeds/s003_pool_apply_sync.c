/* Seed 003, part 2: apply is synchronous: each call waits for its task, so
 * ten tasks on a pool of three run one after the other.  (The seed sleeps
 * three seconds a task and prints an empty list it forgot to fill; here a
 * task sleeps 0.3 s and the list holds the results.) */
#include <mproc.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int work(const void *arg, size_t len, mp_buf *res)
{
    int n = *(const int *)arg, sq = n * n;
    printf("%d run\n", (int)getpid());
    fflush(stdout);
    usleep(300000);
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
    int res_l[10];
    for (int i = 0; i < 10; i++) {
        void *res;
        size_t len;
        rc = mp_pool_apply(p, work, &i, sizeof i, &res, &len);
        if (rc < 0) {
            fprintf(stderr, "apply: %s\n", mp_strerror(rc));
            return 1;
        }
        res_l[i] = *(int *)res;
        free(res);
    }
    printf("[");
    for (int i = 0; i < 10; i++)
        printf("%s%d", i ? ", " : "", res_l[i]);
    printf("]\n");
    mp_pool_close(p);
    mp_pool_join(p, MP_FOREVER);
    mp_pool_free(p);
    return 0;
}
