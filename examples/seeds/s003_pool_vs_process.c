/* Seed 003, part 2: the same thousand small jobs on a pool of five and on a
 * thousand processes.  Prints both times; the pool wins by far. */
#include <mproc.h>
#include <stdio.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int func(const void *in, void *out)
{
    *(int *)out = *(const int *)in + 1;
    return 0;
}

static int func_process(void *arg)
{
    int i = (int)(long)arg;
    i += 1;
    return 0;
}

int main(void)
{
    enum { N = 1000 };
    int in[N], out[N];
    for (int i = 0; i < N; i++)
        in[i] = i;
    mp_pool *p;
    int rc = mp_pool_new(&p, &(mp_pool_opts){.workers = 5});
    if (rc < 0) {
        fprintf(stderr, "pool: %s\n", mp_strerror(rc));
        return 1;
    }
    double start = now();
    rc = mp_pool_map(p, func, in, N, sizeof(int), out, sizeof(int), 0);
    mp_pool_close(p);
    mp_pool_join(p, MP_FOREVER);
    printf("%f\n", now() - start);
    mp_pool_free(p);
    if (rc < 0 || out[N - 1] != N) {
        fprintf(stderr, "map: %s\n", mp_strerror(rc));
        return 1;
    }

    start = now();
    static mp_process *l[N];
    for (int i = 0; i < N; i++) {
        if ((rc = mp_process_new(&l[i], func_process, (void *)(long)i, NULL)) < 0 ||
            (rc = mp_process_start(l[i])) < 0) {
            fprintf(stderr, "process: %s\n", mp_strerror(rc));
            return 1;
        }
    }
    for (int i = 0; i < N; i++) {
        mp_process_join(l[i], MP_FOREVER);
        mp_process_free(l[i]);
    }
    printf("%f\n", now() - start);
    return 0;
}
