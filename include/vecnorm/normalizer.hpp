// vecnorm/normalizer.hpp -- the stateful normalizer, its fixed affine form and its state.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "vecnorm/options.hpp"
#include "vecnorm/tensor.hpp"

namespace vecnorm {

/// One key of a stateful step: input x and output y (same shape; y has
/// output_dtype(x.dtype) and may alias x). y is unused by VecNorm::update.
/// `mask`: one uint8 per batch row, the batch shape of x; a row whose value is
/// 0 is left out of the update, as if it had not arrived (done or truncated
/// environments), and its output is still produced. Pooled statistics: the
/// batch is the kept rows. Per-element statistics: the row's elements keep
/// their statistics and count (one more skip each: KeyState::skips) and are
/// normalized with them as they are. Empty (the default): every row. Read by
/// updates only. Pooled statistics also take int32 row weights here: a row of
/// weight w counts as w copies of it, 0 or less leaves it out (brax's
/// weights; per-element statistics refuse them).
struct KeyData {
  std::string_view key;
  ConstTensorView x;
  TensorView y;
  ConstTensorView mask{};
};

/// Statistics of one key in a State, exactly as stored (bit for bit).
struct KeyState {
  Shape stats_shape;               ///< batch + feature (per-element) or feature (pooled)
  std::vector<std::uint8_t> loc;   ///< stats_shape.numel() values of the stats dtype
  std::vector<std::uint8_t> var;   ///< same
  std::int64_t count = 0;          ///< one count per key
  /// Per-element mode: for each statistics element, the updates it left out
  /// (non-finite input under NonFinite::skip, or its row masked out:
  /// KeyData::mask); its own count is count - skips[i]. Empty when no element
  /// was ever left out (always empty when pooled).
  std::vector<std::int64_t> skips;
  /// Health counter: units left out of the statistics (elements in
  /// per-element mode, rows in pooled mode) by NonFinite::skip, and in
  /// per-element mode the elements of masked-out rows too (pooled mode's
  /// masked-out rows are not counted: they are not part of the count
  /// either). Per-element mode: equals the sum of skips.
  std::int64_t skipped = 0;
};

/// A RewardScaler's returns (vecnorm/reward.hpp): how they are discounted
/// and reset, and per key (parallel to State::table.keys) the environments'
/// returns, batch_shape + feature shape values of the stats dtype (C order).
struct ReturnsState {
  ReturnOptions options;
  std::vector<std::vector<std::uint8_t>> values;
};

/// Everything needed to rebuild a normalizer's statistics (in memory).
struct State {
  Options options;      ///< estimator, decay, eps, reduce_batch_dims and stats_dtype matter
  KeyTable table;
  std::vector<KeyState> keys;  ///< parallel to table.keys
  /// A RewardScaler's state has its returns (RewardScaler::export_state;
  /// checkpoint format 6, or 7); a VecNorm's has none, and a VecNorm importing a
  /// state that has them takes the statistics only.
  std::optional<ReturnsState> returns;

  /// Throws Error(state_mismatch) when sizes or dtypes are inconsistent.
  void validate() const;
};

class AffineNormalizer;
class VecNorm;
namespace detail {
struct AffineFactory;
/// VecNorm::normalize after the caller's own update of the same keys
/// (RewardScaler): no zero-count check; `check_only`: its checks, nothing run.
void normalize_after_update(const VecNorm& vn, std::span<const KeyData> batch, Stream stream, bool check_only);
}

/// The stateful normalizer (VecNormV2, stateful mode). It owns loc/var/count
/// per key and is built on the same step function as vecnorm::stateless::step.
///
/// Every member may be called from several threads at once: steps are atomic
/// with respect to each other (one lock per normalizer, held for the step).
class VecNorm {
 public:
  /// An unconfigured normalizer: import_state() adopts a state's key table.
  explicit VecNorm(Options options = {});
  /// A normalizer for `table`, all statistics zero.
  VecNorm(Options options, KeyTable table);
  ~VecNorm();
  VecNorm(VecNorm&&) noexcept;
  VecNorm& operator=(VecNorm&&) noexcept;
  VecNorm(const VecNorm&) = delete;             // copies are explicit: clone()
  VecNorm& operator=(const VecNorm&) = delete;

  /// Update the statistics with the keys present, then normalize them with the
  /// updated statistics. A frozen normalizer only normalizes. Keys absent from
  /// `batch` are neither updated nor normalized.
  void step(std::span<const KeyData> batch, Stream stream = {});
  void step(std::initializer_list<KeyData> batch, Stream stream = {}) { step(as_span(batch), stream); }
  /// Update only (no-op when frozen); y is not used.
  void update(std::span<const KeyData> batch, Stream stream = {});
  void update(std::initializer_list<KeyData> batch, Stream stream = {}) { update(as_span(batch), stream); }
  /// Normalize with the current statistics; nothing is updated.
  /// Error(zero_count) for a key never updated, but with a prior
  /// (Options::prior_count > 0: the prior's map).
  void normalize(std::span<const KeyData> batch, Stream stream = {}) const;
  void normalize(std::initializer_list<KeyData> batch, Stream stream = {}) const {
    normalize(as_span(batch), stream);
  }
  /// The inverse: y = x * scale + loc. x holds normalized values (dtype
  /// output_dtype(key dtype)), y receives values of the same dtype.
  void denormalize(std::span<const KeyData> batch, Stream stream = {}) const;
  void denormalize(std::initializer_list<KeyData> batch, Stream stream = {}) const {
    denormalize(as_span(batch), stream);
  }

  /// Reserves the scratch of every call (denormalize included) with up to
  /// `max_batch_rows` batch elements (pooled statistics), so that no later
  /// call allocates (on a device: no cudaMalloc inside a step, which a CUDA
  /// graph could not capture). A VecNorm reserves the scratch of steps,
  /// updates and normalizes at configuration (per-element shapes are fixed;
  /// pooled ones for the table's batch shape), not a denormalize's (as large
  /// as the statistics, per element). Options::allocator provides the memory.
  void reserve(std::int64_t max_batch_rows);

  void freeze();
  void unfreeze();
  bool is_frozen() const;
  /// An independent, frozen copy (shares no memory with this one).
  VecNorm frozen_copy() const;
  /// An independent copy that keeps the frozen flag.
  VecNorm clone() const;

  /// The mean that normalize subtracts now (bias-corrected; 0 when
  /// Options::center is false), C order over stats_shape(key).
  /// Error(zero_count) when the key was never updated (but with a prior: 0).
  std::vector<double> loc(std::string_view key) const;
  /// The scale that normalize uses now: max(sqrt(max(var, 0)), eps).
  std::vector<double> scale(std::string_view key) const;
  /// batch + feature (per-element) or feature (pooled).
  Shape stats_shape(std::string_view key) const;
  /// Number of updates (per-element) or of samples (pooled) the key has seen.
  std::int64_t count(std::string_view key) const;
  /// Per-element mode: the count of every statistics element (C order over
  /// stats_shape(key)): count(key) less the updates the element skipped.
  /// Pooled mode: one value, count(key).
  std::vector<std::int64_t> element_counts(std::string_view key) const;
  /// Health counter: elements (per-element mode) or rows (pooled mode) of
  /// `key` left out of the statistics so far by NonFinite::skip, and in
  /// per-element mode those of rows a mask left out (KeyState::skipped).
  std::int64_t skipped(std::string_view key) const;

  /// A fixed transform with copies of every key's loc and scale; applying it
  /// gives the same output, bit for bit, as normalize() now. Every key must
  /// have been updated at least once (or have a prior: Options::prior_count).
  AffineNormalizer to_affine() const;

  State export_state() const;
  /// Checks everything first; on any mismatch throws Error(state_mismatch) and
  /// leaves this normalizer unchanged. A configured normalizer must match the
  /// state's key table, estimator, reduce_batch_dims and stats_dtype (its own
  /// decay and eps stay); an unconfigured one adopts the state whole.
  void import_state(const State& state);

  const Options& options() const noexcept;
  const KeyTable& key_table() const;  ///< Error(not_configured) if unconfigured
  bool configured() const noexcept;
  /// The backend actually used (Backend::automatic resolved).
  Backend backend() const noexcept;

 private:
  friend void detail::normalize_after_update(const VecNorm&, std::span<const KeyData>, Stream, bool);
  struct Impl;
  explicit VecNorm(std::unique_ptr<Impl> impl);
  template <class T>
  static std::span<const T> as_span(std::initializer_list<T> l) {
    return std::span<const T>(l.begin(), l.size());
  }
  std::unique_ptr<Impl> impl_;
};

/// A fixed affine normalizer (VecNormV2's to_observation_norm): y = (x - loc) / scale
/// with loc and scale frozen copies taken from a VecNorm.
///
/// Immutable: every member may be called from several threads at once (e.g.
/// evaluation workers sharing one), each on its own buffers.
class AffineNormalizer {
 public:
  ~AffineNormalizer();
  AffineNormalizer(AffineNormalizer&&) noexcept;
  AffineNormalizer& operator=(AffineNormalizer&&) noexcept;
  AffineNormalizer(const AffineNormalizer&) = delete;
  AffineNormalizer& operator=(const AffineNormalizer&) = delete;

  /// y = (x - loc) / scale for the keys present.
  void apply(std::span<const KeyData> batch, Stream stream = {}) const;
  void apply(std::initializer_list<KeyData> batch, Stream stream = {}) const {
    apply(std::span<const KeyData>(batch.begin(), batch.size()), stream);
  }
  /// y = x * scale + loc.
  void invert(std::span<const KeyData> batch, Stream stream = {}) const;

  std::vector<double> loc(std::string_view key) const;
  std::vector<double> scale(std::string_view key) const;
  Shape stats_shape(std::string_view key) const;
  const KeyTable& key_table() const noexcept;

 private:
  friend struct detail::AffineFactory;
  struct Impl;
  explicit AffineNormalizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vecnorm
