// kernels/vecnorm_kernels.cuh -- the CUDA kernels of vecnorm (device code only).
//
// Compiled by nvcc for the GPU (src/cuda/cuda_backend.cu) and, unchanged, by the
// host compiler under the project's SIMT emulator (tests/simt) for the tests.
// No <<<>>> here: launches are in the host side. Every formula is a call into
// the numeric core (vecnorm/core), the same functions the CPU backend calls.
//
// Kernels (docs/kernels.md), one file per family:
//   elementwise.cuh  elementwise_kernel: per-element statistics, all keys of a step in one launch
//   pooled.cuh       pooled_stats_kernel: per-block partial moments; the last block to finish
//                    merges them in a fixed order and updates loc/var/count
//   maps.cuh         params_kernel: the maps of stored statistics (pooled normalize-only,
//                    denormalize); affine_kernel: y = (x - mu) * r (or its inverse)
//   scan.cuh         nonfinite_scan_kernel: NonFinite::error's first non-finite input
//   returns.cuh      returns_kernel: a reward scaler's discounted returns (two passes a step)
// Shared by them: common.cuh (segment lookup, dtype visit, last-block handshake),
// device_plan.hpp (the segment table), policy.hpp (the tuning constants).
#pragma once

#include "elementwise.cuh"
#include "maps.cuh"
#include "pooled.cuh"
#include "returns.cuh"
#include "scan.cuh"
