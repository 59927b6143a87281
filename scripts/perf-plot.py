#!/usr/bin/env python3
"""Plot jitssh-load results (the --json files) and peer-benchmark runs (the
text output of ../shared/bench/side-by-side.sh, *.txt) as one SVG, with no
dependencies beyond the Python standard library.

    scripts/perf-plot.py docs/perf/*.json docs/perf/s11/side-by-side-*.txt \
        -o docs/perf/performance.svg

Panels: side by side with step-ca, certificates/s and the ratios of one run
(throughput and CPU per certificate, against issue 20's targets);
certificates/s against concurrency (closed-loop runs); p50 and p99 latency
against the offered rate (open-loop runs); and, when a run lasted at least
five minutes, memory and throughput over time (the soak).
"""

import argparse
import json
import math
import sys
from collections import defaultdict
from xml.sax.saxutils import escape

W, H = 560, 360  # one panel
M = dict(left=70, right=20, top=40, bottom=55)
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]


ALG_NAMES = {"RS256": "RS256", "ES256": "ES256", "EDDSA": "EdDSA", "EdDSA": "EdDSA"}


def series_name(r):
    where = "in-process CA" if r["target"] == "in-process" else "jitssh-ca serve"
    return f'{ALG_NAMES.get(r["alg"], r["alg"])} tokens, {where}'


def color_of(name, _seen={}):
    """The same series gets the same color in every panel."""
    if name not in _seen:
        _seen[name] = COLORS[len(_seen) % len(COLORS)]
    return _seen[name]


def nice_ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=raw)
    start = math.floor(lo / step) * step
    ticks, t = [start], start
    while t < hi - step * 0.001:
        t += step
        ticks.append(round(t, 10))
    return ticks


def fmt(v):
    if v >= 1000 and v == int(v):
        return f"{int(v):,}"
    if v == int(v):
        return str(int(v))
    return f"{v:g}"


class Panel:
    """One chart: maps data to pixels inside its own <g>."""

    def __init__(self, x0, y0, title, xlabel, ylabel, xs, ys, xlog=False, ylog=False):
        self.x0, self.y0, self.xlog, self.ylog = x0, y0, xlog, ylog
        self.out = []
        self.legend = []
        if xlog:
            lo, hi = math.log2(min(xs)), math.log2(max(xs))
            self.xt = [2**e for e in range(math.floor(lo), math.ceil(hi) + 1)]
            self.xr = (math.floor(lo), max(math.ceil(hi), math.floor(lo) + 1))
        else:
            self.xt = nice_ticks(0, max(xs) * 1.05)
            self.xr = (self.xt[0], self.xt[-1])
        if ylog:
            lo = math.floor(math.log10(max(min(ys), 1e-3)))
            hi = math.ceil(math.log10(max(ys)))
            hi = max(hi, lo + 1)
            self.yt = [10**e for e in range(lo, hi + 1)]
            self.yr = (lo, hi)
        else:
            self.yt = nice_ticks(0, max(ys) * 1.1)
            self.yr = (self.yt[0], self.yt[-1])
        self.frame(title, xlabel, ylabel)

    def px(self, x):
        v = math.log2(x) if self.xlog else x
        a, b = self.xr
        return self.x0 + M["left"] + (v - a) / (b - a) * (W - M["left"] - M["right"])

    def py(self, y):
        v = math.log10(max(y, 1e-3)) if self.ylog else y
        a, b = self.yr
        return self.y0 + H - M["bottom"] - (v - a) / (b - a) * (H - M["top"] - M["bottom"])

    def frame(self, title, xlabel, ylabel):
        o = self.out
        l, r = self.x0 + M["left"], self.x0 + W - M["right"]
        t, b = self.y0 + M["top"], self.y0 + H - M["bottom"]
        o.append(f'<rect x="{l}" y="{t}" width="{r - l}" height="{b - t}" fill="white" stroke="#444"/>')
        for x in self.xt:
            X = self.px(x)
            o.append(f'<line x1="{X:.1f}" y1="{t}" x2="{X:.1f}" y2="{b}" stroke="#eee"/>')
            o.append(f'<text x="{X:.1f}" y="{b + 16}" text-anchor="middle">{fmt(x)}</text>')
        for y in self.yt:
            Y = self.py(y)
            o.append(f'<line x1="{l}" y1="{Y:.1f}" x2="{r}" y2="{Y:.1f}" stroke="#eee"/>')
            o.append(f'<text x="{l - 6}" y="{Y + 4:.1f}" text-anchor="end">{fmt(y)}</text>')
        o.append(f'<text x="{(l + r) / 2}" y="{self.y0 + 22}" text-anchor="middle" font-weight="bold">{escape(title)}</text>')
        o.append(f'<text x="{(l + r) / 2}" y="{b + 38}" text-anchor="middle">{escape(xlabel)}</text>')
        cy = (t + b) / 2
        o.append(f'<text x="{self.x0 + 16}" y="{cy}" text-anchor="middle" transform="rotate(-90 {self.x0 + 16} {cy})">{escape(ylabel)}</text>')

    def line(self, pts, color, label, dash=None, marker=True):
        pts = sorted(pts)
        d = " ".join(f"{self.px(x):.1f},{self.py(y):.1f}" for x, y in pts)
        style = f' stroke-dasharray="{dash}"' if dash else ""
        self.out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"{style}/>')
        if marker:
            for x, y in pts:
                self.out.append(f'<circle cx="{self.px(x):.1f}" cy="{self.py(y):.1f}" r="3" fill="{color}"/>')
        self.legend.append((label, color, dash))

    def hline(self, y, label, color="#888"):
        Y = self.py(y)
        l, r = self.x0 + M["left"], self.x0 + W - M["right"]
        self.out.append(f'<line x1="{l}" y1="{Y:.1f}" x2="{r}" y2="{Y:.1f}" stroke="{color}" stroke-dasharray="6,4"/>')
        self.out.append(f'<text x="{r - 4}" y="{Y + 13:.1f}" text-anchor="end" fill="{color}">{escape(label)}</text>')

    def svg(self):
        x, y = self.x0 + M["left"] + 8, self.y0 + M["top"] + 16
        for i, (label, color, dash) in enumerate(self.legend):
            yy = y + i * 15
            style = f' stroke-dasharray="{dash}"' if dash else ""
            self.out.append(f'<line x1="{x}" y1="{yy - 4}" x2="{x + 18}" y2="{yy - 4}" stroke="{color}" stroke-width="2"{style}/>')
            self.out.append(f'<text x="{x + 22}" y="{yy}">{escape(label)}</text>')
        return "\n".join(self.out)


def pos(i):
    """Top-left corner of the i-th panel, two per row."""
    return W * (i % 2), H * (i // 2)


def side_by_side(path):
    """{server: {concurrency: (ok_per_s, ca_cpu_ms_per_cert)}} of one
    side-by-side.sh output: `== step-ca` / `== jitssh-ca` headers, then one
    `c=N RESULT key=value ...` line per level."""
    runs, server = defaultdict(dict), None
    with open(path) as f:
        for line in f:
            if line.startswith("== "):
                server = "step-ca" if "step-ca" in line else "jitssh-ca"
            elif server and line.startswith("c=") and " RESULT " in line:
                kv = dict(w.split("=", 1) for w in line.split() if "=" in w)
                runs[server][int(kv["c"])] = (float(kv["ok_per_s"]), float(kv["ca_cpu_ms_per_cert"]))
    if set(runs) != {"step-ca", "jitssh-ca"}:
        sys.exit(f"{path}: not a side-by-side.sh output (needs both servers' RESULT lines)")
    return runs


def peer_panels(files, first):
    """Two panels from side-by-side runs: both servers' certificates/s, and
    jitssh-ca's ratios to step-ca in the same run."""
    runs = [(f.rsplit("/", 1)[-1].rsplit(".", 1)[0], side_by_side(f)) for f in files]
    xs = [c for _, r in runs for c in r["jitssh-ca"]]
    ys = [v for _, r in runs for srv in r.values() for v, _ in srv.values()]
    p = Panel(*pos(first), "Side by side with step-ca 0.19 (TLS, wrk -t1, same host)", "concurrency",
              "certificates/s", xs, ys, xlog=True)
    for name, r in runs:
        for srv, dash in (("jitssh-ca", None), ("step-ca", "4,3")):
            pts = sorted((c, v) for c, (v, _) in r[srv].items())
            p.line(pts, color_of(f"{srv} {name}"), f"{srv}, {name}", dash=dash)
    ratios = []
    for name, r in runs:
        common = sorted(set(r["jitssh-ca"]) & set(r["step-ca"]))
        ratios.append((name, [(c, r["jitssh-ca"][c][0] / r["step-ca"][c][0],
                               r["jitssh-ca"][c][1] / r["step-ca"][c][1]) for c in common]))
    q = Panel(*pos(first + 1), "jitssh-ca ÷ step-ca in the same run", "concurrency",
              "ratio (log scale)", xs, [v for _, pts in ratios for _, a, b in pts for v in (a, b)] + [4, 0.25],
              xlog=True, ylog=True)
    for name, pts in ratios:
        c = color_of(f"ratio {name}")
        q.line([(x, a) for x, a, _ in pts], c, f"certificates/s, {name}")
        q.line([(x, b) for x, _, b in pts], c, f"CPU per certificate, {name}", dash="4,3")
    q.hline(4, "target: ≥ 4× the certificates/s")
    q.hline(0.25, "target: ≤ ¼ the CPU per certificate")
    return [p, q]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="jitssh-load --json files, side-by-side.sh outputs (*.txt)")
    ap.add_argument("-o", "--out", default="docs/perf/performance.svg")
    args = ap.parse_args()
    runs = []
    peers = [p for p in args.results if p.endswith(".txt")]
    for path in args.results:
        if path.endswith(".txt"):
            continue
        with open(path) as f:
            r = json.load(f)
        r["_path"] = path
        runs.append(r)

    panels = peer_panels(peers, 0) if peers else []
    closed = [r for r in runs if r["mode"] == "closed" and r["seconds"] < 300]
    if closed:
        groups = defaultdict(list)
        for r in closed:
            groups[series_name(r)].append((r["concurrency"], r["certs_per_sec"]))
        xs = [c for g in groups.values() for c, _ in g]
        ys = [v for g in groups.values() for _, v in g] + [8000]
        p = Panel(*pos(len(panels)), "Throughput (closed loop, keep-alive HTTP)", "concurrency (requests in flight)",
                  "certificates/s", xs, ys, xlog=True)
        for name, pts in sorted(groups.items()):
            p.line(pts, color_of(name), name)
        p.hline(8000, "target: 8,000/s at concurrency 64")
        panels.append(p)

    opened = [r for r in runs if r["mode"] == "open" and r["seconds"] < 300]
    if opened:
        groups = defaultdict(list)
        for r in opened:
            groups[series_name(r)].append(r)
        xs = [r["rate"] for r in opened]
        ys = [r["latency_ms"][k] for r in opened for k in ("p50", "p99")] + [10]
        p = Panel(*pos(len(panels)), "Latency at a fixed offered rate (open loop)", "offered requests/s",
                  "latency, ms (log scale)", xs, ys, ylog=True)
        for name, rs in sorted(groups.items()):
            c = color_of(name)
            p.line([(r["rate"], r["latency_ms"]["p99"]) for r in rs], c, f"p99, {name}")
            p.line([(r["rate"], r["latency_ms"]["p50"]) for r in rs], c, f"p50, {name}", dash="4,3")
        p.hline(10, "target: p99 10 ms at 2,000/s")
        panels.append(p)

    soaks = [r for r in runs if r["seconds"] >= 300 and r["samples"]]
    for r in soaks[:2]:
        s = r["samples"]
        xs = [x["t"] for x in s]
        rss = [(x["t"], x["rss_kib"] / 1024) for x in s if x.get("rss_kib")]
        rate = [(x["t"], x["per_sec"]) for x in s]
        p = Panel(*pos(len(panels)),
                  f'Soak: {series_name(r)}, '
                  + (f'{r["rate"]:,.0f}/s' if r.get("rate") else f'{r["concurrency"]} in flight'),
                  "seconds", "RSS MiB  /  certificates/s ÷ 100", xs,
                  [v for _, v in rss] + [v / 100 for _, v in rate])
        if rss:
            p.line(rss, COLORS[1], "RSS of the CA process, MiB", marker=False)
        p.line([(t, v / 100) for t, v in rate], COLORS[0], "certificates/s ÷ 100", marker=False)
        panels.append(p)

    if not panels:
        sys.exit("no closed-loop, open-loop or soak results to plot")
    rows = (len(panels) + 1) // 2
    width = W * min(len(panels), 2)
    notes = []
    raw = sorted(r["raw_sign_per_sec"] for r in runs)
    if raw:
        notes.append(f"raw Ed25519 signing on one core, measured in the same runs: "
                     f"{raw[len(raw) // 2]:,.0f}/s (median of {len(raw)} runs)")
    cores = {r["cores"] for r in runs}
    notes.append(f"machine: {', '.join(str(c) for c in sorted(cores))} cores, shared; "
                 f"load generator on the same cores. Made by scripts/perf-plot.py.")
    height = H * rows + 16 * len(notes) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    out += [p.svg() for p in panels]
    for i, n in enumerate(notes):
        out.append(f'<text x="10" y="{H * rows + 14 + 16 * i}" fill="#444">{escape(n)}</text>')
    out.append("</svg>")
    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {args.out} ({len(panels)} panels from {len(runs)} runs)")


if __name__ == "__main__":
    main()
