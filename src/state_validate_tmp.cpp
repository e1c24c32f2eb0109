// TEMPORARY until the state/ split lands: State::validate.
#include "errors.hpp"
#include "vecnorm/normalizer.hpp"
namespace vecnorm {
void State::validate() const {
  options.validate();
  table.validate();
  if (keys.size() != table.keys.size())
    detail::fail(ErrorCode::state_mismatch, "state: expected statistics for " + std::to_string(table.keys.size()) +
                                                " keys, got " + std::to_string(keys.size()));
  for (std::size_t k = 0; k < keys.size(); ++k) {
    const KeySpec& spec = table.keys[k];
    const Shape expected =
        options.reduce_batch_dims ? spec.feature_shape : table.batch_shape.concat(spec.feature_shape);
    const KeyState& ks = keys[k];
    if (ks.stats_shape != expected)
      detail::fail(ErrorCode::state_mismatch, "state: " + detail::key_prefix(spec.name) + "statistics shape: expected " +
                                                  expected.str() + ", got " + ks.stats_shape.str());
    const std::size_t bytes = static_cast<std::size_t>(expected.numel()) * dtype_size(options.stats_dtype);
    if (ks.loc.size() != bytes || ks.var.size() != bytes)
      detail::fail(ErrorCode::state_mismatch, "state: " + detail::key_prefix(spec.name) + "loc/var bytes: expected " +
                                                  std::to_string(bytes) + ", got " + std::to_string(ks.loc.size()) +
                                                  "/" + std::to_string(ks.var.size()));
    if (ks.count < 0)
      detail::fail(ErrorCode::state_mismatch, "state: " + detail::key_prefix(spec.name) +
                                                  "count: expected >= 0, got " + std::to_string(ks.count));
    if (ks.skipped < 0)
      detail::fail(ErrorCode::state_mismatch, "state: " + detail::key_prefix(spec.name) +
                                                  "skipped: expected >= 0, got " + std::to_string(ks.skipped));
    if (ks.skips.empty()) {
      if (!options.reduce_batch_dims && ks.skipped != 0)
        detail::fail(ErrorCode::state_mismatch, "state: " + detail::key_prefix(spec.name) +
                                                    "skips: expected " + std::to_string(expected.numel()) +
                                                    " values (skipped = " + std::to_string(ks.skipped) + "), got none");
      continue;
    }
    if (options.reduce_batch_dims)
      detail::fail(ErrorCode::state_mismatch, "state: " + detail::key_prefix(spec.name) +
                                                  "skips: expected none (pooled statistics), got " +
                                                  std::to_string(ks.skips.size()) + " values");
    if (static_cast<std::int64_t>(ks.skips.size()) != expected.numel())
      detail::fail(ErrorCode::state_mismatch, "state: " + detail::key_prefix(spec.name) + "skips: expected " +
                                                  std::to_string(expected.numel()) + " values, got " +
                                                  std::to_string(ks.skips.size()));
    std::int64_t sum = 0;
    for (std::size_t i = 0; i < ks.skips.size(); ++i) {
      if (ks.skips[i] < 0 || ks.skips[i] > ks.count)
        detail::fail(ErrorCode::state_mismatch, "state: " + detail::key_prefix(spec.name) + "skips[" +
                                                    std::to_string(i) + "]: expected 0.." + std::to_string(ks.count) +
                                                    " (the count), got " + std::to_string(ks.skips[i]));
      sum += ks.skips[i];
    }
    if (sum != ks.skipped)
      detail::fail(ErrorCode::state_mismatch, "state: " + detail::key_prefix(spec.name) +
                                                  "skipped: expected the sum of skips, " + std::to_string(sum) +
                                                  ", got " + std::to_string(ks.skipped));
  }
}
}  // namespace vecnorm
