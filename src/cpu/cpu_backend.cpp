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
#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

// This file is compiled once per instruction set (VECNORM_CPU_ISA names the
// namespace): as itself for baseline x86-64, and by cpu_backend_avx2.cpp for
// AVX2. The AVX2 build switches the target with a pragma *after* the includes,
// so every inline function of a header (shared by both object files) stays
// baseline code (no AVX2 instruction can reach a CPU without it through the
// linker's choice of one copy), while this file's own functions, all of
// internal linkage, become AVX2 code that inlines them. The arithmetic is the
// same IEEE operations in the same order in both builds (no FMA contraction:
// the target does not enable FMA, and CMake compiles this file with
// -ffp-contract=off), so both give the same bits; src/cpu/cpu_dispatch.cpp
// picks one at run time.
#ifndef VECNORM_CPU_ISA
#define VECNORM_CPU_ISA baseline
#endif
#if defined(VECNORM_CPU_AVX2_BUILD)
#pragma GCC push_options
#pragma GCC target("avx2")
#endif

namespace vecnorm::detail::cpu::VECNORM_CPU_ISA {
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
// Output streams
// ---------------------------------------------------------------------------
//
// An output larger than the caches is written with non-temporal stores: a
// normal store first reads the line it writes (read for ownership), which
// costs as much memory traffic as reading the output; non-temporal stores
// skip that read (a plain copy does the same, so a large step moves x, y and
// nothing more). The loops below compute a chunk of y into an L1-resident
// buffer and stream it out. Smaller outputs are written in place, and stay in
// the caches for whoever reads them next.

/// Outputs of at least this many bytes (per segment) are streamed (a build may
/// set another threshold with -DVECNORM_STREAM_BYTES=N; bench experiments do).
#ifndef VECNORM_STREAM_BYTES
#define VECNORM_STREAM_BYTES (std::size_t{4} << 20)
#endif
constexpr std::size_t kStreamBytes = VECNORM_STREAM_BYTES;
/// Elements per staged chunk.
constexpr std::int64_t kChunk = 1024;

/// Copies `bytes` from src to dst, with non-temporal stores where aligned.
void stream_copy(void* dst, const void* src, std::size_t bytes) noexcept {
#if defined(__SSE2__)
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  const std::size_t head = std::min(bytes, (16 - reinterpret_cast<std::uintptr_t>(d) % 16) % 16);
  std::memcpy(d, s, head);
  d += head;
  s += head;
  bytes -= head;
  for (; bytes >= 64; bytes -= 64, d += 64, s += 64) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 32));
    const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(d), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 48), e);
  }
  for (; bytes >= 16; bytes -= 16, d += 16, s += 16)
    _mm_stream_si128(reinterpret_cast<__m128i*>(d), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
  std::memcpy(d, s, bytes);
#else
  std::memcpy(dst, src, bytes);
#endif
}

/// Orders this thread's non-temporal stores before what follows (the end of
/// the parallel region publishes them to the caller).
void stream_fence() noexcept {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

/// Runs body(b, e, out) over [begin, end) where body writes y[i] as out[i - b].
/// Streaming: in chunks, out is a staging buffer streamed to y after each chunk;
/// otherwise one call with out = y + begin.
template <class Y, class Body>
void write_out(Y* y, std::int64_t begin, std::int64_t end, bool stream, Body&& body) {
  if (!stream || y == nullptr) {
    body(begin, end, y == nullptr ? nullptr : y + begin);
    return;
  }
  alignas(64) Y stage[kChunk];
  for (std::int64_t c0 = begin; c0 < end; c0 += kChunk) {
    const std::int64_t c1 = std::min(end, c0 + kChunk);
    body(c0, c1, stage);
    stream_copy(y + c0, stage, static_cast<std::size_t>(c1 - c0) * sizeof(Y));
  }
  stream_fence();
}

// ---------------------------------------------------------------------------
// Per-element statistics
// ---------------------------------------------------------------------------

/// Elements [b, e) with one count per key, y[i] written to out[i - b]. A
/// function of its own (all operands local) so that the loop vectorizes.
/// kKeep (NonFinite::skip, a chunk that holds a non-finite x): those elements'
/// statistics are written back as they are (update_stored_unless).
template <class X, class S, class C, bool Stable, bool kUpdate, bool kNormalize, bool kKeep, bool kZeros, class Y>
void elementwise_loop_to(const X* x, const S* loc_in, const S* var_in, S* loc_out, S* var_out, Y* out,
                         std::int64_t b, std::int64_t e, const core::Coeffs<C> c, const C eps) {
  VECNORM_IVDEP
  for (std::int64_t i = b; i < e; ++i) {
    const C xi = core::load<C>(x + i);
    // kZeros: missing statistics are zeros (the same loop with zero loads).
    C loc = kZeros ? C(0) : static_cast<C>(loc_in[i]);
    C var = kZeros ? C(0) : static_cast<C>(var_in[i]);
    if constexpr (kUpdate && kKeep) {
      core::update_stored_unless<S, C, Stable>(!core::is_finite(xi), loc, var, xi, c, loc_out[i], var_out[i]);
    } else if constexpr (kUpdate) {
      core::update_stored<S, C, Stable>(loc, var, xi, c, loc_out[i], var_out[i]);
    }
    if constexpr (kNormalize) core::store(out + (i - b), core::apply(core::element_affine<C, Stable>(loc, var, c, eps), xi));
  }
}

/// The loop above; outputs of a narrower type than C (float16/bfloat16) are
/// computed into an L1 block of C and converted by a loop of their own: the
/// rounding in the same loop as torchrl's selects left GCC with more control
/// flow than it would vectorize (a scalar loop, 3x slower than stable's).
template <class X, class S, class C, bool Stable, bool kUpdate, bool kNormalize, bool kKeep, bool kZeros>
void elementwise_loop(const X* x, const S* loc_in, const S* var_in, S* loc_out, S* var_out, out_t<X>* out,
                      std::int64_t b, std::int64_t e, const core::Coeffs<C> c, const C eps) {
  using Y = out_t<X>;
  if constexpr (kNormalize && !std::is_same_v<Y, C>) {
    constexpr std::int64_t kBlock = 512;
    C block[kBlock];
    for (std::int64_t b2 = b; b2 < e; b2 += kBlock) {
      const std::int64_t e2 = std::min(e, b2 + kBlock);
      elementwise_loop_to<X, S, C, Stable, kUpdate, kNormalize, kKeep, kZeros, C>(x, loc_in, var_in, loc_out, var_out,
                                                                                 block, b2, e2, c, eps);
      Y* o2 = out + (b2 - b);
      for (std::int64_t j = 0; j < e2 - b2; ++j) core::store(o2 + j, block[j]);
    }
  } else {
    elementwise_loop_to<X, S, C, Stable, kUpdate, kNormalize, kKeep, kZeros, Y>(x, loc_in, var_in, loc_out, var_out, out,
                                                                               b, e, c, eps);
  }
}

/// Elements [b, e) of a key with one count per key. kSkip (NonFinite::skip):
/// each run of kCheck elements is first checked for a non-finite x (an OR
/// reduction over values then in L1, a vector loop); clean runs take the
/// plain loop, the rare dirty one the loop that keeps those elements.
/// Returns the elements kept out of the statistics.
constexpr std::int64_t kCheck = 1024;
template <class X, class S, class C, bool Stable, bool kUpdate, bool kNormalize, bool kSkip, bool kZeros>
std::int64_t elementwise_chunk(const X* x, const S* loc_in, const S* var_in, S* loc_out, S* var_out, out_t<X>* out,
                               std::int64_t b, std::int64_t e, const core::Coeffs<C> c, const C eps) {
  if constexpr (!kSkip || !kUpdate) {
    elementwise_loop<X, S, C, Stable, kUpdate, kNormalize, false, kZeros>(x, loc_in, var_in, loc_out, var_out, out, b, e,
                                                                        c, eps);
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
        elementwise_loop<X, S, C, Stable, kUpdate, kNormalize, false, kZeros>(x, loc_in, var_in, loc_out, var_out, o2,
                                                                            b2, e2, c, eps);
        continue;
      }
      elementwise_loop<X, S, C, Stable, kUpdate, kNormalize, true, kZeros>(x, loc_in, var_in, loc_out, var_out, o2, b2,
                                                                         e2, c, eps);
      for (std::int64_t i = b2; i < e2; ++i) kept += core::is_finite(core::load<C>(x + i)) ? 0 : 1;
    }
    return kept;
  }
}

/// Elements [begin, end) of a per-element segment; returns the updates left out
/// (NonFinite::skip). Three shapes of loop:
///  * one count per key and no element has ever skipped: the vector loop above;
///  * a count per element (stateless), or per key less the element's skips: a
///    scalar loop that recomputes the coefficients when the count changes.
template <class X, class S, bool Stable, CountLayout Counts, Op TheOp, bool kSkip>
std::int64_t elementwise_range(const Plan& p, const Segment& s, std::int64_t begin, std::int64_t end, bool stream,
                               bool element_counts) {
  using C = compute_t<X, S>;
  using Y = out_t<X>;
  constexpr bool kUpdate = TheOp != Op::normalize;
  constexpr bool kNormalize = TheOp != Op::update;
  const X* x = static_cast<const X*>(s.x);
  const S* loc_in = static_cast<const S*>(s.loc_in);
  const S* var_in = static_cast<const S*>(s.var_in);
  S* loc_out = static_cast<S*>(s.loc_out);
  S* var_out = static_cast<S*>(s.var_out);
  const C eps = static_cast<C>(p.eps);
  std::int64_t kept = 0;

  auto coeffs_for = [&](std::int64_t n) {
    return kUpdate ? core::update_coeffs<C, Stable>(p.decay, n, 1) : core::normalize_coeffs<C, Stable>(p.decay, n);
  };

  if (Counts == CountLayout::per_key && !element_counts) {
    const std::int64_t n = s.count_in ? *s.count_in : 0;
    const core::Coeffs<C> c = coeffs_for(n);
    write_out(static_cast<Y*>(kNormalize ? s.y : nullptr), begin, end, stream, [&](std::int64_t b, std::int64_t e, Y* out) {
      const std::int64_t k =
          loc_in == nullptr
              ? elementwise_chunk<X, S, C, Stable, kUpdate, kNormalize, kSkip, true>(x, loc_in, var_in, loc_out, var_out,
                                                                                   out, b, e, c, eps)
              : elementwise_chunk<X, S, C, Stable, kUpdate, kNormalize, kSkip, false>(x, loc_in, var_in, loc_out,
                                                                                    var_out, out, b, e, c, eps);
      if (k > 0 && s.skips != nullptr)  // rare: record which elements skipped
        for (std::int64_t i = b; i < e; ++i)
          if (!core::is_finite(core::load<C>(x + i))) ++s.skips[i];
      kept += k;
    });
    return kept;
  }
  // The count of each element: per element (stateless), or the key's less the
  // element's skips. The coefficients are recomputed only when it changes.
  const std::int64_t n_key = Counts == CountLayout::per_key && s.count_in ? *s.count_in : 0;  // stateless: unused (and maybe empty)
  std::int64_t cached = -1;
  core::Coeffs<C> c{};
  write_out(static_cast<Y*>(kNormalize ? s.y : nullptr), begin, end, stream, [&](std::int64_t b, std::int64_t e, Y* out) {
    for (std::int64_t i = b; i < e; ++i) {
      std::int64_t n;
      if constexpr (Counts == CountLayout::per_element)
        n = s.count_in ? s.count_in[i] : 0;
      else
        n = n_key - s.skips[i];
      if (n != cached) {
        c = coeffs_for(n);
        cached = n;
      }
      const C xi = core::load<C>(x + i);
      C loc = loc_in ? static_cast<C>(loc_in[i]) : C(0);
      C var = var_in ? static_cast<C>(var_in[i]) : C(0);
      if constexpr (kUpdate) {
        const bool keep = kSkip && !core::is_finite(xi);
        core::update_stored_unless<S, C, Stable>(keep, loc, var, xi, c, loc_out[i], var_out[i]);
        if constexpr (Counts == CountLayout::per_element) {
          s.count_out[i] = keep ? n : n + 1;
        } else if (keep) {
          ++s.skips[i];
        }
        kept += keep ? 1 : 0;
      }
      if constexpr (kNormalize) core::store(out + (i - b), core::apply(core::element_affine<C, Stable>(loc, var, c, eps), xi));
    }
  });
  return kept;
}

template <class X, class S, bool Stable, CountLayout Counts>
void elementwise_segment(const Plan& p, const Segment& s) {
  const std::int64_t n = s.rows * s.feat;
  // Integers are always finite: no check.
  const bool skip = p.nonfinite == NonFinite::skip && !std::is_integral_v<X>;
  // Counts per element also when the key's elements have skipped before.
  const bool element_counts = s.skips != nullptr && s.skipped != nullptr && *s.skipped != 0;
  std::int64_t kept = 0;
  auto run = [&](auto op_tag, auto skip_tag) {
    constexpr Op kOp = decltype(op_tag)::value;
    constexpr bool kSkip = decltype(skip_tag)::value;
    const bool stream = kOp != Op::update && static_cast<std::size_t>(n) * sizeof(out_t<X>) >= kStreamBytes;
    parallel_for(n, max_threads(p.threads), kGrain, 64, [&](std::int64_t b, std::int64_t e, int) {
      const std::int64_t k = elementwise_range<X, S, Stable, Counts, kOp, kSkip>(p, s, b, e, stream, element_counts);
      if (k > 0) std::atomic_ref<std::int64_t>(kept).fetch_add(k, std::memory_order_relaxed);
    });
  };
  using Yes = std::true_type;
  using No = std::false_type;
  switch (p.op) {
    case Op::update_and_normalize:
      if (skip)
        run(std::integral_constant<Op, Op::update_and_normalize>{}, Yes{});
      else
        run(std::integral_constant<Op, Op::update_and_normalize>{}, No{});
      break;
    case Op::update:
      if (skip)
        run(std::integral_constant<Op, Op::update>{}, Yes{});
      else
        run(std::integral_constant<Op, Op::update>{}, No{});
      break;
    case Op::normalize: run(std::integral_constant<Op, Op::normalize>{}, No{}); break;
  }
  if (p.op == Op::normalize) return;
  // One count per key moves once per step (after the elements are done), and
  // the health counter by the elements left out.
  if (Counts == CountLayout::per_key) *s.count_out = (s.count_in ? *s.count_in : 0) + 1;
  if (kept > 0 && s.skipped != nullptr) *s.skipped += kept;
}

// ---------------------------------------------------------------------------
// Vector registers
// ---------------------------------------------------------------------------

/// A vector register of C (GCC/Clang vector extension: 16 bytes of SSE, 32 of
/// AVX2), for the loops that keep values in registers across rows.
#if defined(VECNORM_CPU_AVX2_BUILD)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif
template <class C>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(kVecBytes)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(kVecBytes)));
};
template <class C>
using Vec = typename VecOf<C>::type;
template <class C>
constexpr int kLanes = static_cast<int>(kVecBytes / sizeof(C));

// ---------------------------------------------------------------------------
// Super rows
// ---------------------------------------------------------------------------
//
// Pooled statistics and pooled (broadcast) parameters repeat with period F,
// the feature count. A small F (a reward: F = 1) would leave the vector loops
// a few elements wide, so the data is viewed as super rows of k consecutive
// rows (width W = k F >= kMinWidth) with the parameters repeated k times.

constexpr std::int64_t kMinWidth = 64;
/// The most elements a super row of a small F can have (F < kMinWidth).
constexpr std::int64_t kMaxSuper = 2 * kMinWidth;

std::int64_t super_width(std::int64_t feat) {
  if (feat <= 0 || feat >= kMinWidth) return feat;
  return feat * ((kMinWidth + feat - 1) / feat);
}

/// out[j] = p[j mod F] for j in [0, W): a period repeated over a super row,
/// element by element (F is 1 for a reward: a std::copy per period would be a
/// memmove call per element). out may be p (the first period stays as it is).
template <class C>
void repeat_period(const C* p, std::int64_t F, C* out, std::int64_t W) {
  for (std::int64_t j = 0, f = 0; j < W; ++j) {
    out[j] = p[f];
    if (++f == F) f = 0;
  }
}

// ---------------------------------------------------------------------------
// Affine maps (pooled normalize, to_affine, denormalize)
// ---------------------------------------------------------------------------

/// Runs of the map over [i0, i0 + len), parameters from ms/qs (one per element).
template <class X, class C, AffineDirection Dir>
inline void affine_span(const X* __restrict xs, out_t<X>* __restrict ys, std::int64_t len, const C* __restrict ms,
                        const C* __restrict qs) {
  VECNORM_IVDEP
  for (std::int64_t j = 0; j < len; ++j) {
    const C xi = core::load<C>(xs + j);
    C v;
    if constexpr (Dir == AffineDirection::apply) {
      v = core::apply(core::Affine<C>{ms[j], qs[j]}, xi);
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
template <int NV, class C>
inline void apply_columns(const C* __restrict x, C* __restrict out, std::int64_t rows, std::int64_t ld,
                          std::int64_t j0, const C* __restrict mu, const C* __restrict q) {
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
      for (int j = 0; j < L; ++j) yv[j] = core::apply(core::Affine<C>{m[v][j], rv[j]}, xv[j]);
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
template <class X, class C, AffineDirection Dir>
void affine_run(const X* __restrict x, out_t<X>* __restrict out, std::int64_t b, std::int64_t e, std::int64_t W,
                const C* __restrict mu, const C* __restrict q) {
  std::int64_t i0 = b;
  if constexpr (Dir == AffineDirection::apply && std::is_same_v<X, C> && std::is_same_v<out_t<X>, X>) {
    // Whole periods of a short period (pooled parameters): as a matrix, the
    // parameters of each block of columns in registers.
    constexpr std::int64_t L = kLanes<C>;
    if (W >= L && W <= kApplyMaxWidth && e - b >= 2 * W) {
      const std::int64_t first = (b + W - 1) / W * W;  // the first period start in [b, e)
      const std::int64_t periods = (e - first) / W;
      affine_span<X, C, Dir>(x + b, out, first - b, mu + b % W, q + b % W);
      const X* xm = x + first;
      C* om = out + (first - b);
      const std::int64_t tile = std::max<std::int64_t>(4, kApplyTileBytes / static_cast<std::int64_t>(W * sizeof(C)));
      for (std::int64_t r0 = 0; r0 < periods; r0 += tile) {
        const std::int64_t rows = std::min(tile, periods - r0);
        const C* xt = xm + r0 * W;
        C* ot = om + r0 * W;
        std::int64_t j0 = 0;
        for (; j0 + 8 * L <= W; j0 += 8 * L) apply_columns<8>(xt, ot, rows, W, j0, mu, q);
        for (; j0 + 4 * L <= W; j0 += 4 * L) apply_columns<4>(xt, ot, rows, W, j0, mu, q);
        for (; j0 + L <= W; j0 += L) apply_columns<1>(xt, ot, rows, W, j0, mu, q);
        if (j0 < W)
          for (std::int64_t i = 0; i < rows; ++i)
            affine_span<X, C, Dir>(xt + i * W + j0, ot + i * W + j0, W - j0, mu + j0, q + j0);
      }
      i0 = first + periods * W;
    }
  }
  // One division for the whole range: after the first (partial) period every
  // run starts at j0 = 0.
  for (std::int64_t j0 = i0 % W; i0 < e; j0 = 0) {
    const std::int64_t len = std::min(e - i0, W - j0);
    affine_span<X, C, Dir>(x + i0, out + (i0 - b), len, mu + j0, q + j0);
    i0 += len;
  }
}

template <class X, class C>
void affine_segment(const AffineSegment& s, AffineDirection dir, int threads) {
  using Y = out_t<X>;
  const std::int64_t n = s.rows * s.feat;
  if (n == 0) return;
  const C* mu = static_cast<const C*>(s.mu);
  const C* q = static_cast<const C*>(s.p);
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
      if (dir == AffineDirection::apply)
        affine_run<X, C, AffineDirection::apply>(x, out, b2, e2, W, mu, q);
      else
        affine_run<X, C, AffineDirection::invert>(x, out, b2, e2, W, mu, q);
    });
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
//
// Shifted sums s1 = sum(x - K), s2 = sum((x - K)^2) per column, with one shift
// K per feature for the whole call (the current mean), so that partial sums of
// any rows combine by addition. Each tile of at most kTileRows rows is summed
// in the compute type C, up to four vectors of columns at a time in registers,
// then added to double sums: the rounding error of the float sums stays
// bounded by the tile.

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

/// Shifted sums of rows [t0, t1), columns [j0, j0 + NV lanes), in registers
/// (each column in row order), added to the double sums s1/s2.
template <int NV, class X, class C>
inline void block_sums(const X* __restrict x, std::int64_t ld, const C* __restrict shift, std::int64_t j0,
                       std::int64_t t0, std::int64_t t1, double* __restrict s1, double* __restrict s2) {
  constexpr int L = kLanes<C>;
  Vec<C> a1[NV], a2[NV], sh[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    a1[v] = Vec<C>{};
    a2[v] = Vec<C>{};
    std::memcpy(&sh[v], shift + j0 + v * L, sizeof sh[v]);
  }
  for (std::int64_t r = t0; r < t1; ++r) {
    const X* row = x + r * ld + j0;
    for (int v = 0; v < NV; ++v) {
      Vec<C> d;
      load_vec<X, C>(row + v * L, d);
      d -= sh[v];
      a1[v] += d;
      a2[v] += d * d;
    }
  }
  // Through arrays: a loop over the vectors' lanes (a1[v][j]) stays scalar.
  C b1[NV * L], b2[NV * L];
  std::memcpy(b1, a1, sizeof b1);
  std::memcpy(b2, a2, sizeof b2);
  for (int k = 0; k < NV * L; ++k) {
    s1[j0 + k] += static_cast<double>(b1[k]);
    s2[j0 + k] += static_cast<double>(b2[k]);
  }
}

/// Adds the shifted sums of rows [row_b, row_e) of a [*, ld] matrix, columns
/// [0, width), to s1/s2.
///
/// Each column's sums run in C over a tile of at most kTileRows rows, in row
/// order, in registers (eight accumulators of four vectors of columns at a
/// time: enough independent adds to hide their latency; rows in L1 between
/// two blocks), then are added to the double sums.
template <class X, class C>
void reduce_rows(const X* __restrict x, std::int64_t ld, std::int64_t width, const C* __restrict shift,
                 std::int64_t row_b, std::int64_t row_e, double* __restrict s1, double* __restrict s2) {
  constexpr int L = kLanes<C>;
  for (std::int64_t t0 = row_b; t0 < row_e; t0 += kTileRows) {
    const std::int64_t t1 = std::min(row_e, t0 + kTileRows);
    std::int64_t j0 = 0;
    for (; j0 + 4 * L <= width; j0 += 4 * L) block_sums<4>(x, ld, shift, j0, t0, t1, s1, s2);
    for (; j0 + 2 * L <= width; j0 += 2 * L) block_sums<2>(x, ld, shift, j0, t0, t1, s1, s2);
    for (; j0 + L <= width; j0 += L) block_sums<1>(x, ld, shift, j0, t0, t1, s1, s2);
    if (j0 < width) {
      const std::int64_t w = width - j0;
      C a1[kLanes<C>] = {}, a2[kLanes<C>] = {};
      for (std::int64_t r = t0; r < t1; ++r) {
        const X* row = x + r * ld + j0;
        for (std::int64_t j = 0; j < w; ++j) {
          const C d = core::load<C>(row + j) - shift[j0 + j];
          a1[j] += d;
          a2[j] += d * d;
        }
      }
      for (std::int64_t j = 0; j < w; ++j) {
        s1[j0 + j] += static_cast<double>(a1[j]);
        s2[j0 + j] += static_cast<double>(a2[j]);
      }
    }
  }
}

/// The coefficients of a pooled call, through the workspace's memo: the same
/// core function of the same arguments (the same bits), an expm1 fewer each
/// hit. In a step of k keys of one count, 1 update in k misses; the shift of
/// the next step is always a hit (remember_shift).
enum MemoKind : int { kMemoShift = 0, kMemoUpdate = 1 };

const core::Coeffs<double>* memo_find(const Workspace& ws, int tag, const core::Decay& d, std::int64_t n,
                                      std::int64_t m) {
  for (const Workspace::Memo& e : ws.memo)
    if (e.kind == tag && e.n == n && e.m == m && e.cumulative == d.cumulative && e.log_decay == d.log_decay)
      return &e.c;
  return nullptr;
}

void memo_put(Workspace& ws, int tag, const core::Decay& d, std::int64_t n, std::int64_t m, const core::Coeffs<double>& c) {
  ws.memo[ws.memo_next] = Workspace::Memo{tag, d.log_decay, d.cumulative, n, m, c};
  ws.memo_next = (ws.memo_next + 1) % static_cast<int>(std::size(ws.memo));
}

template <bool Stable>
core::Coeffs<double> memo_coeffs(Workspace& ws, MemoKind kind, const core::Decay& d, std::int64_t n, std::int64_t m) {
  const int tag = 2 * kind + (Stable ? 1 : 0);
  if (const core::Coeffs<double>* hit = memo_find(ws, tag, d, n, m)) return *hit;
  const core::Coeffs<double> c =
      kind == kMemoShift ? core::shift_coeffs<Stable>(d, n) : core::update_coeffs<double, Stable>(d, n, m);
  memo_put(ws, tag, d, n, m, c);
  return c;
}

/// torchrl: the update from n to `count` computed 1 / bias_correction(count),
/// which is shift_coeffs(count) (the same expression): remembered for the
/// next call's shift.
template <bool Stable>
void remember_shift(Workspace& ws, const core::Decay& d, std::int64_t count, const core::Coeffs<double>& update) {
  if constexpr (!Stable) {
    constexpr int tag = 2 * kMemoShift;
    if (memo_find(ws, tag, d, count, 0) == nullptr) memo_put(ws, tag, d, count, 0, core::Coeffs<double>{0.0, update.inv_bc});
  }
}

/// Statistics stay as they are: copied when out is not in (an update that adds nothing).
template <class S>
void keep_stats(const Segment& s, std::int64_t F) {
  if (s.loc_out == s.loc_in) return;
  const S* loc_in = static_cast<const S*>(s.loc_in);
  const S* var_in = static_cast<const S*>(s.var_in);
  for (std::int64_t f = 0; f < F; ++f) {
    static_cast<S*>(s.loc_out)[f] = loc_in ? loc_in[f] : S(0);
    static_cast<S*>(s.var_out)[f] = var_in ? var_in[f] : S(0);
  }
}

/// NonFinite::skip, pooled, when the batch holds a non-finite value (rare):
/// the shifted sums of the rows whose values are all finite, in double, one
/// thread. Shifts as pooled_shift, the first finite row standing in for the
/// first sample. Returns the number of such rows.
template <class X, class S, class C, bool Stable>
std::int64_t masked_sums(const Plan& p, const X* x, std::int64_t m, std::int64_t F, const S* loc_in, std::int64_t n,
                         C* shift, double* s1, double* s2) {
  auto row_ok = [&](std::int64_t r) {
    for (std::int64_t f = 0; f < F; ++f)
      if (!core::is_finite(core::load<double>(x + r * F + f))) return false;
    return true;
  };
  std::int64_t first = 0;
  while (first < m && !row_ok(first)) ++first;
  std::fill(s1, s1 + F, 0.0);
  std::fill(s2, s2 + F, 0.0);
  if (first == m) return 0;
  const core::Coeffs<double> shift_c = core::shift_coeffs<Stable>(p.decay, n);
  for (std::int64_t f = 0; f < F; ++f) {
    const double loc = loc_in ? static_cast<double>(loc_in[f]) : 0.0;
    shift[f] = static_cast<C>(core::pooled_shift<Stable>(shift_c, loc, n, core::load<double>(x + first * F + f)));
  }
  std::int64_t ok = 0;
  for (std::int64_t r = first; r < m; ++r) {
    if (!row_ok(r)) continue;
    ++ok;
    for (std::int64_t f = 0; f < F; ++f) {
      const double d = core::load<double>(x + r * F + f) - static_cast<double>(shift[f]);
      s1[f] += d;
      s2[f] += d * d;
    }
  }
  return ok;
}

template <class X, class S, bool Stable>
void pooled_segment(const Plan& p, const Segment& s, Workspace& ws) {
  using C = compute_t<X, S>;
  const std::int64_t F = s.feat, m = s.rows, n_elem = m * F;
  const X* x = static_cast<const X*>(s.x);
  const S* loc_in = static_cast<const S*>(s.loc_in);
  const S* var_in = static_cast<const S*>(s.var_in);
  const std::int64_t n = s.count_in ? *s.count_in : 0;
  const bool update = p.op != Op::normalize && m > 0;
  const bool normalize = p.op != Op::update;
  const int threads = max_threads(p.threads);
  const int nt = static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(threads, n_elem / kGrain)));

  // The data as super rows of width W: R full ones and a last partial one of
  // `tail` elements (a whole number of rows).
  const std::int64_t W = std::min(super_width(F), n_elem);
  const std::int64_t R = W > 0 ? n_elem / W : 0;
  const std::int64_t tail = n_elem - R * W;

  // Workspace (doubles): shift[W] (type C), sums 2W per thread + 2W for the
  // tail, mu[F] and r[F] (type C), each feature's sums s1[F], s2[F].
  const std::size_t need = static_cast<std::size_t>(W) * (1 + 2 * (nt + 1)) + 4 * static_cast<std::size_t>(F);
  if (ws.f64.size() < need) ws.f64.resize(need);
  double* base = ws.f64.data();
  C* shift = reinterpret_cast<C*>(base);
  double* sums = base + W;
  C* mu = reinterpret_cast<C*>(base + W * (1 + 2 * (nt + 1)));
  C* r = reinterpret_cast<C*>(base + W * (1 + 2 * (nt + 1)) + F);
  double* sums_f = base + W * (1 + 2 * (nt + 1)) + 2 * F;

  std::int64_t count_after = n;
  if (!update) {
    if (p.op != Op::normalize) {
      // An empty batch adds nothing: statistics and count stay (copied if out != in).
      keep_stats<S>(s, F);
      *s.count_out = n;
    }
    if (!normalize || m == 0) return;
    // Normalize only: the map of each feature from the statistics as stored.
    host_params<S, C, Stable>(p.decay, p.eps, true, loc_in, var_in, n, F, false, mu, r);
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
    return;
  }

  // An update (and normalize): one team of nt threads does it all. Each thread
  // reduces a contiguous range of super rows into its own sums; after a
  // barrier one thread merges them (fixed order), updates the statistics and
  // computes the per-feature map; after another, each thread normalizes the
  // same rows it reduced (still in its caches).
  const core::Coeffs<double> shift_c = memo_coeffs<Stable>(ws, kMemoShift, p.decay, n, 0);
  for (std::int64_t f = 0; f < F; ++f) {
    const double loc = loc_in ? static_cast<double>(loc_in[f]) : 0.0;
    shift[f] = static_cast<C>(core::pooled_shift<Stable>(shift_c, loc, n, core::load<double>(x + f)));
  }
  if (W != F) repeat_period(shift, F, shift, W);
  std::fill(sums, sums + 2 * W * (nt + 1), 0.0);
  C mu_w[kMaxSuper], r_w[kMaxSuper];  // the map repeated over a super row (F < W)
  const C* mu_row = mu;
  const C* r_row = r;
  using Y = out_t<X>;
  Y* y = static_cast<Y*>(s.y);
  const bool stream = normalize && static_cast<std::size_t>(n_elem) * sizeof(Y) >= kStreamBytes;

  auto rows_of = [&](int t, int k) {
    auto edge = [&](int j) { return j >= k ? R : R * j / k; };
    return std::pair<std::int64_t, std::int64_t>{edge(t), edge(t + 1)};
  };
  auto reduce_part = [&](int t, int k) {
    const auto [b, e] = rows_of(t, k);
    if (b < e) reduce_rows<X, C>(x, W, W, shift, b, e, sums + 2 * W * t, sums + 2 * W * t + W);
  };
  auto finish = [&]() {
    if (tail > 0) reduce_rows<X, C>(x + R * W, W, tail, shift, 0, 1, sums + 2 * W * nt, sums + 2 * W * nt + W);
    S* loc_out = static_cast<S*>(s.loc_out);
    S* var_out = static_cast<S*>(s.var_out);
    // Each feature's sums: thread slots, then the tail, columns f, f + F, ...,
    // in that fixed order.
    double* s1 = sums_f;
    double* s2 = sums_f + F;
    bool finite = true;
    for (std::int64_t f = 0; f < F; ++f) {
      double a = 0.0, q = 0.0;
      for (int t = 0; t <= nt; ++t)
        for (std::int64_t j = f; j < W; j += F) {
          a += sums[2 * W * t + j];
          q += sums[2 * W * t + W + j];
        }
      s1[f] = a;
      s2[f] = q;
      finite = finite && core::is_finite(a) && core::is_finite(q);
    }
    // Sums of finite values (shifted by a finite value, squared in C over a
    // 128-row tile, added in double) are finite unless |x - K| passes ~1e19 in
    // float: a non-finite sum means a non-finite input (or such a value), and
    // NonFinite::skip sums again, leaving out the rows that have one.
    std::int64_t m_ok = m;
    if (!finite && p.nonfinite == NonFinite::skip && !std::is_integral_v<X>)
      m_ok = masked_sums<X, S, C, Stable>(p, x, m, F, loc_in, n, shift, s1, s2);
    // The normalization's coefficients at the new count: torchrl's update
    // computed the same bias correction already (stable needs none).
    core::Coeffs<double> nc{0.0, 1.0};
    if (m_ok > 0) {
      const core::Coeffs<double> uc = memo_coeffs<Stable>(ws, kMemoUpdate, p.decay, n, m_ok);
      remember_shift<Stable>(ws, p.decay, n + m_ok, uc);
      if constexpr (!Stable) nc.inv_bc = uc.inv_bc;
      for (std::int64_t f = 0; f < F; ++f) {
        const core::Moments b =
            core::moments_from_shifted(static_cast<double>(m_ok), static_cast<double>(shift[f]), s1[f], s2[f]);
        double loc = loc_in ? static_cast<double>(loc_in[f]) : 0.0;
        double var = var_in ? static_cast<double>(var_in[f]) : 0.0;
        core::update_pooled<Stable>(uc, loc, var, b);
        loc_out[f] = static_cast<S>(loc);
        var_out[f] = static_cast<S>(var);
      }
    } else {
      keep_stats<S>(s, F);
      nc = core::normalize_coeffs<double, Stable>(p.decay, n);
    }
    if (m_ok < m && s.skipped != nullptr) *s.skipped += m - m_ok;
    count_after = n + m_ok;
    *s.count_out = count_after;
    if (!normalize) return;
    // The normalization of each feature, from the statistics as stored.
    host_params<S, C, Stable>(p.decay, p.eps, true, static_cast<const S*>(s.loc_out),
                              static_cast<const S*>(s.var_out), count_after, F, false, mu, r, nullptr, &nc);
    if (W != F) {
      repeat_period(mu, F, mu_w, W);
      repeat_period(r, F, r_w, W);
      mu_row = mu_w;
      r_row = r_w;
    }
  };
  auto normalize_part = [&](int t, int k) {
    const auto [b, e] = rows_of(t, k);
    const std::int64_t eb = b * W, ee = t == k - 1 ? n_elem : e * W;  // the last thread takes the tail
    if (eb >= ee) return;
    // Last rows first: those the reduction read last are the ones still cached.
    constexpr std::int64_t kBack = 1 << 16;
    for (std::int64_t hi = ee; hi > eb;) {
      const std::int64_t lo = std::max(eb, hi - kBack);
      write_out(y, lo, hi, stream, [&](std::int64_t b2, std::int64_t e2, Y* out) {
        affine_run<X, C, AffineDirection::apply>(x, out, b2, e2, W, mu_row, r_row);
      });
      hi = lo;
    }
  };

#if defined(_OPENMP)
  if (nt > 1) {
#pragma omp parallel num_threads(nt)
    {
      const int t = omp_get_thread_num(), k = omp_get_num_threads();
      reduce_part(t, k);
#pragma omp barrier
#pragma omp single
      finish();  // the single's implied barrier publishes the map
      if (normalize) normalize_part(t, k);
    }
    return;
  }
#endif
  reduce_part(0, 1);
  finish();
  if (normalize) normalize_part(0, 1);
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
                            *s.count_in, numel, true, mu, scale,
                            !p.pooled && s.skipped != nullptr && *s.skipped != 0 ? s.skips : nullptr);
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

}  // namespace vecnorm::detail::cpu::VECNORM_CPU_ISA

#if defined(VECNORM_CPU_AVX2_BUILD)
#pragma GCC pop_options
#endif
