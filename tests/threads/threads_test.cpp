// tests/threads/threads_test.cpp -- one VecNorm stepped from several threads.
// Steps are atomic with respect to each other, so the final count is exact and,
// with decay 1 (every sample weighs the same), the statistics are those of all
// the data whatever the order of the steps (up to rounding).
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>
#include <tuple>

#include "support/check.hpp"
#include "support/data.hpp"
#include "support/device_buffer.hpp"
#include "support/dtypes.hpp"
#include "support/harness.hpp"

namespace {

using vecnorm::Backend;
using vecnorm::DType;
using vecnorm::Estimator;
using vecnorm::Shape;

constexpr int kThreads = 4;
constexpr int kSteps = 250;
constexpr std::int64_t kBatch = 16;
constexpr std::int64_t kFeatures = 3;

using Param = std::tuple<Backend, Estimator, bool /*pooled*/, DType /*stats*/>;
class Threads : public ::testing::TestWithParam<Param> {};

// Data of thread t, step s (deterministic, so the test can recompute it).
std::vector<double> data_of(int t, int s) {
  std::mt19937_64 rng(1000003ull * t + s);
  const vntest::FeatureDistribution dist{{2.0, -1.0, 10.0}, {1.0, 0.5, 3.0}};
  return vntest::random_values(rng, DType::float32, kBatch, kFeatures, dist);
}

TEST_P(Threads, ConcurrentStepsAreAtomic) {
  const auto& [backend, est, pooled, stats] = GetParam();
  vecnorm::Options o = vntest::options_for(backend);
  o.estimator = est;
  o.reduce_batch_dims = pooled;
  o.decay = 1.0;
  o.stats_dtype = stats;
  vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{kBatch}, {{"obs", Shape{kFeatures}, DType::float32},
                                                           {"reward", Shape{}, DType::float32}}});
  std::atomic<int> failures{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      try {
        for (int s = 0; s < kSteps; ++s) {
          const auto x = data_of(t, s);
          auto xb = vntest::DeviceBuffer::from_values(backend, DType::float32, Shape{kBatch, kFeatures}, x);
          vntest::DeviceBuffer yb(backend, DType::float32, Shape{kBatch, kFeatures});
          auto rb = vntest::DeviceBuffer::from_values(backend, DType::float32, Shape{kBatch},
                                                      std::vector<double>(kBatch, t + 1.0));
          vntest::DeviceBuffer ryb(backend, DType::float32, Shape{kBatch});
          // Odd threads carry the reward too; everybody reads now and then.
          if (t % 2 == 1) vn.step({{"obs", xb.cview(), yb.view()}, {"reward", rb.cview(), ryb.view()}});
          else vn.step({{"obs", xb.cview(), yb.view()}});
          for (double v : yb.values())
            if (!std::isfinite(v)) ++failures;
          if (s % 50 == 0) {
            for (double v : vn.scale("obs"))
              if (!std::isfinite(v)) ++failures;
            (void)vn.export_state();
          }
        }
      } catch (const std::exception& e) {
        ++failures;
        ADD_FAILURE() << "thread " << t << ": " << e.what();
      }
    });
  }
  go = true;
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0) << "non-finite outputs or exceptions in the threads";

  const std::int64_t per_step = pooled ? kBatch : 1;
  EXPECT_EQ(vn.count("obs"), std::int64_t{kThreads} * kSteps * per_step);
  EXPECT_EQ(vn.count("reward"), std::int64_t{kThreads / 2} * kSteps * per_step);

  // The statistics of all the data, in any order.
  const std::int64_t cells = pooled ? kFeatures : kBatch * kFeatures;
  std::vector<std::vector<double>> seen(cells);
  for (int t = 0; t < kThreads; ++t)
    for (int s = 0; s < kSteps; ++s) {
      const auto x = data_of(t, s);
      for (std::int64_t i = 0; i < kBatch * kFeatures; ++i) seen[pooled ? i % kFeatures : i].push_back(x[i]);
    }
  std::vector<double> mean(cells), sd(cells), mean_tol(cells), sd_tol(cells);
  // The order of the steps changes only the rounding: float32 statistics
  // accumulate ~1e-4 relative over 1000 steps, float64 ones ~1e-12.
  const double rel = stats == DType::float64 ? 1e-11 : 2e-4;
  for (std::int64_t k = 0; k < cells; ++k) {
    vnref::mean_std(seen[k], mean[k], sd[k]);
    const double mag = std::fabs(mean[k]) + sd[k];
    mean_tol[k] = rel * mag;
    sd_tol[k] = rel * mag * mag / sd[k];
  }
  EXPECT_TRUE(vntest::AllClose("loc == mean of all data", mean, vn.loc("obs"), mean_tol));
  EXPECT_TRUE(vntest::AllClose("scale == population std of all data", sd, vn.scale("obs"), sd_tol));
  // The reward of thread t is t + 1: odd threads 1 and 3 give 2 and 4: mean 3, std 1.
  std::vector<double> rmean(pooled ? 1 : kBatch, 3.0), rsd(pooled ? 1 : kBatch, 1.0);
  if (pooled) {
    rmean.assign(1, 3.0);
    rsd.assign(1, 1.0);
  }
  EXPECT_TRUE(vntest::AllClose("reward loc", rmean, vn.loc("reward"), rel * 4));
  EXPECT_TRUE(vntest::AllClose("reward scale", rsd, vn.scale("reward"), rel * 16));
}

// Readers (loc, scale, to_affine, clone, export_state) race with writers: every
// snapshot is consistent (count is a whole number of steps, no NaN).
TEST_P(Threads, ReadersDuringSteps) {
  const auto& [backend, est, pooled, stats] = GetParam();
  vecnorm::Options o = vntest::options_for(backend);
  o.estimator = est;
  o.reduce_batch_dims = pooled;
  o.decay = 0.99;
  o.stats_dtype = stats;
  vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{kBatch}, {{"obs", Shape{kFeatures}, DType::float32}}});
  {  // one step first so that every read-out is defined
    const auto x = data_of(9, 9);
    vntest::call_one(vntest::Call::step, vn, backend, "obs", DType::float32, Shape{kBatch, kFeatures}, x);
  }
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::thread writer([&] {
    for (int s = 0; s < 400; ++s)
      vntest::call_one(vntest::Call::step, vn, backend, "obs", DType::float32, Shape{kBatch, kFeatures}, data_of(7, s));
    done = true;
  });
  std::thread reader([&] {
    while (!done.load()) {
      const auto st = vn.export_state();
      if (st.keys[0].count % (pooled ? kBatch : 1) != 0) ++bad;
      for (double v : vn.scale("obs"))
        if (!std::isfinite(v)) ++bad;
      const auto copy = vn.clone();
      if (copy.count("obs") < st.keys[0].count) ++bad;
      (void)vn.to_affine();
    }
  });
  writer.join();
  reader.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(vn.count("obs"), 401 * (pooled ? kBatch : 1));
}

INSTANTIATE_TEST_SUITE_P(All, Threads,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(Estimator::torchrl, Estimator::stable), ::testing::Bool(),
                                            ::testing::Values(DType::float32, DType::float64)),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           const Backend b = std::get<0>(info.param);
                           const Estimator e = std::get<1>(info.param);
                           const bool pooled = std::get<2>(info.param);
                           const DType s = std::get<3>(info.param);
                           return std::string(vntest::backend_name(b)) + "_" + vntest::estimator_name(e) + "_" +
                                  (pooled ? "pooled" : "per_element") + "_" + vntest::short_name(s);
                         });

}  // namespace

namespace {

// Batches large enough for the CPU backend to split them over threads: the
// result agrees with the reference for every thread count, and every thread
// count gives the same bits (deterministic reductions, chunked by size).
using BigParam = std::tuple<Backend, Estimator, bool /*pooled*/>;
class BigBatches : public ::testing::TestWithParam<BigParam> {};

TEST_P(BigBatches, EveryThreadCountAgreesWithReference) {
  const auto& [backend, est, pooled] = GetParam();
  const std::int64_t B = 1 << 16, F = 4;
  std::vector<std::vector<double>> data;
  std::mt19937_64 rng(77);
  const auto dist = vntest::random_distribution(rng, F);
  for (int s = 0; s < 3; ++s) data.push_back(vntest::random_values(rng, DType::float32, B, F, dist));

  std::vector<std::byte> first_bits;
  for (int threads : {1, 2, 3, 0, 2}) {
    vecnorm::Options o = vntest::options_for(backend);
    o.estimator = est;
    o.reduce_batch_dims = pooled;
    o.decay = 0.99;
    o.cpu_threads = threads;
    vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{B}, {{"obs", Shape{F}, DType::float32}}});
    vnref::StatefulKey ref({vntest::to_ref(est), o.decay, o.eps}, pooled, F, B);
    std::vector<std::byte> bits;
    for (int s = 0; s < 3; ++s) {
      const auto y = vntest::call_one(vntest::Call::step, vn, backend, "obs", DType::float32, Shape{B, F}, data[s]);
      ref.update(data[s], B);
      const auto yv = vntest::decode(DType::float32, y);
      ASSERT_TRUE(vntest::AllClose(
          "cpu_threads " + std::to_string(threads) + " step " + std::to_string(s + 1), ref.normalize(data[s], B), yv,
          vntest::y_tolerances(ref.readouts(), pooled, F, data[s], vntest::rtol_for(DType::float32, s + 1), o.eps,
                               DType::float32)));
      bits.insert(bits.end(), y.begin(), y.end());
    }
    ASSERT_EQ(vn.count("obs"), 3 * (pooled ? B : 1));
    // Chunks and partials depend on the sizes only (src/cpu/pool.hpp): every
    // thread count gives the bits of one thread, pooled reductions included.
    if (first_bits.empty()) {
      first_bits = bits;
    } else {
      EXPECT_TRUE(vntest::BitEqual("cpu_threads " + std::to_string(threads) + " vs 1", DType::float32, first_bits,
                                   bits));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, BigBatches,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(Estimator::torchrl, Estimator::stable), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<BigParam>& info) {
                           return std::string(vntest::backend_name(std::get<0>(info.param))) + "_" +
                                  vntest::estimator_name(std::get<1>(info.param)) + "_" +
                                  (std::get<2>(info.param) ? "pooled" : "per_element");
                         });

// Row weights (int32 masks: pooled statistics) take the same chunked reduction:
// every thread count gives the bits of one thread, outputs and statistics, at
// a width of one row a super row (F = 70) and of several (F = 4).
TEST(BigBatchesWeighted, EveryThreadCountGivesTheBitsOfOneThread) {
  const std::int64_t B = 1 << 15;
  for (const std::int64_t F : {std::int64_t{4}, std::int64_t{70}}) {
    std::mt19937_64 rng(static_cast<unsigned>(F));
    const auto dist = vntest::random_distribution(rng, F);
    const std::vector<double> xd = vntest::random_values(rng, DType::float32, B, F, dist);
    std::vector<float> x(xd.begin(), xd.end()), y(x.size());
    std::vector<std::int32_t> w(static_cast<std::size_t>(B));
    for (std::size_t r = 0; r < w.size(); ++r) w[r] = static_cast<std::int32_t>((r * 2654435761u) % 4);
    std::vector<float> first;
    std::vector<double> first_stats;
    for (int threads : {1, 2, 3, 0}) {
      vecnorm::Options o;
      o.backend = Backend::cpu;
      o.reduce_batch_dims = true;
      o.decay = 0.99;
      o.cpu_threads = threads;
      vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{B}, {{"obs", Shape{F}, DType::float32}}});
      std::vector<float> got;
      for (int s = 0; s < 2; ++s) {
        vn.step({{"obs", vecnorm::ConstTensorView{x.data(), DType::float32, Shape{B, F}},
                  vecnorm::TensorView{y.data(), DType::float32, Shape{B, F}},
                  vecnorm::ConstTensorView{w.data(), DType::int32, Shape{B}}}});
        got.insert(got.end(), y.begin(), y.end());
      }
      std::vector<double> stats = vn.loc("obs");
      for (const double v : vn.scale("obs")) stats.push_back(v);
      stats.push_back(static_cast<double>(vn.count("obs")));
      if (first.empty()) {
        first = got;
        first_stats = stats;
        continue;
      }
      const std::string at = "F " + std::to_string(F) + " cpu_threads " + std::to_string(threads) + " vs 1";
      EXPECT_TRUE(std::memcmp(first.data(), got.data(), got.size() * sizeof(float)) == 0) << at;
      EXPECT_TRUE(std::memcmp(first_stats.data(), stats.data(), stats.size() * sizeof(double)) == 0) << at;
    }
  }
}

}  // namespace

namespace {

// Every const member is safe to call from several threads at once: evaluation
// workers share one AffineNormalizer (three keys, 64 environments, as users run
// it) and one frozen VecNorm, each applying it to its own buffers. Every
// thread's outputs equal, bit for bit, what one thread computes alone (which
// agrees with the reference). The TSan build runs this too (CI step 4).
using ConstParam = std::tuple<Backend, Estimator, bool /*pooled*/>;
class ConstMembers : public ::testing::TestWithParam<ConstParam> {};

TEST_P(ConstMembers, SharedByThreadsGiveTheOneThreadResults) {
  const auto& [backend, est, pooled] = GetParam();
  constexpr std::int64_t B = 64;
  const std::vector<std::pair<std::string, Shape>> keys = {{"obs", Shape{5}}, {"goal", Shape{2, 3}}, {"reward", Shape{}}};
  vecnorm::Options o = vntest::options_for(backend);
  o.estimator = est;
  o.reduce_batch_dims = pooled;
  o.decay = 0.99;
  vecnorm::KeyTable table{Shape{B}, {}};
  for (const auto& [name, f] : keys) table.keys.push_back({name, f, DType::float32});
  vecnorm::VecNorm vn(o, table);
  std::vector<vnref::StatefulKey> refs;
  std::mt19937_64 rng(4242);
  for (const auto& [name, f] : keys) {
    refs.emplace_back(vnref::Config{vntest::to_ref(est), o.decay, o.eps}, pooled, f.numel(), B);
    const auto dist = vntest::random_distribution(rng, f.numel());
    for (int s = 0; s < 5; ++s) {
      const auto x = vntest::random_values(rng, DType::float32, B, f.numel(), dist);
      vntest::call_one(vntest::Call::step, vn, backend, name, DType::float32, Shape{B}.concat(f), x);
      refs.back().update(x, B);
    }
  }
  const vecnorm::AffineNormalizer affine = vn.to_affine();
  const vecnorm::VecNorm frozen = vn.frozen_copy();

  // Inputs of each thread, and what one thread alone computes from them.
  constexpr int kWorkers = 4;
  constexpr int kRounds = 100;
  std::vector<std::vector<std::vector<double>>> inputs(kWorkers);
  std::vector<std::vector<std::vector<std::byte>>> alone(kWorkers);
  for (int t = 0; t < kWorkers; ++t)
    for (std::size_t k = 0; k < keys.size(); ++k) {
      const std::int64_t F = keys[k].second.numel();
      auto x = vntest::random_values(rng, DType::float32, B, F, vntest::random_distribution(rng, F));
      const Shape shape = Shape{B}.concat(keys[k].second);
      auto y = vntest::call_one(vntest::Call::affine_apply, nullptr, &affine, backend, keys[k].first, DType::float32,
                                shape, x);
      EXPECT_TRUE(vntest::AllClose(keys[k].first + " one thread", refs[k].normalize(x, B),
                                   vntest::decode(DType::float32, y),
                                   vntest::y_tolerances(refs[k].readouts(), pooled, F, x,
                                                        vntest::rtol_for(DType::float32, 5), o.eps, DType::float32)));
      inputs[t].push_back(std::move(x));
      alone[t].push_back(std::move(y));
    }

  std::atomic<int> mismatches{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < kWorkers; ++t)
    workers.emplace_back([&, t] {
      std::vector<vntest::DeviceBuffer> xs, ys, zs;
      std::vector<vecnorm::KeyData> apply, normalize, invert;
      for (std::size_t k = 0; k < keys.size(); ++k) {
        const Shape shape = Shape{B}.concat(keys[k].second);
        xs.push_back(vntest::DeviceBuffer::from_values(backend, DType::float32, shape, inputs[t][k]));
        ys.emplace_back(backend, DType::float32, shape);
        zs.emplace_back(backend, DType::float32, shape);
      }
      for (std::size_t k = 0; k < keys.size(); ++k) {
        apply.push_back({keys[k].first, xs[k].cview(), ys[k].view()});
        normalize.push_back({keys[k].first, xs[k].cview(), zs[k].view()});
        invert.push_back({keys[k].first, ys[k].cview(), zs[k].view()});
      }
      while (!go.load()) std::this_thread::yield();
      try {
        for (int r = 0; r < kRounds; ++r) {
          const bool by_affine = (r + t) % 2 == 0;
          if (by_affine) {
            affine.apply(apply);
          } else {
            frozen.normalize(normalize);
            for (std::size_t k = 0; k < keys.size(); ++k) ys[k].set_bytes(zs[k].bytes());
          }
          for (std::size_t k = 0; k < keys.size(); ++k)
            if (ys[k].bytes() != alone[t][k]) ++mismatches;
          affine.invert(invert);  // reads y, writes z: exercised, checked by the round trip below
          if (affine.loc("obs") != frozen.loc("obs")) ++mismatches;
        }
      } catch (const std::exception& e) {
        ++mismatches;
        ADD_FAILURE() << "thread " << t << ": " << e.what();
      }
    });
  go = true;
  for (auto& w : workers) w.join();
  EXPECT_EQ(mismatches.load(), 0) << "outputs differing from one thread's, or exceptions";
  EXPECT_EQ(frozen.count("obs"), vn.count("obs"));
}

INSTANTIATE_TEST_SUITE_P(All, ConstMembers,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(Estimator::torchrl, Estimator::stable), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<ConstParam>& info) {
                           return std::string(vntest::backend_name(std::get<0>(info.param))) + "_" +
                                  vntest::estimator_name(std::get<1>(info.param)) + "_" +
                                  (std::get<2>(info.param) ? "pooled" : "per_element");
                         });

}  // namespace

namespace {

// More threads than cores, busy siblings, and several callers at once: the
// pool's chunks are claimed by whoever runs (a descheduled worker's share is
// taken by the others, a busy pool runs a caller's chunks on the caller), and
// the results are those of one thread, bit for bit. Values, not times.
using LoadParam = std::tuple<Estimator, bool /*pooled*/>;
class UnderLoad : public ::testing::TestWithParam<LoadParam> {};

TEST_P(UnderLoad, OversubscribedStepsGiveTheOneThreadBits) {
  const auto& [est, pooled] = GetParam();
  const std::int64_t B = 1 << 15, F = 6;
  std::mt19937_64 rng(91);
  const auto dist = vntest::random_distribution(rng, F);
  std::vector<std::vector<double>> data;
  for (int s = 0; s < 4; ++s) data.push_back(vntest::random_values(rng, DType::float32, B, F, dist));
  auto run = [&](int threads) {
    vecnorm::Options o;
    o.estimator = est;
    o.reduce_batch_dims = pooled;
    o.decay = 0.99;
    o.cpu_threads = threads;
    vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{B}, {{"obs", Shape{F}, DType::float32}}});
    std::vector<std::byte> bits;
    for (int s = 0; s < 4; ++s) {
      const auto y = vntest::call_one(vntest::Call::step, vn, Backend::cpu, "obs", DType::float32, Shape{B, F}, data[s]);
      bits.insert(bits.end(), y.begin(), y.end());
    }
    const auto loc = vn.loc("obs"), scale = vn.scale("obs");
    bits.insert(bits.end(), reinterpret_cast<const std::byte*>(loc.data()),
                reinterpret_cast<const std::byte*>(loc.data() + loc.size()));
    bits.insert(bits.end(), reinterpret_cast<const std::byte*>(scale.data()),
                reinterpret_cast<const std::byte*>(scale.data() + scale.size()));
    return bits;
  };
  const std::vector<std::byte> one = run(1);

  // Busy siblings: a spinning thread per core.
  std::atomic<bool> stop{false};
  std::vector<std::thread> busy;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < cores; ++i)
    busy.emplace_back([&] {
      volatile std::uint64_t spin = 0;
      while (!stop.load(std::memory_order_relaxed)) spin = spin + 1;
    });
  // Callers at once, each with more threads than there are cores.
  std::vector<std::vector<std::byte>> got(3);
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c)
    callers.emplace_back([&, c] { got[c] = run(static_cast<int>(4 * cores) + c); });
  for (std::thread& t : callers) t.join();
  stop = true;
  for (std::thread& t : busy) t.join();
  for (int c = 0; c < 3; ++c)
    EXPECT_TRUE(one == got[c]) << "caller " << c << " (cpu_threads " << 4 * cores + c
                               << ") differs from one thread";
}

INSTANTIATE_TEST_SUITE_P(All, UnderLoad,
                         ::testing::Combine(::testing::Values(Estimator::torchrl, Estimator::stable), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<LoadParam>& info) {
                           return std::string(vntest::estimator_name(std::get<0>(info.param))) + "_" +
                                  (std::get<1>(info.param) ? "pooled" : "per_element");
                         });

}  // namespace

namespace {

// Options::cpu_executor: a framework's threads run the chunks. Three
// executors: members on threads of their own, members one after the other
// on the caller, and a faulty one that runs no member at all (the chunks must
// still run, on the caller). Every one gives the bits of
// cpu_threads = 1 and the reference's values, and is the one that ran.
struct ExecutorLog {
  std::atomic<int> calls{0};
  std::atomic<int> members{0};
  std::atomic<int> max_team{0};
  std::atomic<int> other_threads{0};  ///< members that ran off the calling thread
};
enum class ExecKind { threads, serial, none };

template <ExecKind kKind>
void log_run(void* context, int team, void (*body)(void*, int) noexcept, void* arg) noexcept {
  auto& log = *static_cast<ExecutorLog*>(context);
  log.calls.fetch_add(1);
  int prev = log.max_team.load();
  while (prev < team && !log.max_team.compare_exchange_weak(prev, team)) {
  }
  if constexpr (kKind == ExecKind::threads) {
    std::vector<std::thread> others;
    for (int m = 1; m < team; ++m)
      others.emplace_back([&, m] {
        body(arg, m);
        log.members.fetch_add(1);
        log.other_threads.fetch_add(1);
      });
    body(arg, 0);
    log.members.fetch_add(1);
    for (std::thread& t : others) t.join();
  } else if constexpr (kKind == ExecKind::serial) {
    for (int m = 0; m < team; ++m) {
      body(arg, m);
      log.members.fetch_add(1);
    }
  } else {
    (void)body, (void)arg;
  }
}

using ExecParam = std::tuple<Estimator, bool /*pooled*/>;
class CpuExecutor : public ::testing::TestWithParam<ExecParam> {};

TEST_P(CpuExecutor, RunsTheChunksWithTheBitsOfOneThread) {
  const auto& [est, pooled] = GetParam();
  const std::int64_t B = 1 << 16, F = 4;  // 16 chunks of 16K elements
  std::vector<std::vector<double>> data;
  std::mt19937_64 rng(78);
  const auto dist = vntest::random_distribution(rng, F);
  for (int s = 0; s < 3; ++s) data.push_back(vntest::random_values(rng, DType::float32, B, F, dist));

  auto run = [&](int threads, vecnorm::CpuExecutor ex, const std::string& what) {
    vecnorm::Options o = vntest::options_for(Backend::cpu);
    o.estimator = est;
    o.reduce_batch_dims = pooled;
    o.decay = 0.99;
    o.cpu_threads = threads;
    o.cpu_executor = ex;
    vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{B}, {{"obs", Shape{F}, DType::float32}}});
    vnref::StatefulKey ref({vntest::to_ref(est), o.decay, o.eps}, pooled, F, B);
    std::vector<std::byte> bits;
    for (int s = 0; s < 3; ++s) {
      const auto y = vntest::call_one(vntest::Call::step, vn, Backend::cpu, "obs", DType::float32, Shape{B, F}, data[s]);
      ref.update(data[s], B);
      EXPECT_TRUE(vntest::AllClose(
          what + " step " + std::to_string(s + 1), ref.normalize(data[s], B), vntest::decode(DType::float32, y),
          vntest::y_tolerances(ref.readouts(), pooled, F, data[s], vntest::rtol_for(DType::float32, s + 1), o.eps,
                               DType::float32)));
      bits.insert(bits.end(), y.begin(), y.end());
    }
    EXPECT_EQ(vn.count("obs"), 3 * (pooled ? B : 1)) << what;
    return bits;
  };
  const std::vector<std::byte> one = run(1, {}, "cpu_threads 1");

  ExecutorLog threads_log, serial_log, faulty_log;
  const auto on_threads = run(3, {&log_run<ExecKind::threads>, &threads_log}, "executor on threads");
  EXPECT_TRUE(vntest::BitEqual("executor on threads vs 1 thread", DType::float32, one, on_threads));
  EXPECT_GE(threads_log.calls.load(), 3);  // at least one parallel call per step
  EXPECT_EQ(threads_log.max_team.load(), 3);  // cpu_threads members, fewer than the chunks
  EXPECT_EQ(threads_log.members.load(), 3 * threads_log.calls.load());
  EXPECT_EQ(threads_log.other_threads.load(), 2 * threads_log.calls.load());

  const auto serial = run(2, {&log_run<ExecKind::serial>, &serial_log}, "serial executor");
  EXPECT_TRUE(vntest::BitEqual("serial executor vs 1 thread", DType::float32, one, serial));
  EXPECT_GE(serial_log.calls.load(), 3);

  const auto faulty = run(4, {&log_run<ExecKind::none>, &faulty_log}, "executor running no member");
  EXPECT_TRUE(vntest::BitEqual("executor running no member vs 1 thread", DType::float32, one, faulty));
  EXPECT_GE(faulty_log.calls.load(), 3);

  // cpu_threads = 1: one thread, no parallel call, the executor is never asked.
  ExecutorLog unused;
  const auto single = run(1, {&log_run<ExecKind::threads>, &unused}, "cpu_threads 1 with an executor");
  EXPECT_TRUE(vntest::BitEqual("cpu_threads 1 with an executor", DType::float32, one, single));
  EXPECT_EQ(unused.calls.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(All, CpuExecutor,
                         ::testing::Combine(::testing::Values(Estimator::torchrl, Estimator::stable), ::testing::Bool()),
                         [](const ::testing::TestParamInfo<ExecParam>& info) {
                           return std::string(vntest::estimator_name(std::get<0>(info.param))) + "_" +
                                  (std::get<1>(info.param) ? "pooled" : "per_element");
                         });

}  // namespace

