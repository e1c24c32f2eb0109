"""vecnorm.torchrl: a drop-in for TorchRL's ``VecNormV2`` transform on vecnorm's operators.

    from torchrl.envs import TransformedEnv
    from vecnorm.torchrl import VecNormV2
    env = TransformedEnv(base_env, VecNormV2(in_keys=["observation", "reward"], decay=0.99))
    rollout = env.rollout(100)

The constructor, the stateful and stateless modes, the reset step (which
carries no reward: keys absent from a step are neither updated nor
normalized), freeze/unfreeze/frozen_copy/clone, ``loc``/``scale``,
``to_observation_norm``, ``denorm`` and the state-dict format
(``get_extra_state``/``set_extra_state``) follow TorchRL's ``VecNormV2``, so a
checkpoint written by one loads into the other. All the arithmetic is done by
``torch.ops.vecnorm.*`` (one call per step over all the keys present), on the
device of the data.

Differences from TorchRL (see docs and shared/spec/semantics.md):

* loading a state (``set_extra_state``/``load_state_dict``) copies the values;
  TorchRL's aliases the source's tensors. ``get_extra_state`` returns copies.
* statistics are float64 for float64 data and float32 otherwise (TorchRL
  keeps float16/bfloat16 statistics for half data).
* the bias correction is exact in float64 for float64 data (TorchRL forms it
  in float32); the variance is clamped at 0 before the square root (no NaN);
  integer inputs are converted to float32 first; normalizing a key that was
  never updated raises instead of dividing by zero.
* stateless mode accepts keys missing from the reset step (a reward):
  TorchRL's raises there.
"""
from __future__ import annotations

try:
    from tensordict import NestedKey, TensorDict, TensorDictBase, unravel_key
    from torchrl.data.tensor_specs import Bounded, Composite, Unbounded
    from torchrl.envs.common import EnvBase
    from torchrl.envs.transforms.transforms import Compose, ObservationNorm, Transform
except ImportError as _err:  # pragma: no cover - exercised by a monkeypatched test
    raise ImportError(
        "vecnorm.torchrl needs TorchRL and tensordict, which could not be imported "
        f"({_err}): install them with `pip install torchrl tensordict`"
    ) from _err

import uuid
import warnings
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch import multiprocessing as mp

import vecnorm as _vecnorm  # noqa: F401  (loads the operator library)
from ._ops import group_name, make_config, output_dtype, stats_dtype_for
from .torch import key_name

try:
    from torch.compiler import is_compiling as _is_compiling
except ImportError:  # pragma: no cover
    from torch._dynamo import is_compiling as _is_compiling

__all__ = ["VecNormV2"]

_STATS_CODE = {torch.float32: 0, torch.float64: 1}


class VecNormConfigError(ValueError, RuntimeError):
    """An invalid VecNormV2 configuration (a ValueError; also a RuntimeError,
    which is what TorchRL raises for reduce_batch_dims with stateful=False)."""


def _as_key_list(keys, what: str) -> List[NestedKey]:
    if isinstance(keys, (str, tuple)):
        keys = [keys]
    try:
        keys = list(keys)
    except TypeError:
        raise TypeError(f"vecnorm: {what}: expected a key or a sequence of keys, got {type(keys).__name__}") from None
    out = []
    for k in keys:
        if not isinstance(k, (str, tuple)) or (isinstance(k, tuple) and not all(isinstance(p, str) for p in k)):
            raise TypeError(f"vecnorm: {what}: a key is a str or a tuple of str, got {k!r}")
        out.append(unravel_key(k))
    return out


class VecNormV2(Transform):
    """Running normalization of observations and rewards (TorchRL's ``VecNormV2``).

    Args:
        in_keys: the keys to normalize (nested keys as tuples).
        out_keys: where the normalized values go (default: ``in_keys``).
        decay: 0 < decay <= 1; 1 weighs every sample the same. Default 0.9999.
        eps: lower bound of the scale. Default 1e-4.
        stateful: True: the transform owns the statistics. False: they travel
            in the tensordict under ``_vecnorm_loc``/``_vecnorm_var``/
            ``_vecnorm_count`` (per element, like TorchRL's).
        reduce_batch_dims: pool the batch (one statistic per feature); stateful only.
        lock: a lock held around each step (default: a new ``mp.Lock()``).
        shared_data: a TensorDict with ``loc``/``var``/``count`` used as the
            statistics as they are (shared, not copied), e.g. in shared memory.
        estimator: ``"torchrl"`` (TorchRL's arithmetic, the default) or
            ``"stable"`` (exact bias correction, no cancellation; its state
            has a different meaning and must not be loaded into TorchRL's).
        cpu_threads: threads of the CPU operators (0: torch's intra-op threads,
            ``torch.get_num_threads()`` of them; N > 0: vecnorm's own pool of N).
    """

    SEP = ".-|-."

    def __init__(
        self,
        in_keys: Sequence[NestedKey],
        out_keys: Optional[Sequence[NestedKey]] = None,
        *,
        lock: Any = None,
        stateful: bool = True,
        decay: float = 0.9999,
        eps: float = 1e-4,
        shared_data: Optional[TensorDictBase] = None,
        reduce_batch_dims: bool = False,
        estimator: str = "torchrl",
        cpu_threads: int = 0,
        process_group: Any = None,
    ) -> None:
        in_keys = _as_key_list(in_keys, "in_keys")
        out_keys = list(in_keys) if out_keys is None else _as_key_list(out_keys, "out_keys")
        if not in_keys:
            raise VecNormConfigError("vecnorm: in_keys: at least one key is required")
        if len(out_keys) != len(in_keys):
            raise VecNormConfigError(
                f"vecnorm: out_keys: {len(out_keys)} keys for {len(in_keys)} in_keys (one out key per in key)")
        if reduce_batch_dims and not stateful:
            raise VecNormConfigError(
                "vecnorm: reduce_batch_dims=True needs stateful=True (stateless statistics are per element)")
        names = [key_name(k) for k in in_keys]
        for n in names:
            if n.startswith("_vecnorm"):
                raise VecNormConfigError(f"vecnorm: key '{n}': names starting with '_vecnorm' are reserved")
        # Options and key names checked by the library (ValueError naming what is wrong).
        torch.ops.vecnorm.validate(names, [0] * len(names), [], [], float(decay), float(eps),
                                   make_config(0, bool(reduce_batch_dims), str(estimator), "propagate", False, 0), 0)
        self.stateful = bool(stateful)
        super().__init__(in_keys=in_keys, out_keys=out_keys)
        self.lock = mp.Lock() if lock is None else lock
        self.decay = float(decay)
        self.eps = float(eps)
        self.reduce_batch_dims = bool(reduce_batch_dims)
        self.estimator = str(estimator)
        self.cpu_threads = int(cpu_threads)
        # Pooled updates across the ranks of this torch.distributed group (its
        # registered name); per-element statistics are never merged (each rank
        # owns its environments), as vecnorm.torch.VecNorm.
        self._group_name = group_name(process_group) if self.reduce_batch_dims else None
        self.frozen = False
        self._names = dict(zip(in_keys, names))
        self._batch_dims = 0
        if self.stateful:
            self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
            self._loc = self._var = self._count = None
            if shared_data is not None:
                self._adopt(shared_data, copy=False)
        else:
            self.initialized = False
            if shared_data is not None:
                raise VecNormConfigError("vecnorm: shared_data needs stateful=True")

    # ------------------------------------------------------------ keys
    @property
    def in_keys(self) -> Sequence[NestedKey]:
        keys = self.__dict__.get("_in_keys", None) or []
        if not self.stateful:
            keys = list(keys) + [f"{self.prefix}_count", f"{self.prefix}_loc", f"{self.prefix}_var"]
        return keys

    @in_keys.setter
    def in_keys(self, value) -> None:
        self._in_keys = None if value is None else _as_key_list(value, "in_keys")

    @property
    def _in_keys_safe(self) -> List[NestedKey]:
        return list(self.__dict__.get("_in_keys", None) or [])

    @property
    def prefix(self) -> str:
        return getattr(self, "_prefix", "_vecnorm")

    def _make_prefix(self, output_spec) -> str:
        prefix = getattr(self, "_prefix", None)
        if prefix is None:
            taken = any("_vecnorm_loc" in output_spec[s].keys()
                        for s in ("full_observation_spec", "full_reward_spec") if s in output_spec.keys())
            prefix = "_vecnorm" + str(uuid.uuid1()) if taken else "_vecnorm"
            self._prefix = prefix
        return prefix

    def _name(self, key: NestedKey) -> str:
        return self._names.get(key) or key_name(key)

    # ------------------------------------------------------------ container
    def set_container(self, container) -> None:
        super().set_container(container)
        parent = getattr(self, "parent", None)
        if parent is None or not isinstance(parent, EnvBase):
            return
        if self.stateful:
            if self._loc is None:
                self._maybe_stateful_init(parent.fake_tensordict().get("next"))
        else:
            self._make_prefix(parent.output_spec)

    # ------------------------------------------------------------ initialisation
    def _select_for_init(self, data: TensorDictBase) -> TensorDictBase:
        """The in_keys of `data`, with zeros from the parent's specs for the
        keys it lacks (a reward on the reset step)."""
        keys = self._in_keys_safe
        if all(k in data.keys(True, True) for k in keys):
            return data.select(*keys)
        parent = getattr(self, "parent", None)
        missing = [k for k in keys if k not in data.keys(True, True)]
        if parent is None:
            raise KeyError(f"vecnorm: key '{self._name(missing[0])}' is not in the data and the transform has no "
                           "parent env whose specs could give its shape")
        zeros = parent.full_observation_spec.zero().update(parent.full_reward_spec.zero())
        zeros = zeros.update(data.select(*[k for k in keys if k not in missing]))
        try:
            return zeros.select(*keys, strict=True)
        except KeyError:
            absent = [k for k in missing if k not in zeros.keys(True, True)]
            raise KeyError(f"vecnorm: key '{self._name(absent[0])}' is neither in the data nor in the env's "
                           "observation/reward specs") from None

    def _maybe_stateful_init(self, data: TensorDictBase) -> None:
        if self._loc is not None:
            return
        if _is_compiling():
            raise RuntimeError("VecNormV2 must be initialized before compile.")
        sel = self._select_for_init(data)
        bd = data.batch_dims
        loc, var, count = {}, {}, {}
        for k in self._in_keys_safe:
            x = sel.get(k)
            if not isinstance(x, Tensor):
                raise TypeError(f"vecnorm: key '{self._name(k)}': expected a Tensor, got {type(x).__name__}")
            shape = x.shape[bd:] if self.reduce_batch_dims else x.shape
            dt = stats_dtype_for(None, x.dtype)
            loc[k] = torch.zeros(shape, dtype=dt, device=x.device)
            var[k] = torch.zeros(shape, dtype=dt, device=x.device)
            count[k] = torch.zeros((), dtype=torch.int64, device=x.device)
        self._batch_dims = 0 if self.reduce_batch_dims else bd
        self._set_stats(self._to_td(loc), self._to_td(var), self._to_td(count))

    @staticmethod
    def _to_td(d: Dict[NestedKey, Tensor]) -> TensorDict:
        td = TensorDict({}, batch_size=[])
        for k, v in d.items():
            td.set(k, v)
        return td

    def _set_stats(self, loc: TensorDictBase, var: TensorDictBase, count: TensorDictBase) -> None:
        self._loc, self._var, self._count = loc, var, count
        self.initialized.fill_(True)

    # ------------------------------------------------------------ the operators
    def _group(self, keys: List[NestedKey], locs: List[Tensor]):
        """Indices of the keys grouped by stats dtype (one operator call each)."""
        groups: Dict[torch.dtype, List[int]] = {}
        for i, lo in enumerate(locs):
            groups.setdefault(lo.dtype, []).append(i)
        return groups.values()

    def _batch_dims_for(self, x: Tensor, loc: Tensor, data_batch_dims: int) -> int:
        # Per-element statistics have the data's shape; the split between batch
        # and feature dims does not change the arithmetic, only the key table.
        return max(0, min(data_batch_dims, loc.dim(), x.dim()))

    def _apply_ops(self, keys, xs, locs, vars_, counts, data_batch_dims: int, *, update: bool,
                   per_element_counts: bool) -> List[Tensor]:
        outs: List[Optional[Tensor]] = [None] * len(keys)
        for idx in self._group(keys, locs):
            gx = [xs[i] for i in idx]
            gl = [locs[i] for i in idx]
            gv = [vars_[i] for i in idx]
            gc = [counts[i] for i in idx]
            names = [self._name(keys[i]) for i in idx]
            bd = 0 if self.reduce_batch_dims else min(self._batch_dims_for(x, lo, data_batch_dims)
                                                      for x, lo in zip(gx, gl))
            stats = _stats_list(gl, gv, gc)
            config = make_config(bd, self.reduce_batch_dims, self.estimator, "propagate", per_element_counts,
                                 self.cpu_threads)
            if update and self._group_name is not None:
                # Every rank sends every key of this dtype (the call's first).
                ys = [torch.empty(x.shape, dtype=output_dtype(x.dtype), device=x.device) for x in gx]
                have = set(names)
                for k in self._in_keys_safe:
                    n = self._name(k)
                    if n in have or k not in self._loc.keys(True, True) or self._loc.get(k).dtype != gl[0].dtype:
                        continue
                    names.append(n)
                    stats += _stats_list([self._loc.get(k)], [self._var.get(k)], [self._count.get(k)])
                torch.ops.vecnorm.step_group(gx, ys, stats, names, config, self.decay, self.eps, False,
                                             self._group_name)
            elif update:
                ys = [torch.empty(x.shape, dtype=output_dtype(x.dtype), device=x.device) for x in gx]
                torch.ops.vecnorm.step(gx, ys, stats, names, config, self.decay, self.eps, False)
            else:
                ys = torch.ops.vecnorm.normalize(gx, stats, names, config, self.decay, self.eps)
            for i, y in zip(idx, ys):
                outs[i] = y
        return outs

    def _present(self, data: TensorDictBase) -> Tuple[List[NestedKey], List[NestedKey], List[Tensor]]:
        keys, outk, xs = [], [], []
        for k, o in zip(self._in_keys_safe, self.out_keys):
            x = data.get(k, None)
            if x is None:
                if not self.missing_tolerance:
                    raise KeyError(f"vecnorm: key '{self._name(k)}' is not in the tensordict")
                continue
            if not isinstance(x, Tensor):
                raise TypeError(f"vecnorm: key '{self._name(k)}': expected a Tensor, got {type(x).__name__}")
            keys.append(k)
            outk.append(o)
            xs.append(x)
        return keys, outk, xs

    # ------------------------------------------------------------ steps
    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        previous = self.missing_tolerance
        self.set_missing_tolerance(True)
        try:
            return self._step(tensordict_reset, tensordict_reset)
        finally:
            self.set_missing_tolerance(previous)

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        lock = None if _is_compiling() else self.lock
        if lock is not None:
            lock.acquire()
        try:
            if self.stateful:
                self._stateful_step(next_tensordict)
            else:
                self._stateless_step(tensordict, next_tensordict)
        finally:
            if lock is not None:
                lock.release()
        return next_tensordict

    def _move_stats(self, device: torch.device) -> None:
        """Keeps the statistics on the data's device."""
        for td in (self._loc, self._var, self._count):
            for leaf in td.values(True, True):
                if leaf.device != device:
                    self._loc = self._loc.to(device)
                    self._var = self._var.to(device)
                    self._count = self._count.to(device)
                    return

    def _stateful_step(self, next_td: TensorDictBase) -> None:
        self._maybe_stateful_init(next_td)
        keys, outk, xs = self._present(next_td)
        if not keys:
            return
        self._move_stats(xs[0].device)
        locs = [self._loc.get(k) for k in keys]
        vars_ = [self._var.get(k) for k in keys]
        counts = [self._count.get(k) for k in keys]
        ys = self._apply_ops(keys, xs, locs, vars_, counts, next_td.batch_dims, update=not self.frozen,
                             per_element_counts=False)
        for o, y in zip(outk, ys):
            next_td.set(o, y)

    def _stateless_init(self, data: TensorDictBase) -> None:
        sel = self._select_for_init(data)
        loc, var, count = {}, {}, {}
        for k in self._in_keys_safe:
            x = sel.get(k)
            dt = stats_dtype_for(None, x.dtype)
            loc[k] = torch.zeros(x.shape, dtype=dt, device=x.device)
            var[k] = torch.zeros(x.shape, dtype=dt, device=x.device)
            count[k] = torch.zeros(x.shape, dtype=torch.int64, device=x.device)
        for suffix, d in (("_loc", loc), ("_var", var), ("_count", count)):
            td = TensorDict({}, batch_size=data.batch_size, device=data.device)
            for k, v in d.items():
                td.set(k, v)
            data.set(self.prefix + suffix, td)

    def _stateless_step(self, tensordict: TensorDictBase, next_td: TensorDictBase) -> None:
        if not self.initialized or f"{self.prefix}_loc" not in tensordict.keys():
            self.initialized = True
            self._stateless_init(tensordict)
        keys, outk, xs = self._present(next_td)
        if not keys:
            return
        # Out of place: the statistics read stay as they were; the step writes new ones.
        loc_td = tensordict.get(f"{self.prefix}_loc").clone()
        var_td = tensordict.get(f"{self.prefix}_var").clone()
        count_td = tensordict.get(f"{self.prefix}_count").clone()
        locs, vars_, counts = [], [], []
        for k in keys:
            lo, va, co = loc_td.get(k, None), var_td.get(k, None), count_td.get(k, None)
            if lo is None or va is None or co is None:
                raise KeyError(f"vecnorm: key '{self._name(k)}': no statistics under '{self.prefix}_loc/_var/_count'")
            locs.append(lo.contiguous())
            vars_.append(va.contiguous())
            counts.append(co.contiguous())
        ys = self._apply_ops(keys, xs, locs, vars_, counts, next_td.batch_dims, update=not self.frozen,
                             per_element_counts=True)
        for k, lo, va, co in zip(keys, locs, vars_, counts):
            loc_td.set(k, lo)
            var_td.set(k, va)
            count_td.set(k, co)
        for o, y in zip(outk, ys):
            next_td.set(o, y)
        next_td.set(f"{self.prefix}_loc", loc_td)
        next_td.set(f"{self.prefix}_var", var_td)
        next_td.set(f"{self.prefix}_count", count_td)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Normalizes ``tensordict`` (e.g. a replay-buffer sample) with the current
        statistics, without updating them (stateful only)."""
        if not self.stateful:
            raise NotImplementedError("vecnorm: forward() needs stateful=True (stateless statistics travel with "
                                      "the data: use the transform inside an env)")
        if self._loc is None:
            raise RuntimeError("vecnorm: VecNormV2 must be initialized (see data) before forward()")
        previous = self.missing_tolerance
        self.set_missing_tolerance(True)
        try:
            keys, outk, xs = self._present(tensordict)
        finally:
            self.set_missing_tolerance(previous)
        if keys:
            self._move_stats(xs[0].device)
            ys = self._apply_ops(keys, xs, [self._loc.get(k) for k in keys], [self._var.get(k) for k in keys],
                                 [self._count.get(k) for k in keys], tensordict.batch_dims, update=False,
                                 per_element_counts=False)
            for o, y in zip(outk, ys):
                tensordict.set(o, y)
        return tensordict

    # ------------------------------------------------------------ freeze, copies
    def freeze(self) -> "VecNormV2":
        """Stops the statistics from updating (normalizing goes on)."""
        self.frozen = True
        return self

    def unfreeze(self) -> "VecNormV2":
        self.frozen = False
        return self

    def clone(self) -> "VecNormV2":
        """An independent copy (its own statistics, no parent), frozen if this one is."""
        other = super().clone()
        if self.stateful:
            other._buffers = OrderedDict(other._buffers)
            other._buffers["initialized"] = self.initialized.clone()
            if self._loc is not None:
                other._loc = self._loc.clone()
                other._var = self._var.clone()
                other._count = self._count.clone()
        other._names = dict(self._names)
        return other

    def frozen_copy(self) -> "VecNormV2":
        """An independent, frozen copy."""
        if not self.stateful:
            raise RuntimeError("vecnorm: frozen_copy() needs stateful=True")
        if self._loc is None:
            raise RuntimeError("vecnorm: VecNormV2 must be initialized before frozen_copy()")
        return self.clone().freeze()

    # ------------------------------------------------------------ read-outs
    def _maps(self, key: NestedKey) -> Tuple[Tensor, Tensor]:
        lo, va, co = self._loc.get(key), self._var.get(key), self._count.get(key)
        mu, scale = torch.ops.vecnorm.maps(lo, va, int(co.item()), torch.empty(0, dtype=torch.int64),
                                           self._name(key), _STATS_CODE[lo.dtype], self.decay, self.eps,
                                           make_config(0, self.reduce_batch_dims, self.estimator, "propagate",
                                                       False, 0), False)
        return mu.to(lo.device), scale.to(lo.device)

    def _get_loc_scale(self, loc_only: bool = False):
        if not self.stateful:
            raise RuntimeError("vecnorm: loc/scale cannot be computed with a stateless VecNormV2")
        if self._loc is None:
            raise RuntimeError("vecnorm: VecNormV2 is not initialized (it has seen no data)")
        loc = TensorDict({}, batch_size=[])
        scale = TensorDict({}, batch_size=[])
        for k in self._in_keys_safe:
            mu, s = self._maps(k)
            loc.set(k, mu)
            scale.set(k, s)
        return loc, (None if loc_only else scale)

    @property
    def loc(self) -> TensorDictBase:
        """The bias-corrected mean that normalizing subtracts now, per in_key."""
        return self._get_loc_scale(loc_only=True)[0]

    @property
    def scale(self) -> TensorDictBase:
        """The scale that normalizing divides by now, per in_key."""
        return self._get_loc_scale()[1]

    @property
    def standard_normal(self) -> bool:
        return True

    def to_observation_norm(self):
        """Fixed ``ObservationNorm`` transform(s) with the current loc and scale."""
        if not self.stateful:
            raise NotImplementedError("vecnorm: to_observation_norm() needs stateful=True")
        loc, scale = self._get_loc_scale()
        norms = [ObservationNorm(loc=loc.get(k), scale=scale.get(k), standard_normal=True, in_keys=k, out_keys=o,
                                 eps=self.eps)
                 for k, o in zip(self._in_keys_safe, self.out_keys)]
        return Compose(*norms) if len(norms) > 1 else norms[0]

    def denorm(self, tensordict: TensorDictBase) -> TensorDictBase:
        """The inverse: reads ``out_keys`` and writes ``in_keys`` = value * scale + loc
        (a shallow copy of ``tensordict``)."""
        if not self.stateful:
            raise NotImplementedError("vecnorm: denorm() needs stateful=True")
        if self._loc is None:
            raise RuntimeError("vecnorm: VecNormV2 must be initialized before denorm()")
        tensordict = tensordict.copy()
        for k, o in zip(self._in_keys_safe, self.out_keys):
            y = tensordict.get(o, None)
            if y is None:
                continue
            lo = self._loc.get(k)
            if y.shape == lo.shape or self.reduce_batch_dims:
                config = make_config(0, self.reduce_batch_dims, self.estimator, "propagate", False,
                                     self.cpu_threads)
                x = torch.ops.vecnorm.denormalize([y], _stats_list([lo], [self._var.get(k)], [self._count.get(k)]),
                                                  [self._name(k)], config, self.decay, self.eps, [-1])[0]
            else:
                # Other leading dims (e.g. a rollout's time dim): broadcast the
                # read-outs like TorchRL does.
                mu, s = self._maps(k)
                x = torch.addcmul(mu, y, s)
            tensordict.set(k, x)
        return tensordict

    # ------------------------------------------------------------ specs
    def _out_spec(self, spec):
        if isinstance(spec, Composite):
            return Composite({k: self._out_spec(v) for k, v in spec.items()}, shape=spec.shape, device=spec.device)
        spec = spec.clone()
        dtype = spec.dtype
        if dtype is not None and not dtype.is_floating_point:
            spec.dtype = torch.get_default_dtype()
        if isinstance(spec, Bounded):
            spec = Unbounded(shape=spec.shape, device=spec.device, dtype=spec.dtype)
        return spec

    @staticmethod
    def _count_spec(spec):
        if isinstance(spec, Composite):
            return Composite({k: VecNormV2._count_spec(v) for k, v in spec.items()}, shape=spec.shape,
                             device=spec.device)
        return Unbounded(shape=spec.shape, dtype=torch.int64, device=spec.device)

    def _transform_spec(self, spec: Composite, obs_spec: Optional[Composite] = None) -> Composite:
        found = {}
        for k, o in zip(self._in_keys_safe, self.out_keys):
            if unravel_key(k) in spec.keys(True):
                s = self._out_spec(spec.get(k))
                spec.set(o, s)
                found[k] = s
        if not self.stateful and found:
            target = spec if obs_spec is None else obs_spec
            for suffix in ("_loc", "_var", "_count"):
                name = self.prefix + suffix
                sub = target.get(name, default=None)
                if sub is None:
                    sub = Composite(shape=target.shape, device=target.device)
                for k, s in found.items():
                    sub.set(k, self._count_spec(s) if suffix == "_count" else s.clone())
                target.set(name, sub)
        return spec

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        return self._transform_spec(observation_spec)

    def transform_reward_spec(self, reward_spec: Composite, observation_spec: Optional[Composite] = None) -> Composite:
        return self._transform_spec(reward_spec, observation_spec)

    def transform_output_spec(self, output_spec: Composite) -> Composite:
        # The reward's stateless statistics go in the observation spec (they
        # travel with the observations), hence one pass over both.
        output_spec = output_spec.clone()
        obs = self.transform_observation_spec(output_spec["full_observation_spec"])
        if "full_reward_spec" in output_spec.keys():
            output_spec["full_reward_spec"] = self.transform_reward_spec(output_spec["full_reward_spec"], obs)
        output_spec["full_observation_spec"] = obs
        if "full_done_spec" in output_spec.keys():
            output_spec["full_done_spec"] = self.transform_done_spec(output_spec["full_done_spec"])
        return output_spec

    # ------------------------------------------------------------ state
    def get_extra_state(self) -> OrderedDict:
        """TorchRL's format: ``{"loc.-|-.<key>": ..., "var.-|-.<key>": ..., "count.-|-.<key>": ...}``
        (nested keys joined with ``.-|-.``), as copies of the statistics."""
        if not self.stateful:
            return {}
        if self._loc is None:
            warnings.warn("vecnorm: state_dict() of an uninitialized VecNormV2 has no statistics; loading it "
                          "into an initialized one is an error")
            return {}
        td = TensorDict(loc=self._loc, var=self._var, count=self._count, batch_size=[])
        return td.flatten_keys(self.SEP).clone().to_dict()

    def _check_state(self, td: TensorDictBase) -> None:
        for part in ("loc", "var", "count"):
            if part not in td.keys():
                raise ValueError(f"vecnorm: the state has no '{part}' entries (keys: {list(td.keys(True, True))})")
        want = set(self._in_keys_safe)
        for part in ("loc", "var", "count"):
            sub = td.get(part)
            if not isinstance(sub, TensorDictBase):
                raise ValueError(f"vecnorm: the state's '{part}' is not a table of keys")
            have = set(sub.keys(True, True))
            for k in want - have:
                raise ValueError(f"vecnorm: key '{self._name(k)}': not in the state's {part}")
            for k in have - want:
                raise ValueError(f"vecnorm: key '{key_name(k)}': in the state's {part} but not in in_keys")
        for k in self._in_keys_safe:
            lo, va, co = td.get(("loc",) + _tup(k)), td.get(("var",) + _tup(k)), td.get(("count",) + _tup(k))
            if lo.shape != va.shape:
                raise ValueError(f"vecnorm: key '{self._name(k)}': loc has shape {tuple(lo.shape)} but var "
                                 f"{tuple(va.shape)}")
            if co.numel() != 1:
                raise ValueError(f"vecnorm: key '{self._name(k)}': count must be one value, got shape "
                                 f"{tuple(co.shape)}")
            if not lo.dtype.is_floating_point or co.dtype.is_floating_point or co.dtype == torch.bool:
                raise TypeError(f"vecnorm: key '{self._name(k)}': loc/var must be floating point and count an "
                                f"integer, got {lo.dtype}, {va.dtype}, {co.dtype}")
            if self._loc is not None and self._loc.get(k).shape != lo.shape:
                raise ValueError(f"vecnorm: key '{self._name(k)}': the state's statistics have shape "
                                 f"{tuple(lo.shape)}, this transform's {tuple(self._loc.get(k).shape)}")

    def _adopt(self, td: TensorDictBase, copy: bool) -> None:
        self._check_state(td)
        loc, var, count = {}, {}, {}
        for k in self._in_keys_safe:
            lo, va, co = td.get(("loc",) + _tup(k)), td.get(("var",) + _tup(k)), td.get(("count",) + _tup(k))
            if copy or lo.dtype not in _STATS_CODE or not lo.is_contiguous():
                dt = stats_dtype_for(None, lo.dtype)
                lo = lo.detach().to(dtype=dt, copy=True).contiguous()
                va = va.detach().to(dtype=dt, device=lo.device, copy=True).contiguous()
                co = co.detach().to(dtype=torch.int64, device=lo.device, copy=True).reshape(())
            loc[k], var[k], count[k] = lo, va, co
        self._batch_dims = 0
        self._set_stats(self._to_td(loc), self._to_td(var), self._to_td(count))

    def set_extra_state(self, state) -> None:
        """Loads TorchRL's format (or this class's) by copying the values: into
        the existing statistics when initialized (shapes must match), as new
        ones otherwise. A mismatch raises and changes nothing."""
        if not self.stateful:
            return
        if not state:
            if self._loc is None:
                return
            raise RuntimeError("vecnorm: set_extra_state() got an empty state while the VecNormV2 is initialized")
        td = TensorDict(dict(state), batch_size=[]).unflatten_keys(self.SEP)
        if self._loc is None:
            self._adopt(td, copy=True)
            return
        self._check_state(td)
        with torch.no_grad():
            for k in self._in_keys_safe:
                self._loc.get(k).copy_(td.get(("loc",) + _tup(k)))
                self._var.get(k).copy_(td.get(("var",) + _tup(k)))
                self._count.get(k).copy_(td.get(("count",) + _tup(k)).reshape(()))

    # ------------------------------------------------------------ module plumbing
    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse=recurse)
        if self.stateful and self._loc is not None:
            self._loc = self._loc.apply(fn)
            self._var = self._var.apply(fn)
            device = next(iter(self._loc.values(True, True))).device
            self._count = self._count.to(device)
        return self

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        if state.pop("lock", None) is not None:
            state["lock_placeholder"] = None
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        if "lock_placeholder" in state:
            state.pop("lock_placeholder")
            state["lock"] = mp.Lock()
        super().__setstate__(state)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(in_keys={self._in_keys_safe}, out_keys={self.out_keys}, decay={self.decay}, "
                f"eps={self.eps}, stateful={self.stateful}, reduce_batch_dims={self.reduce_batch_dims}, "
                f"estimator='{self.estimator}', frozen={self.frozen})")


def _stats_list(locs, vars_, counts) -> List[Tensor]:
    """The operators' statistics argument: five tensors per key (loc, var,
    count, skips, skipped); skips/skipped empty (unused: nonfinite='propagate')."""
    out: List[Tensor] = []
    for lo, va, co in zip(locs, vars_, counts):
        none = torch.empty(0, dtype=torch.int64, device=lo.device)
        out += [lo, va, co, none, torch.empty(0, dtype=torch.int64, device=lo.device)]
    return out


def _tup(key: NestedKey) -> Tuple[str, ...]:
    return key if isinstance(key, tuple) else (key,)
