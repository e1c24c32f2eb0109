// vecnorm/core/math.hpp -- the elementary operations of the numeric core:
// decay weights, the lerp, the scale rule, the affine map, the finiteness test.
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

namespace vecnorm {

/// How a normalizer turns a variance v into the scale it divides by (Options::scale).
enum class ScaleForm : std::uint8_t {
  clamp,              ///< max(sqrt(v), eps): TorchRL's VecNormV2 (the default)
  sqrt_var_plus_eps,  ///< sqrt(v + eps): Stable-Baselines3, Gymnasium, rl_games
  std_plus_eps,       ///< sqrt(v) + eps: rsl_rl, skrl
};

}  // namespace vecnorm

namespace vecnorm::core {

/// The weighting constants of a normalizer: the decay, and the prior of the
/// stable estimator (Options::prior_count, docs/numerics.md, "Prior").
struct Decay {
  double log_decay = 0.0;  ///< ln d (0 when cumulative)
  bool cumulative = true;  ///< d == 1: every sample weighs the same
  /// n0 > 0: the statistics start from n0 pseudo-samples of mean 0 and
  /// variance 1 (stable estimator only), weighted like samples seen at count 0.
  double prior = 0.0;
  /// The batch variance of a pooled update divides by m - 1 (m > 1) instead of m.
  bool unbiased = false;
  /// until > 0: a key whose count has reached `until` takes no more updates
  /// (Options::until, rsl_rl's EmpiricalNormalization). 0: no bound.
  std::int64_t until = 0;
  /// Options::until_strict: neither is an update whose batch would take the
  /// count past `until` (brax's until_count).
  bool until_strict = false;
};

VECNORM_HD Decay make_decay(double decay, double prior = 0.0, bool unbiased = false, std::int64_t until = 0,
                            bool until_strict = false) {
  Decay p;
  p.cumulative = !(decay < 1.0);
  p.log_decay = p.cumulative ? 0.0 : core::log(decay);
  p.prior = prior;
  p.unbiased = unbiased;
  p.until = until;
  p.until_strict = until_strict;
  return p;
}

/// Options::until: an update of a key whose count (before the update) is
/// `count` leaves its statistics and count as they are once the count has
/// reached the bound. The batch that crosses the bound is merged whole (as
/// rsl_rl's). A stopped update is not a skip: no health counter moves. The
/// count is the key's one count (per-key layout); per-element counts take no
/// bound (the pipeline refuses the option there).
VECNORM_HD bool updates_stopped(const Decay& d, std::int64_t count) { return d.until > 0 && count >= d.until; }

/// The samples an update that brings m of them (all ranks' kept, finite rows)
/// to a key of count `count` adds: m, or 0 where Options::until stops it. The
/// rule where m is known (the pooled merges); updates_stopped is the same
/// rule's early-out where it is not (a count that has reached the bound stops
/// every m > 0 under both rules). until_strict (brax's until_count): also 0
/// when count + m would pass the bound. A per-element step adds 1 to the key's
/// count, for which the two rules agree.
VECNORM_HD std::int64_t samples_taken(const Decay& d, std::int64_t count, std::int64_t m) {
  if (d.until <= 0) return m;
  if (count >= d.until) return 0;
  return d.until_strict && m > d.until - count ? 0 : m;
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
/// With a prior of n0 pseudo-samples (weighted as samples at count 0, so that
/// the total weight after n samples is (1 - d^n) / (1 - d) + n0 d^n):
/// d < 1: (1 - d^m) / (1 - d^(n+m) + n0 (1 - d) d^(n+m));  d = 1: m / (n0 + n + m).
VECNORM_HD double stable_weight(const Decay& p, std::int64_t n, std::int64_t m) {
  if (p.prior > 0.0) {
    if (p.cumulative) return static_cast<double>(m) / (p.prior + static_cast<double>(n + m));
    const double t = static_cast<double>(n + m);
    // (1 - d) = -expm1(ln d); d^(n+m) = 1 - (1 - d^(n+m))
    const double total = one_minus_pow(p, t) + p.prior * one_minus_pow(p, 1.0) * (1.0 - one_minus_pow(p, t));
    return one_minus_pow(p, static_cast<double>(m)) / total;
  }
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

/// How a variance becomes a scale, and the bound and centring of normalized
/// outputs (Options::scale, eps, max_scale, clip, center): scale =
/// min(max(sqrt(max(v, 0) + in) + out, lo), hi), y = clamp((x - mu) / scale,
/// -clip, clip), where mu is the mean
/// (center) or 0 (the reward scalers: y = x / scale). The three forms of
/// Options::scale are three settings of (lo, in, out) (make_scale_rule); the
/// zeros they add change no bits.
template <class T>
struct ScaleRule {
  T lo = T(0);    ///< lower bound of the scale (the clamp form's eps)
  T in = T(0);    ///< added to the variance under the square root
  T out = T(0);   ///< added to the square root
  T hi = T(INFINITY);  ///< upper bound of the scale (Options::max_scale; brax's 1e6); +inf: none
  T clip = T(0);  ///< outputs bounded to [-clip, clip]; +inf: unbounded
  bool center = true;  ///< subtract the mean; false: the map is x / scale (mu = 0)
  template <class U>
  VECNORM_HD ScaleRule<U> as() const {
    return {static_cast<U>(lo), static_cast<U>(in), static_cast<U>(out), static_cast<U>(hi), static_cast<U>(clip),
            center};
  }
};

/// The rule of `form` with `eps`, outputs bounded by `clip` (+inf: none),
/// centred or not, the scale at most `max_scale` (+inf: no bound).
VECNORM_HD ScaleRule<double> make_scale_rule(ScaleForm form, double eps, double clip, bool center = true,
                                             double max_scale = INFINITY) {
  ScaleRule<double> r;
  r.clip = clip;
  r.hi = max_scale;
  r.center = center;
  if (form == ScaleForm::sqrt_var_plus_eps)
    r.in = eps;
  else if (form == ScaleForm::std_plus_eps)
    r.out = eps;
  else
    r.lo = eps;
  return r;
}

/// The scale of variance v. NaN propagates (as in the reference): the
/// comparisons are written so that a NaN variance gives a NaN scale.
template <class T>
VECNORM_HD T scale_of(T v, const ScaleRule<T>& r) {
  const T s = std::sqrt((v < T(0) ? T(0) : v) + r.in) + r.out;
  const T b = s < r.lo ? r.lo : s;
  return b > r.hi ? r.hi : b;
}

/// The mu of the map of mean `mean` under rule r: the mean, or 0 when the
/// rule does not centre (a select, not a product: an infinite mean gives 0).
template <class T>
VECNORM_HD T centred_mu(T mean, const ScaleRule<T>& r) {
  return r.center ? mean : T(0);
}

/// y bounded to [-clip, clip]; NaN stays NaN. Two plain selects (the forms of
/// maxps/minps that return the NaN operand), which if-conversion turns into
/// vector instructions; a nested conditional left the loops scalar.
template <class T>
VECNORM_HD T clip_to(T y, T clip) {
  const T lo = -clip;
  const T z = lo > y ? lo : y;
  return clip < z ? clip : z;
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
