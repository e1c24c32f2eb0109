// src/cpu/cpu_backend.cpp -- the CPU backend: vectorizable loops over the
// numeric core, split over OpenMP threads for large batches.
//
// The loops contain no formula of their own: every update and normalization
// is a call into vecnorm/core/numerics.hpp. What lives here is data movement:
// dtype dispatch, the row/feature loop order that lets the compiler vectorize
// the feature loop, the split of the work over threads, and (pooled mode) the
// fixed-order merge of per-thread partial moments.
//
// Determinism: the split of the work depends only on the sizes and the thread
// count, and partials are merged in thread order, so the same input and thread
// count give the same bits on every run.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "../backends.hpp"
#include "../params.hpp"
#include "vecnorm/core/convert.hpp"
#include "vecnorm/core/numerics.hpp"

// Loops over elements carry `VECNORM_IVDEP`: every access of iteration i is at
// index i, and validation guarantees that any two buffers are either disjoint
// or identical (in place), so no iteration depends on another. Without it the
// compiler's runtime alias checks fail for in-place calls and it runs the
// scalar fallback loop.
#if defined(__GNUC__) && !defined(__clang__)
#define VECNORM_IVDEP _Pragma("GCC ivdep")
#elif defined(__clang__)
#define VECNORM_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#else
#define VECNORM_IVDEP
#endif

namespace vecnorm::detail::cpu {
namespace {

using core::bf16_t;
using core::half_t;

template <class T>
struct Tag {
  using type = T;
};

/// Calls f(Tag<X>{}) with X the storage type of dtype d.
template <class F>
void visit_input(DType d, F&& f) {
  switch (d) {
    case DType::float32: return f(Tag<float>{});
    case DType::float64: return f(Tag<double>{});
    case DType::float16: return f(Tag<half_t>{});
    case DType::bfloat16: return f(Tag<bf16_t>{});
    case DType::int32: return f(Tag<std::int32_t>{});
    case DType::int64: return f(Tag<std::int64_t>{});
    case DType::uint8: return f(Tag<std::uint8_t>{});
  }
}

template <class F>
void visit_float(DType d, F&& f) {
  if (d == DType::float64) return f(Tag<double>{});
  return f(Tag<float>{});
}

template <class X>
using out_t = core::output_t<X>;
using core::compute_t;

int max_threads(int requested) {
#if defined(_OPENMP)
  return requested > 0 ? requested : omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}

/// Below this many elements per thread, another thread costs more than it saves.
constexpr std::int64_t kGrain = 16384;

/// Runs body(begin, end, thread) over [0, n) split into contiguous chunks, one
/// per thread, aligned to `align` units. The split depends only on n and the
/// thread count. `threads` is the most threads to use.
template <class F>
void parallel_for(std::int64_t n, int threads, std::int64_t grain, std::int64_t align, F&& body) {
  const std::int64_t want = std::max<std::int64_t>(1, std::min<std::int64_t>(threads, n / std::max<std::int64_t>(grain, 1)));
  if (want <= 1) {
    body(std::int64_t{0}, n, 0);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel num_threads(static_cast<int>(want))
  {
    const std::int64_t t = omp_get_thread_num();
    const std::int64_t nt = omp_get_num_threads();
    auto edge = [&](std::int64_t k) {
      if (k >= nt) return n;
      const std::int64_t e = (n * k / nt) / align * align;
      return std::min(e, n);
    };
    const std::int64_t b = edge(t), e = edge(t + 1);
    if (b < e) body(b, e, static_cast<int>(t));
  }
#else
  body(std::int64_t{0}, n, 0);
#endif
}

// ---------------------------------------------------------------------------
// Per-element statistics
// ---------------------------------------------------------------------------

template <class X, class S, bool Stable, CountLayout Counts, Op TheOp>
void elementwise_range(const Plan& p, const Segment& s, std::int64_t b, std::int64_t e) {
  using C = compute_t<X, S>;
  using Y = out_t<X>;
  constexpr bool kUpdate = TheOp != Op::normalize;
  constexpr bool kNormalize = TheOp != Op::update;
  const X* x = static_cast<const X*>(s.x);
  Y* y = static_cast<Y*>(s.y);
  const S* loc_in = static_cast<const S*>(s.loc_in);
  const S* var_in = static_cast<const S*>(s.var_in);
  S* loc_out = static_cast<S*>(s.loc_out);
  S* var_out = static_cast<S*>(s.var_out);
  const C eps = static_cast<C>(p.eps);

  auto coeffs_for = [&](std::int64_t n) {
    return kUpdate ? core::update_coeffs<C, Stable>(p.decay, n, 1) : core::normalize_coeffs<C, Stable>(p.decay, n);
  };

  if constexpr (Counts == CountLayout::per_key) {
    const std::int64_t n = s.count_in ? *s.count_in : 0;
    const core::Coeffs<C> c = coeffs_for(n);
    if (loc_in == nullptr) {
      // Missing statistics are zeros: the same loop with zero loads.
      VECNORM_IVDEP
      for (std::int64_t i = b; i < e; ++i) {
        const C xi = core::load<C>(x + i);
        C loc = C(0), var = C(0);
        if constexpr (kUpdate) {
          core::update_element<C, Stable>(loc, var, xi, c);
          loc_out[i] = static_cast<S>(loc);
          var_out[i] = static_cast<S>(var);
          loc = static_cast<C>(static_cast<S>(loc));
          var = static_cast<C>(static_cast<S>(var));
        }
        if constexpr (kNormalize) core::store(y + i, core::apply(core::element_affine<C, Stable>(loc, var, c, eps), xi));
      }
      return;
    }
    VECNORM_IVDEP
    for (std::int64_t i = b; i < e; ++i) {
      const C xi = core::load<C>(x + i);
      C loc = static_cast<C>(loc_in[i]), var = static_cast<C>(var_in[i]);
      if constexpr (kUpdate) {
        core::update_element<C, Stable>(loc, var, xi, c);
        // Normalize with the statistics as stored (rounded to the stats dtype),
        // so that read-outs, frozen steps and to_affine() agree bit for bit.
        const S ls = static_cast<S>(loc), vs = static_cast<S>(var);
        loc_out[i] = ls;
        var_out[i] = vs;
        loc = static_cast<C>(ls);
        var = static_cast<C>(vs);
      }
      if constexpr (kNormalize) core::store(y + i, core::apply(core::element_affine<C, Stable>(loc, var, c, eps), xi));
    }
  } else {
    // Counts per element (stateless): the coefficients depend on each count;
    // they are recomputed only when the count changes (usually never).
    std::int64_t cached = -1;
    core::Coeffs<C> c{};
    for (std::int64_t i = b; i < e; ++i) {
      const std::int64_t n = s.count_in ? s.count_in[i] : 0;
      if (n != cached) {
        c = coeffs_for(n);
        cached = n;
      }
      const C xi = core::load<C>(x + i);
      C loc = loc_in ? static_cast<C>(loc_in[i]) : C(0);
      C var = var_in ? static_cast<C>(var_in[i]) : C(0);
      if constexpr (kUpdate) {
        core::update_element<C, Stable>(loc, var, xi, c);
        const S ls = static_cast<S>(loc), vs = static_cast<S>(var);
        loc_out[i] = ls;
        var_out[i] = vs;
        s.count_out[i] = n + 1;
        loc = static_cast<C>(ls);
        var = static_cast<C>(vs);
      }
      if constexpr (kNormalize) core::store(y + i, core::apply(core::element_affine<C, Stable>(loc, var, c, eps), xi));
    }
  }
}

template <class X, class S, bool Stable, CountLayout Counts>
void elementwise_segment(const Plan& p, const Segment& s) {
  const std::int64_t n = s.rows * s.feat;
  auto run = [&](auto op_tag) {
    constexpr Op kOp = decltype(op_tag)::value;
    parallel_for(n, max_threads(p.threads), kGrain, 64, [&](std::int64_t b, std::int64_t e, int) {
      elementwise_range<X, S, Stable, Counts, kOp>(p, s, b, e);
    });
  };
  switch (p.op) {
    case Op::update_and_normalize: run(std::integral_constant<Op, Op::update_and_normalize>{}); break;
    case Op::update: run(std::integral_constant<Op, Op::update>{}); break;
    case Op::normalize: run(std::integral_constant<Op, Op::normalize>{}); break;
  }
  // One count per key moves once per step (after the elements are done).
  if (Counts == CountLayout::per_key && p.op != Op::normalize) *s.count_out = (s.count_in ? *s.count_in : 0) + 1;
}

// ---------------------------------------------------------------------------
// Affine maps (pooled normalize, to_affine, denormalize)
// ---------------------------------------------------------------------------

template <class X, class C, AffineDirection Dir>
void affine_range(const AffineSegment& s, std::int64_t row_b, std::int64_t row_e) {
  using Y = out_t<X>;
  const X* x = static_cast<const X*>(s.x);
  Y* y = static_cast<Y*>(s.y);
  const C* __restrict mu = static_cast<const C*>(s.mu);
  const C* __restrict q = static_cast<const C*>(s.p);
  const std::int64_t F = s.feat;
  for (std::int64_t r = row_b; r < row_e; ++r) {
    const std::int64_t base = r * F;
    const std::int64_t pbase = s.broadcast ? 0 : base;
    VECNORM_IVDEP
    for (std::int64_t f = 0; f < F; ++f) {
      const C xi = core::load<C>(x + base + f);
      C out;
      if constexpr (Dir == AffineDirection::apply) {
        out = core::apply(core::Affine<C>{mu[pbase + f], q[pbase + f]}, xi);
      } else {
        out = core::unapply(mu[pbase + f], q[pbase + f], xi);
      }
      core::store(y + base + f, out);
    }
  }
}

template <class X, class C>
void affine_segment(const AffineSegment& s, AffineDirection dir, int threads) {
  const std::int64_t grain_rows = std::max<std::int64_t>(1, kGrain / std::max<std::int64_t>(s.feat, 1));
  parallel_for(s.rows, threads, grain_rows, 1, [&](std::int64_t b, std::int64_t e, int) {
    if (dir == AffineDirection::apply)
      affine_range<X, C, AffineDirection::apply>(s, b, e);
    else
      affine_range<X, C, AffineDirection::invert>(s, b, e);
  });
}

void run_affine_segment(const AffineSegment& s, AffineDirection dir, int threads) {
  visit_input(s.x_dtype, [&](auto xt) {
    using X = typename decltype(xt)::type;
    visit_float(s.param_dtype, [&](auto ct) {
      using C = typename decltype(ct)::type;
      affine_segment<X, C>(s, dir, threads);
    });
  });
}

// ---------------------------------------------------------------------------
// Pooled statistics
// ---------------------------------------------------------------------------

/// Rows per tile: the float partial sums of one tile are folded into the
/// thread's double moments (Chan) after at most this many rows, which bounds
/// the rounding error of the float accumulation.
constexpr std::int64_t kTileRows = 128;

template <class X, class C>
void pooled_moments_range(const X* __restrict x, std::int64_t F, const C* __restrict shift, std::int64_t row_b,
                          std::int64_t row_e, C* __restrict s1, C* __restrict s2, core::Moments* mom) {
  for (std::int64_t t0 = row_b; t0 < row_e; t0 += kTileRows) {
    const std::int64_t t1 = std::min(row_e, t0 + kTileRows);
    std::fill(s1, s1 + F, C(0));
    std::fill(s2, s2 + F, C(0));
    for (std::int64_t r = t0; r < t1; ++r) {
      const X* row = x + r * F;
      VECNORM_IVDEP
      for (std::int64_t f = 0; f < F; ++f) {
        const C d = core::load<C>(row + f) - shift[f];
        s1[f] += d;
        s2[f] += d * d;
      }
    }
    const double n = static_cast<double>(t1 - t0);
    for (std::int64_t f = 0; f < F; ++f)
      mom[f] = core::merge(mom[f], core::moments_from_shifted(n, static_cast<double>(shift[f]),
                                                              static_cast<double>(s1[f]), static_cast<double>(s2[f])));
  }
}

template <class X, class S, bool Stable>
void pooled_segment(const Plan& p, const Segment& s, Workspace& ws) {
  using C = compute_t<X, S>;
  const std::int64_t F = s.feat, m = s.rows;
  const X* x = static_cast<const X*>(s.x);
  const S* loc_in = static_cast<const S*>(s.loc_in);
  const S* var_in = static_cast<const S*>(s.var_in);
  const std::int64_t n = s.count_in ? *s.count_in : 0;
  const bool update = p.op != Op::normalize && m > 0;
  const bool normalize = p.op != Op::update;
  const int threads = max_threads(p.threads);
  const int nt = static_cast<int>(std::max<std::int64_t>(
      1, std::min<std::int64_t>(threads, (m * F) / kGrain)));

  // Workspace: shift[F], per-thread sums 2F, per-thread moments 3F (doubles),
  // params mu[F], r[F]. C-typed arrays live in the double buffer too (aligned).
  const std::size_t need = static_cast<std::size_t>(F) * (1 + 2 * nt + 3 * nt + 2);
  if (ws.f64.size() < need) ws.f64.resize(need);
  double* base = ws.f64.data();
  C* shift = reinterpret_cast<C*>(base);
  C* sums = reinterpret_cast<C*>(base + F);
  auto* mom = reinterpret_cast<core::Moments*>(base + F * (1 + 2 * nt));
  C* mu = reinterpret_cast<C*>(base + F * (1 + 5 * nt));
  C* r = reinterpret_cast<C*>(base + F * (2 + 5 * nt));

  std::int64_t count_after = n;
  if (update) {
    for (std::int64_t f = 0; f < F; ++f) {
      const double loc = loc_in ? static_cast<double>(loc_in[f]) : 0.0;
      shift[f] = static_cast<C>(core::pooled_shift<Stable>(p.decay, loc, n, core::load<double>(x + f)));
    }
    std::fill(mom, mom + F * nt, core::Moments{});
    parallel_for(m, nt, 1, 1, [&](std::int64_t b, std::int64_t e, int t) {
      pooled_moments_range<X, C>(x, F, shift, b, e, sums + 2 * F * t, sums + 2 * F * t + F, mom + F * t);
    });
    S* loc_out = static_cast<S*>(s.loc_out);
    S* var_out = static_cast<S*>(s.var_out);
    for (std::int64_t f = 0; f < F; ++f) {
      core::Moments b = mom[f];
      for (int t = 1; t < nt; ++t) b = core::merge(b, mom[F * t + f]);
      double loc = loc_in ? static_cast<double>(loc_in[f]) : 0.0;
      double var = var_in ? static_cast<double>(var_in[f]) : 0.0;
      core::update_pooled<Stable>(p.decay, loc, var, n, m, b);
      loc_out[f] = static_cast<S>(loc);
      var_out[f] = static_cast<S>(var);
    }
    count_after = n + m;
    *s.count_out = count_after;
  } else if (p.op != Op::normalize) {
    // An empty batch adds nothing: statistics and count stay (copied if out != in).
    if (s.loc_out != s.loc_in)
      for (std::int64_t f = 0; f < F; ++f) {
        static_cast<S*>(s.loc_out)[f] = loc_in ? loc_in[f] : S(0);
        static_cast<S*>(s.var_out)[f] = var_in ? var_in[f] : S(0);
      }
    *s.count_out = n;
  }
  if (!normalize || m == 0) return;

  // The normalization of each feature, from the statistics as stored.
  const S* loc_now = update ? static_cast<const S*>(s.loc_out) : loc_in;
  const S* var_now = update ? static_cast<const S*>(s.var_out) : var_in;
  const auto c = core::normalize_coeffs<double, Stable>(p.decay, count_after);
  for (std::int64_t f = 0; f < F; ++f) {
    const auto a = core::element_affine<double, Stable>(static_cast<double>(loc_now[f]),
                                                        static_cast<double>(var_now[f]), c, p.eps);
    mu[f] = static_cast<C>(a.mu);
    r[f] = static_cast<C>(a.r);
  }
  AffineSegment as;
  as.key = s.key;
  as.x = s.x;
  as.x_dtype = s.x_dtype;
  as.y = s.y;
  as.rows = m;
  as.feat = F;
  as.broadcast = true;
  as.param_dtype = std::is_same_v<C, double> ? DType::float64 : DType::float32;
  as.mu = mu;
  as.p = r;
  affine_segment<X, C>(as, AffineDirection::apply, threads);
}

/// Denormalize one key: the map (mu, scale) of its statistics, then y = x * scale + mu.
template <class X, class S, bool Stable>
void invert_segment(const Plan& p, const Segment& s, Workspace& ws) {
  using C = compute_t<X, S>;
  const std::int64_t numel = p.pooled ? s.feat : s.rows * s.feat;
  const std::size_t need = 2 * static_cast<std::size_t>(numel);
  if (ws.f64.size() < need) ws.f64.resize(need);
  C* mu = reinterpret_cast<C*>(ws.f64.data());
  C* scale = mu + numel;
  host_params<S, C, Stable>(p.decay, p.eps, p.pooled, static_cast<const S*>(s.loc_in), static_cast<const S*>(s.var_in),
                            *s.count_in, numel, true, mu, scale);
  AffineSegment as;
  as.key = s.key;
  as.x = s.x;
  as.x_dtype = s.x_dtype;
  as.y = s.y;
  as.rows = s.rows;
  as.feat = s.feat;
  as.broadcast = p.pooled;
  as.param_dtype = std::is_same_v<C, double> ? DType::float64 : DType::float32;
  as.mu = mu;
  as.p = scale;
  affine_segment<X, C>(as, AffineDirection::invert, max_threads(p.threads));
}

template <class X, class S>
void run_segment_typed(const Plan& p, const Segment& s, Workspace& ws) {
  const bool stable = p.estimator == Estimator::stable;
  if (p.invert) {
    if constexpr (std::is_same_v<X, float> || std::is_same_v<X, double> || std::is_same_v<X, half_t> ||
                  std::is_same_v<X, bf16_t>) {
      if (stable)
        invert_segment<X, S, true>(p, s, ws);
      else
        invert_segment<X, S, false>(p, s, ws);
    }
    return;
  }
  if (p.pooled) {
    if (stable)
      pooled_segment<X, S, true>(p, s, ws);
    else
      pooled_segment<X, S, false>(p, s, ws);
  } else if (p.counts == CountLayout::per_key) {
    if (stable)
      elementwise_segment<X, S, true, CountLayout::per_key>(p, s);
    else
      elementwise_segment<X, S, false, CountLayout::per_key>(p, s);
  } else {
    if (stable)
      elementwise_segment<X, S, true, CountLayout::per_element>(p, s);
    else
      elementwise_segment<X, S, false, CountLayout::per_element>(p, s);
  }
}

}  // namespace

void run(const Plan& plan, Workspace& ws) {
  for (const Segment& s : plan.segments) {
    visit_input(s.x_dtype, [&](auto xt) {
      using X = typename decltype(xt)::type;
      visit_float(plan.stats_dtype, [&](auto st) {
        using S = typename decltype(st)::type;
        run_segment_typed<X, S>(plan, s, ws);
      });
    });
  }
}

void run(const AffinePlan& plan) {
  const int threads = max_threads(plan.threads);
  for (const AffineSegment& s : plan.segments) run_affine_segment(s, plan.direction, threads);
}

}  // namespace vecnorm::detail::cpu
