// src/params.hpp -- the affine map of stored statistics, on the host.
//
// Used by the read-outs and to_affine() (src/normalizer.cpp) and by the CPU
// backend's denormalize. The arithmetic is exactly the backends': pooled maps in
// double, per-element maps in the compute type C, both through the core.
#pragma once

#include <cstdint>

#include "vecnorm/core/numerics.hpp"

namespace vecnorm::detail {

/// For `numel` statistics (loc, var) with `count` samples, writes mu and
/// p = 1/scale (want_scale false) or p = scale (want_scale true) in type C.
/// `skips` (per-element mode, may be null): element i has count - skips[i] samples.
/// `pooled_coeffs` (pooled, may be null): normalize_coeffs<double>(count), if known.
template <class S, class C, bool Stable>
void host_params(const core::Decay& decay, double eps, bool pooled, const S* loc, const S* var, std::int64_t count,
                 std::int64_t numel, bool want_scale, C* mu, C* p, const std::int64_t* skips = nullptr,
                 const core::Coeffs<double>* pooled_coeffs = nullptr) {
  if (pooled) {
    // pooled_coeffs: normalize_coeffs(count) when the caller has them already.
    const auto c = pooled_coeffs != nullptr ? *pooled_coeffs : core::normalize_coeffs<double, Stable>(decay, count);
    for (std::int64_t i = 0; i < numel; ++i) {
      double m, q;
      if (want_scale) {
        core::element_loc_scale<double, Stable>(static_cast<double>(loc[i]), static_cast<double>(var[i]), c, eps, m, q);
      } else {
        const auto a =
            core::element_affine<double, Stable>(static_cast<double>(loc[i]), static_cast<double>(var[i]), c, eps);
        m = a.mu;
        q = a.r;
      }
      mu[i] = static_cast<C>(m);
      p[i] = static_cast<C>(q);
    }
    return;
  }
  auto c = core::normalize_coeffs<C, Stable>(decay, count);
  std::int64_t cached = count;
  const C e = static_cast<C>(eps);
  for (std::int64_t i = 0; i < numel; ++i) {
    if (skips != nullptr && count - skips[i] != cached) {
      cached = count - skips[i];
      c = core::normalize_coeffs<C, Stable>(decay, cached);
    }
    if (want_scale) {
      core::element_loc_scale<C, Stable>(static_cast<C>(loc[i]), static_cast<C>(var[i]), c, e, mu[i], p[i]);
    } else {
      const auto a = core::element_affine<C, Stable>(static_cast<C>(loc[i]), static_cast<C>(var[i]), c, e);
      mu[i] = a.mu;
      p[i] = a.r;
    }
  }
}

}  // namespace vecnorm::detail
