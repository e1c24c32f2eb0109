// kernels/policy.hpp -- the tuning constants of the CUDA kernels, in one place.
//
// Plain constants (host and device): the launch code (src/cuda) sizes grids
// and scratch from them, the kernels tile their loops with them. None of them
// has been tuned on a GPU yet (no device on the machines this is built on):
// they are chosen from first principles (docs/kernels.md), and
// scripts/gpu-check.sh is where measured figures will come from.
#pragma once

namespace vecnorm::kernels {

/// Most keys one launch handles (the segment table is a kernel parameter; a
/// call with more keys is split into launches).
constexpr int kMaxSegments = 16;
/// Threads per block of every kernel.
constexpr int kThreads = 256;
/// Elements per thread of the streaming (per-element and affine) kernels.
constexpr int kItems = 4;
/// Pooled statistics: rows one thread accumulates in the compute type before its
/// partial sums are merged in double (bounds the float rounding, as the CPU tiles do).
constexpr int kRowsPerThread = 32;
/// Bytes at the start of the device scratch: the last-block ticket, the
/// non-finite scan's result (the rest of the 256 is unused padding).
constexpr int kScratchHead = 256;

}  // namespace vecnorm::kernels
