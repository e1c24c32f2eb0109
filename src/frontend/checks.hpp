// src/frontend/checks.hpp -- the argument checks of a call, each written once:
// keys, inputs and outputs, statistics views, overlaps. The pipeline
// (pipeline.hpp) and the stores call them; every failure throws Error naming
// the key, the expected and the actual value.
#pragma once

#include <cstdint>
#include <string_view>

#include "vecnorm/options.hpp"
#include "vecnorm/tensor.hpp"

namespace vecnorm::detail {

/// How the batch dims of a call are checked.
enum class BatchRule : std::uint8_t {
  exact,  ///< per-element statistics: the batch shape must equal the table's
  any,    ///< pooled statistics: any batch shape, the same for all keys of the call
};

/// Result of checking one key's input/output.
struct IoShape {
  Shape batch;
  std::int64_t rows = 0;  ///< batch numel
  std::int64_t feat = 0;  ///< feature numel
};

/// Finds `key` in the table (Error unknown_key listing the known keys).
int find_key(const KeyTable& table, std::string_view key);

/// Checks that item `i`'s key does not repeat an earlier one (Error duplicate_key).
void check_unique(std::string_view key, int index, const int* previous, int count);

/// Checks input x (dtype `x_dtype`) and, when `y` is not null, output y
/// (dtype output_dtype(x_dtype), same shape, no partial overlap with x).
IoShape check_io(const KeyTable& table, int k, DType x_dtype, const ConstTensorView& x, const TensorView* y,
                 BatchRule rule, Device device);

/// Checks a statistics view: dtype, shape, device, non-null when it holds data.
void check_stats_view(std::string_view key, const char* what, const ConstTensorView& v, DType dtype,
                      const Shape& shape, Device device);

/// Checks a view of one int64 (a per-key count or counter): shape [] or [1],
/// device, non-null.
void check_scalar_view(std::string_view key, const char* what, const ConstTensorView& v, Device device);

/// Throws Error(invalid_argument) when [a, a+na) and [b, b+nb) overlap but are not identical.
void check_no_partial_overlap(std::string_view key, const char* what_a, const void* a, std::size_t na,
                              const char* what_b, const void* b, std::size_t nb);

/// Whether the byte ranges [a, a + na) and [b, b + nb) share a byte (an empty or null one never does).
bool overlaps(const void* a, std::size_t na, const void* b, std::size_t nb);

/// Throws Error(invalid_argument) when the two byte ranges overlap at all.
void check_disjoint(std::string_view key, const char* what_a, const void* a, std::size_t na, const char* what_b,
                    const void* b, std::size_t nb);

/// Throws Error(zero_count) naming the key: normalizing statistics that have
/// `count` samples (<= 0) at element `element` (-1: the key's one count).
/// `context` starts the message (e.g. the shared segment's name).
[[noreturn]] void fail_zero_count(std::string_view key, std::int64_t count, std::int64_t element = -1,
                                  std::string_view context = {});

}  // namespace vecnorm::detail
