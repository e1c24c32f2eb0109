// tests/emulated/cuda_runtime_emu.hpp -- TEST-ONLY stand-in for the part of the
// CUDA runtime API that src/cuda/cuda_backend.cu calls, for the emulated build
// of the CUDA backend (the kernels run under tests/simt). "Device memory" is
// host memory; streams are ordered trivially because simt::launch runs a grid
// to completion before it returns.
//
// What it checks: allocations are tracked, so a copy or memset that touches
// bytes outside every live allocation (or a double free) is an error, as a
// real device would report; sticky "last error" state follows the runtime's
// rules for the calls used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <atomic>
#include <map>
#include <mutex>
#include <new>

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidDevicePointer = 17,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
struct CUstream_st;
using cudaStream_t = CUstream_st*;

namespace vecnorm_emu {
/// Live "device" allocations: base -> size.
struct Registry {
  std::mutex mutex;
  std::map<const char*, std::size_t> live;
  static Registry& get() {
    static Registry r;
    return r;
  }
  /// True when [p, p+n) lies in one live allocation.
  bool inside(const void* p, std::size_t n) {
    std::lock_guard lock(mutex);
    const char* c = static_cast<const char*>(p);
    auto it = live.upper_bound(c);
    if (it == live.begin()) return false;
    --it;
    return c >= it->first && c + n <= it->first + it->second;
  }
};
inline thread_local cudaError_t last_error = cudaSuccess;

/// Calls that a step must not make (counted for tests/emulated/launch_test.cpp):
/// kernel launches are counted by the backend's launch() under VECNORM_EMULATED.
struct Counters {
  std::atomic<long> launches{0}, mallocs{0}, frees{0}, copies{0}, syncs{0};
};
inline Counters counters;
inline cudaError_t fail(cudaError_t e) {
  last_error = e;
  return e;
}
}  // namespace vecnorm_emu

inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, std::size_t bytes) {
  ++vecnorm_emu::counters.mallocs;
  void* m = ::operator new(bytes, std::align_val_t{256}, std::nothrow);
  if (m == nullptr) return vecnorm_emu::fail(cudaErrorMemoryAllocation);
  std::memset(m, 0xCD, bytes);  // device memory is not zeroed: make reads of unset bytes visible
  auto& r = vecnorm_emu::Registry::get();
  std::lock_guard lock(r.mutex);
  r.live[static_cast<const char*>(m)] = bytes;
  *p = m;
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) {
  ++vecnorm_emu::counters.frees;
  if (p == nullptr) return cudaSuccess;
  auto& r = vecnorm_emu::Registry::get();
  {
    std::lock_guard lock(r.mutex);
    auto it = r.live.find(static_cast<const char*>(p));
    if (it == r.live.end()) return vecnorm_emu::fail(cudaErrorInvalidDevicePointer);
    r.live.erase(it);
  }
  ::operator delete(p, std::align_val_t{256});
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t n, cudaMemcpyKind kind, cudaStream_t) {
  ++vecnorm_emu::counters.copies;
  auto& r = vecnorm_emu::Registry::get();
  const bool dst_dev = r.inside(dst, n), src_dev = r.inside(src, n);
  // cudaMemcpyDefault infers the direction from the pointers; the explicit kinds must match them.
  if ((kind == cudaMemcpyHostToDevice && !dst_dev) || (kind == cudaMemcpyDeviceToHost && !src_dev) ||
      (kind == cudaMemcpyDeviceToDevice && !(dst_dev && src_dev)))
    return vecnorm_emu::fail(cudaErrorInvalidValue);
  std::memmove(dst, src, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* dst, int value, std::size_t n, cudaStream_t = nullptr) {
  if (!vecnorm_emu::Registry::get().inside(dst, n)) return vecnorm_emu::fail(cudaErrorInvalidValue);
  std::memset(dst, value, n);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) {
  ++vecnorm_emu::counters.syncs;
  return cudaSuccess;
}
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = vecnorm_emu::last_error;
  vecnorm_emu::last_error = cudaSuccess;
  return e;
}
inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
  }
  return "cudaErrorUnknown";
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
  }
  return "unknown error";
}
