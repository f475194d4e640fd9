"""Python counterparts of bench/bench_coro.c: switching between two
generators, making and running out a generator, a round trip through two
asyncio queues, and the memory of suspended generators."""
import asyncio
import resource
import time

import harness


def bouncer():
    while True:
        yield


def switch(n):
    a, b = bouncer(), bouncer()
    next(a)
    next(b)
    t0 = time.perf_counter()
    for _ in range(n // 2):
        next(a)  # into a and back: a switch there, one back
        next(b)
    return time.perf_counter() - t0


def one_shot():
    yield


def spawn_join(n):
    t0 = time.perf_counter()
    for _ in range(n):
        for _ in one_shot():
            pass
    return time.perf_counter() - t0


def chan_rtt(n):
    async def main():
        ping, pong = asyncio.Queue(1), asyncio.Queue(1)

        async def ponger():
            while True:
                v = await ping.get()
                if v is None:
                    return
                await pong.put(v)
        task = asyncio.ensure_future(ponger())
        t0 = time.perf_counter()
        for i in range(n):
            await ping.put(i)
            assert await pong.get() == i
        t = time.perf_counter() - t0
        await ping.put(None)
        await task
        return t
    return asyncio.run(main())


def idle_memory():
    n = 100000

    def idle():
        yield
        yield
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gens = [idle() for _ in range(n)]
    for g in gens:
        next(g)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    per = (after - before) / n
    import json
    print(json.dumps({"bench": "coro.idle_memory", "impl": "python", "metric": "B/op",
                      "better": "lower", "median": per, "min": per, "max": per,
                      "runs": 1, "n": n}, separators=(",", ":")))


if __name__ == "__main__":
    harness.run("coro.switch", "python", "ns/op", switch, harness.scaled(2000000))
    harness.run("coro.spawn_join", "python", "ns/op", spawn_join, harness.scaled(1000000))
    harness.run("coro.chan_rtt", "python", "ns/op", chan_rtt, harness.scaled(100000))
    idle_memory()
