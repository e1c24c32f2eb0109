"""Presets: a ``vecnorm.torch.VecNorm`` configured as another library's
observation normalizer, so that a team that switches keeps the normalization
its results were tuned with (docs/anchors.md has each library's formulas and
the options they map to).

    import vecnorm.presets as presets
    norm = presets.sb3({"observation": (48,)})       # VecNormalize's obs_rms
    y = norm({"observation": obs})                     # update, then normalize

Every preset takes the feature shape of each key and any option of
``VecNorm`` as a keyword (which wins over the preset's value): ``device``,
``dtypes``, ``cpu_threads``, ``process_group``, or a different ``clip``.

| preset | statistics | scale | clip | prior (count, mean, var) |
|---|---|---|---|---|
| ``torchrl_v2`` | TorchRL's EMA (decay 0.9999), per element | max(std, 1e-4) | none | none |
| ``sb3`` | cumulative, pooled, float64 | sqrt(var + 1e-8) | 10 | (1e-4, 0, 1) |
| ``gymnasium`` | cumulative, pooled, float32 | sqrt(var + 1e-8) | none | (1e-4, 0, 1) |
| ``rsl_rl`` | cumulative, pooled, float32 | std + 1e-2 | none | (2^-60, 0, 1): mean 0, std 1 |
| ``rl_games`` | cumulative, pooled, float64 | sqrt(var + 1e-5) | 5 | (1, 0, 1) |
| ``skrl`` | cumulative, pooled, float64, unbiased batch variance | std + 1e-8 | 5 | (1, 0, 1) |
| ``brax`` | cumulative, pooled, float32 | sqrt(var + std_eps) in [1e-6, 1e6] | none | (2^-60, 0, 1): mean 0, std 1 |

Before the first update every preset but ``torchrl_v2`` normalizes as its
library does with its initial state: with the prior's map (mean 0, variance
1). rsl_rl and brax start at mean 0 and std 1 but weight that state 0 at their
first update: their presets' prior of 2^-60 samples gives that map and
vanishes at the first update bit for bit. ``torchrl_v2`` refuses
(``zero_count``), as vecnorm without a prior does.

Drop-in classes with the originals' constructors and state_dict names:
``vecnorm.rsl_rl.EmpiricalNormalization`` (with ``until``),
``vecnorm.rl_games.RunningMeanStd``, ``vecnorm.sb3.RunningMeanStd``.
Reward scalers (``vecnorm.torch.RewardScaler``: the reward divided by the
scale of the discounted return): ``sb3_reward(num_envs)`` (VecNormalize's
``norm_reward``: gamma 0.99, the return zeroed after a done, sqrt(var + 1e-8),
clip 10, prior (1e-4, 0, 1), float64) and ``gymnasium_reward(num_envs)``
(NormalizeReward: zeroed before the reward is added, no clip).
brax's 0/1 ``weights`` (ARS's and ES's "episode still active") are the row
``mask`` of ``forward``/``update``, whole-number weights an int32 ``mask`` (a
row of weight 2 counts twice, as brax documents); its EMA mode's
``until_count`` is ``until`` with ``until_strict``. Not reproduced: brax's
fractional weights (its count adds their sum truncated to an integer, its
sums the weights as they are).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, Mapping, Optional

import torch

from .torch import Key, RewardScaler, VecNorm

__all__ = ["torchrl_v2", "sb3", "gymnasium", "rsl_rl", "rl_games", "skrl", "brax", "sb3_reward",
           "gymnasium_reward", "PRESETS"]


def _cumulative(stats_dtype: torch.dtype, scale: str, eps: float, clip: float, prior_count: float,
                unbiased: bool = False) -> Dict[str, Any]:
    """A running mean/variance over every sample so far (Chan's merge), pooled
    over the batch, as the libraries other than TorchRL keep them."""
    return dict(estimator="stable", decay=1.0, reduce_batch_dims=True, stats_dtype=stats_dtype, scale=scale,
                eps=eps, clip=clip, prior_count=prior_count, unbiased=unbiased)


# A prior of 2^-60 samples (Options::prior_count): before the first update the
# map is the prior's (mean 0, variance 1), and every update's weights are those
# of no prior, bit for bit (n0 + n rounds to n for every count n >= 1).
NEGLIGIBLE_PRIOR = 2.0 ** -60

PRESETS: Dict[str, Dict[str, Any]] = {
    # torchrl.envs.transforms.VecNormV2's defaults.
    "torchrl_v2": dict(estimator="torchrl", decay=0.9999, eps=1e-4, reduce_batch_dims=False),
    # stable_baselines3 VecNormalize: obs_rms = RunningMeanStd(epsilon=1e-4), clip_obs=10, epsilon=1e-8.
    "sb3": _cumulative(torch.float64, "sqrt_var_plus_eps", 1e-8, 10.0, 1e-4),
    # gymnasium.wrappers(.vector).NormalizeObservation (1.x): float32 statistics, epsilon=1e-8, no clip.
    "gymnasium": _cumulative(torch.float32, "sqrt_var_plus_eps", 1e-8, math.inf, 1e-4),
    # rsl_rl.modules.EmpiricalNormalization(eps=1e-2): float32 buffers, std + eps; its initial
    # state (mean 0, std 1) normalizes before the first update, which weights it 0: a prior of
    # NEGLIGIBLE_PRIOR samples.
    "rsl_rl": _cumulative(torch.float32, "std_plus_eps", 1e-2, math.inf, NEGLIGIBLE_PRIOR),
    # rl_games.algos_torch.running_mean_std.RunningMeanStd: count starts at 1, sqrt(var + 1e-5), clamp 5.
    "rl_games": _cumulative(torch.float64, "sqrt_var_plus_eps", 1e-5, 5.0, 1.0),
    # skrl RunningStandardScaler: count starts at 1, unbiased batch variance, std + 1e-8, clip 5.
    "skrl": _cumulative(torch.float64, "std_plus_eps", 1e-8, 5.0, 1.0, unbiased=True),
    # brax.training.acme.running_statistics (Welford mode, std_eps=0, jax's float32): std =
    # clip(sqrt(var + std_eps), 1e-6, 1e6), normalize with no bound (max_abs_value=None); its
    # initial state (mean 0, std 1) as rsl_rl's.
    "brax": dict(_cumulative(torch.float32, "clamp", 1e-6, math.inf, NEGLIGIBLE_PRIOR), max_scale=1e6),
}


def _make(name: str, shapes: Mapping[Key, Any], options: Dict[str, Any]) -> VecNorm:
    kw = dict(PRESETS[name])
    kw.update(options)
    return VecNorm(shapes, **kw)


def torchrl_v2(shapes: Mapping[Key, Any], **options: Any) -> VecNorm:
    """TorchRL's VecNormV2 (per-element EMA statistics; pass ``batch_shape``)."""
    return _make("torchrl_v2", shapes, options)


def sb3(shapes: Mapping[Key, Any], **options: Any) -> VecNorm:
    """Stable-Baselines3's VecNormalize observation normalization."""
    return _make("sb3", shapes, options)


def gymnasium(shapes: Mapping[Key, Any], **options: Any) -> VecNorm:
    """Gymnasium's NormalizeObservation (vector and single-env wrappers, 1.x)."""
    return _make("gymnasium", shapes, options)


def rsl_rl(shapes: Mapping[Key, Any], **options: Any) -> VecNorm:
    """rsl_rl's EmpiricalNormalization (pass rsl_rl's ``until=N`` as it is)."""
    return _make("rsl_rl", shapes, options)


def rl_games(shapes: Mapping[Key, Any], **options: Any) -> VecNorm:
    """rl_games' RunningMeanStd (train mode: update, then normalize and clamp to ±5)."""
    return _make("rl_games", shapes, options)


def skrl(shapes: Mapping[Key, Any], **options: Any) -> VecNorm:
    """skrl's RunningStandardScaler (``train=True``: update, then normalize and clip to ±5)."""
    return _make("skrl", shapes, options)


def brax(shapes: Mapping[Key, Any], *, std_eps: float = 0.0, mode: str = "welford",
         until_count: Optional[int] = None, **options: Any) -> VecNorm:
    """brax's ``running_statistics`` (``init_state(std_eps=0.0, mode=...)``,
    ``update(until_count=...)`` then ``normalize(max_abs_value=None)``):
    statistics over every batch dim (a ``(T, N, ...)`` rollout at once, as
    brax's PPO updates them), the std ``sqrt(var + std_eps)`` kept in [1e-6,
    1e6]. ``std_eps > 0`` gives the scale ``sqrt(var + std_eps)`` (brax's lower
    bound 1e-6 then binds only for ``std_eps < 1e-12``). ``mode``: ``"welford"``
    or ``"ema"`` (brax's PPO ``normalize_observations_mode``; both merge each
    batch exactly, in a different order of rounding). ``until_count`` (PPO's
    ``normalize_until_count``): in EMA mode a batch that would take the count
    past it is left out, and every later one (``until`` with ``until_strict``;
    brax's count goes on growing while its statistics stop, the preset's
    stays, which changes no output while the batches are of one size, as
    PPO's are); brax's Welford mode ignores it, and so does the preset, with a
    warning. Pass 0/1 ``weights`` as ``mask=`` (a bool mask; whole numbers: an
    int32 mask; Welford mode: brax's EMA mode counts the weights but takes
    every row's moments); ``clip=`` is
    ``max_abs_value``. Before the first update ``normalize`` returns the input,
    as brax's initial std of 1 does (with ``std_eps > 0``: the input over
    ``sqrt(1 + std_eps)``, where brax's initial std is 1). Unlike brax: an
    update whose weights are all 0 leaves the count at 0 (brax's first divides
    0 by 0)."""
    if mode not in ("welford", "ema"):
        raise ValueError(f"vecnorm.presets.brax: mode: expected 'welford' or 'ema', got {mode!r}")
    kw: Dict[str, Any] = {} if std_eps == 0.0 else {"scale": "sqrt_var_plus_eps", "eps": float(std_eps)}
    if until_count is not None:
        if mode == "welford":
            warnings.warn("vecnorm.presets.brax: brax's Welford mode ignores until_count (only its EMA mode stops "
                          "updating); so does the preset", stacklevel=2)
        elif int(until_count) < 1 or int(until_count) != until_count:
            raise ValueError("vecnorm.presets.brax: until_count: expected a whole number of samples >= 1, got "
                             f"{until_count!r}")
        else:
            kw.update(until=int(until_count), until_strict=True)
    return _make("brax", shapes, {**kw, **options})


def sb3_reward(num_envs: int, *, gamma: float = 0.99, **options: Any) -> RewardScaler:
    """SB3's ``VecNormalize(norm_reward=True)`` reward scaling (``ret_rms``,
    ``clip_reward=10``, ``epsilon=1e-8``): the RewardScaler defaults; frozen
    (SB3's ``training=False``), the returns hold but for the zeroing at dones."""
    return RewardScaler((int(num_envs),), gamma=gamma, reset="after", **{"frozen_returns": "hold", **options})


def gymnasium_reward(num_envs: int = 1, *, gamma: float = 0.99, **options: Any) -> RewardScaler:
    """Gymnasium's ``NormalizeReward`` (``gamma=0.99``, ``epsilon=1e-8``): the
    return zeroed where an episode terminated before the reward is added, the
    scaled reward not clipped. Its vector wrapper: in the NEXT_STEP autoreset
    mode (the default) pass ``done=terminated`` and ``mask=~prev`` (``prev``:
    the previous step's ``terminated | truncated``: the autoreset step is left
    out, its return held); in the SAME_STEP mode pass ``done=terminated | prev``
    and no mask (the returns of the rows that end at a step then hold their
    last value where Gymnasium's are 0 already; the next step's reset zeroes
    them before they are used)."""
    return RewardScaler((int(num_envs),), gamma=gamma, reset="before", **{"clip": math.inf, **options})
