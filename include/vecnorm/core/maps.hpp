// vecnorm/core/maps.hpp -- the affine map of stored statistics: what a
// normalization applies (mu, 1/scale) and what read-outs and denormalize use
// (mu, scale), for one element and for a whole statistics array.
//
// Used by the host read-outs and to_affine() (src/frontend), the CPU backend
// (pooled normalize, denormalize) and the CUDA params kernel, so that every
// one of them computes the same bits. The type of the arithmetic is part of
// the rule: pooled statistics map in double, per-element statistics in the
// compute type C of the key (what a per-element step computes in).
#pragma once

#include <cstdint>

#include "vecnorm/core/estimator.hpp"
#include "vecnorm/core/hd.hpp"
#include "vecnorm/core/math.hpp"

namespace vecnorm::core {

/// Which map: normalize (mu, 1/scale) or its inverse (mu, scale).
enum class MapKind : std::uint8_t { normalize, denormalize };

/// mu and p: p = 1/scale (MapKind::normalize) or scale (MapKind::denormalize).
template <class T>
struct Map {
  T mu;
  T p;
};

/// The map of one stored (loc, var) with c = normalize_coeffs(count).
template <class Est, class T>
VECNORM_HD Map<T> stats_map(MapKind kind, T loc, T var, const Coeffs<T>& c, const ScaleRule<T>& sr) {
  if (kind == MapKind::denormalize) {
    Map<T> m;
    Est::loc_scale(loc, var, c, sr, m.mu, m.p);
    return m;
  }
  const Affine<T> a = Est::element_affine(loc, var, c, sr);
  return {a.mu, a.r};
}

/// Statistics of one key for stats_maps: numel values of S, `count` samples,
/// per-element `skips` (element i has count - skips[i] samples; null: none).
template <class S>
struct StoredStats {
  const S* loc;
  const S* var;
  std::int64_t count;
  const std::int64_t* skips;
  std::int64_t numel;
  bool pooled;  ///< pooled statistics map in double, per-element ones in C
};

/// The maps of elements begin, begin + stride, ... of `st` into mu[i], p[i]
/// (type C: the key's compute type). `pooled_coeffs`: normalize_coeffs<double>(count)
/// when the caller has them (pooled only; null: computed here).
template <class Est, class S, class C>
VECNORM_HD void stats_maps(const Decay& decay, const ScaleRule<double>& sr, const StoredStats<S>& st, MapKind kind, C* mu, C* p,
                           std::int64_t begin = 0, std::int64_t stride = 1,
                           const Coeffs<double>* pooled_coeffs = nullptr) {
  if (st.pooled) {
    const Coeffs<double> c =
        pooled_coeffs != nullptr ? *pooled_coeffs : normalize_coeffs<Est, double>(decay, st.count);
    for (std::int64_t i = begin; i < st.numel; i += stride) {
      const Map<double> m =
          stats_map<Est, double>(kind, static_cast<double>(st.loc[i]), static_cast<double>(st.var[i]), c, sr);
      mu[i] = static_cast<C>(m.mu);
      p[i] = static_cast<C>(m.p);
    }
    return;
  }
  // Per element: the coefficients are computed again only where the count changes.
  Coeffs<C> c = normalize_coeffs<Est, C>(decay, st.count);
  std::int64_t cached = st.count;
  const ScaleRule<C> e = sr.template as<C>();
  for (std::int64_t i = begin; i < st.numel; i += stride) {
    if (st.skips != nullptr && st.count - st.skips[i] != cached) {
      cached = st.count - st.skips[i];
      c = normalize_coeffs<Est, C>(decay, cached);
    }
    const Map<C> m = stats_map<Est, C>(kind, static_cast<C>(st.loc[i]), static_cast<C>(st.var[i]), c, e);
    mu[i] = m.mu;
    p[i] = m.p;
  }
}

}  // namespace vecnorm::core
