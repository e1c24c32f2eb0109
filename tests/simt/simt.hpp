// simt.hpp -- TEST-ONLY execution of CUDA kernels on the CPU (the "SIMT emulator").
//
// Include this header first in a test translation unit, then the unchanged kernel source
// (device code only, no <<<>>>), and run kernels with simt::launch():
//
//   #include "simt.hpp"
//   #include "kernels/moments.cuh"
//   simt::launch(dim3(blocks), dim3(256), /*dynamic shared bytes*/ 0, moments_kernel<float>, x, n, out);
//
// Every CUDA thread is a user-space fiber (Boost.Context); the threads of one block run on one
// OS thread; blocks are spread over a pool of OS worker threads. Warps are 32 consecutive linear
// thread ids. What is supported, the forms kernels must use and the limits: README.md here.
//
// Files: simt.hpp (this: CUDA spellings, vector types, built-in variables),
//        simt_runtime.hpp (settings, launch, dynamic shared memory, runtime entry points),
//        simt_device.hpp (CUDA device functions: intrinsics, atomics, math),
//        simt_runtime_impl.hpp + simt_runtime.cpp (the runtime: fibers, scheduler, barriers,
//        warp rendezvous; compiled once per executable, or inline with SIMT_HEADER_ONLY).
#pragma once

#if defined(__CUDACC__) || defined(__CUDA_ARCH__)
#error "simt.hpp is for host-compiler (g++/clang++) test builds only; nvcc builds use the real CUDA headers"
#endif
#if __cplusplus < 202002L
#error "simt.hpp needs C++20 (std::source_location, std::atomic_ref)"
#endif
#if defined(__DEVICE_LAUNCH_PARAMETERS_H__)
#error "include simt.hpp before CUDA headers that declare threadIdx (cuda_runtime.h, device_launch_parameters.h)"
#endif

// Standard headers first: the CUDA spellings below are macros, defined after them. (What only the
// runtime needs is included by simt_runtime_impl.hpp, so kernel sources stay quick to compile.)
#include <atomic>
#include <bit>
#include <cassert>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <math.h>
#include <source_location>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>

/// Defined for code that must know it runs under the emulator (prefer not to need it).
#define SIMT_EMULATION 1

// ---- Sanitizers --------------------------------------------------------------------------------
#if defined(__SANITIZE_THREAD__)
#define SIMT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SIMT_TSAN 1
#endif
#endif
#ifndef SIMT_TSAN
#define SIMT_TSAN 0
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SIMT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SIMT_ASAN 1
#endif
#endif
#ifndef SIMT_ASAN
#define SIMT_ASAN 0
#endif

// Under AddressSanitizer, __shared__ variables are plain statics (below), which get redzones
// (thread_local variables get none); plain statics need one block at a time, hence one worker.
#if SIMT_ASAN && !defined(SIMT_SINGLE_WORKER)
#define SIMT_SINGLE_WORKER 1
#endif
// __shared__ storage: plain static (one block at a time in the process) or thread_local (one per
// worker OS thread; a worker runs one block at a time). TSan always uses thread_local: every
// TSan build runs several workers, so that races between blocks can be seen.
#if defined(SIMT_SINGLE_WORKER) && !SIMT_TSAN
#define SIMT_SHARED_IS_STATIC 1
#else
#define SIMT_SHARED_IS_STATIC 0
#endif

// ---- CUDA declaration specifiers ---------------------------------------------------------------
// Defined before any CUDA header: crt/host_defines.h keeps existing definitions of these for
// host compilers. If it was included first, its (empty) __shared__ is replaced here.
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __constant__
#undef __managed__
#undef __grid_constant__
#undef __launch_bounds__
#undef __forceinline__
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __grid_constant__
#define __launch_bounds__(...)
#define __forceinline__ inline
#if SIMT_SHARED_IS_STATIC
#define __shared__ static
#else
#define __shared__ static thread_local
#endif
#ifndef __align__
#define __align__(n) __attribute__((aligned(n)))
#endif
// __restrict__ is a GNU keyword already. __noinline__ is deliberately not defined: libstdc++
// spells [[__gnu__::__noinline__]] and a macro would break it.

// ---- CUDA vector types (uint3, dim3, float4, ...) ---------------------------------------------
// The CUDA toolkit's own vector_types.h when it is on the include path (so kernels may include
// cuda_fp16.h / cuda_bf16.h after this header), else equivalent definitions of uint3 and dim3.
#if !defined(SIMT_NO_CUDA_HEADERS) && __has_include(<vector_types.h>)
#define __DEVICE_LAUNCH_PARAMETERS_H__ 1  // its declarations of threadIdx... are replaced below
#include <vector_types.h>
#define SIMT_CUDA_VECTOR_TYPES 1
#else
#define SIMT_CUDA_VECTOR_TYPES 0
struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};
#endif

// ---- Built-in variables ------------------------------------------------------------------------
// Real variables, not macros: per OS thread, rewritten by the scheduler before it resumes a
// fiber (threadIdx) or starts a block (blockIdx) or a launch (blockDim, gridDim).
inline thread_local constinit uint3 threadIdx{0, 0, 0};
inline thread_local constinit uint3 blockIdx{0, 0, 0};
inline thread_local constinit dim3 blockDim{1, 1, 1};
inline thread_local constinit dim3 gridDim{1, 1, 1};
inline constexpr int warpSize = 32;

#define SIMT_INSIDE_SIMT_HPP 1
#include "simt_runtime.hpp"
#include "simt_device.hpp"
#undef SIMT_INSIDE_SIMT_HPP

// The runtime: compiled once per executable from simt_runtime.cpp (the CMake target vecnorm::simt
// adds it), or here, inline, in every translation unit when SIMT_HEADER_ONLY is defined.
#if defined(SIMT_HEADER_ONLY)
#include "simt_runtime_impl.hpp"
#endif
