"""``vecnorm.rsl_rl.EmpiricalNormalization``: a drop-in for rsl_rl's
``rsl_rl.modules.EmpiricalNormalization`` (rsl-rl-lib 5.x) with vecnorm's update.

Same constructor ``(shape, eps=1e-2, until=None)``, the same buffers and
state_dict keys (``_mean``, ``_var``, ``_std`` of shape ``(1, *shape)``,
``count`` int64), so that a checkpoint of either loads into the other; the
same behaviour: ``forward`` normalizes only, ``(x - mean) / (std + eps)``
(scriptable: rsl_rl's exporters script or trace it); ``update`` merges a
batch into the statistics in training mode until ``count >= until`` (decided
where the count lives: no host synchronization, where rsl_rl reads the count
on the host) and, where torch.distributed is initialized, over every rank of
the default group;
``inverse`` maps back; ``mean`` and ``std`` are copies.

The update is vecnorm's pooled cumulative update (estimator ``stable``, Chan's
merge in one pass with double accumulation; across ranks, the exact merge of
all ranks' batches where rsl_rl all-reduces sums): equal to rsl_rl's within
its float32 rounding (tests/python/test_dropins.py)."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ._dropin import Updater, feature_shape

__all__ = ["EmpiricalNormalization"]


class EmpiricalNormalization(nn.Module):
    """Normalizes by the empirical mean and standard deviation of the values
    seen in training (rsl_rl's EmpiricalNormalization, vecnorm's update)."""

    __jit_ignored_attributes__ = ["_updater"]

    def __init__(self, shape: Union[int, Sequence[int]], eps: float = 1e-2, until: Optional[int] = None) -> None:
        super().__init__()
        shape = feature_shape(shape)
        self.eps = eps
        self.until = until
        self.register_buffer("_mean", torch.zeros(shape).unsqueeze(0))
        self.register_buffer("_var", torch.ones(shape).unsqueeze(0))
        self.register_buffer("_std", torch.ones(shape).unsqueeze(0))
        self.register_buffer("count", torch.tensor(0, dtype=torch.long))
        self._updater = Updater(shape, all_ranks=True)

    @property
    def mean(self) -> Tensor:
        """The running mean (a copy)."""
        return self._mean.squeeze(0).clone()

    @property
    def std(self) -> Tensor:
        """The running standard deviation (a copy)."""
        return self._std.squeeze(0).clone()

    def forward(self, x: Tensor) -> Tensor:
        """Normalizes x (no update)."""
        return (x - self._mean) / (self._std + self.eps)

    @torch.jit.unused
    def update(self, x: Tensor) -> None:
        """Merges the batch x (rows first) into the statistics, in training
        mode and while fewer than ``until`` samples were seen."""
        if not self.training or (self.until is not None and self.until <= 0):
            return  # (a bound of 0 or less: rsl_rl never updates)
        self._updater.update(x, self._mean[0], self._var[0], self.count, self.until)
        torch.sqrt(self._var, out=self._std)

    @torch.jit.unused
    def inverse(self, y: Tensor) -> Tensor:
        """Maps normalized values back."""
        return y * (self._std + self.eps) + self._mean
