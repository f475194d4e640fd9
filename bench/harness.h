/* The benchmark harness: warm up, run a measured body several times, and
 * print one JSON line with the median and spread.  No timed assertions:
 * benchmarks report, they never fail on speed (they do check results).
 *
 * A body is `double body(void *ctx, uint64_t n)`: it performs n operations
 * and returns the seconds they took (so it can leave set-up out).  The line:
 *   {"bench":"sync.lock_uncontended","impl":"mproc","metric":"ns/op",
 *    "better":"lower","median":10.6,"min":10.1,"max":12.0,"runs":7,"n":...}
 * impl names what was measured: "mproc", "python", "posix" (the raw floor),
 * or another library ("boost", "zmq", "libuv"...).  bench/report.py pairs
 * lines with the same bench name.
 *
 * MPROC_BENCH_QUICK=1 (make bench QUICK=1) runs fewer, shorter repeats. */
#ifndef MP_BENCH_HARNESS_H
#define MP_BENCH_HARNESS_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef double (*mp_bench_body)(void *ctx, uint64_t n);

/* How a per-run time becomes the reported figure. */
typedef enum {
    MP_BENCH_NS_PER_OP,   /* "ns/op", lower is better */
    MP_BENCH_US_PER_OP,   /* "us/op", lower is better */
    MP_BENCH_OPS_PER_S,   /* "ops/s", higher is better */
    MP_BENCH_MB_PER_S     /* "MB/s" (bytes_per_op), higher is better */
} mp_bench_metric;

static inline int mp_bench_quick(void)
{
    const char *q = getenv("MPROC_BENCH_QUICK");
    return q != NULL && *q != '\0' && *q != '0';
}

/* Measured runs for short bodies (a map of 1M items, 10,000 tasks): many,
 * since each is over in a millisecond and the machine is noisy. */
#define MP_BENCH_MANY 31

/* n scaled down for quick runs (at least 1). */
static inline uint64_t mp_bench_n(uint64_t n)
{
    if (mp_bench_quick())
        n /= 10;
    return n ? n : 1;
}

static inline double mp_bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int mp_bench__cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* About 10 us of work on x (the pool's "10 us items", the same on every
 * side); odd, so that a result is seen to be written. */
static inline int64_t mp_bench_spin_item(int64_t x)
{
    double end = mp_bench_now() + 10e-6;
    int64_t v = x;
    while (mp_bench_now() < end)
        v = v * 6364136223846793005LL + 1;
    return v | 1;
}

/* Run body: one warm-up, then `runs` measured runs (0: 7, or 3 when quick).
 * Prints the JSON line on stdout and returns the median figure. */
static inline double mp_bench_run(const char *bench, const char *impl,
                                  mp_bench_metric metric, double bytes_per_op,
                                  mp_bench_body body, void *ctx, uint64_t n,
                                  int runs)
{
    static const char *names[] = {"ns/op", "us/op", "ops/s", "MB/s"};
    if (runs <= 0)
        runs = mp_bench_quick() ? 3 : 7;
    else if (mp_bench_quick() && runs > 7)
        runs = 7;
    double v[64];
    if (runs > 64)
        runs = 64;
    (void)body(ctx, n > 10 ? n / 10 : n); /* warm-up */
    for (int i = 0; i < runs; i++) {
        double s = body(ctx, n);
        if (s <= 0)
            s = 1e-9;
        switch (metric) {
        case MP_BENCH_NS_PER_OP: v[i] = s * 1e9 / (double)n; break;
        case MP_BENCH_US_PER_OP: v[i] = s * 1e6 / (double)n; break;
        case MP_BENCH_OPS_PER_S: v[i] = (double)n / s; break;
        case MP_BENCH_MB_PER_S: v[i] = (double)n * bytes_per_op / s / 1e6; break;
        }
    }
    qsort(v, (size_t)runs, sizeof v[0], mp_bench__cmp);
    double med = runs % 2 ? v[runs / 2] : (v[runs / 2 - 1] + v[runs / 2]) / 2;
    int lower = metric == MP_BENCH_NS_PER_OP || metric == MP_BENCH_US_PER_OP;
    printf("{\"bench\":\"%s\",\"impl\":\"%s\",\"metric\":\"%s\",\"better\":\"%s\","
           "\"median\":%.6g,\"min\":%.6g,\"max\":%.6g,\"runs\":%d,\"n\":%llu}\n",
           bench, impl, names[metric], lower ? "lower" : "higher", med, v[0],
           v[runs - 1], runs, (unsigned long long)n);
    fflush(stdout);
    return med;
}

/* Abort the benchmark with a message when a result is wrong. */
#define MP_BENCH_CHECK(cond)                                                \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                 \
            exit(2);                                                        \
        }                                                                   \
    } while (0)

#endif
