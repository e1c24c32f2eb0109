// src/cpu/pooled.cpp -- pooled statistics on the CPU: core::PooledOps
// (vecnorm/core/pooled.hpp), its chunks run by the pool's threads. Compiled once per
// instruction set (src/cpu/isa_begin.hpp).
//
// Shifted sums s1 = sum(x - K), s2 = sum((x - K)^2) per column, with one shift
// K per feature for the whole call (the current mean), so that partial sums of
// any rows combine by addition. Each tile of at most kTileRows rows is summed
// in the compute type C, up to four vectors of columns at a time in registers,
// then added to double sums: the rounding error of the float sums stays
// bounded by the tile.
#include "includes.hpp"
// clang-format off
#include "isa_begin.hpp"
#include "loops.hpp"
#include "map_loops.hpp"
#include "coeff_memo.hpp"
// clang-format on

namespace vecnorm::detail::cpu::VECNORM_CPU_ISA {
namespace {

constexpr std::int64_t kTileRows = 128;

template <class X, class C>
inline void load_vec(const X* p, Vec<C>& v) {
  if constexpr (std::is_same_v<X, C>) {
    std::memcpy(&v, p, sizeof v);
  } else {
    C t[kLanes<C>];
    for (int j = 0; j < kLanes<C>; ++j) t[j] = core::load<C>(p + j);
    std::memcpy(&v, t, sizeof v);
  }
}

/// A row mask over super rows (KeyData::mask; m null: none): super row r
/// holds the k batch rows [r k, r k + k) of F elements each, so that column j
/// of a super row is in its row j / F. `first`: the batch row of super row
/// 0's first (the tail's mask starts inside the key's). `weighted`: m holds
/// int32 row weights (core::row_weight).
struct SuperMask {
  const std::uint8_t* m = nullptr;
  std::int64_t k = 1;
  std::int64_t F = 1;
  const std::uint8_t* row_of = nullptr;  ///< column j's row in its super row (j / F), when 1 < k and 1 < F
  std::int64_t first = 0;
  bool weighted = false;
  const std::int32_t* lane_row = nullptr;  ///< weighted: row_of as int32 (a gather the compiler vectorizes)
  /// The weight of batch row i of the super rows (a uint8 byte: 0 or 1; weighted: its int32 weight).
  std::int64_t weight(std::int64_t i) const { return core::row_weight(m, weighted, first + i); }
  /// How many of super row r's rows a uint8 mask keeps.
  std::int64_t kept(std::int64_t r) const {
    std::int64_t n = 0;
    const std::uint8_t* mr = m + first + r * k;
    for (std::int64_t i = 0; i < k; ++i) n += mr[i] != 0;
    return n;
  }
  /// The weight of column j of super row r's row.
  std::int64_t weight_at(std::int64_t r, std::int64_t j) const { return weight(r * k + j / F); }
  bool keeps(std::int64_t r, std::int64_t j) const { return weight_at(r, j) != 0; }
  /// One byte per column [j0, j0 + n) of super row r (several rows), its
  /// row's mask byte: the mask itself when F is 1, else gathered into `buf`.
  template <int N>
  const std::uint8_t* lanes(std::int64_t r, std::int64_t j0, std::uint8_t (&buf)[N]) const {
    const std::uint8_t* mr = m + first + r * k;
    if (F == 1) return mr + j0;
    for (int j = 0; j < N; ++j) buf[j] = mr[row_of[j0 + j]];
    return buf;
  }
};

/// The integer vector of Vec<C>'s lane width (a lane mask: all ones or zero).
template <class C>
struct LaneMaskOf;
template <>
struct LaneMaskOf<float> {
  typedef std::int32_t type __attribute__((vector_size(kVecBytes)));
};
template <>
struct LaneMaskOf<double> {
  typedef std::int64_t type __attribute__((vector_size(kVecBytes)));
};

/// Shifted sums of rows [t0, t1), columns [j0, j0 + NV lanes), in registers
/// (each column in row order), added to the double sums s1/s2. Masked: a
/// super row the mask leaves out whole is not read; in one it leaves out in
/// part, the lanes of its left-out rows add 0 (their values, NaN included,
/// are masked to zero after the shift, bit by bit). Weighted (with Masked):
/// the mask holds row weights; a super row whose rows all weigh 1 adds as
/// unmasked, another's lanes add their row's weight w times (w (x - K),
/// w (x - K)^2: PooledOps::reduce_weighted), those of weight 0 masked to 0.
template <class Ops, int NV, bool Masked, bool Weighted, class X, class C>
inline void block_sums(const X* __restrict x, std::int64_t ld, const C* __restrict shift, std::int64_t j0,
                       std::int64_t t0, std::int64_t t1, double* __restrict s1, double* __restrict s2,
                       const SuperMask& mask) {
  constexpr int L = kLanes<C>;
  using LM = typename LaneMaskOf<C>::type;
  using I = std::remove_cvref_t<decltype(LM{}[0])>;
  Vec<C> a1[NV], a2[NV], sh[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    a1[v] = Vec<C>{};
    a2[v] = Vec<C>{};
    std::memcpy(&sh[v], shift + j0 + v * L, sizeof sh[v]);
  }
  for (std::int64_t r = t0; r < t1; ++r) {
    const X* row = x + r * ld + j0;
    if constexpr (Weighted) {
      // The weights of the super row's k rows.
      C wk[kMaxSuper];
      std::int64_t any = 0, ones = 1;
      for (std::int64_t i = 0; i < mask.k; ++i) {
        const std::int64_t w = mask.weight(r * mask.k + i);
        wk[i] = static_cast<C>(w);
        any |= w;
        ones &= w == 1 ? 1 : 0;
      }
      if (any == 0) continue;
      if (ones == 0) {
        if (mask.k == 1) {  // one row of weight w > 1: no lane of weight 0
          Vec<C> w;
          for (int j = 0; j < L; ++j) w[j] = wk[0];
          for (int v = 0; v < NV; ++v) {
            Vec<C> d;
            load_vec<X, C>(row + v * L, d);
            Ops::reduce_weighted(a1[v], a2[v], d - sh[v], w);
          }
          continue;
        }
        // Each lane its row's weight; the lanes of weight 0 masked to 0 first.
        alignas(64) C wl[NV * L];
        if (mask.F == 1)
          std::memcpy(wl, wk + j0, sizeof wl);
        else
          for (int j = 0; j < NV * L; ++j) wl[j] = wk[mask.lane_row[j0 + j]];
        alignas(64) I keep[NV * L];
        for (int j = 0; j < NV * L; ++j) keep[j] = wl[j] != C(0) ? I(-1) : I(0);
        for (int v = 0; v < NV; ++v) {
          Vec<C> d, w;
          load_vec<X, C>(row + v * L, d);
          std::memcpy(&w, wl + v * L, sizeof w);
          LM lm;
          std::memcpy(&lm, keep + v * L, sizeof lm);
          Ops::reduce_weighted(a1[v], a2[v], reinterpret_cast<Vec<C>>(reinterpret_cast<LM>(d - sh[v]) & lm), w);
        }
        continue;
      }
    } else if constexpr (Masked) {
      const std::int64_t kept = mask.kept(r);
      if (kept == 0) continue;
      if (kept < mask.k) {
        alignas(64) std::uint8_t buf[NV * L];
        const std::uint8_t* lanes = mask.lanes(r, j0, buf);
        // All ones where the row is kept (a loop of fixed length: vectorized).
        alignas(64) I keep[NV * L];
        for (int j = 0; j < NV * L; ++j) keep[j] = lanes[j] != 0 ? I(-1) : I(0);
        for (int v = 0; v < NV; ++v) {
          Vec<C> d;
          load_vec<X, C>(row + v * L, d);
          LM lm;
          std::memcpy(&lm, keep + v * L, sizeof lm);
          Ops::reduce(a1[v], a2[v], reinterpret_cast<Vec<C>>(reinterpret_cast<LM>(d - sh[v]) & lm));
        }
        continue;
      }
    }
    for (int v = 0; v < NV; ++v) {
      Vec<C> d;
      load_vec<X, C>(row + v * L, d);
      Ops::reduce(a1[v], a2[v], d - sh[v]);
    }
  }
  // Through arrays: a loop over the vectors' lanes (a1[v][j]) stays scalar.
  C b1[NV * L], b2[NV * L];
  std::memcpy(b1, a1, sizeof b1);
  std::memcpy(b2, a2, sizeof b2);
  for (int k = 0; k < NV * L; ++k)
    Ops::combine(s1[j0 + k], s2[j0 + k], static_cast<double>(b1[k]), static_cast<double>(b2[k]));
}

/// Adds the shifted sums of rows [row_b, row_e) of a [*, ld] matrix, columns
/// [0, width), to s1/s2; the rows (and lanes) `mask` keeps when it has one.
///
/// Each column's sums run in C over a tile of at most kTileRows rows, in row
/// order, in registers (eight accumulators of four vectors of columns at a
/// time: enough independent adds to hide their latency; rows in L1 between
/// two blocks), then are added to the double sums.
template <class Ops, bool Masked, bool Weighted, class X, class C>
void reduce_rows(const X* __restrict x, std::int64_t ld, std::int64_t width, const C* __restrict shift,
                 std::int64_t row_b, std::int64_t row_e, double* __restrict s1, double* __restrict s2,
                 const SuperMask& mask = {}) {
  constexpr int L = kLanes<C>;
  for (std::int64_t t0 = row_b; t0 < row_e; t0 += kTileRows) {
    const std::int64_t t1 = std::min(row_e, t0 + kTileRows);
    std::int64_t j0 = 0;
    for (; j0 + 4 * L <= width; j0 += 4 * L)
      block_sums<Ops, 4, Masked, Weighted>(x, ld, shift, j0, t0, t1, s1, s2, mask);
    for (; j0 + 2 * L <= width; j0 += 2 * L)
      block_sums<Ops, 2, Masked, Weighted>(x, ld, shift, j0, t0, t1, s1, s2, mask);
    for (; j0 + L <= width; j0 += L) block_sums<Ops, 1, Masked, Weighted>(x, ld, shift, j0, t0, t1, s1, s2, mask);
    if (j0 < width) {
      const std::int64_t w = width - j0;
      C a1[kLanes<C>] = {}, a2[kLanes<C>] = {};
      for (std::int64_t r = t0; r < t1; ++r) {
        const X* row = x + r * ld + j0;
        for (std::int64_t j = 0; j < w; ++j) {
          if constexpr (Weighted) {
            const std::int64_t wr = mask.weight_at(r, j0 + j);
            if (wr != 0)
              Ops::reduce_weighted(a1[j], a2[j], core::load<C>(row + j) - shift[j0 + j], static_cast<C>(wr));
          } else if (!Masked || mask.keeps(r, j0 + j)) {
            Ops::reduce(a1[j], a2[j], core::load<C>(row + j) - shift[j0 + j]);
          }
        }
      }
      for (std::int64_t j = 0; j < w; ++j)
        Ops::combine(s1[j0 + j], s2[j0 + j], static_cast<double>(a1[j]), static_cast<double>(a2[j]));
    }
  }
}

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
