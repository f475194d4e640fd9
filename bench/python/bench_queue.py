"""Python counterparts of bench/bench_queue.c: multiprocessing.Queue."""
import multiprocessing as mp
import time

import harness

ctx = mp.get_context("fork")


def produce(q, size, start, n):
    for i in range(start, start + n):
        q.put(i.to_bytes(8, "little") + bytes([i & 0xFF]) * (size - 8))


def consume(q, size, n):
    for _ in range(n):
        m = q.get()
        assert len(m) == size


def queue_body(size, nprod, maxsize):
    def body(n):
        q = ctx.Queue(maxsize)
        per = n // nprod
        t0 = time.perf_counter()
        procs = [ctx.Process(target=produce, args=(q, size, i * per, per)) for i in range(nprod)]
        procs += [ctx.Process(target=consume, args=(q, size, per)) for _ in range(nprod - 1)]
        for p in procs:
            p.start()
        consume(q, size, per)
        for p in procs:
            p.join()
            assert p.exitcode == 0
        return time.perf_counter() - t0
    return body


if __name__ == "__main__":
    harness.run("queue.1p1c_64B", "python", "ops/s", queue_body(64, 1, 1000), harness.scaled(200000))
    harness.run("queue.1p1c_4K", "python", "ops/s", queue_body(4096, 1, 1000), harness.scaled(50000))
    harness.run("queue.1p1c_1M", "python", "MB/s", queue_body(1 << 20, 1, 16), harness.scaled(500),
                bytes_per_op=float(1 << 20))
    for w in (1, 2, 4):
        harness.run("queue.pc_64B_w%d" % w, "python", "ops/s", queue_body(64, w, 1000),
                    harness.scaled(100000))
