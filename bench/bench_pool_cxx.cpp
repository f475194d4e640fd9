// The pool's C++ peer: oneTBB parallel_for on the same work as
// bench_pool.c's maps (x * 3 over 1,000,000 int64, and items of 10 us),
// with as many threads as mproc's pools have workers (global_control).
// Prints the same bench names as bench_pool.c, impl "tbb" (an inlined
// loop: the chunk form's peer) and "tbb-call" (a call per element: the
// per-element form's).
#include <tbb/blocked_range.h>
#include <tbb/global_control.h>
#include <tbb/parallel_for.h>

#include <cstdint>
#include <cstring>
#include <vector>

extern "C" {
#include "harness.h"
}

static const uint64_t ITEMS = 1000000, SLOW_ITEMS = 20000;
static std::vector<int64_t> in(ITEMS), out(ITEMS);

static void check_out(uint64_t n)
{
    for (uint64_t i = 0; i < n; i += 997)
        MP_BENCH_CHECK(out[i] == in[i] * 3);
    MP_BENCH_CHECK(out[n - 1] == in[n - 1] * 3);
}

static double tbb_map(void *, uint64_t n)
{
    std::memset(out.data(), 0, n * sizeof(int64_t));
    double t0 = mp_bench_now();
    tbb::parallel_for(tbb::blocked_range<uint64_t>(0, n), [](const tbb::blocked_range<uint64_t> &r) {
        for (uint64_t i = r.begin(); i != r.end(); ++i)
            out[i] = in[i] * 3;
    });
    double t = mp_bench_now() - t0;
    check_out(n);
    return t;
}

// The per-element form's peer: the same function called through a pointer
// for each element, as mproc's per-element map (and any library taking a
// C function) must call it; the lambda above is inlined and vectorized.
static int triple(const void *i, void *o)
{
    *(int64_t *)o = *(const int64_t *)i * 3;
    return 0;
}

static int (*volatile map_fn)(const void *, void *) = triple;

static double tbb_map_call(void *, uint64_t n)
{
    std::memset(out.data(), 0, n * sizeof(int64_t));
    int (*fn)(const void *, void *) = map_fn;
    double t0 = mp_bench_now();
    tbb::parallel_for(tbb::blocked_range<uint64_t>(0, n), [fn](const tbb::blocked_range<uint64_t> &r) {
        for (uint64_t i = r.begin(); i != r.end(); ++i)
            fn(&in[i], &out[i]);
    });
    double t = mp_bench_now() - t0;
    check_out(n);
    return t;
}

static double tbb_slow(void *, uint64_t n)
{
    double t0 = mp_bench_now();
    tbb::parallel_for(tbb::blocked_range<uint64_t>(0, n), [](const tbb::blocked_range<uint64_t> &r) {
        for (uint64_t i = r.begin(); i != r.end(); ++i)
            out[i] = mp_bench_spin_item((int64_t)i);
    });
    double t = mp_bench_now() - t0;
    for (uint64_t i = 0; i < n; i++)
        MP_BENCH_CHECK(out[i] & 1);
    return t;
}

int main()
{
    for (uint64_t i = 0; i < ITEMS; i++)
        in[i] = (int64_t)i;
    {
        tbb::global_control two(tbb::global_control::max_allowed_parallelism, 2);
        const char *maps2[] = {"pool.map_shared_1M_w2", "pool.map_1M_w2", "threadpool.map_1M",
                               "pool.map_chunks_shared_1M_w2", "pool.map_chunks_1M_w2",
                               "threadpool.map_chunks_1M"};
        for (const char *name : maps2)
            mp_bench_run(name, "tbb", MP_BENCH_OPS_PER_S, 0, tbb_map, nullptr, ITEMS, MP_BENCH_MANY);
        const char *calls2[] = {"pool.map_shared_1M_w2", "pool.map_1M_w2", "threadpool.map_1M"};
        for (const char *name : calls2)
            mp_bench_run(name, "tbb-call", MP_BENCH_OPS_PER_S, 0, tbb_map_call, nullptr, ITEMS,
                         MP_BENCH_MANY);
        mp_bench_run("pool.map_10us", "tbb", MP_BENCH_OPS_PER_S, 0, tbb_slow, nullptr,
                     mp_bench_n(SLOW_ITEMS), MP_BENCH_MANY);
    }
    {
        tbb::global_control ten(tbb::global_control::max_allowed_parallelism, 10);
        mp_bench_run("pool.map_shared_1M_w10", "tbb", MP_BENCH_OPS_PER_S, 0, tbb_map, nullptr,
                     ITEMS, MP_BENCH_MANY);
        mp_bench_run("pool.map_shared_1M_w10", "tbb-call", MP_BENCH_OPS_PER_S, 0, tbb_map_call,
                     nullptr, ITEMS, MP_BENCH_MANY);
        mp_bench_run("pool.map_chunks_shared_1M_w10", "tbb", MP_BENCH_OPS_PER_S, 0, tbb_map,
                     nullptr, ITEMS, MP_BENCH_MANY);
    }
    return 0;
}
