"""Fake (meta) implementations of vecnorm's operators: shapes and dtypes only,
so that torch.compile(fullgraph=True) traces through them."""
from __future__ import annotations

import torch

_INT_TYPES = (torch.int32, torch.int64, torch.uint8)


def output_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of a normalized output: floats keep theirs, integers become float32."""
    return torch.float32 if dtype in _INT_TYPES else dtype


@torch.library.register_fake("vecnorm::step")
def _step_fake(x, y, loc, var, count, skips, skipped, keys, batch_dims, reduce_batch_dims, decay, eps, estimator,
               nonfinite, per_element_counts, update_only, cpu_threads):
    return None  # writes y and the statistics in place


@torch.library.register_fake("vecnorm::normalize")
def _normalize_fake(x, loc, var, count, skips, skipped, keys, batch_dims, reduce_batch_dims, decay, eps, estimator,
                    per_element_counts, cpu_threads):
    return [torch.empty_like(t, dtype=output_dtype(t.dtype)) for t in x]


@torch.library.register_fake("vecnorm::denormalize")
def _denormalize_fake(x, loc, var, count, skips, skipped, keys, batch_dims, reduce_batch_dims, decay, eps, estimator,
                      key_dtypes, cpu_threads):
    return [torch.empty_like(t) for t in x]
