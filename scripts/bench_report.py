#!/usr/bin/env python3
"""Turns Google Benchmark JSON output of bench/ into docs/benchmarks.md.

usage: bench_report.py CPU_JSON [--gpu GPU_JSON | --gpu-note TEXT] [--command CMD] --out FILE

Every vecnorm case is compared with the copy and the eager baseline of the same
case, measured seconds apart in the same run (bench/bench_cpu.cpp). With
repetitions, the median of each benchmark is used.
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile

NAME = re.compile(r"^(copy|eager|vecnorm|graph)/(elementwise|pooled)/(torchrl|stable)/(f32|bf16)/(\d+)x(\d+)")


def load(path):
    with open(path) as f:
        doc = json.load(f)
    rows = {}
    has_median = any(b.get("aggregate_name") == "median" for b in doc["benchmarks"])
    for b in doc["benchmarks"]:
        if has_median and b.get("aggregate_name") != "median":
            continue
        if b.get("error_occurred"):
            continue
        m = NAME.match(b.get("run_name", b["name"]))
        if not m:
            continue
        kind, mode, est, dtype, bsz, feat = m.groups()
        unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b.get("time_unit", "ns")]
        seconds = b["real_time"] * unit
        rows[(kind, mode, est, dtype, int(bsz), int(feat))] = {"s": seconds, "bench": b}
    return doc["context"], rows


def fmt_time(s):
    if s < 1e-6:
        return f"{s * 1e9:.0f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    return f"{s * 1e3:.2f} ms"


def floor_bytes(mode, dtype, b, f):
    n = b * (f + 1)
    xb = 2 if dtype == "bf16" else 4
    return n * 3 * xb if mode == "pooled" else n * (2 * xb + 16)


def cases(rows):
    keys = sorted({k[1:] for k in rows if k[0] == "vecnorm"},
                  key=lambda k: (k[3] * k[4], k[3], k[2], k[0], k[1]))
    return keys


def cpu_table(rows):
    out = ["| shape B x F | dtype | mode | estimator | copy | eager | vecnorm | floor bytes | vecnorm GB/s | vecnorm / copy | eager / vecnorm |",
           "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, est, dtype, b, f in cases(rows):
        v = rows.get(("vecnorm", mode, est, dtype, b, f))
        c = rows.get(("copy", mode, est, dtype, b, f))
        e = rows.get(("eager", mode, est, dtype, b, f))
        if not v:
            continue
        fb = floor_bytes(mode, dtype, b, f)
        out.append(
            f"| {b} x {f} | {dtype} | {mode} | {est} | {fmt_time(c['s']) if c else '-'} | "
            f"{fmt_time(e['s']) if e else '-'} | {fmt_time(v['s'])} | {fb / 1e6:.3f} MB | {fb / v['s'] / 1e9:.1f} | "
            f"{v['s'] / c['s']:.2f}x | {e['s'] / v['s']:.1f}x |" if c and e else
            f"| {b} x {f} | {dtype} | {mode} | {est} | - | - | {fmt_time(v['s'])} | {fb / 1e6:.3f} MB | - | - | - |")
    return "\n".join(out)


def gpu_table(rows, peak):
    out = ["| shape B x F | dtype | mode | estimator | copy | vecnorm (launch) | vecnorm (graph) | floor bytes | peak fraction (launch) | vecnorm / copy |",
           "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for mode, est, dtype, b, f in cases(rows):
        v = rows.get(("vecnorm", mode, est, dtype, b, f))
        g = rows.get(("graph", mode, est, dtype, b, f))
        c = rows.get(("copy", mode, est, dtype, b, f))
        fb = floor_bytes(mode, dtype, b, f)
        frac = fb / v["s"] / peak if peak else float("nan")
        out.append(f"| {b} x {f} | {dtype} | {mode} | {est} | {fmt_time(c['s']) if c else '-'} | {fmt_time(v['s'])} | "
                   f"{fmt_time(g['s']) if g else '-'} | {fb / 1e6:.3f} MB | {frac:.2f} | "
                   f"{v['s'] / c['s']:.2f}x |" if c else "- |")
    return "\n".join(out)


def targets(rows):
    """The four CPU targets of issue 5: (text, value, met)."""
    res = []

    def ratio(kind_a, kind_b, mode, est, b, f):
        a = rows.get((kind_a, mode, est, "f32", b, f))
        c = rows.get((kind_b, mode, est, "f32", b, f))
        return a["s"] / c["s"] if a and c else None

    for est in ("torchrl", "stable"):
        r = ratio("vecnorm", "copy", "pooled", est, 65536, 256)
        res.append((f"pooled f32 65536x256 ({est}): step / copy <= 1.7", r, r is not None and r <= 1.7, "x"))
    for est in ("torchrl", "stable"):
        r = ratio("vecnorm", "copy", "elementwise", est, 4096, 235)
        res.append((f"per-element f32 4096x235 ({est}): step / copy <= 3.5", r, r is not None and r <= 3.5, "x"))
    for est in ("torchrl", "stable"):
        r = ratio("eager", "vecnorm", "pooled", est, 4096, 64)
        res.append((f"pooled f32 4096x64 ({est}): eager / vecnorm >= 10", r, r is not None and r >= 10, "x"))
    for mode in ("elementwise", "pooled"):
        for est in ("torchrl", "stable"):
            v = rows.get(("vecnorm", mode, est, "f32", 1, 17))
            us = v["s"] * 1e6 if v else None
            res.append((f"{mode} f32 1x17 ({est}): step <= 1 µs", us, us is not None and us <= 1.0, " µs"))
    return res


def machine(ctx):
    lines = []
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown"
    flags = ""
    try:
        f = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
        flags = ", ".join(x for x in ("sse4_2", "avx", "avx2", "fma", "avx512f") if x in f)
    except (OSError, StopIteration):
        pass
    caches = ", ".join(f"L{c['level']} {c['type'].lower()} {c['size'] // 1024} KiB" + (f" x{ctx['num_cpus'] // c['num_sharing']}" if c.get('num_sharing') else "")
                       for c in ctx.get("caches", []))
    lines.append(f"- CPU: {model}, {ctx.get('num_cpus')} logical cores at {ctx.get('mhz_per_cpu')} MHz; ISA: {flags}; "
                 f"vecnorm's CPU loops ran their {ctx.get('cpu_isa', 'baseline')} build")
    if ctx.get("measured_ghz"):
        lines.append(f"- clock measured when the run started: {ctx['measured_ghz']} GHz (a chain of dependent integer adds, "
                     "one a cycle; the figure above is what the kernel reports)")
    lines.append(f"- caches: {caches}")
    lines.append(f"- threads used by vecnorm and by the copy: {ctx.get('threads', '?')}; library {ctx.get('library_build_type', '?')} build of Google Benchmark")
    lines.append(f"- load average when the run started: {ctx.get('load_avg', [])}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cpu_json")
    ap.add_argument("--gpu")
    ap.add_argument("--gpu-note", default="")
    ap.add_argument("--command", default="bash scripts/bench.sh")
    ap.add_argument("--out", required=True)
    ap.add_argument("--commit", help="the commit the benchmarks were built from (default: git HEAD now)")
    a = ap.parse_args()
    ctx, rows = load(a.cpu_json)
    try:
        if a.commit:
            raise StopIteration
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        if dirty:
            commit += " + uncommitted changes"
    except StopIteration:
        commit = a.commit
    except OSError:
        commit = "?"
    t = targets(rows)
    doc = []
    doc.append("# Benchmarks\n")
    doc.append(f"Written by `{a.command}` (scripts/bench_report.py) on {ctx.get('date', datetime.date.today().isoformat())}, "
               f"vecnorm {ctx.get('vecnorm_version', '?')} at commit {commit}. Do not edit by hand: run the script again.\n")
    doc.append("Every row is one case: an observation key [B, F] plus a reward key [B], stepped together, "
               "statistics in float32, decay 0.9999. In the same run, seconds apart, for each case:\n")
    doc.append("- **copy**: the limit, a copy of the same input bytes (observation and reward) to an output buffer "
               "with the threads the step uses (memcpy);")
    doc.append("- **eager**: what an eager framework does: one full pass per elementary operation of VecNormV2's formulas, "
               "each into a new temporary (bench/bench_cpu.cpp);")
    doc.append("- **vecnorm**: one `VecNorm::step` of both keys in steady state.\n")
    doc.append("Times are medians of the repetitions. *floor bytes* is the least memory traffic of a step "
               "(per-element: x and y, loc and var in and out; pooled: x twice and y once); the floor of "
               "vecnorm / copy is 3x per-element and 1.5x pooled for data larger than the caches.\n")
    doc.append("## Targets (issue 5)\n")
    doc.append("| target | measured | met |")
    doc.append("|---|---:|---|")
    for text, value, met, unit in t:
        doc.append(f"| {text} | {'-' if value is None else f'{value:.2f}{unit}'} | {'yes' if met else 'NO'} |")
    doc.append("")
    doc.append("## CPU\n")
    doc.append(machine(ctx) + "\n")
    doc.append(cpu_table(rows) + "\n")
    doc.append("## GPU\n")
    if a.gpu:
        gctx, grows = load(a.gpu)
        peak = float(gctx.get("peak_bandwidth_GBps", "0")) * 1e9
        doc.append(f"- device: {gctx.get('device', '?')}, peak memory bandwidth {peak / 1e9:.0f} GB/s (from the device attributes); "
                   "CUDA events around each step, L2 flushed before each one.\n")
        doc.append(gpu_table(grows, peak) + "\n")
    else:
        doc.append(f"Not measured: {a.gpu_note or 'no CUDA device on the machine that ran the script'}.\n")
    notes = os.path.join(os.path.dirname(os.path.abspath(a.out)), "benchmarks-notes.md")
    if os.path.exists(notes):
        doc.append(open(notes).read())
    text = "\n".join(doc)
    d = os.path.dirname(os.path.abspath(a.out))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".benchmarks.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, a.out)
    for text_, value, met, unit in t:
        print(f"bench: {'met ' if met else 'MISSED'} {text_}: {'-' if value is None else f'{value:.2f}{unit}'}")


if __name__ == "__main__":
    sys.exit(main())
