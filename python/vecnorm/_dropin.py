"""What the drop-in classes (vecnorm.rsl_rl, vecnorm.rl_games, vecnorm.sb3)
share: a one-key pooled ``VecNorm`` (cumulative, estimator ``stable``) whose
statistics are tensors the drop-in owns, in its original's layout.

The drop-in keeps its original's buffers (names, shapes, dtypes, so that its
state_dict is the original's); every update rebinds the VecNorm's buffers to
views of them (a few dict assignments), so that ``.to()``, ``load_state_dict``,
``copy.deepcopy`` and buffer reassignment need no bookkeeping. The update is
vecnorm's (Chan's merge in one fused pass, double accumulation, the exact
merge across ranks); the normalization of a drop-in is its original's own
formula over its buffers (an affine map torch fuses and TorchScript/ONNX
export), so that it also holds before the first update, where the originals
normalize with their initial statistics.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._ops import until_count
from .torch import VecNorm

KEY = "x"


def feature_shape(shape) -> Tuple[int, ...]:
    """An int or a sequence of ints as a shape tuple."""
    if isinstance(shape, int):
        return (shape,)
    return tuple(int(d) for d in shape)


def _world_group():
    """The default process group when torch.distributed is initialized (None: not)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.group.WORLD
    return None


class Updater:
    """A pooled, cumulative, stable-estimator VecNorm of one key of feature
    shape `shape`, updated into the statistics tensors given at each call.
    With `all_ranks`, an update while torch.distributed is initialized merges
    the batches of every rank of the default group (as rsl_rl does)."""

    def __init__(self, shape: Sequence[int], *, prior_count: float = 0.0, unbiased: bool = False,
                 all_ranks: bool = False):
        self.shape = feature_shape(shape)
        self.prior_count = float(prior_count)
        self.unbiased = bool(unbiased)
        self.all_ranks = all_ranks
        self._local: Optional[VecNorm] = None
        self._grouped: Optional[VecNorm] = None

    def _make(self, group, until: int) -> VecNorm:
        return VecNorm({KEY: self.shape}, reduce_batch_dims=True, estimator="stable", decay=1.0,
                       nonfinite="propagate", prior_count=self.prior_count, unbiased=self.unbiased,
                       until=until or None, process_group=group)

    def __getstate__(self):
        # The VecNorms are rebuilt on first use (a process group does not pickle).
        state = self.__dict__.copy()
        state["_local"] = state["_grouped"] = None
        return state

    def update(self, x: Tensor, loc: Tensor, var: Tensor, count: Tensor, until=None,
               weights: Optional[Tensor] = None) -> None:
        """Merges the rows of x (batch dims first, then the feature shape) into
        (loc, var, count): the mean, the population variance and the int64
        number of samples, updated in place; while count < until (None: no
        bound), decided where the count lives (no host synchronization).
        ``weights``: int32 row weights (a row of weight w counts w times)."""
        group = _world_group() if self.all_ranks else None
        u = until_count(until)
        if group is not None:
            if self._grouped is None or self._grouped.until != u:
                self._grouped = self._make(group, u)
            vn = self._grouped
        else:
            if self._local is None or self._local.until != u:
                self._local = self._make(None, u)
            vn = self._local
        b = vn._buffers
        b[f"{KEY}_loc"], b[f"{KEY}_var"], b[f"{KEY}_count"] = loc, var, count
        vn.update({KEY: x}, mask=weights)
