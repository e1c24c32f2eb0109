// kernels/scan.cuh -- NonFinite::error: the first non-finite input element.
#pragma once

#include "common.cuh"

namespace vecnorm::kernels {

/// The least index of a non-finite element of seg[0].x (rows x feat) in a
/// row its mask keeps (null: every row), into *p.found (atomicMin; all ones
/// when there is none).
__global__ void __launch_bounds__(kThreads) nonfinite_scan_kernel(const __grid_constant__ LaunchPlan p) {
  const DevSegment& s = p.seg[0];
  const std::int64_t n_elem = s.rows * s.feat;
  const std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * (kThreads * kItems) + threadIdx.x;
  visit_x(s.x_dtype, [&](auto xt) {
    using X = decltype(xt);
    const X* x = static_cast<const X*>(s.x);
#pragma unroll
    for (int it = 0; it < kItems; ++it) {
      const std::int64_t i = base + static_cast<std::int64_t>(it) * kThreads;
      if (i >= n_elem) break;
      if (s.mask != nullptr && s.mask[i / s.feat] == 0) continue;  // a row the update leaves out
      if (!core::is_finite(core::load<double>(x + i))) {
        atomicMin(p.found, static_cast<unsigned long long>(i));
        break;  // later items of this thread have larger indices
      }
    }
  });
}

}  // namespace vecnorm::kernels
