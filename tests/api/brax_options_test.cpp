// tests/api/brax_options_test.cpp -- the two options brax's running_statistics
// needs beyond the others': Options::max_scale (brax clips its std to at most
// 1e6) and Options::until_strict (brax's until_count: a batch that would take
// the count past the bound is left out). On every backend (the CUDA kernels
// under the emulator), against the naive reference (tests/reference) with the
// rule stated again here; across ranks; and the options' life in checkpoints,
// imports, shared segments, the exchange signature and validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "reference.hpp"
#include "support/data.hpp"
#include "support/device_buffer.hpp"
#include "support/errors.hpp"
#include "support/ranks.hpp"
#include "vecnorm/checkpoint.hpp"
#include "vecnorm/collective.hpp"
#include "vecnorm/vecnorm.hpp"

namespace {

using vecnorm::Backend;
using vecnorm::DType;
using vecnorm::ErrorCode;
using vecnorm::ScaleForm;
using vecnorm::Shape;
using vntest::DeviceBuffer;
using vntest::message_of;

constexpr std::int64_t kF = 4;

/// Step t's m rows: features of spread 1, 5, 0.01 and 20 (a bound of 3 on the
/// scale binds for the second and the fourth only).
std::vector<double> batch(int t, std::int64_t m, unsigned seed = 11) {
  static const vntest::FeatureDistribution dist{{2.0, -40.0, 0.0, 300.0}, {1.0, 5.0, 0.01, 20.0}};
  return vntest::step_values(dist, seed, t, m);
}

/// The scale of variance v under `form` with eps, then at most max_scale: the
/// rule as docs/numerics.md states it.
double bounded_scale(ScaleForm form, double v, double eps, double max_scale) {
  double s = form == ScaleForm::sqrt_var_plus_eps ? std::sqrt(v + eps)
             : form == ScaleForm::std_plus_eps    ? std::sqrt(v) + eps
                                                  : std::max(std::sqrt(v), eps);
  return std::min(s, max_scale);
}

/// Options on `backend` for the reference's estimator (decay 0.9 for torchrl's
/// EMA, 1 for the stable one), float64 statistics.
vecnorm::Options options(Backend backend, bool pooled, vnref::Estimator estimator) {
  vecnorm::Options o = vntest::options_for(backend);
  o.reduce_batch_dims = pooled;
  o.estimator = estimator == vnref::Estimator::stable ? vecnorm::Estimator::stable : vecnorm::Estimator::torchrl;
  o.decay = estimator == vnref::Estimator::stable ? 1.0 : 0.9;
  o.stats_dtype = DType::float64;
  return o;
}

// ---------------------------------------------------------------- max_scale

using ScaleParam = std::tuple<Backend, bool /*pooled*/, vnref::Estimator, ScaleForm>;
class MaxScale : public ::testing::TestWithParam<ScaleParam> {};

TEST_P(MaxScale, TheScaleIsAtMostTheBoundEverywhere) {
  const auto [backend, pooled, estimator, form] = GetParam();
  constexpr std::int64_t kRows = 6;
  constexpr double kMax = 3.0;
  vecnorm::Options o = options(backend, pooled, estimator);
  o.scale = form;
  o.eps = 1e-3;
  o.max_scale = kMax;
  vecnorm::VecNorm vn(o, {Shape{kRows}, {{"obs", Shape{kF}, DType::float32}}});
  // The reference's own scale is max(sqrt(v), tiny): sqrt(v) itself here.
  vnref::StatefulKey ref({estimator, o.decay, 1e-300}, pooled, kF, kRows);
  int bound = 0, free = 0;
  for (int t = 0; t < 5; ++t) {
    const std::string at = std::string(vntest::backend_name(backend)) + " step " + std::to_string(t);
    const std::vector<double> x = batch(t, kRows);
    ref.update(x, kRows);
    auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{kRows, kF}, x);
    DeviceBuffer yb(backend, DType::float32, Shape{kRows, kF});
    vn.step({{"obs", xb.cview(), yb.view()}});
    const std::vector<double> mu = ref.loc(), sd = ref.scale(), scale = vn.scale("obs");
    std::vector<double> want_scale(sd.size());
    for (std::size_t i = 0; i < sd.size(); ++i) {
      want_scale[i] = bounded_scale(form, sd[i] * sd[i], o.eps, kMax);
      (want_scale[i] == kMax ? bound : free) += 1;
      EXPECT_NEAR(scale[i], want_scale[i], 1e-6 * want_scale[i]) << at << " scale[" << i << "]";
    }
    // The outputs, to_affine and denormalize use the bounded scale.
    const std::vector<double> y = yb.values();
    DeviceBuffer ya(backend, DType::float32, Shape{kRows, kF}), back(backend, DType::float32, Shape{kRows, kF});
    vn.to_affine().apply({{"obs", xb.cview(), ya.view()}});
    EXPECT_EQ(ya.values(), y) << at << ": to_affine() applies the same map";
    vn.denormalize({{"obs", yb.cview(), back.view()}});
    const std::vector<double> xr = back.values();
    for (std::int64_t r = 0; r < kRows; ++r)
      for (std::int64_t f = 0; f < kF; ++f) {
        const std::size_t j = static_cast<std::size_t>(r * kF + f);
        const std::size_t i = static_cast<std::size_t>(pooled ? f : r * kF + f);
        const double want = (x[j] - mu[i]) / want_scale[i];
        EXPECT_NEAR(y[j], want, 2e-6 * std::max(1.0, std::abs(want))) << at << " y[" << j << "]";
        EXPECT_NEAR(xr[j], x[j], 1e-5 * std::max(1.0, std::abs(x[j]))) << at << " denormalized[" << j << "]";
      }
  }
  // (Per element, the first step's variance is 0: every scale is the form's floor.)
  EXPECT_GT(bound, 0) << "the bound bound somewhere";
  EXPECT_GT(free, 0) << "and somewhere it did not";
}

INSTANTIATE_TEST_SUITE_P(
    All, MaxScale,
    ::testing::Combine(::testing::ValuesIn(vntest::test_backends()), ::testing::Bool(),
                       ::testing::Values(vnref::Estimator::torchrl, vnref::Estimator::stable),
                       ::testing::Values(ScaleForm::clamp, ScaleForm::sqrt_var_plus_eps, ScaleForm::std_plus_eps)),
    [](const ::testing::TestParamInfo<ScaleParam>& info) {
      return std::string(vntest::backend_name(std::get<0>(info.param))) +
             (std::get<1>(info.param) ? "_pooled_" : "_per_element_") +
             (std::get<2>(info.param) == vnref::Estimator::stable ? "stable_" : "torchrl_") +
             vecnorm::to_string(std::get<3>(info.param));
    });

// ---------------------------------------------------------------- until_strict

class UntilStrict : public ::testing::TestWithParam<std::tuple<Backend, vnref::Estimator>> {};

// Batches of 6, 6, 6, a NaN row, then 4 and 2: with until 20 the rule merges a
// batch only while count + m <= 20 (m: the rows the mask keeps whose values are
// finite). Counts: 6, 12, 18; 5 rows (one NaN) would make 23: left out; a mask
// keeping 2 makes 20: merged; then nothing fits.
TEST_P(UntilStrict, ABatchThatWouldPassTheBoundIsLeftOut) {
  const auto [backend, estimator] = GetParam();
  constexpr std::int64_t kUntil = 20;
  vecnorm::Options o = options(backend, true, estimator);
  o.until = kUntil;
  o.until_strict = true;
  vecnorm::VecNorm vn(o, {Shape{}, {{"obs", Shape{kF}, DType::float32}}});
  vnref::StatefulKey ref({estimator, o.decay, o.eps}, true, kF);
  struct Step {
    std::int64_t rows;
    int nan_row;                     // -1: none
    std::vector<std::uint8_t> mask;  // empty: none
  };
  const std::vector<Step> steps = {{6, -1, {}},
                                   {6, -1, {}},
                                   {6, -1, {}},
                                   {6, 2, {1, 1, 1, 1, 1, 0}},  // 5 kept, one of them NaN: 4 -> 22, left out
                                   {4, -1, {0, 1, 0, 1}},       // 2 kept: 20, merged
                                   {1, -1, {}}};                // 21: left out
  const std::vector<std::int64_t> counts = {6, 12, 18, 18, 20, 20};
  for (std::size_t t = 0; t < steps.size(); ++t) {
    const Step& s = steps[t];
    const std::string at = std::string(vntest::backend_name(backend)) + " step " + std::to_string(t);
    std::vector<double> x = batch(static_cast<int>(t), s.rows);
    if (s.nan_row >= 0) x[static_cast<std::size_t>(s.nan_row * kF + 1)] = std::nan("");
    // The rows an update would take, and the rule.
    std::vector<double> kept;
    for (std::int64_t r = 0; r < s.rows; ++r) {
      const bool in = s.mask.empty() || s.mask[static_cast<std::size_t>(r)] != 0;
      const bool finite = std::all_of(x.begin() + r * kF, x.begin() + (r + 1) * kF, [](double v) { return std::isfinite(v); });
      if (in && finite) kept.insert(kept.end(), x.begin() + r * kF, x.begin() + (r + 1) * kF);
    }
    const std::int64_t m = static_cast<std::int64_t>(kept.size()) / kF;
    if (ref.count() + m <= kUntil) ref.update(kept, m);
    ASSERT_EQ(ref.count(), counts[t]) << at << " (the test's own arithmetic)";
    auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{s.rows, kF}, x);
    DeviceBuffer yb(backend, DType::float32, Shape{s.rows, kF});
    if (s.mask.empty()) {
      vn.step({{"obs", xb.cview(), yb.view()}});
    } else {
      const std::vector<double> mask_values(s.mask.begin(), s.mask.end());
      auto mb = DeviceBuffer::from_values(backend, DType::uint8, Shape{s.rows}, mask_values);
      vn.step({{"obs", xb.cview(), yb.view(), mb.cview()}});
    }
    EXPECT_EQ(vn.count("obs"), ref.count()) << at;
    const std::vector<double> mean = vn.loc("obs"), scale = vn.scale("obs"), want_mu = ref.loc(),
                              want_scale = ref.scale();
    for (std::size_t i = 0; i < mean.size(); ++i) {
      EXPECT_NEAR(mean[i], want_mu[i], 1e-10 * (std::abs(want_mu[i]) + want_scale[i])) << at << " mean[" << i << "]";
      EXPECT_NEAR(scale[i], want_scale[i], 1e-7 * want_scale[i]) << at << " scale[" << i << "]";
    }
    const std::vector<double> y = yb.values(), want = ref.normalize(x, s.rows);
    for (std::size_t j = 0; j < y.size(); ++j) {
      if (std::isnan(want[j])) continue;
      EXPECT_NEAR(y[j], want[j], 2e-6 * std::max(1.0, std::abs(want[j]))) << at << " y[" << j << "]";
    }
  }
}

// Without until_strict the same batches follow rsl_rl's rule: the batch that
// crosses is merged whole (count 18 + 4 = 22), and then nothing more.
TEST_P(UntilStrict, WithoutItTheCrossingBatchIsMergedWhole) {
  const auto [backend, estimator] = GetParam();
  vecnorm::Options o = options(backend, true, estimator);
  o.until = 20;
  vecnorm::VecNorm vn(o, {Shape{}, {{"obs", Shape{kF}, DType::float32}}});
  const std::vector<std::int64_t> rows = {6, 6, 6, 4, 2}, counts = {6, 12, 18, 22, 22};
  for (std::size_t t = 0; t < rows.size(); ++t) {
    auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{rows[t], kF}, batch(static_cast<int>(t), rows[t]));
    DeviceBuffer yb(backend, DType::float32, Shape{rows[t], kF});
    vn.step({{"obs", xb.cview(), yb.view()}});
    EXPECT_EQ(vn.count("obs"), counts[t]) << vntest::backend_name(backend) << " step " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(All, UntilStrict,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(vnref::Estimator::torchrl, vnref::Estimator::stable)),
                         [](const ::testing::TestParamInfo<std::tuple<Backend, vnref::Estimator>>& info) {
                           return std::string(vntest::backend_name(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) == vnref::Estimator::stable ? "_stable" : "_torchrl");
                         });

// Per-element statistics add 1 to the count a step, for which both rules
// agree: the count stops at the bound (a check that the option changes
// nothing there, not of the strict rule itself).
TEST(UntilStrictPerElement, StopsAtTheBoundAsTheOtherRule) {
  for (const Backend backend : vntest::test_backends()) {
    vecnorm::Options o = vntest::options_for(backend);
    o.until = 3;
    o.until_strict = true;
    vecnorm::VecNorm vn(o, {Shape{2}, {{"obs", Shape{kF}, DType::float32}}});
    for (int t = 0; t < 5; ++t) {
      auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{2, kF}, batch(t, 2));
      DeviceBuffer yb(backend, DType::float32, Shape{2, kF});
      vn.step({{"obs", xb.cview(), yb.view()}});
      EXPECT_EQ(vn.count("obs"), std::min(t + 1, 3)) << vntest::backend_name(backend) << " step " << t;
    }
  }
}

// Across ranks the rule takes every rank's rows: 2 + 3 + 4 = 9 a step, bound
// 25: merged at 0, 9 (count 18); 27 would pass it, so every rank stops at 18
// (rsl_rl's rule merges a third time: UntilRanks).
TEST(UntilStrictRanks, EveryRankDecidesOnAllRanksRows) {
  constexpr int kRanks = 3;
  for (const Backend backend : vntest::test_backends()) {
    vecnorm::Options base = vntest::pooled_cumulative_options(backend);
    base.until = 25;
    base.until_strict = true;
    const auto vns = vntest::ranks_of(base, {Shape{}, {{"obs", Shape{kF}, DType::float32}}}, kRanks);
    vnref::StatefulKey ref({vnref::Estimator::stable, 1.0, base.eps}, true, kF);
    for (int t = 0; t < 4; ++t) {
      std::vector<std::vector<double>> xs(kRanks), ys(kRanks);
      std::vector<double> all;
      for (int r = 0; r < kRanks; ++r) {
        xs[static_cast<std::size_t>(r)] = batch(t, 2 + r, 7u + static_cast<unsigned>(r));
        all.insert(all.end(), xs[static_cast<std::size_t>(r)].begin(), xs[static_cast<std::size_t>(r)].end());
      }
      if (ref.count() + 9 <= base.until) ref.update(all, 9);
      vntest::on_ranks(kRanks, [&](int r) {
        auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{2 + r, kF}, xs[static_cast<std::size_t>(r)]);
        DeviceBuffer yb(backend, DType::float32, Shape{2 + r, kF});
        vns[static_cast<std::size_t>(r)]->step({{"obs", xb.cview(), yb.view()}});
        ys[static_cast<std::size_t>(r)] = yb.values();
      });
      const std::string at = std::string(vntest::backend_name(backend)) + " step " + std::to_string(t);
      for (int r = 0; r < kRanks; ++r) {
        EXPECT_EQ(vns[static_cast<std::size_t>(r)]->count("obs"), ref.count()) << at << " rank " << r;
        const std::vector<double> w = ref.normalize(xs[static_cast<std::size_t>(r)], 2 + r);
        for (std::size_t j = 0; j < w.size(); ++j)
          EXPECT_NEAR(ys[static_cast<std::size_t>(r)][j], w[j], 2e-6 * std::max(1.0, std::abs(w[j])))
              << at << " rank " << r << " y[" << j << "]";
      }
    }
    EXPECT_EQ(ref.count(), 18);
  }
}

// ---------------------------------------------------------------- row weights

class RowWeights : public ::testing::TestWithParam<std::tuple<Backend, vnref::Estimator, DType>> {};

/// One step of `vn` (key "obs", F float32 features) over the rows x with int32
/// row weights w, and of the reference fed each row w times (a row holding a
/// non-finite value not at all): the count and `skipped` equal, the mean
/// within tol_mu and the scale within tol_scale of the reference's (relative
/// to the scale). Returns the outputs.
std::vector<double> weighted_step(vecnorm::VecNorm& vn, vnref::StatefulKey& ref, Backend backend,
                                  const std::vector<double>& x, const std::vector<double>& w, std::int64_t F,
                                  std::int64_t skipped, double tol_mu, double tol_scale, const std::string& at) {
  const std::int64_t rows = static_cast<std::int64_t>(w.size());
  std::vector<double> repeated;
  for (std::int64_t r = 0; r < rows; ++r) {
    const auto row = x.begin() + r * F;
    if (!std::all_of(row, row + F, [](double v) { return std::isfinite(v); })) continue;
    for (int k = 0; k < static_cast<int>(w[static_cast<std::size_t>(r)]); ++k)  // (none for w <= 0)
      repeated.insert(repeated.end(), row, row + F);
  }
  ref.update(repeated, static_cast<std::int64_t>(repeated.size()) / F);
  auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{rows, F}, x);
  auto wb = DeviceBuffer::from_values(backend, DType::int32, Shape{rows}, w);
  DeviceBuffer yb(backend, DType::float32, Shape{rows, F});
  vn.step({{"obs", xb.cview(), yb.view(), wb.cview()}});
  const vecnorm::State st = vn.export_state();
  EXPECT_EQ(st.keys[0].count, ref.count()) << at;
  EXPECT_EQ(st.keys[0].skipped, skipped) << at;
  const std::vector<double> mean = vn.loc("obs"), scale = vn.scale("obs"), want_mu = ref.loc(),
                            want_scale = ref.scale();
  for (std::size_t i = 0; i < mean.size(); ++i) {
    EXPECT_NEAR(mean[i], want_mu[i], tol_mu * (std::abs(want_mu[i]) + want_scale[i])) << at << " mean[" << i << "]";
    EXPECT_NEAR(scale[i], want_scale[i], tol_scale * want_scale[i]) << at << " scale[" << i << "]";
  }
  return yb.values();
}

// brax's weights: "a weight of 2 should be equivalent to updating on the data
// point twice". int32 row weights on pooled statistics (KeyData::mask): the
// reference is fed each row as many times as its weight (0 and negative
// weights: not at all), a NaN row (NonFinite::skip) not at all, and its
// weight counted in the health counter; a NaN in a row of weight 0 is never
// read. 2100 rows (two CUDA blocks of 2048 rows: their weighted partials
// merge); float64 and float32 statistics (the float compute type).
TEST_P(RowWeights, ARowOfWeightWCountsWTimes) {
  const auto [backend, estimator, stats] = GetParam();
  constexpr std::int64_t kRows = 2100;
  vecnorm::Options o = options(backend, true, estimator);
  o.stats_dtype = stats;
  // float32 statistics: torchrl's raw second moment of values near 300
  // cancels to about 1e-5 of the variance.
  const bool f64 = stats == DType::float64;
  const double tol = f64 ? 1e-9 : 2e-6, tol_scale = f64 ? 1e-7 : 5e-5, tol_y = f64 ? 6e-6 : 1e-4;
  vecnorm::VecNorm vn(o, {Shape{}, {{"obs", Shape{kF}, DType::float32}}});
  vnref::StatefulKey ref({estimator, o.decay, o.eps}, true, kF);
  std::int64_t skipped = 0;
  for (int t = 0; t < 4; ++t) {
    const std::string at = std::string(vntest::backend_name(backend)) + " step " + std::to_string(t);
    std::vector<double> x = batch(t, kRows, 21);
    std::vector<double> w(kRows);
    for (std::int64_t r = 0; r < kRows; ++r) w[static_cast<std::size_t>(r)] = static_cast<double>((r * 7 + t) % 5) - 1.0;  // -1..3
    if (t == 2) {
      x[static_cast<std::size_t>(5 * kF + 3)] = std::nan("");  // row 5, weight (35 + 2) % 5 - 1 = 1
      x[static_cast<std::size_t>(8 * kF + 0)] = std::nan("");  // row 8, weight (56 + 2) % 5 - 1 = 2
      skipped += 3;
    }
    const std::int64_t zero_row = (3 * (1 - t) % 5 + 5) % 5;  // (7 r + t) % 5 == 1: weight 0
    x[static_cast<std::size_t>(zero_row * kF + 1)] = std::nan("");  // never read
    const std::vector<double> y = weighted_step(vn, ref, backend, x, w, kF, skipped, tol, tol_scale, at),
                              want = ref.normalize(x, kRows);
    for (std::size_t j = 0; j < y.size(); ++j) {
      if (std::isnan(want[j])) continue;
      EXPECT_NEAR(y[j], want[j], tol_y * std::max(1.0, std::abs(want[j]))) << at << " y[" << j << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, RowWeights,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(vnref::Estimator::torchrl, vnref::Estimator::stable),
                                            ::testing::Values(DType::float64, DType::float32)),
                         [](const ::testing::TestParamInfo<std::tuple<Backend, vnref::Estimator, DType>>& info) {
                           return std::string(vntest::backend_name(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) == vnref::Estimator::stable ? "_stable_" : "_torchrl_") +
                                  vecnorm::to_string(std::get<2>(info.param));
                         });

// Row weights at every width the CPU's super rows take: F = 1 (a reward: 64
// rows a super row), 5 (13), 48 (2: lanes of two rows), 70 (one row a super
// row: a weight w > 1 is one broadcast), each with a tail of rows past the
// last full super row, rows of weight 0 holding NaN (never read), and a NaN
// in a row of weight 2 (NonFinite::skip: the batch is summed again without
// it). Against the reference fed each row w times.
TEST(RowWeightsWidths, EveryWidthOfSuperRowAndItsTail) {
  for (const Backend backend : vntest::test_backends())
    for (const std::int64_t F : {std::int64_t{1}, std::int64_t{5}, std::int64_t{48}, std::int64_t{70}})
      for (const vnref::Estimator estimator : {vnref::Estimator::torchrl, vnref::Estimator::stable}) {
        const std::string at = std::string(vntest::backend_name(backend)) + " F " + std::to_string(F);
        constexpr std::int64_t kRows = 1011;  // tails: 51 rows at F = 1, 10 at F = 5, 1 at F = 48
        const vecnorm::Options o = options(backend, true, estimator);
        vecnorm::VecNorm vn(o, {Shape{}, {{"obs", Shape{F}, DType::float32}}});
        vnref::StatefulKey ref({estimator, o.decay, o.eps}, true, F);
        std::mt19937_64 rng(static_cast<unsigned>(F));
        const vntest::FeatureDistribution dist = vntest::random_distribution(rng, F, 50.0);
        std::int64_t skipped = 0;
        for (int t = 0; t < 3; ++t) {
          std::vector<double> x = vntest::step_values(dist, 7u, t, kRows);
          std::vector<double> w(kRows);
          for (std::int64_t r = 0; r < kRows; ++r)
            w[static_cast<std::size_t>(r)] = static_cast<double>((r * 5 + t * 3 + r / 64) % 4);  // 0..3
          for (std::int64_t r = 0; r < kRows; r += 97)
            if (w[static_cast<std::size_t>(r)] == 0) x[static_cast<std::size_t>(r * F + F / 2)] = std::nan("");
          if (t == 1) {
            std::int64_t r2 = kRows / 2;  // a row of weight 2 past the middle
            while (w[static_cast<std::size_t>(r2)] != 2.0) ++r2;
            x[static_cast<std::size_t>(r2 * F)] = std::nan("");
            skipped += 2;
          }
          weighted_step(vn, ref, backend, x, w, F, skipped, 1e-6, 1e-5, at);
        }
      }
}

// Weights large enough that w (x - K)^2 passes the float range in the blocks'
// sums (values of +-1e15 at weight 2^31 - 1; int64 values of +-1e17 at
// weight 1e6): the moments are made again in double under every NonFinite
// rule, so the scale is the data's (1e15, 1e17), not inf; a real NaN in a
// weighted row still propagates under NonFinite::propagate.
TEST(RowWeightsHuge, SumsPastTheFloatRangeAreMadeAgainInDouble) {
  for (const Backend backend : vntest::test_backends())
    for (const vecnorm::NonFinite rule : {vecnorm::NonFinite::skip, vecnorm::NonFinite::propagate})
      for (const DType xt : {DType::float32, DType::int64}) {
        const std::string at = std::string(vntest::backend_name(backend)) + " " + vecnorm::to_string(xt) +
                               (rule == vecnorm::NonFinite::skip ? " skip" : " propagate");
        vecnorm::Options o = options(backend, true, vnref::Estimator::stable);
        o.nonfinite = rule;
        o.stats_dtype = DType::float32;
        constexpr std::int64_t kRows = 300, kFeat = 4;
        const double v = xt == DType::float32 ? 1e15 : 1e17, w = xt == DType::float32 ? 2147483647.0 : 1e6;
        std::vector<double> x(kRows * kFeat);
        for (std::size_t i = 0; i < x.size(); ++i) x[i] = (i / kFeat) % 2 == 0 ? v : -v;
        vecnorm::VecNorm vn(o, {Shape{}, {{"obs", Shape{kFeat}, xt}}});
        auto xb = DeviceBuffer::from_values(backend, xt, Shape{kRows, kFeat}, x);
        auto wb = DeviceBuffer::from_values(backend, DType::int32, Shape{kRows}, std::vector<double>(kRows, w));
        DeviceBuffer yb(backend, DType::float32, Shape{kRows, kFeat});
        vn.step({{"obs", xb.cview(), yb.view(), wb.cview()}});
        EXPECT_EQ(vn.count("obs"), kRows * static_cast<std::int64_t>(w)) << at;
        for (const double sc : vn.scale("obs")) EXPECT_NEAR(sc, v, 1e-5 * v) << at;
        for (const double mu : vn.loc("obs")) EXPECT_NEAR(mu, 0.0, 1e-5 * v) << at;
        if (xt != DType::float32 || rule != vecnorm::NonFinite::propagate) continue;
        x[5] = std::nan("");  // row 1: propagated
        vecnorm::VecNorm nan_vn(o, {Shape{}, {{"obs", Shape{kFeat}, xt}}});
        auto xn = DeviceBuffer::from_values(backend, xt, Shape{kRows, kFeat}, x);
        nan_vn.step({{"obs", xn.cview(), yb.view(), wb.cview()}});
        EXPECT_TRUE(std::isnan(nan_vn.scale("obs")[1])) << at;
      }
}

// Weights of 0 and 1 are the uint8 mask's rows (within rounding); under
// NonFinite::propagate a NaN in a row of weight 0 stays out (it is never
// read); across 3 ranks the weights of every rank count; per-element
// statistics refuse weights by name.
TEST(RowWeightsMore, ZeroOneWeightsAreTheMaskRanksAddTheirWeightsPerElementRefuses) {
  for (const Backend backend : vntest::test_backends()) {
    const std::string at = vntest::backend_name(backend);
    vecnorm::Options o = options(backend, true, vnref::Estimator::stable);
    vecnorm::VecNorm a(o, {Shape{}, {{"obs", Shape{kF}, DType::float32}}}), b(o, {Shape{}, {{"obs", Shape{kF}, DType::float32}}});
    for (int t = 0; t < 3; ++t) {
      const std::vector<double> x = batch(t, 9, 3);
      std::vector<double> w(9);
      for (std::size_t r = 0; r < 9; ++r) w[r] = static_cast<double>((r + static_cast<std::size_t>(t)) % 2);
      auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{9, kF}, x);
      auto wb = DeviceBuffer::from_values(backend, DType::int32, Shape{9}, w);
      auto mb = DeviceBuffer::from_values(backend, DType::uint8, Shape{9}, w);
      DeviceBuffer ya(backend, DType::float32, Shape{9, kF}), yb(backend, DType::float32, Shape{9, kF});
      a.step({{"obs", xb.cview(), ya.view(), wb.cview()}});
      b.step({{"obs", xb.cview(), yb.view(), mb.cview()}});
      EXPECT_EQ(a.export_state().keys[0].count, b.export_state().keys[0].count) << at;
      const std::vector<double> la = a.loc("obs"), lb = b.loc("obs"), sa = a.scale("obs"), sb = b.scale("obs");
      for (std::size_t i = 0; i < la.size(); ++i) {
        EXPECT_NEAR(la[i], lb[i], 1e-12 * (std::abs(lb[i]) + sb[i])) << at;
        EXPECT_NEAR(sa[i], sb[i], 1e-12 * sb[i]) << at;
      }
    }
    {
      vecnorm::Options prop = o;
      prop.nonfinite = vecnorm::NonFinite::propagate;
      vecnorm::VecNorm c(prop, {Shape{}, {{"obs", Shape{kF}, DType::float32}}});
      std::vector<double> x = batch(0, 9, 3);
      x[static_cast<std::size_t>(4 * kF + 2)] = std::nan("");
      std::vector<double> w(9, 1.0);
      w[4] = 0.0;
      auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{9, kF}, x);
      auto wb = DeviceBuffer::from_values(backend, DType::int32, Shape{9}, w);
      DeviceBuffer yb(backend, DType::float32, Shape{9, kF});
      c.step({{"obs", xb.cview(), yb.view(), wb.cview()}});
      EXPECT_EQ(c.count("obs"), 8) << at;
      for (const double v : c.scale("obs")) EXPECT_TRUE(std::isfinite(v)) << at << ": a weight-0 NaN was read";
    }
    // Ranks: rank r has 2 + r rows of weight r + 1; the reference repeats them.
    constexpr int kRanks = 3;
    const auto vns = vntest::ranks_of(vntest::pooled_cumulative_options(backend),
                                      {Shape{}, {{"obs", Shape{kF}, DType::float32}}}, kRanks);
    vnref::StatefulKey ref({vnref::Estimator::stable, 1.0, o.eps}, true, kF);
    for (int t = 0; t < 2; ++t) {
      std::vector<std::vector<double>> xs(kRanks);
      std::vector<double> all;
      for (int r = 0; r < kRanks; ++r) {
        xs[static_cast<std::size_t>(r)] = batch(t, 2 + r, 40u + static_cast<unsigned>(r));
        for (int k = 0; k <= r; ++k)
          all.insert(all.end(), xs[static_cast<std::size_t>(r)].begin(), xs[static_cast<std::size_t>(r)].end());
      }
      ref.update(all, static_cast<std::int64_t>(all.size()) / kF);
      vntest::on_ranks(kRanks, [&](int r) {
        auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{2 + r, kF}, xs[static_cast<std::size_t>(r)]);
        auto wb = DeviceBuffer::from_values(backend, DType::int32, Shape{2 + r},
                                            std::vector<double>(static_cast<std::size_t>(2 + r), r + 1.0));
        DeviceBuffer yb(backend, DType::float32, Shape{2 + r, kF});
        vns[static_cast<std::size_t>(r)]->step({{"obs", xb.cview(), yb.view(), wb.cview()}});
      });
      for (int r = 0; r < kRanks; ++r) {
        EXPECT_EQ(vns[static_cast<std::size_t>(r)]->count("obs"), ref.count()) << at << " rank " << r;
        const std::vector<double> mean = vns[static_cast<std::size_t>(r)]->loc("obs"), want = ref.loc();
        for (std::size_t i = 0; i < mean.size(); ++i)
          EXPECT_NEAR(mean[i], want[i], 1e-9 * (std::abs(want[i]) + 1.0)) << at << " rank " << r;
      }
    }
    EXPECT_EQ(ref.count(), 2 * (2 * 1 + 3 * 2 + 4 * 3));
    // Per-element statistics: refused by name, nothing changed.
    vecnorm::VecNorm pe(options(backend, false, vnref::Estimator::stable), {Shape{2}, {{"obs", Shape{kF}, DType::float32}}});
    auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{2, kF}, batch(0, 2));
    auto wb = DeviceBuffer::from_values(backend, DType::int32, Shape{2}, {1.0, 2.0});
    DeviceBuffer yb(backend, DType::float32, Shape{2, kF});
    const std::string m = message_of([&] { pe.step({{"obs", xb.cview(), yb.view(), wb.cview()}}); },
                                     ErrorCode::invalid_argument);
    EXPECT_NE(m.find("key 'obs': mask: int32 row weights need pooled statistics"), std::string::npos) << m;
    EXPECT_EQ(pe.count("obs"), 0) << at;
  }
}

// ---------------------------------------------------------------- the options' life

TEST(BraxOptions, ValidationNamesTheOptionAndTheValue) {
  vecnorm::Options o;
  o.max_scale = 0.0;
  EXPECT_NE(message_of([&] { o.validate(); }, ErrorCode::invalid_option)
                .find("option max_scale: expected max_scale > 0 (inf: no bound), got 0"),
            std::string::npos);
  o.max_scale = std::nan("");
  EXPECT_NE(message_of([&] { o.validate(); }, ErrorCode::invalid_option).find("option max_scale"), std::string::npos);
  o.max_scale = 1e6;
  o.until_strict = true;
  EXPECT_NE(message_of([&] { o.validate(); }, ErrorCode::invalid_option)
                .find("option until_strict: expected false without until"),
            std::string::npos);
  o.until = 5;
  EXPECT_NO_THROW(o.validate());
}

TEST(BraxOptions, CheckpointsKeepThemInFormat8AndImportsAdoptThem) {
  vecnorm::Options o;
  o.reduce_batch_dims = true;
  o.max_scale = 0.5;
  o.until = 10;
  o.until_strict = true;
  const vecnorm::KeyTable table{Shape{}, {{"obs", Shape{kF}, DType::float32}}};
  vecnorm::VecNorm vn(o, table);
  std::vector<float> x(4 * kF), y1(4 * kF), y2(4 * kF);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 5) * 3.0f;
  auto step = [&](vecnorm::VecNorm& v, std::vector<float>& y) {
    v.step({{"obs", vecnorm::ConstTensorView(x.data(), DType::float32, Shape{4, kF}),
             vecnorm::TensorView{y.data(), DType::float32, Shape{4, kF}}}});
  };
  step(vn, y1);
  const std::vector<std::uint8_t> bytes = vecnorm::encode_state(vn.export_state());
  EXPECT_EQ(bytes[8], 8u) << "max_scale and until_strict need format 8";
  const vecnorm::State back = vecnorm::decode_state(bytes);
  EXPECT_EQ(back.options.max_scale, 0.5);
  EXPECT_TRUE(back.options.until_strict);
  EXPECT_EQ(back.options.until, 10);
  // Either alone needs it too; neither: the older format.
  vecnorm::State plain = back;
  plain.options.until_strict = false;
  EXPECT_EQ(vecnorm::encode_state(plain)[8], 8u);
  plain.options.max_scale = std::numeric_limits<double>::infinity();
  EXPECT_EQ(vecnorm::encode_state(plain)[8], 4u);
  // A fresh normalizer adopts them: its steps are the original's, bit for bit
  // (counts 4 -> 8; 12 would pass 10: both stop at 8).
  vecnorm::VecNorm adopted{vecnorm::Options{}};
  adopted.import_state(back);
  for (int t = 0; t < 2; ++t) {
    step(vn, y1);
    step(adopted, y2);
    EXPECT_EQ(y1, y2) << "step " << t;
  }
  EXPECT_EQ(adopted.count("obs"), 8);
  for (double s : adopted.scale("obs")) EXPECT_LE(s, 0.5);
  // Bad values in a file are refused, naming them: max_scale is the f64 at
  // byte 96 of the version 8 header (after center), until_strict the u32 at
  // 104, before the batch shape's ndim; the CRC-32C trailer made again.
  auto refused = [&](std::size_t at, std::vector<std::uint8_t> value, const std::string& want) {
    std::vector<std::uint8_t> bad = bytes;
    std::copy(value.begin(), value.end(), bad.begin() + static_cast<std::ptrdiff_t>(at));
    const std::uint32_t crc = vecnorm::crc32c(std::span<const std::uint8_t>(bad.data(), bad.size() - 4));
    for (std::size_t i = 0; i < 4; ++i) bad[bad.size() - 4 + i] = static_cast<std::uint8_t>(crc >> (8 * i));
    const std::string m = message_of([&] { (void)vecnorm::decode_state(bad); }, ErrorCode::state_mismatch);
    EXPECT_NE(m.find(want), std::string::npos) << m;
  };
  EXPECT_EQ(bytes[104], 1u);
  EXPECT_EQ(bytes[102], 0xe0u) << "0.5 as a little-endian double: 00 .. 00 e0 3f";
  refused(104, {2, 0, 0, 0}, "until_strict: expected 0 or 1, got 2");
  refused(96, {0, 0, 0, 0, 0, 0, 0, 0x80}, "max_scale: expected max_scale > 0 (inf: no bound), got ");
  // Neither set: version 8 is not written for that (one encoding per state).
  refused(96, {0, 0, 0, 0, 0, 0, 0xf0, 0x7f, 0, 0, 0, 0}, "expected a finite max_scale or until_strict 1");
}

// The ranks' signatures differ when either option does: every rank refuses
// the step and changes nothing (the message lists the options compared).
TEST(BraxOptions, RanksThatDifferAreRefused) {
  for (const bool strict_differs : {false, true}) {
    const auto group = vecnorm::thread_group(2);
    std::vector<std::unique_ptr<vecnorm::VecNorm>> vns;
    for (int r = 0; r < 2; ++r) {
      vecnorm::Options o;
      o.reduce_batch_dims = true;
      o.until = 100;
      o.until_strict = strict_differs && r == 1;
      o.max_scale = !strict_differs && r == 1 ? 2.0 : std::numeric_limits<double>::infinity();
      o.collective = group[static_cast<std::size_t>(r)];
      vns.push_back(std::make_unique<vecnorm::VecNorm>(o, vecnorm::KeyTable{Shape{}, {{"obs", Shape{kF}, DType::float32}}}));
    }
    std::vector<std::string> errors(2);
    vntest::on_ranks(2, [&](int r) {
      std::vector<float> x(3 * kF, 1.0f + static_cast<float>(r)), y(3 * kF);
      errors[static_cast<std::size_t>(r)] = message_of(
          [&] {
            vns[static_cast<std::size_t>(r)]->step(
                {{"obs", vecnorm::ConstTensorView(x.data(), DType::float32, Shape{3, kF}),
                  vecnorm::TensorView{y.data(), DType::float32, Shape{3, kF}}}});
          },
          ErrorCode::collective_error);
    });
    for (int r = 0; r < 2; ++r) {
      const std::string& e = errors[static_cast<std::size_t>(r)];
      EXPECT_NE(e.find("rank 1's normalizer differs from rank 0's"), std::string::npos) << e;
      EXPECT_EQ(vns[static_cast<std::size_t>(r)]->count("obs"), 0) << "rank " << r << " changed nothing";
    }
  }
}

}  // namespace
