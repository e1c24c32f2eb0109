// simt_device.hpp -- CUDA device functions at global scope, as kernel source calls them:
// barriers, warp intrinsics, atomics, fences, loads, bit and math intrinsics, min/max.
// Include simt.hpp, not this file.
//
// Every synchronizing call takes a defaulted std::source_location: the call site in the kernel
// source, used to check that threads meet at the same call and named in error messages.
#pragma once
#ifndef SIMT_INSIDE_SIMT_HPP
#error "include simt.hpp, not simt_device.hpp"
#endif

namespace simt::detail {

using loc_t = std::source_location;

template <class T>
inline constexpr bool is_shfl_class_v =
    std::is_class_v<T> && std::is_trivially_copyable_v<T> && (sizeof(T) <= 8);

template <class T>
std::uint64_t to_bits(const T& v) noexcept {
  std::uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
T from_bits(std::uint64_t b) noexcept {
  T v;
  std::memcpy(static_cast<void*>(&v), &b, sizeof(T));
  return v;
}

inline constexpr const char* shfl_api[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync"};

template <class T>
inline T shfl(ShflMode mode, unsigned mask, T var, unsigned arg, int width, const loc_t& loc) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move values of at most 8 bytes");
  const char* api = shfl_api[static_cast<int>(mode)];
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) [[unlikely]]
    bad_shfl_width(api, width, loc);
  return from_bits<T>(warp_sync_op(Op::shfl, api, mask, to_bits(var), shfl_spec(mode, arg, width), loc));
}

template <class T>
unsigned match_any(unsigned mask, T value, const loc_t& loc) {
  return static_cast<unsigned>(warp_sync_op(Op::match_any, "__match_any_sync", mask, to_bits(value), 0, loc));
}
template <class T>
unsigned match_all(unsigned mask, T value, int* pred, const loc_t& loc) {
  const auto r = static_cast<unsigned>(warp_sync_op(Op::match_all, "__match_all_sync", mask, to_bits(value), 0, loc));
  if (pred) *pred = r != 0;
  return r;
}

inline std::uint32_t reduce(Op op, const char* api, unsigned mask, std::uint32_t v, const loc_t& loc) {
  return static_cast<std::uint32_t>(warp_sync_op(op, api, mask, v, 0, loc));
}

template <class T, class F>
T atomic_update(T* address, F f) {
  std::atomic_ref<T> a(*address);
  T old = a.load();
  while (!a.compare_exchange_weak(old, f(old))) {
  }
  return old;
}

}  // namespace simt::detail

// ---- Block barriers -----------------------------------------------------------------------------
inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  ::simt::detail::block_barrier(::simt::detail::BarrierOp::sync, 1, loc);
}
inline int __syncthreads_count(int predicate, std::source_location loc = std::source_location::current()) {
  return ::simt::detail::block_barrier(::simt::detail::BarrierOp::count, predicate, loc);
}
inline int __syncthreads_and(int predicate, std::source_location loc = std::source_location::current()) {
  return ::simt::detail::block_barrier(::simt::detail::BarrierOp::all, predicate, loc);
}
inline int __syncthreads_or(int predicate, std::source_location loc = std::source_location::current()) {
  return ::simt::detail::block_barrier(::simt::detail::BarrierOp::any, predicate, loc);
}

// ---- Warp synchronization and votes -------------------------------------------------------------
inline void __syncwarp(unsigned mask = 0xffffffffu, std::source_location loc = std::source_location::current()) {
  ::simt::detail::warp_sync_op(::simt::detail::Op::syncwarp, "__syncwarp", mask, 0, 0, loc);
}
inline unsigned __ballot_sync(unsigned mask, int predicate, std::source_location loc = std::source_location::current()) {
  return static_cast<unsigned>(::simt::detail::warp_sync_op(::simt::detail::Op::ballot, "__ballot_sync", mask, predicate != 0, 0, loc));
}
inline int __any_sync(unsigned mask, int predicate, std::source_location loc = std::source_location::current()) {
  return ::simt::detail::warp_sync_op(::simt::detail::Op::ballot, "__any_sync", mask, predicate != 0, 0, loc) != 0;
}
inline int __all_sync(unsigned mask, int predicate, std::source_location loc = std::source_location::current()) {
  return ::simt::detail::warp_sync_op(::simt::detail::Op::ballot, "__all_sync", mask, predicate != 0, 0, loc) == mask;
}
inline unsigned __activemask(std::source_location loc = std::source_location::current()) {
  return ::simt::detail::activemask_op(loc);
}

// ---- Shuffles: int, unsigned, long, unsigned long, long long, unsigned long long, float, double,
// and trivially copyable class types of at most 8 bytes (__half, __half2, __nv_bfloat16, ...).
#define SIMT_SHUFFLES_FOR(T)                                                                                       \
  inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize,                                   \
                       std::source_location loc = std::source_location::current()) {                             \
    return ::simt::detail::shfl<T>(::simt::detail::ShflMode::idx, mask, var, static_cast<unsigned>(srcLane), width, loc); \
  }                                                                                                                \
  inline T __shfl_up_sync(unsigned mask, T var, unsigned int delta, int width = warpSize,                         \
                          std::source_location loc = std::source_location::current()) {                          \
    return ::simt::detail::shfl<T>(::simt::detail::ShflMode::up, mask, var, delta, width, loc);                    \
  }                                                                                                                \
  inline T __shfl_down_sync(unsigned mask, T var, unsigned int delta, int width = warpSize,                       \
                            std::source_location loc = std::source_location::current()) {                        \
    return ::simt::detail::shfl<T>(::simt::detail::ShflMode::down, mask, var, delta, width, loc);                  \
  }                                                                                                                \
  inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,                              \
                           std::source_location loc = std::source_location::current()) {                         \
    return ::simt::detail::shfl<T>(::simt::detail::ShflMode::bfly, mask, var, static_cast<unsigned>(laneMask), width, loc); \
  }
SIMT_SHUFFLES_FOR(int)
SIMT_SHUFFLES_FOR(unsigned int)
SIMT_SHUFFLES_FOR(long)
SIMT_SHUFFLES_FOR(unsigned long)
SIMT_SHUFFLES_FOR(long long)
SIMT_SHUFFLES_FOR(unsigned long long)
SIMT_SHUFFLES_FOR(float)
SIMT_SHUFFLES_FOR(double)
#undef SIMT_SHUFFLES_FOR

template <class T>
  requires ::simt::detail::is_shfl_class_v<T>
T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize, std::source_location loc = std::source_location::current()) {
  return ::simt::detail::shfl<T>(::simt::detail::ShflMode::idx, mask, var, static_cast<unsigned>(srcLane), width, loc);
}
template <class T>
  requires ::simt::detail::is_shfl_class_v<T>
T __shfl_up_sync(unsigned mask, T var, unsigned int delta, int width = warpSize, std::source_location loc = std::source_location::current()) {
  return ::simt::detail::shfl<T>(::simt::detail::ShflMode::up, mask, var, delta, width, loc);
}
template <class T>
  requires ::simt::detail::is_shfl_class_v<T>
T __shfl_down_sync(unsigned mask, T var, unsigned int delta, int width = warpSize, std::source_location loc = std::source_location::current()) {
  return ::simt::detail::shfl<T>(::simt::detail::ShflMode::down, mask, var, delta, width, loc);
}
template <class T>
  requires ::simt::detail::is_shfl_class_v<T>
T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize, std::source_location loc = std::source_location::current()) {
  return ::simt::detail::shfl<T>(::simt::detail::ShflMode::bfly, mask, var, static_cast<unsigned>(laneMask), width, loc);
}

// ---- Match and reduce (sm_70 / sm_80) -----------------------------------------------------------
#define SIMT_MATCH_FOR(T)                                                                                        \
  inline unsigned __match_any_sync(unsigned mask, T value, std::source_location loc = std::source_location::current()) { \
    return ::simt::detail::match_any(mask, value, loc);                                                          \
  }                                                                                                              \
  inline unsigned __match_all_sync(unsigned mask, T value, int* pred,                                            \
                                   std::source_location loc = std::source_location::current()) {                 \
    return ::simt::detail::match_all(mask, value, pred, loc);                                                    \
  }
SIMT_MATCH_FOR(int)
SIMT_MATCH_FOR(unsigned int)
SIMT_MATCH_FOR(long)
SIMT_MATCH_FOR(unsigned long)
SIMT_MATCH_FOR(long long)
SIMT_MATCH_FOR(unsigned long long)
SIMT_MATCH_FOR(float)
SIMT_MATCH_FOR(double)
#undef SIMT_MATCH_FOR

inline unsigned __reduce_add_sync(unsigned mask, unsigned value, std::source_location loc = std::source_location::current()) {
  return ::simt::detail::reduce(::simt::detail::Op::reduce_add, "__reduce_add_sync", mask, value, loc);
}
inline int __reduce_add_sync(unsigned mask, int value, std::source_location loc = std::source_location::current()) {
  return static_cast<int>(::simt::detail::reduce(::simt::detail::Op::reduce_add, "__reduce_add_sync", mask, static_cast<std::uint32_t>(value), loc));
}
inline unsigned __reduce_min_sync(unsigned mask, unsigned value, std::source_location loc = std::source_location::current()) {
  return ::simt::detail::reduce(::simt::detail::Op::reduce_min_u, "__reduce_min_sync", mask, value, loc);
}
inline int __reduce_min_sync(unsigned mask, int value, std::source_location loc = std::source_location::current()) {
  return static_cast<int>(::simt::detail::reduce(::simt::detail::Op::reduce_min_i, "__reduce_min_sync", mask, static_cast<std::uint32_t>(value), loc));
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned value, std::source_location loc = std::source_location::current()) {
  return ::simt::detail::reduce(::simt::detail::Op::reduce_max_u, "__reduce_max_sync", mask, value, loc);
}
inline int __reduce_max_sync(unsigned mask, int value, std::source_location loc = std::source_location::current()) {
  return static_cast<int>(::simt::detail::reduce(::simt::detail::Op::reduce_max_i, "__reduce_max_sync", mask, static_cast<std::uint32_t>(value), loc));
}
inline unsigned __reduce_and_sync(unsigned mask, unsigned value, std::source_location loc = std::source_location::current()) {
  return ::simt::detail::reduce(::simt::detail::Op::reduce_and, "__reduce_and_sync", mask, value, loc);
}
inline unsigned __reduce_or_sync(unsigned mask, unsigned value, std::source_location loc = std::source_location::current()) {
  return ::simt::detail::reduce(::simt::detail::Op::reduce_or, "__reduce_or_sync", mask, value, loc);
}
inline unsigned __reduce_xor_sync(unsigned mask, unsigned value, std::source_location loc = std::source_location::current()) {
  return ::simt::detail::reduce(::simt::detail::Op::reduce_xor, "__reduce_xor_sync", mask, value, loc);
}

// ---- Atomics ------------------------------------------------------------------------------------
// Real atomics (sequentially consistent, stronger than CUDA's relaxed ones) on any memory: global
// memory shared by all workers, shared memory, or host memory.
inline int atomicAdd(int* address, int val) { return std::atomic_ref<int>(*address).fetch_add(val); }
inline unsigned int atomicAdd(unsigned int* address, unsigned int val) { return std::atomic_ref<unsigned int>(*address).fetch_add(val); }
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long val) {
  return std::atomic_ref<unsigned long long>(*address).fetch_add(val);
}
inline float atomicAdd(float* address, float val) { return std::atomic_ref<float>(*address).fetch_add(val); }
inline double atomicAdd(double* address, double val) { return std::atomic_ref<double>(*address).fetch_add(val); }

inline int atomicSub(int* address, int val) { return std::atomic_ref<int>(*address).fetch_sub(val); }
inline unsigned int atomicSub(unsigned int* address, unsigned int val) { return std::atomic_ref<unsigned int>(*address).fetch_sub(val); }

inline int atomicExch(int* address, int val) { return std::atomic_ref<int>(*address).exchange(val); }
inline unsigned int atomicExch(unsigned int* address, unsigned int val) { return std::atomic_ref<unsigned int>(*address).exchange(val); }
inline unsigned long long atomicExch(unsigned long long* address, unsigned long long val) {
  return std::atomic_ref<unsigned long long>(*address).exchange(val);
}
inline float atomicExch(float* address, float val) { return std::atomic_ref<float>(*address).exchange(val); }

#define SIMT_ATOMIC_MINMAX_FOR(T)                                                                                     \
  inline T atomicMin(T* address, T val) { return ::simt::detail::atomic_update(address, [val](T o) { return val < o ? val : o; }); } \
  inline T atomicMax(T* address, T val) { return ::simt::detail::atomic_update(address, [val](T o) { return val > o ? val : o; }); }
SIMT_ATOMIC_MINMAX_FOR(int)
SIMT_ATOMIC_MINMAX_FOR(unsigned int)
SIMT_ATOMIC_MINMAX_FOR(long long)
SIMT_ATOMIC_MINMAX_FOR(unsigned long long)
#undef SIMT_ATOMIC_MINMAX_FOR

/// ((old >= val) ? 0 : old + 1)
inline unsigned int atomicInc(unsigned int* address, unsigned int val) {
  return ::simt::detail::atomic_update(address, [val](unsigned int o) { return o >= val ? 0u : o + 1u; });
}
/// ((old == 0) || (old > val)) ? val : old - 1
inline unsigned int atomicDec(unsigned int* address, unsigned int val) {
  return ::simt::detail::atomic_update(address, [val](unsigned int o) { return (o == 0u || o > val) ? val : o - 1u; });
}

#define SIMT_ATOMIC_CAS_FOR(T)                                 \
  inline T atomicCAS(T* address, T compare, T val) {          \
    std::atomic_ref<T>(*address).compare_exchange_strong(compare, val); \
    return compare;                                             \
  }
SIMT_ATOMIC_CAS_FOR(int)
SIMT_ATOMIC_CAS_FOR(unsigned int)
SIMT_ATOMIC_CAS_FOR(unsigned long long)
SIMT_ATOMIC_CAS_FOR(unsigned short)
#undef SIMT_ATOMIC_CAS_FOR

#define SIMT_ATOMIC_BITS_FOR(T)                                                                   \
  inline T atomicAnd(T* address, T val) { return std::atomic_ref<T>(*address).fetch_and(val); } \
  inline T atomicOr(T* address, T val) { return std::atomic_ref<T>(*address).fetch_or(val); }   \
  inline T atomicXor(T* address, T val) { return std::atomic_ref<T>(*address).fetch_xor(val); }
SIMT_ATOMIC_BITS_FOR(int)
SIMT_ATOMIC_BITS_FOR(unsigned int)
SIMT_ATOMIC_BITS_FOR(unsigned long long)
#undef SIMT_ATOMIC_BITS_FOR

// Scoped variants (_block, _system): the same operations.
#define SIMT_ATOMIC_SCOPES(name)                                                          \
  template <class... A>                                                                   \
  inline auto name##_block(A... a) -> decltype(name(a...)) { return name(a...); }         \
  template <class... A>                                                                   \
  inline auto name##_system(A... a) -> decltype(name(a...)) { return name(a...); }
SIMT_ATOMIC_SCOPES(atomicAdd)
SIMT_ATOMIC_SCOPES(atomicSub)
SIMT_ATOMIC_SCOPES(atomicExch)
SIMT_ATOMIC_SCOPES(atomicMin)
SIMT_ATOMIC_SCOPES(atomicMax)
SIMT_ATOMIC_SCOPES(atomicInc)
SIMT_ATOMIC_SCOPES(atomicDec)
SIMT_ATOMIC_SCOPES(atomicCAS)
SIMT_ATOMIC_SCOPES(atomicAnd)
SIMT_ATOMIC_SCOPES(atomicOr)
SIMT_ATOMIC_SCOPES(atomicXor)
#undef SIMT_ATOMIC_SCOPES

// ---- Fences -------------------------------------------------------------------------------------
// The emulator's atomics are sequentially consistent, so fences add no ordering a test could
// observe. Under TSan (which does not model fences, and GCC warns about them) they are empty.
inline void __threadfence() {
#if !SIMT_TSAN
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}
inline void __threadfence_block() { __threadfence(); }
inline void __threadfence_system() { __threadfence(); }

// ---- Loads and stores with cache hints: plain accesses ------------------------------------------
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldca(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldlu(const T* p) { return *p; }
template <class T> inline T __ldcv(const T* p) { return *p; }
template <class T> inline void __stwb(T* p, T v) { *p = v; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stwt(T* p, T v) { *p = v; }

// ---- Miscellaneous ------------------------------------------------------------------------------
/// Lets the other threads of the block run first (a spin loop with __nanosleep can make progress
/// when what it waits for is done by another thread of the same block).
inline void __nanosleep(unsigned int) { ::simt::detail::yield_op(); }
[[noreturn]] inline void __trap(std::source_location loc = std::source_location::current()) { ::simt::detail::trap_op(loc); }
inline long long clock64() {
  return static_cast<long long>(std::chrono::steady_clock::now().time_since_epoch().count());
}

// ---- Integer intrinsics -------------------------------------------------------------------------
inline int __popc(unsigned int x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __clz(int x) { return std::countl_zero(static_cast<unsigned int>(x)); }
inline int __clzll(long long x) { return std::countl_zero(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return x == 0 ? 0 : std::countr_zero(static_cast<unsigned int>(x)) + 1; }
inline int __ffsll(long long x) { return x == 0 ? 0 : std::countr_zero(static_cast<unsigned long long>(x)) + 1; }
inline unsigned int __brev(unsigned int x) {
  unsigned int r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned long long __brevll(unsigned long long x) {
  return (static_cast<unsigned long long>(__brev(static_cast<unsigned int>(x))) << 32) | __brev(static_cast<unsigned int>(x >> 32));
}
inline int __mulhi(int x, int y) { return static_cast<int>((static_cast<long long>(x) * y) >> 32); }
inline unsigned int __umulhi(unsigned int x, unsigned int y) {
  return static_cast<unsigned int>((static_cast<unsigned long long>(x) * y) >> 32);
}
__extension__ typedef __int128 simt_int128_t;
__extension__ typedef unsigned __int128 simt_uint128_t;
inline long long __mul64hi(long long x, long long y) { return static_cast<long long>((static_cast<simt_int128_t>(x) * y) >> 64); }
inline unsigned long long __umul64hi(unsigned long long x, unsigned long long y) {
  return static_cast<unsigned long long>((static_cast<simt_uint128_t>(x) * y) >> 64);
}
inline int __mul24(int x, int y) { return ((x << 8) >> 8) * ((y << 8) >> 8); }
inline unsigned int __umul24(unsigned int x, unsigned int y) { return (x & 0xffffffu) * (y & 0xffffffu); }

// ---- Reinterpretation and conversion intrinsics -------------------------------------------------
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline float __uint_as_float(unsigned int x) { return std::bit_cast<float>(x); }
inline unsigned int __float_as_uint(float x) { return std::bit_cast<unsigned int>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
inline int __float2int_rn(float x) { return static_cast<int>(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_rd(float x) { return static_cast<int>(std::floor(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(std::ceil(x)); }
inline unsigned int __float2uint_rn(float x) { return static_cast<unsigned int>(std::nearbyint(x)); }
inline unsigned int __float2uint_rz(float x) { return static_cast<unsigned int>(x); }
inline long long __float2ll_rn(float x) { return std::llrint(x); }
inline long long __float2ll_rz(float x) { return static_cast<long long>(x); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned int x) { return static_cast<float>(x); }
inline float __ll2float_rn(long long x) { return static_cast<float>(x); }
inline float __double2float_rn(double x) { return static_cast<float>(x); }
inline int __double2int_rn(double x) { return static_cast<int>(std::nearbyint(x)); }
inline int __double2int_rz(double x) { return static_cast<int>(x); }
inline long long __double2ll_rn(double x) { return std::llrint(x); }
inline double __int2double_rn(int x) { return static_cast<double>(x); }
inline double __ll2double_rn(long long x) { return static_cast<double>(x); }

// ---- Floating-point intrinsics (computed at full precision; a GPU's fast versions differ) -------
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __frsqrt_rn(float x) { return 1.0f / std::sqrt(x); }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline double __dsqrt_rn(double x) { return std::sqrt(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline double __drcp_rn(double x) { return 1.0 / x; }
inline float __fdividef(float x, float y) { return x / y; }
inline float fdividef(float x, float y) { return x / y; }
inline float __fdiv_rn(float x, float y) { return x / y; }
inline double __ddiv_rn(double x, double y) { return x / y; }
inline float __fadd_rn(float x, float y) { return x + y; }
inline float __fsub_rn(float x, float y) { return x - y; }
inline float __fmul_rn(float x, float y) { return x * y; }
inline double __dadd_rn(double x, double y) { return x + y; }
inline double __dsub_rn(double x, double y) { return x - y; }
inline double __dmul_rn(double x, double y) { return x * y; }
inline float __fmaf_rn(float x, float y, float z) { return std::fma(x, y, z); }
inline double __fma_rn(double x, double y, double z) { return std::fma(x, y, z); }
inline float __saturatef(float x) { return x > 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }  // NaN -> 0
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline void __sincosf(float x, float* s, float* c) {
  *s = std::sin(x);
  *c = std::cos(x);
}

// ---- min / max as device code calls them (CUDA's overload set) ----------------------------------
#define SIMT_MINMAX(R, A, B)                                                        \
  inline R min(A a, B b) { return static_cast<R>(a) < static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b); } \
  inline R max(A a, B b) { return static_cast<R>(a) > static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b); }
SIMT_MINMAX(int, int, int)
SIMT_MINMAX(unsigned int, unsigned int, unsigned int)
SIMT_MINMAX(unsigned int, int, unsigned int)
SIMT_MINMAX(unsigned int, unsigned int, int)
SIMT_MINMAX(long, long, long)
SIMT_MINMAX(unsigned long, unsigned long, unsigned long)
SIMT_MINMAX(unsigned long, long, unsigned long)
SIMT_MINMAX(unsigned long, unsigned long, long)
SIMT_MINMAX(long long, long long, long long)
SIMT_MINMAX(unsigned long long, unsigned long long, unsigned long long)
SIMT_MINMAX(unsigned long long, long long, unsigned long long)
SIMT_MINMAX(unsigned long long, unsigned long long, long long)
#undef SIMT_MINMAX
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline double min(float a, double b) { return std::fmin(static_cast<double>(a), b); }
inline double max(float a, double b) { return std::fmax(static_cast<double>(a), b); }
inline double min(double a, float b) { return std::fmin(a, static_cast<double>(b)); }
inline double max(double a, float b) { return std::fmax(a, static_cast<double>(b)); }
inline unsigned int umin(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int umax(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long llmin(long long a, long long b) { return a < b ? a : b; }
inline long long llmax(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long ullmin(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long ullmax(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
