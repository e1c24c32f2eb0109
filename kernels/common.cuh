// kernels/common.cuh -- what the kernels of vecnorm share: finding a block's
// segment, the input dtype visit, counters other blocks add to, and the
// "last block merges" handshake. Device code only; see vecnorm_kernels.cuh.
#pragma once

#include <cstdint>

#include "device_plan.hpp"
#include "vecnorm/core/numerics.hpp"

#if !defined(__grid_constant__) && !defined(__CUDACC__)
#define __grid_constant__
#endif

namespace vecnorm::kernels {

using core::bf16_t;
using core::half_t;

/// The segment that owns grid block `block` (segments are few: a linear scan).
__device__ __forceinline__ int find_segment(const LaunchPlan& p, std::int64_t block) {
  int s = 0;
  while (s + 1 < p.nseg && p.seg[s + 1].block_begin <= block) ++s;
  return s;
}

/// Calls f(X{}) with X the storage type of XType t (uniform within a block).
template <class F>
__device__ __forceinline__ void visit_x(std::uint8_t t, F&& f) {
  switch (t) {
    case x_f32: f(float{}); break;
    case x_f64: f(double{}); break;
    case x_f16: f(half_t{}); break;
    case x_bf16: f(bf16_t{}); break;
    case x_i32: f(std::int32_t{}); break;
    case x_i64: f(std::int64_t{}); break;
    default: f(std::uint8_t{}); break;
  }
}

/// One input value as a double, for the dtype of a segment (a runtime switch:
/// for the rare paths not worth an instantiation per dtype).
__device__ __forceinline__ double load_as_double(const void* x, std::uint8_t t, std::int64_t i) {
  switch (t) {
    case x_f32: return core::load<double>(static_cast<const float*>(x) + i);
    case x_f64: return core::load<double>(static_cast<const double*>(x) + i);
    case x_f16: return core::load<double>(static_cast<const half_t*>(x) + i);
    case x_bf16: return core::load<double>(static_cast<const bf16_t*>(x) + i);
    case x_i32: return core::load<double>(static_cast<const std::int32_t*>(x) + i);
    case x_i64: return core::load<double>(static_cast<const std::int64_t*>(x) + i);
    default: return core::load<double>(static_cast<const std::uint8_t*>(x) + i);
  }
}

__device__ __forceinline__ core::Decay decay_of(const LaunchPlan& p) {
  return p.decay;
}

/// A relaxed read of a counter other blocks of the launch may be adding to.
__device__ __forceinline__ std::int64_t read_counter(std::int64_t* c) {
  return static_cast<std::int64_t>(atomicAdd(reinterpret_cast<unsigned long long*>(c), 0ull));
}

/// Adds v to a health counter.
__device__ __forceinline__ void add_counter(std::int64_t* c, std::int64_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(c), static_cast<unsigned long long>(v));
}

/// Stores a map (mu, p) of element f in the segment's map arrays, of its
/// compute type (s.wide: double, else float).
template <class T>
__device__ __forceinline__ void store_map(const DevSegment& s, std::int64_t f, const core::Map<T>& m) {
  if (s.wide) {
    static_cast<double*>(s.mu)[f] = static_cast<double>(m.mu);
    static_cast<double*>(s.p)[f] = static_cast<double>(m.p);
  } else {
    static_cast<float*>(s.mu)[f] = static_cast<float>(m.mu);
    static_cast<float*>(s.p)[f] = static_cast<float>(m.p);
  }
}

/// The "last block merges" handshake: every block calls this once at its end
/// (all threads); it returns true in the one block that finished last, after
/// which every other block's global writes are visible to it. The ticket is
/// reset for the next launch.
__device__ __forceinline__ bool last_block_done(std::uint32_t* ticket) {
  __shared__ int is_last;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    const std::uint32_t t = atomicAdd(ticket, 1u);
    is_last = (t == gridDim.x - 1) ? 1 : 0;
    if (is_last) *ticket = 0u;
  }
  __syncthreads();
  if (is_last) __threadfence();
  return is_last != 0;
}

}  // namespace vecnorm::kernels
