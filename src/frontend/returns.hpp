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
/// rewards (all of the statistics' dtype and the rewards' shape) and the dones.
struct ReturnViews {
  std::string_view key;
  TensorView state;
  TensorView entered;
  ConstTensorView reward;
  ConstTensorView done;  ///< uint8, the rewards' batch shape; empty: none done
  Shape batch;           ///< the rewards' batch shape (checked by the caller)
};

/// Checks state, entered and done against the rewards (dtype, shape, device,
/// no overlap); Error naming the key, the expected and the actual value.
void check_returns(const ReturnViews& v, Device device);
/// A pass (entered or kept) over checked views, on `backend`.
void run_returns(Backend backend, const ReturnOptions& options, const ReturnViews& v, bool kept, Stream stream);

/// Op::normalize of external statistics (one count per key) after the
/// caller's update in the same call: no zero-count check (which would copy the
/// counts of a device to the host). `check_only`: its checks, nothing run.
void normalize_after_update(const Options& options, const KeyTable& table, std::span<const ExternalItem> items,
                            Stream stream, Workspace* workspace, bool check_only);

}  // namespace vecnorm::detail
