// vecnorm/checkpoint.hpp -- crash-safe checkpoint files of a normalizer's state.
//
// The file format (magic "VNRMCKPT", format version, the statistics-shaping
// options, the key table, per key count/skipped/loc/var/skips, a reward
// scaler's returns, CRC-32C) is specified in docs/state-format.md.
//
//   vecnorm::save_state(vn, "run/vecnorm.ckpt");   // atomic: old or new file, whole
//   vecnorm::load_state(vn, "run/vecnorm.ckpt");   // validated; vn unchanged on error
//
// Every function throws vecnorm::Error on failure: decoding errors carry
// ErrorCode::state_mismatch, file-system errors ErrorCode::invalid_argument,
// and import_state()'s mismatches keep their code. Messages start with
// "vecnorm: " and name the path (file functions), what is wrong, the expected
// and the actual value.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vecnorm/normalizer.hpp"
#include "vecnorm/reward.hpp"

namespace vecnorm {

/// The newest checkpoint format version. encode_state() writes 8 for a state
/// with max_scale finite or until_strict set, 7 for a state
/// whose keys' statistics dtypes differ (Options::stats_dtype none over
/// float64 and other inputs), 6 for a state with returns (a RewardScaler's),
/// else the oldest version that holds the options: 5 with center false, 4 with
/// until set, 3 with scale, clip, prior_count or unbiased set, version 2
/// otherwise.
inline constexpr std::uint32_t kCheckpointFormatVersion = 8;
/// The oldest format version decode_state() reads.
inline constexpr std::uint32_t kCheckpointOldestVersion = 1;

/// The bytes of a checkpoint file holding `state` (validated first: an
/// inconsistent state throws Error(state_mismatch)). Deterministic: the same
/// state always gives the same bytes. Only the options that shape the
/// statistics are stored (estimator, decay, eps, reduce_batch_dims,
/// stats_dtype, nonfinite, scale, max_scale, clip, prior_count, unbiased,
/// until, until_strict, center); backend and cpu_threads are not. Besides
/// State::validate(), the skips rules of the format are checked (skipped >= 0;
/// skips empty or one value 0..count per element, per-element statistics
/// only, summing to skipped and not all 0).
std::vector<std::uint8_t> encode_state(const State& state);

/// Parses and fully validates a checkpoint of any version from
/// kCheckpointOldestVersion to kCheckpointFormatVersion: magic, format
/// version, sizes, checksum, every length and enum, the skips rules, then
/// State::validate(). Throws Error(state_mismatch) naming what is wrong. Never
/// allocates more than a small multiple of bytes.size(). The returned State
/// has the stored options and default backend / cpu_threads; a version 1 file
/// gives nonfinite = propagate, empty skips and skipped = 0 (what the vecnorm
/// that wrote it did and had).
State decode_state(std::span<const std::uint8_t> bytes);

/// Writes vn.export_state() to `path` atomically and durably: a temporary file
/// in the same directory (path + ".tmp.<pid>.<random>"), fsync, rename over
/// `path`, fsync of the directory. A crash at any moment leaves either the old
/// or the new file, whole (possibly with a stray temporary file beside it). On
/// error the temporary file is removed and `path` is untouched.
void save_state(const VecNorm& vn, const std::string& path);

/// Reads and decodes `path` (all of decode_state's checks), then
/// vn.import_state() it. On any error `vn` is unchanged.
void load_state(VecNorm& vn, const std::string& path);

/// A RewardScaler's statistics and returns (rs.export_state(): checkpoint
/// format 6, or 7 with keys of both statistics dtypes), written as save_state(VecNorm) writes.
void save_state(const RewardScaler& rs, const std::string& path);

/// Reads and decodes `path`, then rs.import_state() it: the file must hold
/// returns for rs's key table. On any error `rs` is unchanged.
void load_state(RewardScaler& rs, const std::string& path);

/// Reads and decodes `path` without loading it anywhere (for tools).
State read_state_file(const std::string& path);

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, init and final xor
/// 0xFFFFFFFF): the checksum of the format. crc32c("123456789") == 0xE3069283.
std::uint32_t crc32c(std::span<const std::uint8_t> bytes) noexcept;

}  // namespace vecnorm
