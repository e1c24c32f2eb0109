"""``vecnorm.rl_games.RunningMeanStd``: a drop-in for rl_games'
``rl_games.algos_torch.running_mean_std.RunningMeanStd`` (rl-games 1.6) with
vecnorm's update.

Same constructor ``(insize, epsilon=1e-05, per_channel=False, norm_only=False)``,
the same buffers and state_dict keys (``running_mean``, ``running_var`` of
shape ``insize``, ``count`` a float64 scalar starting at 1, all float64), so
that a checkpoint of either loads into the other; the same
``forward(input, denorm=False, mask=None)``: in training mode the batch is
merged into the statistics first (Chan's merge from the initial mean 0, var 1,
count 1), then ``(input - mean) / sqrt(var + epsilon)`` clamped to [-5, 5]
(``norm_only``: ``input / sqrt(var + epsilon)``, unclamped; ``denorm``: the
inverse of the clamped input), with rl_games' own formula over the buffers.

The update is vecnorm's pooled cumulative update (estimator ``stable``): the
count carries rl_games' initial 1 as one sample of mean 0 and variance 1, so
that the merge is rl_games' exactly, in one pass with double accumulation
(rl_games takes a float32 batch's moments in float32). Not supported (a
NotImplementedError says so): ``per_channel`` (rl_games counts a batch of
images as its number of images while averaging over their pixels) and
``mask`` (masked updates: issue 18)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ._dropin import Updater, feature_shape

__all__ = ["RunningMeanStd"]


class RunningMeanStd(nn.Module):
    """Tracks the running mean and variance of its inputs (rl_games'
    RunningMeanStd, vecnorm's update)."""

    __jit_ignored_attributes__ = ["_updater"]

    def __init__(self, insize, epsilon: float = 1e-05, per_channel: bool = False, norm_only: bool = False):
        super().__init__()
        if per_channel:
            raise NotImplementedError(
                "vecnorm.rl_games.RunningMeanStd: per_channel=True is not supported (rl_games counts a batch of "
                "images as its number of images while it averages over their pixels); use rl_games' own class")
        self.insize = insize
        self.epsilon = epsilon
        self.norm_only = norm_only
        self.per_channel = per_channel
        shape = feature_shape(insize)
        self.register_buffer("running_mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("running_var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.ones((), dtype=torch.float64))
        self._updater = Updater(shape)

    @torch.jit.unused
    def _update(self, x: Tensor) -> None:
        # rl_games' count is an integer (1 + the rows seen) kept as a float64:
        # vecnorm's update takes it as an int64 and gives it back.
        count = self.count.to(torch.int64)
        self._updater.update(x, self.running_mean, self.running_var, count)
        self.count.copy_(count)

    def forward(self, input: Tensor, denorm: bool = False, mask: Optional[Tensor] = None) -> Tensor:
        if self.training:
            if mask is not None:
                raise NotImplementedError("vecnorm.rl_games.RunningMeanStd: masked updates are not supported yet")
            self._update(input)
        mean, var = self.running_mean.float(), self.running_var.float()
        if denorm:
            y = torch.clamp(input, min=-5.0, max=5.0)
            return torch.sqrt(var + self.epsilon) * y + mean
        if self.norm_only:
            return input / torch.sqrt(var + self.epsilon)
        y = (input - mean) / torch.sqrt(var + self.epsilon)
        return torch.clamp(y, min=-5.0, max=5.0)
