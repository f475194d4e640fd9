"""process.start_join: multiprocessing.Process (fork method) start + join of
a trivial child, alone and from a parent holding 256 MiB."""
import multiprocessing as mp
import time

import harness


def trivial():
    pass


def body(n):
    ctx = mp.get_context("fork")
    t0 = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=trivial)
        p.start()
        p.join()
        assert p.exitcode == 0
    return time.perf_counter() - t0


if __name__ == "__main__":
    harness.run("process.start_join", "python", "us/op", body, harness.scaled(500))
    big = bytearray(256 << 20)
    for i in range(0, len(big), 4096):
        big[i] = 1
    harness.run("process.start_join_256M", "python", "us/op", body, harness.scaled(50))
