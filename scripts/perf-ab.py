#!/usr/bin/env python3
"""Interleaved A/B runs of two jitssh-load binaries (docs/performance.md).

This machine's speed drifts by 10-30 % between minutes, so one run of each
build says little. This runs the two builds alternately in ABBA order (a
drift over the series hits both alike), keeps every run's JSON, and prints
per-pair numbers plus, for each metric, in how many pairs B was better and
the two-sided sign-test p-value of that count.

    cargo build --release -p jitssh-e2e --bin jitssh-load
    cp target/release/jitssh-load /tmp/load-B      # the change
    git stash; cargo build --release -p jitssh-e2e --bin jitssh-load
    cp target/release/jitssh-load /tmp/load-A; git stash pop
    scripts/perf-ab.py /tmp/load-A /tmp/load-B --pairs 6 --out /tmp/ab -- \
        --rate 2000 -d 15 --alg rs256 --mint ahead --no-rate-limit

Everything after `--` goes to jitssh-load unchanged (`--json` is added).
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys

# (label, how to read it from the JSON, lower is better)
METRICS = [
    ("certs/s", lambda d: d["certs_per_sec"], False),
    ("µs/cert", lambda d: d.get("cpu_us_per_cert"), True),
    ("writer µs/cert", lambda d: writer_us(d), True),
    ("p50 ms", lambda d: d["latency_ms"]["p50"], True),
    ("p99 ms", lambda d: d["latency_ms"]["p99"], True),
    ("raw sign/s", lambda d: d.get("raw_sign_per_sec"), False),
]


def writer_us(d):
    secs = (d.get("cpu_by_thread") or {}).get("audit-writer")
    issued = d.get("issued") or 0
    return secs * 1e6 / issued if secs is not None and issued else None


def sign_test_p(wins, n):
    """Two-sided binomial sign test: P(a count this far from n/2 | p=0.5)."""
    if n == 0:
        return 1.0
    k = min(wins, n - wins)
    tail = sum(math.comb(n, i) for i in range(0, k + 1)) / 2**n
    return min(1.0, 2 * tail)


def run(binary, args, out):
    proc = subprocess.run(
        [binary, *args, "--json", out], capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.exit(f"{binary} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    with open(out) as f:
        return json.load(f)


def main():
    argv = sys.argv[1:]
    load_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, load_args = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", help="baseline jitssh-load binary")
    p.add_argument("b", help="changed jitssh-load binary")
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--out", default="/tmp/perf-ab", help="directory for the JSON runs")
    opts = p.parse_args(argv)
    os.makedirs(opts.out, exist_ok=True)

    runs = {"A": [], "B": []}
    for pair in range(opts.pairs):
        order = ("A", "B") if pair % 2 == 0 else ("B", "A")
        for side in order:
            binary = opts.a if side == "A" else opts.b
            out = os.path.join(opts.out, f"{side}-{pair + 1}.json")
            runs[side].append(run(binary, load_args, out))
        a, b = runs["A"][-1], runs["B"][-1]
        print(
            f"pair {pair + 1} ({''.join(order)}): "
            + "  ".join(
                f"{name} {fmt(get(a))} -> {fmt(get(b))}" for name, get, _ in METRICS[:5]
            ),
            flush=True,
        )

    print(f"\n{opts.pairs} pairs, medians A -> B; 'B better' counts pairs, p = sign test")
    for name, get, lower in METRICS:
        pairs = [
            (get(a), get(b))
            for a, b in zip(runs["A"], runs["B"])
            if get(a) is not None and get(b) is not None
        ]
        if not pairs:
            continue
        ma = statistics.median(x for x, _ in pairs)
        mb = statistics.median(y for _, y in pairs)
        decided = [(x, y) for x, y in pairs if x != y]
        wins = sum(1 for x, y in decided if (y < x) == lower)
        note = "" if name != "raw sign/s" else "  (the machine's speed, not the CA)"
        print(
            f"  {name:15} {fmt(ma):>9} -> {fmt(mb):>9} ({(mb / ma - 1) * 100:+5.1f} %)"
            f"  B better in {wins} of {len(decided)}, p = {sign_test_p(wins, len(decided)):.2f}{note}"
        )


def fmt(v):
    if v is None:
        return "-"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}"


if __name__ == "__main__":
    main()
