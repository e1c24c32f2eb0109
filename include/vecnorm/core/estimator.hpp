// vecnorm/core/estimator.hpp -- the two estimators as policy types.
//
// An estimator is what a step stores and how it folds samples in: `TorchRL`
// (VecNormV2's raw moments) and `Stable` (the bias-corrected mean and the
// weighted variance, West/Chan). Each is a struct of static functions; the
// loops of every backend are templates over `class Est` and call
// `core::update_coeffs<Est, T>(...)` and friends, which forward to it. The one
// switch from the runtime Estimator value to a policy type is core::visit().
//
// Scalars that depend only on counts (weights, bias corrections) are computed
// in double once per count; the per-element arithmetic runs in the compute type
// T (float when the input and the statistics are at most 32-bit, double when
// either is float64). Derivations: docs/numerics.md.
#pragma once

#include <cstdint>

#include "vecnorm/core/hd.hpp"
#include "vecnorm/core/math.hpp"

namespace vecnorm {

/// How the statistics are estimated (docs/numerics.md).
enum class Estimator : std::uint8_t {
  torchrl,  ///< VecNormV2's formulas: loc = EMA of x, var = EMA of x^2 (drop-in compatible)
  stable,   ///< numerically stable, exactly bias-corrected weighted mean / variance
};

}  // namespace vecnorm

namespace vecnorm::core {

/// The count-dependent scalars of one update or normalization, for one count value.
template <class T>
struct Coeffs {
  T weight;  ///< torchrl: lerp weight w; stable: share a of the new samples
  T inv_bc;  ///< torchrl: 1 / bias correction of the count; stable: 1 (unused)
  /// stable, an update from count 0 with a prior: the prior's variance (1),
  /// which the stored zeros of count 0 stand for; else 0.
  T var0 = T(0);
  /// Pooled updates: 1 when the batch variance divides by m - 1 (Decay::unbiased), else 0.
  T ddof = T(0);
};

/// VecNormV2's estimator: loc = EMA of x, var = EMA of x^2 (raw moments); the
/// normalization divides both by the bias correction 1 - d^count.
struct TorchRL {
  static constexpr Estimator kind = Estimator::torchrl;

  /// An update that takes the count from n to n + m.
  template <class T>
  static VECNORM_HD Coeffs<T> update_coeffs(const Decay& p, std::int64_t n, std::int64_t m) {
    return {static_cast<T>(torchrl_weight(p, n + m, m)), static_cast<T>(1.0 / bias_correction(p, n + m)), T(0),
            p.unbiased ? T(1) : T(0)};
  }
  /// Normalizing with statistics that have seen `count` (> 0) samples.
  template <class T>
  static VECNORM_HD Coeffs<T> normalize_coeffs(const Decay& p, std::int64_t count) {
    return {T(0), static_cast<T>(1.0 / bias_correction(p, count))};
  }
  /// normalize_coeffs(n + m) of an update from n with update_coeffs(n, m) = uc:
  /// the same expression, so the same bits, without a second expm1.
  template <class T>
  static VECNORM_HD Coeffs<T> normalize_after(const Coeffs<T>& uc) {
    return {T(0), uc.inv_bc};
  }
  /// Folds one sample x into the stored (loc, var): loc = lerp(loc, x, w), var = lerp(var, x^2, w).
  template <class T>
  static VECNORM_HD void update_element(T& loc, T& var, T x, const Coeffs<T>& c) {
    loc = lerp(loc, x, c.weight);
    var = lerp(var, x * x, c.weight);
  }
  /// The normalization of stored (loc, var): mu = loc / bc, v = (var - loc^2) / bc.
  template <class T>
  static VECNORM_HD Affine<T> element_affine(T loc, T var, const Coeffs<T>& c, const ScaleRule<T>& r) {
    return {centred_mu(loc * c.inv_bc, r), T(1) / scale_of((var - loc * loc) * c.inv_bc, r)};
  }
  /// mu and scale (not its inverse), for read-outs and denormalize.
  template <class T>
  static VECNORM_HD void loc_scale(T loc, T var, const Coeffs<T>& c, const ScaleRule<T>& r, T& mu, T& scale) {
    mu = centred_mu(loc * c.inv_bc, r);
    scale = scale_of((var - loc * loc) * c.inv_bc, r);
  }
  /// The mean the stored loc stands for (pooled shifts), `c` = normalize_coeffs(count).
  static VECNORM_HD double mean_of(const Coeffs<double>& c, double loc) { return loc * c.inv_bc; }
  /// Folds a batch of mean `mean` and population variance `s2` into the stored
  /// (loc, var), in double: loc = lerp(loc, mean, w), var = lerp(var, mean(x^2), w).
  static VECNORM_HD void update_pooled(const Coeffs<double>& c, double& loc, double& var, double mean, double s2) {
    const double w = c.weight;
    loc = lerp(loc, mean, w);
    var = lerp(var, s2 + mean * mean, w);
  }
};

/// The stable estimator: loc = bias-corrected weighted mean mu, var = weighted
/// variance v, updated by West's (one sample) and Chan's (a batch) formulas.
struct Stable {
  static constexpr Estimator kind = Estimator::stable;

  template <class T>
  static VECNORM_HD Coeffs<T> update_coeffs(const Decay& p, std::int64_t n, std::int64_t m) {
    return {static_cast<T>(stable_weight(p, n, m)), T(1), n == 0 && p.prior > 0.0 ? T(1) : T(0),
            p.unbiased ? T(1) : T(0)};
  }
  /// At count 0 with a prior, the stored zeros stand for the prior (mean 0,
  /// variance 1): var0 = 1 makes the map the prior's (a pooled step that left
  /// out every row at count 0, a frozen reward scaler before its first step).
  template <class T>
  static VECNORM_HD Coeffs<T> normalize_coeffs(const Decay& p, std::int64_t count) {
    return {T(0), T(1), count == 0 && p.prior > 0.0 ? T(1) : T(0)};
  }
  template <class T>
  static VECNORM_HD Coeffs<T> normalize_after(const Coeffs<T>&) {
    return {T(0), T(1)};
  }
  /// delta = x - mu; mu += a delta; v = (1 - a)(v + var0 + a delta^2) (var0:
  /// the prior's variance at count 0, else 0).
  template <class T>
  static VECNORM_HD void update_element(T& loc, T& var, T x, const Coeffs<T>& c) {
    const T delta = x - loc;
    loc = loc + c.weight * delta;
    var = (T(1) - c.weight) * ((var + c.var0) + c.weight * delta * delta);
  }
  /// `c` = normalize_coeffs: var0 is the prior's variance at count 0 (else 0:
  /// adding it changes no bits).
  template <class T>
  static VECNORM_HD Affine<T> element_affine(T loc, T var, const Coeffs<T>& c, const ScaleRule<T>& r) {
    return {centred_mu(loc, r), T(1) / scale_of(var + c.var0, r)};
  }
  template <class T>
  static VECNORM_HD void loc_scale(T loc, T var, const Coeffs<T>& c, const ScaleRule<T>& r, T& mu, T& scale) {
    mu = centred_mu(loc, r);
    scale = scale_of(var + c.var0, r);
  }
  static VECNORM_HD double mean_of(const Coeffs<double>&, double loc) { return loc; }
  /// delta = mean - mu; mu += a delta; v = (1 - a)(v + var0) + a s2 + a (1 - a) delta^2.
  static VECNORM_HD void update_pooled(const Coeffs<double>& c, double& loc, double& var, double mean, double s2) {
    const double a = c.weight;
    const double delta = mean - loc;
    loc = loc + a * delta;
    var = (1.0 - a) * (var + c.var0) + a * s2 + a * (1.0 - a) * delta * delta;
  }
};

/// The one switch from the runtime value to the policy type: f(TorchRL{}) or f(Stable{}).
template <class F>
VECNORM_HD void visit(Estimator e, F&& f) {
  if (e == Estimator::stable)
    f(Stable{});
  else
    f(TorchRL{});
}

// Call-site spellings of the policies' functions (no `Est::template` at every call).

template <class Est, class T>
VECNORM_HD Coeffs<T> update_coeffs(const Decay& p, std::int64_t n, std::int64_t m) {
  return Est::template update_coeffs<T>(p, n, m);
}
template <class Est, class T>
VECNORM_HD Coeffs<T> normalize_coeffs(const Decay& p, std::int64_t count) {
  return Est::template normalize_coeffs<T>(p, count);
}
template <class Est, class T>
VECNORM_HD Affine<T> element_affine(T loc, T var, const Coeffs<T>& c, const ScaleRule<T>& r) {
  return Est::template element_affine<T>(loc, var, c, r);
}

}  // namespace vecnorm::core
