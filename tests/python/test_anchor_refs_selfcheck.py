"""Guards tests/python/anchor_refs.py: each anchor wrapper, fed 50 batches, must
end with the statistics that a naive float64 numpy reference of that anchor's
documented math (docs/anchors.md, sections 1-6 and the comparison table)
gives. An anchor that is not installed is skipped."""
from __future__ import annotations

import numpy as np
import pytest

import anchor_refs

# Per anchor: prior (count, mean, var), batch-variance ddof, and the documented
# normalize y = clip((x - mu) / scale(v), +-clip) of docs/anchors.md.
SPEC = {
    # SB3: RunningMeanStd(epsilon=1e-4); biased np.var; VecNormalize eps 1e-8 inside sqrt, clip 10
    "sb3": dict(prior=(1e-4, 0.0, 1.0), ddof=0, scale=lambda v: np.sqrt(v + 1e-8), clip=10.0),
    # Gymnasium: RunningMeanStd(1e-4) float32 state; biased; eps 1e-8 inside sqrt; no clip
    "gymnasium": dict(prior=(1e-4, 0.0, 1.0), ddof=0, scale=lambda v: np.sqrt(v + 1e-8), clip=None),
    # rsl_rl: count 0 (prior vanishes); biased; std + eps, eps 1e-2; no clip
    "rsl_rl": dict(prior=(0.0, 0.0, 1.0), ddof=0, scale=lambda v: np.sqrt(v) + 1e-2, clip=None),
    # rl_games: count 1; biased; sqrt(var + 1e-5); clamp 5
    "rl_games": dict(prior=(1.0, 0.0, 1.0), ddof=0, scale=lambda v: np.sqrt(v + 1e-5), clip=5.0),
    # skrl: count 1; UNBIASED batch var into the population merge; sqrt(var) + 1e-8; clip 5
    "skrl": dict(prior=(1.0, 0.0, 1.0), ddof=1, scale=lambda v: np.sqrt(v) + 1e-8, clip=5.0),
    # brax (section 6): count 0; exact Welford M2 (biased); std = clip(sqrt(var + 0), 1e-6, 1e6); no clip
    "brax": dict(prior=(0.0, 0.0, 1.0), ddof=0, scale=lambda v: np.clip(np.sqrt(v), 1e-6, 1e6), clip=None),
}

SHAPE = (5,)
N_BATCHES, B = 50, 64


def _batches(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(3.0, 2.0, (B, *SHAPE)).astype(np.float32) for _ in range(N_BATCHES)]


def _naive(name, batches):
    """float64 Chan merge of every batch into the anchor's prior."""
    s = SPEC[name]
    n, mu, v = s["prior"]
    mu = np.full(SHAPE, mu)
    v = np.full(SHAPE, v)
    for x in batches:
        x = x.astype(np.float64)
        m = x.shape[0]
        mb, vb = x.mean(0), x.var(0, ddof=s["ddof"])
        d = mb - mu
        n2 = n + m
        mu = mu + d * m / n2
        v = (v * n + vb * m + d * d * n * m / n2) / n2
        n = n2
    return n, mu, v


def _need(name):
    if not anchor_refs.available(name):
        pytest.skip(f"anchor {name} not installed: {anchor_refs.import_error(name)!r}")


@pytest.mark.parametrize("name", list(anchor_refs.REFS))
def test_stats_match_documented_formula(name):
    _need(name)
    ref = anchor_refs.REFS[name](SHAPE)
    batches = _batches()
    for x in batches:
        y = ref.step(x)
        assert y.dtype == np.float64 and y.shape == x.shape
    n, mu, v = _naive(name, batches)
    st = ref.stats()
    assert st["mean"].dtype == np.float64 and st["var"].dtype == np.float64
    assert st["mean"].shape == SHAPE and st["var"].shape == SHAPE
    assert st["count"] == pytest.approx(n, rel=1e-12)
    np.testing.assert_allclose(st["mean"], mu, rtol=1e-5, atol=0)
    np.testing.assert_allclose(st["var"], v, rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", list(anchor_refs.REFS))
def test_output_is_documented_normalize_with_updated_stats(name):
    _need(name)
    ref = anchor_refs.REFS[name](SHAPE)
    batches = _batches(1)
    for x in batches[:-1]:
        ref.step(x)
    y = ref.step(batches[-1])  # update-then-normalize
    s = SPEC[name]
    _, mu, v = _naive(name, batches)
    want = (batches[-1].astype(np.float64) - mu) / s["scale"](v)
    if s["clip"] is not None:
        want = np.clip(want, -s["clip"], s["clip"])
    # the anchors normalize in float32 (or cast to float32): float32 rounding
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(anchor_refs.REFS))
def test_update_false_freezes_stats(name):
    _need(name)
    ref = anchor_refs.REFS[name](SHAPE)
    a, b = _batches(2)[:2]
    ref.step(a)
    before = ref.stats()
    sd = ref.state_dict()
    assert sd, "empty state_dict"
    y = ref.step(b, update=False)
    after = ref.stats()
    assert after["count"] == before["count"]
    np.testing.assert_array_equal(after["mean"], before["mean"])
    np.testing.assert_array_equal(after["var"], before["var"])
    assert np.all(np.isfinite(y))
