// tests/support/device_buffer.cpp -- see device_buffer.hpp.
#include "device_buffer.hpp"

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#include <vecnorm/version.hpp>

#include "dtypes.hpp"

namespace vntest {

DeviceBuffer::DeviceBuffer(vecnorm::Backend backend, vecnorm::DType dtype, vecnorm::Shape shape)
    : backend_(backend), dtype_(dtype), shape_(shape) {
  // At least one byte, so that an empty tensor still has a non-null pointer
  // (tests that want a null pointer build the view by hand).
  capacity_ = nbytes() == 0 ? 1 : nbytes();
  switch (backend_) {
    case vecnorm::Backend::cpu:
    case vecnorm::Backend::automatic:  // tests resolve automatic themselves; treat as host memory
      data_ = std::calloc(capacity_, 1);
      if (data_ == nullptr) throw std::bad_alloc();
      break;
    case vecnorm::Backend::cuda:
      // ------------------------------------------------------------------ CUDA BRANCH
      // Device memory of the current device, zero-filled, owned by vecnorm::Buffer.
      device_buffer_ = std::make_unique<vecnorm::Buffer>(vecnorm::Backend::cuda, capacity_);
      data_ = device_buffer_->data();
      break;
  }
}

DeviceBuffer::~DeviceBuffer() {
  if (backend_ != vecnorm::Backend::cuda && data_ != nullptr) std::free(data_);
  // cuda: device_buffer_ frees itself
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : backend_(o.backend_), dtype_(o.dtype_), shape_(o.shape_), data_(std::exchange(o.data_, nullptr)),
      capacity_(std::exchange(o.capacity_, 0)), device_buffer_(std::move(o.device_buffer_)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    DeviceBuffer old(std::move(*this));  // frees what this held
    backend_ = o.backend_;
    dtype_ = o.dtype_;
    shape_ = o.shape_;
    data_ = std::exchange(o.data_, nullptr);
    capacity_ = std::exchange(o.capacity_, 0);
    device_buffer_ = std::move(o.device_buffer_);
  }
  return *this;
}

std::size_t DeviceBuffer::nbytes() const noexcept {
  return static_cast<std::size_t>(shape_.numel()) * vecnorm::dtype_size(dtype_);
}

DeviceBuffer DeviceBuffer::from_bytes(vecnorm::Backend backend, vecnorm::DType dtype, vecnorm::Shape shape,
                                      const std::vector<std::byte>& bytes) {
  DeviceBuffer b(backend, dtype, shape);
  b.set_bytes(bytes);
  return b;
}

DeviceBuffer DeviceBuffer::from_values(vecnorm::Backend backend, vecnorm::DType dtype, vecnorm::Shape shape,
                                       const std::vector<double>& values) {
  return from_bytes(backend, dtype, shape, encode(dtype, values));
}

vecnorm::TensorView DeviceBuffer::view() {
  return vecnorm::TensorView{data_, dtype_, shape_, device_buffer_ ? device_buffer_->device() : device_of(backend_)};
}

vecnorm::ConstTensorView DeviceBuffer::cview() const {
  return vecnorm::ConstTensorView{data_, dtype_, shape_,
                                  device_buffer_ ? device_buffer_->device() : device_of(backend_)};
}

std::vector<std::byte> DeviceBuffer::bytes() const {
  std::vector<std::byte> out(nbytes());
  if (out.empty()) return out;
  if (device_buffer_) {
    vecnorm::synchronize(vecnorm::Backend::cuda);  // results of work queued on the default stream
    device_buffer_->copy_to_host(out.data(), out.size());
  } else {
    std::memcpy(out.data(), data_, out.size());
  }
  return out;
}

std::vector<double> DeviceBuffer::values() const { return decode(dtype_, bytes()); }

void DeviceBuffer::set_bytes(const std::vector<std::byte>& bytes) {
  if (bytes.size() != nbytes())
    throw std::invalid_argument("DeviceBuffer::set_bytes: " + std::to_string(bytes.size()) + " bytes for a buffer of " +
                                std::to_string(nbytes()));
  if (bytes.empty()) return;
  if (device_buffer_) {
    vecnorm::synchronize(vecnorm::Backend::cuda);  // the previous step may still read this buffer
    device_buffer_->copy_from_host(bytes.data(), bytes.size());
  } else {
    std::memcpy(data_, bytes.data(), bytes.size());
  }
}

void DeviceBuffer::fill(std::uint8_t pattern) {
  if (device_buffer_) {
    vecnorm::synchronize(vecnorm::Backend::cuda);
    const std::vector<std::uint8_t> host(capacity_, pattern);
    device_buffer_->copy_from_host(host.data(), host.size());
  } else {
    std::memset(data_, pattern, capacity_);
  }
}

std::vector<vecnorm::Backend> test_backends() {
  std::vector<vecnorm::Backend> backends = {vecnorm::Backend::cpu};
#if !defined(VECNORM_TESTS_CPU_ONLY)
  if (vecnorm::cuda_available()) backends.push_back(vecnorm::Backend::cuda);
#endif
  return backends;
}

const char* backend_name(vecnorm::Backend backend) {
  switch (backend) {
    case vecnorm::Backend::cpu: return "cpu";
    case vecnorm::Backend::cuda: return "cuda";
    case vecnorm::Backend::automatic: return "automatic";
  }
  return "?";
}

vecnorm::Options options_for(vecnorm::Backend backend) {
  vecnorm::Options o;
  o.backend = backend;
  return o;
}

vecnorm::Device device_of(vecnorm::Backend backend) {
  return backend == vecnorm::Backend::cuda ? vecnorm::Device::cuda(0) : vecnorm::Device::cpu();
}

}  // namespace vntest
