// vecnorm/workspace.hpp -- scratch memory of the calls, sized up front.
//
// A step may need scratch: per-feature partial sums of a pooled update, the
// maps of a denormalize, a few bytes of launch state on a device. A VecNorm
// keeps its own (reserved at configuration for per-element statistics, whose
// shapes are fixed; VecNorm::reserve() for the largest pooled batch). The
// stateless and external steps take a Workspace from the caller (or use one
// per thread). Memory comes from the Workspace's Allocator, so a framework's
// caching allocator can serve it; once reserved, no call allocates.
//
//   vecnorm::Workspace ws(options.allocator);
//   ws.reserve(vecnorm::workspace_size(options, table, /*max_batch_rows=*/4096), device);
//   vecnorm::external::step(options, table, vecnorm::CountLayout::per_key, items, vecnorm::Op::update_and_normalize, stream, &ws);
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "vecnorm/allocator.hpp"
#include "vecnorm/options.hpp"
#include "vecnorm/tensor.hpp"

namespace vecnorm {

/// Bytes of host and device scratch.
struct WorkspaceSize {
  std::size_t host_bytes = 0;
  std::size_t device_bytes = 0;
};

/// The most scratch one call (step, update, normalize or denormalize) of
/// `options` over any keys of `table` needs, with at most `max_batch_rows`
/// batch elements per key (per-element statistics: the table's batch shape,
/// whatever this says). For the backend options.backend resolves to (the
/// scratch depends on the sizes, not on the thread count). Error(invalid_option
/// / invalid_key_table) as the constructors.
WorkspaceSize workspace_size(const Options& options, const KeyTable& table, std::int64_t max_batch_rows = 0);

namespace detail {
class Scratch;
}

/// Scratch memory for the calls of one thread at a time (not thread-safe),
/// ordered on one CUDA stream at a time (its device scratch is reused by every
/// call: calls on two streams at once need two Workspaces). Grows when a call
/// needs more than it holds, before the call writes anything (through its
/// allocator); reserve() makes that happen up front. Move-only.
class Workspace {
 public:
  explicit Workspace(Allocator allocator = {});
  ~Workspace();
  Workspace(Workspace&&) noexcept;
  Workspace& operator=(Workspace&&) noexcept;
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  /// Makes the capacity at least `size` now: host memory, and device memory on
  /// `device` (ordered on `stream`) when size.device_bytes > 0.
  void reserve(WorkspaceSize size, Device device = Device::cpu(), Stream stream = {});
  /// What is held now.
  WorkspaceSize capacity() const noexcept;
  /// How many blocks were allocated so far (host and device), for checks that
  /// a steady state allocates nothing.
  std::int64_t allocations() const noexcept;

  detail::Scratch& scratch() noexcept { return *impl_; }

 private:
  std::unique_ptr<detail::Scratch> impl_;
};

}  // namespace vecnorm
