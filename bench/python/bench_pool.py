"""Python counterparts of bench/bench_pool.c: multiprocessing.Pool map,
apply_async round trip and throughput, pool start-up, and ThreadPool map."""
import multiprocessing as mp
import multiprocessing.pool
import time

import harness

ctx = mp.get_context("fork")
ITEMS = 1000000


def triple(x):
    return x * 3


def empty():
    return None


def echo(x):
    return x


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
            pool.apply_async(empty).get()
        return time.perf_counter() - t0
    return body


def inflight_body(pool):
    def body(n):
        t0 = time.perf_counter()
        rs = [pool.apply_async(echo, (i,)) for i in range(n)]
        for i, r in enumerate(rs):
            assert r.get() == i
        return time.perf_counter() - t0
    return body


def items_body(pool):
    data = [bytes([i % 256]) * 16 for i in range(ITEMS)]

    def body(n):
        t0 = time.perf_counter()
        got = 0
        for r in pool.imap(echo, data[:n], chunksize=1000):
            assert len(r) == 16
            got += 1
        t = time.perf_counter() - t0
        assert got == n
        return t
    return body


def start_body(n):
    t0 = time.perf_counter()
    for _ in range(n):
        p = ctx.Pool(2)
        p.apply(empty)
        p.close()
        p.join()
    return time.perf_counter() - t0


if __name__ == "__main__":
    for w in (1, 2, 4):
        with ctx.Pool(w) as pool:
            body = map_body(pool)
            body(ITEMS)  # warm, as the C side does
            # Python has no in-place variant: the same map is its partner.
            harness.run("pool.map_1M_w%d" % w, "python", "ops/s", body, ITEMS, runs=3)
            harness.run("pool.map_shared_1M_w%d" % w, "python", "ops/s", body, ITEMS, runs=3)
    with multiprocessing.pool.ThreadPool(2) as tp:
        harness.run("threadpool.map_1M", "python", "ops/s", map_body(tp), ITEMS, runs=3)
    with ctx.Pool(2) as pool:
        harness.run("pool.apply_rtt", "python", "us/op", rtt_body(pool), harness.scaled(5000))
        inflight_body(pool)(10000)  # warm, as the C side does
        harness.run("pool.apply_async_10k", "python", "ops/s", inflight_body(pool), 10000, runs=5)
    harness.run("pool.start", "python", "us/op", start_body, harness.scaled(50), runs=5)
    with ctx.Pool(2) as pool:
        harness.run("pool.imap_items_1M_16B", "python", "ops/s", items_body(pool),
                    harness.scaled(200000), runs=3)
