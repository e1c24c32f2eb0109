// src/workspace.hpp -- the inside of vecnorm::Workspace: scratch blocks that
// grow through the Allocator, and the CPU backend's memo of coefficients.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <utility>

#include "vecnorm/allocator.hpp"
#include "vecnorm/core/estimator.hpp"
#include "vecnorm/core/math.hpp"
#include "vecnorm/tensor.hpp"
#include "vecnorm/workspace.hpp"

namespace vecnorm::detail {

/// Count-dependent coefficients the CPU backend computed lately (see
/// src/cpu/pooled.cpp): the keys of a step share their counts, and a step's
/// shift needs the bias correction the step before computed.
struct CoeffMemo {
  struct Entry {
    int kind = -1;  ///< which coefficients; -1: empty
    core::Decay d;
    std::int64_t n = 0, m = 0;
    core::Coeffs<double> c{};
  };
  Entry entries[4];
  int next = 0;

  const core::Coeffs<double>* find(int kind, const core::Decay& d, std::int64_t n, std::int64_t m) const noexcept {
    for (const Entry& e : entries)
      if (e.kind == kind && e.n == n && e.m == m && e.d.cumulative == d.cumulative && e.d.log_decay == d.log_decay &&
          e.d.prior == d.prior && e.d.unbiased == d.unbiased)
        return &e.c;
    return nullptr;
  }
  void put(int kind, const core::Decay& d, std::int64_t n, std::int64_t m, const core::Coeffs<double>& c) noexcept {
    entries[next] = Entry{kind, d, n, m, c};
    next = (next + 1) % static_cast<int>(std::size(entries));
  }
};

/// vecnorm::Workspace's state.
class Scratch {
 public:
  explicit Scratch(Allocator allocator) : allocator_(allocator) {}
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  /// Host memory of at least `bytes` (64-byte aligned), grown if needed.
  void* host(std::size_t bytes);
  /// Device memory of at least `bytes` on `device`, grown (or moved to that
  /// device) if needed. Its contents are undefined after each growth:
  /// take_fresh() says once whether there was one since it was last asked.
  void* device(std::size_t bytes, Device device, Stream stream);
  bool take_fresh() noexcept { return std::exchange(fresh_, false); }
  /// The messages of a distributed update (src/frontend/exchange.cpp): memory
  /// of at least `bytes` on `device` (host for Device::cpu()), apart from the
  /// scratch above, grown if needed; contents undefined.
  void* exchange(std::size_t bytes, Device device, Stream stream);

  WorkspaceSize capacity() const noexcept { return {host_bytes_, device_bytes_}; }
  std::int64_t allocations() const noexcept { return allocations_; }

  CoeffMemo memo;

 private:
  void* allocate(std::size_t bytes, Device device, Stream stream);
  void release(void* p, std::size_t bytes, Device device, Stream stream) noexcept;

  Allocator allocator_;
  void* host_ = nullptr;
  std::size_t host_bytes_ = 0;
  void* device_ = nullptr;
  std::size_t device_bytes_ = 0;
  Device device_at_ = Device::cuda(0);
  void* exchange_ = nullptr;
  std::size_t exchange_bytes_ = 0;
  Device exchange_at_ = Device::cpu();
  Stream device_stream_{};
  bool fresh_ = false;
  std::int64_t allocations_ = 0;
};

}  // namespace vecnorm::detail
