// src/validate.hpp -- argument checks shared by every entry point. Everything a
// call is given is checked here before anything is written.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "plan.hpp"
#include "vecnorm/normalizer.hpp"
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

/// The device a backend reads and writes.
Device backend_device(Backend resolved);

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

/// Throws Error(invalid_argument) when [a, a+na) and [b, b+nb) overlap but are not identical.
void check_no_partial_overlap(std::string_view key, const char* what_a, const void* a, std::size_t na,
                              const char* what_b, const void* b, std::size_t nb);

/// Throws Error(invalid_argument) when the two byte ranges overlap at all.
void check_disjoint(std::string_view key, const char* what_a, const void* a, std::size_t na, const char* what_b,
                    const void* b, std::size_t nb);

/// The keys of one stateful call (VecNorm, SharedVecNorm), validated one by one
/// into Segments: key known and not repeated in the call, x/y dtypes, shapes,
/// device and overlap, and (pooled) one batch shape for all keys of the call.
/// The caller fills in the statistics pointers.
class KeyPlanner {
 public:
  /// `call_keys` receives the key index of each planned item (cleared here).
  KeyPlanner(const KeyTable& table, bool pooled, Device device, std::vector<int>& call_keys)
      : table_(table), pooled_(pooled), device_(device), call_keys_(call_keys) {
    call_keys_.clear();
  }
  /// `invert`: x holds normalized values (denormalize), so its dtype is output_dtype(key dtype).
  Segment next(const KeyData& item, Op op, bool invert);

 private:
  const KeyTable& table_;
  bool pooled_;
  Device device_;
  std::vector<int>& call_keys_;
  Shape pooled_batch_;
};

}  // namespace vecnorm::detail
