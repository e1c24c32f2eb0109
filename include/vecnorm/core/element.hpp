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

/// Where the counts of one per-element segment are, and which rule applies.
struct ElementCounts {
  const std::int64_t* count_in = nullptr;  ///< per element, or the key's one count; null: zeros
  std::int64_t* count_out = nullptr;       ///< per element only (the key's count moves elsewhere)
  std::int64_t* skips = nullptr;           ///< per key: updates each element left out; null: none kept
  std::int64_t key_count = 0;              ///< per key: *count_in (read once)
  bool per_element = false;                ///< the layout: one count per element
  bool use_skips = false;                  ///< per key: elements have skipped before (count less skips)
};

/// True when the elements of a segment do not all share one count.
VECNORM_HD bool varying_counts(const ElementCounts& ec) { return ec.per_element || ec.use_skips; }

/// The count of element i (before this call's update).
VECNORM_HD std::int64_t element_count(const ElementCounts& ec, std::int64_t i) {
  if (ec.per_element) return ec.count_in != nullptr ? ec.count_in[i] : 0;
  return ec.use_skips ? ec.key_count - ec.skips[i] : ec.key_count;
}

/// Records the update of element i, which had count n and was left out when `kept_out`.
VECNORM_HD void record_update(const ElementCounts& ec, std::int64_t i, std::int64_t n, bool kept_out) {
  if (ec.per_element)
    ec.count_out[i] = kept_out ? n : n + 1;
  else if (kept_out && ec.skips != nullptr)
    ++ec.skips[i];
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

/// Statistics of one per-element segment, in the statistics type S.
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
/// and/or the normalization of x[i] into out[j]. kSkip and `skip`: a
/// non-finite x is left out of the statistics (NonFinite::skip; the runtime
/// flag for callers that decide per call). Returns whether the element was
/// left out.
template <class Est, class S, class C, bool kUpdate, bool kNormalize, bool kSkip, StatsIn kIn = StatsIn::maybe_null,
          class X, class Y>
VECNORM_HD bool element_step(const X* x, const ElementStats<S>& st, Y* out, std::int64_t i, std::int64_t j,
                             const Coeffs<C>& c, C eps, bool skip = true) {
  const C xi = load<C>(x + i);
  C loc = C(0), var = C(0);
  if constexpr (kIn == StatsIn::load) {
    loc = static_cast<C>(st.loc_in[i]);
    var = static_cast<C>(st.var_in[i]);
  } else if constexpr (kIn == StatsIn::maybe_null) {
    if (st.loc_in != nullptr) loc = static_cast<C>(st.loc_in[i]);
    if (st.var_in != nullptr) var = static_cast<C>(st.var_in[i]);
  }
  bool kept_out = false;
  if constexpr (kUpdate && kSkip) {
    kept_out = skip && !is_finite(xi);
    update_stored_unless<Est, S, C>(kept_out, loc, var, xi, c, st.loc_out[i], st.var_out[i]);
  } else if constexpr (kUpdate) {
    update_stored<Est, S, C>(loc, var, xi, c, st.loc_out[i], st.var_out[i]);
  }
  if constexpr (kNormalize) store(out + j, apply(element_affine<Est, C>(loc, var, c, eps), xi));
  return kept_out;
}

}  // namespace vecnorm::core
