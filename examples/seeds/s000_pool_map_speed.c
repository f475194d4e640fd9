/* Seed 000, part 1: the speed of a pool.  foo sleeps a second and squares
 * its argument; pool.map over ten workers takes about one second, the plain
 * serial loop about ten.  Prints both result lists (as the seed does); the
 * times go to stderr. */
#include <mproc.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static int foo(const void *in, void *out)
{
    int n = *(const int *)in;
    sleep(1);
    *(int *)out = n * n;
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void print_list(const int *v, int n)
{
    printf("[");
    for (int i = 0; i < n; i++)
        printf("%s%d", i ? ", " : "", v[i]);
    printf("]\n");
    fflush(stdout);
}

int main(void)
{
    int data[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, out[10];
    mp_pool *pool;
    int rc = mp_pool_new(&pool, &(mp_pool_opts){.workers = 10});
    if (rc < 0) {
        fprintf(stderr, "pool: %s\n", mp_strerror(rc));
        return 1;
    }
    /* Ten workers: each takes one item (chunksize 1), all sleep at once. */
    double t0 = now();
    rc = mp_pool_map(pool, foo, data, 10, sizeof(int), out, sizeof(int), 1);
    double t_pool = now() - t0;
    if (rc < 0) {
        fprintf(stderr, "map: %s\n", mp_strerror(rc));
        return 1;
    }
    print_list(out, 10);

    t0 = now();
    for (int i = 0; i < 10; i++)
        foo(&data[i], &out[i]);
    double t_serial = now() - t0;
    print_list(out, 10);
    fprintf(stderr, "pool.map over 10 workers: %.2f s; serial map: %.2f s\n", t_pool, t_serial);
    mp_pool_close(pool);
    mp_pool_join(pool, MP_FOREVER);
    mp_pool_free(pool);
    return 0;
}
