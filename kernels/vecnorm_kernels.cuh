// kernels/vecnorm_kernels.cuh -- the CUDA kernels of vecnorm (device code only).
//
// Compiled by nvcc for the GPU (src/cuda/cuda_backend.cu) and, unchanged, by the
// host compiler under the project's SIMT emulator (tests/simt) for the tests.
// No <<<>>> here: launches are in the host side. Every formula is a call into
// vecnorm/core/numerics.hpp, the same functions the CPU backend calls.
//
// Kernels (docs/kernels.md):
//   elementwise_kernel  per-element statistics, all keys of a step in one launch
//   pooled_stats_kernel pooled statistics: per-block partial moments; the last block to
//                       finish merges them in a fixed order and updates loc/var/count
//   pooled_params_kernel pooled normalize-only: the per-feature map from the statistics
//   affine_kernel       y = (x - mu) * r (or its inverse) for all keys of a call
#pragma once

#include <cstdint>

#include "device_plan.hpp"
#include "vecnorm/core/convert.hpp"
#include "vecnorm/core/numerics.hpp"

#if !defined(__grid_constant__) && !defined(__CUDACC__)
#define __grid_constant__
#endif

namespace vecnorm::kernels {

using core::bf16_t;
using core::half_t;

/// The segment that owns grid block `block` (segments are few: a linear scan).
__device__ __forceinline__ int find_segment(const LaunchPlan& p, std::int64_t block) {
  int s = 0;
  while (s + 1 < p.nseg && p.seg[s + 1].block_begin <= block) ++s;
  return s;
}

/// Calls f(X{}) with X the storage type of XType t (uniform within a block).
template <class F>
__device__ __forceinline__ void visit_x(std::uint8_t t, F&& f) {
  switch (t) {
    case x_f32: f(float{}); break;
    case x_f64: f(double{}); break;
    case x_f16: f(half_t{}); break;
    case x_bf16: f(bf16_t{}); break;
    case x_i32: f(std::int32_t{}); break;
    case x_i64: f(std::int64_t{}); break;
    default: f(std::uint8_t{}); break;
  }
}

__device__ __forceinline__ core::Decay decay_of(const LaunchPlan& p) {
  core::Decay d;
  d.log_decay = p.log_decay;
  d.cumulative = p.cumulative != 0;
  return d;
}

/// A relaxed read of a counter other blocks of the launch may be adding to.
__device__ __forceinline__ std::int64_t read_counter(std::int64_t* c) {
  return static_cast<std::int64_t>(atomicAdd(reinterpret_cast<unsigned long long*>(c), 0ull));
}

/// Adds v to a health counter.
__device__ __forceinline__ void add_counter(std::int64_t* c, std::int64_t v) {
  atomicAdd(reinterpret_cast<unsigned long long*>(c), static_cast<unsigned long long>(v));
}

/// The "last block merges" handshake: every block calls this once at its end
/// (all threads); it returns true in the one block that finished last, after
/// which every other block's global writes are visible to it. The ticket is
/// reset for the next launch.
__device__ __forceinline__ bool last_block_done(std::uint32_t* ticket) {
  __shared__ int is_last;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    const std::uint32_t t = atomicAdd(ticket, 1u);
    is_last = (t == gridDim.x - 1) ? 1 : 0;
    if (is_last) *ticket = 0u;
  }
  __syncthreads();
  if (is_last) __threadfence();
  return is_last != 0;
}

// ---------------------------------------------------------------------------
// Per-element statistics
// ---------------------------------------------------------------------------

template <class X, class S, bool Stable, bool PerKeyCount, int Op>
__device__ __forceinline__ void elementwise_block(const LaunchPlan& p, const DevSegment& s, std::int64_t local_block) {
  using C = core::compute_t<X, S>;
  using Y = core::output_t<X>;
  constexpr bool kUpdate = Op != op_normalize;
  constexpr bool kNormalize = Op != op_update;
  const core::Decay decay = decay_of(p);
  const C eps = static_cast<C>(p.eps);
  const X* x = static_cast<const X*>(s.x);
  Y* y = static_cast<Y*>(s.y);
  const S* loc_in = static_cast<const S*>(s.loc_in);
  const S* var_in = static_cast<const S*>(s.var_in);
  S* loc_out = static_cast<S*>(s.loc_out);
  S* var_out = static_cast<S*>(s.var_out);
  const std::int64_t n_elem = s.rows * s.feat;
  const std::int64_t base = local_block * (kThreads * kItems) + threadIdx.x;

  auto coeffs_for = [&](std::int64_t n) {
    return kUpdate ? core::update_coeffs<C, Stable>(decay, n, 1) : core::normalize_coeffs<C, Stable>(decay, n);
  };
  // One count per key: the block's thread 0 computes the coefficients once (in
  // double) and shares them; per-element counts: each thread, when its count
  // changes. Once an element of the key has skipped (health counter != 0), an
  // element's count is the key's less its skips: per-element coefficients too.
  std::int64_t cached = -1;
  core::Coeffs<C> c{};
  bool element_counts = !PerKeyCount;
  const std::int64_t n_key = s.count_in ? *s.count_in : 0;
  if constexpr (PerKeyCount) {
    __shared__ C shared_coeffs[2];
    __shared__ int shared_skips;
    if (threadIdx.x == 0) {
      const core::Coeffs<C> c0 = coeffs_for(n_key);
      shared_coeffs[0] = c0.weight;
      shared_coeffs[1] = c0.inv_bc;
      shared_skips = (s.skips != nullptr && s.skipped != nullptr && read_counter(s.skipped) != 0) ? 1 : 0;
    }
    __syncthreads();
    c.weight = shared_coeffs[0];
    c.inv_bc = shared_coeffs[1];
    element_counts = shared_skips != 0;
  }
  const bool skip = kUpdate && p.skip != 0;
#pragma unroll
  for (int it = 0; it < kItems; ++it) {
    const std::int64_t i = base + static_cast<std::int64_t>(it) * kThreads;
    if (i >= n_elem) break;
    std::int64_t n = 0;
    if (element_counts) {
      if constexpr (PerKeyCount)
        n = n_key - s.skips[i];
      else
        n = s.count_in ? s.count_in[i] : 0;
      if (n != cached) {
        c = coeffs_for(n);
        cached = n;
      }
    }
    const C xi = core::load<C>(x + i);
    C loc = loc_in ? static_cast<C>(loc_in[i]) : C(0);
    C var = var_in ? static_cast<C>(var_in[i]) : C(0);
    if constexpr (kUpdate) {
      const bool keep = skip && !core::is_finite(xi);
      core::update_stored_unless<S, C, Stable>(keep, loc, var, xi, c, loc_out[i], var_out[i]);
      if constexpr (!PerKeyCount) {
        s.count_out[i] = keep ? n : n + 1;
      } else if (keep && s.skips != nullptr) {
        ++s.skips[i];
      }
      if (keep && s.skipped != nullptr) add_counter(s.skipped, 1);
    }
    if constexpr (kNormalize) core::store(y + i, core::apply(core::element_affine<C, Stable>(loc, var, c, eps), xi));
  }
}

/// Per-element statistics for all segments of the launch. With one count per
/// key, the last block moves every segment's count by one (after all blocks
/// have read it).
template <class S, bool Stable, bool PerKeyCount, int Op>
__global__ void __launch_bounds__(kThreads) elementwise_kernel(const __grid_constant__ LaunchPlan p) {
  const std::int64_t block = blockIdx.x;
  const int si = find_segment(p, block);
  const DevSegment& s = p.seg[si];
  const std::int64_t local = block - s.block_begin;
  if (local < s.blocks) {
    visit_x(s.x_dtype, [&](auto xt) { elementwise_block<decltype(xt), S, Stable, PerKeyCount, Op>(p, s, local); });
  }
  if constexpr (PerKeyCount && Op != op_normalize) {
    if (last_block_done(p.ticket) && threadIdx.x == 0) {
      for (int k = 0; k < p.nseg; ++k) {
        const DevSegment& sk = p.seg[k];
        *sk.count_out = (sk.count_in ? *sk.count_in : 0) + 1;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Pooled statistics
// ---------------------------------------------------------------------------

/// Rows of a block of the pooled statistics kernel, for feat features: the
/// block's threads form `groups` row groups of `cols` feature lanes.
__host__ __device__ __forceinline__ int pooled_cols(std::int64_t feat) {
  return static_cast<int>(feat < kThreads ? (feat > 0 ? feat : 1) : kThreads);
}
__host__ __device__ __forceinline__ std::int64_t pooled_rows_per_block(std::int64_t feat) {
  return static_cast<std::int64_t>(kThreads / pooled_cols(feat)) * kRowsPerThread;
}

/// One block's partial moments of rows [r0, r1) of every feature: shifted sums
/// in the compute type per thread, added in double across the row groups (they
/// share the shift), written as (n, mean, M2) per feature; blocks are merged
/// with Chan's formula by the last block.
template <class X, class S, bool Stable>
__device__ __forceinline__ void pooled_partial_block(const LaunchPlan& p, const DevSegment& s, std::int64_t local,
                                                     double* sh1, double* sh2) {
  using C = core::compute_t<X, S>;
  const core::Decay decay = decay_of(p);
  const X* x = static_cast<const X*>(s.x);
  const S* loc_in = static_cast<const S*>(s.loc_in);
  const std::int64_t F = s.feat;
  const int cols = pooled_cols(F);
  const int groups = kThreads / cols;
  const std::int64_t r0 = local * pooled_rows_per_block(F);
  const std::int64_t r1 = r0 + pooled_rows_per_block(F) < s.rows ? r0 + pooled_rows_per_block(F) : s.rows;
  const std::int64_t n = s.count_in ? *s.count_in : 0;
  const int tid = threadIdx.x;
  const int col = tid % cols;
  const int g = tid / cols;
  double* part = p.partials + 3 * (s.partials + local * F);
  const core::Coeffs<double> shift_c = core::shift_coeffs<Stable>(decay, n);
  for (std::int64_t fc = 0; fc < F; fc += cols) {
    const std::int64_t f = fc + col;
    const bool active = g < groups && f < F;
    C shift = C(0), a1 = C(0), a2 = C(0);
    if (active) {
      const double loc = loc_in ? static_cast<double>(loc_in[f]) : 0.0;
      shift = static_cast<C>(core::pooled_shift<Stable>(shift_c, loc, n, core::load<double>(x + f)));
      for (std::int64_t r = r0 + g; r < r1; r += groups) {
        const C d = core::load<C>(x + r * F + f) - shift;
        a1 += d;
        a2 += d * d;
      }
    }
    sh1[tid] = static_cast<double>(a1);
    sh2[tid] = static_cast<double>(a2);
    __syncthreads();
    if (g == 0 && f < F) {
      // The row groups share the shift: their sums add (in double, in group order).
      double t1 = 0.0, t2 = 0.0;
      for (int gg = 0; gg < groups; ++gg) {
        t1 += sh1[gg * cols + col];
        t2 += sh2[gg * cols + col];
      }
      const core::Moments m =
          core::moments_from_shifted(static_cast<double>(r1 - r0), static_cast<double>(shift), t1, t2);
      part[3 * f + 0] = m.n;
      part[3 * f + 1] = m.mean;
      part[3 * f + 2] = m.m2;
    }
    __syncthreads();
  }
}

/// The map of one statistics element computed in type T (double for pooled
/// statistics, the compute type per element, as the CPU backend and the
/// read-outs do), stored in the segment's compute type.
template <class T, class S, bool Stable>
__device__ __forceinline__ void element_params(const LaunchPlan& p, const DevSegment& s, std::int64_t f, S loc, S var,
                                               std::int64_t count) {
  const auto c = core::normalize_coeffs<T, Stable>(decay_of(p), count);
  T mu, q;
  if (p.invert) {
    core::element_loc_scale<T, Stable>(static_cast<T>(loc), static_cast<T>(var), c, static_cast<T>(p.eps), mu, q);
  } else {
    const auto a = core::element_affine<T, Stable>(static_cast<T>(loc), static_cast<T>(var), c, static_cast<T>(p.eps));
    mu = a.mu;
    q = a.r;
  }
  if (s.wide) {
    static_cast<double*>(s.mu)[f] = static_cast<double>(mu);
    static_cast<double*>(s.p)[f] = static_cast<double>(q);
  } else {
    static_cast<float*>(s.mu)[f] = static_cast<float>(mu);
    static_cast<float*>(s.p)[f] = static_cast<float>(q);
  }
}

/// NonFinite::skip, pooled, in the last block: the moments (n, mean, M2) of
/// the rows of segment s whose values are all finite, written to part[3 f ..]
/// for every feature f (n = the number of such rows, 0 when none). Sums in
/// double, shifted as pooled_shift with the first finite row standing in for
/// the first sample. Returns the number of rows. Slow (one block), and rare.
/// One input value as a double, for the dtype of a segment (a runtime switch:
/// the rare masked path is not worth an instantiation per dtype).
__device__ __forceinline__ double load_as_double(const void* x, std::uint8_t t, std::int64_t i) {
  switch (t) {
    case x_f32: return core::load<double>(static_cast<const float*>(x) + i);
    case x_f64: return core::load<double>(static_cast<const double*>(x) + i);
    case x_f16: return core::load<double>(static_cast<const half_t*>(x) + i);
    case x_bf16: return core::load<double>(static_cast<const bf16_t*>(x) + i);
    case x_i32: return core::load<double>(static_cast<const std::int32_t*>(x) + i);
    case x_i64: return core::load<double>(static_cast<const std::int64_t*>(x) + i);
    default: return core::load<double>(static_cast<const std::uint8_t*>(x) + i);
  }
}

template <class S, bool Stable>
__device__ __forceinline__ std::int64_t masked_moments(const LaunchPlan& p, int k, double* part) {
  __shared__ int ok[kThreads];
  __shared__ std::int64_t first;
  __shared__ std::int64_t rows_ok;
  const DevSegment& s = p.seg[k];
  const void* x = s.x;
  const std::uint8_t xt = s.x_dtype;
  const S* loc_in = static_cast<const S*>(s.loc_in);
  const std::int64_t F = s.feat, m = s.rows;
  const std::int64_t n = s.count_in ? *s.count_in : 0;
  auto row_ok = [&](std::int64_t r) {
    for (std::int64_t f = 0; f < F; ++f)
      if (!core::is_finite(load_as_double(x, xt, r * F + f))) return 0;
    return 1;
  };
  if (threadIdx.x == 0) {
    first = m;
    rows_ok = 0;
  }
  __syncthreads();
  // The first finite row, kThreads rows at a time.
  for (std::int64_t r0 = 0; r0 < m; r0 += kThreads) {
    const std::int64_t r = r0 + threadIdx.x;
    ok[threadIdx.x] = r < m ? row_ok(r) : 0;
    __syncthreads();
    if (threadIdx.x == 0)
      for (int t = 0; t < kThreads && first == m; ++t)
        if (ok[t] != 0) first = r0 + t;
    __syncthreads();
    if (first < m) break;
  }
  // Shift in part[3 f + 2], sums in part[3 f], part[3 f + 1].
  const core::Coeffs<double> shift_c = core::shift_coeffs<Stable>(decay_of(p), n);
  for (std::int64_t f = threadIdx.x; f < F; f += kThreads) {
    const double loc = loc_in ? static_cast<double>(loc_in[f]) : 0.0;
    part[3 * f + 0] = 0.0;
    part[3 * f + 1] = 0.0;
    part[3 * f + 2] = first < m ? core::pooled_shift<Stable>(shift_c, loc, n, load_as_double(x, xt, first * F + f)) : 0.0;
  }
  __syncthreads();
  for (std::int64_t r0 = first; r0 < m; r0 += kThreads) {
    const std::int64_t r = r0 + threadIdx.x;
    ok[threadIdx.x] = r < m ? row_ok(r) : 0;
    __syncthreads();
    const std::int64_t len = m - r0 < kThreads ? m - r0 : kThreads;
    for (std::int64_t f = threadIdx.x; f < F; f += kThreads) {
      double a = part[3 * f + 0], q = part[3 * f + 1];
      const double shift = part[3 * f + 2];
      for (std::int64_t t = 0; t < len; ++t) {
        if (ok[t] == 0) continue;
        const double d = load_as_double(x, xt, (r0 + t) * F + f) - shift;
        a += d;
        q += d * d;
      }
      part[3 * f + 0] = a;
      part[3 * f + 1] = q;
    }
    if (threadIdx.x == 0)
      for (std::int64_t t = 0; t < len; ++t) rows_ok += ok[t];
    __syncthreads();
  }
  const std::int64_t total = rows_ok;
  for (std::int64_t f = threadIdx.x; f < F; f += kThreads) {
    const core::Moments mo =
        core::moments_from_shifted(static_cast<double>(total), part[3 * f + 2], part[3 * f + 0], part[3 * f + 1]);
    part[3 * f + 0] = mo.n;
    part[3 * f + 1] = mo.mean;
    part[3 * f + 2] = mo.m2;
  }
  __syncthreads();
  return total;
}

/// Pooled statistics of all segments: partial moments per block; the last block
/// merges each feature's partials in block order (deterministic), updates
/// loc/var in double, moves the counts by the batch size and, for a step that
/// normalizes, writes the per-feature map for affine_kernel.
template <class S, bool Stable>
__global__ void __launch_bounds__(kThreads, 1) pooled_stats_kernel(const __grid_constant__ LaunchPlan p) {
  __shared__ double sh1[kThreads];
  __shared__ double sh2[kThreads];
  const std::int64_t block = blockIdx.x;
  const int si = find_segment(p, block);
  const DevSegment& s = p.seg[si];
  const std::int64_t local = block - s.block_begin;
  if (local < s.blocks) {
    visit_x(s.x_dtype, [&](auto xt) { pooled_partial_block<decltype(xt), S, Stable>(p, s, local, sh1, sh2); });
  }
  if (!last_block_done(p.ticket)) return;
  const core::Decay decay = decay_of(p);
  __shared__ std::int64_t added[kMaxSegments];  // rows each segment adds
  __shared__ int bad;
  for (int k = 0; k < p.nseg; ++k) {
    const DevSegment& sk = p.seg[k];
    const std::int64_t n = sk.count_in ? *sk.count_in : 0;
    std::int64_t m = sk.rows;
    const S* loc_in = static_cast<const S*>(sk.loc_in);
    const S* var_in = static_cast<const S*>(sk.var_in);
    S* loc_out = static_cast<S*>(sk.loc_out);
    S* var_out = static_cast<S*>(sk.var_out);
    double* part = p.partials + 3 * sk.partials;
    // Every feature's partials merged in block order, kept in block 0's slots.
    if (threadIdx.x == 0) bad = 0;
    __syncthreads();
    for (std::int64_t f = threadIdx.x; f < sk.feat; f += kThreads) {
      core::Moments b;
      for (std::int64_t blk = 0; blk < sk.blocks; ++blk) {
        const double* q = part + 3 * (blk * sk.feat + f);
        core::Moments mb;
        mb.n = q[0];
        mb.mean = q[1];
        mb.m2 = q[2];
        b = core::merge(b, mb);
      }
      part[3 * f + 0] = b.n;
      part[3 * f + 1] = b.mean;
      part[3 * f + 2] = b.m2;
      if (!core::is_finite(b.mean) || !core::is_finite(b.m2)) atomicOr(&bad, 1);
    }
    __syncthreads();
    // NonFinite::skip with a non-finite value in the batch (rare): the moments
    // again over the rows whose values are all finite, by this block alone.
    if (bad != 0 && p.skip != 0) {
      m = masked_moments<S, Stable>(p, k, part);
      if (threadIdx.x == 0 && sk.skipped != nullptr && m < sk.rows) add_counter(sk.skipped, sk.rows - m);
    }
    if (threadIdx.x == 0) added[k] = m;
    const core::Coeffs<double> uc = core::update_coeffs<double, Stable>(decay, n, m > 0 ? m : 1);
    for (std::int64_t f = threadIdx.x; f < sk.feat; f += kThreads) {
      core::Moments b;
      b.n = part[3 * f + 0];
      b.mean = part[3 * f + 1];
      b.m2 = part[3 * f + 2];
      double loc = loc_in ? static_cast<double>(loc_in[f]) : 0.0;
      double var = var_in ? static_cast<double>(var_in[f]) : 0.0;
      if (m > 0) core::update_pooled<Stable>(uc, loc, var, b);  // m = 0: every row left out, nothing changes
      const S ls = static_cast<S>(loc), vs = static_cast<S>(var);
      loc_out[f] = ls;
      var_out[f] = vs;
      if (p.op == op_update_and_normalize) element_params<double, S, Stable>(p, sk, f, ls, vs, n + m);
    }
    __syncthreads();
  }
  __syncthreads();  // every thread has read the counts
  if (threadIdx.x == 0)
    for (int k = 0; k < p.nseg; ++k) *p.seg[k].count_out = (p.seg[k].count_in ? *p.seg[k].count_in : 0) + added[k];
}

/// Normalize-only in pooled mode, and denormalize: the map of every statistics
/// element of every segment (mu and 1/scale, or mu and scale with p.invert).
/// One block per segment.
template <class S, bool Stable>
__global__ void __launch_bounds__(kThreads) params_kernel(const __grid_constant__ LaunchPlan p) {
  const DevSegment& s = p.seg[blockIdx.x];
  const S* loc = static_cast<const S*>(s.loc_in);
  const S* var = static_cast<const S*>(s.var_in);
  const std::int64_t count = *s.count_in;
  const std::int64_t numel = s.broadcast ? s.feat : s.rows * s.feat;
  // Per-element statistics whose elements have skipped: each element's own count.
  const bool element_counts = !s.broadcast && s.skips != nullptr && s.skipped != nullptr && *s.skipped != 0;
  for (std::int64_t f = threadIdx.x; f < numel; f += kThreads) {
    const std::int64_t c = element_counts ? count - s.skips[f] : count;
    if (s.broadcast || s.wide)
      element_params<double, S, Stable>(p, s, f, loc[f], var[f], c);
    else
      element_params<float, S, Stable>(p, s, f, loc[f], var[f], c);
  }
}

// ---------------------------------------------------------------------------
// Affine maps: pooled normalize, AffineNormalizer, denormalize
// ---------------------------------------------------------------------------

template <class X, class C>
__device__ __forceinline__ void affine_block(const LaunchPlan& p, const DevSegment& s, std::int64_t local) {
  using Y = core::output_t<X>;
  const X* x = static_cast<const X*>(s.x);
  Y* y = static_cast<Y*>(s.y);
  const C* mu = static_cast<const C*>(s.mu);
  const C* q = static_cast<const C*>(s.p);
  const std::int64_t n_elem = s.rows * s.feat;
  const std::int64_t base = local * (kThreads * kItems) + threadIdx.x;
#pragma unroll
  for (int it = 0; it < kItems; ++it) {
    const std::int64_t i = base + static_cast<std::int64_t>(it) * kThreads;
    if (i >= n_elem) break;
    const std::int64_t j = s.broadcast ? i % s.feat : i;
    const C xi = core::load<C>(x + i);
    const C out = p.invert ? core::unapply(mu[j], q[j], xi) : core::apply(core::Affine<C>{mu[j], q[j]}, xi);
    core::store(y + i, out);
  }
}

__global__ void __launch_bounds__(kThreads) affine_kernel(const __grid_constant__ LaunchPlan p) {
  const std::int64_t block = blockIdx.x;
  const DevSegment& s = p.seg[find_segment(p, block)];
  const std::int64_t local = block - s.block_begin;
  if (local >= s.blocks) return;
  visit_x(s.x_dtype, [&](auto xt) {
    if (s.wide)
      affine_block<decltype(xt), double>(p, s, local);
    else
      affine_block<decltype(xt), float>(p, s, local);
  });
}

// ---------------------------------------------------------------------------
// NonFinite::error: the first non-finite input element
// ---------------------------------------------------------------------------

/// The least index of a non-finite element of seg[0].x, into *p.found (atomicMin;
/// all ones when there is none).
__global__ void __launch_bounds__(kThreads) nonfinite_scan_kernel(const __grid_constant__ LaunchPlan p) {
  const DevSegment& s = p.seg[0];
  const std::int64_t n_elem = s.rows * s.feat;
  const std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * (kThreads * kItems) + threadIdx.x;
  visit_x(s.x_dtype, [&](auto xt) {
    using X = decltype(xt);
    const X* x = static_cast<const X*>(s.x);
#pragma unroll
    for (int it = 0; it < kItems; ++it) {
      const std::int64_t i = base + static_cast<std::int64_t>(it) * kThreads;
      if (i >= n_elem) break;
      if (!core::is_finite(core::load<double>(x + i))) {
        atomicMin(p.found, static_cast<unsigned long long>(i));
        break;  // later items of this thread have larger indices
      }
    }
  });
}

}  // namespace vecnorm::kernels
