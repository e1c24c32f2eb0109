// vecnorm/core/math.hpp -- the elementary operations of the numeric core:
// decay weights, the lerp, the scale clamp, the affine map, the finiteness test.
//
// Header-only and VECNORM_HD: the CPU loops, the read-outs and the CUDA kernels
// (on a GPU and under the SIMT emulator) all call these and nothing else. The
// logarithm and exponential are the core's own (exp_log.hpp), not the C
// library's or CUDA's: the same bits everywhere.
// Derivations: docs/numerics.md.
#pragma once

#include <cmath>
#include <cstdint>

#include "vecnorm/core/exp_log.hpp"
#include "vecnorm/core/hd.hpp"

namespace vecnorm::core {

/// Decay-dependent constants of a normalizer.
struct Decay {
  double log_decay = 0.0;  ///< ln d (0 when cumulative)
  bool cumulative = true;  ///< d == 1: every sample weighs the same
};

VECNORM_HD Decay make_decay(double decay) {
  Decay p;
  p.cumulative = !(decay < 1.0);
  p.log_decay = p.cumulative ? 0.0 : core::log(decay);
  return p;
}

/// 1 - d^n without cancellation (-expm1(n ln d)): the total EMA weight of n
/// samples, and torchrl's bias correction after n updates.
VECNORM_HD double one_minus_pow(const Decay& p, double n) { return -core::expm1(n * p.log_decay); }

/// torchrl: the lerp weight of a step that adds m samples, making the count `count_after`.
/// d < 1: 1 - d^m;  d = 1: m / count_after.
VECNORM_HD double torchrl_weight(const Decay& p, std::int64_t count_after, std::int64_t m) {
  return p.cumulative ? static_cast<double>(m) / static_cast<double>(count_after)
                      : one_minus_pow(p, static_cast<double>(m));
}

/// torchrl: the bias correction at `count` (1 - d^count, or 1 when cumulative).
VECNORM_HD double bias_correction(const Decay& p, std::int64_t count) {
  return p.cumulative ? 1.0 : one_minus_pow(p, static_cast<double>(count));
}

/// stable: the share of the new m samples in the total weight after n + m samples.
/// d < 1: (1 - d^m) / (1 - d^(n+m));  d = 1: m / (n + m).
VECNORM_HD double stable_weight(const Decay& p, std::int64_t n, std::int64_t m) {
  return p.cumulative ? static_cast<double>(m) / static_cast<double>(n + m)
                      : one_minus_pow(p, static_cast<double>(m)) / one_minus_pow(p, static_cast<double>(n + m));
}

/// torch.lerp's formula: start + w (end - start), written from the nearer end.
/// Both ends are computed and one selected (the same bits as a branch), so that
/// a loop around it has no control flow and stays a vector loop even when the
/// compiler cannot hoist the test on w out of it.
template <class T>
VECNORM_HD T lerp(T start, T end, T w) {
  const T d = end - start;
  const T from_start = start + w * d;
  const T from_end = end - d * (T(1) - w);
  return w < T(0.5) ? from_start : from_end;
}

/// max(sqrt(max(v, 0)), eps). NaN propagates (as in the reference): the
/// comparisons are written so that a NaN variance gives a NaN scale.
template <class T>
VECNORM_HD T clamp_scale(T v, T eps) {
  const T s = std::sqrt(v < T(0) ? T(0) : v);
  return s < eps ? eps : s;
}

/// The affine map of normalization: y = (x - mu) * r with r = 1 / scale.
template <class T>
struct Affine {
  T mu;
  T r;
};
template <class T>
VECNORM_HD T apply(const Affine<T>& a, T x) {
  return (x - a.mu) * a.r;
}
/// The inverse map, from mu and scale: x = y * scale + mu.
template <class T>
VECNORM_HD T unapply(T mu, T scale, T y) {
  return y * scale + mu;
}

/// True for a finite value (not NaN, not +-inf). Written as x - x == 0 (NaN
/// for NaN and infinities) so that it vectorizes and runs on the device.
template <class T>
VECNORM_HD bool is_finite(T x) {
  return x - x == T(0);
}

}  // namespace vecnorm::core
