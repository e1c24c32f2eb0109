// vecnorm/core/element.hpp -- the per-element step: one element's update,
// normalization, count and skip rule, as every backend runs it.
//
// The CPU loops (src/cpu/elementwise.cpp) and the CUDA elementwise kernel
// (kernels/elementwise.cuh) are loops over element_step(); what differs
// between them is only how the elements are split and where the count
// coefficients are computed.
#pragma once

#include <cstdint>

#include "vecnorm/core/convert.hpp"
#include "vecnorm/core/estimator.hpp"
#include "vecnorm/core/hd.hpp"
#include "vecnorm/core/math.hpp"

namespace vecnorm::core {

/// One element of an update: fold x into (loc, var), store them rounded to the
/// statistics type S, and leave in (loc, var) the stored values, so that the
/// normalization that follows uses exactly what read-outs, frozen steps and
/// to_affine() will see.
template <class Est, class S, class T>
VECNORM_HD void update_stored(T& loc, T& var, T x, const Coeffs<T>& c, S& loc_out, S& var_out) {
  Est::update_element(loc, var, x, c);
  const S ls = static_cast<S>(loc), vs = static_cast<S>(var);
  loc_out = ls;
  var_out = vs;
  loc = static_cast<T>(ls);
  var = static_cast<T>(vs);
}

/// update_stored for NonFinite::skip: when `keep` is true the element is left
/// out (its stored values are written back unchanged, bit for bit: the
/// widening of S to T is exact); otherwise as update_stored. A select, not a
/// branch, so that the loops stay vector loops.
template <class Est, class S, class T>
VECNORM_HD void update_stored_unless(bool keep, T& loc, T& var, T x, const Coeffs<T>& c, S& loc_out, S& var_out) {
  T l = loc, v = var;
  Est::update_element(l, v, x, c);
  const S ls = static_cast<S>(keep ? loc : l), vs = static_cast<S>(keep ? var : v);
  loc_out = ls;
  var_out = vs;
  loc = static_cast<T>(ls);
  var = static_cast<T>(vs);
}

// ---------------------------------------------------------------------------
// Counts of per-element statistics
// ---------------------------------------------------------------------------
//
// Three layouts, one rule:
//  * one count per element (stateless): element i has count[i] samples; an
//    update moves it by one unless the element is left out (skip);
//  * one count per key, no element ever left out: every element has the key's
//    count; the key's count moves by one per step (after the elements);
//  * one count per key with per-element skips: element i has the key's count
//    less skips[i]; an element left out adds one to its skips.

/// Which rule gives the counts of one per-element segment.
struct CountRule {
  bool per_element = false;     ///< the layout: one count per element
  bool use_skips = false;       ///< per key: elements have skipped before (count less skips)
  std::int64_t key_count = 0;   ///< per key: the key's count (read once)
};

/// True when the elements of a segment do not all share one count.
VECNORM_HD bool varying_counts(const CountRule& r) { return r.per_element || r.use_skips; }

// `seg` below is any segment with the pointers count_in (per element, or the
// key's one count; null: zeros), count_out (per element only: the key's count
// moves elsewhere) and skips (per key: the updates each element left out; null:
// none kept): the CPU plan's Segment and the kernels' DevSegment. Taken by
// reference so that a kernel reads them from its parameter space instead of
// holding copies in registers.

/// The count of element i (before this call's update).
template <class Seg>
VECNORM_HD std::int64_t element_count(const Seg& seg, const CountRule& r, std::int64_t i) {
  if (r.per_element) return seg.count_in != nullptr ? seg.count_in[i] : 0;
  return r.use_skips ? r.key_count - seg.skips[i] : r.key_count;
}

/// Records the update of element i, which had count n and was left out when `kept_out`.
template <class Seg>
VECNORM_HD void record_update(const Seg& seg, const CountRule& r, std::int64_t i, std::int64_t n, bool kept_out) {
  if (r.per_element)
    seg.count_out[i] = kept_out ? n : n + 1;
  else if (kept_out && seg.skips != nullptr)
    ++seg.skips[i];
}

/// The coefficients of element counts n: an update from n (kUpdate), or the
/// normalization at n.
template <class Est, class T, bool kUpdate>
VECNORM_HD Coeffs<T> element_coeffs(const Decay& d, std::int64_t n) {
  if constexpr (kUpdate)
    return update_coeffs<Est, T>(d, n, 1);
  else
    return normalize_coeffs<Est, T>(d, n);
}

// ---------------------------------------------------------------------------
// The step of one element
// ---------------------------------------------------------------------------

/// Statistics of one per-element segment, in the statistics type S (what the
/// CPU loops hold in registers; the kernels pass their DevSegment instead).
template <class S>
struct ElementStats {
  const S* loc_in;  ///< null: zeros
  const S* var_in;
  S* loc_out;  ///< may equal loc_in (in place); unused without an update
  S* var_out;
};

/// How element_step reads the statistics in.
enum class StatsIn : std::uint8_t {
  maybe_null,  ///< a null pointer reads as zeros (checked per element)
  load,        ///< the pointers are not null (vector loops: no test in the loop)
  zeros,       ///< zeros whatever the pointers (vector loops over missing statistics)
};

/// Element i of a per-element call with coefficients c: an update (kUpdate)
/// and/or the normalization of x[i] into out[j]. `st` is any segment with the
/// statistics pointers loc_in, var_in (null: zeros), loc_out, var_out (S* or
/// void*): an ElementStats<S>, or a kernel's DevSegment (by reference, so that
/// a kernel reads them from its parameter space instead of holding copies in
/// registers). kSkip and `skip`: a non-finite x is left out of the statistics
/// (NonFinite::skip; the runtime flag for callers that decide per call). `sr`:
/// the scale rule and the output bound (Options::scale, eps, clip); !kClip:
/// the caller bounds the outputs itself (the CPU vector loops, in a pass of
/// their own: the selects of the bound in this loop kept GCC from vectorizing it).
/// Returns whether the element was left out.
template <class Est, class S, class C, bool kUpdate, bool kNormalize, bool kSkip, StatsIn kIn = StatsIn::maybe_null,
          bool kClip = true, class X, class Y, class Stats>
VECNORM_HD bool element_step(const X* x, const Stats& st, Y* out, std::int64_t i, std::int64_t j, const Coeffs<C>& c,
                             const ScaleRule<C>& sr, bool skip = true) {
  const S* loc_in = static_cast<const S*>(st.loc_in);
  const S* var_in = static_cast<const S*>(st.var_in);
  const C xi = load<C>(x + i);
  C loc = C(0), var = C(0);
  if constexpr (kIn == StatsIn::load) {
    loc = static_cast<C>(loc_in[i]);
    var = static_cast<C>(var_in[i]);
  } else if constexpr (kIn == StatsIn::maybe_null) {
    loc = loc_in != nullptr ? static_cast<C>(loc_in[i]) : C(0);
    var = var_in != nullptr ? static_cast<C>(var_in[i]) : C(0);
  }
  bool kept_out = false;
  if constexpr (kUpdate && kSkip) {
    kept_out = skip && !is_finite(xi);
    update_stored_unless<Est, S, C>(kept_out, loc, var, xi, c, static_cast<S*>(st.loc_out)[i],
                                    static_cast<S*>(st.var_out)[i]);
  } else if constexpr (kUpdate) {
    update_stored<Est, S, C>(loc, var, xi, c, static_cast<S*>(st.loc_out)[i], static_cast<S*>(st.var_out)[i]);
  }
  if constexpr (kNormalize) {
    // After an update, the normalize coefficients of the new count (an update
    // from count 0 carries the prior's variance, which the normalize must not add again).
    const Coeffs<C> nc = kUpdate ? Est::normalize_after(c) : c;
    const C y = apply(element_affine<Est, C>(loc, var, nc, sr), xi);
    store(out + j, kClip ? clip_to(y, sr.clip) : y);
  }
  return kept_out;
}

/// True when a row mask (KeyData::mask: one byte per batch row, null: none)
/// leaves out element i of a per-element segment of `feat` elements a row.
VECNORM_HD bool masked_out(const std::uint8_t* mask, std::int64_t i, std::int64_t feat) {
  return mask != nullptr && mask[i / feat] == 0;
}

/// Element i of an update whose row a mask leaves out: its statistics are
/// written back as they are (the caller records it as left out: its count does
/// not move), and kNormalize normalizes it with its statistics at its count n,
/// `nc` = normalize_coeffs(n), as a normalize call would (not with the
/// coefficients of n + 1 that an updated element's normalization takes).
template <class Est, class S, class C, bool kNormalize, class X, class Y, class Stats>
VECNORM_HD void masked_element_step(const X* x, const Stats& st, Y* out, std::int64_t i, std::int64_t j,
                                    const Coeffs<C>& nc, const ScaleRule<C>& sr) {
  const S* loc_in = static_cast<const S*>(st.loc_in);
  const S* var_in = static_cast<const S*>(st.var_in);
  static_cast<S*>(st.loc_out)[i] = loc_in != nullptr ? loc_in[i] : S(0);
  static_cast<S*>(st.var_out)[i] = var_in != nullptr ? var_in[i] : S(0);
  if constexpr (kNormalize) element_step<Est, S, C, false, true, false>(x, st, out, i, j, nc, sr);
}

}  // namespace vecnorm::core
