"""Python counterparts of bench/bench_thread.c: threading.Thread start+join,
and a Manager().dict() used from a child process."""
import multiprocessing as mp
import threading
import time

import harness

ctx = mp.get_context("fork")


def nothing():
    pass


def start_join(n):
    t0 = time.perf_counter()
    for _ in range(n):
        t = threading.Thread(target=nothing)
        t.start()
        t.join()
    return time.perf_counter() - t0


def child_loop(d, n, out):
    t0 = time.perf_counter()
    for i in range(n):
        k = i % 1000
        d[k] = i
        assert d[k] == i
    out.send(time.perf_counter() - t0)


def dict_body(manager):
    def body(n):
        d = manager.dict()
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=child_loop, args=(d, n, w))
        p.start()
        t = r.recv()
        p.join()
        assert p.exitcode == 0
        return t
    return body


if __name__ == "__main__":
    harness.run("thread.start_join", "python", "us/op", start_join, harness.scaled(20000))
    with ctx.Manager() as manager:
        harness.run("dict.set_get_child", "python", "us/op", dict_body(manager),
                    harness.scaled(20000))
