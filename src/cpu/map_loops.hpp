// src/cpu/map_loops.hpp -- the loops of an affine map y = (x - mu) * p, bounded
// to [-clip, clip] (or its inverse y = x * p + mu) with mu and p per element or per feature: pooled
// normalize (src/cpu/pooled.cpp), denormalize and fixed maps
// (src/cpu/maps.cpp). Included after src/cpu/loops.hpp.
#pragma once

namespace vecnorm::detail::cpu::VECNORM_CPU_ISA {
namespace {

using core::MapKind;

/// The map of elements [0, len), parameters from ms/qs (one per element);
/// kClip: bounded to [-clip, clip] (normalize only). The bound is a template
/// flag, decided once per run: its selects in a loop that does not need them
/// cost ~7% of a pooled 4096x48 step.
template <class X, class C, MapKind Dir, bool kClip>
inline void map_span(const X* __restrict xs, out_t<X>* __restrict ys, std::int64_t len, const C* __restrict ms,
                     const C* __restrict qs, C clip) {
  VECNORM_IVDEP
  for (std::int64_t j = 0; j < len; ++j) {
    const C xi = core::load<C>(xs + j);
    C v;
    if constexpr (Dir == MapKind::normalize) {
      v = core::apply(core::Affine<C>{ms[j], qs[j]}, xi);
      if constexpr (kClip) v = core::clip_to(v, clip);
    } else {
      v = core::unapply(ms[j], qs[j], xi);
    }
    core::store(ys + j, v);
  }
}

/// core::apply over rows [0, rows) of a [rows, ld] matrix (x and out), columns
/// [j0, j0 + NV vectors), mu of those columns held in registers and r loaded
/// (from L1): two loads and one store per vector, which the load ports give in
/// the time of the store (the loop over periods loads mu and r besides: three
/// loads a vector, more than a copy's). Up to eight vectors: a whole row of 64
/// floats, passed over in address order.
template <int NV, bool kClip, class C>
inline void apply_columns(const C* __restrict x, C* __restrict out, std::int64_t rows, std::int64_t ld,
                          std::int64_t j0, const C* __restrict mu, const C* __restrict q, C clip) {
  constexpr int L = kLanes<C>;
  Vec<C> m[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) std::memcpy(&m[v], mu + j0 + v * L, sizeof m[v]);
  for (std::int64_t i = 0; i < rows; ++i) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      Vec<C> xv, rv;
      std::memcpy(&xv, x + i * ld + j0 + v * L, sizeof xv);
      std::memcpy(&rv, q + j0 + v * L, sizeof rv);
      Vec<C> yv;
      for (int j = 0; j < L; ++j) {
        yv[j] = core::apply(core::Affine<C>{m[v][j], rv[j]}, xv[j]);
        if constexpr (kClip) yv[j] = core::clip_to(yv[j], clip);
      }
      std::memcpy(out + i * ld + j0 + v * L, &yv, sizeof yv);
    }
  }
}

/// Rows of elements that stay in L1 while each block of columns passes over them.
constexpr std::int64_t kApplyTileBytes = 8192;
/// The longest period taken as a matrix (a short feature dimension or a super
/// row; longer rows are not aligned to the vectors and gain nothing).
constexpr std::int64_t kApplyMaxWidth = kMaxSuper;

/// y[i] = map(x[i]) for i in [b, e), written to out[i - b]. Parameters repeat
/// with period W (W = n: one value per element).
template <class X, class C, MapKind Dir, bool kClip>
void map_run_as(const X* __restrict x, out_t<X>* __restrict out, std::int64_t b, std::int64_t e, std::int64_t W,
                const C* __restrict mu, const C* __restrict q, C clip) {
  std::int64_t i0 = b;
  if constexpr (Dir == MapKind::normalize && std::is_same_v<X, C> && std::is_same_v<out_t<X>, X>) {
    // Whole periods of a short period (pooled parameters): as a matrix, the
    // parameters of each block of columns in registers.
    constexpr std::int64_t L = kLanes<C>;
    if (W >= L && W <= kApplyMaxWidth && e - b >= 2 * W) {
      const std::int64_t first = (b + W - 1) / W * W;  // the first period start in [b, e)
      const std::int64_t periods = (e - first) / W;
      map_span<X, C, Dir, kClip>(x + b, out, first - b, mu + b % W, q + b % W, clip);
      const X* xm = x + first;
      C* om = out + (first - b);
      const std::int64_t tile = std::max<std::int64_t>(4, kApplyTileBytes / static_cast<std::int64_t>(W * sizeof(C)));
      for (std::int64_t r0 = 0; r0 < periods; r0 += tile) {
        const std::int64_t rows = std::min(tile, periods - r0);
        const C* xt = xm + r0 * W;
        C* ot = om + r0 * W;
        std::int64_t j0 = 0;
        for (; j0 + 8 * L <= W; j0 += 8 * L) apply_columns<8, kClip>(xt, ot, rows, W, j0, mu, q, clip);
        for (; j0 + 4 * L <= W; j0 += 4 * L) apply_columns<4, kClip>(xt, ot, rows, W, j0, mu, q, clip);
        for (; j0 + L <= W; j0 += L) apply_columns<1, kClip>(xt, ot, rows, W, j0, mu, q, clip);
        if (j0 < W)
          for (std::int64_t i = 0; i < rows; ++i)
            map_span<X, C, Dir, kClip>(xt + i * W + j0, ot + i * W + j0, W - j0, mu + j0, q + j0, clip);
      }
      i0 = first + periods * W;
    }
  }
  // One division for the whole range: after the first (partial) period every
  // run starts at j0 = 0.
  for (std::int64_t j0 = i0 % W; i0 < e; j0 = 0) {
    const std::int64_t len = std::min(e - i0, W - j0);
    map_span<X, C, Dir, kClip>(x + i0, out + (i0 - b), len, mu + j0, q + j0, clip);
    i0 += len;
  }
}

/// map_run_as with the bound decided once: only a normalize with a finite clip bounds.
template <class X, class C, MapKind Dir>
void map_run(const X* __restrict x, out_t<X>* __restrict out, std::int64_t b, std::int64_t e, std::int64_t W,
             const C* __restrict mu, const C* __restrict q, C clip) {
  if constexpr (Dir == MapKind::normalize) {
    if (clip < std::numeric_limits<C>::infinity()) return map_run_as<X, C, Dir, true>(x, out, b, e, W, mu, q, clip);
  }
  map_run_as<X, C, Dir, false>(x, out, b, e, W, mu, q, clip);
}

/// One key's map over its rows x feat elements: mu/p per element, or per
/// feature (broadcast) repeated over super rows.
template <class C>
struct MapRun {
  const void* x = nullptr;
  void* y = nullptr;
  std::int64_t rows = 0, feat = 0;
  bool broadcast = false;
  const C* mu = nullptr;
  const C* p = nullptr;
  /// Normalize: outputs bounded to [-clip, clip] (Options::clip; +inf: none).
  C clip = std::numeric_limits<C>::infinity();
};

template <class X, class C>
void map_segment(const MapRun<C>& s, MapKind dir, int threads) {
  using Y = out_t<X>;
  const std::int64_t n = s.rows * s.feat;
  if (n == 0) return;
  const C* mu = s.mu;
  const C* q = s.p;
  std::int64_t W = n;
  C mu_w[kMaxSuper], q_w[kMaxSuper];
  if (s.broadcast) {
    W = std::min(super_width(s.feat), n);
    if (W != s.feat) {
      repeat_period(mu, s.feat, mu_w, W);
      repeat_period(q, s.feat, q_w, W);
      mu = mu_w;
      q = q_w;
    }
  }
  const X* x = static_cast<const X*>(s.x);
  Y* y = static_cast<Y*>(s.y);
  const bool stream = static_cast<std::size_t>(n) * sizeof(Y) >= kStreamBytes;
  parallel_for(n, threads, kGrain, 64, [&](std::int64_t b, std::int64_t e, int) {
    write_out(y, b, e, stream, [&](std::int64_t b2, std::int64_t e2, Y* out) {
      if (dir == MapKind::normalize)
        map_run<X, C, MapKind::normalize>(x, out, b2, e2, W, mu, q, s.clip);
      else
        map_run<X, C, MapKind::denormalize>(x, out, b2, e2, W, mu, q, s.clip);
    });
  });
}

}  // namespace
}  // namespace vecnorm::detail::cpu::VECNORM_CPU_ISA
