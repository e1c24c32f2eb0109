// src/plan.hpp -- the validated description of one call, handed to a backend.
//
// Every entry point (VecNorm, SharedVecNorm, AffineNormalizer, stateless and
// external steps) builds a Plan through the one pipeline in src/frontend
// (validate the call once, bind each key to where its statistics live) and
// hands it to dispatch() (src/dispatch.cpp), which switches on the backend.
// Backends trust a Plan: every pointer, size and dtype in it has been checked.
#pragma once

#include <cstdint>
#include <span>

#include "vecnorm/core/exchange.hpp"
#include "vecnorm/core/math.hpp"
#include "vecnorm/options.hpp"
#include "vecnorm/tensor.hpp"

namespace vecnorm::detail {

/// What a call does to each of its keys.
enum class Work : std::uint8_t {
  update_and_normalize,  ///< update the statistics, then normalize with them
  update,                ///< update only (no output)
  normalize,             ///< y = (x - mu) / scale from the statistics
  denormalize,           ///< y = x * scale + mu from the statistics
  apply_map,             ///< y = (x - mu) * p with fixed maps (p = 1/scale)
  invert_map,            ///< y = x * p + mu with fixed maps (p = scale)
  /// Pooled, a distributed update's first half (src/frontend/exchange.cpp):
  /// each key's batch moments [n, mean[F], M2[F]] (doubles, core/exchange.hpp)
  /// written to its y; the statistics are read, nothing else is written.
  moments,
};

constexpr bool updates(Work w) noexcept { return w == Work::update_and_normalize || w == Work::update; }
constexpr bool writes_output(Work w) noexcept { return w != Work::update && w != Work::moments; }
constexpr bool uses_maps(Work w) noexcept { return w == Work::apply_map || w == Work::invert_map; }
/// x holds normalized values (the inverse maps): its dtype is output_dtype(key dtype).
constexpr bool inverts(Work w) noexcept { return w == Work::denormalize || w == Work::invert_map; }

/// One key of a call. Small fields first: 128 bytes, which GCC zero-fills
/// with vector stores (past 128 it used `rep stos`, whose start-up and the
/// failed store forwarding after it cost ~10% of a 1x17 step).
struct Segment {
  int key = -1;                    ///< index in the key table (for messages)
  DType x_dtype = DType::float32;  ///< the input's dtype
  DType map_dtype = DType::float32;  ///< of the fixed maps (below)
  DType stats_dtype = DType::float32;  ///< of the statistics (stats_dtype_for the key)
  /// `mask` holds int32 row weights (pooled updates only; core::row_weight).
  bool weighted = false;
  const void* x = nullptr;         ///< input, rows x feat elements
  void* y = nullptr;               ///< output (null for Work::update), output_dtype(x_dtype)
  std::int64_t rows = 0;           ///< batch elements m in this call
  std::int64_t feat = 0;           ///< feature elements per batch element
  /// Updates: one byte per row, 0 = the row is left out (KeyData::mask), or
  /// (pooled, `weighted`) one int32 weight per row; null: every row once.
  const std::uint8_t* mask = nullptr;
  // Statistics, stats dtype. Per-element: rows*feat values; pooled: feat values.
  const void* loc_in = nullptr;  ///< null: zeros
  const void* var_in = nullptr;  ///< null: zeros
  void* loc_out = nullptr;       ///< may equal loc_in; null unless the call updates
  void* var_out = nullptr;
  const std::int64_t* count_in = nullptr;  ///< null: zeros
  std::int64_t* count_out = nullptr;       ///< null unless the call updates
  /// Per-element statistics with one count per key: the updates each element
  /// left out (its count is *count_in - skips[i]). Read only when *skipped !=
  /// 0; incremented where an update skips. Null: none kept.
  std::int64_t* skips = nullptr;
  /// The key's health counter (units left out by NonFinite::skip); null: not counted.
  std::int64_t* skipped = nullptr;
  // Fixed maps (Work::apply_map / invert_map), of map_dtype: per element, or
  // per feature when the plan is pooled. A gathered update (Plan::gathered):
  // mu points at rank 0's message block of the key (core::GatheredKey).
  const void* mu = nullptr;
  const void* p = nullptr;
};
static_assert(sizeof(Segment) <= 128, "see above: keep a Segment small");

/// One call over several keys.
struct Plan {
  Work work = Work::update_and_normalize;
  Estimator estimator = Estimator::torchrl;
  bool pooled = false;  ///< statistics (and maps) per feature, any batch shape
  CountLayout counts = CountLayout::per_key;
  core::Decay decay;  ///< with the prior and the batch-variance rule
  core::ScaleRule<double> rule;  ///< scale form, eps and output bound (Options::scale, eps, clip)
  int threads = 0;  ///< CPU threads, 0 = default
  CpuExecutor executor;  ///< whose threads (Options::cpu_executor; default: vecnorm's pool)
  /// Updates: propagate (reference), or skip non-finite input. NonFinite::error
  /// is handled before dispatch (the pipeline scans the inputs); a backend sees
  /// propagate or skip.
  NonFinite nonfinite = NonFinite::skip;
  std::span<const Segment> segments;
  /// A distributed pooled update's second half: each key's batch moments come
  /// from the ranks' gathered messages (Segment::mu, `stride` doubles apart),
  /// merged in rank order, instead of from its x (which is still normalized).
  /// ranks = 0: not gathered.
  int ranks = 0;
  int rank = 0;  ///< this rank (its rows decide the skipped count)
  std::int64_t stride = 0;
  const double* exchange = nullptr;  ///< the gathered messages (rank 0's header first)

  core::GatheredKey gathered(const Segment& s) const {
    return {static_cast<const double*>(s.mu), stride, ranks, s.feat};
  }
};

/// The type the per-element arithmetic runs in (core::compute_t as a DType).
constexpr DType compute_dtype(DType x, DType stats) noexcept {
  return (x == DType::float64 || stats == DType::float64) ? DType::float64 : DType::float32;
}

}  // namespace vecnorm::detail
