/* Seed 000's speed test over MPI: ten one-second tasks spread over ten
 * worker ranks finish in about one second.
 *
 *     mpirun -n 11 ./mpi_pool_map_speed
 *
 * Rank 0 runs main; mp_mpi_init turns ranks 1..10 into task servers (they
 * never return from it).  Started without mpirun, the pool falls back to
 * local worker processes (MP_POOL_FALLBACK). */
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

int main(void)
{
    int rc = mp_mpi_init(); /* first: nothing before it runs on every rank */
    if (rc < 0 && rc != MP_ENOMPI) {
        fprintf(stderr, "mpi: %s\n", mp_strerror(rc));
        return 1;
    }
    int data[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, out[10];
    mp_pool *pool;
    mp_pool_opts opts = {.workers = 10, .kind = MP_POOL_MPI, .flags = MP_POOL_FALLBACK};
    rc = mp_pool_new(&pool, &opts);
    if (rc < 0) {
        fprintf(stderr, "pool: %s\n", mp_strerror(rc));
        return 1;
    }
    double t0 = now();
    rc = mp_pool_map(pool, foo, data, 10, sizeof(int), out, sizeof(int), 1);
    double t = now() - t0;
    if (rc < 0) {
        fprintf(stderr, "map: %s\n", mp_strerror(rc));
        return 1;
    }
    printf("[");
    for (int i = 0; i < 10; i++)
        printf("%s%d", i ? ", " : "", out[i]);
    printf("]\n");
    if (mp_mpi_rank() >= 0)
        printf("pool.map of 10 one-second tasks over MPI ranks: %.2f s\n", t);
    else
        printf("pool.map of 10 one-second tasks over local processes: %.2f s\n", t);
    mp_pool_close(pool);
    mp_pool_join(pool, MP_FOREVER);
    mp_pool_free(pool);
    return 0;
}
