// src/cuda/cuda_backend.cu -- host side of the CUDA backend: splits a validated
// Plan into launches over the segment table, owns the device scratch, checks
// every CUDA call.
//
// A step makes no host synchronization: the segment table travels as the kernel
// parameter, counts and every scalar live on the device, the scratch comes
// from the caller's workspace (src/workspace.hpp: reserved up front, or grown
// through its allocator on first use) and is reused. Launches per call:
//   per-element step / update / normalize   1  (elementwise_kernel)
//   pooled step                             2  (pooled_stats_kernel + affine_kernel)
//   pooled update                           1
//   distributed pooled step (src/frontend/exchange.cpp): pooled_stats_kernel
//     (the moments), the caller's all-gather, gathered_stats_kernel, affine_kernel
//   pooled normalize, denormalize           2  (params_kernel + affine_kernel)
//   fixed maps (AffineNormalizer)           1  (affine_kernel)
// per group: a run of consecutive keys of one statistics dtype (a kernel is
// compiled for one), at most kMaxSegments keys (for_each_group).
//
// The same file is compiled by the host compiler for the tests, with
// VECNORM_EMULATED: the kernels then run under the SIMT emulator (tests/simt)
// and the runtime calls go to tests/emulated/cuda_runtime_emu.hpp.
#if defined(VECNORM_EMULATED)
#include "simt.hpp"  // first: the CUDA spellings for the kernel source
#include "cuda_runtime_emu.hpp"
#else
#include <cuda_runtime.h>
#endif

#include <algorithm>
#include <cstdint>
#include <string>

#include "../../kernels/device_plan.hpp"
#include "../../kernels/vecnorm_kernels.cuh"
#include "../backends.hpp"
#include "../errors.hpp"
#include "../workspace.hpp"
#include "vecnorm/version.hpp"

/// The one checking macro of CUDA runtime calls: the message names the call.
#define VECNORM_CUDA_CHECK(call)                                                                   \
  do {                                                                                             \
    const cudaError_t vecnorm_err_ = (call);                                                       \
    if (vecnorm_err_ != cudaSuccess) ::vecnorm::detail::cuda::fail_call(#call, vecnorm_err_);       \
  } while (0)

namespace vecnorm {

bool cuda_built() noexcept { return true; }
bool cuda_available() noexcept { return detail::cuda::available(); }

namespace detail::cuda {

[[noreturn]] void fail_call(const char* call, cudaError_t err) {
  (void)cudaGetLastError();  // clear a non-sticky error so later calls are not blamed
  fail(ErrorCode::cuda_error, std::string(call) + " failed: " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

namespace {
cudaStream_t stream_of(Stream s) { return static_cast<cudaStream_t>(s.cuda_stream); }

namespace k = ::vecnorm::kernels;

template <class LP, class... Params>
void launch(void (*kernel)(Params...), std::int64_t blocks, cudaStream_t stream, const LP& plan) {
#if defined(VECNORM_EMULATED)
  (void)stream;
  ++vecnorm_emu::counters.launches;
  simt::launch(dim3(static_cast<unsigned>(blocks)), dim3(k::kThreads), 0, kernel, plan);
#else
  kernel<<<static_cast<unsigned>(blocks), k::kThreads, 0, stream>>>(plan);
#endif
  VECNORM_CUDA_CHECK(cudaGetLastError());
}

std::int64_t div_up(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }
constexpr std::int64_t kElemsPerBlock = static_cast<std::int64_t>(k::kThreads) * k::kItems;

std::uint8_t xtype(DType d) { return static_cast<std::uint8_t>(d); }
bool wide(DType d) { return d == DType::float64; }

/// Device scratch layout: [head: ticket (4 bytes), scan result (at 8), padding
/// to kScratchHead] [partials: 3 doubles per (block, feature) of every pooled
/// segment] [maps: 2 values per map element of every segment, in doubles].
struct DeviceScratch {
  std::uint32_t* ticket;
  unsigned long long* found;
  double* partials;
  double* maps;
};

/// What a group of segments needs in the scratch, in doubles after the head.
struct Need {
  std::size_t partials = 0, maps = 0;
  std::size_t bytes() const { return k::kScratchHead + (partials + maps) * sizeof(double); }
};

/// The device scratch for `need` (allocated through the workspace when it
/// holds less; a fresh block gets its head zeroed: the ticket starts at 0).
DeviceScratch scratch(detail::Scratch& ws, const Need& need, Stream stream) {
  char* base = static_cast<char*>(ws.device(need.bytes(), Device::cuda(current_device()), stream));
  if (ws.take_fresh()) VECNORM_CUDA_CHECK(cudaMemsetAsync(base, 0, k::kScratchHead, stream_of(stream)));
  double* data = reinterpret_cast<double*>(base + k::kScratchHead);
  return {reinterpret_cast<std::uint32_t*>(base), reinterpret_cast<unsigned long long*>(base + 8), data,
          data + need.partials};
}

k::OpCode op_code(Work w) {
  switch (w) {
    case Work::update_and_normalize: return k::op_update_and_normalize;
    case Work::update: return k::op_update;
    case Work::moments: return k::op_moments;
    default: return k::op_normalize;
  }
}

k::LaunchPlan base_plan(const Plan& p) {
  k::LaunchPlan lp{};
  lp.op = static_cast<std::uint8_t>(op_code(p.work));
  lp.invert = inverts(p.work) ? 1 : 0;
  lp.decay = p.decay;
  lp.rule = p.rule;
  lp.skip = p.nonfinite == NonFinite::skip ? 1 : 0;
  return lp;
}

k::DevSegment dev_segment(const Plan& p, const Segment& s) {
  k::DevSegment d{};
  d.x = s.x;
  d.y = s.y;
  d.loc_in = s.loc_in;
  d.var_in = s.var_in;
  d.loc_out = s.loc_out;
  d.var_out = s.var_out;
  d.count_in = s.count_in;
  d.mask = s.mask;
  d.weighted = s.weighted ? 1 : 0;
  d.count_out = s.count_out;
  d.skips = s.skips;
  d.skipped = s.skipped;
  d.rows = s.rows;
  d.feat = s.feat;
  d.x_dtype = xtype(s.x_dtype);
  d.wide = wide(uses_maps(p.work) ? s.map_dtype : compute_dtype(s.x_dtype, s.stats_dtype)) ? 1 : 0;
  d.broadcast = p.pooled ? 1 : 0;
  if (uses_maps(p.work)) {
    d.mu = const_cast<void*>(s.mu);
    d.p = const_cast<void*>(s.p);
  }
  return d;
}

/// The kernels that run a group of segments (one launch plan).
enum class Route : std::uint8_t { elementwise, stats, params, maps, gathered };

Route route_of(const Plan& p) {
  if (uses_maps(p.work)) return Route::maps;
  if (p.ranks > 0) return Route::gathered;
  if (p.work == Work::moments) return Route::stats;
  if (p.work == Work::denormalize) return Route::params;
  if (!p.pooled) return Route::elementwise;
  return updates(p.work) ? Route::stats : Route::params;
}

/// The segments of a group that take part (a pooled empty batch changes
/// nothing and writes nothing), and what they need in the scratch.
Need need_of(const Plan& p, std::span<const Segment> segs) {
  Need need;
  const Route route = route_of(p);
  if (route == Route::elementwise || route == Route::maps) return need;
  for (const Segment& s : segs) {
    // A gathered update changes a key this rank has no rows of.
    if (p.pooled && s.rows == 0 && route != Route::gathered) continue;
    if (route == Route::stats)
      need.partials += static_cast<std::size_t>(div_up(s.rows, k::pooled_rows_per_block(s.feat)) * s.feat) * 3;
    need.maps += 2 * static_cast<std::size_t>(p.pooled ? s.feat : s.rows * s.feat);
  }
  return need;
}

/// Launches for one group of at most kMaxSegments keys.
template <class Est, class S>
void run_group(const Plan& p, std::span<const Segment> segs, detail::Scratch& ws, cudaStream_t stream) {
  k::LaunchPlan lp = base_plan(p);
  const Route route = route_of(p);

  if (route == Route::elementwise || route == Route::maps) {
    // One launch, every key's elements tiled by blocks.
    std::int64_t blocks = 0;
    for (std::size_t i = 0; i < segs.size(); ++i) {
      k::DevSegment d = dev_segment(p, segs[i]);
      d.block_begin = blocks;
      d.blocks = div_up(d.rows * d.feat, kElemsPerBlock);
      blocks += d.blocks;
      lp.seg[i] = d;
    }
    lp.nseg = static_cast<int>(segs.size());
    if (route == Route::maps) {
      if (blocks > 0) launch(&k::affine_kernel, blocks, stream, lp);
      return;
    }
    const bool per_key = p.counts == CountLayout::per_key;
    if (per_key && updates(p.work)) {
      lp.ticket = scratch(ws, Need{}, Stream{stream}).ticket;
      blocks = std::max<std::int64_t>(blocks, 1);  // an empty step still moves the counts
    }
    if (blocks == 0) return;
    auto pick = [&](auto op_tag) {
      constexpr int kOp = decltype(op_tag)::value;
      if (per_key)
        launch(&k::elementwise_kernel<Est, S, true, kOp>, blocks, stream, lp);
      else
        launch(&k::elementwise_kernel<Est, S, false, kOp>, blocks, stream, lp);
    };
    switch (p.work) {
      case Work::update_and_normalize: pick(std::integral_constant<int, k::op_update_and_normalize>{}); break;
      case Work::update: pick(std::integral_constant<int, k::op_update>{}); break;
      default: pick(std::integral_constant<int, k::op_normalize>{}); break;
    }
    return;
  }

  // Pooled statistics, or maps of the statistics: statistics kernel (pooled
  // update) or params kernel (normalize / denormalize), then the affine map.
  const Need need = need_of(p, segs);
  const DeviceScratch sc = scratch(ws, need, Stream{stream});
  lp.ticket = sc.ticket;
  lp.partials = sc.partials;
  std::size_t partials = 0, maps = 0;
  std::int64_t blocks = 0;
  int used = 0;
  for (const Segment& s : segs) {
    if (p.pooled && s.rows == 0 && route != Route::gathered) continue;
    k::DevSegment d = dev_segment(p, s);
    d.block_begin = blocks;
    d.blocks = route == Route::stats ? div_up(s.rows, k::pooled_rows_per_block(s.feat)) : 0;
    d.partials = route == Route::gathered ? static_cast<const double*>(s.mu) - p.exchange
                                          : static_cast<std::int64_t>(partials) / 3;
    partials += static_cast<std::size_t>(d.blocks * s.feat) * 3;
    blocks += d.blocks;
    const std::size_t n_maps = static_cast<std::size_t>(p.pooled ? s.feat : s.rows * s.feat);
    d.mu = sc.maps + maps;
    d.p = sc.maps + maps + n_maps;
    maps += 2 * n_maps;
    lp.seg[used++] = d;
  }
  lp.nseg = used;
  if (used == 0) return;
  if (route == Route::gathered) {
    lp.gathered = p.exchange;
    lp.stride = p.stride;
    lp.ranks = p.ranks;
    lp.rank = p.rank;
    launch(&k::gathered_stats_kernel<Est, S>, 1, stream, lp);
  } else if (route == Route::stats) {
    launch(&k::pooled_stats_kernel<Est, S>, blocks, stream, lp);
  } else
    launch(&k::params_kernel<Est, S>, used, stream, lp);
  if (!writes_output(p.work)) return;
  std::int64_t ablocks = 0;
  for (int i = 0; i < used; ++i) {
    k::DevSegment& d = lp.seg[i];
    d.block_begin = ablocks;
    d.blocks = div_up(d.rows * d.feat, kElemsPerBlock);
    ablocks += d.blocks;
  }
  if (ablocks > 0) launch(&k::affine_kernel, ablocks, stream, lp);
}

/// The groups of a plan: the keys of one statistics dtype (a launch is
/// compiled for one), at most kMaxSegments keys each.
template <class F>
void for_each_group(const Plan& p, F&& f) {
  // One statistics dtype at a time (the segments carry their own pointers, so
  // a group may gather them from anywhere in the call): keys given as
  // float32, float64, float32 are two launches, not three. Within a dtype,
  // call order; the keys are independent, so the order changes no bits.
  bool has[2] = {false, false};
  for (const Segment& s : p.segments) has[s.stats_dtype == DType::float64 ? 1 : 0] = true;
  if (!(has[0] && has[1])) {  // the usual call: consecutive subspans, nothing copied
    const std::size_t nseg = p.segments.size(), kmax = static_cast<std::size_t>(k::kMaxSegments);
    for (std::size_t first = 0; first < nseg; first += kmax)
      f(p.segments[first].stats_dtype, p.segments.subspan(first, std::min(kmax, nseg - first)));
    return;
  }
  Segment group[k::kMaxSegments];
  for (const DType sd : {DType::float32, DType::float64}) {
    std::size_t n = 0;
    for (const Segment& s : p.segments) {
      if (s.stats_dtype != sd) continue;
      group[n++] = s;
      if (n == static_cast<std::size_t>(k::kMaxSegments)) {
        f(sd, std::span<const Segment>(group, n));
        n = 0;
      }
    }
    if (n > 0) f(sd, std::span<const Segment>(group, n));
  }
}

}  // namespace

bool available() noexcept {
  static const bool ok = [] {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    return n > 0;
  }();
  return ok;
}

int current_device() {
  int d = 0;
  VECNORM_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

void* alloc(std::size_t bytes) {
  void* p = nullptr;
  VECNORM_CUDA_CHECK(cudaMalloc(&p, std::max<std::size_t>(bytes, 1)));
  return p;
}

void release(void* p) noexcept {
  if (p != nullptr) (void)cudaFree(p);
}

void copy(void* dst, const void* src, std::size_t bytes, Stream stream, bool wait) {
  if (bytes == 0) return;
  VECNORM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_of(stream)));
  if (wait) VECNORM_CUDA_CHECK(cudaStreamSynchronize(stream_of(stream)));
}

void zero(void* dst, std::size_t bytes, Stream stream) {
  if (bytes == 0) return;
  VECNORM_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream_of(stream)));
}

void synchronize(Stream stream) { VECNORM_CUDA_CHECK(cudaStreamSynchronize(stream_of(stream))); }

void put_message(double* dst, const double* msg, std::size_t n, Stream stream) {
  if (n == 0) return;
  const cudaStream_t st = stream_of(stream);
  VECNORM_CUDA_CHECK(cudaMemsetAsync(dst, 0, n * sizeof(double), st));
  k::MessagePlan mp{};
  mp.base = dst;
  for (std::size_t i = 0; i < n; ++i) {
    if (core::double_bits(msg[i]) == 0) continue;  // +0.0: zeroed already
    mp.index[mp.n] = static_cast<std::int64_t>(i);
    mp.value[mp.n] = msg[i];
    if (++mp.n == k::kMessageMax) {
      launch(&k::message_kernel, 1, st, mp);
      mp.n = 0;
    }
  }
  if (mp.n > 0) launch(&k::message_kernel, 1, st, mp);
}

void run(const Plan& plan, detail::Scratch& ws, Stream stream) {
  const cudaStream_t st = stream_of(stream);
  core::visit(plan.estimator, [&](auto est) {
    using Est = decltype(est);
    for_each_group(plan, [&](DType stats_dtype, std::span<const Segment> group) {
      if (stats_dtype == DType::float64)
        run_group<Est, double>(plan, group, ws, st);
      else
        run_group<Est, float>(plan, group, ws, st);
    });
  });
}

std::size_t scratch_bytes(const Plan& plan) {
  // All segments as one group: a bound on every group of this plan and of any
  // plan over a subset of its segments (what a reservation needs).
  return need_of(plan, plan.segments).bytes();
}

std::int64_t first_nonfinite(const void* x, DType d, std::int64_t rows, std::int64_t feat, const std::uint8_t* mask,
                             Stream stream, detail::Scratch& ws) {
  const std::int64_t n = rows * feat;
  if (n <= 0 || !is_floating(d)) return -1;
  const cudaStream_t st = stream_of(stream);
  const DeviceScratch sc = scratch(ws, Need{}, stream);
  k::LaunchPlan lp{};
  lp.found = sc.found;
  VECNORM_CUDA_CHECK(cudaMemsetAsync(lp.found, 0xFF, sizeof(unsigned long long), st));
  lp.nseg = 1;
  lp.seg[0].x = x;
  lp.seg[0].rows = rows;
  lp.seg[0].feat = feat;
  lp.seg[0].mask = mask;
  lp.seg[0].x_dtype = xtype(d);
  launch(&k::nonfinite_scan_kernel, div_up(n, kElemsPerBlock), st, lp);
  unsigned long long found = 0;
  copy(&found, lp.found, sizeof found, stream, true);
  return found == ~0ull ? -1 : static_cast<std::int64_t>(found);
}

void returns(const ReturnPass& pass, Stream stream) {
  const std::int64_t n = pass.rows * pass.feat;
  if (n <= 0) return;
  const k::ReturnPlan rp{pass.state, pass.entered, pass.reward, pass.done, pass.mask, pass.rows, pass.feat, pass.gamma,
                         pass.reset, static_cast<std::uint8_t>(wide(pass.dtype) ? 1 : 0),
                         static_cast<std::uint8_t>(pass.kept ? 1 : 0), static_cast<std::uint8_t>(pass.hold ? 1 : 0)};
  launch(&k::returns_kernel, div_up(n, kElemsPerBlock), stream_of(stream), rp);
}

}  // namespace detail::cuda
}  // namespace vecnorm
