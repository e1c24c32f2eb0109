"""``vecnorm.sb3.RunningMeanStd``: a drop-in for Stable-Baselines3's
``stable_baselines3.common.running_mean_std.RunningMeanStd`` with vecnorm's
update, for ``VecNormalize``'s ``obs_rms`` and ``ret_rms``.

Same constructor ``(epsilon=1e-4, shape=())``; ``update(arr)`` merges a batch
(rows first: a numpy array or a CPU tensor); ``mean``, ``var`` (float64 numpy
arrays) and ``count`` (a float: ``epsilon`` + the rows seen) read and assign as
SB3's attributes do; ``copy()``; it pickles (VecNormalize saves itself with
pickle). SB3's statistics start as ``epsilon`` samples of mean 0 and
variance 1: vecnorm's prior (``prior_count``), so that the merge is SB3's
exactly, in one pass with double accumulation (SB3 takes a float32 batch's
moments in float32). The count must stay ``epsilon`` plus a whole number of
rows (assign ``count`` before ``mean`` and ``var``), so ``combine`` and
``update_from_moments`` (merging moments rather than data; the count of a
combination carries two epsilons) raise NotImplementedError."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from ._dropin import Updater, feature_shape

try:  # SB3's VecNormalize asserts isinstance(obs_rms, RunningMeanStd): be one.
    from stable_baselines3.common.running_mean_std import RunningMeanStd as _Base
except ImportError:  # pragma: no cover - SB3 is optional
    _Base = object

__all__ = ["RunningMeanStd"]


class RunningMeanStd(_Base):
    """The running mean and variance of a data stream (SB3's RunningMeanStd,
    vecnorm's update). A subclass of SB3's where SB3 is installed, so that
    VecNormalize takes it; SB3's ``__init__`` is not called (its attributes
    are this class's properties)."""

    def __init__(self, epsilon: float = 1e-4, shape: Tuple[int, ...] = ()):
        self._epsilon = float(epsilon)
        self._shape = feature_shape(shape)
        # vecnorm's statistics: at count 0 zeros (the prior's mean 0 and
        # variance 1 enter with the first update, docs/numerics.md).
        self._loc = torch.zeros(self._shape, dtype=torch.float64)
        self._var = torch.zeros(self._shape, dtype=torch.float64)
        self._count = torch.zeros((), dtype=torch.int64)
        self._updater = Updater(self._shape, prior_count=self._epsilon)

    def update(self, arr) -> None:
        """Merges the rows of arr (shape (rows, *shape)) into the statistics."""
        x = torch.as_tensor(arr)
        if x.device.type != "cpu":
            raise ValueError(f"vecnorm.sb3.RunningMeanStd: expected data on the CPU, got {x.device}")
        self._updater.update(x.contiguous(), self._loc, self._var, self._count)

    @property
    def mean(self) -> np.ndarray:
        if int(self._count) == 0:
            return np.zeros(self._shape, np.float64)
        return self._loc.numpy().copy()

    @mean.setter
    def mean(self, value) -> None:
        self._set(value, None, None)

    @property
    def var(self) -> np.ndarray:
        if int(self._count) == 0:
            return np.ones(self._shape, np.float64)
        return self._var.numpy().copy()

    @var.setter
    def var(self, value) -> None:
        self._set(None, value, None)

    @property
    def count(self) -> float:
        return int(self._count) + self._epsilon

    @count.setter
    def count(self, value: float) -> None:
        self._set(None, None, value)

    def _set(self, mean, var, count) -> None:
        """Assigns the statistics (SB3's attributes), keeping the others."""
        n = int(self._count)
        if count is not None:
            rows = float(count) - self._epsilon
            n = int(round(rows))
            if n < 0 or abs(rows - n) > 1e-9 * max(1.0, abs(rows)):
                raise ValueError(f"vecnorm.sb3.RunningMeanStd: count: expected epsilon ({self._epsilon}) plus a "
                                 f"whole number of rows, got {count}")
        new_mean = self.mean if mean is None else np.broadcast_to(np.asarray(mean, np.float64), self._shape)
        new_var = self.var if var is None else np.broadcast_to(np.asarray(var, np.float64), self._shape)
        if n == 0:
            if np.any(new_mean != 0) or np.any(new_var != 1):
                raise ValueError("vecnorm.sb3.RunningMeanStd: with no rows seen (count == epsilon) the statistics "
                                 "are the prior's, mean 0 and var 1: assign count before mean and var")
            self._loc.zero_(), self._var.zero_()
        else:
            self._loc.copy_(torch.from_numpy(np.array(new_mean)))
            self._var.copy_(torch.from_numpy(np.array(new_var)))
        self._count.fill_(n)

    def update_from_moments(self, batch_mean, batch_var, batch_count) -> None:
        raise NotImplementedError("vecnorm.sb3.RunningMeanStd: update_from_moments is not supported: vecnorm "
                                  "merges data (update(arr)), and its count is epsilon plus whole rows")

    def combine(self, other) -> None:
        raise NotImplementedError("vecnorm.sb3.RunningMeanStd: combine is not supported (the combined count would "
                                  "carry two epsilons); merge the data with update(arr)")

    def copy(self) -> "RunningMeanStd":
        new = RunningMeanStd(epsilon=self._epsilon, shape=self._shape)
        new._loc.copy_(self._loc), new._var.copy_(self._var), new._count.copy_(self._count)
        return new
