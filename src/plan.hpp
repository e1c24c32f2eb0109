// src/plan.hpp -- the validated description of one call, handed to a backend.
//
// Public entry points (stateless::step, VecNorm, AffineNormalizer) validate
// their arguments into a Plan of Segments (one per key present) and hand it to
// dispatch (src/dispatch.cpp), which switches on the backend. Backends trust a
// Plan: every pointer, size and dtype in it has been checked.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "vecnorm/core/numerics.hpp"
#include "vecnorm/options.hpp"
#include "vecnorm/tensor.hpp"

namespace vecnorm::detail {

/// Where a step's counts live.
enum class CountLayout : std::uint8_t {
  per_key,      ///< one int64 per key (stateful modes)
  per_element,  ///< one int64 per statistics element (stateless mode)
};

/// One key of a statistics call (update and/or normalize).
struct Segment {
  int key = -1;              ///< index in the key table (for messages)
  const void* x = nullptr;   ///< input, rows x feat elements
  DType x_dtype = DType::float32;
  void* y = nullptr;         ///< output (null for Op::update), output_dtype(x_dtype)
  std::int64_t rows = 0;     ///< batch elements m in this call
  std::int64_t feat = 0;     ///< feature elements per batch element
  // Statistics, stats dtype. Per-element: rows*feat values; pooled: feat values.
  const void* loc_in = nullptr;  ///< null: zeros
  const void* var_in = nullptr;  ///< null: zeros
  void* loc_out = nullptr;       ///< may equal loc_in; null for Op::normalize
  void* var_out = nullptr;
  const std::int64_t* count_in = nullptr;  ///< null: zeros
  std::int64_t* count_out = nullptr;       ///< null for Op::normalize
  // Non-finite input (stateful modes; see Plan::nonfinite).
  /// Per-element stateful mode with skip: one int64 per statistics element,
  /// the updates that element left out (its count is *count_in - skips[i]).
  /// Read only when *skipped != 0; incremented where an update skips. Null: none.
  std::int64_t* skips = nullptr;
  /// The key's health counter (units left out); null: not counted.
  std::int64_t* skipped = nullptr;
};

/// One statistics call over several keys.
struct Plan {
  Op op = Op::update_and_normalize;
  Estimator estimator = Estimator::torchrl;
  bool pooled = false;
  CountLayout counts = CountLayout::per_key;
  DType stats_dtype = DType::float32;
  core::Decay decay;
  double eps = 1e-4;
  int threads = 0;  ///< CPU threads, 0 = default
  /// Updates: propagate (reference), or skip non-finite input. NonFinite::error
  /// is handled before dispatch (the frontends scan the inputs); a backend sees
  /// propagate or skip.
  NonFinite nonfinite = NonFinite::skip;
  /// With Op::normalize: compute y = x * scale + mu (denormalize) instead.
  bool invert = false;
  std::span<const Segment> segments;
};

/// The Plan of a stateful call (VecNorm, SharedVecNorm): one count per key,
/// everything else from the normalizer's options.
inline Plan stateful_plan(const Options& o, Op op, bool invert, std::span<const Segment> segments) {
  Plan p;
  p.op = op;
  p.invert = invert;
  p.estimator = o.estimator;
  p.pooled = o.reduce_batch_dims;
  p.counts = CountLayout::per_key;
  p.stats_dtype = o.stats_dtype;
  p.decay = core::make_decay(o.decay);
  p.eps = o.eps;
  p.threads = o.cpu_threads;
  p.nonfinite = o.nonfinite == NonFinite::propagate ? NonFinite::propagate : NonFinite::skip;
  p.segments = segments;
  return p;
}

/// One key of an affine call: apply y = (x - mu) * r, or invert y = x * scale + mu.
/// The parameters are stored in the compute type of the key (float32 or
/// float64): the type the arithmetic runs in, so that an affine call computes
/// exactly what a frozen normalize computes.
struct AffineSegment {
  int key = -1;
  const void* x = nullptr;
  DType x_dtype = DType::float32;  ///< apply: the key's dtype; invert: output_dtype of it
  void* y = nullptr;               ///< output_dtype(x_dtype)
  std::int64_t rows = 0;
  std::int64_t feat = 0;
  bool broadcast = false;          ///< params have feat values (pooled) instead of rows*feat
  DType param_dtype = DType::float32;  ///< float32 or float64: the compute type
  const void* mu = nullptr;
  const void* p = nullptr;         ///< 1/scale (apply) or scale (invert)
};

enum class AffineDirection : std::uint8_t { apply, invert };

struct AffinePlan {
  AffineDirection direction = AffineDirection::apply;
  int threads = 0;
  std::span<const AffineSegment> segments;
};

/// Scratch memory a backend may keep between calls (so steady-state steps do
/// not allocate). Owned by the caller: a VecNorm owns one.
struct Workspace {
  std::vector<double> f64;  ///< CPU backend scratch
  /// Count-dependent coefficients the CPU backend computed lately (see
  /// cpu_backend.cpp, memo_coeffs): the keys of a step share their counts,
  /// and a step's shift needs the bias correction the step before computed.
  struct Memo {
    int kind = -1;  ///< which coefficients; -1: empty
    double log_decay = 0.0;
    bool cumulative = true;
    std::int64_t n = 0, m = 0;
    core::Coeffs<double> c{};
  };
  Memo memo[4];
  int memo_next = 0;
  // CUDA backend scratch in device memory, grown on first use (src/cuda).
  void* device = nullptr;
  std::size_t device_bytes = 0;
  void (*release)(void*) noexcept = nullptr;

  Workspace() = default;
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  ~Workspace() {
    if (device != nullptr && release != nullptr) release(device);
  }
};

}  // namespace vecnorm::detail

namespace vecnorm::detail {
/// The type the per-element arithmetic runs in (core::compute_t as a DType).
constexpr DType compute_dtype(DType x, DType stats) noexcept {
  return (x == DType::float64 || stats == DType::float64) ? DType::float64 : DType::float32;
}
}  // namespace vecnorm::detail
