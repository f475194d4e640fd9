"""bench/report.py's figures as docs/PERFORMANCE.md prints them: the
suffix and the digits must say the same number (716000 was once "7.18k")."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
import report  # noqa: E402

cases = {
    None: "–",
    3.57794: "3.58",
    42.25: "42.2",
    999.4: "999",
    69300: "69300",
    100000: "100k",
    716000: "716k",
    1.56e6: "1.56M",
    2.27e9: "2.27G",
}
bad = [(v, report.fmt(v), want) for v, want in cases.items() if report.fmt(v) != want]
for v, got, want in bad:
    print("fmt(%r) = %r, want %r" % (v, got, want))
sys.exit(1 if bad else 0)
