#!/bin/sh
# Run every benchmark side by side with its Python counterpart and write
# docs/PERFORMANCE.md (+ docs/performance.png).
# Usage: bench/run.sh BUILD_DIR [quick|full]
set -u
build=${1:-build-bench}
mode=${2:-full}
root=$(cd "$(dirname "$0")/.." && pwd)
out="$build/bench-results.jsonl"
: >"$out"
if [ "$mode" = quick ]; then
    export MPROC_BENCH_QUICK=1
    limit=60
    rounds=${ROUNDS:-1}
else
    limit=300
    rounds=${ROUNDS:-3}
fi
python=$(command -v python3 || true)

# Each module's C benchmark, then its C peers and its Python partner, so
# that all are measured in the same conditions, one after the other; the
# whole sequence `rounds` times over (interleaved: the machine's speed
# drifts), and report.py takes the median of the rounds' medians.
run() {
    echo "bench: $*" >&2
    timeout -k 5 "$limit" "$@" >>"$out" || echo "bench: $* failed ($?)" >&2
}
r=0
while [ "$r" -lt "$rounds" ]; do
    r=$((r + 1))
    echo "bench: round $r of $rounds" >&2
    for bin in "$build"/bench/bench_*; do
        [ -x "$bin" ] && [ -f "$bin" ] || continue
        name=$(basename "$bin")
        case "$name" in *_cxx|*_extra) continue ;; esac
        run "$bin"
        for extra in "$bin"_cxx "$bin"_extra; do
            [ -x "$extra" ] && run "$extra"
        done
        py="$root/bench/python/$name.py"
        if [ -n "$python" ] && [ -f "$py" ]; then
            run "$python" "$py"
        fi
    done
done
"${python:-python3}" "$root/bench/report.py" "$out" "$root/bench/targets.tsv" "$root/docs"
