/* Seed 004, "开发一个线程池" (the seed gives only the heading): a pool of
 * three threads, the thread-pool kind of the same API as the process pool.
 * Twelve jobs square their numbers; map keeps the order, and every job ran
 * on one of three threads of this process. */
#include <mproc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int square(const void *in, void *out)
{
    int x = *(const int *)in;
    *(int *)out = x * x;
    return 0;
}

static int which_thread(const void *arg, size_t len, mp_buf *res)
{
    int w = mp_pool_worker_index(), pid = (int)getpid();
    int r[2] = {w, pid};
    return mp_buf_append(res, r, sizeof r);
}

int main(void)
{
    mp_pool *p;
    int rc = mp_pool_new(&p, &(mp_pool_opts){.workers = 3, .kind = MP_POOL_THREAD});
    if (rc < 0) {
        fprintf(stderr, "pool: %s\n", mp_strerror(rc));
        return 1;
    }
    int in[12], out[12];
    for (int i = 0; i < 12; i++)
        in[i] = i + 1;
    rc = mp_pool_map(p, square, in, 12, sizeof(int), out, sizeof(int), 1);
    if (rc < 0) {
        fprintf(stderr, "map: %s\n", mp_strerror(rc));
        return 1;
    }
    printf("[");
    for (int i = 0; i < 12; i++)
        printf("%s%d", i ? ", " : "", out[i]);
    printf("]\n");
    int same_process = 1, in_range = 1;
    for (int i = 0; i < 12; i++) {
        int r[2];
        void *res;
        if (mp_pool_apply(p, which_thread, NULL, 0, &res, NULL) == 0) {
            memcpy(r, res, sizeof r);
            free(res);
            same_process &= r[1] == (int)getpid();
            in_range &= r[0] >= 0 && r[0] < 3;
        }
    }
    printf("every job ran in this process: %s, on one of 3 threads: %s\n",
           same_process ? "True" : "False", in_range ? "True" : "False");
    mp_pool_close(p);
    mp_pool_join(p, MP_FOREVER);
    mp_pool_free(p);
    return 0;
}
