// tests/numerics/cancellation_test.cpp -- float32 data with mean 100 and std
// 0.01 for 10,000 steps (batch 64 x feature 4), where torchrl's var - loc^2
// cancels catastrophically in float32 (semantics, deliberate differences 1 and 5).
//
//   * no NaN in any output or scale, with either estimator and either stats dtype;
//   * stable with float32 statistics: scale within 1e-3 relative of the exact
//     weighted standard deviation (the reference's stable formulas in long double);
//   * torchrl agrees with the reference's torchrl formulas, variance bias
//     included, to 1e-5 relative -- with float64 statistics: in float32 the
//     stored var and loc^2 are ~1e4 with an ulp of ~1e-3, ten times the variance
//     1e-4, so no float32 implementation of these formulas can meet 1e-5 there.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <tuple>

#include "support/check.hpp"
#include "support/device_buffer.hpp"
#include "support/dtypes.hpp"
#include "support/harness.hpp"

namespace {

using vecnorm::Backend;
using vecnorm::DType;
using vecnorm::Estimator;
using vecnorm::Shape;

using Param = std::tuple<Backend, Estimator, bool /*pooled*/, double /*decay*/, DType /*stats*/>;

class Cancellation : public ::testing::TestWithParam<Param> {};

TEST_P(Cancellation, MeanHundredStdOneHundredth) {
  const auto& [backend, est, pooled, decay, stats] = GetParam();
  const std::int64_t B = 64, F = 4;
  const int steps = 10000;
  const std::vector<double> mean = {100.0, -100.0, 100.5, 99.0};
  // std 0.01 as specified (0.02 for one feature). At std 0.005 the float32 mean's
  // rounding (half an ulp of 100 is 3.8e-6) alone costs ~1e-3 of the scale.
  const std::vector<double> sd = {0.01, 0.01, 0.02, 0.01};

  vecnorm::Options o = vntest::options_for(backend);
  o.estimator = est;
  o.reduce_batch_dims = pooled;
  o.decay = decay;
  o.stats_dtype = stats;
  vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{B}, {{"obs", Shape{F}, DType::float32}}});
  vnref::StatefulKey truth({vnref::Estimator::stable, decay, o.eps}, pooled, F, B);
  vnref::StatefulKey same_formulas({vntest::to_ref(est), decay, o.eps}, pooled, F, B);
  const bool compare_torchrl = est == Estimator::torchrl && stats == DType::float64;

  std::mt19937_64 rng(2024);
  std::normal_distribution<double> z;
  double worst_rel = 0.0;  // measured, printed for the record (the assertions hold the bounds)
  auto track = [&](const std::vector<double>& expected, const std::vector<double>& got) {
    for (std::size_t i = 0; i < expected.size(); ++i)
      worst_rel = std::max(worst_rel, std::fabs(got[i] - expected[i]) / std::fabs(expected[i]));
  };
  std::vector<double> x(B * F);
  vntest::DeviceBuffer xb(backend, DType::float32, Shape{B, F}), yb(backend, DType::float32, Shape{B, F});
  for (int step = 1; step <= steps; ++step) {
    for (std::int64_t i = 0; i < B * F; ++i) x[i] = static_cast<float>(mean[i % F] + sd[i % F] * z(rng));
    xb.set_bytes(vntest::encode(DType::float32, x));
    vn.step({{"obs", xb.cview(), yb.view()}});
    truth.update(x, B);
    if (compare_torchrl) same_formulas.update(x, B);
    const std::string where = "step " + std::to_string(step);
    ASSERT_TRUE(vntest::AllFinite(where + ": y", yb.values()));
    if (step % 500 != 0 && step > 3) continue;

    const auto scale = vn.scale("obs");
    ASSERT_TRUE(vntest::AllFinite(where + ": scale", scale));
    ASSERT_EQ(vn.count("obs"), step * (pooled ? B : 1));
    // Precision is checked from step 500 on: in the first steps a per-element
    // statistic has seen a handful of samples whose spread (~1e-3) is within a
    // few ulps of 100 -- float32 (stable) or float64 (torchrl's var - loc^2)
    // cannot resolve it to 1e-3 / 1e-5 there, whatever the implementation.
    if (step < 500) continue;
    if (est == Estimator::stable) {
      const auto expected = truth.scale();
      std::vector<double> tol(expected.size());
      for (std::size_t i = 0; i < tol.size(); ++i) tol[i] = 1e-3 * expected[i];
      ASSERT_TRUE(vntest::AllClose(where + ": stable scale vs the exact weighted std", expected, scale, tol));
      track(expected, scale);
      const auto loc_expected = truth.loc();
      // float32 loc: once a * delta falls under half an ulp of ~100 the stored
      // mean stops moving (stagnation) while the exact mean drifts on by ~1e-4;
      // allow 64 ulps of 100 (5e-4, 2.5% of the std). float64: 1e-9 relative.
      const double loc_tol = stats == DType::float32 ? 64 * vntest::ulp(DType::float32, 100.5) : 1e-9 * 100.5;
      ASSERT_TRUE(vntest::AllClose(where + ": stable loc", loc_expected, vn.loc("obs"), loc_tol));
    }
    if (compare_torchrl) {
      const auto expected = same_formulas.scale();
      std::vector<double> tol(expected.size());
      for (std::size_t i = 0; i < tol.size(); ++i) tol[i] = 1e-5 * expected[i];
      ASSERT_TRUE(vntest::AllClose(where + ": torchrl scale vs the reference's torchrl formulas", expected, scale, tol));
      track(expected, scale);
      const auto loc_expected = same_formulas.loc();
      std::vector<double> ltol(loc_expected.size());
      for (std::size_t i = 0; i < ltol.size(); ++i) ltol[i] = 1e-5 * std::fabs(loc_expected[i]);
      ASSERT_TRUE(vntest::AllClose(where + ": torchrl loc", loc_expected, vn.loc("obs"), ltol));
    }
  }
  if (est == Estimator::stable || compare_torchrl)
    std::printf("[ measured ] %s: no NaN in 10000 steps; worst relative scale error %.3g (bound %g)\n",
                ::testing::UnitTest::GetInstance()->current_test_info()->name(), worst_rel,
                est == Estimator::stable ? 1e-3 : 1e-5);
}

INSTANTIATE_TEST_SUITE_P(All, Cancellation,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(Estimator::torchrl, Estimator::stable), ::testing::Bool(),
                                            ::testing::Values(1.0, 0.9, 0.9999),
                                            ::testing::Values(DType::float32, DType::float64)),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           const Backend b = std::get<0>(info.param);
                           const Estimator e = std::get<1>(info.param);
                           const bool pooled = std::get<2>(info.param);
                           const double d = std::get<3>(info.param);
                           const DType s = std::get<4>(info.param);
                           std::string dn = vntest::decay_name(d);
                           for (char& ch : dn)
                             if (ch == '.') ch = 'p';
                           return std::string(vntest::backend_name(b)) + "_" + vntest::estimator_name(e) + "_" +
                                  (pooled ? "pooled" : "per_element") + "_d" + dn + "_" + vntest::short_name(s);
                         });

}  // namespace
