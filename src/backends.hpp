// src/backends.hpp -- the backends' entry points and the one switch over them.
#pragma once

#include "plan.hpp"

namespace vecnorm::detail {

namespace cpu {
void run(const Plan& plan, Workspace& ws);
void run(const AffinePlan& plan);
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
}  // namespace cuda

/// Resolve Backend::automatic (cuda when built and usable, else cpu).
Backend resolve(Backend requested);

/// Run a validated plan on `backend` (already resolved).
void dispatch(Backend backend, const Plan& plan, Workspace& ws, Stream stream);
void dispatch(Backend backend, const AffinePlan& plan, Stream stream);

}  // namespace vecnorm::detail
