"""Python counterparts of bench/bench_pool_mpi.c: multiprocessing.Pool(N)
for N = 1, 2, 4 doing the work the MPI pool does over N worker ranks (map
of x * 3 over 1,000,000 integers, apply_async round trip, 10,000 tasks in
flight).  Python's own MPI pool (mpi4py.futures) is not in Debian's
standard library set, so multiprocessing is the partner."""
import harness
from bench_pool import ITEMS, ctx, inflight_body, map_body, rtt_body

if __name__ == "__main__":
    for w in (1, 2, 4):
        with ctx.Pool(w) as pool:
            harness.run("mpi.map_1M_w%d" % w, "python", "ops/s", map_body(pool), ITEMS, runs=3)
            harness.run("mpi.apply_rtt_w%d" % w, "python", "us/op", rtt_body(pool),
                        harness.scaled(5000))
            harness.run("mpi.apply_async_w%d" % w, "python", "ops/s", inflight_body(pool),
                        10000, runs=5)
