// vecnorm/core/returns.hpp -- the discounted return of reward scaling (SB3's
// VecNormalize(norm_reward=True), Gymnasium's NormalizeReward, rsl_rl's RND
// scaler): each environment's R = gamma R + r, reset where an episode ends.
//
// One formula for every backend: the CPU loops (src/cpu/returns.cpp) and the
// CUDA kernel (kernels/returns.cuh) call these for every element. A step is
// two passes: return_entered (the returns the statistics take), then, once the
// update has succeeded, return_kept (the state for the next step), so that a
// refused update leaves the returns as they were.
#pragma once

#include <cstdint>

#include "vecnorm/core/hd.hpp"

namespace vecnorm {

/// When a done (an episode's end, one flag per environment) resets its return.
enum class ReturnReset : std::uint8_t {
  /// SB3: R = gamma R + r enters the statistics, then R = 0 where done (the
  /// next episode starts from 0; the terminal reward counted in this one).
  after,
  /// Gymnasium: R = gamma R (1 - done) + r: the step's done zeroes R before
  /// its reward is added (the terminal reward starts the next episode's R).
  before,
  /// rsl_rl's RND scaler: never reset (dones are not read).
  never,
};

const char* to_string(ReturnReset r) noexcept;

}  // namespace vecnorm

namespace vecnorm::core {

/// The scalars of one step of the returns.
template <class T>
struct ReturnRule {
  T gamma;
  ReturnReset reset;
  /// The step holds the returns (a frozen scaler with
  /// ReturnOptions::hold_frozen, SB3's eval mode): R stays, but for a done,
  /// which zeroes it (under either rule that reads dones).
  bool hold = false;
};

/// Whether environment `row`'s episode ended this step (`done`: one byte
/// per environment; null: none did) under a rule that reads dones.
template <class T>
VECNORM_HD bool return_done_row(const std::uint8_t* done, std::int64_t row, const ReturnRule<T>& rule) {
  return rule.reset != ReturnReset::never && done != nullptr && done[row] != 0;
}

/// return_done_row of the environment of element i (`feat` per environment).
template <class T>
VECNORM_HD bool return_done(const std::uint8_t* done, std::int64_t i, std::int64_t feat, const ReturnRule<T>& rule) {
  return return_done_row(done, i / feat, rule);
}

/// Whether element i belongs to an environment the step's row mask keeps
/// (`mask`: one byte per environment, 0 = left out; null: every one). A row
/// left out is inactive this step (Gymnasium's vector wrapper: the autoreset
/// step after a done): its return holds, neither advanced nor reset, and it
/// stays out of the statistics' update.
VECNORM_HD bool return_active_row(const std::uint8_t* mask, std::int64_t row) {
  return mask == nullptr || mask[row] != 0;
}

/// return_active_row of the environment of element i (`feat` per environment).
VECNORM_HD bool return_active(const std::uint8_t* mask, std::int64_t i, std::int64_t feat) {
  return return_active_row(mask, i / feat);
}

/// The return that enters the statistics: R' = gamma R + r, or r alone where
/// a `before` done resets (a select, not a product by (1 - done): an infinite
/// or NaN R is reset too); an inactive row's R as it is, and every R of a
/// holding step (which updates nothing).
template <class T>
VECNORM_HD T return_entered(T state, T r, bool done, bool active, const ReturnRule<T>& rule) {
  const T carried = state * rule.gamma + r;
  const bool reset = done & (rule.reset == ReturnReset::before);  // no short circuit: selects, not branches
  return active & !rule.hold ? (reset ? r : carried) : state;
}

/// The state kept for the next step: R', or 0 where an `after` done resets
/// (a holding step: R, or 0 where done); an inactive row's R as it was
/// (`state`).
template <class T>
VECNORM_HD T return_kept(T state, T entered, bool done, bool active, const ReturnRule<T>& rule) {
  const bool reset = done & (rule.hold | (rule.reset == ReturnReset::after));
  return active ? (reset ? T(0) : entered) : state;
}

}  // namespace vecnorm::core
