"""Pooled statistics across ranks with torch.distributed (gloo, 4 processes on
this machine's CPU): vecnorm.torch.VecNorm(..., process_group=...) and the
TorchRL transform.

Each rank steps its own batch; the ranks must store the statistics of one
process stepping the concatenated batches (the naive float64 reference,
tests/python/reference.py, and a VecNorm without a group), the same bits on
every rank; batch sizes differ per rank (one rank has none at a step), the
reward is absent on every rank at a reset step; a checkpoint written by rank 0
and loaded by every rank continues identically; a rank that fails makes every
rank fail and changes nothing; a rank that disappears gives the others an error
within the group's timeout."""
from __future__ import annotations

import datetime
import os
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import vecnorm.torch as vt
from reference import Reference
from test_module import assert_normalized

RANKS = 4
F = 5
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def batch_of(rank: int, step: int, dtype):
    """Rank `rank`'s batch at `step`: 3 + 5 rank rows (rank 3 has none at step
    2), the reward absent at step 0 (a reset)."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    rows = 0 if (rank == 3 and step == 2) else 3 + 5 * rank
    shift = torch.tensor([2.0, -1.0, 30.0, 0.0, 1e3])
    b = {"obs": (torch.randn(rows, F, generator=g) * 3.0 + shift).to(dtype)}
    if step != 0:
        b["reward"] = (torch.randn(rows, generator=g) + 0.5).to(dtype)
    return b


def concatenated(step: int, dtype):
    parts = [batch_of(r, step, dtype) for r in range(RANKS)]
    out = {"obs": torch.cat([p["obs"] for p in parts])}
    if step != 0:
        out["reward"] = torch.cat([p["reward"] for p in parts])
    return out


def mixed_batch(rank: int, step: int):
    """batch_of's float64 rows, the reward as float32."""
    b = batch_of(rank, step, torch.float64)
    if "reward" in b:
        b["reward"] = b["reward"].float()
    return b


def mask_of(rank: int, step: int):
    """Rank `rank`'s row mask at `step` (about half the rows kept)."""
    g = torch.Generator().manual_seed(7000 + 1000 * step + rank)
    return torch.rand(batch_of(rank, step, torch.float64)["obs"].shape[0], generator=g) < 0.5


def _init(rank: int, store: str, timeout_s: float = 60.0):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=RANKS,
                            timeout=datetime.timedelta(seconds=timeout_s))
    torch.set_num_threads(1)


def _rollouts(rank: int, store: str, out: str):
    """Every case on this rank; writes its statistics and outputs to `out`."""
    _init(rank, store)
    results = {}
    for dtype in (torch.float32, torch.float64):
        for decay in (1.0, 0.99):
            case = f"{dtype}-{decay}"
            kw = dict(reduce_batch_dims=True, decay=decay, stats_dtype=dtype)
            vn = vt.VecNorm({"obs": (F,), "reward": ()}, process_group=dist.group.WORLD, **kw)
            ys = []
            for s in range(12):
                y = vn(batch_of(rank, s, dtype))
                ys.append({k: v.clone() for k, v in y.items()})
            results[case] = {"state": {k: v.clone() for k, v in vn.state_dict().items()}, "ys": ys}
    # Checkpoints: rank 0 saves after 6 steps; every rank loads it into a new
    # module and goes on; the result must be the bits of a module that went on.
    kw = dict(reduce_batch_dims=True, decay=0.999)
    a = vt.VecNorm({"obs": (F,), "reward": ()}, process_group=dist.group.WORLD, **kw)
    for s in range(6):
        a(batch_of(rank, s, torch.float32))
    path = os.path.join(os.path.dirname(out), "checkpoint.pt")
    if rank == 0:
        torch.save(a.state_dict(), path)
    dist.barrier()
    b = vt.VecNorm({"obs": (F,), "reward": ()}, process_group=dist.group.WORLD, **kw)
    b.load_state_dict(torch.load(path))
    for s in range(6, 10):
        batch = batch_of(rank, s, torch.float32)
        ya, yb = a(batch), b(batch)
        assert all(torch.equal(ya[k], yb[k]) for k in ya), "the resumed module normalizes differently"
    results["resumed"] = {k: v.clone() for k, v in b.state_dict().items()}
    results["continued"] = {k: v.clone() for k, v in a.state_dict().items()}
    # Row masks: each rank sends the moments of its kept rows (float64).
    m = vt.VecNorm({"obs": (F,), "reward": ()}, process_group=dist.group.WORLD, reduce_batch_dims=True,
                   decay=0.99, stats_dtype=torch.float64)
    for s in range(1, 7):
        m(batch_of(rank, s, torch.float64), mask=mask_of(rank, s))
    results["masked"] = {k: v.clone() for k, v in m.state_dict().items()}
    # Keys of both statistics dtypes (stats_dtype None): float64 obs statistics,
    # float32 reward statistics, one exchange per step.
    mx = vt.VecNorm({"obs": (F,), "reward": ()}, dtypes={"obs": torch.float64}, process_group=dist.group.WORLD,
                    reduce_batch_dims=True, decay=0.99)
    for s in range(6):
        mx(mixed_batch(rank, s))
    results["mixed"] = {k: v.clone() for k, v in mx.state_dict().items()}
    # update() and a key absent on every rank.
    c = vt.VecNorm({"obs": (F,), "reward": ()}, process_group=dist.group.WORLD, **kw)
    c.update(batch_of(rank, 0, torch.float32))
    results["update"] = {k: v.clone() for k, v in c.state_dict().items()}
    # The TorchRL transform with the group: the module's bits.
    try:
        from tensordict import TensorDict
        from vecnorm.torchrl import VecNormV2
    except ImportError:
        results["torchrl"] = None
    else:
        t = VecNormV2(in_keys=["obs", "reward"], reduce_batch_dims=True, decay=0.99, process_group=dist.group.WORLD)
        m = vt.VecNorm({"obs": (F,), "reward": ()}, reduce_batch_dims=True, decay=0.99,
                       process_group=dist.group.WORLD)
        same = True
        for s in range(1, 6):
            b = batch_of(rank, s, torch.float32)
            td = TensorDict(dict(b), batch_size=[b["obs"].shape[0]])
            out_t = t._step(td.clone(), td.clone())
            out_m = m(b)
            same = same and all(torch.equal(out_t.get(k), out_m[k]) for k in b)
        results["torchrl"] = same
    torch.save(results, out)
    dist.destroy_process_group()


def test_ranks_store_the_statistics_of_the_concatenated_batches_bit_identically(tmp_path):
    outs = [str(tmp_path / f"rank{r}.pt") for r in range(RANKS)]
    mp.start_processes(_rollouts_entry, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=RANKS, join=True,
                       start_method="spawn")
    res = [torch.load(o) for o in outs]
    worst = {torch.float32: 0.0, torch.float64: 0.0}
    for dtype in (torch.float32, torch.float64):
        for decay in (1.0, 0.99):
            case = f"{dtype}-{decay}"
            # The same bits on every rank.
            for r in range(1, RANKS):
                for k, v in res[0][case]["state"].items():
                    assert torch.equal(v, res[r][case]["state"][k]), f"{case}: rank {r} {k} differs from rank 0"
            # One process over the concatenation (a module without a group), and
            # the naive float64 reference.
            single = vt.VecNorm({"obs": (F,), "reward": ()}, reduce_batch_dims=True, decay=decay, stats_dtype=dtype)
            ref = {"obs": Reference((F,), decay, 1e-4, pooled=True), "reward": Reference((), decay, 1e-4, pooled=True)}
            for s in range(12):
                all_rows = concatenated(s, dtype)
                single(all_rows)
                for k, x in all_rows.items():
                    ref[k].update(x.double().numpy())
                for r in range(RANKS):
                    mine = batch_of(r, s, dtype)
                    for k, x in mine.items():
                        if x.shape[0]:
                            assert_normalized(res[r][case]["ys"][s][k].double().numpy(), ref[k], x.double().numpy(),
                                              dtype)
            st = single.state_dict()
            for k, v in st.items():
                got = res[0][case]["state"][k]
                if v.dtype.is_floating_point:
                    scale = v.abs().max().clamp_min(1.0)
                    diff = ((got - v).abs().max() / scale).item()
                    worst[dtype] = max(worst[dtype], diff)
                    tol = 8 * (2.0**-24 if dtype == torch.float32 else 2.0**-53)
                    assert diff <= tol, f"{case}: {k}: {diff} from the single process"
                else:
                    assert torch.equal(got, v), f"{case}: {k}: {got} vs {v}"
            assert res[0][case]["state"]["obs_count"].item() == sum(
                concatenated(s, dtype)["obs"].shape[0] for s in range(12))
    print("largest relative difference from the single process: " +
          ", ".join(f"{d}: {w:.3g}" for d, w in worst.items()))
    for r in range(RANKS):
        for k, v in res[r]["continued"].items():
            assert torch.equal(v, res[r]["resumed"][k]), f"rank {r}: resumed {k} differs"
    for r in range(RANKS):
        assert res[r]["torchrl"] in (True, None), f"rank {r}: the TorchRL transform's outputs differ from the module's"
    # Masks: the same bits on every rank, the statistics of every rank's kept
    # rows (the float64 reference over their concatenation).
    ref = {"obs": Reference((F,), 0.99, 1e-4, pooled=True), "reward": Reference((), 0.99, 1e-4, pooled=True)}
    for s in range(1, 7):
        for k in ref:
            kept = torch.cat([batch_of(r, s, torch.float64)[k][mask_of(r, s)] for r in range(RANKS)])
            if kept.shape[0]:
                ref[k].update(kept.numpy())
    for r in range(RANKS):
        for k, v in res[0]["masked"].items():
            assert torch.equal(v, res[r]["masked"][k]), f"masked: rank {r} {k} differs from rank 0"
    for k in ref:
        st = res[0]["masked"]
        assert st[f"{k}_count"].item() == ref[k].count < sum(3 + 5 * r for r in range(RANKS)) * 6
        for name, want in (("loc", ref[k].loc), ("var", ref[k].var)):
            np.testing.assert_allclose(st[f"{k}_{name}"].numpy(), want, rtol=1e-12, atol=1e-12, err_msg=f"{k}_{name}")
    # Keys of both statistics dtypes: the same bits on every rank, and each key
    # as one process over the concatenation, to its own dtype's rounding.
    single = vt.VecNorm({"obs": (F,), "reward": ()}, dtypes={"obs": torch.float64}, reduce_batch_dims=True, decay=0.99)
    for s in range(6):
        parts = [mixed_batch(r, s) for r in range(RANKS)]
        single({k: torch.cat([p[k] for p in parts]) for k in parts[0]})
    assert res[0]["mixed"]["obs_loc"].dtype == torch.float64 and res[0]["mixed"]["reward_loc"].dtype == torch.float32
    for r in range(1, RANKS):
        for k, v in res[0]["mixed"].items():
            assert torch.equal(v, res[r]["mixed"][k]), f"mixed: rank {r} {k} differs from rank 0"
    for k, v in single.state_dict().items():
        got = res[0]["mixed"][k]
        assert got.dtype == v.dtype, k
        if v.dtype.is_floating_point:
            diff = ((got - v).abs().max() / v.abs().max().clamp_min(1.0)).item()
            assert diff <= 8 * (2.0**-53 if v.dtype == torch.float64 else 2.0**-24), f"mixed: {k}: {diff}"
        else:
            assert torch.equal(got, v), f"mixed: {k}"
    # update(): the rows of every rank; the reward, absent everywhere, untouched.
    assert res[0]["update"]["obs_count"].item() == sum(3 + 5 * r for r in range(RANKS))
    assert res[0]["update"]["reward_count"].item() == 0


def _rollouts_entry(rank, store, tmp):
    _rollouts(rank, store, os.path.join(tmp, f"rank{rank}.pt"))


def _failing(rank: int, store: str, tmp: str):
    _init(rank, store)
    vn = vt.VecNorm({"obs": (F,), "reward": ()}, reduce_batch_dims=True, process_group=dist.group.WORLD)
    vn(batch_of(rank, 1, torch.float32))
    before = {k: v.clone() for k, v in vn.state_dict().items()}
    batch = batch_of(rank, 2, torch.float32)
    if rank == 2:
        batch["obs"] = batch["obs"][:, :3]  # the wrong feature shape
    said = ""
    try:
        vn(batch)
    except (RuntimeError, ValueError) as e:
        said = f"{type(e).__name__}: {e}"
    unchanged = all(torch.equal(v, vn.state_dict()[k]) for k, v in before.items())
    # And the group still works: a good step everywhere.
    vn(batch_of(rank, 3, torch.float32))
    # A float16 key absent on one rank (its statistics float32): named as such on every rank.
    before = {k: v.clone() for k, v in vn.state_dict().items()}
    batch = batch_of(rank, 4, torch.float16)
    if rank == 1:
        del batch["reward"]
    absent = ""
    try:
        vn(batch)
    except (RuntimeError, ValueError) as e:
        absent = f"{type(e).__name__}: {e}"
    unchanged = unchanged and all(torch.equal(v, vn.state_dict()[k]) for k, v in before.items())
    torch.save({"said": said, "absent": absent, "unchanged": unchanged}, os.path.join(tmp, f"fail{rank}.pt"))
    dist.destroy_process_group()


def test_a_rank_that_fails_makes_every_rank_fail_and_changes_nothing(tmp_path):
    mp.start_processes(_failing, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=RANKS, join=True,
                       start_method="spawn")
    for r in range(RANKS):
        got = torch.load(tmp_path / f"fail{r}.pt")
        assert got["unchanged"], f"rank {r} changed its statistics"
        if r == 2:
            assert got["said"].startswith("ValueError") and "key 'obs'" in got["said"], got["said"]
        else:
            assert got["said"].startswith("RuntimeError") and "rank 2 failed its step (shape_mismatch" in got["said"], \
                got["said"]
        assert ("key 'reward': expected on every rank or on none, got it from rank(s) 0, 2, 3 but not from rank(s) 1"
                in got["absent"]), got["absent"]


def _disappearing(rank: int, store: str, tmp: str):
    _init(rank, store, timeout_s=10.0)
    vn = vt.VecNorm({"obs": (F,)}, reduce_batch_dims=True, process_group=dist.group.WORLD)
    vn({"obs": batch_of(rank, 1, torch.float32)["obs"]})
    if rank == 3:
        os._exit(0)  # gone without a word
    start = time.monotonic()
    said = ""
    try:
        vn({"obs": batch_of(rank, 2, torch.float32)["obs"]})
    except RuntimeError as e:
        said = str(e)
    torch.save({"said": said, "waited": time.monotonic() - start, "count": vn.count("obs")},
               os.path.join(tmp, f"gone{rank}.pt"))
    os._exit(0)  # the group cannot be torn down cleanly without rank 3


def test_a_rank_that_disappears_gives_the_others_an_error_within_the_timeout(tmp_path):
    mp.start_processes(_disappearing, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=RANKS, join=True,
                       start_method="spawn")
    for r in range(3):
        got = torch.load(tmp_path / f"gone{r}.pt")
        assert "collective" in got["said"] and "all-gather" in got["said"], got["said"]
        assert got["waited"] < 30.0, got
        assert got["count"] == sum(3 + 5 * q for q in range(RANKS)), "the failed step changed the count"
        print(f"rank {r}: error after {got['waited']:.2f} s: {got['said'][:200]}")


def _compiled(rank: int, store: str, tmp: str):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=120))
    torch.set_num_threads(1)
    kw = dict(reduce_batch_dims=True, decay=0.99)
    eager = vt.VecNorm({"obs": (F,)}, process_group=dist.group.WORLD, **kw)
    traced = vt.VecNorm({"obs": (F,)}, process_group=dist.group.WORLD, **kw)

    def policy(obs):
        return traced({"obs": obs})["obs"] * 2.0

    compiled = torch.compile(policy, fullgraph=True, backend="aot_eager")
    same = True
    for s in range(4):
        x = batch_of(rank, s, torch.float32)["obs"]
        same = same and torch.equal(compiled(x), eager({"obs": x})["obs"] * 2.0)
    same = same and all(torch.equal(v, traced.state_dict()[k]) for k, v in eager.state_dict().items())
    torch.save(same, os.path.join(tmp, f"compiled{rank}.pt"))
    dist.destroy_process_group()


def test_a_step_with_a_group_compiles_with_fullgraph(tmp_path):
    mp.start_processes(_compiled, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    for r in range(2):
        assert torch.load(tmp_path / f"compiled{r}.pt"), f"rank {r}: the compiled step differs from the eager one"


def _destroyed(rank: int, store: str):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    out = torch.zeros(2 * 8)
    for _ in range(100):  # the program's own collectives, before and after vecnorm's
        dist.all_gather_into_tensor(out, torch.zeros(8))
        dist.all_reduce(torch.zeros(1))
    vn = vt.VecNorm({"obs": (17,), "reward": ()}, reduce_batch_dims=True, process_group=dist.group.WORLD,
                    cpu_threads=1)
    b = {"obs": torch.randn(1, 17), "reward": torch.randn(1)}
    for _ in range(300):
        vn(b)
    dist.barrier()
    for _ in range(100):
        dist.all_gather_into_tensor(out, torch.zeros(8))
    dist.destroy_process_group()
    # A normal exit: the group must be gone with destroy_process_group (kept by
    # vecnorm past its calls it was torn down at exit: std::terminate).


def test_a_group_destroyed_after_steps_exits_cleanly(tmp_path):
    for attempt in range(3):
        mp.start_processes(_destroyed, args=(str(tmp_path / f"store{attempt}"),), nprocs=2, join=True,
                           start_method="spawn")
