// kernels/elementwise.cuh -- per-element statistics, all keys of a call in one
// launch: every element is core::element_step (vecnorm/core/element.hpp), the
// same step, count and skip rule the CPU loops run.
#pragma once

#include "common.cuh"

namespace vecnorm::kernels {

template <class Est, class X, class S, bool PerKeyCount, int Op>
__device__ __forceinline__ void elementwise_block(const LaunchPlan& p, const DevSegment& s, std::int64_t local_block) {
  using C = core::compute_t<X, S>;
  using Y = core::output_t<X>;
  constexpr bool kUpdate = Op != op_normalize;
  constexpr bool kNormalize = Op != op_update;
  const core::Decay decay = decay_of(p);
  const core::ScaleRule<C> eps = p.rule.as<C>();
  const X* x = static_cast<const X*>(s.x);
  Y* y = static_cast<Y*>(s.y);
  const std::int64_t n_elem = s.rows * s.feat;
  const std::int64_t base = local_block * (kThreads * kItems) + threadIdx.x;

  core::CountRule rule;
  rule.per_element = !PerKeyCount;
  rule.key_count = PerKeyCount && s.count_in ? *s.count_in : 0;
  // A row mask (updates only): the elements of the rows it leaves out keep
  // their statistics and count (with one count per key: one more skip each).
  const std::uint8_t* mask = kUpdate ? s.mask : nullptr;
  // One count per key: the block's thread 0 computes the coefficients once (in
  // double) and shares them; varying counts: each thread, when its count
  // changes. Once an element of the key has been left out (health counter !=
  // 0), or when a mask may leave some out now, an element's count is the
  // key's less its skips.
  std::int64_t cached = -1, cached_masked = -1;
  core::Coeffs<C> c{}, cm{};
  if constexpr (PerKeyCount) {
    __shared__ C shared_coeffs[3];
    __shared__ int shared_skips;
    if (threadIdx.x == 0) {
      const core::Coeffs<C> c0 = core::element_coeffs<Est, C, kUpdate>(decay, rule.key_count);
      shared_coeffs[0] = c0.weight;
      shared_coeffs[1] = c0.inv_bc;
      shared_coeffs[2] = c0.var0;
      shared_skips =
          (s.skips != nullptr && s.skipped != nullptr && (mask != nullptr || read_counter(s.skipped) != 0)) ? 1 : 0;
    }
    __syncthreads();
    c.weight = shared_coeffs[0];
    c.inv_bc = shared_coeffs[1];
    c.var0 = shared_coeffs[2];
    rule.use_skips = shared_skips != 0;
  }
  const bool skip = kUpdate && p.skip != 0;
  unsigned long long left_out = 0;  // this thread's elements left out of the update
#pragma unroll
  for (int it = 0; it < kItems; ++it) {
    const std::int64_t i = base + static_cast<std::int64_t>(it) * kThreads;
    if (i >= n_elem) break;
    std::int64_t n = rule.key_count;  // (0 with one count per element: read below)
    if (core::varying_counts(rule)) n = core::element_count(s, rule, i);
    if constexpr (kUpdate) {
      if (core::masked_out(mask, i, s.feat)) {  // its row is left out: normalized at its count
        if (n != cached_masked) {
          cm = core::element_coeffs<Est, C, false>(decay, n);
          cached_masked = n;
        }
        core::masked_element_step<Est, S, C, kNormalize>(x, s, y, i, i, cm, eps);
        core::record_update(s, rule, i, n, true);
        ++left_out;
        continue;
      }
    }
    if (core::varying_counts(rule) && n != cached) {
      c = core::element_coeffs<Est, C, kUpdate>(decay, n);
      cached = n;
    }
    const bool kept_out = core::element_step<Est, S, C, kUpdate, kNormalize, kUpdate>(x, s, y, i, i, c, eps, skip);
    if constexpr (kUpdate) {
      core::record_update(s, rule, i, n, kept_out);
      left_out += kept_out ? 1 : 0;
    }
  }
  if constexpr (kUpdate) {
    // The health counter by the block's elements left out: one atomic a block
    // (a row mask may leave out whole rows of every block).
    __shared__ unsigned long long block_left_out;
    if (threadIdx.x == 0) block_left_out = 0;
    __syncthreads();
    if (left_out > 0) atomicAdd(&block_left_out, left_out);
    __syncthreads();
    if (threadIdx.x == 0 && block_left_out > 0 && s.skipped != nullptr)
      add_counter(s.skipped, static_cast<std::int64_t>(block_left_out));
  }
}

/// A per-key segment whose updates have stopped (Options::until): the block's
/// elements keep their statistics, copied where the call writes them elsewhere.
template <class S>
__device__ __forceinline__ void keep_block(const DevSegment& s, std::int64_t local_block) {
  const S* loc_in = static_cast<const S*>(s.loc_in);
  const S* var_in = static_cast<const S*>(s.var_in);
  S* loc_out = static_cast<S*>(s.loc_out);
  S* var_out = static_cast<S*>(s.var_out);
  if (loc_out == loc_in && var_out == var_in) return;
  const std::int64_t n_elem = s.rows * s.feat;
  const std::int64_t base = local_block * (kThreads * kItems) + threadIdx.x;
  for (int it = 0; it < kItems; ++it) {
    const std::int64_t i = base + static_cast<std::int64_t>(it) * kThreads;
    if (i >= n_elem) break;
    loc_out[i] = loc_in ? loc_in[i] : S(0);
    var_out[i] = var_in ? var_in[i] : S(0);
  }
}

/// Per-element statistics for all segments of the launch. With one count per
/// key, the last block moves every segment's count by one (after all blocks
/// have read it), or leaves it where the key's updates have stopped
/// (core::updates_stopped: the segment's blocks only normalize). Launch bounds with a minimum of one block: without it ptxas
/// squeezed the stable float64 normalize into 32 registers and spilled around
/// the float64 division's slow-path call (scripts/check-ptxas.sh).
template <class Est, class S, bool PerKeyCount, int Op>
__global__ void __launch_bounds__(kThreads, 1) elementwise_kernel(const __grid_constant__ LaunchPlan p) {
  const std::int64_t block = blockIdx.x;
  const int si = find_segment(p, block);
  const DevSegment& s = p.seg[si];
  const std::int64_t local = block - s.block_begin;
  if (local < s.blocks) {
    bool stopped = false;
    if constexpr (PerKeyCount && Op != op_normalize) stopped = core::updates_stopped(p.decay, s.count_in ? *s.count_in : 0);
    if (!stopped) {
      visit_x(s.x_dtype, [&](auto xt) { elementwise_block<Est, decltype(xt), S, PerKeyCount, Op>(p, s, local); });
    } else {
      keep_block<S>(s, local);
      if constexpr (Op == op_update_and_normalize)
        visit_x(s.x_dtype, [&](auto xt) { elementwise_block<Est, decltype(xt), S, true, op_normalize>(p, s, local); });
    }
  }
  if constexpr (PerKeyCount && Op != op_normalize) {
    if (last_block_done(p.ticket) && threadIdx.x == 0) {
      for (int k = 0; k < p.nseg; ++k) {
        const DevSegment& sk = p.seg[k];
        const std::int64_t n = sk.count_in ? *sk.count_in : 0;
        *sk.count_out = core::updates_stopped(p.decay, n) ? n : n + 1;
      }
    }
  }
}

}  // namespace vecnorm::kernels
