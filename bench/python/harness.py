"""Benchmark harness for the Python counterparts: same JSON line as
bench/harness.h, so bench/report.py can put both side by side.

A body is body(n) -> seconds taken for n operations."""
import json
import os
import statistics
import sys

QUICK = os.environ.get("MPROC_BENCH_QUICK", "") not in ("", "0")

NAMES = {"ns/op": "lower", "us/op": "lower", "ops/s": "higher", "MB/s": "higher"}


def scaled(n):
    """n scaled down for quick runs (at least 1)."""
    return max(1, n // 10) if QUICK else n


def run(bench, impl, metric, body, n, runs=0, bytes_per_op=0.0):
    if runs <= 0:
        runs = 3 if QUICK else 7
    body(max(1, n // 10))  # warm-up
    vals = []
    for _ in range(runs):
        s = max(body(n), 1e-9)
        if metric == "ns/op":
            vals.append(s * 1e9 / n)
        elif metric == "us/op":
            vals.append(s * 1e6 / n)
        elif metric == "ops/s":
            vals.append(n / s)
        elif metric == "MB/s":
            vals.append(n * bytes_per_op / s / 1e6)
        else:
            raise ValueError(metric)
    vals.sort()
    line = {"bench": bench, "impl": impl, "metric": metric,
            "better": NAMES[metric], "median": statistics.median(vals),
            "min": vals[0], "max": vals[-1], "runs": runs, "n": n}
    print(json.dumps(line, separators=(",", ":")))
    sys.stdout.flush()
    return line["median"]
