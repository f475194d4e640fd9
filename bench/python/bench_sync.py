"""Python counterparts of bench/bench_sync.c, with multiprocessing."""
import multiprocessing as mp
import os
import time

import harness

ctx = mp.get_context("fork")


def lock_body(lock):
    def body(n):
        t0 = time.perf_counter()
        for _ in range(n):
            lock.acquire()
            lock.release()
        return time.perf_counter() - t0
    return body


def incr(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def value_body(v):
    def body(n):
        start = v.value
        t0 = time.perf_counter()
        incr(v, n)
        t = time.perf_counter() - t0
        assert v.value == start + n
        return t
    return body


def contended_body(v):
    def body(n):
        start = v.value
        t0 = time.perf_counter()
        p = ctx.Process(target=incr, args=(v, n // 2))
        p.start()
        incr(v, n - n // 2)
        p.join()
        t = time.perf_counter() - t0
        assert v.value == start + n
        return t
    return body


def pong(ping, pong_ev, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong_ev.set()


def pingpong_body(n):
    ping, pong_ev = ctx.Event(), ctx.Event()
    p = ctx.Process(target=pong, args=(ping, pong_ev, n))
    p.start()
    t0 = time.perf_counter()
    for _ in range(n):
        ping.set()
        pong_ev.wait()
        pong_ev.clear()
    t = time.perf_counter() - t0
    p.join()
    return t


if __name__ == "__main__":
    n = harness.scaled(300000)
    harness.run("sync.lock_uncontended", "python", "ns/op", lock_body(ctx.Lock()), n)
    v = ctx.Value("l", 0)
    harness.run("sync.value_incr", "python", "ns/op", value_body(v), n)
    harness.run("sync.lock_contended_2proc", "python", "ns/op", contended_body(v), harness.scaled(200000))
    harness.run("sync.event_pingpong", "python", "us/op", pingpong_body, harness.scaled(5000))
    os.sched_setaffinity(0, {0})
    harness.run("sync.event_pingpong_1cpu", "python", "us/op", pingpong_body, harness.scaled(5000))
