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
(rl_games takes a float32 batch's moments in float32).

``mask`` (training): rl_games' masked update, quirks included
(``torch_ext.get_mean_var_with_masks``): one mean and one unbiased variance
over every element of ``input * mask`` (the mask broadcast as torch
broadcasts it; the sums divided by ``mask.sum()``), the same for every
feature, merged as a batch of ``input.size(0)`` rows, kept or not. The moments
are taken in float64 (rl_games: in the input's dtype) and merged by vecnorm's
update as that batch: two rows of int32 weights w1 + w2 = rows with those
moments. Fewer than two kept elements give rl_games a variance of 0/0 or x/0
(NaN or inf) while its mean stays finite; the drop-in's statistics are then
NaN, its mean too. A batch of one row is refused (ValueError): vecnorm merges
the moments as a batch of whole rows, two at the least. A mask of fewer dims than the input (a row mask over several
features: their sums over the kept rows) can make rl_games' variance
negative; the drop-in takes a negative one as 0. Not supported (a NotImplementedError says so): ``per_channel``
(rl_games counts a batch of images as its number of images while averaging
over their pixels)."""
from __future__ import annotations

import math
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

    @torch.jit.unused
    def _update_masked(self, x: Tensor, mask: Tensor) -> None:
        # rl_games' masked moments, its formula in float64: sums over every
        # element of x * mask, divided by mask.sum(); E[v^2] - E[v]^2, unbiased.
        rows = int(x.size(0))
        if rows < 2:
            raise ValueError(f"vecnorm.rl_games.RunningMeanStd: a masked update of {rows} row(s): the drop-in merges "
                             "rl_games' masked moments as a batch of at least 2 rows (rl_games' own class takes one)")
        xd, md = x.to(torch.float64), mask.to(device=x.device, dtype=torch.float64)
        kept = md.sum()
        xm = xd * md
        mean = xm.sum() / kept
        var = (((xm ** 2) / kept).sum() - ((xm / kept).sum()) ** 2) * kept / (kept - 1)
        # A batch of `rows` samples of that mean and variance, as vecnorm's
        # merge reads a batch (its count, mean and variance): two rows of
        # weights w1 + w2 = rows at mean - std sqrt(w2 / w1), mean + std sqrt(w1 / w2).
        w1 = rows // 2
        w2 = rows - w1
        std = var.clamp_min(0.0).sqrt() + var * 0.0  # (a NaN variance stays NaN)
        pair = torch.stack([mean - std * math.sqrt(w2 / w1), mean + std * math.sqrt(w1 / w2)])
        shape = tuple(self.running_mean.shape)
        pseudo = pair.reshape((2,) + (1,) * len(shape)).expand((2,) + shape)
        weights = torch.empty(2, dtype=torch.int32, device=x.device)  # (filled on the device: no copy from the host)
        weights[0], weights[1] = w1, w2
        count = self.count.to(torch.int64)
        self._updater.update(pseudo, self.running_mean, self.running_var, count, weights=weights)
        self.count.copy_(count)

    def forward(self, input: Tensor, denorm: bool = False, mask: Optional[Tensor] = None) -> Tensor:
        if self.training:
            if mask is not None:
                self._update_masked(input, mask)
            else:
                self._update(input)
        mean, var = self.running_mean.float(), self.running_var.float()
        if denorm:
            y = torch.clamp(input, min=-5.0, max=5.0)
            return torch.sqrt(var + self.epsilon) * y + mean
        if self.norm_only:
            return input / torch.sqrt(var + self.epsilon)
        y = (input - mean) / torch.sqrt(var + self.epsilon)
        return torch.clamp(y, min=-5.0, max=5.0)
