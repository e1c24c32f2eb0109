// src/cuda/cuda_backend.cu -- host side of the CUDA backend: splits a validated
// Plan into launches over the segment table, owns the device scratch, checks
// every CUDA call.
//
// A step makes no host synchronization: the segment table travels as the kernel
// parameter, counts and every scalar live on the device, the scratch is
// allocated once (the first call of a given size) and reused. Launches per call:
//   per-element step / update / normalize   1  (elementwise_kernel)
//   pooled step                             2  (pooled_stats_kernel + affine_kernel)
//   pooled update                           1
//   pooled normalize, denormalize           2  (params_kernel + affine_kernel)
//   affine apply / invert                   1
// per group of kMaxSegments keys.
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

template <class... Params>
void launch(void (*kernel)(Params...), std::int64_t blocks, cudaStream_t stream, const k::LaunchPlan& plan) {
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

/// Device scratch layout: [ticket (8 bytes), scan result (8 bytes), unused to 256 bytes] [partials: 3 doubles per (block, feature)]
/// [params: 2 doubles per feature of every pooled segment].
struct Scratch {
  std::uint32_t* ticket;
  double* partials;
  double* params;
};

Scratch scratch(Workspace& ws, std::size_t partial_doubles, std::size_t param_doubles, cudaStream_t stream) {
  constexpr std::size_t kHead = 256;
  const std::size_t need = kHead + (partial_doubles + param_doubles) * sizeof(double);
  if (ws.device_bytes < need) {
    const std::size_t bytes = std::max(need, ws.device_bytes * 2);
    if (ws.device != nullptr) release(ws.device);
    ws.device = nullptr;
    ws.device_bytes = 0;
    ws.device = alloc(bytes);
    ws.device_bytes = bytes;
    ws.release = &release;
    VECNORM_CUDA_CHECK(cudaMemsetAsync(ws.device, 0, kHead, stream));  // the ticket starts at 0
  }
  char* base = static_cast<char*>(ws.device);
  return {reinterpret_cast<std::uint32_t*>(base), reinterpret_cast<double*>(base + kHead),
          reinterpret_cast<double*>(base + kHead) + partial_doubles};
}

k::LaunchPlan base_plan(const Plan& p) {
  k::LaunchPlan lp{};
  lp.op = static_cast<std::uint8_t>(p.op == Op::update_and_normalize ? k::op_update_and_normalize
                                    : p.op == Op::update             ? k::op_update
                                                                     : k::op_normalize);
  lp.log_decay = p.decay.log_decay;
  lp.cumulative = p.decay.cumulative ? 1 : 0;
  lp.eps = p.eps;
  lp.skip = p.nonfinite == NonFinite::skip ? 1 : 0;
  return lp;
}

k::DevSegment dev_segment(const Segment& s, DType stats) {
  k::DevSegment d{};
  d.x = s.x;
  d.y = s.y;
  d.loc_in = s.loc_in;
  d.var_in = s.var_in;
  d.loc_out = s.loc_out;
  d.var_out = s.var_out;
  d.count_in = s.count_in;
  d.count_out = s.count_out;
  d.skips = s.skips;
  d.skipped = s.skipped;
  d.rows = s.rows;
  d.feat = s.feat;
  d.x_dtype = xtype(s.x_dtype);
  d.wide = compute_dtype(s.x_dtype, stats) == DType::float64 ? 1 : 0;
  return d;
}

/// Launches for one group of at most kMaxSegments keys.
template <class S, bool Stable>
void run_group(const Plan& p, std::span<const Segment> segs, Workspace& ws, cudaStream_t stream) {
  k::LaunchPlan lp = base_plan(p);

  if (!p.pooled && !p.invert) {
    // Per-element statistics: one launch, every key's elements tiled by blocks.
    std::int64_t blocks = 0;
    for (std::size_t i = 0; i < segs.size(); ++i) {
      k::DevSegment d = dev_segment(segs[i], p.stats_dtype);
      d.block_begin = blocks;
      d.blocks = div_up(d.rows * d.feat, kElemsPerBlock);
      blocks += d.blocks;
      lp.seg[i] = d;
    }
    lp.nseg = static_cast<int>(segs.size());
    const bool per_key = p.counts == CountLayout::per_key;
    if (per_key && p.op != Op::normalize) {
      lp.ticket = scratch(ws, 0, 0, stream).ticket;
      blocks = std::max<std::int64_t>(blocks, 1);  // an empty step still moves the counts
    }
    if (blocks == 0) return;
    auto pick = [&](auto op_tag) {
      constexpr int kOp = decltype(op_tag)::value;
      if (per_key)
        launch(&k::elementwise_kernel<S, Stable, true, kOp>, blocks, stream, lp);
      else
        launch(&k::elementwise_kernel<S, Stable, false, kOp>, blocks, stream, lp);
    };
    switch (p.op) {
      case Op::update_and_normalize: pick(std::integral_constant<int, k::op_update_and_normalize>{}); break;
      case Op::update: pick(std::integral_constant<int, k::op_update>{}); break;
      case Op::normalize: pick(std::integral_constant<int, k::op_normalize>{}); break;
    }
    return;
  }

  // Pooled statistics, or denormalize: statistics kernel (pooled update) or
  // parameters kernel (normalize / denormalize), then the affine map.
  const bool stats_pass = p.pooled && p.op != Op::normalize;
  std::size_t partials = 0, params = 0;
  std::int64_t blocks = 0;
  int used = 0;
  for (const Segment& s : segs) {
    if (p.pooled && s.rows == 0) continue;  // an empty batch changes nothing and writes nothing
    k::DevSegment d = dev_segment(s, p.stats_dtype);
    d.broadcast = p.pooled ? 1 : 0;
    d.block_begin = blocks;
    d.blocks = stats_pass ? div_up(s.rows, k::pooled_rows_per_block(s.feat)) : 0;
    d.partials = static_cast<std::int64_t>(partials) / 3;
    partials += static_cast<std::size_t>(d.blocks * s.feat) * 3;
    blocks += d.blocks;
    const std::size_t n_params = static_cast<std::size_t>(p.pooled ? s.feat : s.rows * s.feat);
    d.mu = reinterpret_cast<void*>(params);  // an offset until the scratch exists
    d.p = reinterpret_cast<void*>(params + n_params);
    params += 2 * n_params;
    lp.seg[used++] = d;
  }
  lp.nseg = used;
  if (used == 0) return;
  const Scratch sc = scratch(ws, partials, params, stream);
  lp.ticket = sc.ticket;
  lp.partials = sc.partials;
  for (int i = 0; i < used; ++i) {
    k::DevSegment& d = lp.seg[i];
    d.mu = sc.params + reinterpret_cast<std::size_t>(d.mu);
    d.p = sc.params + reinterpret_cast<std::size_t>(d.p);
  }
  if (stats_pass) {
    launch(&k::pooled_stats_kernel<S, Stable>, blocks, stream, lp);
  } else {
    lp.invert = p.invert ? 1 : 0;
    launch(&k::params_kernel<S, Stable>, used, stream, lp);
  }
  if (p.op == Op::update) return;
  std::int64_t ablocks = 0;
  for (int i = 0; i < used; ++i) {
    k::DevSegment& d = lp.seg[i];
    d.block_begin = ablocks;
    d.blocks = div_up(d.rows * d.feat, kElemsPerBlock);
    ablocks += d.blocks;
  }
  if (ablocks > 0) launch(&k::affine_kernel, ablocks, stream, lp);
}

template <class S, bool Stable>
void run_typed(const Plan& p, Workspace& ws, cudaStream_t stream) {
  const std::size_t nseg = p.segments.size();
  if (nseg == 0) return;
  for (std::size_t first = 0; first < nseg; first += k::kMaxSegments)
    run_group<S, Stable>(p, p.segments.subspan(first, std::min<std::size_t>(k::kMaxSegments, nseg - first)), ws, stream);
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

void run(const Plan& plan, Workspace& ws, Stream stream) {
  const cudaStream_t s = stream_of(stream);
  const bool stable = plan.estimator == Estimator::stable;
  if (plan.stats_dtype == DType::float64) {
    if (stable) run_typed<double, true>(plan, ws, s);
    else run_typed<double, false>(plan, ws, s);
  } else {
    if (stable) run_typed<float, true>(plan, ws, s);
    else run_typed<float, false>(plan, ws, s);
  }
}

std::int64_t first_nonfinite(const void* x, DType d, std::int64_t n, Stream stream, Workspace& ws) {
  if (n <= 0 || !is_floating(d)) return -1;
  const cudaStream_t st = stream_of(stream);
  const Scratch sc = scratch(ws, 0, 0, st);
  k::LaunchPlan lp{};
  lp.found = reinterpret_cast<unsigned long long*>(reinterpret_cast<char*>(sc.ticket) + 8);
  VECNORM_CUDA_CHECK(cudaMemsetAsync(lp.found, 0xFF, sizeof(unsigned long long), st));
  lp.nseg = 1;
  lp.seg[0].x = x;
  lp.seg[0].rows = 1;
  lp.seg[0].feat = n;
  lp.seg[0].x_dtype = xtype(d);
  launch(&k::nonfinite_scan_kernel, div_up(n, kElemsPerBlock), st, lp);
  unsigned long long found = 0;
  copy(&found, lp.found, sizeof found, stream, true);
  return found == ~0ull ? -1 : static_cast<std::int64_t>(found);
}

void run(const AffinePlan& plan, Stream stream) {
  const std::size_t nseg = plan.segments.size();
  for (std::size_t first = 0; first < nseg; first += k::kMaxSegments) {
    const std::size_t last = std::min(nseg, first + k::kMaxSegments);
    k::LaunchPlan lp{};
    lp.invert = plan.direction == AffineDirection::invert ? 1 : 0;
    std::int64_t blocks = 0;
    int used = 0;
    for (std::size_t i = first; i < last; ++i) {
      const AffineSegment& a = plan.segments[i];
      k::DevSegment d{};
      d.x = a.x;
      d.y = a.y;
      d.rows = a.rows;
      d.feat = a.feat;
      d.x_dtype = xtype(a.x_dtype);
      d.wide = a.param_dtype == DType::float64 ? 1 : 0;
      d.broadcast = a.broadcast ? 1 : 0;
      d.mu = const_cast<void*>(a.mu);
      d.p = const_cast<void*>(a.p);
      d.block_begin = blocks;
      d.blocks = div_up(a.rows * a.feat, kElemsPerBlock);
      blocks += d.blocks;
      lp.seg[used++] = d;
    }
    lp.nseg = used;
    if (blocks > 0) launch(&k::affine_kernel, blocks, stream_of(stream), lp);
  }
}

}  // namespace detail::cuda
}  // namespace vecnorm
