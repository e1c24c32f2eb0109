// vecnorm/stateless.hpp -- the stateless mode: the caller owns the statistics.
//
// This is TorchRL's stateless VecNormV2: loc, var and count all have the shape
// batch + feature (one count per element) and travel with the caller from step
// to step. A step reads statistics `in` and writes statistics `out`; the two
// may alias (in-place). Pooling (reduce_batch_dims) is stateful only.
#pragma once

#include <initializer_list>
#include <span>
#include <string_view>

#include "vecnorm/options.hpp"
#include "vecnorm/tensor.hpp"

namespace vecnorm {

/// Statistics of one key, read-only. A view whose data is null reads as zeros
/// ("missing statistics start as zeros"); its shape is then not checked.
struct ConstStatsView {
  ConstTensorView loc;    ///< stats dtype, shape batch + feature
  ConstTensorView var;    ///< stats dtype, shape batch + feature
  ConstTensorView count;  ///< int64, shape batch + feature
};

/// Statistics of one key, written by a step.
struct StatsView {
  TensorView loc;
  TensorView var;
  TensorView count;
};

/// One key of a stateless step.
struct StatelessItem {
  std::string_view key;
  ConstTensorView x;   ///< batch + feature, the key's dtype
  TensorView y;        ///< batch + feature, output_dtype(x); may alias x. Unused by Op::update.
  ConstStatsView in;   ///< statistics before the step
  StatsView out;       ///< statistics after the step; may alias `in`. Unused by Op::normalize.
  /// As KeyData::mask: one uint8 per batch row (the batch shape of x), read by
  /// updates; the elements of a row with 0 keep their statistics and count and
  /// are still normalized (with their statistics as they are). Empty: every row.
  ConstTensorView mask{};
};

namespace stateless {

/// One step over any subset of the table's keys. Everything is validated before
/// anything is written; on error nothing changes and Error names the key, the
/// expected and the actual value. Op::normalize with a count of 0 anywhere is
/// an Error(zero_count) naming the key and the element (but with a prior,
/// Options::prior_count > 0: such an element normalizes with the prior's map).
void step(const Options& options, const KeyTable& table, std::span<const StatelessItem> items,
          Op op = Op::update_and_normalize, Stream stream = {});
inline void step(const Options& options, const KeyTable& table,
                 std::initializer_list<StatelessItem> items, Op op = Op::update_and_normalize,
                 Stream stream = {}) {
  step(options, table, std::span<const StatelessItem>(items.begin(), items.size()), op, stream);
}

}  // namespace stateless
}  // namespace vecnorm
