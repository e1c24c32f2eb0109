// tests/support/device_buffer.hpp -- the one way tests hand memory to the library.
//
// A DeviceBuffer owns the memory of one tensor for a given backend and gives
// views of it with the right Device. Test sources only ever fill it from host
// values and read it back into host values, so the same test source runs on
// every backend.
//
//   Backend::cpu  -- host memory of the tests' own (calloc), so that CPU runs do
//                    not depend on library code for their memory.
//   Backend::cuda -- device memory through vecnorm::Buffer (cudaMalloc, or host
//                    memory under the emulated CUDA build); every copy in or out
//                    first waits for the backend (vecnorm::synchronize).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <vecnorm/buffer.hpp>
#include <vecnorm/options.hpp>
#include <vecnorm/tensor.hpp>

namespace vntest {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  /// Zero-filled buffer of `shape` elements of `dtype`.
  DeviceBuffer(vecnorm::Backend backend, vecnorm::DType dtype, vecnorm::Shape shape);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&&) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&&) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  /// A buffer holding `bytes` (bytes.size() must be shape.numel() * dtype size).
  static DeviceBuffer from_bytes(vecnorm::Backend backend, vecnorm::DType dtype, vecnorm::Shape shape,
                                 const std::vector<std::byte>& bytes);
  /// A buffer holding `values` encoded as `dtype` (see dtypes.hpp: encode).
  static DeviceBuffer from_values(vecnorm::Backend backend, vecnorm::DType dtype, vecnorm::Shape shape,
                                  const std::vector<double>& values);

  vecnorm::TensorView view();
  vecnorm::ConstTensorView cview() const;

  /// Copy the contents back to the host.
  std::vector<std::byte> bytes() const;
  /// Contents decoded into exact values.
  std::vector<double> values() const;
  /// Overwrite the contents.
  void set_bytes(const std::vector<std::byte>& bytes);
  /// Fill every byte with `pattern` (a sentinel to see what a call wrote).
  void fill(std::uint8_t pattern);

  vecnorm::Backend backend() const noexcept { return backend_; }
  vecnorm::DType dtype() const noexcept { return dtype_; }
  const vecnorm::Shape& shape() const noexcept { return shape_; }
  std::size_t nbytes() const noexcept;

 private:
  vecnorm::Backend backend_ = vecnorm::Backend::cpu;
  vecnorm::DType dtype_ = vecnorm::DType::float32;
  vecnorm::Shape shape_;
  void* data_ = nullptr;  ///< host memory (cpu), or device() of the cuda buffer
  std::size_t capacity_ = 0;
  std::unique_ptr<vecnorm::Buffer> device_buffer_;  ///< cuda only
};

/// The backends the core suites run on: cpu always; cuda when the library has a
/// usable CUDA device and this support library can allocate device memory.
std::vector<vecnorm::Backend> test_backends();
/// "cpu", "cuda".
const char* backend_name(vecnorm::Backend backend);
/// Options with the backend set.
vecnorm::Options options_for(vecnorm::Backend backend);
/// The device a backend's views live on.
vecnorm::Device device_of(vecnorm::Backend backend);

}  // namespace vntest
