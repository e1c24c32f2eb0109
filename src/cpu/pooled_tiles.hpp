// src/cpu/pooled_tiles.hpp -- the tiled vector reduction of pooled statistics
// (src/cpu/pooled.cpp): shifted sums s1 = sum(x - K), s2 = sum((x - K)^2) of
// the rows of a [*, ld] matrix of super rows, per column, each tile of at most
// kTileRows rows in the compute type C in registers, then added to double
// sums; through a uint8 row mask or int32 row weights (SuperMask). Included
// after src/cpu/isa_begin.hpp and loops.hpp (internal linkage, compiled for the
// file's instruction set).
#pragma once

#ifndef VECNORM_CPU_ISA
#error "include src/cpu/isa_begin.hpp first"
#endif

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

}  // namespace
}  // namespace vecnorm::detail::cpu::VECNORM_CPU_ISA
