// vecnorm/core/hd.hpp -- the host/device qualifier of the numeric core.
//
// Under nvcc the core's functions are __host__ __device__; with a host compiler
// (the CPU backend, the tests, the SIMT emulator build of the kernels) they are
// plain inline functions. The same source is therefore executed by every backend.
#pragma once

#if defined(__CUDACC__)
#define VECNORM_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// Inlined on the host as on the device: the core's functions are small, and
// the CPU loops need them inside (GCC otherwise left e.g. an estimator's
// update_coeffs as a call in the per-call path: ~7% of a 1x17 step).
#define VECNORM_HD inline __attribute__((always_inline))
#else
#define VECNORM_HD inline
#endif

namespace vecnorm::core {

/// The bits of a value as another type of the same size (std::bit_cast, on
/// the host and in device code: a builtin copy that compiles to a move).
template <class To, class From>
VECNORM_HD To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast: the sizes differ");
  To to;
  __builtin_memcpy(&to, &from, sizeof to);
  return to;
}

}  // namespace vecnorm::core
