"""Uniform wrappers over each anchor library's OWN observation normalizer.

The conformance tests compare vecnorm's presets with these. Nothing here
re-implements an anchor: every update and every normalized value comes from
the installed package (docs/anchors.md describes their math). An anchor whose
import fails is reported by ``available(name) == False``, and its ``REFS`` entry
raises ``ImportError`` on construction, so tests can skip it.

Common API (one class per anchor, ``REFS[name]``)::

    ref = REFS[name](shape, **anchor_kwargs)   # kwargs go to the anchor's constructor
    y = ref.step(x, update=True)   # x: np.ndarray [B, *shape], float32 or float64
    ref.stats()        # {"mean": float64 array of `shape`, "var": ..., "count": float}
    ref.state_dict()   # the anchor's own state (torch state_dict for torch anchors)

``step`` updates the statistics with the whole batch when ``update`` is true,
then normalizes that batch with the (updated) statistics, exactly as the anchor
returns it; the result is converted to float64 numpy only for comparison (the
anchor's own output dtype is kept in ``ref.last_dtype``). The torch anchors get
a CPU tensor of x's own dtype (``torch.from_numpy``), under ``torch.no_grad()``.

Versions these wrappers were written against (scripts/python-env.sh pins them):
stable-baselines3 2.9.2, gymnasium 1.4.0, rsl-rl-lib 5.5.1, rl-games 1.6.5,
skrl 2.1.1, brax 0.14.2 (jax 0.10.2, CPU).
"""
from __future__ import annotations

import contextlib
import importlib
import io

import numpy as np

__all__ = ["Ref", "REFS", "available", "import_error"]

# name -> module the anchor needs; checked lazily by available().
_IMPORTS = {
    "sb3": "stable_baselines3.common.vec_env.vec_normalize",
    "gymnasium": "gymnasium.wrappers.vector.stateful_observation",
    "rsl_rl": "rsl_rl.modules.normalization",
    "rl_games": "rl_games.algos_torch.running_mean_std",
    "skrl": "skrl.resources.preprocessors.torch.running_standard_scaler",
    "brax": "brax.training.acme.running_statistics",
}
_errors: dict[str, BaseException | None] = {}


def _load_rsl_rl():
    """EmpiricalNormalization: rsl-rl-lib >= 4 (rsl_rl.modules.normalization),
    else the older rsl_rl.modules.normalizer (v2.x/v3.x)."""
    try:
        from rsl_rl.modules.normalization import EmpiricalNormalization
    except ImportError:
        from rsl_rl.modules.normalizer import EmpiricalNormalization
    return EmpiricalNormalization


def _try(name: str) -> BaseException | None:
    if name not in _errors:
        try:
            if name == "rsl_rl":
                _load_rsl_rl()
            else:
                importlib.import_module(_IMPORTS[name])
            _errors[name] = None
        except Exception as e:  # ImportError, or a broken optional dependency
            _errors[name] = e
    return _errors[name]


def available(name: str) -> bool:
    """Whether anchor ``name``'s import succeeded in this environment."""
    return _try(name) is None


def import_error(name: str) -> BaseException | None:
    """The exception that made ``available(name)`` false, else None."""
    return _try(name)


def _require(name: str) -> None:
    e = _try(name)
    if e is not None:
        raise ImportError(f"anchor {name!r} is not importable: {e!r}") from e


def _f64(a) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


class Ref:
    """Base class: see the module docstring for the API."""

    name: str = ""

    def __init__(self, shape: tuple[int, ...], **anchor_kwargs):
        _require(self.name)
        self.shape = tuple(int(s) for s in shape)
        self.kwargs = dict(anchor_kwargs)
        self.last_dtype = None

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"x must be float32 or float64, got {x.dtype}")
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must be [B, *{self.shape}], got {x.shape}")
        return x

    def step(self, x: np.ndarray, update: bool = True) -> np.ndarray:
        raise NotImplementedError

    def stats(self) -> dict:
        raise NotImplementedError

    def state_dict(self) -> dict:
        raise NotImplementedError


# --------------------------------------------------------------------------- numpy anchors


class SB3Ref(Ref):
    """Stable-Baselines3 ``VecNormalize`` observation normalization.

    Construction: a real ``VecNormalize(DummyVecEnv([stub]), **anchor_kwargs)``
    over a one-env stub whose observation space is ``Box(-inf, inf, shape,
    float32)``; so its defaults are SB3's own (``clip_obs=10``, ``epsilon=1e-8``,
    ``training=True``, ``norm_obs=True``) and its ``obs_rms`` is
    ``stable_baselines3.common.running_mean_std.RunningMeanStd(shape=shape)``
    (count prior ``epsilon=1e-4``, mean 0, var 1, float64 state).
    The stub env is never stepped; the batch size B need not match num_envs.

    step(x, update): exactly what ``VecNormalize.step_wait`` does to ``obs``:
      ``if update: vn.obs_rms.update(x)`` (numpy batch moments in x's dtype,
      float64 merge), then ``y = vn.normalize_obs(x)`` which is SB3's own
      ``deepcopy`` + ``_normalize_obs`` =
      ``np.clip((x - mean) / np.sqrt(var + epsilon), -clip_obs, clip_obs)``
      + ``.astype(np.float32)``.  Nothing is replicated here.
    stats(): ``obs_rms.mean``, ``obs_rms.var``, ``obs_rms.count``.
    state_dict(): copies of ``obs_rms.{mean,var,count}`` under the keys
      ``"obs_rms.mean"`` etc. plus ``clip_obs``, ``epsilon``, the attributes a
      pickled VecNormalize carries for observations.
    """

    name = "sb3"

    def __init__(self, shape, **anchor_kwargs):
        super().__init__(shape, **anchor_kwargs)
        import gymnasium as gym
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

        shp = self.shape

        class _Stub(gym.Env):
            observation_space = gym.spaces.Box(-np.inf, np.inf, shp, np.float32)
            action_space = gym.spaces.Discrete(2)

            def reset(self, *, seed=None, options=None):
                return np.zeros(shp, np.float32), {}

            def step(self, action):
                return np.zeros(shp, np.float32), 0.0, False, False, {}

        self.vn = VecNormalize(DummyVecEnv([_Stub]), **anchor_kwargs)

    def step(self, x, update=True):
        x = self._check(x)
        if update:
            self.vn.obs_rms.update(x)
        y = self.vn.normalize_obs(x)
        self.last_dtype = y.dtype
        return _f64(y)

    def stats(self):
        r = self.vn.obs_rms
        return {"mean": _f64(r.mean), "var": _f64(r.var), "count": float(r.count)}

    def state_dict(self):
        r = self.vn.obs_rms
        return {
            "obs_rms.mean": np.array(r.mean, copy=True),
            "obs_rms.var": np.array(r.var, copy=True),
            "obs_rms.count": r.count,
            "clip_obs": self.vn.clip_obs,
            "epsilon": self.vn.epsilon,
        }


class GymnasiumRef(Ref):
    """Gymnasium 1.x vector ``NormalizeObservation``
    (``gymnasium.wrappers.vector.NormalizeObservation``).

    Construction: the real wrapper ``NormalizeObservation(stub, **anchor_kwargs)``
    over a stub ``VectorEnv`` (num_envs 1, ``Box(-inf, inf, shape, float32)``,
    ``metadata["autoreset_mode"] = NEXT_STEP``); so defaults are the wrapper's
    own: ``epsilon=1e-8`` and ``obs_rms = gymnasium.wrappers.utils.RunningMeanStd(
    shape, dtype=float32)`` (1.4.0 replaces the space with a float32 Box first):
    **float32 mean/var**, count prior 1e-4 (a Python float). The stub is never
    stepped; B need not match num_envs.

    step(x, update): sets ``wrapper.update_running_mean = update`` and returns
      ``wrapper.observations(x)`` -- the wrapper's own method, which does
      ``obs_rms.update(x)`` (whole batch, biased np.var) when updating and then
      ``((x - mean) / np.sqrt(var + epsilon)).astype(np.float32)``. A float64 x
      promotes the stored mean/var to float64 (anchor behaviour, kept).
    stats(): ``obs_rms.mean``, ``obs_rms.var``, ``obs_rms.count``.
    state_dict(): copies of ``obs_rms.{mean,var,count}`` (keys ``"obs_rms.mean"``
      ...), ``epsilon`` and ``_update_running_mean`` -- gymnasium has no
      save/load API; these attributes are its state.
    """

    name = "gymnasium"

    def __init__(self, shape, **anchor_kwargs):
        super().__init__(shape, **anchor_kwargs)
        import gymnasium as gym
        from gymnasium.vector import AutoresetMode, VectorEnv
        from gymnasium.vector.utils import batch_space
        from gymnasium.wrappers.vector import NormalizeObservation

        shp = self.shape

        class _StubVec(VectorEnv):
            def __init__(self):
                self.num_envs = 1
                self.metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}
                self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, shp, np.float32)
                self.observation_space = batch_space(self.single_observation_space, 1)
                self.single_action_space = gym.spaces.Discrete(2)
                self.action_space = batch_space(self.single_action_space, 1)

        self.wrapper = NormalizeObservation(_StubVec(), **anchor_kwargs)

    def step(self, x, update=True):
        x = self._check(x)
        self.wrapper.update_running_mean = bool(update)
        y = self.wrapper.observations(x)
        self.last_dtype = y.dtype
        return _f64(y)

    def stats(self):
        r = self.wrapper.obs_rms
        return {"mean": _f64(r.mean), "var": _f64(r.var), "count": float(r.count)}

    def state_dict(self):
        r = self.wrapper.obs_rms
        return {
            "obs_rms.mean": np.array(r.mean, copy=True),
            "obs_rms.var": np.array(r.var, copy=True),
            "obs_rms.count": r.count,
            "epsilon": self.wrapper.epsilon,
            "_update_running_mean": self.wrapper.update_running_mean,
        }


# --------------------------------------------------------------------------- torch anchors


class _TorchRef(Ref):
    module = None

    def _tensor(self, x):
        import torch

        return torch.from_numpy(np.ascontiguousarray(x))  # same dtype, CPU

    def state_dict(self):
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}


class RslRlRef(_TorchRef):
    """rsl_rl ``EmpiricalNormalization(shape, eps=1e-2, until=None)``
    (``rsl_rl.modules.normalization``; ``rsl_rl.modules.normalizer`` before v4).

    Construction: ``EmpiricalNormalization(shape, **anchor_kwargs)`` (kwargs:
    ``eps``, ``until``); left in train mode (the nn.Module default).
    Buffers ``_mean``/``_var``/``_std`` are float32 ``[1, *shape]``, ``count``
    int64, prior count 0.

    step(x, update), under ``torch.no_grad()``:
      * rsl-rl-lib >= 4 (5.5.1 installed: ``forward`` only normalizes, the update
        is the separate ``update(x)``):  ``if update: norm.update(x)`` then
        ``y = norm(x)`` = ``(x - _mean) / (_std + eps)``. This is what the
        v4.0-v5.4 runners do per env step (update the new obs batch, then the
        policy normalizes it). NOTE: 5.5.1's PPO instead calls
        ``update_normalization`` once per iteration on the whole rollout
        (T*N rows) after the PPO epochs; reproduce that by calling
        ``step(rollout, update=True)`` once and ``step(x, update=False)`` per step.
      * rsl_rl 2.x/3.x (``normalizer`` module, ``forward`` updates when
        ``training``): ``norm.train(update)`` then ``y = norm(x)``.
      ``update()`` honours ``until`` itself (skip when ``count >= until``).
    stats(): ``_mean``/``_var`` squeezed to ``shape``, ``count``.
    state_dict(): ``module.state_dict()`` (``_mean``, ``_var``, ``_std``, ``count``).
    """

    name = "rsl_rl"

    def __init__(self, shape, **anchor_kwargs):
        super().__init__(shape, **anchor_kwargs)
        import inspect

        EN = _load_rsl_rl()
        self.module = EN(self.shape, **anchor_kwargs)
        self.module.train()
        # rsl_rl < 4: forward() calls self.update(x) itself.
        self._forward_updates = "self.update(" in inspect.getsource(EN.forward)

    def step(self, x, update=True):
        import torch

        x = self._check(x)
        t = self._tensor(x)
        with torch.no_grad():
            if self._forward_updates:
                self.module.train(bool(update))
                y = self.module(t)
                self.module.train()
            else:
                if update:
                    self.module.update(t)
                y = self.module(t)
        self.last_dtype = y.dtype
        return _f64(y)

    def stats(self):
        m = self.module
        return {
            "mean": _f64(m._mean).reshape(self.shape),
            "var": _f64(m._var).reshape(self.shape),
            "count": float(m.count),
        }


class RlGamesRef(_TorchRef):
    """rl_games ``RunningMeanStd(insize=shape, epsilon=1e-5, per_channel=False,
    norm_only=False)`` (``rl_games.algos_torch.running_mean_std``).

    Construction: ``RunningMeanStd(shape, **anchor_kwargs)`` (its constructor's
    ``print`` is silenced). float64 buffers ``running_mean``, ``running_var``,
    ``count`` (prior 1).

    step(x, update), under ``torch.no_grad()``: ``module.train(update)`` (rl_games
    updates iff ``self.training``) then ``y = module(x)``:
    ``clamp((x - mean.float()) / sqrt(var.float() + epsilon), -5, 5)`` (or
    ``x / sqrt(var.float() + epsilon)`` with no clamp under ``norm_only``);
    float32 arithmetic for float32 x. No mask is passed (rl_games never does).
    The module is left in train mode afterwards.
    stats(): ``running_mean``, ``running_var``, ``count``.
    state_dict(): ``module.state_dict()``.
    """

    name = "rl_games"

    def __init__(self, shape, **anchor_kwargs):
        super().__init__(shape, **anchor_kwargs)
        from rl_games.algos_torch.running_mean_std import RunningMeanStd

        with contextlib.redirect_stdout(io.StringIO()):
            self.module = RunningMeanStd(self.shape, **anchor_kwargs)
        self.module.train()

    def step(self, x, update=True):
        import torch

        x = self._check(x)
        with torch.no_grad():
            self.module.train(bool(update))
            y = self.module(self._tensor(x))
            self.module.train()
        self.last_dtype = y.dtype
        return _f64(y)

    def stats(self):
        m = self.module
        shp = tuple(m.running_mean.shape)
        return {
            "mean": _f64(m.running_mean).reshape(shp),
            "var": _f64(m.running_var).reshape(shp),
            "count": float(m.count),
        }


class SkrlRef(_TorchRef):
    """skrl ``RunningStandardScaler(size=shape, epsilon=1e-8, clip_threshold=5.0,
    device="cpu")`` (``skrl.resources.preprocessors.torch``).

    Construction: ``RunningStandardScaler(size=shape, device="cpu",
    **anchor_kwargs)``. skrl sizes the state as ``prod(shape)`` (flat float64
    buffers ``running_mean``, ``running_variance``, ``current_count``, prior 1),
    because its agents feed flattened observations; so a multi-dim ``shape`` is
    fed as ``x.reshape(B, -1)`` (what the agents do) and the output is reshaped
    back. A 3-d input would be treated by skrl as (T, N, D) -- never passed here.

    step(x, update): ``y = module(x, train=update)`` (keyword-only ``train``;
    ``no_grad=True`` default): with ``train`` it merges ``torch.mean(x, 0)``,
    ``torch.var(x, 0)`` (UNBIASED; B == 1 gives NaN) and count B, then returns
    ``clamp((x - mean.float()) / (sqrt(var.float()) + epsilon), -clip, clip)``.
    stats(): ``running_mean``, ``running_variance`` reshaped to ``shape``,
    ``current_count``.
    state_dict(): ``module.state_dict()`` (flat, as skrl stores it).
    """

    name = "skrl"

    def __init__(self, shape, **anchor_kwargs):
        super().__init__(shape, **anchor_kwargs)
        from skrl.resources.preprocessors.torch import RunningStandardScaler

        kw = {"device": "cpu", **anchor_kwargs}
        self.module = RunningStandardScaler(size=list(self.shape) if self.shape else 1, **kw)

    def step(self, x, update=True):
        x = self._check(x)
        flat = x.reshape(x.shape[0], -1)
        y = self.module(self._tensor(flat), train=bool(update))
        self.last_dtype = y.dtype
        return _f64(y).reshape(x.shape)

    def stats(self):
        m = self.module
        return {
            "mean": _f64(m.running_mean).reshape(self.shape),
            "var": _f64(m.running_variance).reshape(self.shape),
            "count": float(m.current_count),
        }


# --------------------------------------------------------------------------- jax anchors


class BraxRef(Ref):
    """brax ``running_statistics`` (``brax.training.acme.running_statistics``)
    on jax's CPU backend: a float32 state (jax's default), or float64 with
    ``x64=True`` (every call of this wrapper runs under ``jax.enable_x64``;
    brax's docstring recommends it for precision); a UInt64 count.

    Construction: ``state = init_state(specs.Array(shape, dtype),
    **anchor_kwargs)`` (kwargs: ``std_eps``, ``mode``; Welford by default);
    ``until_count`` is kept for update.
    step(x, update, weights=None): ``if update: state = update(state, x,
    weights=weights, until_count=until_count)`` (brax's defaults: std in
    [1e-6, 1e6]), then
    ``normalize(x, state)`` (no ``max_abs_value``). x (float32) may have several
    batch dims (a ``(T, N, *shape)`` rollout: brax reduces every leading dim);
    weights has the batch dims' shape.
    stats(): ``mean``; ``var = summed_variance / count`` (Welford mode keeps the
    sum of squared deviations); ``count = hi * 2**32 + lo``.
    state_dict(): the state's fields as numpy arrays.
    """

    name = "brax"

    def __init__(self, shape, x64: bool = False, until_count=None, **anchor_kwargs):
        super().__init__(shape, **anchor_kwargs)
        self.until_count = until_count
        import jax
        import jax.numpy as jnp
        from brax.training.acme import running_statistics, specs

        self._jax, self._rs, self.x64 = jax, running_statistics, bool(x64)
        with jax.enable_x64(self.x64):
            dtype = jnp.float64 if self.x64 else jnp.float32
            self.state = running_statistics.init_state(specs.Array(self.shape, dtype), **anchor_kwargs)

    def _check(self, x):
        x = np.asarray(x)
        if x.dtype != np.float32:
            raise TypeError(f"x must be float32, got {x.dtype}")
        n = len(self.shape)
        if x.ndim <= n or tuple(x.shape[x.ndim - n:]) != self.shape:
            raise ValueError(f"x must be [*batch, *{self.shape}], got {x.shape}")
        return x

    def step(self, x, update=True, weights=None):
        import jax.numpy as jnp

        x = self._check(x)
        with self._jax.enable_x64(self.x64):
            if update:
                w = None if weights is None else jnp.asarray(np.asarray(weights, np.float32))
                self.state = self._rs.update(self.state, jnp.asarray(x), weights=w, until_count=self.until_count)
            y = np.asarray(self._rs.normalize(jnp.asarray(x), self.state))
        self.last_dtype = y.dtype
        return _f64(y)

    def _count(self) -> float:
        c = self.state.count
        return float(int(c.hi) * 2**32 + int(c.lo)) if hasattr(c, "hi") else float(c)

    def stats(self):
        n = self._count()
        m2 = _f64(self.state.summed_variance)
        if self.state.mode == self._rs.NormalizationMode.EMA:  # the variance itself
            return {"mean": _f64(self.state.mean), "var": m2, "count": n}
        return {"mean": _f64(self.state.mean), "var": m2 / n if n else np.ones(self.shape), "count": n}

    def state_dict(self):
        st = self.state
        return {"mean": np.asarray(st.mean), "std": np.asarray(st.std), "summed_variance":
                np.asarray(st.summed_variance), "count": self._count(), "std_eps": st.std_eps}


REFS: dict[str, type[Ref]] = {
    "sb3": SB3Ref,
    "gymnasium": GymnasiumRef,
    "rsl_rl": RslRlRef,
    "rl_games": RlGamesRef,
    "skrl": SkrlRef,
    "brax": BraxRef,
}
