// vecnorm/shared.hpp -- statistics shared by processes (POSIX shared memory).
//
// A SharedVecNorm keeps its loc/var/count in a named POSIX shared-memory
// segment; other processes on the same machine attach to it by name and step
// the same statistics. Every step is atomic across processes, and a process
// killed at any moment (SIGKILL included, lock held or not) leaves the others
// running on consistent statistics: no torn loc/var/count, no lock left held.
//
//   // the trainer
//   auto vn = vecnorm::SharedVecNorm::create("/run42-vecnorm", options, table);
//   // each worker process
//   auto vn = vecnorm::SharedVecNorm::attach("/run42-vecnorm", options, table);
//   vn.step({{"observation", x, y}});
//   // when the run is over (any process)
//   vecnorm::SharedVecNorm::unlink("/run42-vecnorm");
//
// docs/shared.md describes the segment layout, the locking and publication
// protocol and why a kill cannot tear the statistics. Linux only (robust
// process-shared mutexes); CPU backend only (the segment is host memory).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vecnorm/normalizer.hpp"
#include "vecnorm/options.hpp"
#include "vecnorm/tensor.hpp"

namespace vecnorm {

/// The layout version of the shared segment this build creates and attaches to.
inline constexpr std::uint32_t kSharedLayoutVersion = 6;

/// A normalizer whose statistics live in a named POSIX shared-memory segment.
///
/// Semantics are VecNorm's (same validation, same numbers, bit for bit: the
/// same Plan/dispatch path); only the place of the statistics differs. Each
/// call that reads or writes statistics holds the segment's process-shared
/// robust mutex for its duration. The frozen flag belongs to the handle (a
/// frozen handle never writes; other handles keep updating).
///
/// Options::nonfinite is a property of the segment (all handles agree on it,
/// checked at attach): with skip, the skipped counters and per-element skips
/// are shared statistics like the counts; with error, an update holding a
/// non-finite value is refused before the segment's lock is taken.
///
/// A handle may be used from several threads of its process (calls are
/// serialized). It is move-only; the destructor unmaps the segment but never
/// removes it (see unlink()).
class SharedVecNorm {
 public:
  /// Creates the segment `name` (O_EXCL, mode 0600) with zero statistics.
  /// `name` is a POSIX shared-memory name, "/vecnorm-run42"; a missing
  /// leading '/' is added. Error(invalid_argument) when it already exists or
  /// cannot be created; Error(invalid_option) when options.backend is cuda
  /// (Backend::automatic means cpu here: the statistics are in host memory).
  static SharedVecNorm create(std::string name, Options options, KeyTable table);

  /// Opens the existing segment `name` and checks that it was created by a
  /// compatible build (magic, layout version, sizes) with the same estimator,
  /// reduce_batch_dims, decay, eps and nonfinite, key table and (each key's)
  /// stats_dtype as given here;
  /// Error(state_mismatch) naming the field, the expected (the caller's) and
  /// the actual (the segment's) value otherwise. Error(invalid_argument) when
  /// it does not exist. Waits up to about 2 s for a creator that is still
  /// initializing it.
  static SharedVecNorm attach(std::string name, Options options, KeyTable table);

  /// Removes the name (shm_unlink). Attached handles keep working; the memory
  /// is freed when the last one is gone. Error(invalid_argument) when the name
  /// does not exist or cannot be removed.
  static void unlink(std::string_view name);

  ~SharedVecNorm();
  SharedVecNorm(SharedVecNorm&&) noexcept;
  SharedVecNorm& operator=(SharedVecNorm&&) noexcept;
  SharedVecNorm(const SharedVecNorm&) = delete;
  SharedVecNorm& operator=(const SharedVecNorm&) = delete;

  /// As VecNorm::step: update the statistics with the keys present, then
  /// normalize them with the updated statistics (only normalize when frozen).
  void step(std::span<const KeyData> batch);
  void step(std::initializer_list<KeyData> batch) { step(as_span(batch)); }
  /// Update only (no-op when frozen; still validated); y is not used.
  void update(std::span<const KeyData> batch);
  void update(std::initializer_list<KeyData> batch) { update(as_span(batch)); }
  /// Normalize with the current shared statistics; nothing is updated.
  void normalize(std::span<const KeyData> batch) const;
  void normalize(std::initializer_list<KeyData> batch) const { normalize(as_span(batch)); }
  /// y = x * scale + loc with the current shared statistics.
  void denormalize(std::span<const KeyData> batch) const;
  void denormalize(std::initializer_list<KeyData> batch) const { denormalize(as_span(batch)); }

  /// Local to this handle.
  void freeze();
  void unfreeze();
  bool is_frozen() const;

  /// As VecNorm's read-outs, from the current shared statistics.
  std::vector<double> loc(std::string_view key) const;
  std::vector<double> scale(std::string_view key) const;
  Shape stats_shape(std::string_view key) const;
  std::int64_t count(std::string_view key) const;
  /// As VecNorm::element_counts: per-element mode, count(key) less the updates
  /// each statistics element skipped; pooled mode, one value, count(key).
  std::vector<std::int64_t> element_counts(std::string_view key) const;
  /// As VecNorm::skipped: elements (per-element) or rows (pooled) of `key`
  /// left out of the shared statistics by NonFinite::skip (per-element: and
  /// by a row mask), by every process.
  std::int64_t skipped(std::string_view key) const;
  /// A fixed affine normalizer from the current shared statistics.
  AffineNormalizer to_affine() const;

  /// A copy of the current shared statistics (one consistent snapshot, skips
  /// and skipped included), e.g. for save_state via VecNorm::import_state, or
  /// encode_state.
  State export_state() const;
  /// Replaces the shared statistics of every key with `state`'s (skips and
  /// skipped included), atomically (one publication). The state must match as
  /// in VecNorm::import_state (key table, estimator, reduce_batch_dims,
  /// stats_dtype; decay, eps and nonfinite stay the segment's);
  /// Error(state_mismatch) and no change otherwise.
  void import_state(const State& state);

  /// Number of publications so far: every update of the statistics by any
  /// process (a step or update with at least one key, an import_state).
  /// Read without the lock.
  std::uint64_t generation() const noexcept;
  /// How many times a caller found the lock's owner dead (a process killed
  /// while holding it) and recovered the lock. Read without the lock.
  std::uint64_t recovered_owner_deaths() const noexcept;

  const std::string& name() const noexcept;  ///< with the leading '/'
  const Options& options() const noexcept;
  const KeyTable& key_table() const noexcept;
  Backend backend() const noexcept { return Backend::cpu; }

 private:
  struct Impl;
  explicit SharedVecNorm(std::unique_ptr<Impl> impl);
  template <class T>
  static std::span<const T> as_span(std::initializer_list<T> l) {
    return std::span<const T>(l.begin(), l.size());
  }
  std::unique_ptr<Impl> impl_;
};

}  // namespace vecnorm
