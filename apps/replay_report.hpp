// apps/replay_report.hpp -- what `vecnorm replay` prints at the end: each
// key's final statistics, as JSON (--json) or as a summary.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <vecnorm/vecnorm.hpp>

#include "replay_args.hpp"
#include "replay_io.hpp"

namespace vncli::replay {

/// A key's final statistics.
struct Result {
  std::string key;
  vecnorm::Shape shape;
  std::optional<std::int64_t> count;  ///< stateful
  std::vector<std::int64_t> counts;   ///< stateless, per element
  std::vector<double> loc, scale;     ///< empty when never updated (and no prior)
  bool updated = false;

  /// The key's count; stateless: the largest of its elements' (the updates of an element never left out).
  std::int64_t final_count() const {
    return count ? *count : counts.empty() ? 0 : *std::max_element(counts.begin(), counts.end());
  }
};

/// The read-outs of `vn` for every input's key (stateless: `vn` holds the
/// statistics arrays, whose counts are per element).
std::vector<Result> results_of(const vecnorm::VecNorm& vn, const Inputs& inputs, bool stateless);

/// One JSON object: per key its statistics shape, count, loc and scale.
std::string results_json(const std::vector<Result>& results, bool stateless);

/// The lines printed without --json: the run, a reward scaler's return
/// options (`returns`: --returns; else null), then one per key.
void print_summary(const Args& a, const vecnorm::Options& opt, const vecnorm::ReturnOptions* returns,
                   const Inputs& inputs, const std::vector<Result>& results, std::int64_t T, double seconds);

}  // namespace vncli::replay
