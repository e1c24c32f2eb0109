"""The drop-in classes against their originals, installed from PyPI
(scripts/python-env.sh): vecnorm.rsl_rl.EmpiricalNormalization vs rsl_rl's,
vecnorm.rl_games.RunningMeanStd vs rl_games', vecnorm.sb3.RunningMeanStd vs
SB3's (also inside SB3's own VecNormalize). The same drifting float32 stream
(test_presets.stream, with outliers) through both, hundreds of steps: equal
outputs, statistics and counts within the originals' own float32 rounding;
checkpoints load both ways and continue alike; the options that are not
supported say so.

The largest differences seen are printed (pytest -s) for the closing note."""
from __future__ import annotations

import copy
import datetime
import os
import pickle
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from test_presets import K_U32, U32, rel, stream  # noqa: E402

rsl_rl_modules = pytest.importorskip("rsl_rl.modules", reason="rsl-rl-lib not installed")

import vecnorm.rl_games as vrg  # noqa: E402
import vecnorm.rsl_rl as vrsl  # noqa: E402
import vecnorm.sb3 as vsb3  # noqa: E402

SHAPE = (7,)


def stat_diffs(mean_a, var_a, mean_b, var_b):
    """Mean relative to the spread, variance relative to the second moment."""
    mean_a, var_a, mean_b, var_b = (np.asarray(t, np.float64) for t in (mean_a, var_a, mean_b, var_b))
    spread = np.sqrt(var_b) + np.abs(mean_b)
    return rel(mean_a, mean_b, spread), rel(var_a, var_b, var_b + mean_b ** 2)


# ---------------------------------------------------------------- rsl_rl
@pytest.mark.parametrize("until", [None, 2000])
def test_rsl_rl_dropin_matches_rsl_rl(until, capsys):
    ref = rsl_rl_modules.EmpiricalNormalization(SHAPE, until=until)
    got = vrsl.EmpiricalNormalization(SHAPE, until=until)
    worst_y = worst_m = worst_v = 0.0
    for t, xn in enumerate(stream(300, 32, SHAPE, seed=11)):
        x = torch.from_numpy(xn)
        # rsl_rl's loop: normalize (from the initial statistics at first), then update.
        y_ref, y = ref(x), got(x)
        # Past the float32 rounding of the anchor's batch mean (test_presets.py).
        batch_err = K_U32 * U32 * ref._mean.abs().double() / (ref._std.double() + ref.eps)
        dy = float((((y - y_ref).abs().double() - batch_err) / y_ref.abs().clamp_min(1.0)).max())
        worst_y = max(worst_y, dy)
        assert dy <= 2e-5, f"step {t}: outputs differ by {dy:.3g} past the batch rounding"
        ref.update(x), got.update(x)
        assert int(got.count) == int(ref.count), f"step {t}: count {int(got.count)} vs {int(ref.count)}"
        dm, dv = stat_diffs(got._mean, got._var, ref._mean, ref._var)
        worst_m, worst_v = max(worst_m, dm), max(worst_v, dv)
        assert dm <= 2e-5 and dv <= 2e-5, f"step {t}: mean {dm:.3g}, var {dv:.3g}"
        torch.testing.assert_close(got._std, torch.sqrt(got._var), rtol=0, atol=0)
    if until is not None:
        assert int(got.count) == 2016  # the first batch past `until` is the last one merged
    back = got.inverse(got(x))
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-4 * float(x.abs().max()))
    torch.testing.assert_close(got.mean, got._mean[0]), torch.testing.assert_close(got.std, got._std[0])
    with capsys.disabled():
        print(f"\n[dropins] rsl_rl until={until}: 300 steps x 32 x 7; largest difference: outputs {worst_y:.2g} "
              f"past the anchor's batch rounding, "
              f"mean {worst_m:.2g}, var {worst_v:.2g} (relative)")


def test_rsl_rl_dropin_state_loads_both_ways_eval_and_script():
    ref = rsl_rl_modules.EmpiricalNormalization(SHAPE)
    got = vrsl.EmpiricalNormalization(SHAPE)
    xs = [torch.from_numpy(x) for x in stream(20, 16, SHAPE, seed=12)]
    for x in xs[:10]:
        ref.update(x)
    assert sorted(got.state_dict()) == sorted(ref.state_dict())
    got.load_state_dict(ref.state_dict())  # rsl_rl -> vecnorm
    back = rsl_rl_modules.EmpiricalNormalization(SHAPE)
    for x in xs[10:]:
        ref.update(x), got.update(x)
    back.load_state_dict(got.state_dict())  # vecnorm -> rsl_rl
    assert int(back.count) == int(ref.count) == 320
    dm, dv = stat_diffs(back._mean, back._var, ref._mean, ref._var)
    assert dm <= 2e-5 and dv <= 2e-5
    # Eval mode: no update.
    got.eval()
    before = {k: v.clone() for k, v in got.state_dict().items()}
    got.update(xs[0])
    assert all(torch.equal(before[k], v) for k, v in got.state_dict().items())
    got.train()
    # TorchScript (rsl_rl's exporters), a deep copy, float64 buffers after .double().
    scripted = torch.jit.script(copy.deepcopy(got))
    torch.testing.assert_close(scripted(xs[0]), got(xs[0]))
    d = copy.deepcopy(got).double()
    d.update(xs[0].double())
    assert d._mean.dtype == torch.float64 and int(d.count) == int(got.count) + 16
    assert int(got.count) == 320  # the copy's update left the original alone


# ---------------------------------------------------------------- rl_games
rl_games_rms = pytest.importorskip("rl_games.algos_torch.running_mean_std", reason="rl-games not installed")


def test_rl_games_dropin_matches_rl_games(capsys):
    ref = rl_games_rms.RunningMeanStd(SHAPE)
    got = vrg.RunningMeanStd(SHAPE)
    worst_y = worst_m = worst_v = 0.0
    clipped = 0
    for t, xn in enumerate(stream(300, 32, SHAPE, seed=13)):
        x = torch.from_numpy(xn)
        y_ref, y = ref(x), got(x)  # training: update, then normalize and clamp
        assert float(got.count) == float(ref.count), f"step {t}: count"
        batch_err = K_U32 * U32 * ref.running_mean.abs() / torch.sqrt(ref.running_var + 1e-5)
        dy = float((((y - y_ref).abs().double() - batch_err) / y_ref.abs().clamp_min(1.0)).max())
        worst_y = max(worst_y, dy)
        assert dy <= 2e-6, f"step {t}: outputs differ by {dy:.3g} past the batch rounding"
        clipped += int((y_ref.abs() >= 5.0).sum())
        dm, dv = stat_diffs(got.running_mean, got.running_var, ref.running_mean, ref.running_var)
        worst_m, worst_v = max(worst_m, dm), max(worst_v, dv)
        assert dm <= K_U32 * U32 and dv <= K_U32 * U32, f"step {t}: mean {dm:.3g}, var {dv:.3g}"
    assert clipped > 0
    ref.eval(), got.eval()
    for kw in ({}, {"denorm": True}):
        torch.testing.assert_close(got(x, **kw), ref(x, **kw), rtol=2e-6, atol=2e-6 * float(x.abs().max()))
    assert float(got.count) == 1 + 300 * 32  # eval: no update
    with capsys.disabled():
        print(f"\n[dropins] rl_games: 300 steps x 32 x 7; largest difference: outputs {worst_y:.2g} past the "
              f"anchor's batch rounding, mean {worst_m:.2g}, var {worst_v:.2g} (relative); {clipped} clamped")


def test_rl_games_dropin_state_both_ways_norm_only_and_refusals():
    ref = rl_games_rms.RunningMeanStd(SHAPE)
    got = vrg.RunningMeanStd(SHAPE)
    xs = [torch.from_numpy(x) for x in stream(20, 16, SHAPE, seed=14)]
    # Before any update: the initial statistics (mean 0, var 1), as rl_games.
    ref.eval(), got.eval()
    torch.testing.assert_close(got(xs[0]), ref(xs[0]))
    ref.train(), got.train()
    for x in xs[:10]:
        ref(x)
    assert sorted(got.state_dict()) == sorted(ref.state_dict())
    assert all(v.dtype == torch.float64 for v in got.state_dict().values())
    got.load_state_dict(ref.state_dict())
    for x in xs[10:]:
        ref(x), got(x)
    back = rl_games_rms.RunningMeanStd(SHAPE)
    back.load_state_dict(got.state_dict())
    assert float(back.count) == float(ref.count) == 321
    dm, dv = stat_diffs(back.running_mean, back.running_var, ref.running_mean, ref.running_var)
    assert dm <= K_U32 * U32 and dv <= K_U32 * U32
    # norm_only: divided by the scale, not centred, not clamped.
    a, b = rl_games_rms.RunningMeanStd(SHAPE, norm_only=True), vrg.RunningMeanStd(SHAPE, norm_only=True)
    for x in xs[:5]:
        torch.testing.assert_close(b(x), a(x), rtol=2e-6, atol=1e-6)
    with pytest.raises(NotImplementedError, match="per_channel"):
        vrg.RunningMeanStd((3, 8, 8), per_channel=True)
    with pytest.raises(ValueError, match="masked update of 1 row"):
        got(xs[0][:1], mask=torch.ones(1, dtype=torch.bool))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rl_games_dropin_masked_updates_as_rl_games(dtype, capsys):
    """rl_games' masked update, quirks included: one mean and one unbiased
    variance over the elements of input * mask (sums over mask.sum()), for
    every feature alike, merged as a batch of all input.size(0) rows; masks of
    the input's own shape ([B, 1] values, [B, 7] elements). (A row mask [B, 1]
    over 7 features divides 7 features' sums by the kept rows and can give
    rl_games a negative variance: not compared.) float64 inputs: rl_games' own
    moments are float64 too, so the statistics agree to 1e-12; float32: within
    rl_games' float32 moments (E[v^2] - E[v]^2 in float32)."""
    rng = torch.Generator().manual_seed(21)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    worst = 0.0
    for feat, mask_feat in ((1, 1), (7, 7)):
        ref = rl_games_rms.RunningMeanStd((feat,))
        got = vrg.RunningMeanStd((feat,))
        for t in range(40):
            x = (1.5 + 2.0 * torch.randn(24, feat, generator=rng)).to(dtype)
            mask = torch.rand(24, mask_feat, generator=rng) < 0.7
            y_ref = ref(x, mask=mask.to(dtype))
            y = got(x, mask=mask)
            at = f"features {feat}, mask [24, {mask_feat}], {dtype}, step {t}"
            assert float(got.count) == float(ref.count) == 1 + 24 * (t + 1), at
            dm, dv = stat_diffs(got.running_mean, got.running_var, ref.running_mean, ref.running_var)
            worst = max(worst, dm, dv)
            assert dm <= tol and dv <= tol, f"{at}: mean {dm:.3g}, var {dv:.3g}"
            torch.testing.assert_close(y.double(), y_ref.double(), rtol=10 * tol, atol=10 * tol)
        if mask_feat == feat == 7:  # every feature got the same moments: the statistics agree across features
            assert float(got.running_mean.std()) < 1e-9 * float(got.running_mean.abs().max())
    with capsys.disabled():
        print(f"\n[dropins] rl_games masked updates ({dtype}): 2 mask shapes x 40 steps of 24 rows; largest "
              f"difference of the statistics {worst:.2g} (relative)")


# ---------------------------------------------------------------- SB3
sb3_rms = pytest.importorskip("stable_baselines3.common.running_mean_std", reason="stable-baselines3 not installed")


def test_sb3_dropin_matches_sb3(capsys):
    ref = sb3_rms.RunningMeanStd(shape=SHAPE)
    got = vsb3.RunningMeanStd(shape=SHAPE)
    np.testing.assert_array_equal(got.mean, ref.mean), np.testing.assert_array_equal(got.var, ref.var)
    assert got.count == ref.count == 1e-4
    worst_m = worst_v = 0.0
    for t, x in enumerate(stream(300, 32, SHAPE, seed=15)):
        ref.update(x), got.update(x)
        assert got.count == pytest.approx(ref.count, rel=1e-12), f"step {t}: count"
        dm, dv = stat_diffs(got.mean, got.var, ref.mean, ref.var)
        worst_m, worst_v = max(worst_m, dm), max(worst_v, dv)
        assert dm <= K_U32 * U32 and dv <= K_U32 * U32, f"step {t}: mean {dm:.3g}, var {dv:.3g}"
    c = got.copy()
    p = pickle.loads(pickle.dumps(got))
    for other in (c, p):
        np.testing.assert_array_equal(other.mean, got.mean), np.testing.assert_array_equal(other.var, got.var)
        assert other.count == got.count
    c.update(x)
    assert got.count == pytest.approx(ref.count, rel=1e-12)  # the copy is independent
    # Assigning SB3's attributes (a state taken from SB3's own object).
    fresh = vsb3.RunningMeanStd(shape=SHAPE)
    with pytest.raises(ValueError, match="assign count before mean and var"):
        fresh.mean = ref.mean  # no rows seen yet: the prior's statistics
    fresh.count, fresh.mean, fresh.var = ref.count, ref.mean, ref.var
    np.testing.assert_array_equal(fresh.mean, ref.mean), np.testing.assert_array_equal(fresh.var, ref.var)
    with pytest.raises(ValueError, match="count: expected epsilon"):
        fresh.count = 3.5
    for call in (lambda: fresh.combine(ref), lambda: fresh.update_from_moments(ref.mean, ref.var, 5)):
        with pytest.raises(NotImplementedError):
            call()
    np.testing.assert_array_equal(fresh.mean, ref.mean)  # nothing changed
    with capsys.disabled():
        print(f"\n[dropins] sb3 RunningMeanStd: 300 steps x 32 x 7; largest difference: mean {worst_m:.2g}, "
              f"var {worst_v:.2g} (relative)")


def test_sb3_dropin_inside_vecnormalize():
    """SB3's VecNormalize with its obs_rms and ret_rms replaced by the
    drop-in: the same normalized observations and rewards as SB3's own over a
    CartPole rollout (4 envs, resets included)."""
    vec_env = pytest.importorskip("stable_baselines3.common.vec_env")
    gym = pytest.importorskip("gymnasium")

    def make():
        env = vec_env.VecNormalize(vec_env.DummyVecEnv([lambda: gym.make("CartPole-v1")] * 4), gamma=0.99)
        env.seed(7)
        return env

    a, b = make(), make()
    b.obs_rms = vsb3.RunningMeanStd(shape=b.observation_space.shape)
    b.ret_rms = vsb3.RunningMeanStd(shape=())
    oa, ob = a.reset(), b.reset()
    np.testing.assert_allclose(ob, oa, rtol=1e-5, atol=1e-5)
    rng = np.random.default_rng(0)
    for t in range(200):
        act = rng.integers(0, 2, size=4)
        oa, ra, da, _ = a.step(act)
        ob, rb, db, _ = b.step(act)
        np.testing.assert_array_equal(da, db)
        np.testing.assert_allclose(ob, oa, rtol=1e-5, atol=1e-5, err_msg=f"step {t}: observations")
        np.testing.assert_allclose(rb, ra, rtol=1e-5, atol=1e-5, err_msg=f"step {t}: rewards")
    assert b.obs_rms.count == pytest.approx(a.obs_rms.count)


# ---------------------------------------------------------------- rsl_rl across ranks
RANKS = 2


def _ranks_entry(rank: int, store: str, out_dir: str):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=RANKS,
                            timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    ref = rsl_rl_modules.EmpiricalNormalization(SHAPE)
    got = vrsl.EmpiricalNormalization(SHAPE)
    diffs = []
    for t, xn in enumerate(stream(30, 8 + 4 * rank, SHAPE, seed=100 + rank)):
        x = torch.from_numpy(xn)
        ref.update(x), got.update(x)  # rsl_rl all-reduces; vecnorm merges every rank's batch
        diffs.append((int(got.count), int(ref.count)) + stat_diffs(got._mean, got._var, ref._mean, ref._var))
    torch.save({"diffs": diffs, "state": got.state_dict()}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_rsl_rl_dropin_merges_every_rank_as_rsl_rl(tmp_path):
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    outs = [str(tmp_path / f"rank{r}.pt") for r in range(RANKS)]
    mp.start_processes(_ranks_entry, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=RANKS, join=True,
                       start_method="spawn")
    res = [torch.load(o) for o in outs]
    for r in range(RANKS):
        for t, (n_got, n_ref, dm, dv) in enumerate(res[r]["diffs"]):
            assert n_got == n_ref == (t + 1) * (8 + 12), f"rank {r} step {t}: counts {n_got}, {n_ref}"
            assert dm <= 2e-5 and dv <= 2e-5, f"rank {r} step {t}: mean {dm:.3g}, var {dv:.3g}"
    for k, v in res[0]["state"].items():
        assert torch.equal(v, res[1]["state"][k]), f"rank 1's {k} differs from rank 0's"
