"""Python counterparts of bench/bench_conn.c: multiprocessing.Pipe."""
import multiprocessing as mp
import time

import harness

ctx = mp.get_context("fork")


def send(conn, size, n):
    m = bytes(size)
    for _ in range(n):
        conn.send_bytes(m)


def pipe_body(size, senders):
    def body(n):
        r, w = ctx.Pipe(duplex=False)
        per = n // senders
        t0 = time.perf_counter()
        procs = [ctx.Process(target=send, args=(w, size, per)) for _ in range(senders)]
        for p in procs:
            p.start()
        for _ in range(per * senders):
            assert len(r.recv_bytes()) == size
        for p in procs:
            p.join()
        t = time.perf_counter() - t0
        r.close()
        w.close()
        return t
    return body


if __name__ == "__main__":
    harness.run("conn.pipe_64B", "python", "ops/s", pipe_body(64, 1), harness.scaled(300000))
    harness.run("conn.pipe_4K", "python", "ops/s", pipe_body(4096, 1), harness.scaled(100000))
    harness.run("conn.pipe_2s_64B", "python", "ops/s", pipe_body(64, 2), harness.scaled(300000))
