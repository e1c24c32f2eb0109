// src/cpu/pooled.cpp -- pooled statistics on the CPU: core::PooledOps
// (vecnorm/core/pooled.hpp), its chunks run by the pool's threads. Compiled once per
// instruction set (src/cpu/isa_begin.hpp).
//
// Shifted sums s1 = sum(x - K), s2 = sum((x - K)^2) per column, with one shift
// K per feature for the whole call (the current mean), so that partial sums of
// any rows combine by addition. Each tile of at most kTileRows rows is summed
// in the compute type C, up to four vectors of columns at a time in registers,
// then added to double sums: the rounding error of the float sums stays
// bounded by the tile (the tiles: src/cpu/pooled_tiles.hpp; here the chunks,
// the merge, the update and the normalization).
#include "includes.hpp"
// clang-format off
#include "isa_begin.hpp"
#include "loops.hpp"
#include "map_loops.hpp"
#include "coeff_memo.hpp"
#include "pooled_tiles.hpp"
// clang-format on

namespace vecnorm::detail::cpu::VECNORM_CPU_ISA {
namespace {

/// The shifted sums of the rows an update keeps, in double, one thread, when
/// the batch holds a non-finite value under NonFinite::skip (rare): the rows
/// a row mask keeps (KeyData::mask; null: all;
/// core::row_weight: int32 weights count w copies of their row) whose values
/// are all finite (with `finite_only`). Shifts as PooledOps::shift, the first
/// kept row standing in for the first sample. Returns the weight of the kept
/// rows (their number, unweighted).
template <class Est, class X, class S, class C>
std::int64_t masked_sums(const Plan& p, const X* x, const std::uint8_t* mask, bool weighted, bool finite_only,
                         std::int64_t m, std::int64_t F, const S* loc_in, std::int64_t n, C* shift, double* s1,
                         double* s2) {
  using Ops = core::PooledOps<Est>;
  auto row_ok = [&](std::int64_t r) -> std::int64_t {
    const std::int64_t w = core::row_weight(mask, weighted, r);
    if (w == 0) return 0;
    if (finite_only)
      for (std::int64_t f = 0; f < F; ++f)
        if (!core::is_finite(core::load<double>(x + r * F + f))) return 0;
    return w;
  };
  std::int64_t first = 0;
  while (first < m && row_ok(first) == 0) ++first;
  std::fill(s1, s1 + F, 0.0);
  std::fill(s2, s2 + F, 0.0);
  if (first == m) return 0;
  const core::Coeffs<double> shift_c = Ops::shift_coeffs(p.decay, n);
  for (std::int64_t f = 0; f < F; ++f) {
    const double loc = loc_in ? static_cast<double>(loc_in[f]) : 0.0;
    shift[f] = static_cast<C>(Ops::shift(shift_c, loc, n, core::load<double>(x + first * F + f)));
  }
  std::int64_t ok = 0;
  for (std::int64_t r = first; r < m; ++r) {
    const std::int64_t w = row_ok(r);
    if (w == 0) continue;
    ok += w;
    const double wd = static_cast<double>(w);  // (1 for a uint8 mask: reduce's bits)
    for (std::int64_t f = 0; f < F; ++f)
      Ops::reduce_weighted(s1[f], s2[f], core::load<double>(x + r * F + f) - static_cast<double>(shift[f]), wd);
  }
  return ok;
}

/// The chunks of a pooled segment's R full super rows of width W: their
/// boundaries depend on the sizes only (never on the thread count).
Chunks row_chunks(std::int64_t R, std::int64_t W) {
  return Chunks(R, std::max<std::int64_t>(1, kGrain / std::max<std::int64_t>(W, 1)), 1);
}

/// The host scratch of a pooled segment of `rows` rows: shift[W] (type C),
/// sums 2W per chunk + 2W for the tail, mu[F] and r[F] (type C), each
/// feature's sums s1[F], s2[F] (in doubles; W <= max(F, kMaxSuper)).
std::size_t pooled_doubles(std::int64_t feat, std::int64_t rows) {
  const std::int64_t w = std::min(super_width(feat), rows * feat);
  const std::size_t W = static_cast<std::size_t>(std::max<std::int64_t>(w, 0));
  const std::int64_t R = w > 0 ? rows * feat / w : 0;
  const std::size_t chunks = static_cast<std::size_t>(std::max<std::int64_t>(row_chunks(R, w).count, 1));
  return W * (1 + 2 * (chunks + 1)) + 4 * static_cast<std::size_t>(feat);
}

template <class Est, class X, class S>
void pooled_segment(const Plan& p, const Segment& s, Scratch& ws) {
  using C = compute_t<X, S>;
  using Ops = core::PooledOps<Est>;
  const std::int64_t F = s.feat, m = s.rows, n_elem = m * F;
  const X* x = static_cast<const X*>(s.x);
  const S* loc_in = static_cast<const S*>(s.loc_in);
  const S* var_in = static_cast<const S*>(s.var_in);
  const std::int64_t n = s.count_in ? *s.count_in : 0;
  // A distributed update (p.ranks > 0) updates even when this rank has no rows.
  // A key whose updates have stopped (Options::until) takes none, as an empty
  // batch (a distributed update's moments: n = 0; every rank has the same count).
  const bool update = ((updates(p.work) && (m > 0 || p.ranks > 0)) || (p.work == Work::moments && m > 0)) &&
                      !core::updates_stopped(p.decay, n);
  const bool normalize = writes_output(p.work);
  const int threads = max_threads(p.threads);
  // The rows an update would take: those a row mask keeps (rows it leaves
  // out are not skips: the health counter counts non-finite rows only), each
  // as many times as its weight where the mask holds weights.
  std::int64_t m_in = m;
  if (s.weighted) {
    m_in = 0;
    for (std::int64_t r = 0; r < m; ++r) m_in += core::row_weight(s.mask, true, r);
  } else if (s.mask != nullptr) {
    m_in = std::count_if(s.mask, s.mask + m, [](std::uint8_t b) { return b != 0; });
  }
  // The first row an update takes: its values stand in for the first sample
  // of the shift (row 0 when none is kept: the sums are then empty).
  std::int64_t first = 0;
  if (s.weighted)
    while (first < m && core::row_weight(s.mask, true, first) == 0) ++first;
  else if (s.mask != nullptr && m_in > 0)
    first = std::find_if(s.mask, s.mask + m, [](std::uint8_t b) { return b != 0; }) - s.mask;
  if (first == m) first = 0;

  // The data as super rows of width W: R full ones and a last partial one of
  // `tail` elements (a whole number of rows).
  const std::int64_t W = std::min(super_width(F), n_elem);
  const std::int64_t R = W > 0 ? n_elem / W : 0;
  const std::int64_t tail = n_elem - R * W;

  // One partial per chunk of super rows (merged in chunk order: the same bits
  // with any number of threads).
  const Chunks rc = row_chunks(R, W);
  const int nt = static_cast<int>(std::max<std::int64_t>(rc.count, 1));
  double* base = static_cast<double*>(ws.host(pooled_doubles(F, m) * sizeof(double)));
  C* shift = reinterpret_cast<C*>(base);
  double* sums = base + W;
  C* mu = reinterpret_cast<C*>(base + W * (1 + 2 * (nt + 1)));
  C* r = reinterpret_cast<C*>(base + W * (1 + 2 * (nt + 1)) + F);
  double* sums_f = base + W * (1 + 2 * (nt + 1)) + 2 * F;

  if (!update) {
    if (p.work == Work::moments) {  // no rows to add: a block of zeros (n = 0)
      std::fill(static_cast<double*>(s.y), static_cast<double*>(s.y) + core::exchange_key_doubles(F), 0.0);
      return;
    }
    if (updates(p.work)) {
      // An empty batch adds nothing: statistics and count stay (copied if out != in).
      keep_stats<S>(s, F);
      *s.count_out = n;
    }
    if (!normalize || m == 0) return;
    // Normalize only: the map of each feature from the statistics as stored.
    core::stats_maps<Est, S, C>(p.decay, p.rule, core::StoredStats<S>{loc_in, var_in, n, nullptr, F, true},
                                core::MapKind::normalize, mu, r);
    MapRun<C> run{s.x, s.y, m, F, true, mu, r, static_cast<C>(p.rule.clip)};
    map_segment<X, C>(run, core::MapKind::normalize, threads);
    return;
  }

  using Y = out_t<X>;
  Y* y = static_cast<Y*>(s.y);
  const bool stream = normalize && static_cast<std::size_t>(n_elem) * sizeof(Y) >= kStreamBytes;
  C mu_w[kMaxSuper], r_w[kMaxSuper];  // the map repeated over a super row (F < W)
  const C* mu_row = mu;
  const C* r_row = r;
  S* loc_out = static_cast<S*>(s.loc_out);
  S* var_out = static_cast<S*>(s.var_out);

  // Folds each feature's batch moments (moments_of(f), `added` rows in all,
  // every rank's) into the statistics, moves the count, and computes the
  // per-feature map of a step that normalizes; a batch Options::until stops
  // (until_strict: one that would pass the bound) adds nothing.
  auto store = [&](std::int64_t added, auto&& moments_of) {
    added = core::samples_taken(p.decay, n, added);
    const core::Coeffs<double> uc =
        added > 0 ? memo_coeffs<Est>(ws.memo, kMemoUpdate, p.decay, n, added) : core::Coeffs<double>{0.0, 1.0};
    // The normalization's coefficients at the new count: torchrl's update
    // computed the same bias correction already.
    core::Coeffs<double> nc{0.0, 1.0};
    if (added > 0) {
      nc = Est::normalize_after(uc);
      remember_shift<Est>(ws.memo, p.decay, n + added, nc);
    } else {
      nc = core::normalize_coeffs<Est, double>(p.decay, n);
    }
    for (std::int64_t f = 0; f < F; ++f) {
      const double loc = loc_in ? static_cast<double>(loc_in[f]) : 0.0;
      const double var = var_in ? static_cast<double>(var_in[f]) : 0.0;
      const core::Stored<S> st = Ops::template finalize<S>(uc, loc, var, added > 0 ? moments_of(f) : core::Moments{});
      loc_out[f] = st.loc;
      var_out[f] = st.var;
    }
    *s.count_out = n + added;
    if (!normalize) return;
    // The normalization of each feature, from the statistics as stored.
    core::stats_maps<Est, S, C>(p.decay, p.rule, core::StoredStats<S>{loc_out, var_out, n + added, nullptr, F, true},
                                core::MapKind::normalize, mu, r, 0, 1, &nc);
    if (W != F) {
      repeat_period(mu, F, mu_w, W);
      repeat_period(r, F, r_w, W);
      mu_row = mu_w;
      r_row = r_w;
    }
  };

  if (p.ranks > 0) {
    // A distributed update: the batch moments of every rank, merged in rank
    // order (core::GatheredKey), the same bits on every rank; this rank's
    // rows are only normalized.
    const core::GatheredKey g = p.gathered(s);
    const std::int64_t added = static_cast<std::int64_t>(g.rows());
    const std::int64_t own = static_cast<std::int64_t>(std::max(g.rows_of(p.rank), 0.0));
    if (own < m_in && s.skipped != nullptr) *s.skipped += m_in - own;
    store(added, [&](std::int64_t f) { return g.moments(f); });
    if (normalize && m > 0) {
      MapRun<C> run{s.x, s.y, m, F, true, mu, r, static_cast<C>(p.rule.clip)};
      map_segment<X, C>(run, core::MapKind::normalize, threads);
    }
    return;
  }

  // An update (and normalize), or a distributed update's moments: each chunk
  // of super rows is reduced into its own sums by whichever thread claims it;
  // this thread then merges them (chunk order) and updates the statistics (or
  // writes the moments); then the chunks are normalized, again by whoever is free.
  const core::Coeffs<double> shift_c = memo_coeffs<Est>(ws.memo, kMemoShift, p.decay, n, 0);
  for (std::int64_t f = 0; f < F; ++f) {
    const double loc = loc_in ? static_cast<double>(loc_in[f]) : 0.0;
    shift[f] = static_cast<C>(Ops::shift(shift_c, loc, n, core::load<double>(x + first * F + f)));
  }
  if (W != F) repeat_period(shift, F, shift, W);
  // A row mask over the super rows (W / F batch rows each; the tail's tail / F).
  std::uint8_t row_of[kMaxSuper];
  std::int32_t lane_row[kMaxSuper];
  const bool rows_per_super = s.mask != nullptr && F > 1 && W > F;  // (then W <= kMaxSuper)
  if (rows_per_super)
    for (std::int64_t j = 0; j < W; ++j) {
      row_of[j] = static_cast<std::uint8_t>(j / F);
      lane_row[j] = static_cast<std::int32_t>(j / F);
    }
  const SuperMask rows_kept{s.mask, F > 0 ? W / F : 1, F, rows_per_super ? row_of : nullptr, 0, s.weighted,
                            rows_per_super ? lane_row : nullptr};
  const SuperMask tail_kept{s.mask,     F > 0 ? tail / F : 1, F, rows_per_super ? row_of : nullptr, R * rows_kept.k,
                            s.weighted, rows_per_super ? lane_row : nullptr};
  std::fill(sums, sums + 2 * W * (nt + 1), 0.0);

  // Super rows [b, e) of `from` (`width` columns of them) into sum slot t,
  // through the row mask when there is one.
  auto reduce = [&](const X* from, std::int64_t width, std::int64_t b, std::int64_t e, std::int64_t t,
                    const SuperMask& kept) {
    double* slot = sums + 2 * W * t;
    if (s.weighted)
      reduce_rows<Ops, true, true, X, C>(from, W, width, shift, b, e, slot, slot + W, kept);
    else if (s.mask != nullptr)
      reduce_rows<Ops, true, false, X, C>(from, W, width, shift, b, e, slot, slot + W, kept);
    else
      reduce_rows<Ops, false, false, X, C>(from, W, width, shift, b, e, slot, slot + W);
  };
  auto reduce_part = [&](std::int64_t t) {
    const std::int64_t b = rc.begin(t), e = rc.end(t);
    if (b < e) reduce(x, W, b, e, t, rows_kept);
  };
  // Each feature's sums into s1/s2; returns the rows they hold.
  double* s1 = sums_f;
  double* s2 = sums_f + F;
  const bool finite_only = p.nonfinite == NonFinite::skip && !std::is_integral_v<X>;
  auto feature_sums = [&]() -> std::int64_t {
    if (tail > 0) reduce(x + R * W, tail, 0, 1, nt, tail_kept);
    // Each feature's sums: chunk slots, then the tail, columns f, f + F, ...,
    // in that fixed order.
    bool finite = true;
    for (std::int64_t f = 0; f < F; ++f) {
      double a = 0.0, q = 0.0;
      for (int t = 0; t <= nt; ++t)
        for (std::int64_t j = f; j < W; j += F) Ops::combine(a, q, sums[2 * W * t + j], sums[2 * W * t + W + j]);
      s1[f] = a;
      s2[f] = q;
      finite = finite && core::is_finite(a) && core::is_finite(q);
    }
    // Sums of finite values (shifted by a finite value, squared in C over a
    // 128-row tile, added in double) are finite unless |x - K| passes ~1e19 in
    // float: a non-finite sum means a non-finite input (or such a value), and
    // NonFinite::skip sums again, leaving out the rows that have one. Row
    // weights lower that bound (w (x - K)^2 in float passes FLT_MAX from
    // |x - K| ~ 4e14 at w = 2^31 - 1): weighted sums that are not finite are
    // made again in double, whatever the rule (a real NaN stays NaN).
    if (!finite && (finite_only || s.weighted))
      return masked_sums<Est, X, S, C>(p, x, s.mask, s.weighted, finite_only, m, F, loc_in, n, shift, s1, s2);
    return m_in;
  };
  auto batch_moments = [&](std::int64_t m_ok) {
    return [=](std::int64_t f) {
      return Ops::project(static_cast<double>(m_ok), static_cast<double>(shift[f]), s1[f], s2[f]);
    };
  };
  auto finish = [&]() {
    const std::int64_t m_ok = feature_sums();
    if (m_ok < m_in && s.skipped != nullptr) *s.skipped += m_in - m_ok;
    store(m_ok, batch_moments(m_ok));
  };

  if (p.work == Work::moments) {
    for_chunks(nt, threads, reduce_part);
    const std::int64_t m_ok = feature_sums();
    double* block = static_cast<double*>(s.y);
    block[0] = static_cast<double>(m_ok);
    const auto moments_of = batch_moments(m_ok);
    for (std::int64_t f = 0; f < F; ++f) core::put_moments(block, F, f, moments_of(f));
    return;
  }

  auto normalize_part = [&](std::int64_t t) {
    const std::int64_t b = rc.begin(t), e = rc.end(t);
    const std::int64_t eb = b * W, ee = t == nt - 1 ? n_elem : e * W;  // the last chunk takes the tail
    if (eb >= ee) return;
    // Last rows first: those the reduction read last are the ones still cached.
    constexpr std::int64_t kBack = 1 << 16;
    for (std::int64_t hi = ee; hi > eb;) {
      const std::int64_t lo = std::max(eb, hi - kBack);
      write_out(y, lo, hi, stream, [&](std::int64_t b2, std::int64_t e2, Y* out) {
        map_run<X, C, core::MapKind::normalize>(x, out, b2, e2, W, mu_row, r_row, static_cast<C>(p.rule.clip));
      });
      hi = lo;
    }
  };

  // Reduce the chunks (any thread), merge and update (this thread), then
  // normalize the chunks (any thread; a chunk's rows were read last by
  // whoever reduced them, the last rows first).
  for_chunks(nt, threads, reduce_part);
  finish();
  if (normalize) for_chunks(nt, threads, normalize_part, /*reverse=*/true);
}

}  // namespace

std::size_t pooled_scratch(const Plan& plan, const Segment& s) {
  (void)plan;
  return pooled_doubles(s.feat, s.rows) * sizeof(double);
}

void run_pooled(const Plan& plan, const Segment& s, Scratch& ws) {
  core::visit(plan.estimator, [&](auto est) {
    using Est = decltype(est);
    visit_input(s.x_dtype, [&](auto xt) {
      using X = typename decltype(xt)::type;
      visit_float(s.stats_dtype, [&](auto st) { pooled_segment<Est, X, typename decltype(st)::type>(plan, s, ws); });
    });
  });
}

}  // namespace vecnorm::detail::cpu::VECNORM_CPU_ISA

#include "isa_end.hpp"
