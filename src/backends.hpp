// src/backends.hpp -- the backends' entry points and the one switch over them.
#pragma once

#include <cstdint>

#include "plan.hpp"
#include "vecnorm/core/returns.hpp"
#include "workspace.hpp"

namespace vecnorm::detail {

/// One pass of a reward scaler's step (vecnorm/core/returns.hpp) over rows x
/// feat elements of dtype `dtype` (float32 or float64; state, entered and
/// reward alike): `kept` false: entered = return_entered(state, reward);
/// true: state = return_kept(entered).
struct ReturnPass {
  void* state;
  void* entered;
  const void* reward;         ///< read by the entered pass only
  const std::uint8_t* done;   ///< one byte per row, or null (none done)
  const std::uint8_t* mask;   ///< one byte per row, 0 = inactive (its return holds), or null (all active)
  std::int64_t rows, feat;
  DType dtype;
  double gamma;
  ReturnReset reset;
  bool kept;
  bool hold;  ///< a holding step (ReturnRule::hold)
};

namespace cpu {
/// Runs a plan (src/cpu/isa.cpp picks the build of the loops for this CPU).
void run(const Plan& plan, Scratch& ws);
/// The host scratch run() takes from the workspace for `plan`.
std::size_t scratch_bytes(const Plan& plan);
/// Index of the first non-finite element of x (rows x feat elements of dtype
/// d) in a row `mask` keeps (null: every row), or -1.
std::int64_t first_nonfinite(const void* x, DType d, std::int64_t rows, std::int64_t feat, const std::uint8_t* mask);
void returns(const ReturnPass& pass);
}  // namespace cpu

/// The CUDA backend (src/cuda/cuda_backend.cu). In a build without it, every
/// function but available() and release() throws Error(backend_unavailable).
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
/// Writes the n doubles of a distributed update's host-built message `msg` to
/// device memory `dst`, ordered on `stream`, without a host copy (a memset and
/// a kernel whose parameters carry the nonzero values): no synchronization,
/// capturable in a CUDA graph.
void put_message(double* dst, const double* msg, std::size_t n, Stream stream);
/// Launches a plan on `stream` (no host synchronization, no allocation once
/// the workspace holds scratch_bytes(plan)).
void run(const Plan& plan, Scratch& ws, Stream stream);
/// The device scratch run() takes from the workspace for `plan`.
std::size_t scratch_bytes(const Plan& plan);
/// Index of the first non-finite element of device array x (rows x feat) in
/// a row `mask` keeps (null: every row), or -1 (waits for `stream`).
std::int64_t first_nonfinite(const void* x, DType d, std::int64_t rows, std::int64_t feat, const std::uint8_t* mask,
                             Stream stream, Scratch& ws);
/// A reward scaler's pass on `stream` (one launch, no host synchronization).
void returns(const ReturnPass& pass, Stream stream);
}  // namespace cuda

/// Resolve Backend::automatic (cuda when built and usable, else cpu).
Backend resolve(Backend requested);
/// The device a (resolved) backend reads and writes.
Device backend_device(Backend resolved);

/// Run a validated plan on `backend` (already resolved).
void dispatch(Backend backend, const Plan& plan, Scratch& ws, Stream stream);
/// The scratch dispatch() takes for `plan` on `backend`.
WorkspaceSize scratch_size(Backend backend, const Plan& plan);
/// Index of the first non-finite element of x (rows x feat) on `backend`'s
/// device, in the rows a row `mask` keeps (null: every row), or -1.
std::int64_t first_nonfinite(Backend backend, const void* x, DType d, std::int64_t rows, std::int64_t feat,
                             const std::uint8_t* mask, Stream stream, Scratch& ws);
/// A reward scaler's pass on `backend`'s device.
void returns(Backend backend, const ReturnPass& pass, Stream stream);

}  // namespace vecnorm::detail
