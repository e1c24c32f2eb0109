"""vecnorm.torchrl.VecNormV2 against TorchRL's own VecNormV2, inside real
TorchRL TransformedEnv rollouts over a small batched env that replays
pre-generated random data: the same data through both transforms, outputs
compared step by step within the reference's own rounding (see `tolerance`).
Also: state exchange both ways (and that loading copies), freeze/clone,
read-outs, specs, errors."""
from __future__ import annotations

import importlib
import io
import math
import sys

import pytest
import torch

torchrl = pytest.importorskip("torchrl")
tensordict = pytest.importorskip("tensordict")

from tensordict import TensorDict  # noqa: E402
from torchrl.data import Composite, Unbounded  # noqa: E402
from torchrl.envs import EnvBase, TransformedEnv  # noqa: E402
from torchrl.envs.transforms import ObservationNorm  # noqa: E402
from torchrl.envs.transforms import VecNormV2 as RefVecNormV2  # noqa: E402

from vecnorm.torchrl import VecNormV2  # noqa: E402

# TorchRL warns that batched containers are "experimental" support.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FEATURE = (2, 3)


class ReplayEnv(EnvBase):
    """A batched env that replays pre-generated data: reset returns obs[0] and
    no reward; step t returns obs[t] and rew[t - 1]; never done."""

    def __init__(self, obs: torch.Tensor, rew: torch.Tensor, batch_size):
        super().__init__(batch_size=torch.Size(batch_size))
        self.obs, self.rew = obs, rew
        b = tuple(batch_size)
        self.observation_spec = Composite(
            observation=Unbounded(shape=b + tuple(obs.shape[1 + len(b):]), dtype=obs.dtype), shape=b)
        self.reward_spec = Unbounded(shape=b + (1,), dtype=rew.dtype)
        self.t = 0

    def _reset(self, tensordict):
        self.t = 0
        return TensorDict(observation=self.obs[0].clone(), batch_size=self.batch_size)

    def _step(self, tensordict):
        self.t += 1
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        return TensorDict(observation=self.obs[self.t].clone(), reward=self.rew[self.t - 1].clone(), done=done,
                          terminated=done.clone(), batch_size=self.batch_size)

    def _set_seed(self, seed):
        return seed


def make_data(steps, batch, dtype, seed=0):
    """Observations with a per-feature mean in [-3, 3] and std in [0.5, 3];
    rewards ~ N(-1, 2)."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(FEATURE)
    mean = torch.linspace(-3.0, 3.0, n).reshape(FEATURE)
    std = torch.linspace(0.5, 3.0, n).reshape(FEATURE)
    obs = torch.randn(steps + 1, *batch, *FEATURE, generator=g, dtype=torch.float64) * std + mean
    rew = torch.randn(steps, *batch, 1, generator=g, dtype=torch.float64) * 2.0 - 1.0
    return obs.to(dtype), rew.to(dtype)


def make_envs(batch, dtype, steps=40, seed=0, in_keys=("observation", "reward"), **kw):
    obs, rew = make_data(steps, batch, dtype, seed)
    ref = TransformedEnv(ReplayEnv(obs, rew, batch), RefVecNormV2(in_keys=list(in_keys), **kw))
    ours = TransformedEnv(ReplayEnv(obs, rew, batch), VecNormV2(in_keys=list(in_keys), **kw))
    return ref, ours


def tolerance(dtype, decay, count):
    """Tolerance of one step's outputs, from the reference's own rounding.

    TorchRL forms its weights (``1 / count``, a float32 tensor) and its bias
    correction ``1 - exp(count * log(decay))`` in float32 whatever the data
    dtype; vecnorm forms them exactly. A relative error u of the bias
    correction bc moves mu by u*|mu| and the scale by u/2 of itself, so y by
    u * (|mu|/scale + |y|); and u is the float32 rounding of decay**count
    relative to bc: 2**-24 * decay**c / (1 - decay**c) (c: samples seen; about
    1.2e-6 at c = 2, decay 0.99; the first steps are the worst). With float32
    data both sides also round loc/var in float32 in a different order (lerp
    against fused updates), a few ulps magnified by the cancellation in
    var - loc**2 by (mu**2 + v) / v, at most ~40 for this data (|mean| <= 3,
    std >= 0.5). |mu|/scale <= 6 here. Bound: 8 roundings of each kind,
    times (1 + |mu|/scale) for the absolute part. (Observed: up to about half
    of it for float32 at decay 1, a few percent elsewhere.)"""
    u = 2.0**-24
    amp = 1.0 if decay == 1.0 else 1.0 + decay**count / (1.0 - decay**count)
    r = 8 * u * (amp + (0.0 if dtype == torch.float64 else 40.0))
    return dict(rtol=r, atol=7 * r)


def step_slice(td, batch_dims, t):
    return td[(slice(None),) * batch_dims + (t,)]


def assert_rollouts_close(r_ref, r_ours, batch, dtype, decay, first_count=1, keys=None):
    """Compare both rollouts step by step; `first_count` is the number of
    updates the reward statistics have at step 0 of this rollout."""
    m = math.prod(batch) if batch else 1
    pooled = keys == "pooled"
    for t in range(r_ref.shape[len(batch)]):
        a, b = step_slice(r_ref, len(batch), t), step_slice(r_ours, len(batch), t)
        count = (first_count + t) * (m if pooled else 1)
        tol = tolerance(dtype, decay, count)
        for key in (("next", "observation"), ("next", "reward"), "observation"):
            torch.testing.assert_close(b[key], a[key], **tol, msg=lambda s: f"step {t}, key {key}: {s}")


# ---------------------------------------------------------------- rollouts
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("decay", [0.99, 1.0])
@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("batch", [(4,), (2, 3)])
def test_rollout_matches_torchrl(dtype, decay, pooled, batch):
    ref, ours = make_envs(batch, dtype, decay=decay, reduce_batch_dims=pooled)
    r_ref = ref.rollout(30, break_when_any_done=False)
    r_ours = ours.rollout(30, break_when_any_done=False)
    assert r_ours[("next", "observation")].dtype == dtype
    assert_rollouts_close(r_ref, r_ours, batch, dtype, decay, keys="pooled" if pooled else None)
    # Same statistics afterwards: counts exactly (the reset step carries no
    # reward, so the reward has one update less), read-outs within tolerance.
    for key in ("observation", "reward"):
        assert int(ours.transform._count[key]) == int(ref.transform._count[key])
        assert ours.transform._loc[key].shape == ref.transform._loc[key].shape
        assert ours.transform._loc[key].dtype == ref.transform._loc[key].dtype
    assert int(ours.transform._count["observation"]) == int(ours.transform._count["reward"]) + (
        math.prod(batch) if pooled else 1)
    tol = tolerance(dtype, decay, 30)
    torch.testing.assert_close(ours.transform.loc["observation"], ref.transform.loc["observation"], **tol)
    torch.testing.assert_close(ours.transform.scale["reward"], ref.transform.scale["reward"], **tol)


def test_reset_step_updates_observation_only():
    ref, ours = make_envs((3,), torch.float32, decay=0.99)
    a, b = ref.reset(), ours.reset()
    assert "reward" not in b.keys()
    assert int(ours.transform._count["observation"]) == int(ref.transform._count["observation"]) == 1
    assert int(ours.transform._count["reward"]) == int(ref.transform._count["reward"]) == 0
    torch.testing.assert_close(b["observation"], a["observation"], **tolerance(torch.float32, 0.99, 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("decay", [0.99, 1.0])
def test_stateless_rollout_matches_torchrl(dtype, decay):
    if dtype == torch.float64 and decay == 1.0:
        pytest.skip("TorchRL's stateless update fails there (a float32 weight 1/count for float64 data)")
    # TorchRL's stateless mode cannot carry a reward (the reset step has none
    # and its update raises), so the observation only.
    batch = (3,)
    ref, ours = make_envs(batch, dtype, in_keys=("observation",), decay=decay, stateful=False)
    assert ours.observation_spec == ref.observation_spec
    r_ref = ref.rollout(20, break_when_any_done=False)
    r_ours = ours.rollout(20, break_when_any_done=False)
    assert set(r_ours.keys(True, True)) == set(r_ref.keys(True, True))
    for t in range(20):
        a, b = step_slice(r_ref, 1, t), step_slice(r_ours, 1, t)
        tol = tolerance(dtype, decay, t + 1)
        for key in (("next", "observation"), "observation"):
            torch.testing.assert_close(b[key], a[key], **tol)
        for prefix in ((), ("next",)):
            torch.testing.assert_close(b[prefix + ("_vecnorm_count", "observation")],
                                       a[prefix + ("_vecnorm_count", "observation")], rtol=0, atol=0)
            for stat in ("_vecnorm_loc", "_vecnorm_var"):
                torch.testing.assert_close(b[prefix + (stat, "observation")], a[prefix + (stat, "observation")],
                                           **tolerance(dtype, decay, 1))
    # The statistics restart at every reset, as in TorchRL.
    r2 = ours.rollout(2, break_when_any_done=False)
    assert int(r2["_vecnorm_count", "observation"].flatten()[0]) == 1


def test_stateless_carries_a_missing_reward():
    # Where TorchRL raises (reward absent from the reset step), vecnorm keeps
    # the reward's statistics at zero until the first step.
    obs, rew = make_data(5, (2,), torch.float32)
    env = TransformedEnv(ReplayEnv(obs, rew, (2,)), VecNormV2(in_keys=["observation", "reward"], decay=0.99,
                                                              stateful=False))
    r = env.rollout(4, break_when_any_done=False)
    counts = r["next", "_vecnorm_count", "reward"][0, :, 0]
    assert counts.tolist() == [1, 2, 3, 4]
    assert r["next", "_vecnorm_count", "observation"][0, :, 0, 0].tolist() == [2, 3, 4, 5]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pooled", [False, True])
def test_freeze_mid_rollout(dtype, pooled):
    batch = (3,)
    m = 3 if pooled else 1
    ref, ours = make_envs(batch, dtype, decay=0.99, reduce_batch_dims=pooled)
    r_ref = ref.rollout(6, break_when_any_done=False)
    r_ours = ours.rollout(6, break_when_any_done=False)
    assert_rollouts_close(r_ref, r_ours, batch, dtype, 0.99, keys="pooled" if pooled else None)
    ref.transform.freeze()
    ours.transform.freeze()
    assert ours.transform.frozen
    before = {k: int(v) for k, v in ours.transform._count.items()}
    r_ref = ref.rollout(8, break_when_any_done=False)
    r_ours = ours.rollout(8, break_when_any_done=False)
    assert {k: int(v) for k, v in ours.transform._count.items()} == before
    tol = tolerance(dtype, 0.99, 6 * m)
    for key in (("next", "observation"), ("next", "reward"), "observation"):
        torch.testing.assert_close(r_ours[key], r_ref[key], **tol)
    ref.transform.unfreeze()
    ours.transform.unfreeze()
    r_ref = ref.rollout(5, break_when_any_done=False)
    r_ours = ours.rollout(5, break_when_any_done=False)
    for key in (("next", "observation"), ("next", "reward")):
        torch.testing.assert_close(r_ours[key], r_ref[key], **tol)
    assert int(ours.transform._count["reward"]) == int(ref.transform._count["reward"]) == 11 * m


# ---------------------------------------------------------------- state exchange
def _stats_snapshot(transform):
    return {part: getattr(transform, f"_{part}").clone() for part in ("loc", "var", "count")}


def _assert_stats_equal(transform, snap):
    for part in ("loc", "var", "count"):
        now = getattr(transform, f"_{part}")
        for key in ("observation", "reward"):
            torch.testing.assert_close(now[key], snap[part][key], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pooled", [False, True])
def test_state_from_torchrl_loads_and_continues(dtype, pooled):
    batch = (3,)
    kw = dict(decay=0.99, reduce_batch_dims=pooled)
    ref, _ = make_envs(batch, dtype, seed=1, **kw)
    ref.rollout(10, break_when_any_done=False)
    state = ref.transform.state_dict()
    snap = _stats_snapshot(ref.transform)
    # Through bytes (a checkpoint) and directly.
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    for sd in (state, torch.load(buf, weights_only=False)):
        _, ours = make_envs(batch, dtype, seed=2, **kw)
        ours.transform.load_state_dict(sd)
        for key in ("observation", "reward"):
            assert int(ours.transform._count[key]) == int(ref.transform._count[key])
            assert ours.transform._loc[key].data_ptr() != ref.transform._loc[key].data_ptr()
        r_ours = ours.rollout(8, break_when_any_done=False)
        _assert_stats_equal(ref.transform, snap)  # the loaded copy moved, the source did not
    ref2, _ = make_envs(batch, dtype, seed=2, **kw)
    ref2.transform.load_state_dict(state)
    r_ref = ref2.rollout(8, break_when_any_done=False)
    assert_rollouts_close(r_ref, r_ours, batch, dtype, 0.99, first_count=11, keys="pooled" if pooled else None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("pooled", [False, True])
def test_state_to_torchrl_loads_and_continues(dtype, pooled):
    batch = (3,)
    kw = dict(decay=0.99, reduce_batch_dims=pooled)
    _, ours = make_envs(batch, dtype, seed=1, **kw)
    ours.rollout(10, break_when_any_done=False)
    state = ours.transform.state_dict()
    assert set(state) == {"initialized", "_extra_state"}
    snap = _stats_snapshot(ours.transform)
    ref, ours2 = make_envs(batch, dtype, seed=2, **kw)
    ref.transform.load_state_dict(state)
    ours2.transform.load_state_dict(state)
    r_ref = ref.rollout(8, break_when_any_done=False)
    # TorchRL aliases what it loads: vecnorm's state_dict holds copies, so
    # the source is untouched by TorchRL's updates.
    _assert_stats_equal(ours.transform, snap)
    r_ours = ours2.rollout(8, break_when_any_done=False)
    _assert_stats_equal(ours.transform, snap)
    assert_rollouts_close(r_ref, r_ours, batch, dtype, 0.99, first_count=11, keys="pooled" if pooled else None)


def test_state_into_uninitialized_and_empty_states():
    ref, _ = make_envs((3,), torch.float32, decay=0.99)
    ref.rollout(4, break_when_any_done=False)
    fresh = VecNormV2(in_keys=["observation", "reward"], decay=0.99)  # no env: not initialized
    with pytest.warns(UserWarning):
        assert fresh.get_extra_state() == {}
    fresh.set_extra_state({})  # nothing to load, nothing loaded
    fresh.load_state_dict(ref.transform.state_dict())
    assert int(fresh._count["observation"]) == 5
    fresh._loc["observation"].add_(1.0)
    assert not torch.equal(fresh._loc["observation"], ref.transform._loc["observation"])
    with pytest.raises(RuntimeError):
        fresh.set_extra_state({})


def test_state_mismatch_raises_naming_the_key_and_changes_nothing():
    ref, ours = make_envs((3,), torch.float32, decay=0.99)
    ref.rollout(4, break_when_any_done=False)
    ours.rollout(2, break_when_any_done=False)
    snap = _stats_snapshot(ours.transform)
    extra = dict(ref.transform.get_extra_state())
    bad = {k: v for k, v in extra.items() if not k.endswith("reward")}
    with pytest.raises(ValueError, match="reward"):
        ours.transform.set_extra_state(bad)
    _assert_stats_equal(ours.transform, snap)
    wrong_shape = dict(extra)
    wrong_shape["loc.-|-.observation"] = torch.zeros(5, 2)
    wrong_shape["var.-|-.observation"] = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="observation"):
        ours.transform.set_extra_state(wrong_shape)
    _assert_stats_equal(ours.transform, snap)


# ---------------------------------------------------------------- copies, read-outs
def test_clone_and_frozen_copy_are_independent():
    _, ours = make_envs((3,), torch.float32, decay=0.99)
    ours.rollout(5, break_when_any_done=False)
    t = ours.transform
    fc = t.frozen_copy()
    cl = t.clone()
    assert fc.frozen and not cl.frozen and not t.frozen
    assert fc.parent is None and cl.parent is None
    for other in (fc, cl):
        for part in ("_loc", "_var", "_count"):
            for key in ("observation", "reward"):
                assert getattr(other, part)[key].data_ptr() != getattr(t, part)[key].data_ptr()
                assert torch.equal(getattr(other, part)[key], getattr(t, part)[key])
    snap = _stats_snapshot(t)
    obs, rew = make_data(3, (3,), torch.float32, seed=5)
    env = TransformedEnv(ReplayEnv(obs, rew, (3,)), cl)
    env.rollout(3, break_when_any_done=False)
    _assert_stats_equal(t, snap)
    assert int(cl._count["reward"]) == int(t._count["reward"]) + 3
    t.freeze()
    assert t.clone().frozen
    uninit = VecNormV2(in_keys=["observation"])
    with pytest.raises(RuntimeError):
        uninit.frozen_copy()


@pytest.mark.parametrize("pooled", [False, True])
def test_loc_scale_observation_norm_and_denorm_match_torchrl(pooled):
    dtype = torch.float64
    ref, ours = make_envs((3,), dtype, decay=0.99, reduce_batch_dims=pooled)
    ref.rollout(12, break_when_any_done=False)
    ours.rollout(12, break_when_any_done=False)
    tol = tolerance(dtype, 0.99, 12)
    for key in ("observation", "reward"):
        torch.testing.assert_close(ours.transform.loc[key], ref.transform.loc[key], **tol)
        torch.testing.assert_close(ours.transform.scale[key], ref.transform.scale[key], **tol)
    on_ref, on_ours = ref.transform.to_observation_norm(), ours.transform.to_observation_norm()
    assert len(on_ours) == len(on_ref) == 2 and all(isinstance(t, ObservationNorm) for t in on_ours)
    obs, rew = make_data(1, (3,), dtype, seed=9)
    td = TensorDict(observation=obs[1], reward=rew[0], batch_size=[3])
    torch.testing.assert_close(on_ours(td.clone())["observation"], on_ref(td.clone())["observation"], **tol)
    torch.testing.assert_close(on_ours(td.clone())["reward"], on_ref(td.clone())["reward"], **tol)
    d_ref, d_ours = ref.transform.denorm(td), ours.transform.denorm(td)
    for key in ("observation", "reward"):
        torch.testing.assert_close(d_ours[key], d_ref[key], **tol)


def test_nested_keys_and_out_keys():
    # A nested key with separate out keys: the raw values stay, and the state
    # uses TorchRL's nested naming.
    class NestedEnv(ReplayEnv):
        def __init__(self, obs, rew, batch):
            super().__init__(obs, rew, batch)
            b = tuple(batch)
            self.observation_spec = Composite(
                agent=Composite(obs=Unbounded(shape=b + FEATURE, dtype=obs.dtype), shape=b), shape=b)

        def _reset(self, td):
            out = super()._reset(td)
            return TensorDict(agent=TensorDict(obs=out.pop("observation"), batch_size=self.batch_size),
                              batch_size=self.batch_size)

        def _step(self, td):
            out = super()._step(td)
            out["agent", "obs"] = out.pop("observation")
            return out

    obs, rew = make_data(10, (2,), torch.float32)
    kw = dict(in_keys=[("agent", "obs"), "reward"], out_keys=[("agent", "obs_n"), "reward_n"], decay=0.99)
    ref = TransformedEnv(NestedEnv(obs, rew, (2,)), RefVecNormV2(**kw))
    ours = TransformedEnv(NestedEnv(obs, rew, (2,)), VecNormV2(**kw))
    r_ref, r_ours = ref.rollout(10, break_when_any_done=False), ours.rollout(10, break_when_any_done=False)
    assert set(r_ours.keys(True, True)) == set(r_ref.keys(True, True))
    torch.testing.assert_close(r_ours["next", "agent", "obs"], r_ref["next", "agent", "obs"], rtol=0, atol=0)
    for t in range(10):
        tol = tolerance(torch.float32, 0.99, t + 1)
        for key in (("next", "agent", "obs_n"), ("next", "reward_n")):
            torch.testing.assert_close(r_ours[key][:, t], r_ref[key][:, t], **tol)
    assert set(ours.transform.get_extra_state()) == set(ref.transform.get_extra_state())


# ---------------------------------------------------------------- errors
def test_import_error_names_what_to_install(monkeypatch):
    # None in sys.modules makes an import of that name raise ImportError, as
    # if the package were not installed.
    for name in list(sys.modules):
        if name.split(".")[0] in ("torchrl", "tensordict"):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "vecnorm.torchrl")
    with pytest.raises(ImportError, match="pip install torchrl tensordict"):
        importlib.import_module("vecnorm.torchrl")


def test_bad_options_raise():
    with pytest.raises(ValueError, match="decay"):
        VecNormV2(in_keys=["observation"], decay=0.0)
    with pytest.raises(ValueError, match="decay"):
        VecNormV2(in_keys=["observation"], decay=1.5)
    with pytest.raises(ValueError, match="eps"):
        VecNormV2(in_keys=["observation"], eps=0.0)
    with pytest.raises(ValueError, match="estimator"):
        VecNormV2(in_keys=["observation"], estimator="nope")
    # TorchRL raises RuntimeError here: vecnorm's error is both.
    with pytest.raises(ValueError, match="stateful"):
        VecNormV2(in_keys=["observation"], reduce_batch_dims=True, stateful=False)
    with pytest.raises(RuntimeError):
        VecNormV2(in_keys=["observation"], reduce_batch_dims=True, stateful=False)
    with pytest.raises(ValueError, match="out_keys"):
        VecNormV2(in_keys=["observation", "reward"], out_keys=["a"])
    with pytest.raises(TypeError, match="key"):
        VecNormV2(in_keys=[3])


def test_bad_data_raises_naming_the_key():
    obs, rew = make_data(4, (3,), torch.float32)
    env = TransformedEnv(ReplayEnv(obs, rew, (3,)), VecNormV2(in_keys=["observation", "reward"], decay=0.99))
    env.rollout(2, break_when_any_done=False)
    t = env.transform
    good = TensorDict(observation=obs[1], reward=rew[0], batch_size=[3])
    # a feature shape other than the statistics'
    bad = good.clone()
    bad["observation"] = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="observation"):
        t._step(bad.clone(), bad)
    # a dtype the operators do not take
    bad = good.clone()
    bad["reward"] = torch.zeros(3, 1, dtype=torch.complex64)
    with pytest.raises(TypeError, match="reward"):
        t._step(bad.clone(), bad)
    # a step (not a reset) without one of the keys
    bad = good.clone().exclude("reward")
    with pytest.raises(KeyError, match="reward"):
        t._step(bad.clone(), bad)


def test_statistics_follow_the_data_device_and_to():
    _, ours = make_envs((3,), torch.float32, decay=0.99)
    ours.rollout(3, break_when_any_done=False)
    t = ours.transform
    t.double()
    assert t._loc["observation"].dtype == torch.float64
    assert t._count["observation"].dtype == torch.int64
    t.float()
    if torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        t.cuda()
        assert t._loc["observation"].is_cuda and t._count["reward"].is_cuda


def test_shared_data_is_used_in_place_and_pickling_keeps_the_statistics():
    import pickle

    b = (3,)
    shared = TensorDict(
        loc=TensorDict(observation=torch.zeros(*b, *FEATURE), reward=torch.zeros(*b, 1), batch_size=[]),
        var=TensorDict(observation=torch.zeros(*b, *FEATURE), reward=torch.zeros(*b, 1), batch_size=[]),
        count=TensorDict(observation=torch.zeros((), dtype=torch.int64),
                         reward=torch.zeros((), dtype=torch.int64), batch_size=[]),
        batch_size=[])
    obs, rew = make_data(4, b, torch.float32)
    ref = TransformedEnv(ReplayEnv(obs, rew, b), RefVecNormV2(in_keys=["observation", "reward"], decay=0.99))
    ours = TransformedEnv(ReplayEnv(obs, rew, b), VecNormV2(in_keys=["observation", "reward"], decay=0.99,
                                                            shared_data=shared))
    r_ref, r_ours = ref.rollout(4, break_when_any_done=False), ours.rollout(4, break_when_any_done=False)
    assert int(shared["count", "reward"]) == 4 and int(shared["count", "observation"]) == 5
    torch.testing.assert_close(shared["loc", "observation"], ref.transform._loc["observation"],
                               **tolerance(torch.float32, 0.99, 1))
    torch.testing.assert_close(r_ours["next", "reward"], r_ref["next", "reward"], **tolerance(torch.float32, 0.99, 1))
    t = ours.transform.clone()
    t2 = pickle.loads(pickle.dumps(t))
    assert t2.lock is not None and t2.lock is not t.lock
    for key in ("observation", "reward"):
        assert torch.equal(t2._loc[key], t._loc[key]) and int(t2._count[key]) == int(t._count[key])


def test_integer_observations_are_normalized_as_float32():
    # A deliberate difference: TorchRL casts its bias correction to the
    # integer dtype (it becomes 0); vecnorm converts the input to float32.
    b = (2,)
    obs = torch.randint(-5, 6, (6, *b, 3), generator=torch.Generator().manual_seed(3))
    rew = torch.zeros(5, *b, 1)
    env = TransformedEnv(ReplayEnv(obs, rew, b), VecNormV2(in_keys=["observation"], decay=0.99))
    assert env.observation_spec["observation"].dtype == torch.get_default_dtype()
    r = env.rollout(5, break_when_any_done=False)
    y = r["next", "observation"]
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    ref = TransformedEnv(ReplayEnv(obs.float(), rew, b), RefVecNormV2(in_keys=["observation"], decay=0.99))
    r_ref = ref.rollout(5, break_when_any_done=False)
    torch.testing.assert_close(y, r_ref["next", "observation"], **tolerance(torch.float32, 0.99, 1))
