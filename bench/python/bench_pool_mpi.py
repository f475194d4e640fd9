"""Python counterparts of bench/bench_pool_mpi.c: multiprocessing.Pool(N)
for N = 1, 2, 4 doing the work the MPI pool does over N worker ranks (map
of x * 3 over 1,000,000 integers, apply round trip, 10,000 empty tasks in
flight).  Python's own MPI pool (mpi4py.futures) is not in Debian's
standard library set, so multiprocessing is the partner."""
import multiprocessing as mp
import time

import harness

ctx = mp.get_context("fork")
ITEMS = 1000000


def triple(x):
    return x * 3


def empty():
    return None


def map_body(pool):
    data = list(range(ITEMS))

    def body(n):
        t0 = time.perf_counter()
        out = pool.map(triple, data[:n])
        t = time.perf_counter() - t0
        assert out[n - 1] == (n - 1) * 3
        return t
    return body


def rtt_body(pool):
    def body(n):
        t0 = time.perf_counter()
        for _ in range(n):
            pool.apply(empty)
        return time.perf_counter() - t0
    return body


def inflight_body(pool):
    def body(n):
        t0 = time.perf_counter()
        rs = [pool.apply_async(empty) for _ in range(n)]
        for r in rs:
            r.wait()
        return time.perf_counter() - t0
    return body


if __name__ == "__main__":
    for w in (1, 2, 4):
        with ctx.Pool(w) as pool:
            harness.run("mpi.map_1M_w%d" % w, "python", "ops/s", map_body(pool), ITEMS, runs=3)
            harness.run("mpi.apply_rtt_w%d" % w, "python", "us/op", rtt_body(pool),
                        harness.scaled(5000))
            harness.run("mpi.apply_async_w%d" % w, "python", "ops/s", inflight_body(pool),
                        10000, runs=5)
