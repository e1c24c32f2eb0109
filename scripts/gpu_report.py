#!/usr/bin/env python3
"""Writes docs/gpu-report.md from the results of scripts/gpu-check.sh: the
device, the tests run on it (from the GoogleTest XML files) and the GPU
benchmarks (from Google Benchmark's JSON). Standard library only."""
import argparse
import json
import os
import xml.etree.ElementTree as ET


def test_summary(path):
    """(tests, failures, skipped, [failed test names]) of a GoogleTest XML file."""
    if not os.path.exists(path):
        return None
    root = ET.parse(path).getroot()
    tests = int(root.get("tests", 0))
    failures = int(root.get("failures", 0)) + int(root.get("errors", 0))
    skipped = int(root.get("skipped", 0)) + int(root.get("disabled", 0))
    failed = []
    for case in root.iter("testcase"):
        if case.find("failure") is not None:
            failed.append(case.get("classname", "") + "." + case.get("name", ""))
        if case.find("skipped") is not None and not root.get("skipped"):
            skipped += 1
    return tests, failures, skipped, failed


def fmt_us(seconds):
    return f"{seconds * 1e6:.1f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--driver", required=True)
    ap.add_argument("--cc", required=True)
    ap.add_argument("--seconds", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    r = a.results
    lines = ["# GPU report", "",
             "Written by `bash scripts/gpu-check.sh` on a machine with an NVIDIA GPU (docs/testing.md,",
             "\"On a GPU\"). Every figure below was measured there, in one run.", "",
             "## Device", "",
             f"- GPU: {a.name}, compute capability {a.cc[:-1]}.{a.cc[-1]} (built for sm_{a.cc})",
             f"- driver: {a.driver}"]
    nvcc = os.path.join(r, "nvcc.txt")
    if os.path.exists(nvcc):
        release = [l.strip() for l in open(nvcc) if "release" in l]
        if release:
            lines.append(f"- nvcc: {release[0]}")
    bench = os.path.join(r, "bench_gpu.json")
    data = json.load(open(bench)) if os.path.exists(bench) and os.path.getsize(bench) > 0 else None
    if data:
        ctx = data.get("context", {})
        lines.append(f"- measured copy bandwidth: {float(ctx.get('copy_bandwidth_GBps', 0)):.0f} GB/s "
                     f"(1 GiB device-to-device, read + write); nominal peak {float(ctx.get('peak_bandwidth_GBps', 0)):.0f} GB/s")
    lines.append(f"- the whole check took {a.seconds} s")
    lines += ["", "## Tests on the device", "", "| suite | tests | failed | skipped |", "|---|---:|---:|---:|"]
    failed_all = []
    for label, f in [("core: bit identity CPU vs GPU + every core case on the GPU", "core.xml"),
                     ("gpu: CUDA graphs, launches per step", "gpu.xml"),
                     ("api: pooled statistics across 4 thread ranks on the GPU (docs/distributed.md)", "collective.xml"),
                     ("nccl: the NCCL adapter on a one-rank communicator", "nccl.xml")]:
        s = test_summary(os.path.join(r, f))
        if s is None:
            lines.append(f"| {label} | not run | | |")
            continue
        lines.append(f"| {label} | {s[0]} | {s[1]} | {s[2]} |")
        failed_all += s[3]
    if failed_all:
        lines += ["", "Failed:", ""] + [f"- `{n}`" for n in failed_all[:50]]
    lines += ["", "## Benchmarks", ""]
    if not data:
        lines.append("Not measured (no benchmark results).")
    else:
        rows = {}
        for b in data["benchmarks"]:
            if b.get("run_type") == "aggregate":
                continue
            kind, case = b["name"].split("/", 1)
            case = case.replace("/manual_time", "").replace("/real_time", "")
            rows.setdefault(case, {})[kind] = b
        lines += ["Per case: one step of an observation [B, F] and a reward [B] (float32 or bfloat16, torchrl",
                  "estimator), timed with CUDA events, the L2 flushed before every iteration. `bytes`: the",
                  "step's floor traffic (bench/cases.hpp); `copy`: the same bytes' fraction of the measured",
                  "copy bandwidth; `host`: the caller's time to submit one step (eager: the launches; graph:",
                  "one cudaGraphLaunch).", "",
                  "| case | bytes | copy of input µs | eager µs | eager of copy bw | eager host µs | graph µs | graph of copy bw | graph host µs |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for case, k in rows.items():
            def t(kind):
                b = k.get(kind)
                return fmt_us(b["real_time"] * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1}[b["time_unit"]]) if b else "-"
            def c(kind, counter, scale=1.0, digits=2):
                b = k.get(kind)
                return f"{b[counter] * scale:.{digits}f}" if b and counter in b else "-"
            bytes_ = k.get("vecnorm", k.get("graph", {})).get("bytes", 0)
            lines.append(f"| {case} | {bytes_ / 1e6:.2f} MB | {t('copy')} | {t('vecnorm')} | {c('vecnorm', 'copy_fraction')} | "
                         f"{c('vecnorm', 'host_us', digits=1)} | {t('graph')} | {c('graph', 'copy_fraction')} | {c('graph', 'host_us', digits=1)} |")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    open(a.out, "w").write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
