// tests/core/exact_test.cpp -- cases whose results are exact (small integers,
// dyadic weights) and closed forms.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
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

// The scale of a variance v that is exact in the stats dtype: its square root,
// correctly rounded to the stats dtype (float32 statistics may compute the
// read-out in float or in double, so both roundings are accepted there), or
// eps when smaller (eps itself may have been rounded to float32).
::testing::AssertionResult ScaleOfExactVariance(const std::string& what, double v, double eps, DType stats,
                                                double actual) {
  const double exact = std::max(std::sqrt(v), eps);
  const double as_float = std::max(static_cast<double>(std::sqrt(static_cast<float>(v))),
                                   static_cast<double>(static_cast<float>(eps)));
  if (actual == exact || (stats == DType::float32 && actual == as_float)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": variance " << v << ": expected scale " << exact
                                       << (stats == DType::float32 ? " (or its float32 rounding " : "")
                                       << (stats == DType::float32 ? std::to_string(as_float) + ")" : "")
                                       << ", actual " << actual;
}

using ExactParam = std::tuple<Backend, Estimator, DType>;
std::string exact_name(const ::testing::TestParamInfo<ExactParam>& info) {
  const auto& [b, e, s] = info.param;
  return std::string(vntest::backend_name(b)) + "_" + vntest::estimator_name(e) + "_stats_" + vntest::short_name(s);
}

class Exact : public ::testing::TestWithParam<ExactParam> {};

// Pooled, decay 1, batches of 1, 1, 2, 4, 8, ... samples: every weight is 1 or
// 1/2, every mean dyadic, so both estimators store the exact running mean and
// population variance of small-integer data.
TEST_P(Exact, PooledCumulativeDoublingBatches) {
  const auto& [backend, est, stats] = GetParam();
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    std::mt19937_64 rng(seed);
    vecnorm::Options o = vntest::options_for(backend);
    o.decay = 1.0;
    o.estimator = est;
    o.stats_dtype = stats;
    o.reduce_batch_dims = true;
    const std::int64_t F = 3;
    vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{}, {{"obs", Shape{F}, DType::int32}}});
    std::vector<std::vector<double>> seen(F);
    std::int64_t m = 1, total = 0;
    for (int step = 1; step <= 8; ++step) {
      const auto x = vntest::random_integers(rng, m * F, -8, 8);
      auto xb = vntest::DeviceBuffer::from_values(backend, DType::int32, Shape{m, F}, x);
      vntest::DeviceBuffer yb(backend, DType::float32, Shape{m, F});
      vn.step({{"obs", xb.cview(), yb.view()}});
      total += m;
      for (std::int64_t i = 0; i < m * F; ++i) seen[i % F].push_back(x[i]);
      const std::string where = std::string(vntest::estimator_name(est)) + " seed " + std::to_string(seed) +
                                " step " + std::to_string(step) + " (batch " + std::to_string(m) + ")";
      ASSERT_EQ(vn.count("obs"), total) << where;
      const auto loc = vn.loc("obs");
      const auto scale = vn.scale("obs");
      for (std::int64_t f = 0; f < F; ++f) {
        double mean, sd;
        vnref::mean_std(seen[f], mean, sd);
        EXPECT_EQ(loc[f], mean) << where << ", feature " << f;
        EXPECT_TRUE(ScaleOfExactVariance(where + ", feature " + std::to_string(f), sd * sd, o.eps, stats, scale[f]));
      }
      if (step >= 2) m *= 2;  // counts 1, 2, 4, 8, ...: the next batch doubles the count
    }
  }
}

// Stateless torchrl with decay 0.5: w = 1 - d = 1/2 is exact, so the stored raw
// moments of small integers are exact dyadic numbers for a dozen steps.
TEST_P(Exact, StatelessHalfDecayStoresExactMoments) {
  const auto& [backend, est, stats] = GetParam();
  if (est != Estimator::torchrl) GTEST_SKIP() << "stable's share (1-d)/(1-d^(n+1)) is not dyadic";
  vecnorm::Options o = vntest::options_for(backend);
  o.decay = 0.5;
  o.estimator = est;
  o.stats_dtype = stats;
  const Shape shape{3, 2};
  const vecnorm::KeyTable table{Shape{3}, {{"obs", Shape{2}, DType::uint8}}};
  vntest::DeviceBuffer loc(backend, stats, shape), var(backend, stats, shape), count(backend, DType::int64, shape);
  vnref::Config cfg{vnref::Estimator::torchrl, 0.5, o.eps};
  auto ref = vnref::StatelessStats::zeros(6);
  std::mt19937_64 rng(7);
  for (int step = 1; step <= 12; ++step) {
    const auto x = vntest::random_integers(rng, 6, 0, 9);
    auto xb = vntest::DeviceBuffer::from_values(backend, DType::uint8, shape, x);
    vntest::DeviceBuffer yb(backend, DType::float32, shape);
    vecnorm::StatelessItem item{"obs", xb.cview(), yb.view(), {loc.cview(), var.cview(), count.cview()},
                                {loc.view(), var.view(), count.view()}};
    vecnorm::stateless::step(o, table, {item});
    vnref::stateless_update(cfg, ref, x);
    std::vector<double> exp_loc, exp_var, exp_count;
    for (std::size_t i = 0; i < 6; ++i) {
      exp_loc.push_back(static_cast<double>(ref.cells[i].loc));
      exp_var.push_back(static_cast<double>(ref.cells[i].var));
      exp_count.push_back(static_cast<double>(ref.count[i]));
    }
    const std::string where = "step " + std::to_string(step);
    ASSERT_TRUE(vntest::AllEqual(where + ": loc", exp_loc, loc.values()));
    ASSERT_TRUE(vntest::AllEqual(where + ": var", exp_var, var.values()));
    ASSERT_TRUE(vntest::AllEqual(where + ": count", exp_count, count.values()));
  }
}

// Closed form: with decay 1 the read-outs are the running mean and the
// population standard deviation of everything seen (torchrl included: its
// variance bias vanishes when bc = 1), at every step.
TEST_P(Exact, CumulativeReadoutsAreRunningMeanAndPopulationStd) {
  const auto& [backend, est, stats] = GetParam();
  for (bool pooled : {false, true}) {
    for (std::uint64_t seed : {11u, 12u}) {
      std::mt19937_64 rng(seed);
      vecnorm::Options o = vntest::options_for(backend);
      o.decay = 1.0;
      o.estimator = est;
      o.stats_dtype = stats;
      o.reduce_batch_dims = pooled;
      const std::int64_t B = 5, F = 4;
      vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{B}, {{"obs", Shape{F}, DType::float64}}});
      const auto dist = vntest::random_distribution(rng, F, 2.0, 0.5, 2.0);
      const std::int64_t cells = pooled ? F : B * F;
      std::vector<std::vector<double>> seen(cells);
      for (int step = 1; step <= 20; ++step) {
        const auto x = vntest::random_values(rng, DType::float64, B, F, dist);
        auto xb = vntest::DeviceBuffer::from_values(backend, DType::float64, Shape{B, F}, x);
        vntest::DeviceBuffer yb(backend, DType::float64, Shape{B, F});
        vn.step({{"obs", xb.cview(), yb.view()}});
        for (std::int64_t i = 0; i < B * F; ++i) seen[pooled ? i % F : i].push_back(x[i]);
        std::vector<double> mean(cells), sd(cells), mean_tol(cells), sd_tol(cells);
        const double rtol = vntest::rtol_for(stats, step);
        for (std::int64_t k = 0; k < cells; ++k) {
          vnref::mean_std(seen[k], mean[k], sd[k]);
          double mag = 0;
          for (double v : seen[k]) mag = std::max(mag, std::fabs(v));
          mean_tol[k] = rtol * mag;
          // v is off by ~rtol * max x^2; sqrt turns that into ~rtol * max x^2 / (2 sd).
          sd_tol[k] = rtol * mag * mag / std::max(sd[k], 1e-4) + rtol * sd[k];
          sd[k] = std::max(sd[k], o.eps);
        }
        const std::string where = std::string(pooled ? "pooled" : "per-element") + " seed " + std::to_string(seed) +
                                  " step " + std::to_string(step);
        ASSERT_TRUE(vntest::AllClose(where + ": loc == running mean", mean, vn.loc("obs"), mean_tol));
        ASSERT_TRUE(vntest::AllClose(where + ": scale == population std", sd, vn.scale("obs"), sd_tol));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, Exact,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(Estimator::torchrl, Estimator::stable),
                                            ::testing::Values(DType::float32, DType::float64)),
                         exact_name);

// ---------------------------------------------------------------- first step

using FirstParam = std::tuple<Backend, DType>;
class FirstStep : public ::testing::TestWithParam<FirstParam> {};

// After one step the statistics are exact for every input dtype:
//   stable (any decay): mu = x, v = 0;  torchrl with decay 1: loc = x, var = x^2,
// v = x^2 - x^2 = 0. So loc(key) is the input converted per the dtype rules,
// scale is eps and y is 0 -- bit for bit.
TEST_P(FirstStep, StatisticsEqualTheFirstSample) {
  const auto& [backend, dtype] = GetParam();
  const DType out = vecnorm::output_dtype(dtype);
  for (DType stats : {DType::float32, DType::float64})
    for (Estimator est : {Estimator::torchrl, Estimator::stable})
      for (double decay : {1.0, 0.9, 0.9999}) {
        if (est == Estimator::torchrl && decay < 1.0) continue;  // 1/bc is rounded
        // float64 data in float32 statistics: loc is x rounded to float32, so
        // neither x - loc nor torchrl's var - loc^2 is 0.
        if (dtype == DType::float64 && stats == DType::float32) continue;
        std::mt19937_64 rng(static_cast<std::uint64_t>(dtype) * 31 + static_cast<std::uint64_t>(stats));
        vecnorm::Options o = vntest::options_for(backend);
        o.decay = decay;
        o.estimator = est;
        o.stats_dtype = stats;
        const Shape batch{3}, feature{4}, shape{3, 4};
        vecnorm::VecNorm vn(o, vecnorm::KeyTable{batch, {{"x", feature, dtype}}});
        const auto dist = vntest::random_distribution(rng, 4);
        const auto stored = vntest::random_values(rng, dtype, 3, 4, dist);
        const auto x = vntest::computed_inputs(dtype, stored);
        auto xb = vntest::DeviceBuffer::from_values(backend, dtype, shape, stored);
        vntest::DeviceBuffer yb(backend, out, shape);
        yb.fill(0xA5);
        vn.step({{"x", xb.cview(), yb.view()}});
        const std::string where = std::string(vntest::estimator_name(est)) + " d=" + vntest::decay_name(decay) +
                                  " stats " + vntest::short_name(stats) + " in " + vntest::short_name(dtype);
        EXPECT_TRUE(vntest::AllEqual(where + ": loc == first sample", x, vn.loc("x")));
        for (double s : vn.scale("x"))
          ASSERT_TRUE(s == o.eps || (stats == DType::float32 && s == static_cast<double>(static_cast<float>(o.eps))))
              << where << ": scale expected eps " << o.eps << ", actual " << s;
        EXPECT_TRUE(vntest::AllEqual(where + ": y == 0", std::vector<double>(12, 0.0), yb.values()));
      }
}

INSTANTIATE_TEST_SUITE_P(All, FirstStep,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::ValuesIn(vntest::all_input_dtypes())),
                         [](const ::testing::TestParamInfo<FirstParam>& info) {
                           return std::string(vntest::backend_name(std::get<0>(info.param))) + "_" +
                                  vntest::short_name(std::get<1>(info.param));
                         });

// Integers go through float32 before anything: 2^24 + 1 is seen as 2^24.
TEST(IntegerInputs, AreConvertedToFloat32First) {
  for (Backend backend : vntest::test_backends()) {
    vecnorm::Options o = vntest::options_for(backend);
    o.estimator = Estimator::stable;
    o.stats_dtype = DType::float64;
    const std::vector<double> values = {16777217.0, -16777217.0, 16777219.0, 2147483647.0};
    for (DType dtype : {DType::int32, DType::int64}) {
      vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{4}, {{"i", Shape{}, dtype}}});
      auto xb = vntest::DeviceBuffer::from_values(backend, dtype, Shape{4}, values);
      vntest::DeviceBuffer yb(backend, DType::float32, Shape{4});
      vn.step({{"i", xb.cview(), yb.view()}});
      const std::vector<double> expected = {16777216.0, -16777216.0, 16777220.0, 2147483648.0};
      EXPECT_TRUE(vntest::AllEqual(std::string("loc of ") + vecnorm::to_string(dtype), expected, vn.loc("i")));
    }
    vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{2}, {{"i", Shape{}, DType::int64}}});
    const std::vector<double> big = {1099511660544.0 + 32768.0 + 1.0, -4611686018427387904.0};  // 2^40 + 2^16 + 1: rounds up to 2^40 + 2^17
    auto xb = vntest::DeviceBuffer::from_values(backend, DType::int64, Shape{2}, big);
    vntest::DeviceBuffer yb(backend, DType::float32, Shape{2});
    vn.step({{"i", xb.cview(), yb.view()}});
    const std::vector<double> expected = {static_cast<double>(static_cast<float>(big[0])), big[1]};
    EXPECT_TRUE(vntest::AllEqual("loc of large int64", expected, vn.loc("i")));
  }
}

}  // namespace
