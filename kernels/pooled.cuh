// kernels/pooled.cuh -- pooled statistics of all keys of a call: per-block
// partial moments; the last block to finish merges them in a fixed order and
// updates loc/var/count. The operations are core::PooledOps
// (vecnorm/core/pooled.hpp), as on the CPU.
#pragma once

#include "common.cuh"
#include "vecnorm/core/exchange.hpp"

namespace vecnorm::kernels {

/// Rows of a block of the pooled statistics kernel, for feat features: the
/// block's threads form `groups` row groups of `cols` feature lanes.
__host__ __device__ __forceinline__ int pooled_cols(std::int64_t feat) {
  return static_cast<int>(feat < kThreads ? (feat > 0 ? feat : 1) : kThreads);
}
__host__ __device__ __forceinline__ std::int64_t pooled_rows_per_block(std::int64_t feat) {
  return static_cast<std::int64_t>(kThreads / pooled_cols(feat)) * kRowsPerThread;
}

/// The weight of the rows of [r0, r1) a row mask keeps (KeyData::mask; null:
/// all of them, once; core::row_weight), and the first of them (r1: none).
/// Every thread of the block.
__device__ __forceinline__ void kept_rows(const std::uint8_t* mask, bool weighted, std::int64_t r0, std::int64_t r1,
                                          std::int64_t& kept, std::int64_t& first) {
  __shared__ unsigned long long count, least;
  if (mask == nullptr) {
    kept = r1 - r0;
    first = r0;
    return;
  }
  if (threadIdx.x == 0) {
    count = 0;
    least = static_cast<unsigned long long>(r1);
  }
  __syncthreads();
  unsigned long long mine = 0, low = static_cast<unsigned long long>(r1);
  for (std::int64_t r = r0 + threadIdx.x; r < r1; r += kThreads) {
    const std::int64_t w = core::row_weight(mask, weighted, r);
    if (w > 0) {
      mine += static_cast<unsigned long long>(w);
      if (static_cast<unsigned long long>(r) < low) low = static_cast<unsigned long long>(r);
    }
  }
  if (mine > 0) {
    atomicAdd(&count, mine);
    atomicMin(&least, low);
  }
  __syncthreads();
  kept = static_cast<std::int64_t>(count);
  first = static_cast<std::int64_t>(least);
  __syncthreads();  // (the next call's thread 0 resets them)
}

/// One block's partial moments of rows [r0, r1) of every feature (the rows a
/// row mask keeps): shifted sums in the compute type per thread, added in
/// double across the row groups (they share the shift), written as (n, mean,
/// M2) per feature; blocks are merged with Chan's formula by the last block.
template <class Est, class X, class S>
__device__ __forceinline__ void pooled_partial_block(const LaunchPlan& p, const DevSegment& s, std::int64_t local,
                                                     double* sh1, double* sh2) {
  using C = core::compute_t<X, S>;
  using Ops = core::PooledOps<Est>;
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
  const core::Coeffs<double> shift_c = Ops::shift_coeffs(decay, n);
  // With a row mask, the block's kept rows; the first of them stands in for
  // the first sample (row 0 may be a left-out row holding anything).
  std::int64_t kept = 0, first = 0;
  kept_rows(s.mask, s.weighted != 0, r0, r1, kept, first);
  const std::int64_t sample = s.mask != nullptr ? first : 0;
  for (std::int64_t fc = 0; fc < F; fc += cols) {
    const std::int64_t f = fc + col;
    const bool active = g < groups && f < F && kept > 0;
    C shift = C(0), a1 = C(0), a2 = C(0);
    if (active) {
      const double loc = loc_in ? static_cast<double>(loc_in[f]) : 0.0;
      shift = static_cast<C>(Ops::shift(shift_c, loc, n, core::load<double>(x + sample * F + f)));
      if (s.weighted != 0) {
        // (A left-out row is never read: it may hold NaN, which 0 * NaN would not leave out.)
        for (std::int64_t r = r0 + g; r < r1; r += groups) {
          const std::int64_t w = core::row_weight(s.mask, true, r);
          if (w > 0) Ops::reduce_weighted(a1, a2, core::load<C>(x + r * F + f) - shift, static_cast<C>(w));
        }
      } else {
        for (std::int64_t r = r0 + g; r < r1; r += groups)
          if (s.mask == nullptr || s.mask[r] != 0) Ops::reduce(a1, a2, core::load<C>(x + r * F + f) - shift);
      }
    }
    sh1[tid] = static_cast<double>(a1);
    sh2[tid] = static_cast<double>(a2);
    __syncthreads();
    if (g == 0 && f < F) {
      // The row groups share the shift: their sums add (in double, in group order).
      double t1 = 0.0, t2 = 0.0;
      for (int gg = 0; gg < groups; ++gg) Ops::combine(t1, t2, sh1[gg * cols + col], sh2[gg * cols + col]);
      const core::Moments m = Ops::project(static_cast<double>(kept), static_cast<double>(shift), t1, t2);
      part[3 * f + 0] = m.n;
      part[3 * f + 1] = m.mean;
      part[3 * f + 2] = m.m2;
    }
    __syncthreads();
  }
}

/// Pooled, in the last block, when the blocks' moments are not finite (rare):
/// the moments (n, mean, M2) of the rows of segment k that a row mask keeps
/// (each w times where it holds weights) and, with `finite_only`
/// (NonFinite::skip), whose values are all finite, written to part[3 f ..] for
/// every feature f (n = their weight, 0 when none). Sums in double, shifted as
/// PooledOps::shift with the first such row standing in for the first sample.
/// Returns their weight. Slow (one block), and rare.
template <class Est, class S>
__device__ __forceinline__ std::int64_t masked_moments(const LaunchPlan& p, int k, double* part, bool finite_only) {
  using Ops = core::PooledOps<Est>;
  __shared__ std::int64_t ok[kThreads];
  __shared__ std::int64_t first;
  __shared__ std::int64_t rows_ok;
  const DevSegment& s = p.seg[k];
  const void* x = s.x;
  const std::uint8_t xt = s.x_dtype;
  const S* loc_in = static_cast<const S*>(s.loc_in);
  const std::int64_t F = s.feat, m = s.rows;
  const std::int64_t n = s.count_in ? *s.count_in : 0;
  // A row's weight (core::row_weight), 0 where it holds a non-finite value (finite_only).
  auto row_ok = [&](std::int64_t r) -> std::int64_t {
    const std::int64_t w = core::row_weight(s.mask, s.weighted != 0, r);
    if (w == 0 || !finite_only) return w;  // (0: left out by the row mask)
    for (std::int64_t f = 0; f < F; ++f)
      if (!core::is_finite(load_as_double(x, xt, r * F + f))) return 0;
    return w;
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
  const core::Coeffs<double> shift_c = Ops::shift_coeffs(decay_of(p), n);
  for (std::int64_t f = threadIdx.x; f < F; f += kThreads) {
    const double loc = loc_in ? static_cast<double>(loc_in[f]) : 0.0;
    part[3 * f + 0] = 0.0;
    part[3 * f + 1] = 0.0;
    part[3 * f + 2] = first < m ? Ops::shift(shift_c, loc, n, load_as_double(x, xt, first * F + f)) : 0.0;
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
        Ops::reduce_weighted(a, q, load_as_double(x, xt, (r0 + t) * F + f) - shift, static_cast<double>(ok[t]));
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
    const core::Moments mo = Ops::project(static_cast<double>(total), part[3 * f + 2], part[3 * f + 0], part[3 * f + 1]);
    part[3 * f + 0] = mo.n;
    part[3 * f + 1] = mo.mean;
    part[3 * f + 2] = mo.m2;
  }
  __syncthreads();
  return total;
}

/// Segment sk's update from its batch moments (moments_of(f); `m` rows in
/// all, 0: nothing changes): loc/var in double rounded to S, and for a step
/// that normalizes the per-feature map for affine_kernel, at the new count.
/// Every thread of the block; the count is the caller's.
template <class Est, class S, class MomentsOf>
__device__ __forceinline__ void finalize_segment(const LaunchPlan& p, const DevSegment& sk, std::int64_t m,
                                                 MomentsOf&& moments_of) {
  using Ops = core::PooledOps<Est>;
  const core::Decay decay = decay_of(p);
  const std::int64_t n = sk.count_in ? *sk.count_in : 0;
  const S* loc_in = static_cast<const S*>(sk.loc_in);
  const S* var_in = static_cast<const S*>(sk.var_in);
  S* loc_out = static_cast<S*>(sk.loc_out);
  S* var_out = static_cast<S*>(sk.var_out);
  // m = 0 (every row left out): nothing changes; the map is at the count before.
  const core::Coeffs<double> uc = core::update_coeffs<Est, double>(decay, n, m > 0 ? m : 1);
  const core::Coeffs<double> nc = m > 0 ? Est::normalize_after(uc) : core::normalize_coeffs<Est, double>(decay, n);
  for (std::int64_t f = threadIdx.x; f < sk.feat; f += kThreads) {
    const core::Moments b = moments_of(f);
    const double loc = loc_in ? static_cast<double>(loc_in[f]) : 0.0;
    const double var = var_in ? static_cast<double>(var_in[f]) : 0.0;
    const core::Stored<S> st = Ops::template finalize<S>(uc, loc, var, b);
    loc_out[f] = st.loc;
    var_out[f] = st.var;
    if (p.op == op_update_and_normalize)
      store_map(sk, f,
                core::stats_map<Est, double>(core::MapKind::normalize, static_cast<double>(st.loc),
                                             static_cast<double>(st.var), nc, p.rule));
  }
}

/// Pooled statistics of all segments: partial moments per block; the last block
/// merges each feature's partials in block order (deterministic), updates
/// loc/var in double, moves the counts by the batch size and, for a step that
/// normalizes, writes the per-feature map for affine_kernel. op_moments: the
/// merged moments go to each key's message block (y), nothing else is written.
template <class Est, class S>
__global__ void __launch_bounds__(kThreads, 1) pooled_stats_kernel(const __grid_constant__ LaunchPlan p) {
  using Ops = core::PooledOps<Est>;
  __shared__ double sh1[kThreads];
  __shared__ double sh2[kThreads];
  const std::int64_t block = blockIdx.x;
  const int si = find_segment(p, block);
  const DevSegment& s = p.seg[si];
  const std::int64_t local = block - s.block_begin;
  // A key whose updates have stopped (Options::until) adds nothing: no
  // partials, no skips counted, its map at the count as it is.
  if (local < s.blocks && !core::updates_stopped(p.decay, s.count_in ? *s.count_in : 0)) {
    visit_x(s.x_dtype, [&](auto xt) { pooled_partial_block<Est, decltype(xt), S>(p, s, local, sh1, sh2); });
  }
  if (!last_block_done(p.ticket)) return;
  __shared__ std::int64_t added[kMaxSegments];  // rows each segment adds
  __shared__ int bad;
  for (int k = 0; k < p.nseg; ++k) {
    const DevSegment& sk = p.seg[k];
    const bool stopped = core::updates_stopped(p.decay, sk.count_in ? *sk.count_in : 0);
    double* part = p.partials + 3 * sk.partials;
    // Every feature's partials merged in block order, kept in block 0's slots.
    if (threadIdx.x == 0) bad = 0;
    __syncthreads();
    for (std::int64_t f = threadIdx.x; f < (stopped ? 0 : sk.feat); f += kThreads) {
      core::Moments b;
      for (std::int64_t blk = 0; blk < sk.blocks; ++blk) {
        const double* q = part + 3 * (blk * sk.feat + f);
        core::Moments mb;
        mb.n = q[0];
        mb.mean = q[1];
        mb.m2 = q[2];
        b = Ops::combine(b, mb);
      }
      part[3 * f + 0] = b.n;
      part[3 * f + 1] = b.mean;
      part[3 * f + 2] = b.m2;
      if (!core::is_finite(b.mean) || !core::is_finite(b.m2)) atomicOr(&bad, 1);
    }
    __syncthreads();
    // The rows the update takes: those a row mask keeps, which the blocks
    // counted (the merged n of feature 0; a key of no features counts them
    // here). All threads read it before masked_moments may write part.
    std::int64_t m_in = sk.rows;
    if (!stopped && sk.mask != nullptr) {
      if (sk.feat > 0) {
        m_in = static_cast<std::int64_t>(part[0]);
      } else {
        std::int64_t first = 0;
        kept_rows(sk.mask, sk.weighted != 0, 0, sk.rows, m_in, first);
      }
    }
    std::int64_t m = stopped ? 0 : m_in;
    __syncthreads();
    // NonFinite::skip with a non-finite value in the batch (rare): the moments
    // again over the rows whose values are all finite, by this block alone.
    // Row weights lower the bound of the blocks' float sums (w (x - K)^2
    // passes FLT_MAX from |x - K| ~ 4e14 at w = 2^31 - 1): weighted moments
    // that are not finite are made again in double under every rule (a real
    // NaN stays NaN unless skipped).
    if (bad != 0 && (p.skip != 0 || sk.weighted != 0)) {
      m = masked_moments<Est, S>(p, k, part, p.skip != 0);
      // (A distributed update counts them in its second half.)
      if (threadIdx.x == 0 && sk.skipped != nullptr && m < m_in && p.op != op_moments)
        add_counter(sk.skipped, m_in - m);
    }
    // A batch that would take the count past Options::until (until_strict)
    // adds nothing; a distributed update decides on all ranks' rows, below.
    if (p.op != op_moments) m = core::samples_taken(p.decay, sk.count_in ? *sk.count_in : 0, m);
    if (threadIdx.x == 0) added[k] = m;
    if (p.op == op_moments) {
      // A distributed update's first half: the moments into the key's message block.
      double* block = static_cast<double*>(sk.y);
      if (threadIdx.x == 0) block[0] = static_cast<double>(m);
      for (std::int64_t f = threadIdx.x; f < sk.feat; f += kThreads) {
        core::Moments b;
        b.mean = part[3 * f + 1];
        b.m2 = part[3 * f + 2];
        if (m == 0) b = core::Moments{};
        core::put_moments(block, sk.feat, f, b);
      }
    } else {
      finalize_segment<Est, S>(p, sk, m, [&](std::int64_t f) {
        core::Moments b;
        if (m == 0) return b;  // nothing to add (a stopped key's partials were never written)
        b.n = part[3 * f + 0];
        b.mean = part[3 * f + 1];
        b.m2 = part[3 * f + 2];
        return b;
      });
    }
    __syncthreads();
  }
  __syncthreads();  // every thread has read the counts
  if (threadIdx.x == 0 && p.op != op_moments)
    for (int k = 0; k < p.nseg; ++k) *p.seg[k].count_out = (p.seg[k].count_in ? *p.seg[k].count_in : 0) + added[k];
}

/// A distributed update's second half, one block: each key's batch moments
/// from the ranks' gathered messages, merged in rank order (core::GatheredKey:
/// the same bits on every rank), folded into loc/var; the counts move by the
/// rows of all ranks. When a rank failed, or the ranks disagree on the
/// signature or on the keys of the step, nothing changes (every rank sees the
/// same messages, so every rank decides the same); the maps are then those of
/// the statistics as they are.
template <class Est, class S>
__global__ void __launch_bounds__(kThreads, 1) gathered_stats_kernel(const __grid_constant__ LaunchPlan p) {
  __shared__ int agree;
  if (threadIdx.x == 0) {
    int ok = 1;
    for (int r = 0; r < p.ranks; ++r) {
      const double* h = p.gathered + r * p.stride;
      if (h[0] != 0.0) ok = 0;
      for (int j = 1; j < core::kExchangeHeader; ++j)
        if (core::double_bits(h[j]) != core::double_bits(p.gathered[j])) ok = 0;
    }
    agree = ok;
  }
  __syncthreads();
  for (int k = 0; k < p.nseg; ++k) {
    const DevSegment& sk = p.seg[k];
    const core::GatheredKey g{p.gathered + sk.partials, p.stride, p.ranks, sk.feat};
    // Stopped (Options::until): every rank sent no rows (the ranks share the count).
    const bool stopped = core::updates_stopped(p.decay, sk.count_in ? *sk.count_in : 0);
    const std::int64_t count = sk.count_in ? *sk.count_in : 0;
    const std::int64_t m = agree && !stopped ? core::samples_taken(p.decay, count, static_cast<std::int64_t>(g.rows())) : 0;
    // This rank's rows the update took: those its row mask keeps; the others
    // its message left out were non-finite (skips).
    std::int64_t m_in = sk.rows, first = 0;
    if (sk.mask != nullptr) kept_rows(sk.mask, sk.weighted != 0, 0, sk.rows, m_in, first);
    if (threadIdx.x == 0 && agree && !stopped && sk.skipped != nullptr) {
      const double own = g.rows_of(p.rank);
      if (own < static_cast<double>(m_in)) add_counter(sk.skipped, m_in - static_cast<std::int64_t>(own > 0.0 ? own : 0.0));
    }
    finalize_segment<Est, S>(p, sk, m, [&](std::int64_t f) { return m > 0 ? g.moments(f) : core::Moments{}; });
    __syncthreads();
    if (threadIdx.x == 0) *sk.count_out = count + m;
  }
}

/// The values of a distributed update's message that are not zero (the rest
/// was zeroed on the stream before).
__global__ void __launch_bounds__(kThreads) message_kernel(const __grid_constant__ MessagePlan p) {
  for (int i = static_cast<int>(threadIdx.x); i < p.n; i += kThreads) p.base[p.index[i]] = p.value[i];
}

}  // namespace vecnorm::kernels
