"""vecnorm.torch.VecNorm and the operators against a naive float64 reference
(tests/python/reference.py, from the spec's formulas), plus the module's
contracts: buffers and state_dict, freeze and copies, errors that change
nothing, torch.compile(fullgraph=True), to_affine under TorchScript and ONNX."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import vecnorm
import vecnorm.torch as vt
from reference import Reference

CUDA = torch.cuda.is_available()


def make_data(steps, batch, feature, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    shift = torch.linspace(-5.0, 20.0, max(1, int(np.prod(feature)))).reshape(feature) if feature else 3.0
    return [(torch.randn(*batch, *feature, generator=g) * 7.0 + shift).to(dtype) for _ in range(steps)]


def assert_normalized(actual, ref, x, stats_dtype):
    """actual vs the float64 reference within the rounding of the statistics:
    stored loc/var carry relative errors of a few ulps of the stats dtype, and
    the torchrl estimator's variance (var - loc^2) magnifies them by
    (loc^2 + v) / v (cancellation); y = (x - mu) / scale moves by that
    relative error times (1 + |y|). Bound: 16 ulps of that, per element."""
    ulp = 2.0**-24 if stats_dtype == torch.float32 else 2.0**-53
    mu, scale = ref.maps()
    v = np.maximum(scale, ref.eps) ** 2
    magnify = (mu * mu + v) / v
    y = ref.normalize(x)
    bound = 16 * ulp * magnify * (1.0 + np.abs(y)) + (1e-6 if stats_dtype == torch.float32 else 1e-14)
    err = np.abs(np.asarray(actual, dtype=np.float64) - y)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.ndim else ()
    assert np.all(err <= bound), f"error {err[worst]} > bound {bound[worst]} at {worst}"


def tol(stats_dtype):
    return dict(rtol=1e-5, atol=1e-6) if stats_dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("decay", [0.9, 1.0])
@pytest.mark.parametrize("estimator", ["torchrl", "stable"])
@pytest.mark.parametrize("stats_dtype", [torch.float32, torch.float64])
def test_matches_reference(pooled, decay, estimator, stats_dtype):
    batch, steps = (6, 2), 12
    obs = make_data(steps, batch, (4,), seed=1, dtype=stats_dtype)
    rew = make_data(steps, batch, (), seed=2, dtype=stats_dtype)
    n = vt.VecNorm({"observation": (4,), "reward": ()}, batch_shape=batch, decay=decay, eps=1e-4,
                   reduce_batch_dims=pooled, estimator=estimator, stats_dtype=stats_dtype)
    ro = Reference((4,) if pooled else (*batch, 4), decay, 1e-4, estimator, pooled)
    rr = Reference(() if pooled else batch, decay, 1e-4, estimator, pooled)
    for t in range(steps):
        batch_in = {"observation": obs[t]}
        if t % 5 != 0:  # a reset step carries no reward
            batch_in["reward"] = rew[t]
        out = n(batch_in)
        ro.update(obs[t].numpy())
        assert_normalized(out["observation"].numpy(), ro, obs[t].numpy(), stats_dtype)
        if "reward" in batch_in:
            rr.update(rew[t].numpy())
            assert_normalized(out["reward"].numpy(), rr, rew[t].numpy(), stats_dtype)
        else:
            assert "reward" not in out
    assert n.count("observation") == ro.count
    assert n.count("reward") == rr.count
    mu, scale = ro.maps()
    ulp = 2.0**-24 if stats_dtype == torch.float32 else 2.0**-53
    np.testing.assert_allclose(n.loc("observation").double().numpy(), mu, rtol=16 * ulp, atol=0)
    magnify = (mu * mu + scale * scale) / (scale * scale)
    assert np.all(np.abs(n.scale("observation").double().numpy() - scale) <= 16 * ulp * magnify * scale)


def test_buffers_state_dict_roundtrip_continues_bit_for_bit():
    data = make_data(8, (5,), (3,), seed=3)
    a = vt.VecNorm({"observation": (3,)}, batch_shape=(5,), decay=0.99)
    for x in data[:4]:
        a({"observation": x})
    names = set(a.state_dict().keys())
    assert {"observation_loc", "observation_var", "observation_count", "observation_skips",
            "observation_skipped"} <= names
    b = vt.VecNorm({"observation": (3,)}, batch_shape=(5,), decay=0.99)
    b.load_state_dict(a.state_dict())
    for x in data[4:]:
        ya, yb = a({"observation": x})["observation"], b({"observation": x})["observation"]
        assert torch.equal(ya, yb)
    assert a.count("observation") == b.count("observation") == 8
    # the load copied: the two share no storage
    assert a.observation_loc.data_ptr() != b.observation_loc.data_ptr()


def test_freeze_clone_frozen_copy():
    data = make_data(6, (4,), (2,), seed=4)
    n = vt.VecNorm({"observation": (2,)}, batch_shape=(4,), decay=0.9)
    for x in data[:3]:
        n({"observation": x})
    loc_before = n.observation_loc.clone()
    n.freeze()
    assert n.frozen
    y = n({"observation": data[3]})["observation"]
    assert torch.equal(n.observation_loc, loc_before) and n.count("observation") == 3
    assert torch.equal(y, n.normalize({"observation": data[3]})["observation"])
    n.unfreeze()
    f = n.frozen_copy()
    c = n.clone()
    assert f.frozen and not c.frozen
    n({"observation": data[4]})
    assert f.count("observation") == 3 and c.count("observation") == 3 and n.count("observation") == 4
    assert torch.equal(f.observation_loc, loc_before)


@pytest.mark.parametrize("pooled", [False, True])
def test_until_stops_updates_at_the_bound(pooled):
    """Options::until against the float64 reference stepped by rsl_rl's rule
    (no update once the count has reached the bound; the batch that crosses it
    is merged whole); the statistics after the stop keep their bits."""
    batch = (5,)
    until = 12.5 if pooled else 4  # a float bound counts up to its ceiling (13)
    data = make_data(8, batch, (3,), seed=4, dtype=torch.float64)
    n = vt.VecNorm({"observation": (3,)}, batch_shape=batch, decay=0.99, reduce_batch_dims=pooled,
                   stats_dtype=torch.float64, until=until)
    assert n.until == (13 if pooled else 4)
    ref = Reference((3,) if pooled else (*batch, 3), 0.99, 1e-4, "torchrl", pooled)
    kept = None
    for x in data:
        if ref.count < until:
            ref.update(x.numpy())
        y = n({"observation": x})["observation"]
        assert_normalized(y.numpy(), ref, x.numpy(), torch.float64)
        assert n.count("observation") == ref.count
        if ref.count >= until:
            if kept is None:
                kept = n.observation_loc.clone(), n.observation_var.clone()
            assert torch.equal(n.observation_loc, kept[0]) and torch.equal(n.observation_var, kept[1])
    assert ref.count == (15 if pooled else 4)
    with pytest.raises(ValueError, match="until: expected None or a number of samples > 0, got 0"):
        vt.VecNorm({"observation": (3,)}, until=0)


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("estimator", ["torchrl", "stable"])
def test_center_false_divides_only(pooled, estimator):
    """center=False: y = x / scale (the reward scalers' map) against the float64
    reference's scale, on every path (step, normalize, to_affine,
    denormalize); loc() is 0; the statistics are a centred module's."""
    batch, feature = (6,), (3,)
    data = make_data(5, batch, feature, seed=9, dtype=torch.float64)
    kw = dict(batch_shape=batch, decay=1.0 if estimator == "stable" else 0.9, reduce_batch_dims=pooled,
              estimator=estimator, stats_dtype=torch.float64)
    n = vt.VecNorm({"observation": feature}, center=False, **kw)
    c = vt.VecNorm({"observation": feature}, **kw)
    ref = Reference(feature if pooled else (*batch, *feature), kw["decay"], 1e-4, estimator, pooled)
    for x in data:
        ref.update(x.numpy())
        y = n({"observation": x})["observation"].numpy()
        c({"observation": x})
        _, scale = ref.maps()
        np.testing.assert_allclose(y, x.numpy() / scale, rtol=1e-9)
        assert torch.equal(n.observation_loc, c.observation_loc) and torch.equal(n.observation_var, c.observation_var)
    assert torch.equal(n.loc("observation"), torch.zeros_like(n.loc("observation")))
    x = data[0] * 0.5
    y = n.normalize({"observation": x})["observation"]
    np.testing.assert_allclose(y.numpy(), x.numpy() / ref.maps()[1], rtol=1e-9)
    torch.testing.assert_close(n.to_affine("observation")(x), y, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(n.denormalize({"observation": y})["observation"], x, rtol=1e-12, atol=1e-12)
    assert "center=False" in repr(n)


def _masks(steps, rows, seed):
    """Row masks: the first step keeps rows (a key never updated would
    normalize at count 0), one step keeps none, one all, the rest at random."""
    g = torch.Generator().manual_seed(seed)
    m = [torch.rand(rows, generator=g) < 0.6 for _ in range(steps)]
    m[0][0] = True
    m[2][:] = False
    m[3][:] = True
    return m


def _masked_step(n, d, mask, path: str, rows: int):
    """A masked step of module n on the path named: the operators (a
    TensorDict), update then normalize, or the eager fast path (a dict)."""
    if path == "tensordict":
        tensordict = pytest.importorskip("tensordict")
        return n(tensordict.TensorDict(d, batch_size=[rows]), mask=mask)
    if path == "update":
        n.update(d, mask=mask)
        return n.normalize(d)
    return n(d, mask=mask)


@pytest.mark.parametrize("path", ["dict", "tensordict", "update", "uint8", "strided"])
@pytest.mark.parametrize("estimator", ["torchrl", "stable"])
def test_row_mask_leaves_rows_out_of_the_update(path, estimator):
    """forward(batch, mask=) / update(batch, mask=) on pooled statistics: the
    rows where the mask is False are left out of the update as if they had
    not arrived (NaN in them is nothing, not a skip), and still normalized;
    against the float64 reference updated with the kept rows only. Paths: the
    eager fast path (dict), the operators (TensorDict), update then
    normalize, a uint8 mask and a strided bool one (a column of a [rows, 2] mask)."""
    rows, steps = 7, 9
    obs = make_data(steps, (rows,), (3,), seed=21, dtype=torch.float64)
    rew = make_data(steps, (rows,), (), seed=22, dtype=torch.float64)
    masks = _masks(steps, rows, seed=23)
    n = vt.VecNorm({"observation": (3,), "reward": ()}, decay=0.95, reduce_batch_dims=True,
                   estimator=estimator, stats_dtype=torch.float64)
    ro = Reference((3,), 0.95, 1e-4, estimator, pooled=True)
    rr = Reference((), 0.95, 1e-4, estimator, pooled=True)
    for t in range(steps):
        m = masks[t]
        x, r = obs[t].clone(), rew[t].clone()
        x[~m, 1] = float("nan")  # left out: never read into the statistics
        r[~m] = float("inf")
        d = {"observation": x, "reward": r}
        mask = m.to(torch.uint8) if path == "uint8" else torch.stack([m, ~m], 1)[:, 0] if path == "strided" else m
        assert path != "strided" or not mask.is_contiguous()
        out = _masked_step(n, d, mask, path, rows)
        if m.any():
            ro.update(obs[t][m].numpy())
            rr.update(rew[t][m].numpy())
        keep = m.numpy()
        if keep.any():
            assert_normalized(out["observation"].numpy()[keep], ro, obs[t].numpy()[keep], torch.float64)
            assert_normalized(out["reward"].numpy()[keep], rr, rew[t].numpy()[keep], torch.float64)
        # every row is still produced by the same map (NaN stays NaN, inf inf)
        np.testing.assert_allclose(out["observation"].numpy(), ro.normalize(x.numpy()), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(out["reward"].numpy(), rr.normalize(r.numpy()), rtol=1e-9, atol=1e-9)
        assert n.count("observation") == ro.count and n.count("reward") == rr.count
    assert n.skipped("observation") == 0 and n.skipped("reward") == 0


@pytest.mark.parametrize("path", ["dict", "tensordict", "update"])
@pytest.mark.parametrize("estimator", ["torchrl", "stable"])
def test_row_mask_on_per_element_statistics(path, estimator):
    """forward(batch, mask=) on per-element statistics (reduce_batch_dims=False,
    VecNormV2's default): the elements of the rows where the mask is False keep
    their statistics and count (NaN in them is nothing) and are normalized
    with them; each row against a float64 reference of its own, updated at the
    steps that kept it. The counts of the elements: count less skips."""
    rows, steps = 6, 9
    obs = make_data(steps, (rows,), (3,), seed=31, dtype=torch.float64)
    masks = _masks(steps, rows, seed=32)
    masks[0][:] = True  # every element starts with a sample
    n = vt.VecNorm({"observation": (3,)}, batch_shape=(rows,), decay=0.95, estimator=estimator,
                   stats_dtype=torch.float64)
    refs = [Reference((3,), 0.95, 1e-4, estimator) for _ in range(rows)]
    for t in range(steps):
        m = masks[t]
        x = obs[t].clone()
        x[~m, 1] = float("nan")
        d = {"observation": x}
        out = _masked_step(n, d, m, path, rows)
        for r in range(rows):
            if m[r]:
                refs[r].update(obs[t][r].numpy())
            np.testing.assert_allclose(out["observation"][r].numpy(), refs[r].normalize(x[r].numpy()),
                                       rtol=1e-9, atol=1e-9, err_msg=f"step {t} row {r}")
        counts = n.observation_count.item() - n.observation_skips
        assert counts.tolist() == [[refs[r].count] * 3 for r in range(rows)]
    assert n.skipped("observation") == sum(3 * int((~m).sum()) for m in masks)


def test_a_batch_of_no_dims_keeps_per_element_statistics_of_the_feature_shape():
    """batch_shape=() (the default) with per-element statistics: one sample of
    the feature shape a step, statistics of that shape, each element's skips
    kept (a NaN, a masked-out step); against the float64 reference."""
    n = vt.VecNorm({"observation": (3,)}, decay=0.9, stats_dtype=torch.float64)
    ref = Reference((3,), 0.9, 1e-4, "torchrl")
    for t, x in enumerate(make_data(6, (), (3,), seed=41, dtype=torch.float64)):
        ref.update(x.numpy())
        y = n({"observation": x})["observation"]
        np.testing.assert_allclose(y.numpy(), ref.normalize(x.numpy()), rtol=1e-9, atol=1e-12, err_msg=f"step {t}")
    assert n.count("observation") == 6 and n.skipped("observation") == 0
    x = torch.tensor([1.0, float("nan"), 2.0], dtype=torch.float64)
    n({"observation": x})  # the NaN element is left out
    n({"observation": x}, mask=torch.tensor(False))  # every element left out
    assert n.count("observation") == 8
    assert n.observation_skips.tolist() == [1, 2, 1] and n.skipped("observation") == 4
    assert "observation_skips" in n.state_dict()


@pytest.mark.parametrize("path", ["dict", "tensordict"])
def test_row_mask_errors_name_the_key_and_change_nothing(path):
    pooled = vt.VecNorm({"observation": (3,)}, reduce_batch_dims=True)
    per_element = vt.VecNorm({"observation": (3,)}, batch_shape=(4,))
    x = torch.ones(4, 3)
    pooled({"observation": x})
    per_element({"observation": x})
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (pooled, per_element)]
    if path == "tensordict":  # the operators' path
        tensordict = pytest.importorskip("tensordict")
        batch = tensordict.TensorDict({"observation": x}, batch_size=[4])
    else:  # the eager fast path
        batch = {"observation": x}
    with pytest.raises(ValueError, match=r"key 'observation': mask shape: expected \[4\], got \[5\]"):
        pooled(batch, mask=torch.ones(5, dtype=torch.bool))
    with pytest.raises(TypeError, match="key 'observation': mask has dtype Float, expected bool or uint8"):
        pooled.update(batch, mask=torch.ones(4))
    with pytest.raises(TypeError, match="key 'observation': mask has dtype Char, expected bool or uint8"):
        pooled(batch, mask=torch.ones(4, dtype=torch.int8))
    with pytest.raises(TypeError, match="mask: expected a Tensor or None, got list"):
        pooled(batch, mask=[1, 1, 1, 1])
    with pytest.raises(ValueError, match=r"key 'observation': mask shape: expected \[4\], got \[2, 2\]"):
        per_element(batch, mask=torch.ones(2, 2, dtype=torch.bool))
    # per-element statistics keep the elements a mask leaves out in <key>_skips (nonfinite="skip")
    strict = vt.VecNorm({"observation": (3,)}, batch_shape=(4,), nonfinite="error")
    for call in (strict, strict.update):
        with pytest.raises(ValueError, match="a row mask on per-element statistics .* needs nonfinite='skip'"):
            call(batch, mask=torch.ones(4, dtype=torch.bool))
    assert strict.count("observation") == 0
    for m, b in zip((pooled, per_element), before):
        for k, v in m.state_dict().items():
            assert torch.equal(v, b[k]), k
    # a frozen module normalizes: the mask is not read
    assert torch.equal(pooled.freeze()({"observation": x}, mask=torch.ones(5))["observation"],
                       pooled.normalize({"observation": x})["observation"])


def test_update_then_normalize_equals_step():
    data = make_data(5, (3,), (4,), seed=5)
    a = vt.VecNorm({"observation": (4,)}, batch_shape=(3,), decay=0.95)
    b = vt.VecNorm({"observation": (4,)}, batch_shape=(3,), decay=0.95)
    for x in data:
        ya = a({"observation": x})["observation"]
        b.update({"observation": x})
        yb = b.normalize({"observation": x})["observation"]
        assert torch.equal(ya, yb)


def test_denormalize_inverts():
    data = make_data(5, (3,), (4,), seed=6)
    n = vt.VecNorm({"observation": (4,)}, batch_shape=(3,), decay=0.95, stats_dtype=torch.float64,
                   dtypes={"observation": torch.float64})
    for x in data:
        y = n({"observation": x.double()})["observation"]
    back = n.denormalize({"observation": y})["observation"]
    np.testing.assert_allclose(back.numpy(), data[-1].double().numpy(), rtol=1e-12, atol=1e-9)


def test_errors_name_the_key_and_change_nothing():
    n = vt.VecNorm({"observation": (3,), "reward": ()}, batch_shape=(4,), decay=0.9)
    n({"observation": torch.ones(4, 3), "reward": torch.ones(4)})
    before = {k: v.clone() for k, v in n.state_dict().items()}
    with pytest.raises(ValueError, match="observation.*4, 3.*5, 3|observation.*5, 3"):
        n({"observation": torch.ones(5, 3), "reward": torch.ones(4)})
    with pytest.raises(TypeError, match="reward"):
        n({"observation": torch.ones(4, 3), "reward": torch.ones(4, dtype=torch.complex64)})
    with pytest.raises(ValueError, match="unknown key 'action'"):
        n({"observation": torch.ones(4, 3), "action": torch.ones(4)})
    with pytest.raises(ValueError, match="decay"):
        vt.VecNorm({"observation": (3,)}, decay=1.5)
    with pytest.raises(ValueError, match="estimator"):
        vt.VecNorm({"observation": (3,)}, estimator="welford")
    fresh = vt.VecNorm({"observation": (3,)}, batch_shape=(4,))
    with pytest.raises(ValueError, match="observation"):
        fresh.normalize({"observation": torch.ones(4, 3)})  # never updated: count 0
    for k, v in n.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("pooled", [False, True])
def test_statistics_dtype_follows_each_keys_input(pooled):
    """stats_dtype None (the default): float64 keys keep float64 statistics,
    the others float32, in one module; each key against the float64
    reference at its own statistics dtype (float32 statistics of the same
    float64 data miss the float64 bound)."""
    batch = (6,)
    n = vt.VecNorm({"observation": (3,), "reward": ()}, batch_shape=batch, decay=0.99,
                   reduce_batch_dims=pooled, dtypes={"observation": torch.float64})
    assert n.observation_loc.dtype == torch.float64 and n.observation_var.dtype == torch.float64
    assert n.reward_loc.dtype == torch.float32
    obs = make_data(5, batch, (3,), seed=6, dtype=torch.float64)
    obs = [o * 1e3 + 1e4 for o in obs]  # values whose float32 rounding is far above eps
    rew = make_data(5, batch, (), seed=7)
    ro = Reference((3,) if pooled else (*batch, 3), 0.99, 1e-4, "torchrl", pooled)
    rr = Reference(() if pooled else batch, 0.99, 1e-4, "torchrl", pooled)
    m32 = vt.VecNorm({"observation": (3,)}, batch_shape=batch, decay=0.99, reduce_batch_dims=pooled,
                     dtypes={"observation": torch.float64}, stats_dtype=torch.float32)
    for t in range(5):
        out = n({"observation": obs[t], "reward": rew[t]})
        ro.update(obs[t].numpy())
        rr.update(rew[t].numpy())
        assert out["observation"].dtype == torch.float64
        assert_normalized(out["observation"].numpy(), ro, obs[t].numpy(), torch.float64)
        assert_normalized(out["reward"].numpy(), rr, rew[t].numpy(), torch.float32)
        # The same float64 data through float32 statistics misses the float64
        # bound above (what the default no longer does to a float64 key).
        y32 = m32({"observation": obs[t]})["observation"]
        if t > 0:
            with pytest.raises(AssertionError):
                assert_normalized(y32.numpy(), ro, obs[t].numpy(), torch.float64)
    # All keys or none: a bad float32 key leaves the float64 key unchanged too.
    before = {k: v.clone() for k, v in n.state_dict().items()}
    with pytest.raises(ValueError, match="reward"):
        n({"observation": obs[0], "reward": torch.ones(7)})
    for k, v in n.state_dict().items():
        assert torch.equal(v, before[k]), k
    # The dispatcher operators (a TensorDict: dicts took the eager fast path above).
    from tensordict import TensorDict

    n.update(TensorDict({"observation": obs[1], "reward": rew[1]}, batch_size=batch))
    ro.update(obs[1].numpy())
    rr.update(rew[1].numpy())
    y = n.normalize(TensorDict({"observation": obs[2], "reward": rew[2]}, batch_size=batch))
    assert_normalized(y["observation"].numpy(), ro, obs[2].numpy(), torch.float64)
    assert_normalized(y["reward"].numpy(), rr, rew[2].numpy(), torch.float32)
    # An explicit stats_dtype is every key's.
    m = vt.VecNorm({"observation": (3,), "reward": ()}, dtypes={"observation": torch.float64},
                   stats_dtype=torch.float32)
    assert m.observation_loc.dtype == torch.float32 and m.reward_loc.dtype == torch.float32


def test_nonfinite_skip_leaves_element_out():
    n = vt.VecNorm({"observation": (2,)}, batch_shape=(2,), decay=1.0)
    n({"observation": torch.tensor([[1.0, 2.0], [3.0, 4.0]])})
    y = n({"observation": torch.tensor([[float("nan"), 4.0], [5.0, 6.0]])})["observation"]
    assert torch.isnan(y[0, 0])
    assert n.skipped("observation") == 1
    assert n.observation_skips.tolist() == [[1, 0], [0, 0]]
    # the skipped element kept its one update: loc = 1 exactly
    assert n.loc("observation")[0, 0].item() == 1.0


def test_tensordict_in_tensordict_out():
    tensordict = pytest.importorskip("tensordict")
    n = vt.VecNorm({"observation": (3,), ("agents", "obs"): (2,)}, batch_shape=(4,), decay=0.9)
    td = tensordict.TensorDict({"observation": torch.randn(4, 3), "agents": {"obs": torch.randn(4, 2)}},
                               batch_size=[4])
    out = n(td)
    assert isinstance(out, tensordict.TensorDict)
    assert out["agents", "obs"].shape == (4, 2)
    assert n.count(("agents", "obs")) == 1


def test_torch_compile_fullgraph_matches_eager():
    data = make_data(6, (8,), (5,), seed=7)
    eager = vt.VecNorm({"observation": (5,), "reward": ()}, batch_shape=(8,), decay=0.99)
    comp = vt.VecNorm({"observation": (5,), "reward": ()}, batch_shape=(8,), decay=0.99)
    lin = torch.nn.Linear(5, 2)

    def policy(norm, obs, rew):
        out = norm({"observation": obs, "reward": rew})
        return lin(out["observation"]) * out["reward"][:, None]

    compiled = torch.compile(policy, fullgraph=True)
    rewards = make_data(6, (8,), (), seed=8)
    with torch.no_grad():
        for x, r in zip(data, rewards):
            torch.testing.assert_close(compiled(comp, x, r), policy(eager, x, r), rtol=0, atol=0)
    for k, v in eager.state_dict().items():
        assert torch.equal(v, comp.state_dict()[k]), k
    # a masked pooled step traces too (the mask an operator argument)
    eager = vt.VecNorm({"observation": (5,)}, decay=0.99, reduce_batch_dims=True)
    comp = vt.VecNorm({"observation": (5,)}, decay=0.99, reduce_batch_dims=True)
    masked = torch.compile(lambda norm, obs, m: norm({"observation": obs}, mask=m)["observation"], fullgraph=True)
    for x, m in zip(data, _masks(6, 8, seed=9)):
        torch.testing.assert_close(masked(comp, x, m), eager({"observation": x}, mask=m)["observation"],
                                   rtol=0, atol=0)
    assert comp.count("observation") == eager.count("observation") < 6 * 8


def test_to_affine_matches_frozen_and_exports():
    data = make_data(4, (6,), (3,), seed=9)
    n = vt.VecNorm({"observation": (3,), "reward": ()}, batch_shape=(6,), decay=0.9)
    for x in data:
        n({"observation": x, "reward": x[:, 0]})
    frozen = n.normalize({"observation": data[-1]})["observation"]
    aff = n.to_affine()
    # (x - loc) / scale vs the library's (x - loc) * (1 / scale): within 2 ulp
    torch.testing.assert_close(aff({"observation": data[-1]})["observation"], frozen, rtol=3e-7, atol=1e-6)
    scripted = torch.jit.script(aff)
    torch.testing.assert_close(scripted({"observation": data[-1]})["observation"], frozen, rtol=3e-7, atol=1e-6)
    one = n.to_affine("observation")
    torch.testing.assert_close(torch.jit.script(one)(data[-1]), frozen, rtol=3e-7, atol=1e-6)

    ort = pytest.importorskip("onnxruntime")
    buf = io.BytesIO()
    try:
        torch.onnx.export(one, (data[-1],), buf, input_names=["x"], output_names=["y"], dynamo=False)
    except TypeError:  # older torch: no dynamo argument
        torch.onnx.export(one, (data[-1],), buf, input_names=["x"], output_names=["y"])
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": data[-1].numpy()})
    np.testing.assert_allclose(y, frozen.numpy(), rtol=3e-7, atol=1e-6)


def test_build_info():
    assert vecnorm.__version__.count(".") == 2
    assert "operators" in vecnorm.build_info()


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
@pytest.mark.parametrize("pooled", [False, True])
def test_cuda_equals_cpu(pooled):
    data = make_data(6, (64,), (7,), seed=10)
    cpu = vt.VecNorm({"observation": (7,)}, batch_shape=(64,), decay=0.99, reduce_batch_dims=pooled)
    gpu = vt.VecNorm({"observation": (7,)}, batch_shape=(64,), decay=0.99, reduce_batch_dims=pooled).cuda()
    for x in data:
        yc = cpu({"observation": x})["observation"]
        yg = gpu({"observation": x.cuda()})["observation"]
        if pooled:  # pooled sums are partitioned differently (docs/numerics.md)
            torch.testing.assert_close(yg.cpu(), yc, rtol=1e-5, atol=1e-5)
        else:  # per element: the same bits
            assert torch.equal(yg.cpu(), yc)
    if pooled:  # a row mask, read on the device
        for x, m in zip(data, _masks(6, 64, seed=11)):
            yc = cpu({"observation": x}, mask=m)["observation"]
            yg = gpu({"observation": x.cuda()}, mask=m.cuda())["observation"]
            torch.testing.assert_close(yg.cpu(), yc, rtol=1e-5, atol=1e-5)
        assert cpu.count("observation") == gpu.count("observation") < 12 * 64


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_cuda_graph_capture_replays_steps():
    data = [x.cuda() for x in make_data(8, (32,), (4,), seed=11)]
    eager = vt.VecNorm({"observation": (4,)}, batch_shape=(32,), decay=0.99).cuda()
    graphed = vt.VecNorm({"observation": (4,)}, batch_shape=(32,), decay=0.99).cuda()
    static_x = data[0].clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up: the scratch is taken before capture
        for _ in range(2):
            graphed({"observation": static_x})
    torch.cuda.current_stream().wait_stream(s)
    graphed.load_state_dict(vt.VecNorm({"observation": (4,)}, batch_shape=(32,), decay=0.99).cuda().state_dict())
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        static_y = graphed({"observation": static_x})["observation"]
    graphed.load_state_dict(vt.VecNorm({"observation": (4,)}, batch_shape=(32,), decay=0.99).cuda().state_dict())
    for x in data:
        static_x.copy_(x)
        g.replay()
        assert torch.equal(static_y, eager({"observation": x})["observation"])


def test_fast_path_equals_operator_path():
    """A dict takes the eager fast path (src/torch/eager.cpp), a TensorDict the
    dispatcher operators: the same statistics and outputs, bit for bit."""
    tensordict = pytest.importorskip("tensordict")
    data = make_data(5, (6,), (3,), seed=12)
    rew = make_data(5, (6,), (), seed=13)
    a = vt.VecNorm({"observation": (3,), "reward": ()}, batch_shape=(6,), decay=0.97)
    b = vt.VecNorm({"observation": (3,), "reward": ()}, batch_shape=(6,), decay=0.97)
    for t, (x, r) in enumerate(zip(data, rew)):
        d = {"observation": x} if t == 0 else {"observation": x, "reward": r}
        ya = a(d)
        yb = b(tensordict.TensorDict(d, batch_size=[6]))
        assert set(ya) == set(yb.keys())
        for k in ya:
            assert torch.equal(ya[k], yb[k]), k
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_empty_and_bad_batches():
    n = vt.VecNorm({"observation": (3,)}, batch_shape=(2,), decay=1.0)
    assert n({}) == {}
    assert n.count("observation") == 0
    with pytest.raises(TypeError, match="observation"):
        n({"observation": [1.0, 2.0, 3.0]})
    with pytest.raises(TypeError, match="dict"):
        n([torch.ones(2, 3)])
    # a non-contiguous input is read as its values
    x = torch.arange(6.0).reshape(3, 2).T
    assert not x.is_contiguous()
    y = n({"observation": x})["observation"]
    assert torch.equal(y, torch.zeros(2, 3))  # the first step normalizes to 0
    assert torch.equal(n.loc("observation"), x)  # decay 1: loc is the one sample


def test_hooks_still_run():
    """The eager shortcut of __call__ steps aside when a hook is registered."""
    n = vt.VecNorm({"observation": (2,)}, batch_shape=(3,), decay=1.0)
    seen = []
    h = n.register_forward_hook(lambda mod, args, out: seen.append(sorted(out)))
    n({"observation": torch.ones(3, 2)})
    n({"observation": torch.ones(3, 2)})
    h.remove()
    n({"observation": torch.ones(3, 2)})
    assert seen == [["observation"], ["observation"]]
    assert n.count("observation") == 3


_THREADS_SCRIPT = r"""
import os, sys, torch
import vecnorm.torch as vt

def threads():
    return len(os.listdir("/proc/self/task"))

torch.set_num_threads(2)
x = torch.randn(1 << 22)
for _ in range(3):
    (x * 2).sum()  # torch's intra-op (OpenMP) threads now exist
B, F = 1 << 14, 8  # 8 chunks of 16K elements: a parallel call
g = torch.Generator().manual_seed(0)
batches = [{"obs": torch.randn(B, F, generator=g) * 3 + 1} for _ in range(4)]
outs = {}
before = threads()
for cpu_threads in (0, 1, 2):
    for pooled in (False, True):
        n = vt.VecNorm({"obs": (F,)}, batch_shape=(B,), decay=0.99, reduce_batch_dims=pooled, cpu_threads=cpu_threads)
        outs[cpu_threads, pooled] = [n(b)["obs"] for b in batches]
    if cpu_threads == 1:
        after_torch_threads = threads()
after_own_pool = threads()
same = all(torch.equal(a, b) for k in outs for a, b in zip(outs[k], outs[0, k[1]]))
print(before, after_torch_threads, after_own_pool, int(same))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or not torch.backends.openmp.is_available(),
                    reason="needs Linux /proc and torch built with OpenMP")
def test_cpu_calls_run_on_torchs_threads():
    """cpu_threads=0 runs a CPU call on torch's intra-op threads (no thread of
    vecnorm's own is started); cpu_threads=2 on vecnorm's pool (one worker);
    every setting gives the same bits."""
    r = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "2", "VECNORM_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr
    before, after_torch, after_own, same = (int(v) for v in r.stdout.split())
    assert after_torch == before, "a call with cpu_threads=0 or 1 started threads of vecnorm's own"
    assert after_own == before + 1, "cpu_threads=2 should start one worker of vecnorm's pool"
    assert same == 1, "the thread setting changed the outputs"
