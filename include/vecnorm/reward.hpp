// vecnorm/reward.hpp -- reward scaling by the discounted return (SB3's
// VecNormalize(norm_reward=True), Gymnasium's NormalizeReward, rsl_rl's RND
// reward scaler): every environment keeps R = gamma R + r (reset where its
// episode ends), the returns of all environments update pooled statistics,
// and the reward is divided by their scale: y = clip(r / scale(var(R))).
//
//   vecnorm::Options stats;                 // SB3's return statistics:
//   stats.estimator = vecnorm::Estimator::stable;
//   stats.decay = 1.0;                      //   cumulative,
//   stats.prior_count = 1e-4;               //   count 1e-4 (mean 0, var 1),
//   stats.scale = vecnorm::ScaleForm::sqrt_var_plus_eps;
//   stats.eps = 1e-8;                       //   sqrt(var + 1e-8),
//   stats.clip = 10.0;                      //   clip 10,
//   stats.stats_dtype = vecnorm::DType::float64;
//   stats.reduce_batch_dims = true;         //   pooled over the environments,
//   stats.center = false;                   //   divided, not centred
//   vecnorm::RewardScaler rs(stats, {0.99, vecnorm::ReturnReset::after},
//                            {vecnorm::Shape{num_envs}, {{"reward", {}, vecnorm::DType::float64}}});
//   rs.step({{"reward", r, y, done}});     // each env step
//
// The statistics are a VecNorm (statistics(): freeze, read-outs, states,
// ranks through Options::collective); the returns are state of their own,
// one value per environment and feature, on the backend's device. A step
// makes no host synchronization.
#pragma once

#include <initializer_list>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "vecnorm/core/returns.hpp"  // enum class ReturnReset
#include "vecnorm/external.hpp"
#include "vecnorm/normalizer.hpp"
#include "vecnorm/workspace.hpp"

namespace vecnorm {

/// One reward key of a step.
struct RewardData {
  std::string_view key;
  ConstTensorView reward;  ///< batch_shape + the key's feature shape, the key's dtype
  TensorView out;          ///< the scaled reward, like reward (may be reward's memory); empty: not written
  ConstTensorView done{};  ///< uint8 [batch_shape]: 1 where the episode ended this step; empty: none did
  /// uint8 [batch_shape]: rows with 0 are inactive this step: left out of the
  /// statistics' update, their returns held (neither advanced nor reset:
  /// Gymnasium's vector wrapper's autoreset step after a done, whose mask is
  /// "no done at the previous step"); empty: every row.
  ConstTensorView mask{};
};

/// Reward scaling by the discounted return (see the top of this file).
class RewardScaler {
 public:
  /// `statistics`: the options of the returns' statistics. They must be pooled
  /// (reduce_batch_dims: one statistic per reward feature over all
  /// environments) and uncentred (center false: rewards are divided only).
  /// `table`: the reward keys; its batch_shape is the environments' (the
  /// shape of every step and of the returns); each key's dtype is the
  /// statistics' dtype (float32 or float64). Error(invalid_option) or
  /// Error(invalid_key_table) naming what is wrong.
  RewardScaler(Options statistics, ReturnOptions returns, KeyTable table);
  ~RewardScaler();
  RewardScaler(RewardScaler&&) noexcept;
  RewardScaler& operator=(RewardScaler&&) noexcept;

  /// One environment step for every key given: R = gamma R + r (as
  /// ReturnOptions::reset says), the statistics updated with R (unless
  /// frozen), out = clip(r / scale). All arguments are checked before
  /// anything runs; an update the statistics refuse (NonFinite::error)
  /// leaves the returns as they were.
  void step(std::span<const RewardData> batch, Stream stream = {});
  void step(std::initializer_list<RewardData> batch, Stream stream = {}) {
    step(std::span<const RewardData>(batch.begin(), batch.size()), stream);
  }

  /// Every return set to 0 (SB3's reset(), Gymnasium's vector reset).
  void reset_returns(Stream stream = {});
  /// Key `key`'s returns (batch_shape + feature shape, C order), copied to
  /// the host (waits for `stream`).
  std::vector<double> returns(std::string_view key, Stream stream = {}) const;
  /// Sets key `key`'s returns from the host (a restored checkpoint):
  /// batch_shape + feature numel values. Error(invalid_argument) naming the
  /// key, the expected and the actual number.
  void set_returns(std::string_view key, std::span<const double> values, Stream stream = {});

  /// The statistics' state (statistics().export_state()) with the returns
  /// and the return options: what save_state(RewardScaler) writes (checkpoint
  /// format 6, or 7 with keys of both statistics dtypes). Waits for `stream`.
  State export_state(Stream stream = {}) const;
  /// Restores a state export_state() or read_state_file() gave: it must hold
  /// returns (format 6 or 7) for this scaler's key table (names, feature shapes,
  /// dtypes, batch shape). The statistics are imported as
  /// statistics().import_state() does (this scaler's options stay); the
  /// return options (gamma, reset) are the state's. Everything is checked
  /// first: on error, Error(state_mismatch) naming what differs, and nothing
  /// changes.
  void import_state(const State& state, Stream stream = {});

  /// The returns' statistics: freeze()/unfreeze() (a frozen scaler still
  /// advances the returns, but for the rows a mask leaves out, as Gymnasium's
  /// update_running_mean = False does; with ReturnOptions::hold_frozen they
  /// hold but for the zeroing at dones, as SB3's training = False does),
  /// scale(), export_state()...
  VecNorm& statistics() noexcept;
  const VecNorm& statistics() const noexcept;
  const ReturnOptions& return_options() const noexcept;
  const KeyTable& table() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// One reward key of external::reward_step: statistics and returns in memory
/// the caller owns (a framework's tensors), all on the backend's device.
struct ExternalRewardItem {
  std::string_view key;
  ConstTensorView reward;  ///< [*batch, *feature], the statistics' dtype
  TensorView out;          ///< like reward (may be reward's memory); empty: not written
  ConstTensorView done{};  ///< uint8 [*batch]; empty: none done
  ConstTensorView mask{};  ///< uint8 [*batch]: 0 = inactive (left out of the update, its return held); empty: every row
  TensorView returns;      ///< like reward: the environments' returns, read and written (start them at 0)
  TensorView entered;      ///< like reward: scratch for the step's entered returns
  ExternalStats stats;     ///< the returns' pooled statistics (one count per key)
};

namespace external {

/// RewardScaler::step over external statistics and returns: the entered
/// returns, the statistics' update (pooled, `statistics` with center false),
/// out = clip(reward / scale), the kept returns. Every view is checked before
/// anything runs; a refused update leaves the returns as they were. No host
/// synchronization (the normalize follows the update: no zero-count check; a
/// key whose every row was masked out at count 0 normalizes with its
/// statistics as stored), except NonFinite::error's scan. `update` false:
/// the statistics stay as they are (frozen), the returns still advance (but
/// for the rows the mask leaves out, which hold theirs), or hold but for the
/// zeroing at dones (ReturnOptions::hold_frozen).
void reward_step(const Options& statistics, const ReturnOptions& returns, const KeyTable& table,
                 std::span<const ExternalRewardItem> items, Stream stream = {}, Workspace* workspace = nullptr,
                 bool update = true);

}  // namespace external

}  // namespace vecnorm
