"""The cost of merging pooled statistics across ranks with torch.distributed
(gloo, CPU): vecnorm.torch.VecNorm(..., process_group=...) against the same
module without a group, per training step, at 2 and 4 ranks on this machine.

    python bench_distributed.py [--ranks 2,4] [--rounds 7] [--cases 1x17,4096x48]

Each case is rows per rank x F (an observation [rows, F] and a reward [rows]);
rounds interleave the step with and without the group; a round's time is the
slowest rank's; the table gives medians over rounds. Prints Markdown."""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def steps_for(rows: int, feat: int) -> int:
    return max(20, min(400, 2_000_000 // max(1, rows * feat)))


def _worker(rank: int, world: int, store: str, cases, rounds: int, out: str):
    import vecnorm.torch as vt

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=300))
    torch.set_num_threads(1)
    results = []
    for rows, feat in cases:
        g = torch.Generator().manual_seed(rank)
        batch = {"obs": torch.randn(rows, feat, generator=g), "reward": torch.randn(rows, generator=g)}
        shapes = {"obs": (feat,), "reward": ()}
        alone = vt.VecNorm(shapes, reduce_batch_dims=True, cpu_threads=1)
        merged = vt.VecNorm(shapes, reduce_batch_dims=True, cpu_threads=1, process_group=dist.group.WORLD)
        n = steps_for(rows, feat)
        for m in (alone, merged):
            for _ in range(20):
                m(batch)
        times = {"alone": [], "merged": []}
        for _ in range(rounds):
            for name, m in (("alone", alone), ("merged", merged)):
                dist.barrier()
                t0 = time.perf_counter()
                for _ in range(n):
                    m(batch)
                dt = torch.tensor([(time.perf_counter() - t0) / n * 1e6])
                dist.all_reduce(dt, op=dist.ReduceOp.MAX)
                times[name].append(dt.item())
        same = torch.tensor([float(merged.loc("obs").sum())])
        gathered = [torch.zeros(1) for _ in range(world)]
        dist.all_gather(gathered, same)
        assert all(torch.equal(gathered[0], t) for t in gathered), "ranks disagree"
        results.append((rows, feat, statistics.median(times["alone"]), statistics.median(times["merged"])))
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", default="2,4")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cases", default="1x17,64x48,4096x48,4096x235")
    a = ap.parse_args()
    cases = [tuple(int(v) for v in c.split("x")) for c in a.cases.split(",")]
    print("| case (rows per rank x F) | ranks | bytes/rank/step | step alone (us) | step with gloo merge (us) "
          "| merge cost (us) |")
    print("|---|---:|---:|---:|---:|---:|")
    for world in (int(r) for r in a.ranks.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "out.pt")
            mp.start_processes(_worker, args=(world, os.path.join(tmp, "store"), cases, a.rounds, out),
                               nprocs=world, join=True, start_method="spawn")
            for rows, feat, alone, merged in torch.load(out):
                nbytes = 8 * (3 + (2 * feat + 1) + 3)  # the header, obs (2F + 1), reward (F = 1: 3)
                print(f"| {rows}x{feat} | {world} | {nbytes} | {alone:.2f} | {merged:.2f} | {merged - alone:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
