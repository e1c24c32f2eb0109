// vecnorm/core/pooled.hpp -- pooled statistics as one ops object
// (reduce, combine, project, finalize), as ATen's WelfordOps: the CPU team
// (src/cpu/pooled.cpp) and the CUDA statistics kernel (kernels/pooled.cuh)
// run the same operations and differ only in how they split the rows.
//
//   shift    K per feature for a whole call: the current mean (any value
//            inside the data keeps the sums free of cancellation);
//   reduce   s1 += x - K, s2 += (x - K)^2 in the compute type over a bounded
//            run of rows (a CPU tile, a GPU thread's rows), then in double;
//   combine  sums of the same shift add; moments of disjoint sets merge (Chan);
//   project  sums -> moments (n, mean, M2);
//   finalize fold the batch moments into the stored loc/var (in double),
//            rounded to S; the feature's map is then computed from what was
//            stored (vecnorm/core/maps.hpp).
#pragma once

#include <cstdint>

#include "vecnorm/core/estimator.hpp"
#include "vecnorm/core/hd.hpp"
#include "vecnorm/core/math.hpp"

namespace vecnorm::core {

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

/// The weight of batch row r in a pooled update whose row mask is `mask`
/// (KeyData::mask; null: every row counts once): a uint8 byte counts once
/// when not 0; int32 row weights (`weighted`) count their value, a negative
/// one as 0 (a row of weight w is w copies of it: brax's weights).
VECNORM_HD std::int64_t row_weight(const std::uint8_t* mask, bool weighted, std::int64_t r) {
  if (mask == nullptr) return 1;
  if (weighted) {
    const std::int32_t w = reinterpret_cast<const std::int32_t*>(mask)[r];
    return w > 0 ? w : 0;
  }
  return mask[r] != 0 ? 1 : 0;
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

/// Stored statistics of one element.
template <class S>
struct Stored {
  S loc;
  S var;
};

/// The operations of a pooled update with estimator Est.
template <class Est>
struct PooledOps {
  /// normalize_coeffs for shift(): any value when count is 0 (unused then).
  static VECNORM_HD Coeffs<double> shift_coeffs(const Decay& p, std::int64_t count) {
    return count > 0 ? normalize_coeffs<Est, double>(p, count) : Coeffs<double>{0.0, 1.0};
  }
  /// The shift of a feature: the current mean when there is one, else the
  /// batch's first sample. `c` = shift_coeffs(count), once per call.
  static VECNORM_HD double shift(const Coeffs<double>& c, double loc, std::int64_t count, double first_sample) {
    if (count <= 0) return first_sample;
    return Est::mean_of(c, loc);
  }
  /// One shifted value d = x - K into the sums (a scalar or a vector register).
  template <class V>
  static VECNORM_HD void reduce(V& s1, V& s2, const V& d) {  // (by reference: a vector by value to a function outside an ISA build changes the ABI under Clang)
    s1 += d;
    s2 += d * d;
  }
  /// One shifted value d of a row of integer weight w (KeyData::mask as
  /// int32 row weights): the sums of w copies of it. w = 1 gives reduce's bits.
  template <class V>
  static VECNORM_HD void reduce_weighted(V& s1, V& s2, const V& d, const V& w) {
    s1 += w * d;
    s2 += w * (d * d);
  }
  /// Sums of the same shift over disjoint rows.
  static VECNORM_HD void combine(double& s1, double& s2, double t1, double t2) {
    s1 += t1;
    s2 += t2;
  }
  /// Moments of disjoint sets (different shifts).
  static VECNORM_HD Moments combine(const Moments& a, const Moments& b) { return merge(a, b); }
  /// Sums of n rows shifted by K -> moments.
  static VECNORM_HD Moments project(double n, double shift, double s1, double s2) {
    return moments_from_shifted(n, shift, s1, s2);
  }
  /// One feature at the end of a pooled update: the batch moments b (b.n rows;
  /// 0 when every row was left out) folded into the stored (loc, var) with
  /// uc = update_coeffs(count before, b.n), in double, rounded to S: the
  /// values to store. The feature's map is then stats_map() of them at the
  /// count after (MapKind::normalize, in double).
  template <class S>
  static VECNORM_HD Stored<S> finalize(const Coeffs<double>& uc, double loc, double var, const Moments& b) {
    // The batch's variance: M2 / n, or M2 / (n - 1) when unbiased (n > 1; one row has none).
    if (b.n > 0.0) Est::update_pooled(uc, loc, var, b.mean, b.m2 / (b.n > 1.0 ? b.n - uc.ddof : b.n));
    return {static_cast<S>(loc), static_cast<S>(var)};
  }
};

}  // namespace vecnorm::core
