// kernels/returns.cuh -- a reward scaler's passes over the per-environment
// discounted returns: the core's formulas (vecnorm/core/returns.hpp), one
// element per thread item.
#pragma once

#include "common.cuh"

namespace vecnorm::kernels {

template <class T>
__device__ __forceinline__ void returns_items(const ReturnPlan& p) {
  T* state = static_cast<T*>(p.state);
  T* entered = static_cast<T*>(p.entered);
  const T* r = static_cast<const T*>(p.reward);
  const core::ReturnRule<T> rule{static_cast<T>(p.gamma), p.reset, p.hold != 0};
  const std::int64_t n = p.rows * p.feat;
  const std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * (kThreads * kItems) + threadIdx.x;
#pragma unroll
  for (int it = 0; it < kItems; ++it) {
    const std::int64_t i = base + static_cast<std::int64_t>(it) * kThreads;
    if (i >= n) break;
    const bool done = core::return_done(p.done, i, p.feat, rule);
    const bool active = core::return_active(p.mask, i, p.feat);
    if (p.kept)
      state[i] = core::return_kept(state[i], entered[i], done, active, rule);
    else
      entered[i] = core::return_entered(state[i], r[i], done, active, rule);
  }
}

__global__ void __launch_bounds__(kThreads) returns_kernel(const __grid_constant__ ReturnPlan p) {
  if (p.wide)
    returns_items<double>(p);
  else
    returns_items<float>(p);
}

}  // namespace vecnorm::kernels
