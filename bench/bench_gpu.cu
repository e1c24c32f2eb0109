// bench/bench_gpu.cu -- GPU benchmarks of vecnorm (issue 5): the shapes of
// bench/cases.hpp on a CUDA device, timed with CUDA events around each
// iteration, with the L2 cache flushed before each one (outside the timing).
//   copy/...     the limit: a device-to-device copy of the step's input bytes;
//   vecnorm/...  one VecNorm::step on the stream (one launch per-element, two pooled);
//   graph/...    the same step captured once in a CUDA graph and replayed.
// Counters: bytes (the step's floor traffic, bench/cases.hpp), the fraction of
// the device's measured copy bandwidth (a 1 GiB device-to-device copy at start,
// bytes read + written) and of its nominal peak those bytes reach, and host_us:
// the host's time to submit one iteration (the launch overhead a step costs the
// caller; graph/: one cudaGraphLaunch).
//
// Without a usable device it prints one line and exits 0: nothing measured.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <cuda_runtime.h>
#include <benchmark/benchmark.h>

#include "cases.hpp"

namespace vb = vecnorm::bench;
using vecnorm::DType;
using vecnorm::Estimator;

namespace {

#define BENCH_CUDA(call)                                                                           \
  do {                                                                                             \
    const cudaError_t err_ = (call);                                                               \
    if (err_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "vecnorm_bench_gpu: %s failed: %s\n", #call, cudaGetErrorString(err_)); \
      std::exit(1);                                                                                \
    }                                                                                              \
  } while (0)

struct Device {
  double peak_bytes_per_s = 0;
  double copy_bytes_per_s = 0;  ///< measured: a large device-to-device copy, read + write
  std::size_t l2_bytes = 0;
  std::string name;
};
Device g_device;

/// Device memory that frees itself.
struct DevMem {
  void* p = nullptr;
  explicit DevMem(std::size_t bytes) { BENCH_CUDA(cudaMalloc(&p, bytes == 0 ? 1 : bytes)); }
  ~DevMem() { cudaFree(p); }
  DevMem(const DevMem&) = delete;
  DevMem& operator=(const DevMem&) = delete;
};

/// Evicts the L2 cache: writes a buffer twice its size.
struct L2Flush {
  DevMem buf;
  std::size_t bytes;
  L2Flush() : buf(2 * std::max<std::size_t>(g_device.l2_bytes, 1 << 20)), bytes(2 * std::max<std::size_t>(g_device.l2_bytes, 1 << 20)) {}
  void run(cudaStream_t s) { BENCH_CUDA(cudaMemsetAsync(buf.p, 0, bytes, s)); }
};

/// One case's device data: observation [B, F] and reward [B], filled with
/// values of a simulator's range, and outputs of the same dtype.
struct Data {
  DType dtype;
  std::size_t obs_bytes, rew_bytes;
  DevMem obs, rew, yobs, yrew;
  Data(DType d, const vb::Shape2& s)
      : dtype(d),
        obs_bytes(static_cast<std::size_t>(s.batch * s.feat) * vecnorm::dtype_size(d)),
        rew_bytes(static_cast<std::size_t>(s.batch) * vecnorm::dtype_size(d)),
        obs(obs_bytes), rew(rew_bytes), yobs(obs_bytes), yrew(rew_bytes) {
    std::vector<unsigned char> host(obs_bytes);
    for (std::size_t i = 0; i < host.size(); ++i) host[i] = static_cast<unsigned char>((i * 2654435761u) >> 24);
    // Small finite values: bytes of moderate exponent (0x3f/0x40 high bytes).
    for (std::size_t i = vecnorm::dtype_size(d) - 1; i < host.size(); i += vecnorm::dtype_size(d))
      host[i] = (i / vecnorm::dtype_size(d)) % 2 ? 0x3f : 0x40;
    BENCH_CUDA(cudaMemcpy(obs.p, host.data(), obs_bytes, cudaMemcpyHostToDevice));
    BENCH_CUDA(cudaMemcpy(rew.p, host.data(), rew_bytes, cudaMemcpyHostToDevice));
  }
};

/// Times `body` per iteration with events, after an L2 flush.
template <class F>
void timed_loop(benchmark::State& st, cudaStream_t stream, F&& body) {
  L2Flush flush;
  cudaEvent_t start, stop;
  BENCH_CUDA(cudaEventCreate(&start));
  BENCH_CUDA(cudaEventCreate(&stop));
  body();  // warm up
  BENCH_CUDA(cudaStreamSynchronize(stream));
  double host_s = 0;
  for (auto _ : st) {
    flush.run(stream);
    BENCH_CUDA(cudaEventRecord(start, stream));
    const auto t0 = std::chrono::steady_clock::now();
    body();
    host_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    BENCH_CUDA(cudaEventRecord(stop, stream));
    BENCH_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, start, stop));
    st.SetIterationTime(static_cast<double>(ms) * 1e-3);
  }
  st.counters["host_us"] = benchmark::Counter(host_s * 1e6 / static_cast<double>(st.iterations()));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}

void set_counters(benchmark::State& st, double bytes) {
  st.counters["bytes"] = bytes;
  st.counters["bytes_per_second"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["peak_fraction"] =
      benchmark::Counter(bytes / g_device.peak_bytes_per_s, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["copy_fraction"] =
      benchmark::Counter(bytes / g_device.copy_bytes_per_s, benchmark::Counter::kIsIterationInvariantRate);
}

void bm_copy(benchmark::State& st, DType d, vb::Shape2 s) {
  Data data(d, s);
  cudaStream_t stream;
  BENCH_CUDA(cudaStreamCreate(&stream));
  timed_loop(st, stream, [&] {
    BENCH_CUDA(cudaMemcpyAsync(data.yobs.p, data.obs.p, data.obs_bytes, cudaMemcpyDeviceToDevice, stream));
    BENCH_CUDA(cudaMemcpyAsync(data.yrew.p, data.rew.p, data.rew_bytes, cudaMemcpyDeviceToDevice, stream));
  });
  set_counters(st, vb::copy_bytes(d, s));
  cudaStreamDestroy(stream);
}

void bm_vecnorm(benchmark::State& st, bool pooled, Estimator e, DType d, vb::Shape2 s, bool graph) {
  Data data(d, s);
  cudaStream_t stream;
  BENCH_CUDA(cudaStreamCreate(&stream));
  vecnorm::Options o;
  o.reduce_batch_dims = pooled;
  o.estimator = e;
  o.backend = vecnorm::Backend::cuda;
  vecnorm::KeyTable table;
  table.batch_shape = vecnorm::Shape{s.batch};
  table.keys = {{"observation", vecnorm::Shape{s.feat}, d}, {"reward", vecnorm::Shape{}, d}};
  vecnorm::VecNorm vn(o, table);
  const vecnorm::Device dev = vecnorm::Device::cuda(0);
  const vecnorm::Shape xs{s.batch, s.feat}, rs{s.batch};
  const vecnorm::KeyData batch[2] = {
      {"observation", vecnorm::ConstTensorView{data.obs.p, d, xs, dev}, vecnorm::TensorView{data.yobs.p, d, xs, dev}},
      {"reward", vecnorm::ConstTensorView{data.rew.p, d, rs, dev}, vecnorm::TensorView{data.yrew.p, d, rs, dev}}};
  const vecnorm::Stream vs{stream};
  for (int i = 0; i < 3; ++i) vn.step(batch, vs);  // workspace grown, statistics non-zero
  BENCH_CUDA(cudaStreamSynchronize(stream));
  if (!graph) {
    timed_loop(st, stream, [&] { vn.step(batch, vs); });
  } else {
    cudaGraph_t g;
    cudaGraphExec_t exec;
    BENCH_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    vn.step(batch, vs);
    BENCH_CUDA(cudaStreamEndCapture(stream, &g));
    BENCH_CUDA(cudaGraphInstantiate(&exec, g, 0));
    timed_loop(st, stream, [&] { BENCH_CUDA(cudaGraphLaunch(exec, stream)); });
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(g);
  }
  set_counters(st, vb::floor_bytes(pooled, d, s));
  cudaStreamDestroy(stream);
}

bool find_device() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) return false;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return false;
  int mem_khz = 0, bus_bits = 0;
  cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, 0);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0);
  g_device.name = prop.name;
  g_device.l2_bytes = static_cast<std::size_t>(prop.l2CacheSize);
  g_device.peak_bytes_per_s = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0);  // double data rate
  return g_device.peak_bytes_per_s > 0;
}

/// The device's copy bandwidth: the best of 5 device-to-device copies of 1 GiB
/// (bytes read + written per second), timed with events.
double measure_copy_bandwidth() {
  const std::size_t bytes = std::size_t{1} << 30;
  DevMem a(bytes), b(bytes);
  BENCH_CUDA(cudaMemset(a.p, 1, bytes));
  cudaEvent_t start, stop;
  BENCH_CUDA(cudaEventCreate(&start));
  BENCH_CUDA(cudaEventCreate(&stop));
  float best = 0;
  for (int i = 0; i < 6; ++i) {
    BENCH_CUDA(cudaEventRecord(start));
    BENCH_CUDA(cudaMemcpy(b.p, a.p, bytes, cudaMemcpyDeviceToDevice));
    BENCH_CUDA(cudaEventRecord(stop));
    BENCH_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, start, stop));
    if (i > 0 && (best == 0 || ms < best)) best = ms;  // the first one warms up
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return 2.0 * static_cast<double>(bytes) / (static_cast<double>(best) * 1e-3);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (!find_device()) {
    std::printf("vecnorm_bench_gpu: no usable CUDA device: GPU benchmarks not measured\n");
    return 0;
  }
  g_device.copy_bytes_per_s = measure_copy_bandwidth();
  for (const vb::Shape2& s : vb::shapes())
    for (DType d : {DType::float32, DType::bfloat16})
      for (bool pooled : {false, true})
        for (Estimator e : {Estimator::torchrl, Estimator::stable}) {
          const std::string name = vb::case_name(pooled, e, d, s);
          benchmark::RegisterBenchmark(("copy/" + name).c_str(), bm_copy, d, s)->UseManualTime();
          benchmark::RegisterBenchmark(("vecnorm/" + name).c_str(), bm_vecnorm, pooled, e, d, s, false)->UseManualTime();
          benchmark::RegisterBenchmark(("graph/" + name).c_str(), bm_vecnorm, pooled, e, d, s, true)->UseManualTime();
        }
  benchmark::AddCustomContext("backend", "cuda");
  benchmark::AddCustomContext("device", g_device.name);
  benchmark::AddCustomContext("peak_bandwidth_GBps", std::to_string(g_device.peak_bytes_per_s / 1e9));
  benchmark::AddCustomContext("copy_bandwidth_GBps", std::to_string(g_device.copy_bytes_per_s / 1e9));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
