// src/cpu/loops.hpp -- what the CPU loop files share: dtype visits, the split
// of work into chunks for the pool's threads (pool.hpp), streamed outputs,
// vector registers and super rows. Included after src/cpu/isa_begin.hpp (everything here has internal
// linkage and is compiled for the file's instruction set).
//
// Determinism: the split of the work depends only on the sizes, and partials
// are merged in chunk order, so the same input gives the same bits on every
// run and with any number of threads.
#pragma once

#ifndef VECNORM_CPU_ISA
#error "include src/cpu/isa_begin.hpp first"
#endif

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

namespace vecnorm::detail::cpu::VECNORM_CPU_ISA {
namespace {

using core::bf16_t;
using core::compute_t;
using core::half_t;
template <class X>
using out_t = core::output_t<X>;

template <class T>
struct Tag {
  using type = T;
};

/// Elements [b, e) keep their statistics, copied where the call writes them
/// elsewhere (a null input reads as zeros): a masked-out run of rows.
template <class S>
void keep_range(const Segment& s, std::int64_t b, std::int64_t e) {
  const S* loc_in = static_cast<const S*>(s.loc_in);
  const S* var_in = static_cast<const S*>(s.var_in);
  S* loc_out = static_cast<S*>(s.loc_out);
  S* var_out = static_cast<S*>(s.var_out);
  if (loc_out != loc_in)
    for (std::int64_t i = b; i < e; ++i) loc_out[i] = loc_in ? loc_in[i] : S(0);
  if (var_out != var_in)
    for (std::int64_t i = b; i < e; ++i) var_out[i] = var_in ? var_in[i] : S(0);
}
/// An update that changes nothing (an empty pooled batch, a key whose updates
/// have stopped: Options::until): all `numel` statistics stay.
template <class S>
void keep_stats(const Segment& s, std::int64_t numel) {
  keep_range<S>(s, 0, numel);
}

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

/// Calls f(Tag<T>{}) with T float or double (statistics and map dtypes).
template <class F>
void visit_float(DType d, F&& f) {
  if (d == DType::float64) return f(Tag<double>{});
  return f(Tag<float>{});
}

/// The dtype of a compute type.
template <class C>
constexpr DType dtype_of() {
  return std::is_same_v<C, double> ? DType::float64 : DType::float32;
}

/// The threads of a call: Options::cpu_threads, or the default (pool.hpp).
inline int max_threads(int requested) { return requested > 0 ? requested : default_threads(); }

/// Below this many elements per chunk, a chunk costs more to hand out than it saves.
constexpr std::int64_t kGrain = 16384;
/// At most this many chunks per call (the partials of a reduction are per chunk).
constexpr std::int64_t kMaxChunks = 64;
static_assert(kMaxChunks <= kMaxTaskChunks);

/// The chunks of [0, n): boundaries that depend on n only (never on the
/// thread count), multiples of `align`, at least `grain` elements each but
/// the last, at most kMaxChunks of them.
struct Chunks {
  std::int64_t n = 0, size = 0, count = 0;
  Chunks(std::int64_t n_, std::int64_t grain, std::int64_t align) : n(n_) {
    const std::int64_t g = std::max<std::int64_t>(grain, 1);
    std::int64_t c = std::clamp<std::int64_t>(n / g, 1, kMaxChunks);
    size = (n + c - 1) / c;
    size = std::max<std::int64_t>(align, (size + align - 1) / align * align);
    count = n > 0 ? (n + size - 1) / size : 0;
  }
  std::int64_t begin(std::int64_t i) const { return std::min(n, i * size); }
  std::int64_t end(std::int64_t i) const { return std::min(n, (i + 1) * size); }
};

/// Runs f(i) for every i in [0, chunks) on up to `threads` threads (the pool
/// of pool.hpp: chunks are claimed by whoever is free, the caller included).
template <class F>
void for_chunks(std::int64_t chunks, int threads, F&& f, bool reverse = false) {
  using Fn = std::remove_reference_t<F>;
  if (chunks <= 1 || threads <= 1) {
    if (reverse)
      for (std::int64_t i = chunks; i-- > 0;) f(i);
    else
      for (std::int64_t i = 0; i < chunks; ++i) f(i);
    return;
  }
  ChunkTask task;
  task.call = [](void* ctx, std::int64_t i) noexcept { (*static_cast<Fn*>(ctx))(i); };
  task.ctx = const_cast<void*>(static_cast<const void*>(&f));
  task.chunks = chunks;
  task.reverse = reverse;
  run_chunks(task, threads);
}

/// Runs body(begin, end, chunk) over [0, n) in the chunks of Chunks(n, grain,
/// align) on up to `threads` threads. The split depends only on n.
template <class F>
void parallel_for(std::int64_t n, int threads, std::int64_t grain, std::int64_t align, F&& body) {
  const Chunks ch(n, grain, align);
  if (ch.count <= 1) {
    if (n > 0) body(std::int64_t{0}, n, 0);
    return;
  }
  for_chunks(ch.count, threads, [&](std::int64_t i) { body(ch.begin(i), ch.end(i), static_cast<int>(i)); });
}

// ---------------------------------------------------------------------------
// Output streams
// ---------------------------------------------------------------------------
//
// An output larger than the caches is written with non-temporal stores: a
// normal store first reads the line it writes (read for ownership), which
// costs as much memory traffic as reading the output; non-temporal stores
// skip that read (a plain copy does the same, so a large step moves x, y and
// nothing more). The loops compute a chunk of y into an L1-resident buffer and
// stream it out. Smaller outputs are written in place, and stay in the caches
// for whoever reads them next.

/// Outputs of at least this many bytes (per segment) are streamed (a build may
/// set another threshold with -DVECNORM_STREAM_BYTES=N; bench experiments do).
#ifndef VECNORM_STREAM_BYTES
#define VECNORM_STREAM_BYTES (std::size_t{4} << 20)
#endif
constexpr std::size_t kStreamBytes = VECNORM_STREAM_BYTES;
/// Elements per staged chunk.
constexpr std::int64_t kChunk = 1024;

/// Copies `bytes` from src to dst, with non-temporal stores where aligned.
inline void stream_copy(void* dst, const void* src, std::size_t bytes) noexcept {
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
inline void stream_fence() noexcept {
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
// Pooled statistics and pooled (broadcast) maps repeat with period F, the
// feature count. A small F (a reward: F = 1) would leave the vector loops a
// few elements wide, so the data is viewed as super rows of k consecutive rows
// (width W = k F >= kMinWidth) with the parameters repeated k times.

constexpr std::int64_t kMinWidth = 64;
/// The most elements a super row of a small F can have (F < kMinWidth).
constexpr std::int64_t kMaxSuper = 2 * kMinWidth;

inline std::int64_t super_width(std::int64_t feat) {
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

}  // namespace
}  // namespace vecnorm::detail::cpu::VECNORM_CPU_ISA
