"""The operators' calling convention and their fake (meta) implementations:
shapes and dtypes only, so that torch.compile(fullgraph=True) traces them.

    torch.ops.vecnorm.step(x, y, stats, keys, config, decay, eps, update_only, mask=None) -> ()
    torch.ops.vecnorm.step_alloc(x, stats, keys, config, decay, eps, mask=None) -> list[Tensor]  (eager only)
    torch.ops.vecnorm.step_group(x, y, stats, keys, config, decay, eps, update_only, group, mask=None) -> ()
        (a distributed pooled step over the process group registered as `group`;
        keys: every key of the normalizer, the call's first)
    torch.ops.vecnorm.normalize(x, stats, keys, config, decay, eps) -> list[Tensor]
    torch.ops.vecnorm.denormalize(x, stats, keys, config, decay, eps, key_dtypes) -> list[Tensor]

x and y: one tensor per key; stats: five per key (loc, var, count, skips,
skipped; the last two empty where unused), mutated in place by step;
mask: None, or the step's row mask (bool or uint8, the batch shape): rows
where it is False are left out of the update (per-element statistics: their
elements keep their statistics and counts, in skips);
config: make_config(...). Few arguments, because a dispatcher call from
Python costs per argument (docs/python.md)."""
from __future__ import annotations

import math
import struct
from typing import List

import torch

_INT_TYPES = (torch.int32, torch.int64, torch.uint8)
ESTIMATORS = {"torchrl": 0, "stable": 1}
NONFINITE = {"propagate": 0, "skip": 1, "error": 2}
SCALES = {"clamp": 0, "sqrt_var_plus_eps": 1, "std_plus_eps": 2}
STATS_PER_KEY = 5


def stats_dtype_for(stats_dtype, dtype: torch.dtype) -> torch.dtype:
    """A key's statistics dtype: ``stats_dtype`` where given, else float64 for
    float64 data and float32 for the rest (the library's vecnorm::stats_dtype_for,
    whose rule the operators check: statistics of this dtype are one call)."""
    if stats_dtype is not None:
        return stats_dtype
    return torch.float64 if dtype == torch.float64 else torch.float32


def output_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of a normalized output: floats keep theirs, integers become float32."""
    return torch.float32 if dtype in _INT_TYPES else dtype


def _bits(v: float) -> int:
    """A double as the int64 of its bits (how config carries clip and prior_count)."""
    return struct.unpack("<q", struct.pack("<d", float(v)))[0]


def until_count(until) -> int:
    """Options::until from Python's spelling: None (no bound: 0) or a number of
    samples > 0, which may be a float as rsl_rl's ``until=1.0e8``: a count (an
    integer) reaches it where it reaches its ceiling."""
    if until is None:
        return 0
    u = float(until)
    if not u > 0:
        raise ValueError(f"vecnorm: until: expected None or a number of samples > 0, got {until!r}")
    return min(math.ceil(u), 2**63 - 1) if math.isfinite(u) else 2**63 - 1


def make_config(batch_dims: int, reduce_batch_dims: bool, estimator: str, nonfinite: str,
                per_element_counts: bool, cpu_threads: int, scale: str = "clamp", unbiased: bool = False,
                clip: float = math.inf, prior_count: float = 0.0, until: int = 0,
                center: bool = True, max_scale: float = math.inf, until_strict: bool = False) -> List[int]:
    """The operators' int[] config (src/torch/call.hpp, ConfigField); the values
    themselves are checked by the library (Options::validate)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"vecnorm: estimator: expected 'torchrl' or 'stable', got '{estimator}'")
    if nonfinite not in NONFINITE:
        raise ValueError(f"vecnorm: nonfinite: expected 'propagate', 'skip' or 'error', got '{nonfinite}'")
    if scale not in SCALES:
        raise ValueError(f"vecnorm: scale: expected 'clamp', 'sqrt_var_plus_eps' or 'std_plus_eps', got '{scale}'")
    return [int(batch_dims), int(bool(reduce_batch_dims)), ESTIMATORS[estimator], NONFINITE[nonfinite],
            int(bool(per_element_counts)), int(cpu_threads), SCALES[scale], int(bool(unbiased)), _bits(clip),
            _bits(prior_count), int(until), int(bool(center)), _bits(max_scale), int(bool(until_strict))]


@torch.library.register_fake("vecnorm::step")
def _step_fake(x, y, stats, keys, config, decay, eps, update_only, mask=None):
    return None  # writes y and the statistics in place


@torch.library.register_fake("vecnorm::step_group")
def _step_group_fake(x, y, stats, keys, config, decay, eps, update_only, group, mask=None):
    return None  # writes y and the statistics in place (after the ranks' all-gather)


def group_name(process_group) -> "str | None":
    """The registered name of a torch.distributed process group (None: none),
    by which the operator finds it (as torch's functional collectives do)."""
    if process_group is None:
        return None
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("vecnorm: process_group: torch.distributed is not initialized "
                         "(call torch.distributed.init_process_group first)")
    if process_group is dist.group.WORLD or process_group == "world":
        process_group = dist.distributed_c10d._get_default_group()
    if not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(f"vecnorm: process_group: expected a torch.distributed ProcessGroup, "
                        f"got {type(process_group).__name__}")
    name = getattr(process_group, "group_name", None)
    if not name:
        name = dist.distributed_c10d._get_process_group_name(process_group)
    return str(name)


@torch.library.register_fake("vecnorm::reward_step")
def _reward_step_fake(reward, y, returns, entered, stats, key, config, decay, eps, gamma, reset, update, done=None,
                      mask=None, group=None, hold_frozen=False):
    return None  # writes y, the returns, the entered returns and the statistics in place


@torch.library.register_fake("vecnorm::normalize")
def _normalize_fake(x, stats, keys, config, decay, eps):
    return [torch.empty_like(t, dtype=output_dtype(t.dtype)) for t in x]


@torch.library.register_fake("vecnorm::denormalize")
def _denormalize_fake(x, stats, keys, config, decay, eps, key_dtypes):
    return [torch.empty_like(t) for t in x]
