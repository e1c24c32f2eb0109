// kernels/device_plan.hpp -- what a launch is given: a segment table passed
// by value as the kernel parameter (no host->device copy, so a step can be
// captured in a CUDA graph), plus pointers to device scratch.
//
// Plain data only: included by the kernels (nvcc, or g++ under the SIMT
// emulator) and by the host side (src/cuda).
#pragma once

#include <cstdint>

#include "policy.hpp"
#include "vecnorm/core/math.hpp"
#include "vecnorm/core/returns.hpp"

namespace vecnorm::kernels {

/// Input/output element types, numbered as vecnorm::DType.
enum XType : std::uint8_t { x_f32 = 0, x_f64 = 1, x_f16 = 2, x_bf16 = 3, x_i32 = 4, x_i64 = 5, x_u8 = 6 };

/// op_moments: a distributed update's first half (each key's batch moments into its y).
enum OpCode : std::uint8_t { op_update_and_normalize = 0, op_update = 1, op_normalize = 2, op_moments = 3 };

/// One key of a launch.
struct DevSegment {
  const void* x;
  void* y;
  const void* loc_in;  ///< stats dtype; null reads as zeros
  const void* var_in;
  void* loc_out;
  void* var_out;
  const std::int64_t* count_in;  ///< null reads as zeros
  std::int64_t* count_out;
  std::int64_t rows;
  std::int64_t feat;
  std::int64_t block_begin;  ///< first block of this segment in the grid
  std::int64_t blocks;       ///< blocks of this segment
  std::int64_t partials;     ///< pooled: index of this segment's first partial (block-major, feat per block);
                             ///< gathered: the offset of the key's block in a message (doubles)
  void* mu;                  ///< pooled / affine: parameters, compute type (feat or rows*feat values)
  void* p;                   ///< 1/scale (apply) or scale (invert)
  std::int64_t* skips;       ///< per-element stateful: updates each element left out (null: none)
  std::int64_t* skipped;     ///< the key's health counter (null: not counted)
  const std::uint8_t* mask;  ///< pooled updates: one byte per row, 0 = left out (null: every row)
  std::uint8_t x_dtype;      ///< XType
  std::uint8_t wide;         ///< compute type: 1 = double, 0 = float
  std::uint8_t broadcast;    ///< affine: params per feature (1) or per element (0)
  std::uint8_t weighted;     ///< mask holds int32 row weights (pooled; core::row_weight)
};

/// One launch over up to kMaxSegments keys.
struct LaunchPlan {
  DevSegment seg[kMaxSegments];
  int nseg;
  std::uint8_t op;          ///< OpCode
  std::uint8_t invert;      ///< affine kernel: 1 = y = x * scale + mu
  std::uint8_t skip;        ///< NonFinite::skip: non-finite input is left out of the statistics
  core::Decay decay;        ///< decay, prior, batch-variance rule
  core::ScaleRule<double> rule;  ///< scale form, eps, output bound
  std::uint32_t* ticket;    ///< device counter, 0 between launches (last-block detection)
  double* partials;         ///< pooled: 3 doubles (n, mean, M2) per (block, feature)
  unsigned long long* found;  ///< nonfinite_scan_kernel: the least index found (all ones: none)
  // gathered_stats_kernel: the ranks' messages (vecnorm/core/exchange.hpp).
  const double* gathered;
  std::int64_t stride;  ///< doubles per message
  int ranks;
  int rank;
};

/// returns_kernel: one pass of a reward scaler's step (src/backends.hpp,
/// ReturnPass) over rows x feat elements of the statistics' dtype.
struct ReturnPlan {
  void* state;
  void* entered;
  const void* reward;
  const std::uint8_t* done;  ///< one byte per row, or null
  const std::uint8_t* mask;  ///< one byte per row, 0 = inactive (its return holds), or null
  std::int64_t rows;
  std::int64_t feat;
  double gamma;
  ReturnReset reset;
  std::uint8_t wide;  ///< 1: double, 0: float
  std::uint8_t kept;  ///< 0: entered = return_entered(state, reward); 1: state = return_kept(entered)
  std::uint8_t hold;  ///< 1: a holding step (core::ReturnRule::hold)
};

/// message_kernel: base[index[i]] = value[i] for i < n (a distributed update's
/// message header and absent keys, written on the stream without a host copy:
/// capturable in a CUDA graph). Up to kMessageMax values per launch.
constexpr int kMessageMax = 64;
struct MessagePlan {
  double* base;
  int n;
  std::int64_t index[kMessageMax];
  double value[kMessageMax];
};

}  // namespace vecnorm::kernels
