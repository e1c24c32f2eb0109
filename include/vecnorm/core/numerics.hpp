// vecnorm/core/numerics.hpp -- THE update / normalize formulas of vecnorm.
//
// Every backend (the CPU loops in src/cpu, the CUDA kernels in kernels/, and
// the kernels run under the SIMT emulator in the tests) calls these functions
// and nothing else to update statistics and normalize. The derivations are in
// docs/numerics.md; the normative statement is the project's semantics spec.
//
// Scalars that depend only on counts (weights, bias corrections) are computed
// in double once per key (or per element when counts are per element); the
// per-element arithmetic runs in the compute type T: float when both the input
// and the statistics are at most 32-bit, double when either is float64.
#pragma once

#include <cmath>
#include <cstdint>

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
  p.log_decay = p.cumulative ? 0.0 : std::log(decay);
  return p;
}

/// 1 - d^n without cancellation (-expm1(n ln d)): the total EMA weight of n
/// samples, and torchrl's bias correction after n updates.
VECNORM_HD double one_minus_pow(const Decay& p, double n) { return -std::expm1(n * p.log_decay); }

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

// ---------------------------------------------------------------------------
// Per-element statistics (one loc/var per element, one step adds one sample).
// `Coeffs` are the count-dependent scalars of one step for one count value.
// ---------------------------------------------------------------------------

template <class T>
struct Coeffs {
  T weight;  ///< torchrl: lerp weight w; stable: share a of the new sample
  T inv_bc;  ///< torchrl: 1 / bias correction of the count after the update; stable: unused (1)
};

/// Coefficients of an update that takes the count from n to n + m (m = 1 per
/// element; m = batch size when pooled).
template <class T, bool Stable>
VECNORM_HD Coeffs<T> update_coeffs(const Decay& p, std::int64_t n, std::int64_t m) {
  if constexpr (Stable) {
    return {static_cast<T>(stable_weight(p, n, m)), T(1)};
  } else {
    return {static_cast<T>(torchrl_weight(p, n + m, m)), static_cast<T>(1.0 / bias_correction(p, n + m))};
  }
}

/// Coefficients for normalizing with statistics that have seen `count` (> 0) samples.
template <class T, bool Stable>
VECNORM_HD Coeffs<T> normalize_coeffs(const Decay& p, std::int64_t count) {
  if constexpr (Stable) {
    return {T(0), T(1)};
  } else {
    return {T(0), static_cast<T>(1.0 / bias_correction(p, count))};
  }
}

/// Fold one sample x into the stored (loc, var) of one element.
///   torchrl: loc = lerp(loc, x, w), var = lerp(var, x^2, w)   (raw moments)
///   stable:  delta = x - mu; mu += a delta; v = (1 - a)(v + a delta^2)   (West)
template <class T, bool Stable>
VECNORM_HD void update_element(T& loc, T& var, T x, const Coeffs<T>& c) {
  if constexpr (Stable) {
    const T delta = x - loc;
    loc = loc + c.weight * delta;
    var = (T(1) - c.weight) * (var + c.weight * delta * delta);
  } else {
    loc = lerp(loc, x, c.weight);
    var = lerp(var, x * x, c.weight);
  }
}

/// One element of a per-element update as every backend runs it: fold x into
/// (loc, var), store them rounded to the statistics type S, and leave in
/// (loc, var) the stored values, so that the normalization that follows uses
/// exactly what read-outs, frozen steps and to_affine() will see.
template <class S, class T, bool Stable>
VECNORM_HD void update_stored(T& loc, T& var, T x, const Coeffs<T>& c, S& loc_out, S& var_out) {
  update_element<T, Stable>(loc, var, x, c);
  const S ls = static_cast<S>(loc), vs = static_cast<S>(var);
  loc_out = ls;
  var_out = vs;
  loc = static_cast<T>(ls);
  var = static_cast<T>(vs);
}

/// True for a finite value (not NaN, not +-inf). Written as x - x == 0 (NaN
/// for NaN and infinities) so that it vectorizes and runs on the device.
template <class T>
VECNORM_HD bool is_finite(T x) {
  return x - x == T(0);
}

/// update_stored for NonFinite::skip: when `keep` is true the element is left
/// out (its stored values are written back unchanged, bit for bit: the
/// widening of S to T is exact); otherwise as update_stored. A select, not a
/// branch, so that the loops stay vector loops.
template <class S, class T, bool Stable>
VECNORM_HD void update_stored_unless(bool keep, T& loc, T& var, T x, const Coeffs<T>& c, S& loc_out, S& var_out) {
  T l = loc, v = var;
  update_element<T, Stable>(l, v, x, c);
  const S ls = static_cast<S>(keep ? loc : l), vs = static_cast<S>(keep ? var : v);
  loc_out = ls;
  var_out = vs;
  loc = static_cast<T>(ls);
  var = static_cast<T>(vs);
}

/// The normalization of one element from its stored (loc, var).
///   torchrl: mu = loc / bc, v = (var - loc^2) / bc;  stable: mu = loc, v = var.
template <class T, bool Stable>
VECNORM_HD Affine<T> element_affine(T loc, T var, const Coeffs<T>& c, T eps) {
  if constexpr (Stable) {
    return {loc, T(1) / clamp_scale(var, eps)};
  } else {
    return {loc * c.inv_bc, T(1) / clamp_scale((var - loc * loc) * c.inv_bc, eps)};
  }
}

/// mu and scale (not its inverse) of one element, for read-outs and denormalize.
template <class T, bool Stable>
VECNORM_HD void element_loc_scale(T loc, T var, const Coeffs<T>& c, T eps, T& mu, T& scale) {
  if constexpr (Stable) {
    mu = loc;
    scale = clamp_scale(var, eps);
  } else {
    mu = loc * c.inv_bc;
    scale = clamp_scale((var - loc * loc) * c.inv_bc, eps);
  }
}

// ---------------------------------------------------------------------------
// Pooled statistics: batch moments, merged with Chan's formula.
// ---------------------------------------------------------------------------

/// Weight, mean and sum of squared deviations of a set of samples.
struct Moments {
  double n = 0.0;
  double mean = 0.0;
  double m2 = 0.0;
};

/// Moments from sums shifted by K: s1 = sum(x - K), s2 = sum((x - K)^2).
/// The shift keeps s2 - s1^2/n free of cancellation when K is near the mean.
VECNORM_HD Moments moments_from_shifted(double n, double shift, double s1, double s2) {
  Moments m;
  if (n <= 0.0) return m;
  const double d = s1 / n;
  m.n = n;
  m.mean = shift + d;
  const double m2 = s2 - s1 * d;
  m.m2 = m2 < 0.0 ? 0.0 : m2;
  return m;
}

/// Chan, Golub & LeVeque: the moments of the union of two disjoint sets.
VECNORM_HD Moments merge(const Moments& a, const Moments& b) {
  if (b.n == 0.0) return a;
  if (a.n == 0.0) return b;
  Moments r;
  r.n = a.n + b.n;
  const double delta = b.mean - a.mean;
  const double wb = b.n / r.n;
  r.mean = a.mean + delta * wb;
  r.m2 = a.m2 + b.m2 + delta * delta * a.n * wb;
  return r;
}

/// The shift used for a pooled batch: the current mean when there is one, else
/// the batch's first sample (any value inside the data works). `c` holds
/// normalize_coeffs(count) (computed once per call, not per feature).
template <bool Stable>
VECNORM_HD double pooled_shift(const Coeffs<double>& c, double loc, std::int64_t count, double first_sample) {
  if (count <= 0) return first_sample;
  if constexpr (Stable) {
    return loc;
  } else {
    return loc * c.inv_bc;
  }
}

/// normalize_coeffs for pooled_shift: any value when count is 0 (unused then).
template <bool Stable>
VECNORM_HD Coeffs<double> shift_coeffs(const Decay& p, std::int64_t count) {
  return count > 0 ? normalize_coeffs<double, Stable>(p, count) : Coeffs<double>{0.0, 1.0};
}

/// Fold a batch of m = b.n samples (moments b) into stored (loc, var). `c` is
/// update_coeffs<double, Stable>(count before, m), computed once per call.
/// Computed in double; the caller stores the results.
///   torchrl: w = 1 - d^m (or m/(n+m));  loc = lerp(loc, mean, w);  var = lerp(var, mean(x^2), w)
///   stable:  a = (1 - d^m)/(1 - d^(n+m)) (or m/(n+m));  delta = mean - mu;
///            mu += a delta;  v = (1 - a) v + a s2 + a (1 - a) delta^2
template <bool Stable>
VECNORM_HD void update_pooled(const Coeffs<double>& c, double& loc, double& var, const Moments& b) {
  const double s2 = b.m2 / b.n;  // population variance of the batch
  if constexpr (Stable) {
    const double a = c.weight;
    const double delta = b.mean - loc;
    loc = loc + a * delta;
    var = (1.0 - a) * var + a * s2 + a * (1.0 - a) * delta * delta;
  } else {
    const double w = c.weight;
    loc = lerp(loc, b.mean, w);
    var = lerp(var, s2 + b.mean * b.mean, w);
  }
}

}  // namespace vecnorm::core
