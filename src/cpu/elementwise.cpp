// src/cpu/elementwise.cpp -- per-element statistics on the CPU: every element
// of a key is core::element_step (the update, the normalization and the count
// and skip rule of vecnorm/core/element.hpp), in vector loops split over
// the pool's threads (pool.hpp). Compiled once per instruction set (src/cpu/isa_begin.hpp).
#include "includes.hpp"
// clang-format off
#include "isa_begin.hpp"
#include "loops.hpp"
#include "coeff_memo.hpp"
// clang-format on

namespace vecnorm::detail::cpu::VECNORM_CPU_ISA {
namespace {

using core::StatsIn;

/// Elements [b, e) with one count per key, y[i] written to out[i - b]. A
/// function of its own (all operands local) so that the loop vectorizes.
/// kKeep (NonFinite::skip, a chunk that holds a non-finite x): those elements'
/// statistics are written back as they are.
template <class Est, class X, class S, class C, bool kUpdate, bool kNormalize, bool kKeep, StatsIn kIn, class Y>
void elementwise_loop_to(const X* x, const core::ElementStats<S> st, Y* out, std::int64_t b, std::int64_t e,
                         const core::Coeffs<C> c, const core::ScaleRule<C> eps) {
  VECNORM_IVDEP
  for (std::int64_t i = b; i < e; ++i)
    core::element_step<Est, S, C, kUpdate, kNormalize, kKeep, kIn, false>(x, st, out, i, i - b, c, eps);
}

/// Options::clip over out[0, n) (values of C), where there is a bound: a pass of
/// its own over values still in L1, so that the step's loop stays a vector loop.
template <class C>
void clip_block(C* out, std::int64_t n, C clip) {
  if (!(clip < std::numeric_limits<C>::infinity())) return;
  VECNORM_IVDEP
  for (std::int64_t j = 0; j < n; ++j) out[j] = core::clip_to(out[j], clip);
}

/// The loop above; outputs of a narrower type than C (float16/bfloat16) are
/// computed into an L1 block of C and converted by a loop of their own: the
/// rounding in the same loop as torchrl's selects left GCC with more control
/// flow than it would vectorize (a scalar loop, 3x slower than stable's).
template <class Est, class X, class S, class C, bool kUpdate, bool kNormalize, bool kKeep, StatsIn kIn>
void elementwise_loop(const X* x, const core::ElementStats<S>& st, out_t<X>* out, std::int64_t b, std::int64_t e,
                      const core::Coeffs<C> c, const core::ScaleRule<C> eps) {
  using Y = out_t<X>;
  if constexpr (kNormalize && !std::is_same_v<Y, C>) {
    constexpr std::int64_t kBlock = 512;
    C block[kBlock];
    for (std::int64_t b2 = b; b2 < e; b2 += kBlock) {
      const std::int64_t e2 = std::min(e, b2 + kBlock);
      elementwise_loop_to<Est, X, S, C, kUpdate, kNormalize, kKeep, kIn, C>(x, st, block, b2, e2, c, eps);
      clip_block(block, e2 - b2, eps.clip);
      Y* o2 = out + (b2 - b);
      for (std::int64_t j = 0; j < e2 - b2; ++j) core::store(o2 + j, block[j]);
    }
  } else {
    elementwise_loop_to<Est, X, S, C, kUpdate, kNormalize, kKeep, kIn, Y>(x, st, out, b, e, c, eps);
    if constexpr (kNormalize) clip_block(out, e - b, eps.clip);
  }
}

/// Elements [b, e) of a key with one count per key. kSkip (NonFinite::skip):
/// each run of kCheck elements is first checked for a non-finite x (an OR
/// reduction over values then in L1, a vector loop); clean runs take the
/// plain loop, the rare dirty one the loop that keeps those elements.
/// Returns the elements kept out of the statistics.
constexpr std::int64_t kCheck = 1024;
template <class Est, class X, class S, class C, bool kUpdate, bool kNormalize, bool kSkip, StatsIn kIn>
std::int64_t elementwise_chunk(const X* x, const core::ElementStats<S>& st, out_t<X>* out, std::int64_t b,
                               std::int64_t e, const core::Coeffs<C> c, const core::ScaleRule<C> eps) {
  if constexpr (!kSkip || !kUpdate) {
    elementwise_loop<Est, X, S, C, kUpdate, kNormalize, false, kIn>(x, st, out, b, e, c, eps);
    return 0;
  } else {
    std::int64_t kept = 0;
    for (std::int64_t b2 = b; b2 < e; b2 += kCheck) {
      const std::int64_t e2 = std::min(e, b2 + kCheck);
      unsigned bad = 0;
      VECNORM_IVDEP
      for (std::int64_t i = b2; i < e2; ++i) bad |= core::is_finite(core::load<C>(x + i)) ? 0u : 1u;
      out_t<X>* o2 = out == nullptr ? nullptr : out + (b2 - b);
      if (bad == 0) {
        elementwise_loop<Est, X, S, C, kUpdate, kNormalize, false, kIn>(x, st, o2, b2, e2, c, eps);
        continue;
      }
      elementwise_loop<Est, X, S, C, kUpdate, kNormalize, true, kIn>(x, st, o2, b2, e2, c, eps);
      for (std::int64_t i = b2; i < e2; ++i) kept += core::is_finite(core::load<C>(x + i)) ? 0 : 1;
    }
    return kept;
  }
}

/// Coefficients of the element counts a chunk meets, each computed once
/// (direct-mapped: the counts of elements left out differ by a few).
template <class Est, class C, bool kUpdate>
struct CountCoeffs {
  std::int64_t n[16];
  core::Coeffs<C> c[16];
  CountCoeffs() { std::fill(std::begin(n), std::end(n), std::int64_t{-1}); }
  const core::Coeffs<C>& at(const core::Decay& d, std::int64_t count) {
    const std::size_t k = static_cast<std::size_t>(count) & 15u;
    if (n[k] != count) {
      c[k] = core::element_coeffs<Est, C, kUpdate>(d, count);
      n[k] = count;
    }
    return c[k];
  }
};

/// Elements [b, e) of segment s, all of count n, through the vector loops with
/// coefficients c (x[b] -> out[0]); returns those a non-finite value left out
/// (recorded in their skips).
template <class Est, class X, class S, class C, bool kUpdate, bool kNormalize, bool kSkip>
inline __attribute__((always_inline)) std::int64_t vector_span(const Segment& s, const core::CountRule& rule,
                                                               const core::ElementStats<S>& st, out_t<X>* out,
                                                               std::int64_t b, std::int64_t e, const core::Coeffs<C>& c,
                                                               const core::ScaleRule<C>& eps, std::int64_t n) {
  const X* x = static_cast<const X*>(s.x);
  const std::int64_t k =
      st.loc_in == nullptr
          ? elementwise_chunk<Est, X, S, C, kUpdate, kNormalize, kSkip, StatsIn::zeros>(x, st, out, b, e, c, eps)
          : elementwise_chunk<Est, X, S, C, kUpdate, kNormalize, kSkip, StatsIn::load>(x, st, out, b, e, c, eps);
  if (k > 0)  // rare: record which elements were left out
    for (std::int64_t i = b; i < e; ++i)
      if (!core::is_finite(core::load<C>(x + i))) core::record_update(s, rule, i, n, true);
  return k;
}

/// Elements [begin, end) of a per-element segment whose counts vary (see
/// elementwise_range); returns the updates left out. A function of its own,
/// so that the common path's stays as small as it was.
template <class Est, class X, class S, Work kWork, bool kSkip>
__attribute__((noinline)) std::int64_t varying_range(const Plan& p, const Segment& s, const core::CountRule rule,
                                                    const std::uint8_t* mask, std::int64_t begin, std::int64_t end,
                                                    bool stream) {
  using C = compute_t<X, S>;
  using Y = out_t<X>;
  constexpr bool kUpdate = updates(kWork);
  constexpr bool kNormalize = writes_output(kWork);
  const X* x = static_cast<const X*>(s.x);
  const core::ElementStats<S> st{static_cast<const S*>(s.loc_in), static_cast<const S*>(s.var_in),
                                 static_cast<S*>(s.loc_out), static_cast<S*>(s.var_out)};
  const core::ScaleRule<C> eps = p.rule.as<C>();
  std::int64_t kept = 0;
  CountCoeffs<Est, C, kUpdate> update_coeffs;
  CountCoeffs<Est, C, false> normalize_coeffs;
  // Element i alone: its own count, its row's mask byte.
  auto one = [&](std::int64_t i, std::int64_t b, Y* out) {
    const std::int64_t n = core::element_count(s, rule, i);
    if constexpr (kUpdate) {
      if (core::masked_out(mask, i, s.feat)) {  // its row is left out: normalized at its count
        core::masked_element_step<Est, S, C, kNormalize>(x, st, out, i, i - b, normalize_coeffs.at(p.decay, n), eps);
        core::record_update(s, rule, i, n, true);
        ++kept;
        return;
      }
    }
    const bool kept_out =
        core::element_step<Est, S, C, kUpdate, kNormalize, kSkip>(x, st, out, i, i - b, update_coeffs.at(p.decay, n), eps);
    if constexpr (kUpdate) {
      core::record_update(s, rule, i, n, kept_out);
      kept += kept_out ? 1 : 0;
    }
  };
  // One count per key (less each element's skips): runs of whole rows whose
  // elements share a count and the mask's verdict (a mask leaves rows out
  // whole) take the vector loops with that count's coefficients; a row whose
  // elements differ (non-finite values left some out) goes element by element.
  const bool by_rows = !rule.per_element;
  // Whether the elements [j, e2) all have k0 skips.
  auto same_skips = [&](std::int64_t j, std::int64_t e2, std::int64_t k0) {
    if (!rule.use_skips) return true;
    std::int64_t differ = 0;
    for (; j < e2; ++j) differ |= s.skips[j] ^ k0;
    return differ == 0;
  };
  auto row_left_out = [&](std::int64_t i) {
    if constexpr (kUpdate) return core::masked_out(mask, i, s.feat);
    return false;
  };
  write_out(static_cast<Y*>(kNormalize ? s.y : nullptr), begin, end, stream, [&](std::int64_t b, std::int64_t e, Y* out) {
    if (!by_rows) {
      for (std::int64_t i = b; i < e; ++i) one(i, b, out);
      return;
    }
    for (std::int64_t i = b; i < e;) {
      std::int64_t run_end = std::min(e, (i / s.feat + 1) * s.feat);
      const std::int64_t k0 = rule.use_skips ? s.skips[i] : 0;
      if (!same_skips(i + 1, run_end, k0)) {
        for (std::int64_t j = i; j < run_end; ++j) one(j, b, out);
        i = run_end;
        continue;
      }
      const bool left_out = row_left_out(i);
      while (run_end < e) {  // the next rows, while they agree
        const std::int64_t next = std::min(e, run_end + s.feat);
        if (row_left_out(run_end) != left_out || !same_skips(run_end, next, k0)) break;
        run_end = next;
      }
      const std::int64_t row_end = run_end;
      const std::int64_t n = core::element_count(s, rule, i);
      Y* o = out == nullptr ? nullptr : out + (i - b);
      if (left_out) {
        if constexpr (kUpdate) {  // the row's statistics as they are, one more skip each
          keep_range<S>(s, i, row_end);
          if constexpr (kNormalize) {
            const core::Coeffs<C> c = normalize_coeffs.at(p.decay, n);
            if (st.loc_in == nullptr)
              elementwise_loop<Est, X, S, C, false, true, false, StatsIn::zeros>(x, st, o, i, row_end, c, eps);
            else
              elementwise_loop<Est, X, S, C, false, true, false, StatsIn::load>(x, st, o, i, row_end, c, eps);
          }
          if (s.skips != nullptr)
            for (std::int64_t j = i; j < row_end; ++j) ++s.skips[j];
          kept += row_end - i;
        }
      } else {
        kept += vector_span<Est, X, S, C, kUpdate, kNormalize, kSkip>(s, rule, st, o, i, row_end,
                                                                     update_coeffs.at(p.decay, n), eps, n);
      }
      i = row_end;
    }
  });
  return kept;
}

/// Elements [begin, end) of a per-element segment; returns the updates left out
/// (NonFinite::skip, and the elements of the rows a mask leaves out). Two
/// shapes of loop:
///  * all elements share the key's count (no element has ever been left
///    out, no row mask): the vector loops above, one set of coefficients;
///  * counts vary per element (stateless, or per key less the element's
///    skips; every update with a row mask): varying_range: per key, runs of
///    rows whose elements share a count through the vector loops, else
///    element by element, the coefficients of each count computed once (CountCoeffs).
template <class Est, class X, class S, Work kWork, bool kSkip>
std::int64_t elementwise_range(const Plan& p, const Segment& s, bool per_element, bool use_skips,
                               std::int64_t key_count, double key_weight, double key_inv_bc, double key_var0,
                               const std::uint8_t* mask, std::int64_t begin, std::int64_t end, bool stream) {
  const core::CountRule rule{per_element, use_skips, key_count};
  if (core::varying_counts(rule) || mask != nullptr)
    return varying_range<Est, X, S, kWork, kSkip>(p, s, rule, mask, begin, end, stream);
  using C = compute_t<X, S>;
  using Y = out_t<X>;
  constexpr bool kUpdate = updates(kWork);
  constexpr bool kNormalize = writes_output(kWork);
  const core::ElementStats<S> st{static_cast<const S*>(s.loc_in), static_cast<const S*>(s.var_in),
                                 static_cast<S*>(s.loc_out), static_cast<S*>(s.var_out)};
  const core::ScaleRule<C> eps = p.rule.as<C>();
  std::int64_t kept = 0;
  // The key's coefficients, computed in double (memo) and rounded to C:
  // element_coeffs<Est, C> rounds the same double values.
  const core::Coeffs<C> c{static_cast<C>(key_weight), static_cast<C>(key_inv_bc), static_cast<C>(key_var0)};
  write_out(static_cast<Y*>(kNormalize ? s.y : nullptr), begin, end, stream, [&](std::int64_t b, std::int64_t e, Y* out) {
    kept += vector_span<Est, X, S, C, kUpdate, kNormalize, kSkip>(s, rule, st, out, b, e, c, eps, rule.key_count);
  });
  return kept;
}

/// All elements of a segment split over the threads; returns the updates left
/// out. The count rule travels as scalars and is built where it is used: as a
/// struct copied through the closures, GCC stored it field by field and loaded
/// it back as one vector, a failed store-to-load forward on every call (~10%
/// of a 1x17 step on this machine).
template <class Est, class X, class S, Work kWork, bool kSkip>
std::int64_t elementwise_all(const Plan& p, const Segment& s, const core::CountRule& rule,
                             const core::Coeffs<double>& key_coeffs, const std::uint8_t* mask, bool stream) {
  std::int64_t kept = 0;
  const bool per_element = rule.per_element, use_skips = rule.use_skips;
  const std::int64_t key_count = rule.key_count;
  const double weight = key_coeffs.weight, inv_bc = key_coeffs.inv_bc, var0 = key_coeffs.var0;
  parallel_for(s.rows * s.feat, max_threads(p.threads), kGrain, 64, [&](std::int64_t b, std::int64_t e, int) {
    const std::int64_t k = elementwise_range<Est, X, S, kWork, kSkip>(p, s, per_element, use_skips, key_count, weight,
                                                                      inv_bc, var0, mask, b, e, stream);
    if (k > 0) std::atomic_ref<std::int64_t>(kept).fetch_add(k, std::memory_order_relaxed);
  });
  return kept;
}

template <class Est, class X, class S>
void elementwise_segment(const Plan& p, const Segment& s, Scratch& ws) {
  const std::int64_t n = s.rows * s.feat;
  // Integers are always finite: no check.
  const bool skip = p.nonfinite == NonFinite::skip && !std::is_integral_v<X>;
  core::CountRule rule;
  rule.per_element = p.counts == CountLayout::per_element;
  rule.key_count = !rule.per_element && s.count_in != nullptr ? *s.count_in : 0;
  Work work = p.work;
  if (updates(work) && !rule.per_element && core::updates_stopped(p.decay, rule.key_count)) {
    // Options::until: the key's updates have stopped; a step only normalizes.
    keep_stats<S>(s, n);
    *s.count_out = rule.key_count;
    if (work == Work::update) return;
    work = Work::normalize;
  }
  // A row mask (updates only): the elements of the rows it leaves out keep
  // their statistics, and with one count per key add one to their skips.
  const std::uint8_t* mask = updates(work) ? s.mask : nullptr;
  // Counts per element also when the key's elements have been left out
  // before (the health counter counts them) or a mask may leave some out now
  // (the frontend gives a masked per-key segment skips and a health counter).
  rule.use_skips = !rule.per_element && s.skips != nullptr && s.skipped != nullptr && (mask != nullptr || *s.skipped != 0);
  const bool stream = writes_output(work) && static_cast<std::size_t>(n) * sizeof(out_t<X>) >= kStreamBytes;
  // One count for the whole key: its coefficients once, shared with the keys
  // of the call that have the same count.
  core::Coeffs<double> kc{0.0, 1.0};
  if (!core::varying_counts(rule))
    kc = updates(work) ? memo_coeffs<Est>(ws.memo, kMemoUpdate, p.decay, rule.key_count, 1)
                       : memo_coeffs<Est>(ws.memo, kMemoNormalize, p.decay, rule.key_count, 0);
  std::int64_t kept = 0;
  switch (work) {
    case Work::update_and_normalize:
      kept = skip ? elementwise_all<Est, X, S, Work::update_and_normalize, true>(p, s, rule, kc, mask, stream)
                  : elementwise_all<Est, X, S, Work::update_and_normalize, false>(p, s, rule, kc, mask, stream);
      break;
    case Work::update:
      kept = skip ? elementwise_all<Est, X, S, Work::update, true>(p, s, rule, kc, mask, stream)
                  : elementwise_all<Est, X, S, Work::update, false>(p, s, rule, kc, mask, stream);
      break;
    default: elementwise_all<Est, X, S, Work::normalize, false>(p, s, rule, kc, nullptr, stream); break;
  }
  if (!updates(work)) return;
  // One count per key moves once per step (after the elements are done), and
  // the health counter by the elements left out.
  if (!rule.per_element) *s.count_out = rule.key_count + 1;
  if (kept > 0 && s.skipped != nullptr) *s.skipped += kept;
}

}  // namespace

void run_elementwise(const Plan& plan, const Segment& s, Scratch& ws) {
  core::visit(plan.estimator, [&](auto est) {
    using Est = decltype(est);
    visit_input(s.x_dtype, [&](auto xt) {
      using X = typename decltype(xt)::type;
      visit_float(s.stats_dtype, [&](auto st) { elementwise_segment<Est, X, typename decltype(st)::type>(plan, s, ws); });
    });
  });
}

}  // namespace vecnorm::detail::cpu::VECNORM_CPU_ISA

#include "isa_end.hpp"
