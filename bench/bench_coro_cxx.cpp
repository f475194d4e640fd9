// Coroutine partners a C++ programmer would pick instead of mproc:
// Boost.Context's fcontext, the raw context switch under boost::context
// (impl "boost-context"), with the same bench names as bench_coro.c.
//   coro.switch      jump_fcontext there and back, per switch
//   coro.spawn_join  make_fcontext on a stack kept for reuse (as mproc keeps
//                    its stacks), jump in, and the context jumps back out
#include <boost/context/detail/fcontext.hpp>
#include <cstdint>
#include <cstdlib>

extern "C" {
#include "harness.h"
}

namespace ctx = boost::context::detail;

enum { STACK = 64 << 10 };

static void bounce(ctx::transfer_t t)
{
    for (;;)
        t = ctx::jump_fcontext(t.fctx, nullptr);
}

static double switch_boost(void *, uint64_t n)
{
    static char *stack = static_cast<char *>(std::malloc(STACK));
    ctx::fcontext_t peer = ctx::make_fcontext(stack + STACK, STACK, bounce);
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n / 2; i++) /* there and back: two switches */
        peer = ctx::jump_fcontext(peer, nullptr).fctx;
    return mp_bench_now() - t0;
}

static void run_once(ctx::transfer_t t)
{
    ctx::jump_fcontext(t.fctx, nullptr); /* done: back for good */
}

static double spawn_boost(void *, uint64_t n)
{
    static char *stack = static_cast<char *>(std::malloc(STACK));
    double t0 = mp_bench_now();
    for (uint64_t i = 0; i < n; i++) {
        ctx::fcontext_t c = ctx::make_fcontext(stack + STACK, STACK, run_once);
        ctx::jump_fcontext(c, nullptr);
    }
    return mp_bench_now() - t0;
}

int main()
{
    mp_bench_run("coro.switch", "boost-context", MP_BENCH_NS_PER_OP, 0, switch_boost, nullptr,
                 mp_bench_n(10000000), 0);
    mp_bench_run("coro.spawn_join", "boost-context", MP_BENCH_NS_PER_OP, 0, spawn_boost,
                 nullptr, mp_bench_n(2000000), 0);
    return 0;
}
