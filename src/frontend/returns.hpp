// src/frontend/returns.hpp -- what RewardScaler::step and external::reward_step
// (vecnorm/reward.hpp) share: the checks and the passes over the returns, and
// the normalize that follows their update.
#pragma once

#include <span>
#include <string_view>

#include "../backends.hpp"
#include "vecnorm/external.hpp"
#include "vecnorm/reward.hpp"
#include "vecnorm/workspace.hpp"

namespace vecnorm::detail {

/// One key's returns in a step: the state, the entered returns' buffer, the
/// rewards (all of the statistics' dtype and the rewards' shape), the output,
/// the dones and the row mask.
struct ReturnViews {
  std::string_view key;
  TensorView state;
  TensorView entered;
  ConstTensorView reward;
  TensorView out;        ///< empty: not written
  ConstTensorView done;  ///< uint8, the rewards' batch shape; empty: none done
  ConstTensorView mask;  ///< uint8, the rewards' batch shape; empty: every row active
  Shape batch;           ///< the rewards' batch shape (checked by the caller)
};

/// Checks state, entered, done and mask against the rewards (dtype, shape,
/// device), that no view of the step overlaps the returns or the entered
/// returns, and that the output overlaps neither the dones nor the mask;
/// Error naming the key, the expected and the actual value.
void check_returns(const ReturnViews& v, Device device);
/// Across the keys of one step: what a key's step writes (returns, entered
/// returns, output) overlaps no view of another key.
void check_returns_apart(std::span<const ReturnViews> views);
/// A pass (entered or kept) over checked views, on `backend`; `hold`: a
/// holding step (the statistics frozen under ReturnOptions::hold_frozen).
void run_returns(Backend backend, const ReturnOptions& options, const ReturnViews& v, bool kept, bool hold,
                 Stream stream);

/// The phases of a reward step over checked views, for RewardScaler::step and
/// external::reward_step alike: the entered returns, update() (the statistics'
/// update: it checks its own arguments, a refusal leaves the returns as they
/// were), normalize() (checked by the caller before anything ran), the kept
/// returns. `frozen`: the statistics take no update (the returns then hold
/// where ReturnOptions::hold_frozen says so).
template <class Update, class Normalize>
void reward_phases(Backend backend, const ReturnOptions& options, std::span<const ReturnViews> views, bool frozen,
                   Stream stream, Update&& update, Normalize&& normalize) {
  const bool hold = frozen && options.hold_frozen;
  for (const ReturnViews& v : views) run_returns(backend, options, v, false, hold, stream);
  update();
  normalize();
  for (const ReturnViews& v : views) run_returns(backend, options, v, true, hold, stream);
}

/// Op::normalize of external statistics (one count per key) after the
/// caller's update in the same call: no zero-count check (which would copy the
/// counts of a device to the host). `check_only`: its checks, nothing run.
void normalize_after_update(const Options& options, const KeyTable& table, std::span<const ExternalItem> items,
                            Stream stream, Workspace* workspace, bool check_only);

}  // namespace vecnorm::detail
