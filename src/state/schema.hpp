// src/state/schema.hpp -- the schema of a State, written once for VecNorm,
// SharedVecNorm and the checkpoint format: the statistics-shape rule, the
// stable codes of the options and dtypes (what checkpoint files and shared
// segments store, never the C++ enums' values) and the check that two states'
// options and key tables fit each other.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "vecnorm/normalizer.hpp"
#include "vecnorm/options.hpp"

namespace vecnorm::detail {

/// The shape of key `key`'s loc/var: its feature shape when the batch dims
/// are pooled, the table's batch shape + its feature shape otherwise.
Shape stats_shape(bool pooled, const KeyTable& table, const KeySpec& key);

/// numel of `s` when every partial product of its non-zero dims fits in
/// int64 (so Shape::numel cannot overflow); false otherwise.
bool checked_numel(const Shape& s, std::int64_t& numel);

/// The bytes of key `key`'s returns in a state (State::returns): the table's
/// batch shape + its feature shape of `stats_dtype`; false when they do not
/// fit (too many dims, or an overflow).
bool returns_bytes(const KeyTable& table, const KeySpec& key, std::optional<DType> stats_dtype, std::uint64_t& bytes);

// ---------------------------------------------------------------- stable codes
//
// Estimator 0 torchrl, 1 stable; stats dtype 0 float32, 1 float64; nonfinite
// 0 propagate, 1 skip, 2 error; dtype: the index in the DType code table
// (float32, float64, float16, bfloat16, int32, int64, uint8). reduce_batch_dims
// is stored as 0 or 1. Files and segments written today must keep reading, so
// these never change.

inline constexpr std::uint32_t kDTypeCodes = 7;

std::uint32_t dtype_code(DType d);  ///< Error(state_mismatch) for a value outside the enum
DType dtype_of_code(std::uint32_t code);  ///< code < kDTypeCodes
std::uint32_t estimator_code(Estimator e);
Estimator estimator_of_code(std::uint32_t code);  ///< code <= 1
/// Stats dtype: 0 float32 and 1 float64 for every key; 2 each key's from its
/// input (Options::stats_dtype none), stored only where the keys' differ
/// (checkpoint format 7): an option of none over keys that agree is stored as
/// their dtype, so that such files stay readable by older readers.
std::uint32_t stats_dtype_code(std::optional<DType> stats_dtype, const KeyTable& table);
std::optional<DType> stats_dtype_of_code(std::uint32_t code);  ///< code <= 2 (2: none)
std::uint32_t nonfinite_code(NonFinite n);  ///< Error(state_mismatch) for a value outside the enum
NonFinite nonfinite_of_code(std::uint32_t code);  ///< code <= 2
std::uint32_t scale_code(ScaleForm f);  ///< Error(state_mismatch) for a value outside the enum
ScaleForm scale_of_code(std::uint32_t code);  ///< code <= 2
std::string scale_name(std::uint32_t code);
std::uint32_t reset_code(ReturnReset r);  ///< 0 after, 1 before, 2 never (checkpoint format 6)
ReturnReset reset_of_code(std::uint32_t code);  ///< code <= 2
/// The oldest checkpoint format that holds the options: 2, 3 where scale,
/// clip, prior_count or unbiased are not the defaults, 4 where until is not 0,
/// 5 where center is false, 6 with returns, 7 where the stats dtype code is 2,
/// 8 where max_scale is finite or until_strict is true.
std::uint32_t checkpoint_format_for(const State& state);

/// The names of codes in messages (as to_string of the enums); a code nothing
/// has ("code 7") may come from a foreign or damaged segment.
std::string estimator_name(std::uint32_t code);
std::string flag_name(std::uint32_t code);  ///< reduce_batch_dims: "false", "true" or the number
std::string stats_dtype_name(std::uint32_t code);
std::string nonfinite_name(std::uint32_t code);

/// The options that shape the statistics, as stored: codes, decay and eps;
/// then scale (0 clamp, 1 sqrt_var_plus_eps, 2 std_plus_eps), unbiased (0/1),
/// clip and prior_count (checkpoint format 3, shared layout 3); until
/// (checkpoint format 4, shared layout 4); center (0/1: format 5, layout 5);
/// max_scale and until_strict (0/1: format 8, layout 6).
struct OptionCodes {
  std::uint32_t estimator = 0, reduce_batch_dims = 0, stats_dtype = 0, nonfinite = 0;
  double decay = 0.0, eps = 0.0;
  std::uint32_t scale = 0, unbiased = 0;
  double clip = 0.0, prior_count = 0.0;
  std::int64_t until = 0;
  std::uint32_t center = 1;
  double max_scale = 0.0;
  std::uint32_t until_strict = 0;
};
OptionCodes option_codes(const Options& o, const KeyTable& table);

/// The shortest decimal that reads back as exactly `v` (decay and eps in messages).
std::string shortest(double v);

// ---------------------------------------------------------------- compatibility

/// Who compares what, for the messages of the checks below:
/// "<prefix><field>: expected <mine's value> (<mine>), got <theirs' value> (<theirs>)".
struct Roles {
  std::string prefix;       ///< "import_state: ", "shared segment '/x': attach: "
  std::string_view mine;    ///< the receiver's: "this VecNorm's", "the caller's", "the segment's"
  std::string_view theirs;  ///< the other side's: "the state's", "the segment's"
  /// Also decay, eps and nonfinite (attach: a segment is stepped with its own
  /// options; import_state takes the statistics only).
  bool all_options = false;
};

/// Throws Error(state_mismatch) in the Roles' words.
[[noreturn]] void fail_mismatch(const Roles& roles, const std::string& what, const std::string& expected,
                                const std::string& got);

/// estimator, reduce_batch_dims (and with all_options decay, eps, nonfinite,
/// scale, clip, prior_count, unbiased, until, center, max_scale, until_strict),
/// in that order.
void check_same_options(const Roles& roles, const OptionCodes& mine, const OptionCodes& theirs);

/// The stats dtype codes (OptionCodes::stats_dtype, each of its own table),
/// after check_same_table: with the keys' dtypes equal, equal codes are equal
/// statistics dtypes key by key (a key whose input dtype differs is named as
/// such first, not as a statistics dtype).
void check_same_stats_dtype(const Roles& roles, std::uint32_t mine, std::uint32_t theirs);

/// Number of keys, batch shape (per-element statistics only: `pooled` is
/// mine), then per key name, feature shape and dtype.
void check_same_table(const Roles& roles, bool pooled, const KeyTable& mine, const KeyTable& theirs);

/// Both: can `theirs` be imported into a normalizer with these options and table?
void check_compatible(const Roles& roles, const Options& mine, const KeyTable& mine_table, const State& theirs);

}  // namespace vecnorm::detail
