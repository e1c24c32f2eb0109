// src/buffer.cpp -- vecnorm::Buffer: host memory for the CPU backend, device
// memory for the CUDA backend.
#include "vecnorm/buffer.hpp"

#include <cstring>
#include <new>
#include <string>
#include <utility>

#include "backends.hpp"
#include "errors.hpp"

namespace vecnorm {

namespace {
constexpr std::align_val_t kHostAlign{64};

void check_range(const char* what, std::size_t offset, std::size_t bytes, std::size_t size) {
  if (offset > size || bytes > size - offset)
    detail::fail(ErrorCode::invalid_argument, std::string("Buffer::") + what + ": bytes [" + std::to_string(offset) +
                                                  ", " + std::to_string(offset + bytes) + ") outside the buffer's " +
                                                  std::to_string(size) + " bytes");
}
}  // namespace

Buffer::Buffer(Backend backend, std::size_t bytes) : bytes_(bytes), backend_(detail::resolve(backend)) {
  if (backend_ == Backend::cuda) {
    device_ = detail::cuda::current_device();
    data_ = detail::cuda::alloc(bytes);
    try {
      detail::cuda::zero(data_, bytes, Stream{});
      detail::cuda::synchronize(Stream{});
    } catch (...) {
      detail::cuda::release(data_);
      throw;
    }
  } else {
    data_ = ::operator new(bytes == 0 ? 1 : bytes, kHostAlign);
    std::memset(data_, 0, bytes);
  }
}

Buffer::~Buffer() {
  if (data_ == nullptr) return;
  if (backend_ == Backend::cuda)
    detail::cuda::release(data_);
  else
    ::operator delete(data_, kHostAlign);
}

Buffer::Buffer(Buffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)), backend_(o.backend_), device_(o.device_) {}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    Buffer dead(std::move(*this));
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    backend_ = o.backend_;
    device_ = o.device_;
  }
  return *this;
}

Device Buffer::device() const noexcept { return backend_ == Backend::cuda ? Device::cuda(device_) : Device::cpu(); }

void Buffer::copy_from_host(const void* src, std::size_t bytes, std::size_t offset) {
  check_range("copy_from_host", offset, bytes, bytes_);
  if (bytes == 0) return;
  char* dst = static_cast<char*>(data_) + offset;
  if (backend_ == Backend::cuda)
    detail::cuda::copy(dst, src, bytes, Stream{}, true);
  else
    std::memcpy(dst, src, bytes);
}

void Buffer::copy_to_host(void* dst, std::size_t bytes, std::size_t offset) const {
  check_range("copy_to_host", offset, bytes, bytes_);
  if (bytes == 0) return;
  const char* src = static_cast<const char*>(data_) + offset;
  if (backend_ == Backend::cuda)
    detail::cuda::copy(dst, src, bytes, Stream{}, true);
  else
    std::memcpy(dst, src, bytes);
}

void Buffer::copy_from(const Buffer& other, Stream stream) {
  if (other.bytes_ != bytes_ || other.backend_ != backend_)
    detail::fail(ErrorCode::invalid_argument, "Buffer::copy_from: expected " + std::to_string(bytes_) + " bytes on " +
                                                  to_string(backend_) + ", got " + std::to_string(other.bytes_) +
                                                  " bytes on " + to_string(other.backend_));
  if (bytes_ == 0) return;
  if (backend_ == Backend::cuda)
    detail::cuda::copy(data_, other.data_, bytes_, stream, false);
  else
    std::memcpy(data_, other.data_, bytes_);
}

void Buffer::zero(Stream stream) {
  if (backend_ == Backend::cuda)
    detail::cuda::zero(data_, bytes_, stream);
  else
    std::memset(data_, 0, bytes_);
}

TensorView Buffer::view(DType dtype, Shape shape, std::size_t offset) {
  check_range("view", offset, static_cast<std::size_t>(shape.numel()) * dtype_size(dtype), bytes_);
  return TensorView{static_cast<char*>(data_) + offset, dtype, shape, device()};
}

ConstTensorView Buffer::view(DType dtype, Shape shape, std::size_t offset) const {
  check_range("view", offset, static_cast<std::size_t>(shape.numel()) * dtype_size(dtype), bytes_);
  return ConstTensorView{static_cast<const char*>(data_) + offset, dtype, shape, device()};
}

void synchronize(Backend backend, Stream stream) {
  if (detail::resolve(backend) == Backend::cuda) detail::cuda::synchronize(stream);
}

}  // namespace vecnorm
