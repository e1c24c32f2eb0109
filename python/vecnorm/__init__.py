"""vecnorm: running normalization of observations and rewards (TorchRL VecNormV2
semantics) as fused CPU/CUDA operators for PyTorch.

    import vecnorm.torch
    norm = vecnorm.torch.VecNorm({"observation": (48,), "reward": ()}, batch_shape=(4096,))
    out = norm({"observation": obs, "reward": rew})   # updates, then normalizes

The operators are ``torch.ops.vecnorm.{step, normalize, denormalize, maps}``
(see docs/python.md); ``vecnorm.torchrl.VecNormV2`` is the TorchRL drop-in.
"""
from __future__ import annotations

import torch as _torch

try:
    # Registers torch.ops.vecnorm.* (a torch extension: built against this torch).
    from . import _C  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"vecnorm: the operator library could not be loaded ({e}). Install the package with "
        "`pip install --no-build-isolation .` from the vecnorm source tree, in the environment whose torch "
        "it will run with (a torch extension is built against one torch)"
    ) from e

from . import _ops  # noqa: E402,F401  (fake implementations: torch.compile)

__version__: str = _torch.ops.vecnorm.build_info().split(" ")[0]


def build_info() -> str:
    """The library version and whether the CUDA operators were built."""
    return _torch.ops.vecnorm.build_info()


__all__ = ["__version__", "build_info"]
