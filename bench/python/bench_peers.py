"""vecnorm through PyTorch against the normalizers a PyTorch user would pick,
side by side in one run on the same shapes (CPU; a CUDA device adds a column
set when present): one training step of an observation [B, F] and a reward [B]
(float32, decay 0.9999, torchrl estimator), median microseconds per step.

  vecnorm module   vecnorm.torch.VecNorm(...)(dict)         (the nn.Module)
  vecnorm op       torch.ops.vecnorm.step(...)               (the operator alone)
  torchrl          torchrl's VecNormV2._step on a TensorDict
  compiled EMA     the same update and normalize in torch, torch.compile(fullgraph=True)
  SB3              Stable-Baselines3's RunningMeanStd (numpy, Chan's pooled update): pooled only
  C++ API          vecnorm::VecNorm::step, from bench/bench_cpu.cpp (--cpp-bench, run in the same job)

Run by scripts/bench.sh --python (or directly with the environment of
scripts/python-env.sh). The rounds of the Python columns are interleaved
(round r of each, then round r + 1), so that each sees the same load and the
torch threads the others leave spinning, as a training loop would; the C++
API's figures come from its own run just before. Timings on shared machines
are noisy: compare the columns of one run, not runs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time

import torch

import vecnorm.torch as vt

CASES = [("per-element", 1, 17, False), ("per-element", 4096, 48, False), ("pooled", 4096, 48, True)]


def timeit_interleaved(fns: dict, rounds: int, inner: dict) -> dict:
    """Median microseconds per call of each function, the rounds interleaved
    (round r of every function, then round r + 1): all of them see the same
    load of this shared machine, so that their ratios hold where absolute
    figures drift between seconds."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            n = inner[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - t0) / n * 1e6)
    return {name: statistics.median(v) for name, v in samples.items()}


def compiled_ema(B, F, pooled, decay=0.9999, eps=1e-4):
    shape_o = (F,) if pooled else (B, F)
    shape_r = () if pooled else (B,)
    st = {k: [torch.zeros(s), torch.zeros(s), torch.zeros((), dtype=torch.int64)]
          for k, s in (("observation", shape_o), ("reward", shape_r))}

    def one(x, loc, var, count, m):
        count.add_(m)
        w = 1 - decay**m
        xb = x.mean(0) if pooled else x
        x2 = (x * x).mean(0) if pooled else x * x
        loc.lerp_(xb, w)
        var.lerp_(x2, w)
        bc = 1 - torch.exp(count.to(torch.float64) * torch.log(torch.tensor(decay, dtype=torch.float64)))
        mu = loc / bc
        v = (var - loc * loc) / bc
        return (x - mu) / v.clamp_min(0).sqrt().clamp_min(eps)

    @torch.compile(fullgraph=True)
    def step(obs, rew):
        m = obs.shape[0] if pooled else 1
        return (one(obs, *st["observation"], m), one(rew, *st["reward"], m))

    return step


def cpp_figures(binary: str) -> dict:
    """Median microseconds of the C++ API's cases (pooled, B, F) -> us."""
    filt = "^vecnorm/(elementwise|pooled)/torchrl/f32/(1x17|4096x48)/"
    out = subprocess.run([binary, f"--benchmark_filter={filt}", "--benchmark_repetitions=5",
                          "--benchmark_report_aggregates_only=true", "--benchmark_min_time=0.2",
                          "--benchmark_format=json"], check=True, capture_output=True, text=True).stdout
    res = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        _, mode, _, _, shape = b["run_name"].split("/")[:5]
        B, F = (int(v) for v in shape.split("x"))
        scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3}[b["time_unit"]]
        res[(mode == "pooled", B, F)] = b["real_time"] * scale
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--no-torchrl", action="store_true")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-sb3", action="store_true")
    ap.add_argument("--cpp-bench", help="path of vecnorm_bench_cpu: adds the C++ API's figures of the same cases")
    args = ap.parse_args()
    cpp = cpp_figures(args.cpp_bench) if args.cpp_bench else {}
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; median us per step, {args.rounds} rounds, "
          "interleaved (the C++ API: its own run just before)")
    print("| case | vecnorm module | vecnorm op | vecnorm C++ API | torchrl VecNormV2 | compiled EMA | SB3 RunningMeanStd "
          "| compiled / module | torchrl / module | SB3 / module |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, B, F, pooled in CASES:
        inner = 2000 if B == 1 else 50
        g = torch.Generator().manual_seed(0)
        obs = torch.randn(B, F, generator=g) * 3 + 1
        rew = torch.randn(B, generator=g)
        norm = vt.VecNorm({"observation": (F,), "reward": ()}, batch_shape=(B,), decay=0.9999, reduce_batch_dims=pooled)
        batch = {"observation": obs, "reward": rew}
        fns, inners = {"module": lambda: norm(batch)}, {"module": inner}

        # the operator alone: what the module passes it, prepared once
        keys, names, xs, stats = norm._gather(batch)
        op = torch.ops.vecnorm.step_alloc.default
        cfg = norm._config
        fns["op"], inners["op"] = (lambda: op(xs, stats, names, cfg, 0.9999, 1e-4)), inner

        if not args.no_torchrl:
            from tensordict import TensorDict
            from torchrl.envs.transforms import VecNormV2

            t = VecNormV2(in_keys=["observation", "reward"], decay=0.9999, eps=1e-4, reduce_batch_dims=pooled)
            td = TensorDict({"observation": obs, "reward": rew}, batch_size=[B])
            fns["torchrl"], inners["torchrl"] = (lambda: t._step(td, td.clone(False))), max(1, inner // 10)

        if not args.no_compile:
            step = compiled_ema(B, F, pooled)
            fns["compiled"], inners["compiled"] = (lambda: step(obs, rew)), inner

        if pooled and not args.no_sb3:
            try:
                import numpy as np
                from stable_baselines3.common.running_mean_std import RunningMeanStd
            except ImportError:
                pass
            else:
                ro, rr = RunningMeanStd(shape=(F,)), RunningMeanStd(shape=())

                def sb3_step():
                    o, r = obs.numpy(), rew.numpy()
                    ro.update(o)
                    rr.update(r)
                    return (o - ro.mean) / np.sqrt(ro.var + 1e-8), (r - rr.mean) / np.sqrt(rr.var + 1e-8)

                fns["sb3"], inners["sb3"] = sb3_step, max(1, inner // 2)

        med = timeit_interleaved(fns, args.rounds, inners)
        nan = float("nan")
        t_mod, t_op = med["module"], med["op"]
        t_rl, t_c, t_sb3 = med.get("torchrl", nan), med.get("compiled", nan), med.get("sb3", nan)

        def ratio(t):
            return "—" if t != t else f"{t / t_mod:.1f}x"

        def cell(t, digits=2):
            return "—" if t != t else f"{t:.{digits}f}"

        t_cpp = cpp.get((pooled, B, F), float("nan"))
        print(f"| {mode} {B}x{F} | {t_mod:.2f} | {t_op:.2f} | {cell(t_cpp)} | {cell(t_rl, 1)} | {cell(t_c)} | "
              f"{cell(t_sb3, 1)} | {ratio(t_c)} | {ratio(t_rl)} | {ratio(t_sb3)} |", flush=True)


if __name__ == "__main__":
    main()
