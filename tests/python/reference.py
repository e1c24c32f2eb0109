"""A naive float64 reference of ../shared/spec/semantics.md (numpy), written
from the spec's formulas, independent of the library: what the Python tests
compare vecnorm's operators with."""
from __future__ import annotations

import numpy as np


class Reference:
    """One key's statistics, stateful, in float64."""

    def __init__(self, stats_shape, decay: float, eps: float, estimator: str = "torchrl", pooled: bool = False):
        self.d = float(decay)
        self.eps = float(eps)
        self.est = estimator
        self.pooled = pooled
        self.loc = np.zeros(stats_shape)
        self.var = np.zeros(stats_shape)
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        d = self.d
        if self.pooled:
            rows = x.reshape(-1, *self.loc.shape) if self.loc.ndim else x.reshape(-1)
            m = rows.shape[0]
        else:
            rows = x[None]
            m = 1
        n = self.count
        self.count = n + m
        if self.est == "torchrl":
            w = 1.0 - d**m if d < 1 else m / self.count
            self.loc = self.loc + w * (rows.mean(0) - self.loc)
            self.var = self.var + w * ((rows * rows).mean(0) - self.var)
        else:  # stable: exact weighted mean and variance
            a = (1.0 - d**m) / (1.0 - d ** (n + m)) if d < 1 else m / (n + m)
            xb = rows.mean(0)
            s2 = ((rows - xb) ** 2).mean(0)
            delta = xb - self.loc
            self.loc = self.loc + a * delta
            self.var = (1.0 - a) * (self.var + a * delta * delta) + a * s2

    def maps(self):
        """(mu, scale) that a normalize uses."""
        d = self.d
        if self.est == "torchrl":
            bc = 1.0 - d**self.count if d < 1 else 1.0
            mu = self.loc / bc
            v = (self.var - self.loc * self.loc) / bc
        else:
            mu, v = self.loc, self.var
        return mu, np.maximum(np.sqrt(np.maximum(v, 0.0)), self.eps)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        mu, scale = self.maps()
        return (np.asarray(x, dtype=np.float64) - mu) / scale
