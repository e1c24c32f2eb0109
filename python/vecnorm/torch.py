"""vecnorm.torch: the normalizer as a torch.nn.Module.

    from vecnorm.torch import VecNorm
    norm = VecNorm({"observation": (48,), "reward": ()}, batch_shape=(4096,), decay=0.9999)
    out = norm({"observation": obs, "reward": rew})  # update, then normalize (a dict back)
    norm.freeze(); out = norm({"observation": obs})   # normalize only
    policy_norm = norm.to_affine()                    # plain torch: TorchScript / ONNX

The statistics are registered buffers (``<key>_loc``, ``<key>_var``,
``<key>_count``; ``<key>_skips`` and ``<key>_skipped`` with
``nonfinite="skip"``), so ``state_dict``/``load_state_dict``, ``.to(device)``,
DDP's buffer broadcast and CUDA graphs see them. Every call is one operator
call over all keys present (``torch.ops.vecnorm.step``), which updates the
buffers in place on the inputs' device (torch's current CUDA stream, scratch
from torch's caching allocator, no host synchronization) and traces under
``torch.compile(fullgraph=True)``.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from . import _C
from ._ops import STATS_PER_KEY, group_name, make_config, output_dtype, stats_dtype_for, until_count

_step = torch.ops.vecnorm.step.default
_step_alloc = torch.ops.vecnorm.step_alloc.default
_step_group = torch.ops.vecnorm.step_group.default
_normalize = torch.ops.vecnorm.normalize.default
_denormalize = torch.ops.vecnorm.denormalize.default
_is_compiling = torch.compiler.is_compiling
_hooks = torch.nn.modules.module


def _any_hooks(m: nn.Module) -> bool:
    """Whether a call of `m` must run nn.Module.__call__ (its hooks, global or its own)."""
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                or _hooks._global_forward_hooks or _hooks._global_forward_pre_hooks
                or _hooks._global_backward_hooks or _hooks._global_backward_pre_hooks)
_STATS = ("loc", "var", "count", "skips", "skipped")
assert len(_STATS) == STATS_PER_KEY

__all__ = ["VecNorm", "RewardScaler", "AffineNorm", "AffineKeyNorm", "key_name"]

# vecnorm's DType codes (include/vecnorm/tensor.hpp).
_DTYPE_CODE = {
    torch.float32: 0,
    torch.float64: 1,
    torch.float16: 2,
    torch.bfloat16: 3,
    torch.int32: 4,
    torch.int64: 5,
    torch.uint8: 6,
}

Key = Union[str, Tuple[str, ...]]


def key_name(key: Key) -> str:
    """The library's name of a key: nested (TorchRL tuple) keys join with '/'."""
    if isinstance(key, tuple):
        return "/".join(key)
    if isinstance(key, str):
        return key
    raise TypeError(f"vecnorm: a key is a str or a tuple of str, got {type(key).__name__}")


def _buffer_prefix(name: str) -> str:
    if "." in name:
        raise ValueError(f"vecnorm: key '{name}': '.' cannot appear in a module's key (buffer names); use '/'")
    return name


def _shape(value, name: str, what: str = "feature shape") -> Tuple[int, ...]:
    if isinstance(value, int):
        return (value,)
    try:
        return tuple(int(d) for d in value)
    except TypeError:
        raise TypeError(f"vecnorm: key '{name}': the {what} must be a tuple of ints, got {value!r}") from None


def _check_mask(mask, what: str = "mask") -> None:
    """A row mask (or a step's dones) is a tensor or None (its dtype, shape and
    device: the library's checks)."""
    if mask is not None and not isinstance(mask, Tensor):
        raise TypeError(f"vecnorm: {what}: expected a Tensor or None, got {type(mask).__name__}")


class VecNorm(nn.Module):
    """Running normalization of several keys (TorchRL's VecNormV2, stateful).

    Args:
        shapes: the feature shape of each key (``()`` for a scalar reward); keys
            are str or tuples of str (nested TensorDict keys).
        batch_shape: the leading dims every step carries (per-element
            statistics have the shape ``batch_shape + feature``); with
            ``reduce_batch_dims`` any batch is accepted and pooled.
        decay, eps, reduce_batch_dims, estimator, stats_dtype, nonfinite,
        cpu_threads, scale, max_scale, clip, prior_count, unbiased, until,
        until_strict, center: the options of the C++
            API (include/vecnorm/options.hpp), under their C++ names;
            ``cpu_threads=0`` runs CPU calls on torch's intra-op threads
            (``torch.get_num_threads()``), N > 0 on vecnorm's own pool of N. ``scale``:
            ``"clamp"`` (max(std, eps), TorchRL), ``"sqrt_var_plus_eps"`` (SB3,
            Gymnasium, rl_games) or ``"std_plus_eps"`` (rsl_rl, skrl);
            ``max_scale`` bounds the scale from above (brax: 1e6); ``clip``
            bounds the outputs to [-clip, clip]; ``prior_count`` (estimator
            ``"stable"``) starts the statistics as that many samples of mean 0,
            variance 1; ``unbiased``: pooled batch variance over m - 1;
            ``until`` (None: no bound) stops a key's updates once its count
            has reached that many samples (rsl_rl), decided on the device;
            ``until_strict=True`` also leaves out a batch that would take the
            count past it (brax's ``until_count``).
            ``center=False`` divides without subtracting the mean (``x /
            scale``: the reward scalers, rl_games' ``norm_only``); ``loc``
            and ``to_affine`` then report a mean of 0.
            ``vecnorm.presets`` configures them as each library does.
            ``stats_dtype`` None (the default): each key's statistics have
            the dtype of its input (``dtypes``), as TorchRL's VecNormV2 keeps
            them: float64 for float64 keys, float32 for the others (float16,
            bfloat16, integers); a dtype: every key's.
        dtypes: the input dtype of each key (default float32, or
            ``stats_dtype`` where it is given); it decides the statistics'
            dtype (above) and the compute type of ``loc``/``scale``/``to_affine``.
        device: where the statistics live (they move with ``.to()``).
        process_group: pooled statistics (``reduce_batch_dims=True``) across
            the ranks of this ``torch.distributed`` group (gloo on the CPU,
            NCCL on CUDA): every update merges the batches of all ranks, the
            same bits on every rank (docs/distributed.md). Per-element
            statistics are never merged: each rank owns its environments.
    """

    def __init__(
        self,
        shapes: Mapping[Key, Union[int, Sequence[int]]],
        *,
        batch_shape: Sequence[int] = (),
        decay: float = 0.9999,
        eps: float = 1e-4,
        reduce_batch_dims: bool = False,
        estimator: str = "torchrl",
        stats_dtype: Optional[torch.dtype] = None,
        nonfinite: str = "skip",
        cpu_threads: int = 0,
        scale: str = "clamp",
        max_scale: float = math.inf,
        clip: float = math.inf,
        prior_count: float = 0.0,
        unbiased: bool = False,
        until: Optional[float] = None,
        until_strict: bool = False,
        center: bool = True,
        dtypes: Optional[Mapping[Key, torch.dtype]] = None,
        device: Optional[Union[str, torch.device]] = None,
        process_group=None,
    ) -> None:
        super().__init__()
        if not isinstance(shapes, Mapping) or not shapes:
            raise ValueError("vecnorm: shapes must be a non-empty dict {key: feature shape}")
        if stats_dtype not in (None, torch.float32, torch.float64):
            raise TypeError(f"vecnorm: stats_dtype: expected None, torch.float32 or torch.float64, got {stats_dtype}")
        self.keys: List[Key] = list(shapes.keys())
        self.names: List[str] = [key_name(k) for k in self.keys]
        self.feature_shapes: Dict[str, Tuple[int, ...]] = {
            n: _shape(shapes[k], n) for k, n in zip(self.keys, self.names)
        }
        self.batch_shape: Tuple[int, ...] = tuple(int(d) for d in batch_shape)
        self.decay = float(decay)
        self.eps = float(eps)
        self.reduce_batch_dims = bool(reduce_batch_dims)
        self.estimator = str(estimator)
        self.stats_dtype = stats_dtype
        self.nonfinite = str(nonfinite)
        self.cpu_threads = int(cpu_threads)
        self.scale_form = str(scale)
        self.clip = float(clip)
        self.prior_count = float(prior_count)
        self.unbiased = bool(unbiased)
        self.until = until_count(until)  # 0: no bound
        self.center = bool(center)
        self.max_scale = float(max_scale)
        self.until_strict = bool(until_strict)
        dt = dict(dtypes or {})
        self.dtypes: Dict[str, torch.dtype] = {n: dt.get(k, stats_dtype or torch.float32)
                                               for k, n in zip(self.keys, self.names)}
        for n, d in self.dtypes.items():
            if d not in _DTYPE_CODE:
                raise TypeError(f"vecnorm: key '{n}': dtype {d} is not supported")
        # Each key's statistics dtype: the given one, or its input's (float64
        # stays float64, everything else is float32).
        self.stats_dtypes: Dict[str, torch.dtype] = {
            n: stats_dtype_for(stats_dtype, d) for n, d in self.dtypes.items()
        }
        dims = [d for n in self.names for d in self.feature_shapes[n]]
        # Pooled statistics have the feature shape; per-element ones batch + feature.
        self._batch_dims = 0 if self.reduce_batch_dims else len(self.batch_shape)
        self._config = make_config(self._batch_dims, self.reduce_batch_dims, self.estimator, self.nonfinite,
                                   False, self.cpu_threads, self.scale_form, self.unbiased, self.clip,
                                   self.prior_count, self.until, self.center, self.max_scale,
                                   self.until_strict)
        torch.ops.vecnorm.validate(
            self.names, [len(self.feature_shapes[n]) for n in self.names], dims, list(self.batch_shape),
            self.decay, self.eps, self._config, _DTYPE_CODE[stats_dtype or torch.float32],
        )
        self._frozen = False
        # The group by its registered name (the operator resolves it; a name
        # also survives deepcopy and pickling, a ProcessGroup does not).
        self._group: Optional[str] = group_name(process_group) if self.reduce_batch_dims else None
        self._stat_names = [f"{n}_{s}" for n in self.names for s in _STATS]
        self._bound = None  # the eager fast path (src/torch/eager.cpp), made on first use
        # Per-element statistics keep each element's skips (a batch of no dims too:
        # statistics of the feature shape, one sample a step).
        per_element_skips = self.nonfinite == "skip" and not self.reduce_batch_dims
        # A row mask on per-element statistics counts the elements it leaves
        # out in <key>_skips, which only nonfinite="skip" keeps.
        self._mask_refusal: Optional[str] = None
        if not self.reduce_batch_dims and self.nonfinite != "skip":
            self._mask_refusal = (
                f"vecnorm: mask: a row mask on per-element statistics (reduce_batch_dims=False) needs "
                f"nonfinite='skip' (the elements it leaves out are counted in <key>_skips), got "
                f"nonfinite={self.nonfinite!r}")
        for n in self.names:
            p = _buffer_prefix(n)
            shape = self.feature_shapes[n] if self.reduce_batch_dims else self.batch_shape + self.feature_shapes[n]
            kw = dict(device=device)
            self.register_buffer(f"{p}_loc", torch.zeros(shape, dtype=self.stats_dtypes[n], **kw))
            self.register_buffer(f"{p}_var", torch.zeros(shape, dtype=self.stats_dtypes[n], **kw))
            self.register_buffer(f"{p}_count", torch.zeros((), dtype=torch.int64, **kw))
            # Unused ones are empty and not saved (the operator reads "none").
            self.register_buffer(f"{p}_skips", torch.zeros(shape if per_element_skips else (0,),
                                                           dtype=torch.int64, **kw),
                                 persistent=per_element_skips)
            uses_skipped = self.nonfinite == "skip"
            self.register_buffer(f"{p}_skipped", torch.zeros(() if uses_skipped else (0,), dtype=torch.int64, **kw),
                                 persistent=uses_skipped)

    # ------------------------------------------------------------ helpers
    def _stats(self, name: str) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        b = self._buffers
        return tuple(b[f"{name}_{s}"] for s in _STATS)  # type: ignore[return-value]

    def _unknown(self, batch) -> None:
        for k in batch.keys():
            if key_name(k) not in self.feature_shapes:
                raise ValueError(f"vecnorm: unknown key '{key_name(k)}' (keys: {', '.join(self.names)})")

    def _gather(self, batch):
        """The keys present in `batch`: (keys, names, x, stats: five per key)."""
        if isinstance(batch, dict):
            get = batch.get
        elif hasattr(batch, "batch_size"):  # a TensorDict: it carries other keys too
            get = batch.get
        else:
            raise TypeError(f"vecnorm: expected a dict of tensors or a TensorDict, got {type(batch).__name__}")
        xs: List[Tensor] = []
        present: List[int] = []
        for i, k in enumerate(self.keys):
            x = get(k, None)
            if x is None:
                continue
            if not isinstance(x, Tensor):
                raise TypeError(f"vecnorm: key '{self.names[i]}': expected a Tensor, got {type(x).__name__}")
            xs.append(x)
            present.append(i)
        if isinstance(batch, dict) and len(batch) != len(present):
            self._unknown(batch)
        b = self._buffers
        if len(present) == len(self.keys):
            return self.keys, self.names, xs, [b[n] for n in self._stat_names]
        names = [self.names[i] for i in present]
        return ([self.keys[i] for i in present], names, xs,
                [b[f"{n}_{s}"] for n in names for s in _STATS])

    @staticmethod
    def _result(batch, keys: List[Key], outs: List[Tensor]):
        if isinstance(batch, dict):
            return dict(zip(keys, outs))
        # A TensorDict in, a TensorDict out (the normalized keys).
        td = batch.empty()
        for k, y in zip(keys, outs):
            td.set(k, y)
        return td

    def _fast(self, batch, mode: int, mask: Optional[Tensor] = None):
        """The eager fast path for a dict: one C++ call (None: not applicable)."""
        if _is_compiling() or type(batch) is not dict or self._group is not None:
            return None
        b = self._bound
        if b is None:
            b = self._bound = _C.Bound(self._buffers, list(self.keys), list(self.names), list(self._config))
        return b.call(batch, mode, self.decay, self.eps, mask)

    def __call__(self, *args, **kwargs):
        # nn.Module.__call__ costs about 1 us (two Python frames and the hook
        # checks), a fifth of a small step: an eager call of a dict with no
        # hook anywhere goes straight to the fast path, anything else the usual way.
        if (len(args) == 1 and not kwargs and type(args[0]) is dict and self._bound is not None
                and not _is_compiling() and not _any_hooks(self)):
            return self._bound.call(args[0], 2 if self._frozen else 0, self.decay, self.eps)
        return super().__call__(*args, **kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_bound"] = None  # bound to this instance's buffers
        return state

    # ------------------------------------------------------------ calls
    def forward(self, batch, mask: Optional[Tensor] = None):
        """Updates the statistics with the keys present (unless frozen), then
        normalizes them; returns the normalized keys (a dict, or a TensorDict
        for a TensorDict). Absent keys are neither updated nor returned.

        ``mask``: a bool or uint8 tensor of the batch shape on the inputs'
        device (pooled statistics also take int32 row weights: a row of
        weight w counts as w copies of it, brax's ``weights``; 0 or less:
        left out); the rows where it is False are left out of the update, as if
        they had not arrived (done- or truncation-aware updates: they may hold
        anything, NaN included), and are still normalized. Pooled statistics
        (``reduce_batch_dims=True``) update with the kept rows; per-element
        statistics leave the elements of the other rows as they are (their
        counts do not move: ``<key>_skips``, which needs ``nonfinite="skip"``,
        the default) and normalize them with their own statistics. Read on
        the device, no synchronization. Ignored when frozen."""
        if mask is not None and self._mask_refusal is not None and not self._frozen:
            raise ValueError(self._mask_refusal)
        if not _is_compiling() and type(batch) is dict:  # the eager fast path, inline: 1x17 steps
            b = self._bound
            if b is not None:
                return b.call(batch, 2 if self._frozen else 0, self.decay, self.eps, mask)
        out = self._fast(batch, 2 if self._frozen else 0, mask)
        if out is not None:
            return out
        _check_mask(mask)
        if self._frozen:
            return self.normalize(batch)
        keys, names, xs, stats = self._gather(batch)
        if self._group is not None:
            ys = [torch.empty(x.shape, dtype=output_dtype(x.dtype), device=x.device) for x in xs]
            self._step_group(names, xs, ys, stats, False, mask)
            return self._result(batch, keys, ys)
        if not xs:
            return self._result(batch, [], [])
        if torch.compiler.is_compiling():
            # Traced: the outputs are mutated arguments (auto-functionalized).
            ys = [torch.empty(x.shape, dtype=output_dtype(x.dtype), device=x.device) for x in xs]
            _step(xs, ys, stats, names, self._config, self.decay, self.eps, False, mask)
        else:
            ys = _step_alloc(xs, stats, names, self._config, self.decay, self.eps, mask)
        return self._result(batch, keys, ys)

    def update(self, batch, mask: Optional[Tensor] = None) -> None:
        """Updates the statistics only (nothing when frozen); ``mask`` as in forward."""
        if mask is not None and self._mask_refusal is not None and not self._frozen:
            raise ValueError(self._mask_refusal)
        if self._frozen or self._fast(batch, 1, mask) is not None:
            return
        _check_mask(mask)
        keys, names, xs, stats = self._gather(batch)
        if self._group is not None:
            self._step_group(names, xs, [], stats, True, mask)
        elif xs:
            _step(xs, [], stats, names, self._config, self.decay, self.eps, True, mask)

    def _step_group(self, names: List[str], xs: List[Tensor], ys: List[Tensor], stats: List[Tensor],
                    update_only: bool, mask: Optional[Tensor] = None) -> None:
        """A distributed update: every key of the normalizer goes to the
        operator (those of the call first), so that every rank sends the same
        message, even one whose batch has none of the keys."""
        if len(names) < len(self.names):
            have = set(names)
            rest = [n for n in self.names if n not in have]
            names = names + rest
            stats = stats + [self._buffers[f"{n}_{s}"] for n in rest for s in _STATS]
        _step_group(xs, ys, stats, names, self._config, self.decay, self.eps, update_only, self._group, mask)

    def normalize(self, batch):
        """Normalizes with the current statistics; nothing is updated."""
        out = self._fast(batch, 2)
        if out is not None:
            return out
        keys, names, xs, stats = self._gather(batch)
        if not xs:
            return self._result(batch, [], [])
        return self._result(batch, keys, _normalize(xs, stats, names, self._config, self.decay, self.eps))

    def denormalize(self, batch):
        """The inverse: x * scale + loc with the current statistics."""
        keys, names, xs, stats = self._gather(batch)
        if not xs:
            return self._result(batch, [], [])
        outs = _denormalize(xs, stats, names, self._config, self.decay, self.eps,
                            [_DTYPE_CODE[self.dtypes[n]] for n in names])
        return self._result(batch, keys, outs)

    # ------------------------------------------------------------ freeze, copies
    def freeze(self) -> "VecNorm":
        self._frozen = True
        return self

    def unfreeze(self) -> "VecNorm":
        self._frozen = False
        return self

    @property
    def frozen(self) -> bool:
        return self._frozen

    def clone(self) -> "VecNorm":
        """An independent copy (its own statistics), frozen if this one is."""
        return copy.deepcopy(self)

    def frozen_copy(self) -> "VecNorm":
        """An independent, frozen copy."""
        return self.clone().freeze()

    # ------------------------------------------------------------ read-outs
    def _maps(self, key: Key, inverse_scale: bool) -> Tuple[Tensor, Tensor]:
        n = key_name(key)
        if n not in self.feature_shapes:
            raise ValueError(f"vecnorm: unknown key '{n}' (keys: {', '.join(self.names)})")
        lo, va, co, sk, _ = self._stats(n)
        mu, p = torch.ops.vecnorm.maps(lo, va, int(co.item()), sk, n, _DTYPE_CODE[self.dtypes[n]],
                                       self.decay, self.eps, self._config, inverse_scale)
        return mu.to(lo.device), p.to(lo.device)

    def loc(self, key: Key) -> Tensor:
        """The mean a normalize subtracts now (bias-corrected), statistics shape."""
        return self._maps(key, False)[0]

    def scale(self, key: Key) -> Tensor:
        """The scale a normalize divides by now (the ``scale`` form: max(std, eps) by default)."""
        return self._maps(key, False)[1]

    def count(self, key: Key) -> int:
        """Updates (per-element) or samples (pooled) the key has seen."""
        return int(self._stats(_buffer_prefix(key_name(key)))[2].item())

    def skipped(self, key: Key) -> int:
        """Elements (per-element) or rows (pooled) left out by nonfinite='skip',
        and on per-element statistics the elements of rows a mask left out."""
        t = self._stats(key_name(key))[4]
        return int(t.item()) if t.numel() == 1 else 0

    def to_affine(self, key: Optional[Key] = None) -> nn.Module:
        """A plain-torch module with the current loc and scale as buffers,
        ``(x - loc) / scale`` (bounded by ``clip`` where one is set): over the
        dict (``AffineNorm``), or for one key taking and returning one tensor
        (``AffineKeyNorm``). Both script with TorchScript and export to ONNX.
        Every key must have been updated (or have a prior, ``prior_count``)."""
        if key is not None:
            loc, scale = self._maps(key, False)
            return AffineKeyNorm(loc, scale, self.clip)
        return AffineNorm({n: self.to_affine(k) for k, n in zip(self.keys, self.names)})

    @property
    def process_group_name(self) -> Optional[str]:
        """The registered name of the process group the statistics are pooled over (None: this process)."""
        return self._group

    def extra_repr(self) -> str:
        shapes = ", ".join(f"{n}: {tuple(s)}" for n, s in self.feature_shapes.items())
        return (f"{{{shapes}}}, batch_shape={self.batch_shape}, decay={self.decay}, eps={self.eps}, "
                f"reduce_batch_dims={self.reduce_batch_dims}, estimator='{self.estimator}', "
                f"stats_dtype={self.stats_dtype}, scale='{self.scale_form}', max_scale={self.max_scale}, "
                f"clip={self.clip}, prior_count={self.prior_count}, unbiased={self.unbiased}, "
                f"until={self.until or None}, until_strict={self.until_strict}, center={self.center}, "
                f"frozen={self._frozen}")


class AffineKeyNorm(nn.Module):
    """``(x - loc) / scale`` with fixed buffers, bounded to [-clip, clip] when
    ``clip`` is finite: one key's frozen normalization."""

    def __init__(self, loc: Tensor, scale: Tensor, clip: float = math.inf) -> None:
        super().__init__()
        self.register_buffer("loc", loc.clone())
        self.register_buffer("scale", scale.clone())
        self.clip = float(clip)
        self.bounded = math.isfinite(self.clip)

    def forward(self, x: Tensor) -> Tensor:
        y = (x.to(self.loc.dtype) - self.loc) / self.scale
        if self.bounded:
            y = torch.clamp(y, -self.clip, self.clip)
        return y

    def inverse(self, y: Tensor) -> Tensor:
        return y.to(self.loc.dtype) * self.scale + self.loc


class AffineNorm(nn.Module):
    """The frozen normalization of several keys: a dict in, a dict out (keys
    present only). Names are the library's ('/' joins nested keys)."""

    def __init__(self, norms: Mapping[str, AffineKeyNorm]) -> None:
        super().__init__()
        self.norms = nn.ModuleDict(dict(norms))

    def forward(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        out: Dict[str, Tensor] = {}
        for name, norm in self.norms.items():
            if name in batch:
                out[name] = norm(batch[name])
        return out


# The reset rules by the codes of the operator (and of checkpoint format 6: src/state/schema.hpp).
_RESETS = {"after": 0, "before": 1, "never": 2}


class RewardScaler(nn.Module):
    """Reward scaling by the discounted return (SB3's
    ``VecNormalize(norm_reward=True)``, Gymnasium's ``NormalizeReward``,
    rsl_rl's RND scaler): every environment keeps ``R = gamma * R + r``, reset
    where its episode ends; the returns of all environments update pooled
    statistics; the reward is divided by their scale, ``clip(r / scale)``
    (C++: ``vecnorm::RewardScaler``, docs/numerics.md).

    Args:
        batch_shape: the environments' shape (``(num_envs,)``): the shape of
            every step's rewards (before ``feature_shape``) and of the returns.
        feature_shape: a reward's own shape (``()``: one scalar per environment).
        gamma: the discount, ``0 <= gamma <= 1``.
        reset: ``"after"`` (SB3: the return enters the statistics, then a done
            zeroes it), ``"before"`` (Gymnasium: a done zeroes it before the
            reward is added) or ``"never"`` (rsl_rl's RND scaler).
        frozen_returns: what the returns do while frozen: ``"advance"``
            (Gymnasium's ``update_running_mean=False``) or ``"hold"`` (SB3's
            ``training=False``: they stay, but for a done, which zeroes its
            environment's return; ``presets.sb3_reward``).
        **options: the statistics' options (``VecNorm``'s); the defaults are
            SB3's: ``estimator="stable"``, ``decay=1.0``, ``prior_count=1e-4``,
            ``scale="sqrt_var_plus_eps"``, ``eps=1e-8``, ``clip=10.0``,
            ``stats_dtype=torch.float64``. They are always pooled and uncentred.
            ``process_group``: the statistics pooled over the returns of every
            rank of that ``torch.distributed`` group (each rank keeps the
            returns of its own environments; every rank steps together).

    ``forward(reward, done=None, mask=None)`` returns the scaled reward in the
    reward's dtype (computed in the statistics' dtype); ``done`` and ``mask``
    (bool or uint8, ``batch_shape``): episodes that ended this step (SB3:
    ``terminated | truncated``; Gymnasium: ``terminated``), and the rows
    active this step (False: left out of the statistics' update, the return
    held; Gymnasium's vector wrapper: ``~(previous terminated | truncated)``,
    the autoreset step). Frozen
    (``freeze()``), the statistics stay as they are and the returns advance
    (but for the rows the mask leaves out), as in Gymnasium, or hold
    (``frozen_returns="hold"``), as in SB3's eval mode. The returns are
    a buffer (``returns``): saved in the ``state_dict`` with the statistics
    (``statistics.reward_loc``...). No host synchronization; traced by
    ``torch.compile(fullgraph=True)``.
    """

    def __init__(self, batch_shape: Sequence[int], feature_shape: Sequence[int] = (), *, gamma: float = 0.99,
                 reset: str = "after", frozen_returns: str = "advance",
                 device: Optional[Union[str, torch.device]] = None, **options) -> None:
        super().__init__()
        if reset not in _RESETS:
            raise ValueError(f"vecnorm: reset: expected 'after', 'before' or 'never', got {reset!r}")
        if frozen_returns not in ("advance", "hold"):
            raise ValueError(f"vecnorm: frozen_returns: expected 'advance' or 'hold', got {frozen_returns!r}")
        self.frozen_returns = frozen_returns
        for fixed in ("reduce_batch_dims", "center", "shapes", "batch_shape", "dtypes"):
            if fixed in options:
                raise TypeError(f"vecnorm: RewardScaler: {fixed} is not an option here (the statistics are pooled "
                                "over the environments and uncentred)")
        stats = dict(estimator="stable", decay=1.0, prior_count=1e-4, scale="sqrt_var_plus_eps", eps=1e-8, clip=10.0,
                     stats_dtype=torch.float64)
        stats.update(options)
        self.gamma = float(gamma)
        self.reset_rule = reset
        self.batch_shape: Tuple[int, ...] = _shape(batch_shape, "reward", "batch shape")
        self.feature_shape: Tuple[int, ...] = _shape(feature_shape, "reward")
        self.statistics = VecNorm({"reward": self.feature_shape}, batch_shape=self.batch_shape,
                                  reduce_batch_dims=True, center=False, device=device, **stats)
        dtype = self.statistics.stats_dtypes["reward"]
        self.register_buffer("returns", torch.zeros(self.batch_shape + self.feature_shape, dtype=dtype, device=device))
        self.register_buffer("_entered", torch.zeros_like(self.returns), persistent=False)
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"vecnorm: gamma: expected 0 <= gamma <= 1, got {gamma}")

    def forward(self, reward: Tensor, done: Optional[Tensor] = None, mask: Optional[Tensor] = None) -> Tensor:
        if not isinstance(reward, Tensor):
            raise TypeError(f"vecnorm: reward: expected a Tensor, got {type(reward).__name__}")
        _check_mask(done, "done")
        _check_mask(mask)
        st = self.statistics
        r = reward if reward.dtype == self.returns.dtype else reward.to(self.returns.dtype)
        y = torch.empty(r.shape, dtype=r.dtype, device=r.device)
        torch.ops.vecnorm.reward_step(r, y, self.returns, self._entered, list(st._stats("reward")), "reward",
                                      st._config, st.decay, st.eps, self.gamma, _RESETS[self.reset_rule],
                                      not st.frozen, done, mask, st._group, self.frozen_returns == "hold")
        return y if y.dtype == reward.dtype else y.to(reward.dtype)

    def reset(self) -> None:
        """Every return set to 0 (SB3's ``reset()``)."""
        self.returns.zero_()

    def freeze(self) -> "RewardScaler":
        self.statistics.freeze()
        return self

    def unfreeze(self) -> "RewardScaler":
        self.statistics.unfreeze()
        return self

    @property
    def frozen(self) -> bool:
        return self.statistics.frozen

    def scale(self) -> Tensor:
        """The scale the rewards are divided by now (reward feature shape)."""
        return self.statistics.scale("reward")

    def extra_repr(self) -> str:
        return (f"batch_shape={self.batch_shape}, feature_shape={self.feature_shape}, gamma={self.gamma}, "
                f"reset='{self.reset_rule}', frozen_returns='{self.frozen_returns}', frozen={self.frozen}")
