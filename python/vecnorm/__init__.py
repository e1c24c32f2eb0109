"""vecnorm: running normalization of observations and rewards (TorchRL VecNormV2
semantics) as fused CPU/CUDA operators for PyTorch.

    import vecnorm.torch
    norm = vecnorm.torch.VecNorm({"observation": (48,), "reward": ()}, batch_shape=(4096,))
    out = norm({"observation": obs, "reward": rew})   # updates, then normalizes

The operators are ``torch.ops.vecnorm.{step, normalize, denormalize, maps}``
(see docs/python.md); ``vecnorm.torchrl.VecNormV2`` is the TorchRL drop-in.
"""
from __future__ import annotations

import importlib.util as _util
import os as _os

import torch as _torch

# The operators' shared library (no Python module init: torch loads it). Found
# through the import system, so that editable installs (pip install -e) work.
_spec = _util.find_spec("vecnorm._C")
_lib = _spec.origin if _spec is not None and _spec.origin else _os.path.join(_os.path.dirname(__file__), "_C.so")
if not _os.path.exists(_lib):
    raise ImportError(
        f"vecnorm: the operator library {_lib} is missing: install the package with "
        "`pip install --no-build-isolation .` from the vecnorm source tree (in an environment with torch)"
    )
_torch.ops.load_library(_lib)

from . import _ops  # noqa: E402,F401  (fake implementations: torch.compile)

__version__: str = _torch.ops.vecnorm.build_info().split(" ")[0]


def build_info() -> str:
    """The library version and whether the CUDA operators were built."""
    return _torch.ops.vecnorm.build_info()


__all__ = ["__version__", "build_info"]
