// vecnorm/external.hpp -- stateful steps on statistics the caller owns.
//
// A framework that keeps the statistics in its own tensors (PyTorch module
// buffers, a simulator's device arrays) runs VecNorm's stateful steps on them
// in place, with no copy: loc, var and the count of each key are views the
// caller passes with every call. Both count layouts are supported:
//
//   CountLayout::per_key      one int64 count per key (VecNormV2's stateful
//                             semantics; pooled statistics with reduce_batch_dims)
//   CountLayout::per_element  one int64 per statistics element (VecNormV2's
//                             stateless semantics, updated in place)
//
// The results are those of a VecNorm with the same options, bit for bit (the
// same pipeline and backends). Everything is validated before anything is
// written; a call that fails changes nothing.
//
//   vecnorm::external::step(options, table, vecnorm::CountLayout::per_key,
//       {{"observation", x, y, {loc, var, count}}});
#pragma once

#include <initializer_list>
#include <span>
#include <string_view>

#include "vecnorm/options.hpp"
#include "vecnorm/tensor.hpp"
#include "vecnorm/workspace.hpp"

namespace vecnorm {

/// Statistics of one key in memory the caller owns, read and updated in place.
/// All on the backend's device.
struct ExternalStats {
  TensorView loc;    ///< stats dtype, the statistics shape (batch + feature; feature when pooled); required
  TensorView var;    ///< same; required
  TensorView count;  ///< int64: one value (shape [] or [1]) per key, or the statistics shape per element; required
  /// Per-element statistics with one count per key: the updates each element
  /// left out (int64, the statistics shape; its count is count - skips[i]) and
  /// the key's total (int64, shape [] or [1]). Required there with
  /// NonFinite::skip or a row mask (they are part of the statistics: once an
  /// update has left an element out, pass them to every later call of those
  /// statistics, normalizes too, or the elements' counts read as the key's),
  /// optional with pooled statistics (skipped: rows left out), unused
  /// otherwise. Start them at zero.
  TensorView skips;
  TensorView skipped;
};

/// One key of an external step.
struct ExternalItem {
  std::string_view key;
  ConstTensorView x;  ///< batch + feature, the key's dtype (denormalize: output_dtype of it)
  TensorView y;       ///< batch + feature, output_dtype(x); may alias x. Unused by Op::update.
  ExternalStats stats;
  ConstTensorView mask{};  ///< as KeyData::mask (updates: rows with 0 left out)
};

namespace external {

/// One call of `op` over any subset of the table's keys, with statistics
/// counted as `counts` (per_element: not with options.reduce_batch_dims).
/// Op::normalize needs every count > 0 (Error(zero_count) naming the key; on a
/// device the counts are copied to the host for this check, one
/// synchronization: normalize-only calls only), but with a prior
/// (Options::prior_count > 0: count 0 normalizes with the prior's map; no check). `workspace`: the scratch to use
/// (null: one kept per thread, stream and Options::allocator, whose memory it takes).
void step(const Options& options, const KeyTable& table, CountLayout counts, std::span<const ExternalItem> items,
          Op op = Op::update_and_normalize, Stream stream = {}, Workspace* workspace = nullptr);
inline void step(const Options& options, const KeyTable& table, CountLayout counts,
                 std::initializer_list<ExternalItem> items, Op op = Op::update_and_normalize, Stream stream = {},
                 Workspace* workspace = nullptr) {
  step(options, table, counts, std::span<const ExternalItem>(items.begin(), items.size()), op, stream, workspace);
}

/// Every check step() makes for the same arguments (options, table, keys,
/// views, the counts of a normalize, non-finite input with NonFinite::error),
/// without running it: nothing is written. A caller that makes several calls
/// which must all happen or none checks them all first. The collective, if
/// any, is not involved (each rank checks its own).
void check(const Options& options, const KeyTable& table, CountLayout counts, std::span<const ExternalItem> items,
           Op op = Op::update_and_normalize, Stream stream = {}, Workspace* workspace = nullptr);
inline void check(const Options& options, const KeyTable& table, CountLayout counts,
                  std::initializer_list<ExternalItem> items, Op op = Op::update_and_normalize, Stream stream = {},
                  Workspace* workspace = nullptr) {
  check(options, table, counts, std::span<const ExternalItem>(items.begin(), items.size()), op, stream, workspace);
}

/// The inverse, y = x * scale + loc, with the current statistics (x holds
/// normalized values). One count per key only.
void denormalize(const Options& options, const KeyTable& table, std::span<const ExternalItem> items,
                 Stream stream = {}, Workspace* workspace = nullptr);
inline void denormalize(const Options& options, const KeyTable& table, std::initializer_list<ExternalItem> items,
                        Stream stream = {}, Workspace* workspace = nullptr) {
  denormalize(options, table, std::span<const ExternalItem>(items.begin(), items.size()), stream, workspace);
}

}  // namespace external
}  // namespace vecnorm
