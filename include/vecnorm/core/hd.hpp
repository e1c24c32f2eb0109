// vecnorm/core/hd.hpp -- the host/device qualifier of the numeric core.
//
// Under nvcc the core's functions are __host__ __device__; with a host compiler
// (the CPU backend, the tests, the SIMT emulator build of the kernels) they are
// plain inline functions. The same source is therefore executed by every backend.
#pragma once

#if defined(__CUDACC__)
#define VECNORM_HD __host__ __device__ __forceinline__
#else
#define VECNORM_HD inline
#endif
