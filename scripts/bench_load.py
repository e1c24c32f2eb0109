#!/usr/bin/env python3
"""Renders the CPU benchmark under load (scripts/bench.sh --under-load N).

usage: bench_load.py RESULTS_DIR --busy N --command CMD --commit C --out FILE

RESULTS_DIR holds <state>_<threads>_<round>.json from vecnorm_bench_cpu, with
state idle|loaded and threads default|one. Per case: the median over rounds of
each, then loaded default / loaded one-thread (issue 19's bound: <= 1.25) and
loaded / idle (default threads)."""
import argparse
import datetime
import glob
import json
import os
import re
import statistics

NAME = re.compile(r"^vecnorm/(elementwise|pooled)/(torchrl|stable)/(f32|bf16)/(\d+)x(\d+)")
BOUND = 1.25


def load(path):
    out = {}
    with open(path) as f:
        for b in json.load(f)["benchmarks"]:
            if b.get("aggregate_name") not in (None, "median") or b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
                continue
            m = NAME.match(b["run_name"] if "run_name" in b else b["name"])
            if not m:
                continue
            scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3}[b["time_unit"]]
            out[m.group(0)] = b["real_time"] * scale
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--busy", type=int, required=True)
    ap.add_argument("--command", default="bash scripts/bench.sh --under-load")
    ap.add_argument("--commit", default="?")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    runs = {}
    for path in sorted(glob.glob(os.path.join(a.results, "*.json"))):
        state, threads, _ = os.path.basename(path)[:-5].split("_")
        for case, us in load(path).items():
            runs.setdefault((state, threads), {}).setdefault(case, []).append(us)
    med = {k: {c: statistics.median(v) for c, v in d.items()} for k, d in runs.items()}
    cases = sorted(med.get(("loaded", "default"), {}), key=lambda c: (c.split("/")[1], int(c.split("/")[4].split("x")[0]) * int(c.split("/")[4].split("x")[1]), c))
    rounds = max((len(v) for d in runs.values() for v in d.values()), default=0)
    lines = [
        "# CPU steps under load",
        "",
        f"Written by `{a.command}` (scripts/bench_load.py) on {datetime.date.today().isoformat()}, commit {a.commit}, "
        f"{os.cpu_count()} cores, {a.busy} busy processes beside the loaded runs (`while :; do :; done`).",
        f"Median microseconds per step over {rounds} interleaved rounds; default threads = every core "
        "(Options::cpu_threads = 0), one thread = `VECNORM_NUM_THREADS=1`. Bound (issue 19): loaded default / "
        f"loaded one thread <= {BOUND}.",
        "",
        "| case | idle default | idle one thread | loaded default | loaded one thread | loaded default / one | loaded / idle | bound |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    worst = 0.0
    for c in cases:
        g = lambda s, t: med.get((s, t), {}).get(c, float("nan"))
        idle_d, idle_1, load_d, load_1 = g("idle", "default"), g("idle", "one"), g("loaded", "default"), g("loaded", "one")
        r = load_d / load_1
        worst = max(worst, r)
        lines.append(f"| {c[len('vecnorm/'):]} | {idle_d:.2f} | {idle_1:.2f} | {load_d:.2f} | {load_1:.2f} | "
                     f"{r:.2f} | {load_d / idle_d:.1f}x | {'ok' if r <= BOUND else 'OVER'} |")
    lines += ["", f"Worst loaded default / loaded one thread: {worst:.2f} (bound {BOUND})."]
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
