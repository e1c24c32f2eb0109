// bench/bench_cpu.cpp -- CPU benchmarks of vecnorm against the limit and the
// eager baseline (issue 5). For every case, in this order, in one run:
//   copy/...    the limit: a copy of the step's input bytes (obs + reward) to
//               an output buffer, split over the threads the step uses;
//   eager/...   what an eager framework does: one full pass per elementary
//               operation of VecNormV2's formulas, each with a new temporary;
//   vecnorm/... one VecNorm::step of the two keys (steady state).
// Also reward/scaler/<envs> against reward/statistics/<envs>: a RewardScaler
// step (returns, update, normalize) against a pooled, uncentred VecNorm step of
// the same rewards (the scaler's statistics alone): the returns' cost.
// scripts/bench.sh runs this and writes docs/benchmarks.md (ratios per case).
//
// Case names: <kind>/<mode>/<estimator>/<dtype>/<B>x<F> (bench/cases.hpp).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <benchmark/benchmark.h>

#include <vecnorm/core/convert.hpp>
#include <vecnorm/reward.hpp>

#include "cases.hpp"

namespace vb = vecnorm::bench;
using vecnorm::DType;
using vecnorm::Estimator;

namespace {

// ----------------------------------------------------------------- data

/// Observation features with very different means and scales, like a simulator's.
struct Data {
  DType dtype;
  std::int64_t batch, feat;
  std::vector<float> obs32, rew32;            // float32 inputs
  std::vector<std::uint16_t> obs16, rew16;    // bfloat16 inputs
  std::vector<float> yobs32, yrew32;          // outputs
  std::vector<std::uint16_t> yobs16, yrew16;

  Data(DType d, std::int64_t b, std::int64_t f) : dtype(d), batch(b), feat(f) {
    std::mt19937 gen(1234);
    std::normal_distribution<float> nd(0.f, 1.f);
    obs32.resize(static_cast<std::size_t>(b * f));
    rew32.resize(static_cast<std::size_t>(b));
    for (std::int64_t i = 0; i < b * f; ++i) {
      const std::int64_t j = i % f;
      obs32[static_cast<std::size_t>(i)] = static_cast<float>(j % 7) - 3.f + (1.f + static_cast<float>(j % 5)) * nd(gen);
    }
    for (auto& r : rew32) r = 0.1f * nd(gen);
    if (d == DType::bfloat16) {
      auto to16 = [](const std::vector<float>& v) {
        std::vector<std::uint16_t> o(v.size());
        for (std::size_t i = 0; i < v.size(); ++i) o[i] = vecnorm::core::float_to_bf16(v[i]);
        return o;
      };
      obs16 = to16(obs32);
      rew16 = to16(rew32);
      yobs16.resize(obs16.size());
      yrew16.resize(rew16.size());
    } else {
      yobs32.resize(obs32.size());
      yrew32.resize(rew32.size());
    }
  }
  std::size_t xsize() const { return dtype == DType::bfloat16 ? 2 : 4; }
  const void* obs() const { return dtype == DType::bfloat16 ? static_cast<const void*>(obs16.data()) : obs32.data(); }
  const void* rew() const { return dtype == DType::bfloat16 ? static_cast<const void*>(rew16.data()) : rew32.data(); }
  void* yobs() { return dtype == DType::bfloat16 ? static_cast<void*>(yobs16.data()) : yobs32.data(); }
  void* yrew() { return dtype == DType::bfloat16 ? static_cast<void*>(yrew16.data()) : yrew32.data(); }
};

/// The threads vecnorm's CPU backend uses for n elements (src/cpu: one thread
/// per 16384 elements, at most all of them).
int threads_for(std::int64_t n) {
#if defined(_OPENMP)
  const std::int64_t t = std::min<std::int64_t>(omp_get_max_threads(), n / 16384);
  return static_cast<int>(std::max<std::int64_t>(1, t));
#else
  (void)n;
  return 1;
#endif
}

// ----------------------------------------------------------------- cold caches
//
// A case whose step moves more bytes than the last-level cache holds cannot
// keep its data in the caches from one step to the next: each of its
// iterations starts with cold caches (flushed outside the timing), as in a
// training loop where the simulator and the policy touch more memory between
// two steps. Without this, the copy of such a case would run from the cache
// while the step next to it, with loc and var besides, could not: the ratio
// would compare different memories. Smaller cases stay warm.

/// The last-level cache as the kernel describes it (what lscpu prints; in a
/// VM, sysconf may report the host's cache instead), else sysconf, else 8 MiB.
std::size_t llc_bytes() {
  static const std::size_t bytes = [] {
    for (int index = 3; index >= 2; --index) {
      std::ifstream f("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size");
      std::size_t v = 0;
      char unit = 'K';  // sysfs writes "8192K"
      f >> v >> unit;
      if (v > 0) return v * (unit == 'M' ? 1024 * 1024 : 1024);
    }
    const long v = sysconf(_SC_LEVEL3_CACHE_SIZE);
    return v > 0 ? static_cast<std::size_t>(v) : (std::size_t{8} << 20);
  }();
  return bytes;
}

/// Reads four times the last-level cache (clean lines: the flush leaves
/// nothing to write back during the timed step). One thread: an OpenMP team
/// here would leave its threads spinning (libgomp waits actively) on the cores
/// the timed step's threads then need.
void flush_caches() {
  static std::vector<std::uint64_t> buf(4 * llc_bytes() / sizeof(std::uint64_t), 1);
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < buf.size(); i += 8) sum += buf[i];
  benchmark::DoNotOptimize(sum);
}

/// The timed loop of every CPU benchmark: cold caches before each iteration
/// for cases whose step moves more than the last-level cache.
template <class F>
void run_loop(benchmark::State& st, double bytes, F&& body) {
  const bool cold = bytes > static_cast<double>(llc_bytes());
  for (auto _ : st) {
    if (cold) {
      st.PauseTiming();
      flush_caches();
      st.ResumeTiming();
    }
    body();
    benchmark::ClobberMemory();
  }
  st.counters["cold_caches"] = cold ? 1 : 0;
}

// ----------------------------------------------------------------- the limit

void parallel_copy(void* dst, const void* src, std::size_t bytes, int threads) {
  if (threads <= 1) {
    std::memcpy(dst, src, bytes);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
  {
    const std::size_t t = static_cast<std::size_t>(omp_get_thread_num());
    const std::size_t nt = static_cast<std::size_t>(omp_get_num_threads());
    const std::size_t b = bytes * t / nt / 64 * 64, e = t + 1 == nt ? bytes : bytes * (t + 1) / nt / 64 * 64;
    std::memcpy(static_cast<char*>(dst) + b, static_cast<const char*>(src) + b, e - b);
  }
#endif
}

void bm_copy(benchmark::State& st, bool pooled, DType d, vb::Shape2 s) {
  Data data(d, s.batch, s.feat);
  const int threads = threads_for(s.batch * s.feat);
  run_loop(st, vb::floor_bytes(pooled, d, s), [&] {
    parallel_copy(data.yobs(), data.obs(), static_cast<std::size_t>(s.batch * s.feat) * data.xsize(), threads);
    parallel_copy(data.yrew(), data.rew(), static_cast<std::size_t>(s.batch) * data.xsize(), 1);
  });
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * vb::copy_bytes(d, s)));
}

// ----------------------------------------------------------------- eager baseline
//
// Every elementary operation is one pass over its operands into a new
// (uninitialized, like torch.empty) temporary, split over the threads the way
// an eager CPU framework splits a kernel. The formulas are VecNormV2's
// (torchrl estimator), ../shared/spec/semantics.md.

using Tmp = std::unique_ptr<float[]>;
Tmp alloc(std::int64_t n) { return std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(std::max<std::int64_t>(n, 1))); }

template <class F>
Tmp map1(const float* a, std::int64_t n, F f) {
  Tmp o = alloc(n);
  float* op = o.get();
#pragma omp parallel for if (n >= 16384) schedule(static)
  for (std::int64_t i = 0; i < n; ++i) op[i] = f(a[i]);
  return o;
}
template <class F>
Tmp map2(const float* a, const float* b, std::int64_t n, F f) {
  Tmp o = alloc(n);
  float* op = o.get();
#pragma omp parallel for if (n >= 16384) schedule(static)
  for (std::int64_t i = 0; i < n; ++i) op[i] = f(a[i], b[i]);
  return o;
}
/// a [rows, F] op b [F] (broadcast over rows).
template <class F>
Tmp map_bcast(const float* a, const float* b, std::int64_t rows, std::int64_t feat, F f) {
  Tmp o = alloc(rows * feat);
  float* op = o.get();
#pragma omp parallel for if (rows * feat >= 16384) schedule(static)
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < feat; ++j) op[r * feat + j] = f(a[r * feat + j], b[j]);
  return o;
}
/// mean over dim 0 of [rows, F].
Tmp mean0(const float* a, std::int64_t rows, std::int64_t feat) {
  Tmp o = alloc(feat);
  std::vector<double> acc(static_cast<std::size_t>(feat), 0.0);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < feat; ++j) acc[static_cast<std::size_t>(j)] += a[r * feat + j];
  for (std::int64_t j = 0; j < feat; ++j) o[static_cast<std::size_t>(j)] = static_cast<float>(acc[static_cast<std::size_t>(j)] / static_cast<double>(rows));
  return o;
}
void lerp_(float* dst, const float* end, std::int64_t n, float w) {
#pragma omp parallel for if (n >= 16384) schedule(static)
  for (std::int64_t i = 0; i < n; ++i) dst[i] += w * (end[i] - dst[i]);
}

/// One eager key: its own statistics, as VecNormV2 keeps them.
struct EagerKey {
  std::int64_t rows, feat;  // stats have rows*feat (per-element) or feat (pooled) values
  bool pooled;
  std::vector<float> loc, var;
  std::int64_t count = 0;
  EagerKey(std::int64_t r, std::int64_t f, bool p)
      : rows(r), feat(f), pooled(p), loc(static_cast<std::size_t>(p ? f : r * f), 0.f), var(loc) {}

  void step(const void* x, void* y, DType d, double decay) {
    const std::int64_t n = rows * feat;
    Tmp xf;  // x.float()
    const float* xp;
    if (d == DType::bfloat16) {
      const auto* x16 = static_cast<const std::uint16_t*>(x);
      xf = alloc(n);
#pragma omp parallel for if (n >= 16384) schedule(static)
      for (std::int64_t i = 0; i < n; ++i) xf[static_cast<std::size_t>(i)] = vecnorm::core::bf16_to_float(x16[i]);
      xp = xf.get();
    } else {
      xp = static_cast<const float*>(x);
    }
    const std::int64_t sn = static_cast<std::int64_t>(loc.size());
    Tmp x2 = map1(xp, n, [](float a) { return a * a; });
    float w;
    if (pooled) {
      Tmp m1 = mean0(xp, rows, feat);
      Tmp m2 = mean0(x2.get(), rows, feat);
      count += rows;
      w = static_cast<float>(decay < 1 ? 1 - std::pow(decay, static_cast<double>(rows)) : static_cast<double>(rows) / static_cast<double>(count));
      lerp_(loc.data(), m1.get(), sn, w);
      lerp_(var.data(), m2.get(), sn, w);
    } else {
      count += 1;
      w = static_cast<float>(decay < 1 ? 1 - decay : 1.0 / static_cast<double>(count));
      lerp_(loc.data(), xp, sn, w);
      lerp_(var.data(), x2.get(), sn, w);
    }
    const float bc = static_cast<float>(decay < 1 ? -std::expm1(static_cast<double>(count) * std::log(decay)) : 1.0);
    Tmp mu = map1(loc.data(), sn, [bc](float a) { return a / bc; });
    Tmp loc2 = map1(loc.data(), sn, [](float a) { return a * a; });
    Tmp dv = map2(var.data(), loc2.get(), sn, [](float a, float b) { return a - b; });
    Tmp v = map1(dv.get(), sn, [bc](float a) { return a / bc; });
    Tmp vc = map1(v.get(), sn, [](float a) { return std::max(a, 0.f); });
    Tmp sd = map1(vc.get(), sn, [](float a) { return std::sqrt(a); });
    Tmp scale = map1(sd.get(), sn, [](float a) { return std::max(a, 1e-4f); });
    Tmp xc, yf;
    if (pooled) {
      xc = map_bcast(xp, mu.get(), rows, feat, [](float a, float b) { return a - b; });
      yf = map_bcast(xc.get(), scale.get(), rows, feat, [](float a, float b) { return a / b; });
    } else {
      xc = map2(xp, mu.get(), n, [](float a, float b) { return a - b; });
      yf = map2(xc.get(), scale.get(), n, [](float a, float b) { return a / b; });
    }
    if (d == DType::bfloat16) {
      auto* y16 = static_cast<std::uint16_t*>(y);
#pragma omp parallel for if (n >= 16384) schedule(static)
      for (std::int64_t i = 0; i < n; ++i) y16[i] = vecnorm::core::float_to_bf16(yf[static_cast<std::size_t>(i)]);
    } else {
      std::memcpy(y, yf.get(), static_cast<std::size_t>(n) * sizeof(float));  // the copy into the caller's output
    }
  }
};

void bm_eager(benchmark::State& st, bool pooled, DType d, vb::Shape2 s) {
  Data data(d, s.batch, s.feat);
  EagerKey obs(s.batch, s.feat, pooled), rew(s.batch, 1, pooled);
  run_loop(st, vb::floor_bytes(pooled, d, s), [&] {
    obs.step(data.obs(), data.yobs(), d, 0.9999);
    rew.step(data.rew(), data.yrew(), d, 0.9999);
  });
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * vb::floor_bytes(pooled, d, s)));
}

// ----------------------------------------------------------------- vecnorm

/// What a benchmarked step's updates take: every row, a row mask, or row weights.
enum class Rows { all, masked, masked_varying, weighted };

/// One VecNorm::step of both keys in steady state. Rows::masked: a row mask
/// on both keys that leaves out about one row in ten (done environments),
/// spread over the batch (per-element statistics: their elements keep their
/// counts). Rows::masked_varying: as masked, but the rows left out change
/// from step to step (8 patterns in turn: environments end at different
/// steps), so that per-element counts differ from row to row. Rows::weighted
/// (pooled only): int32 row weights 0 to 3 (brax's).
void bm_vecnorm(benchmark::State& st, bool pooled, Estimator e, DType d, vb::Shape2 s, Rows rows) {
  Data data(d, s.batch, s.feat);
  vecnorm::Options o;
  o.reduce_batch_dims = pooled;
  o.estimator = e;
  o.backend = vecnorm::Backend::cpu;
  vecnorm::KeyTable table;
  table.batch_shape = vecnorm::Shape{s.batch};
  table.keys = {{"observation", vecnorm::Shape{s.feat}, d}, {"reward", vecnorm::Shape{}, d}};
  vecnorm::VecNorm vn(o, table);
  const vecnorm::Shape xs{s.batch, s.feat}, rs{s.batch};
  const bool masked = rows == Rows::masked || rows == Rows::masked_varying;
  const std::size_t B = static_cast<std::size_t>(s.batch);
  std::vector<std::uint8_t> mask(masked ? B : 0), patterns(rows == Rows::masked_varying ? 8 * B : 0);
  for (std::size_t r = 0; r < mask.size(); ++r) mask[r] = (r * 2654435761u) % 10 == 3 ? 0 : 1;
  for (std::size_t r = 0; r < patterns.size(); ++r) patterns[r] = (r * 2654435761u + r / B * 40503u) % 10 == 3 ? 0 : 1;
  std::vector<std::int32_t> weights(rows == Rows::weighted ? static_cast<std::size_t>(s.batch) : 0);
  for (std::size_t r = 0; r < weights.size(); ++r) weights[r] = static_cast<std::int32_t>((r * 2654435761u) % 4);
  const vecnorm::ConstTensorView mv = masked                   ? vecnorm::ConstTensorView{mask.data(), DType::uint8, rs}
                                      : rows == Rows::weighted ? vecnorm::ConstTensorView{weights.data(), DType::int32, rs}
                                                               : vecnorm::ConstTensorView{};
  const vecnorm::KeyData batch[2] = {
      {"observation", vecnorm::ConstTensorView{data.obs(), d, xs}, vecnorm::TensorView{data.yobs(), d, xs}, mv},
      {"reward", vecnorm::ConstTensorView{data.rew(), d, rs}, vecnorm::TensorView{data.yrew(), d, rs}, mv}};
  for (int i = 0; i < 3; ++i) vn.step(batch);  // steady state: workspace grown
  std::size_t turn = 0;
  run_loop(st, vb::floor_bytes(pooled, d, s), [&] {
    if (!patterns.empty()) std::memcpy(mask.data(), patterns.data() + (turn++ % 8) * B, B);
    vn.step(batch);
  });
  st.SetBytesProcessed(static_cast<std::int64_t>(st.iterations() * vb::floor_bytes(pooled, d, s)));
}

/// One reward step of `envs` float32 rewards (SB3's statistics, dones about
/// 1 in 20): through a RewardScaler (`scaler`), or a VecNorm step of the
/// rewards themselves with the same options (what the scaler adds is the rest).
void bm_reward(benchmark::State& st, std::int64_t envs, bool scaler) {
  vecnorm::Options o;
  o.backend = vecnorm::Backend::cpu;
  o.estimator = Estimator::stable;
  o.decay = 1.0;
  o.prior_count = 1e-4;
  o.scale = vecnorm::ScaleForm::sqrt_var_plus_eps;
  o.eps = 1e-8;
  o.clip = 10.0;
  o.reduce_batch_dims = true;
  o.center = false;
  const vecnorm::Shape rs{envs};
  const vecnorm::KeyTable table{rs, {{"reward", vecnorm::Shape{}, DType::float32}}};
  std::vector<float> r(static_cast<std::size_t>(envs)), y(r.size());
  std::vector<std::uint8_t> done(r.size());
  std::mt19937 rng(5);
  std::normal_distribution<float> z(0.3f, 2.0f);
  for (std::size_t i = 0; i < r.size(); ++i) {
    r[i] = z(rng);
    done[i] = (i * 2654435761u) % 20 == 7 ? 1 : 0;
  }
  const vecnorm::ConstTensorView rv{r.data(), DType::float32, rs};
  const vecnorm::TensorView yv{y.data(), DType::float32, rs};
  const vecnorm::ConstTensorView dv{done.data(), DType::uint8, rs};
  const double bytes = static_cast<double>(envs) * (2 * sizeof(float) + 1);
  if (scaler) {
    vecnorm::RewardScaler s(o, {0.99, vecnorm::ReturnReset::after}, table);
    for (int i = 0; i < 3; ++i) s.step({{"reward", rv, yv, dv}});
    run_loop(st, bytes, [&] { s.step({{"reward", rv, yv, dv}}); });
  } else {
    vecnorm::VecNorm vn(o, table);
    for (int i = 0; i < 3; ++i) vn.step({{"reward", rv, yv}});
    run_loop(st, bytes, [&] { vn.step({{"reward", rv, yv}}); });
  }
}

void register_all() {
  for (const vb::Shape2& s : vb::shapes()) {
    for (DType d : {DType::float32, DType::bfloat16}) {
      for (bool pooled : {false, true}) {
        for (Estimator e : {Estimator::torchrl, Estimator::stable}) {
          const std::string name = vb::case_name(pooled, e, d, s);
          // The copy and the eager baseline do not depend on the estimator:
          // measured next to each vecnorm case all the same, so that every
          // ratio compares numbers taken seconds apart.
          benchmark::RegisterBenchmark(("copy/" + name).c_str(), bm_copy, pooled, d, s)->UseRealTime();
          benchmark::RegisterBenchmark(("eager/" + name).c_str(), bm_eager, pooled, d, s)->UseRealTime();
          benchmark::RegisterBenchmark(("vecnorm/" + name).c_str(), bm_vecnorm, pooled, e, d, s, Rows::all)->UseRealTime();
        }
      }
    }
    if (s.batch >= 4096) {  // (not "vecnorm/": scripts/bench_load.py parses those names)
      for (const bool pooled : {true, false})
        benchmark::RegisterBenchmark(
            ("vecnorm_masked/" + vb::case_name(pooled, Estimator::torchrl, DType::float32, s)).c_str(), bm_vecnorm,
            pooled, Estimator::torchrl, DType::float32, s, Rows::masked)
            ->UseRealTime();
      benchmark::RegisterBenchmark(
          ("vecnorm_masked_varying/" + vb::case_name(false, Estimator::torchrl, DType::float32, s)).c_str(),
          bm_vecnorm, false, Estimator::torchrl, DType::float32, s, Rows::masked_varying)
          ->UseRealTime();
      benchmark::RegisterBenchmark(
          ("vecnorm_weighted/" + vb::case_name(true, Estimator::torchrl, DType::float32, s)).c_str(), bm_vecnorm, true,
          Estimator::torchrl, DType::float32, s, Rows::weighted)
          ->UseRealTime();
    }
  }
  for (const std::int64_t envs : {std::int64_t{4096}, std::int64_t{65536}})
    for (const bool scaler : {false, true})
      benchmark::RegisterBenchmark(
          ("reward/" + std::string(scaler ? "scaler/" : "statistics/") + std::to_string(envs)).c_str(), bm_reward,
          envs, scaler)
          ->UseRealTime();
}

}  // namespace

/// The eager baseline's temporaries come from malloc, as an eager framework's
/// CPU tensors do (PyTorch allocates them with posix_memalign). glibc adapts
/// its thresholds to what the process freed before: a fresh process maps (and
/// page-faults) every temporary over 128 KiB and trims its heap, a long-running
/// one has raised the mmap threshold to the largest freed block (at most
/// 32 MiB) and reuses its heap. Every case runs in the long-running state, so
/// that the baseline does not depend on which cases ran before it (it took
/// 0.44 ms or 1.5 ms for pooled 4096x64 depending on that).
void steady_allocator() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 32 << 20);   // glibc's ceiling for its dynamic threshold
  mallopt(M_TRIM_THRESHOLD, 64 << 20);   // twice that, as the dynamic rule sets it
#endif
}

/// The clock the cores ran at when the run started, in GHz: a chain of
/// dependent integer adds (one a cycle on every x86 core), the fastest of five
/// timings. Shared or turbo-capable machines run above or below the nominal
/// figure the kernel reports; the analysis in docs/benchmarks.md counts cycles
/// at this rate. 0 where it cannot be measured.
double measured_ghz() {
#if defined(__x86_64__) || defined(__i386__)
  constexpr long kIters = 20'000'000;
  double best = 0;
  for (int k = 0; k < 5; ++k) {
    long v = 0;
    const auto a = std::chrono::steady_clock::now();
    for (long i = 0; i < kIters; ++i) asm volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(v));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
    best = std::max(best, 4.0 * kIters / s / 1e9);
  }
  return best;
#else
  return 0;
#endif
}

int main(int argc, char** argv) {
  steady_allocator();
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("vecnorm_version", vecnorm::version());
  benchmark::AddCustomContext("backend", "cpu");
  benchmark::AddCustomContext("cpu_isa", vecnorm::cpu_isa());
  if (const double ghz = measured_ghz(); ghz > 0) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f", ghz);
    benchmark::AddCustomContext("measured_ghz", buf);
  }
#if defined(_OPENMP)
  benchmark::AddCustomContext("threads", std::to_string(omp_get_max_threads()));
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
