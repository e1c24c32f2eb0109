"""vecnorm.presets against each anchor's own implementation (installed from
PyPI, wrapped by tests/python/anchor_refs.py): the same random stream through
the anchor and through the preset, hundreds of steps, equal outputs and
statistics within rounding. Also: the options reach the library (a wrong one
is refused naming it), clip bounds to_affine() too, and a state_dict round
trip keeps the options' effect.

The largest differences seen are printed (pytest -s) for the closing note."""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import anchor_refs  # noqa: E402

import vecnorm.presets as presets  # noqa: E402
from vecnorm.torch import VecNorm  # noqa: E402

# preset name -> (anchor, output tolerance, statistics tolerance (relative)).
# Every anchor takes a float32 batch's mean and variance in float32 (numpy's
# np.mean/np.var, torch's mean/var), vecnorm in double: the anchor's batch mean
# is off by up to a few u32 |mean| (u32 = 2^-24), which moves its statistics by
# that much relative to their spread, and its outputs by that over the scale
# (the term K_U32 |mean| / scale below). Float32 statistics (Gymnasium, rsl_rl)
# also round every merge.
U32 = 2.0 ** -24
K_U32 = 64
CASES = {
    "sb3": ("sb3", 2e-6, K_U32 * U32),
    "gymnasium": ("gymnasium", 2e-5, 2e-5),
    "rsl_rl": ("rsl_rl", 2e-5, 2e-5),
    "rl_games": ("rl_games", 2e-6, K_U32 * U32),
    "skrl": ("skrl", 2e-6, K_U32 * U32),
    # brax's running_statistics with jax's x64 (float64 state and sums; the float32 default
    # is test_brax_float32_rollouts_with_weights...: its first update's M2 cancels).
    "brax_x64": ("brax", 2e-6, K_U32 * U32),
    # rl_games' norm_only (input / sqrt(var + eps), no bound): the rl_games preset uncentred.
    "rl_games_norm_only": ("rl_games", 2e-6, K_U32 * U32),
}
PRIOR = {"sb3": 1e-4, "gymnasium": 1e-4, "rsl_rl": 2.0**-60, "rl_games": 1.0, "skrl": 1.0, "brax_x64": 2.0**-60,
         "rl_games_norm_only": 1.0}
# Cases that are a preset with options, against the anchor with arguments:
# name -> (preset, its options, the anchor's constructor arguments).
VARIANTS = {"rl_games_norm_only": ("rl_games", {"center": False, "clip": math.inf}, {"norm_only": True}),
            "brax_x64": ("brax", {"stats_dtype": torch.float64}, {"x64": True})}


def stream(steps: int, batch: int, shape, seed: int = 0):
    """Batches whose location and spread drift, with rare outliers (clipped by
    the anchors that clip), float32."""
    rng = np.random.default_rng(seed)
    f = int(np.prod(shape))
    loc = rng.uniform(-50, 50, f)
    sd = 10.0 ** rng.uniform(-2, 2, f)
    for t in range(steps):
        x = loc + sd * rng.standard_normal((batch, f)) + 0.01 * t * sd
        if t % 37 == 5:
            x[0, 0] += 1e3 * sd[0]
        yield x.reshape((batch,) + tuple(shape)).astype(np.float32)


def rel(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(scale, 1e-30)))


def _anchor_and_preset(name: str, shape):
    """Case `name`'s fresh anchor (skipped where it is not installed) and preset, one key "obs"."""
    anchor = CASES[name][0]
    if not anchor_refs.available(anchor):
        pytest.skip(f"{anchor} not installed: {anchor_refs.import_error(anchor)}")
    preset, options, anchor_kwargs = VARIANTS.get(name, (name, {}, {}))
    return anchor_refs.REFS[anchor](shape, **anchor_kwargs), getattr(presets, preset)({"obs": shape}, **options)


@pytest.mark.parametrize("name", list(CASES))
def test_preset_matches_the_anchor(name, capsys):
    anchor, out_tol, stat_tol = CASES[name]
    shape = (7,)
    ref, norm = _anchor_and_preset(name, shape)
    worst_y = worst_m = worst_v = raw_y = 0.0
    clipped = 0
    for t, x in enumerate(stream(300, 32, shape, seed=sum(map(ord, name)))):
        want = ref.step(x)
        got = norm({"obs": torch.from_numpy(x)})["obs"].double().numpy()
        # Outputs: float32 values (the anchors' own), relative to max(1, |y|),
        # beyond the anchor's own float32 batch-mean rounding (K_U32 |mean| / scale).
        st = ref.stats()
        batch_err = K_U32 * U32 * np.abs(st["mean"]) / np.maximum(norm.scale("obs").double().numpy(), 1e-30)
        excess = np.abs(got - want) - batch_err
        dy = float(np.max(excess / np.maximum(1.0, np.abs(want))))
        worst_y = max(worst_y, dy)
        raw_y = max(raw_y, float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)))))
        assert dy <= out_tol, f"{name} step {t}: outputs differ by {dy:.3g} (relative, past the batch rounding)"
        bound = norm.clip
        if math.isfinite(bound):
            clipped += int(np.sum(np.abs(want) >= bound))
        loc = norm._buffers["obs_loc"].double().numpy()
        var = norm._buffers["obs_var"].double().numpy()
        spread = np.sqrt(st["var"]) + np.abs(st["mean"])
        dm, dv = rel(loc, st["mean"], spread), rel(var, st["var"], st["var"] + st["mean"] ** 2)
        worst_m, worst_v = max(worst_m, dm), max(worst_v, dv)
        assert dm <= stat_tol and dv <= stat_tol, f"{name} step {t}: mean {dm:.3g}, var {dv:.3g} (relative)"
        assert norm.count("obs") + PRIOR[name] == pytest.approx(st["count"], rel=1e-12)
    if math.isfinite(norm.clip):
        assert clipped > 0, f"{name}: the stream never reached the bound"
    with capsys.disabled():
        print(f"\n[presets] {name} vs {anchor}: 300 steps x 32 rows x 7 features; largest difference: "
              f"outputs {raw_y:.2g} ({worst_y:.2g} past the anchor's batch rounding), mean {worst_m:.2g}, var {worst_v:.2g} (relative); {clipped} outputs clipped")


@pytest.mark.parametrize("name", list(CASES))
def test_before_the_first_update_a_preset_normalizes_as_the_anchors_initial_state(name):
    """A fresh preset's normalize (and a frozen forward) against the fresh
    anchor normalizing without an update: SB3's, Gymnasium's, rl_games' and
    skrl's prior (mean 0, variance 1), rsl_rl's and brax's initial mean 0 and
    std 1."""
    shape = (7,)
    ref, norm = _anchor_and_preset(name, shape)
    x = next(stream(1, 32, shape, seed=5)) * np.float32(0.01)  # inside every bound
    want = ref.step(x, update=False)
    got = norm.normalize({"obs": torch.from_numpy(x)})["obs"].double().numpy()
    np.testing.assert_allclose(got, want, rtol=2e-7, atol=1e-7, err_msg=name)
    frozen = norm.freeze()({"obs": torch.from_numpy(x)})["obs"].double().numpy()
    np.testing.assert_array_equal(frozen, got)
    assert norm.count("obs") == 0


def test_torchrl_v2_refuses_to_normalize_before_its_first_update():
    norm = presets.torchrl_v2({"obs": (3,)}, batch_shape=(4,))
    with pytest.raises(ValueError, match="key 'obs': cannot normalize: expected count > 0, got 0"):
        norm.normalize({"obs": torch.ones(4, 3)})


def test_frozen_preset_normalizes_as_the_anchor_in_eval_mode():
    if not anchor_refs.available("rl_games"):
        pytest.skip("rl_games not installed")
    shape = (4,)
    ref = anchor_refs.REFS["rl_games"](shape)
    norm = presets.rl_games({"obs": shape})
    batches = list(stream(20, 16, shape, seed=3))
    for x in batches[:10]:
        ref.step(x)
        norm({"obs": torch.from_numpy(x)})
    norm.freeze()
    for x in batches[10:]:
        want = ref.step(x, update=False)
        got = norm({"obs": torch.from_numpy(x)})["obs"].double().numpy()
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


def test_brax_float32_rollouts_with_weights_are_masked_updates(capsys):
    """brax's default (jax without x64, float32 state), as its PPO runs it: the
    statistics updated once per (T, N, D) rollout, then the rollout normalized;
    ARS and ES pass 0/1 weights of shape (T, N), the episodes still running. The
    preset does the same with the weights as its row mask.

    brax sums in float32 and its first update is M2 = sum(x (x - mean)) from a
    mean of 0, which cancels: its variance is off by about K u32 (mean^2 + var)
    (the statistics' tolerance below), its std by half that relative to var, and
    its mean by K u32 |mean|. The stream keeps |mean| / std under 10, as for
    observations of a simulator."""
    if not anchor_refs.available("brax"):
        pytest.skip(f"brax not installed: {anchor_refs.import_error('brax')}")
    shape, T, N = (5,), 8, 16
    ref = anchor_refs.REFS["brax"](shape)
    norm = presets.brax({"obs": shape})
    rng = np.random.default_rng(7)
    loc, sd = rng.uniform(-8.0, 8.0, shape), rng.uniform(1.0, 3.0, shape)
    worst_y = worst_m = worst_v = raw_y = 0.0
    left_out = 0
    for it in range(60):
        x = (loc + sd * rng.standard_normal((T, N) + shape)).astype(np.float32)
        w = (rng.random((T, N)) < 0.7).astype(np.float32)
        if it % 10 == 3:
            w[:, :] = 1.0
        left_out += int(np.sum(w == 0))
        want = ref.step(x, weights=w)
        norm.update({"obs": torch.from_numpy(x)}, mask=torch.from_numpy(w != 0))
        got = norm.normalize({"obs": torch.from_numpy(x)})["obs"].double().numpy()
        st = ref.stats()
        assert norm.count("obs") == st["count"], f"iteration {it}: counts differ"
        tol = K_U32 * U32
        var_err = tol * (st["mean"] ** 2 + st["var"]) / st["var"]  # relative to var
        allow = tol * np.abs(st["mean"]) / np.sqrt(st["var"]) + np.abs(want) * var_err / 2
        dy = float(np.max(np.abs(got - want) - allow))
        raw_y = max(raw_y, float(np.max(np.abs(got - want))))
        loc_v = norm._buffers["obs_loc"].double().numpy()
        var = norm._buffers["obs_var"].double().numpy()
        dm = rel(loc_v, st["mean"], np.sqrt(st["var"]) + np.abs(st["mean"]))
        dv = rel(var, st["var"], st["var"] + st["mean"] ** 2)
        worst_y, worst_m, worst_v = max(worst_y, dy), max(worst_m, dm), max(worst_v, dv)
        assert dy <= 1e-6 and dm <= tol and dv <= tol, f"iteration {it}: outputs {dy:.3g}, mean {dm:.3g}, var {dv:.3g}"
    assert left_out > 0
    with capsys.disabled():
        print(f"\n[presets] brax (float32) rollouts with 0/1 weights: 60 updates of {T} x {N} x {shape[0]}, "
              f"{left_out} rows weighted 0; largest difference: outputs {raw_y:.2g} ({max(worst_y, 0.0):.2g} past "
              f"brax's float32 rounding), mean {worst_m:.2g}, var {worst_v:.2g} (relative)")


def test_brax_whole_number_weights_count_each_row_that_many_times(capsys):
    """brax's weights of 0 to 3 (x64), as an int32 mask: the counts equal,
    the statistics and outputs within rounding, over 20 rollouts."""
    if not anchor_refs.available("brax"):
        pytest.skip("brax not installed")
    shape, T, N = (3,), 4, 32
    ref = anchor_refs.REFS["brax"](shape, x64=True)
    norm = presets.brax({"obs": shape}, stats_dtype=torch.float64)
    rng = np.random.default_rng(12)
    worst, total = 0.0, 0
    for it, x in enumerate(stream(20, T * N, shape, seed=13)):
        x = x.reshape((T, N) + shape).astype(np.float32)
        w = rng.integers(0, 4, (T, N)).astype(np.float32)
        want = ref.step(x, weights=w)
        norm.update({"obs": torch.from_numpy(x)}, mask=torch.from_numpy(w).to(torch.int32))
        got = norm.normalize({"obs": torch.from_numpy(x)})["obs"].double().numpy()
        st = ref.stats()
        total += int(w.sum())
        assert norm.count("obs") == st["count"] == total, f"iteration {it}: counts"
        sd = np.sqrt(st["var"])
        # (brax's first update takes M2 from a mean of 0: it cancels to about
        # u64 (mean^2 + var), hence the scales of the bounds.)
        assert rel(norm._buffers["obs_loc"].double().numpy(), st["mean"], sd + np.abs(st["mean"])) <= 1e-12
        assert rel(norm._buffers["obs_var"].double().numpy(), st["var"], st["var"] + st["mean"] ** 2) <= 1e-12
        allow = 4 * U32 * (np.abs(x) + np.abs(st["mean"])) / sd + 4 * U32 * np.abs(want)
        assert float(np.max(np.abs(got - want) - allow)) <= 0, f"iteration {it}"
        worst = max(worst, float(np.max(np.abs(got - want))))
    with capsys.disabled():
        print(f"\n[presets] brax (x64) with weights 0 to 3 as an int32 mask: 20 updates of {T} x {N} x {shape[0]}; "
              f"largest output difference {worst:.2g} (0 past the float32 rounding of x - mean)")


def test_brax_std_floor_binds_for_a_near_constant_feature():
    """brax keeps its std at least 1e-6 (the preset's clamp form, eps 1e-6): a
    feature whose spread is about 1e-7 is divided by 1e-6, in brax (x64) and
    in the preset alike."""
    if not anchor_refs.available("brax"):
        pytest.skip("brax not installed")
    shape = (2,)
    ref = anchor_refs.REFS["brax"](shape, x64=True)
    norm = presets.brax({"obs": shape}, stats_dtype=torch.float64)
    rng = np.random.default_rng(4)
    for t in range(30):
        x = np.stack([1.0 + 1e-7 * rng.standard_normal(16), 3.0 * rng.standard_normal(16)], axis=1).astype(np.float32)
        want = ref.step(x)
        got = norm({"obs": torch.from_numpy(x)})["obs"].double().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert math.sqrt(ref.stats()["var"][0]) < 1e-6 and float(norm.scale("obs")[0]) == pytest.approx(1e-6)


def test_brax_std_eps_is_inside_the_square_root():
    if not anchor_refs.available("brax"):
        pytest.skip("brax not installed")
    shape = (3,)
    ref = anchor_refs.REFS["brax"](shape, std_eps=0.25)
    norm = presets.brax({"obs": shape}, std_eps=0.25)
    for x in stream(20, 16, shape, seed=2):
        x = (x * 1e-3).astype(np.float32)  # var well under std_eps: the eps decides the scale
        want = ref.step(x)
        got = norm({"obs": torch.from_numpy(x)})["obs"].double().numpy()
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_brax_ema_mode_with_until_count_stops_where_brax_does(capsys):
    """brax's EMA mode with PPO's ``normalize_until_count``: batches of 128 rows
    and until_count 300 merge at counts 128 and 256; 384 would pass 300, so
    brax's rate is 0 from then on (its count goes on: 384, 512, ...). The
    preset (``until`` with ``until_strict``) stops at 256 and normalizes as
    brax does; rsl_rl's rule (the crossing batch merged) would not."""
    if not anchor_refs.available("brax"):
        pytest.skip("brax not installed")
    shape, T, N = (4,), 8, 16
    ref = anchor_refs.REFS["brax"](shape, x64=True, mode="ema", until_count=300)
    norm = presets.brax({"obs": shape}, mode="ema", until_count=300, stats_dtype=torch.float64)
    assert norm.until == 300 and norm.until_strict
    loose = presets.brax({"obs": shape}, mode="ema", until=300, stats_dtype=torch.float64)  # rsl_rl's rule
    worst = 0.0
    for it, x in enumerate(stream(6, T * N, shape, seed=8)):
        x = x.reshape((T, N) + shape).astype(np.float32)
        want = ref.step(x)
        got = norm({"obs": torch.from_numpy(x)})["obs"].double().numpy()
        other = loose({"obs": torch.from_numpy(x)})["obs"].double().numpy()
        # brax's EMA mode takes the batch's mean and variance in float32 (x's
        # dtype) even under x64: the statistics agree to float32 rounding; the
        # outputs to the float32 rounding of x - mean (vecnorm computes a float32
        # key's map in float32).
        st = ref.stats()
        allow = 4 * U32 * (np.abs(x) + np.abs(st["mean"])) / np.sqrt(st["var"]) + 4 * U32 * np.abs(want)
        past = float(np.max(np.abs(got - want) - allow))
        worst = max(worst, float(np.max(np.abs(got - want))))
        assert past <= 0, f"iteration {it}: outputs {past:.3g} past the float32 rounding"
        sd = np.sqrt(st["var"])
        assert rel(norm._buffers["obs_loc"].double().numpy(), st["mean"], sd + np.abs(st["mean"])) <= K_U32 * U32
        assert rel(norm._buffers["obs_var"].double().numpy(), st["var"], st["var"] + st["mean"] ** 2) <= K_U32 * U32
        assert st["count"] == 128 * (it + 1)
        assert norm.count("obs") == min(128 * (it + 1), 256)
        if it >= 2:
            assert float(np.max(np.abs(other - want))) > 1e-3, "rsl_rl's rule merges the crossing batch"
    with capsys.disabled():
        print(f"\n[presets] brax EMA mode, until_count 300 (x64): 6 updates of {T} x {N} x {shape[0]}, "
              f"largest output difference {worst:.2g} (0 past the float32 rounding of x - mean)")


def test_brax_welford_mode_ignores_until_count_as_brax_does():
    if not anchor_refs.available("brax"):
        pytest.skip("brax not installed")
    shape = (3,)
    ref = anchor_refs.REFS["brax"](shape, x64=True, until_count=20)
    with pytest.warns(UserWarning, match="ignores until_count"):
        norm = presets.brax({"obs": shape}, until_count=20, stats_dtype=torch.float64)
    for x in stream(5, 16, shape, seed=9):
        np.testing.assert_allclose(norm({"obs": torch.from_numpy(x)})["obs"].double().numpy(), ref.step(x),
                                   rtol=1e-6, atol=1e-6)
    assert norm.count("obs") == ref.stats()["count"] == 80
    with pytest.raises(ValueError, match="until_count: expected a whole number of samples >= 1"):
        presets.brax({"obs": shape}, mode="ema", until_count=0)
    with pytest.raises(ValueError, match="mode: expected 'welford' or 'ema'"):
        presets.brax({"obs": shape}, mode="EMA")


def test_brax_std_upper_bound_binds_for_a_huge_feature():
    """brax clips its std to at most 1e6 (the preset's max_scale): a feature of
    spread 1e8 is divided by 1e6, in brax (x64) and in the preset alike, in its
    to_affine and denormalize too."""
    if not anchor_refs.available("brax"):
        pytest.skip("brax not installed")
    shape = (2,)
    ref = anchor_refs.REFS["brax"](shape, x64=True)
    norm = presets.brax({"obs": shape}, stats_dtype=torch.float64)
    rng = np.random.default_rng(6)
    for t in range(10):
        x = np.stack([1e8 * rng.standard_normal(16), 3.0 * rng.standard_normal(16)], axis=1).astype(np.float32)
        want = ref.step(x)
        got = norm({"obs": torch.from_numpy(x)})["obs"].double().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert math.sqrt(ref.stats()["var"][0]) > 1e7 and float(norm.scale("obs")[0]) == 1e6
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(norm.to_affine()({"obs": xt})["obs"].double().numpy(), got, rtol=1e-6, atol=1e-6)
    back = norm.denormalize({"obs": torch.from_numpy(got)})["obs"].double().numpy()
    np.testing.assert_allclose(back, x, rtol=1e-6, atol=1e-3)


def test_clip_bounds_to_affine_and_a_state_dict_round_trip_keeps_it():
    shape = (3,)
    norm = presets.sb3({"obs": shape}, clip=0.5)
    xs = list(stream(10, 8, shape, seed=5))
    for x in xs:
        y = norm({"obs": torch.from_numpy(x)})["obs"]
        assert float(y.abs().max()) <= 0.5
    x = torch.from_numpy(xs[-1])
    frozen = norm.normalize({"obs": x})["obs"]
    aff = norm.to_affine("obs")(x)
    torch.testing.assert_close(aff.float(), frozen, rtol=1e-6, atol=1e-6)
    assert float(aff.abs().max()) == pytest.approx(0.5)
    other = presets.sb3({"obs": shape}, clip=0.5)
    other.load_state_dict(norm.state_dict())
    torch.testing.assert_close(other.normalize({"obs": x})["obs"], frozen)


def test_bad_options_are_refused_naming_them():
    with pytest.raises(ValueError, match="prior_count: expected 0 with estimator torchrl"):
        VecNorm({"obs": (2,)}, prior_count=1.0)
    with pytest.raises(ValueError, match="clip: expected clip > 0"):
        VecNorm({"obs": (2,)}, clip=-1.0)
    with pytest.raises(ValueError, match="scale: expected 'clamp', 'sqrt_var_plus_eps' or 'std_plus_eps', got 'std'"):
        VecNorm({"obs": (2,)}, scale="std")
