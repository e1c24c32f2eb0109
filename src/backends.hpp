// src/backends.hpp -- the backends' entry points and the one switch over them.
#pragma once

#include "plan.hpp"

namespace vecnorm::detail {

namespace cpu {
void run(const Plan& plan, Workspace& ws);
void run(const AffinePlan& plan);
/// Index of the first non-finite element of x (n elements of dtype d), or -1.
std::int64_t first_nonfinite(const void* x, DType d, std::int64_t n, int threads);
}  // namespace cpu

/// The CUDA backend (src/cuda/cuda_backend.cu). In a build without it, every
/// function but available() throws Error(backend_unavailable).
namespace cuda {
bool available() noexcept;       ///< built, and a device is usable (any runtime error: no)
int current_device();
void* alloc(std::size_t bytes);  ///< device memory, Error(cuda_error) on failure
void release(void* p) noexcept;
/// Copies between any two of host and device memory, ordered on `stream`;
/// `wait` makes the host wait for it.
void copy(void* dst, const void* src, std::size_t bytes, Stream stream, bool wait);
void zero(void* dst, std::size_t bytes, Stream stream);
void synchronize(Stream stream);
void run(const Plan& plan, Workspace& ws, Stream stream);
void run(const AffinePlan& plan, Stream stream);
/// Index of the first non-finite element of device array x, or -1 (waits for `stream`).
std::int64_t first_nonfinite(const void* x, DType d, std::int64_t n, Stream stream, Workspace& ws);
}  // namespace cuda

/// Resolve Backend::automatic (cuda when built and usable, else cpu).
Backend resolve(Backend requested);

/// Run a validated plan on `backend` (already resolved).
void dispatch(Backend backend, const Plan& plan, Workspace& ws, Stream stream);
void dispatch(Backend backend, const AffinePlan& plan, Stream stream);

/// NonFinite::error: before an update touches anything, scan the input of every
/// segment; the first non-finite value throws Error(nonfinite_input) naming the
/// key and the element's index (batch and feature). Float inputs only. On the
/// CUDA backend the scan waits for `stream`.
void require_finite(Backend backend, const KeyTable& table, std::span<const Segment> segments, int threads,
                    Workspace& ws, Stream stream);

}  // namespace vecnorm::detail
