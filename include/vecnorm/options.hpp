// vecnorm/options.hpp -- options and the key table.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vecnorm/allocator.hpp"
#include "vecnorm/core/estimator.hpp"  // enum class Estimator (with its policy types)
#include "vecnorm/core/returns.hpp"    // enum class ReturnReset
#include "vecnorm/executor.hpp"
#include "vecnorm/tensor.hpp"

namespace vecnorm {

class Collective;  // vecnorm/collective.hpp

/// Where the work runs.
enum class Backend : std::uint8_t {
  cpu,    ///< always available
  cuda,   ///< needs a CUDA build and a usable device; an error otherwise
  automatic,  ///< cuda when built and a device is usable, else cpu
};

/// What an update does with non-finite input values (NaN, +-inf). Integer
/// inputs are always finite. See docs/numerics.md, "Non-finite input".
enum class NonFinite : std::uint8_t {
  propagate,  ///< the reference behaviour: they enter the statistics (which become NaN/inf)
  skip,       ///< left out of the statistics as if they never arrived (elements in
              ///< per-element mode, whole rows in pooled mode), counted, output still produced
  error,      ///< the update is refused (Error(nonfinite_input) naming key and index), nothing changes
};

const char* to_string(Estimator e) noexcept;
const char* to_string(ScaleForm f) noexcept;
const char* to_string(NonFinite n) noexcept;
const char* to_string(Backend b) noexcept;

/// The statistics dtype of a key with input dtype `input` under the option
/// `stats_dtype` (Options::stats_dtype): the option where it is given; else
/// float64 for a float64 input and float32 for every other input (float16,
/// bfloat16 and integer inputs keep float32 statistics). The one rule, used
/// by every entry point, the state formats and the bindings.
constexpr DType stats_dtype_for(std::optional<DType> stats_dtype, DType input) noexcept {
  if (stats_dtype) return *stats_dtype;
  return input == DType::float64 ? DType::float64 : DType::float32;
}
/// "float32", "float64", or "auto" (std::nullopt: each key's from its input).
const char* to_string(std::optional<DType> stats_dtype) noexcept;

/// Where the counts of a key's statistics live.
enum class CountLayout : std::uint8_t {
  per_key,      ///< one int64 per key (VecNormV2's stateful semantics; pooled statistics)
  per_element,  ///< one int64 per statistics element (VecNormV2's stateless semantics)
};

/// What one call does.
enum class Op : std::uint8_t {
  update_and_normalize,  ///< a training step: update the statistics, then normalize with them
  update,                ///< update only; no output is written
  normalize,             ///< normalize with the current statistics; nothing is updated
};

/// How a RewardScaler's returns are discounted and reset (vecnorm/reward.hpp).
struct ReturnOptions {
  double gamma = 0.99;                      ///< 0 <= gamma <= 1
  ReturnReset reset = ReturnReset::after;   ///< SB3's rule (Gymnasium: before; rsl_rl RND: never)
  /// While the statistics are frozen: false (the default), the returns
  /// advance (R = gamma R + r, as Gymnasium's update_running_mean = False
  /// does); true, they hold, but for a done, which zeroes its environment's
  /// return (SB3's VecNormalize with training = False). Not part of a State
  /// (how a frozen scaler behaves, as the frozen flag itself is not).
  bool hold_frozen = false;
  /// Throws Error(invalid_option) naming the field, the allowed and the actual value.
  void validate() const;
};

/// Options of a normalizer. Validated by validate() (and by every constructor).
struct Options {
  double decay = 0.9999;            ///< 0 < decay <= 1; 1 = cumulative statistics
  double eps = 1e-4;                ///< the scale's epsilon (see `scale`); > 0
  /// How the variance v becomes the scale: max(sqrt(v), eps) (TorchRL, the
  /// default), sqrt(v + eps) or sqrt(v) + eps (docs/anchors.md, docs/numerics.md).
  ScaleForm scale = ScaleForm::clamp;
  /// The scale is at most max_scale (brax clips its std to [1e-6, 1e6]):
  /// min(scale, max_scale). +inf (the default): no upper bound. > 0.
  double max_scale = std::numeric_limits<double>::infinity();
  /// Normalized outputs are bounded to [-clip, clip]; +inf (the default): not bounded. > 0.
  double clip = std::numeric_limits<double>::infinity();
  /// The stable estimator's prior: the statistics start as n0 = prior_count
  /// pseudo-samples of mean 0 and variance 1 (Stable-Baselines3: 1e-4,
  /// rl_games and skrl: 1). With a prior, a key never updated (count 0)
  /// normalizes with the prior's map (mean 0, variance 1), as those libraries
  /// normalize with their initial state; without one that is Error(zero_count).
  /// A prior of weight below 2^-53 vanishes at the first update bit for bit
  /// (the presets of brax and rsl_rl, whose initial state is mean 0 and std 1
  /// but which weight it 0). 0 (the default): no prior. >= 0, finite.
  double prior_count = 0.0;
  /// Pooled updates take the batch's variance with m - 1 (skrl) instead of m.
  bool unbiased = false;
  /// Normalized outputs are centred: y = (x - mean) / scale. false: y = x /
  /// scale, the mean is not subtracted (every reward scaler -- SB3,
  /// Gymnasium, rsl_rl -- and rl_games' norm_only). The statistics are the
  /// same either way; loc() and to_affine() report the mean the map
  /// subtracts (0 here), denormalize multiplies only.
  bool center = true;
  /// Updates stop once a key's count has reached `until` samples (rsl_rl's
  /// EmpiricalNormalization): an update of a key whose count is >= until
  /// leaves its statistics and count as they are (its outputs are still
  /// produced, from the statistics as they are). The batch that crosses the
  /// bound is merged whole. Decided where the count lives (on the device for
  /// the CUDA backend: no host synchronization). 0 (the default): no bound.
  /// >= 0; needs one count per key (not stateless per-element steps).
  /// NonFinite::error still scans the input of a stopped key (the scan runs
  /// before the count is known on a device). Across ranks the counts are
  /// the same (every rank merges the same batches), so every rank stops at once.
  std::int64_t until = 0;
  /// With `until`: an update is also left out when its batch would take the
  /// count past `until` (brax's until_count), so the count never passes the
  /// bound. A pooled batch of m samples is merged only while count + m <=
  /// until (all ranks' samples, the rows a mask keeps and whose values are
  /// finite); a per-element step adds 1, for which both rules agree. Unlike
  /// brax, whose count goes on growing while its statistics stop, the count
  /// stays, so a later, smaller batch that fits is still merged (brax's
  /// PPO batches are all of one size).
  bool until_strict = false;
  bool reduce_batch_dims = false;   ///< pool the batch dims (stateful only)
  Estimator estimator = Estimator::torchrl;
  /// The dtype of each key's loc/var (and of a reward scaler's returns):
  /// float32 or float64 for every key, or std::nullopt (the default): each
  /// key's own, from its input (stats_dtype_for): float64 statistics for a
  /// float64 input, float32 for the others, as VecNormV2 keeps its statistics
  /// in the data's dtype.
  std::optional<DType> stats_dtype;
  Backend backend = Backend::cpu;
  /// Threads of a CPU call (the caller and up to cpu_threads - 1 workers of
  /// vecnorm's pool, which take chunks as they are free: docs/design.md,
  /// "Threads"); 0 = every CPU the process may run on (or VECNORM_NUM_THREADS);
  /// 1 = the calling thread only. Results do not depend on it.
  int cpu_threads = 0;
  /// Whose threads run a CPU call's chunks (vecnorm/executor.hpp): a
  /// framework's intra-op pool, so that vecnorm's pool and the framework's
  /// never compete for the cores. Default: vecnorm's pool. Results do not
  /// depend on it. Not part of a State.
  CpuExecutor cpu_executor;
  NonFinite nonfinite = NonFinite::skip;  ///< non-finite input in updates
  /// Where the normalizer's scratch memory comes from (default: operator new /
  /// cudaMalloc). Not part of a State.
  Allocator allocator;
  /// Pooled statistics (reduce_batch_dims) across the ranks of this group:
  /// every update merges the batches of all ranks (vecnorm/collective.hpp,
  /// docs/distributed.md). Null: this process alone. Ignored by per-element
  /// statistics (each rank owns its environments). Not part of a State.
  std::shared_ptr<Collective> collective;

  /// Throws Error(invalid_option) naming the field, the allowed and the actual value.
  void validate() const;
};

/// One normalized stream.
struct KeySpec {
  std::string name;     ///< e.g. "observation", "agents/observation" (nested)
  Shape feature_shape;  ///< may be empty (a scalar reward per batch element)
  DType dtype = DType::float32;  ///< input dtype
};

/// The keys of a normalizer and the batch shape their steps share.
///
/// In per-element mode (the default) the batch shape is part of the statistics
/// shape and every step must carry exactly that batch shape. In pooled mode
/// (reduce_batch_dims) a step may carry any batch shape, the same for all keys
/// of that step; the table's batch_shape is informational there.
struct KeyTable {
  Shape batch_shape;
  std::vector<KeySpec> keys;

  /// Index of `name`, or -1.
  int find(std::string_view name) const noexcept;
  /// Throws Error(invalid_key_table): empty or malformed names, duplicates,
  /// negative dims, no keys.
  void validate() const;
  friend bool operator==(const KeyTable& a, const KeyTable& b) noexcept;
};

}  // namespace vecnorm
