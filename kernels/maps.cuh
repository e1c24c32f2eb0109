// kernels/maps.cuh -- affine maps: the maps of stored statistics
// (params_kernel: pooled normalize-only and denormalize, through
// core::stats_maps, the function the host read-outs run) and their
// application (affine_kernel: pooled normalize, denormalize, AffineNormalizer).
#pragma once

#include "common.cuh"

namespace vecnorm::kernels {

/// The map of every statistics element of every segment (mu and 1/scale, or
/// mu and scale with p.invert), one block per segment.
template <class Est, class S>
__global__ void __launch_bounds__(kThreads) params_kernel(const __grid_constant__ LaunchPlan p) {
  const DevSegment& s = p.seg[blockIdx.x];
  // Per-element statistics whose elements have skipped: each element's own count.
  const bool skips = !s.broadcast && s.skips != nullptr && s.skipped != nullptr && *s.skipped != 0;
  const core::StoredStats<S> st{static_cast<const S*>(s.loc_in), static_cast<const S*>(s.var_in), *s.count_in,
                                skips ? s.skips : nullptr, s.broadcast ? s.feat : s.rows * s.feat, s.broadcast != 0};
  const core::MapKind kind = p.invert ? core::MapKind::denormalize : core::MapKind::normalize;
  if (s.wide)
    core::stats_maps<Est, S, double>(decay_of(p), p.rule, st, kind, static_cast<double*>(s.mu),
                                     static_cast<double*>(s.p), threadIdx.x, kThreads);
  else
    core::stats_maps<Est, S, float>(decay_of(p), p.rule, st, kind, static_cast<float*>(s.mu), static_cast<float*>(s.p),
                                    threadIdx.x, kThreads);
}

template <class X, class C>
__device__ __forceinline__ void affine_block(const LaunchPlan& p, const DevSegment& s, std::int64_t local) {
  using Y = core::output_t<X>;
  const X* x = static_cast<const X*>(s.x);
  Y* y = static_cast<Y*>(s.y);
  const C* mu = static_cast<const C*>(s.mu);
  const C* q = static_cast<const C*>(s.p);
  const std::int64_t n_elem = s.rows * s.feat;
  const std::int64_t base = local * (kThreads * kItems) + threadIdx.x;
#pragma unroll
  for (int it = 0; it < kItems; ++it) {
    const std::int64_t i = base + static_cast<std::int64_t>(it) * kThreads;
    if (i >= n_elem) break;
    const std::int64_t j = s.broadcast ? i % s.feat : i;
    const C xi = core::load<C>(x + i);
    const C out = p.invert ? core::unapply(mu[j], q[j], xi)
                           : core::clip_to(core::apply(core::Affine<C>{mu[j], q[j]}, xi), static_cast<C>(p.rule.clip));
    core::store(y + i, out);
  }
}

/// y = (x - mu) * r (or its inverse) for all segments of the launch.
__global__ void __launch_bounds__(kThreads) affine_kernel(const __grid_constant__ LaunchPlan p) {
  const std::int64_t block = blockIdx.x;
  const DevSegment& s = p.seg[find_segment(p, block)];
  const std::int64_t local = block - s.block_begin;
  if (local >= s.blocks) return;
  visit_x(s.x_dtype, [&](auto xt) {
    if (s.wide)
      affine_block<decltype(xt), double>(p, s, local);
    else
      affine_block<decltype(xt), float>(p, s, local);
  });
}

}  // namespace vecnorm::kernels
