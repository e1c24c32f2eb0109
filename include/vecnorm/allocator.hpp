// vecnorm/allocator.hpp -- where vecnorm takes its scratch memory from.
//
// A framework with its own allocator (PyTorch's caching allocator, a
// simulator's arena) hands vecnorm an Allocator in Options::allocator or to a
// Workspace: every scratch block a normalizer or a Workspace needs (host and
// device) then comes from it, so that no step calls cudaMalloc/cudaFree and a
// CUDA graph can capture a step. The default (null functions) is aligned
// operator new for host memory and cudaMalloc for device memory.
#pragma once

#include <cstddef>

#include "vecnorm/tensor.hpp"

namespace vecnorm {

struct Allocator {
  /// Returns at least `bytes` bytes aligned to 256 on `device` (device memory:
  /// usable by work ordered on `stream` from now on), or null when it cannot;
  /// vecnorm then throws Error(cuda_error or invalid_argument) naming the size.
  void* (*allocate)(void* context, std::size_t bytes, Device device, Stream stream) = nullptr;
  /// Gives back a block from allocate() (same bytes, device and stream it was
  /// last used on). Must not throw.
  void (*deallocate)(void* context, void* p, std::size_t bytes, Device device, Stream stream) noexcept = nullptr;
  void* context = nullptr;

  /// True when both functions are set (otherwise the default is used).
  bool custom() const noexcept { return allocate != nullptr && deallocate != nullptr; }
};

}  // namespace vecnorm
