// src/shared/layout.hpp -- what a SharedVecNorm segment holds, and where
// (docs/shared.md): the header at offset 0, the key table, two views, and per
// key two slots of count/skipped/dirty/loc/var (and skips in per-element mode).
// Segments written by this layout version must keep attaching: the Header's
// fields and offsets, the table's bytes and layout_of's arithmetic are fixed.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "../state/schema.hpp"
#include "vecnorm/options.hpp"

namespace vecnorm::detail::shm {

/// "VNRMSHRD" read as a native 64-bit word (the segment is never moved between machines).
inline constexpr std::uint64_t kMagic = [] {
  const char m[8] = {'V', 'N', 'R', 'M', 'S', 'H', 'R', 'D'};
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(m[i])) << (8 * i);
  return v;
}();

/// Offset 0 of the segment. Native layout: the segment is shared by processes
/// of one machine and one build (header_bytes and mutex_bytes catch others).
/// The option fields hold the stable codes of schema.hpp.
struct Header {
  std::uint64_t magic;              // 0: kMagic, stored last by the creator (release)
  std::uint32_t layout_version;     // 8
  std::uint32_t header_bytes;       // 12: sizeof(Header)
  std::uint64_t total_bytes;        // 16: size of the segment
  std::uint32_t mutex_bytes;        // 24: sizeof(pthread_mutex_t)
  std::uint32_t num_keys;           // 28
  std::uint32_t estimator;          // 32: 0 torchrl, 1 stable
  std::uint32_t reduce_batch_dims;  // 36: 0 or 1
  std::uint32_t stats_dtype;        // 40: 0 float32, 1 float64, 2 each key's from its input (schema.hpp)
  std::uint32_t nonfinite;          // 44: 0 propagate, 1 skip, 2 error
  double decay;                     // 48
  double eps;                       // 56
  std::uint64_t table_offset;       // 64: the key table (encode_table)
  std::uint64_t table_bytes;        // 72
  std::uint64_t views_offset;       // 80: 2 views of num_keys bytes (slot of each key)
  std::uint64_t counts_offset;      // 88: int64 count[num_keys][2]
  std::uint64_t stats_offset;       // 96: first loc slot
  std::uint64_t seq;                // 104: published sequence number (atomic); view = seq & 1
  std::uint64_t owner_deaths;       // 112: recoveries from a dead lock owner (atomic)
  std::uint64_t skipped_offset;     // 120: int64 skipped[num_keys][2] (health counters)
  std::uint64_t dirty_offset;       // 128: uint8 dirty[num_keys][2] (skips may be non-zero)
  std::uint64_t skips_offset;       // 136: first skips array (= total_bytes when there are none)
  pthread_mutex_t mutex;            // 144: PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST
  // Layout version 3: the options that came after version 2.
  std::uint32_t scale;              // 0 clamp, 1 sqrt_var_plus_eps, 2 std_plus_eps
  std::uint32_t unbiased;           // 0 or 1
  double clip;
  double prior_count;
  // Layout version 4: Options::until.
  std::int64_t until;
  // Layout version 5: Options::center (0 or 1).
  std::uint32_t center;
  // Layout version 6: Options::until_strict (0 or 1) and max_scale.
  std::uint32_t until_strict;
  double max_scale;
};
static_assert(std::is_standard_layout_v<Header> && std::is_trivially_copyable_v<Header>);
static_assert(offsetof(Header, seq) == 104 && offsetof(Header, skips_offset) == 136 &&
              offsetof(Header, mutex) == 144);
static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free,
              "publication needs a lock-free (address-free) 64-bit atomic");
static_assert(offsetof(Header, seq) % std::atomic_ref<std::uint64_t>::required_alignment == 0);

/// A header word other processes read and write concurrently (magic, seq, owner_deaths).
inline std::atomic_ref<std::uint64_t> word(std::uint64_t& w) { return std::atomic_ref<std::uint64_t>(w); }

// ---------------------------------------------------------------- messages

/// "shared segment '/name': "
std::string seg_prefix(const std::string& name);
/// Error(invalid_argument): "<segment>: <what>: <strerror(err)>".
[[noreturn]] void fail_sys(const std::string& name, const std::string& what, int err);

// ---------------------------------------------------------------- the key table in the segment

/// The table's bytes: the batch shape, u32 number of keys, the key specs
/// (binary_io.hpp: little-endian, the same records as a checkpoint file's).
std::vector<std::uint8_t> encode_table(const KeyTable& t);
/// Decodes a table someone else wrote (it may be garbage): Error(state_mismatch) naming the segment.
KeyTable decode_table(std::span<const std::uint8_t> bytes, const std::string& name);

// ---------------------------------------------------------------- layout

/// Where everything is: byte offsets from the start of the segment, each 64-byte aligned.
struct Layout {
  std::vector<Shape> stats_shape;     // per key
  std::vector<std::size_t> stats_bytes;
  std::vector<std::size_t> loc[2], var[2];  // per slot, per key: byte offsets
  /// Per-element skips arrays (per-element statistics): per slot, per key,
  /// byte offsets of numel int64.
  bool has_skips = false;
  std::vector<std::size_t> skips_bytes;     // per key (0 without arrays)
  std::vector<std::size_t> skips[2];
  std::size_t table_offset = 0, table_bytes = 0, views_offset = 0, counts_offset = 0, skipped_offset = 0,
              dirty_offset = 0, stats_offset = 0, skips_offset = 0, total = 0;
};

Layout layout_of(const Options& o, const KeyTable& t, std::size_t table_bytes);

// ---------------------------------------------------------------- the header

/// Fills a new segment's header (create): everything but the mutex and the
/// magic, which the creator sets after the table (the magic last).
void write_header(Header& h, const Options& o, const KeyTable& table, const Layout& L);

/// The options the segment was created with, as stored.
OptionCodes option_codes_of(const Header& h);

/// Layout version, header and mutex sizes, the segment's size (`size`, from
/// fstat): nothing else of the header can be trusted before these hold.
void check_identity(const Header& h, std::uint64_t size, const Roles& roles);

/// The segment's key table, bounds-checked against `size` and decoded.
KeyTable read_table(const Header& h, const void* base, std::uint64_t size, const std::string& name,
                    const Roles& roles);

/// The header's offsets are those of `L` (the layout computed from its own
/// table and the caller's options), offset for offset.
void check_layout(const Header& h, const Layout& L, std::size_t num_keys, const Roles& roles);

/// Error(state_mismatch) for a segment whose magic is neither kMagic nor 0 (not vecnorm's).
[[noreturn]] void fail_bad_magic(const std::string& name, std::uint64_t magic);

}  // namespace vecnorm::detail::shm
