// vecnorm/buffer.hpp -- an owning buffer in the memory a backend works on.
//
// For Backend::cpu it is aligned host memory; for Backend::cuda it is device
// memory (cudaMalloc) of the current device. Handy for tests, tools and users
// without their own CUDA code: fill it from the host, hand its view() to
// vecnorm, read results back.
#pragma once

#include <cstddef>
#include <memory>

#include "vecnorm/options.hpp"
#include "vecnorm/tensor.hpp"

namespace vecnorm {

class Buffer {
 public:
  Buffer() = default;
  /// `bytes` zero-initialized bytes for `backend` (automatic is resolved).
  Buffer(Backend backend, std::size_t bytes);
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() noexcept { return data_; }
  const void* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return bytes_; }
  Backend backend() const noexcept { return backend_; }
  Device device() const noexcept;

  /// Copies host bytes in / out (synchronous), at a byte offset. Error(invalid_argument)
  /// when the range is out of bounds.
  void copy_from_host(const void* src, std::size_t bytes, std::size_t offset = 0);
  void copy_to_host(void* dst, std::size_t bytes, std::size_t offset = 0) const;
  /// Copies all of `other` (same size and backend) into this buffer.
  void copy_from(const Buffer& other, Stream stream = {});
  /// Sets every byte to zero.
  void zero(Stream stream = {});

  TensorView view(DType dtype, Shape shape, std::size_t offset = 0);
  ConstTensorView view(DType dtype, Shape shape, std::size_t offset = 0) const;

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  Backend backend_ = Backend::cpu;
  int device_ = 0;
};

/// Waits until the work vecnorm queued on `stream` is done (no-op on the CPU backend).
void synchronize(Backend backend, Stream stream = {});

}  // namespace vecnorm
