// src/workspace.cpp -- vecnorm::Workspace and workspace_size().
#include "workspace.hpp"

#include <algorithm>
#include <new>
#include <string>

#include "backends.hpp"
#include "errors.hpp"

namespace vecnorm::detail {

namespace {
constexpr std::size_t kAlign = 256;
}

void* Scratch::allocate(std::size_t bytes, Device device, Stream stream) {
  void* p = nullptr;
  if (allocator_.custom()) {
    p = allocator_.allocate(allocator_.context, bytes, device, stream);
    if (p == nullptr)
      fail(device.kind == Device::Kind::cuda ? ErrorCode::cuda_error : ErrorCode::invalid_argument,
           "workspace: the allocator returned no memory for " + std::to_string(bytes) + " bytes on " + device.str());
  } else if (device.kind == Device::Kind::cuda) {
    p = cuda::alloc(bytes);
  } else {
    p = ::operator new(bytes, std::align_val_t{kAlign});
  }
  ++allocations_;
  return p;
}

void Scratch::release(void* p, std::size_t bytes, Device device, Stream stream) noexcept {
  if (p == nullptr) return;
  if (allocator_.custom())
    allocator_.deallocate(allocator_.context, p, bytes, device, stream);
  else if (device.kind == Device::Kind::cuda)
    cuda::release(p);
  else
    ::operator delete(p, std::align_val_t{kAlign});
}

Scratch::~Scratch() {
  release(host_, host_bytes_, Device::cpu(), Stream{});
  release(device_, device_bytes_, device_at_, device_stream_);
  release(exchange_, exchange_bytes_, exchange_at_, device_stream_);
}

void* Scratch::exchange(std::size_t bytes, Device device, Stream stream) {
  if (exchange_ != nullptr && bytes <= exchange_bytes_ && exchange_at_ == device) return exchange_;
  const std::size_t grown = std::max<std::size_t>(bytes, 64);
  void* p = allocate(grown, device, stream);
  release(exchange_, exchange_bytes_, exchange_at_, stream);
  exchange_ = p;
  exchange_bytes_ = grown;
  exchange_at_ = device;
  return exchange_;
}

void* Scratch::host(std::size_t bytes) {
  if (bytes <= host_bytes_) return host_;
  const std::size_t grown = std::max(bytes, host_bytes_ * 2);
  void* p = allocate(grown, Device::cpu(), Stream{});
  release(host_, host_bytes_, Device::cpu(), Stream{});
  host_ = p;
  host_bytes_ = grown;
  return host_;
}

void* Scratch::device(std::size_t bytes, Device device, Stream stream) {
  if (device_ != nullptr && bytes <= device_bytes_ && device_at_ == device) {
    device_stream_ = stream;
    return device_;
  }
  const std::size_t grown = device_at_ == device ? std::max(bytes, device_bytes_ * 2) : bytes;
  void* p = allocate(std::max<std::size_t>(grown, 1), device, stream);
  release(device_, device_bytes_, device_at_, device_stream_);
  device_ = p;
  device_bytes_ = std::max<std::size_t>(grown, 1);
  device_at_ = device;
  device_stream_ = stream;
  fresh_ = true;
  return device_;
}

}  // namespace vecnorm::detail

namespace vecnorm {

Workspace::Workspace(Allocator allocator) : impl_(std::make_unique<detail::Scratch>(allocator)) {}
Workspace::~Workspace() = default;
Workspace::Workspace(Workspace&&) noexcept = default;
Workspace& Workspace::operator=(Workspace&&) noexcept = default;

void Workspace::reserve(WorkspaceSize size, Device device, Stream stream) {
  if (size.host_bytes > 0) impl_->host(size.host_bytes);
  if (size.device_bytes > 0) impl_->device(size.device_bytes, device, stream);
}

WorkspaceSize Workspace::capacity() const noexcept { return impl_->capacity(); }
std::int64_t Workspace::allocations() const noexcept { return impl_->allocations(); }

}  // namespace vecnorm
