// tests/api/reward_test.cpp -- vecnorm::RewardScaler (reward scaling by the
// discounted return) on every backend (the CUDA kernels under the emulator),
// against a naive double-precision reference written here from the anchors'
// rules (docs/anchors.md, "What vecnorm needs", item 10): SB3's VecNormalize
// (R = gamma R + r, Chan's merge from count 1e-4, r / sqrt(var + 1e-8) clipped
// to 10, R = 0 after a done), Gymnasium's NormalizeReward (R = gamma R (1 -
// done) + r) and rsl_rl's RND scaler (never reset); row masks, freezing, a
// refused update that changes nothing, the returns' read-out and restore, and
// the errors.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "support/device_buffer.hpp"
#include "support/errors.hpp"
#include "support/ranks.hpp"
#include "vecnorm/checkpoint.hpp"
#include "vecnorm/reward.hpp"
#include "vecnorm/vecnorm.hpp"

namespace {

using vecnorm::Backend;
using vecnorm::DType;
using vecnorm::ErrorCode;
using vecnorm::ReturnReset;
using vecnorm::Shape;
using vntest::DeviceBuffer;
using vntest::message_of;

constexpr double kPrior = 1e-4, kEps = 1e-8, kClip = 10.0, kGamma = 0.99;

/// The reference: per-environment returns and their pooled statistics (one
/// per feature), in double.
struct Reference {
  ReturnReset reset;
  std::int64_t envs, feat;
  std::vector<double> R, mean, var;
  double count = kPrior;

  Reference(ReturnReset r, std::int64_t e, std::int64_t f)
      : reset(r), envs(e), feat(f), R(static_cast<std::size_t>(e * f), 0.0), mean(static_cast<std::size_t>(f), 0.0),
        var(static_cast<std::size_t>(f), 1.0) {}

  /// One step: the scaled rewards. `frozen`: the statistics do not move.
  std::vector<double> step(const std::vector<double>& r, const std::vector<std::uint8_t>& done,
                           const std::vector<std::uint8_t>& mask, bool frozen = false) {
    std::vector<double> entered(R.size());
    for (std::int64_t e = 0; e < envs; ++e)
      for (std::int64_t f = 0; f < feat; ++f) {
        const std::size_t i = static_cast<std::size_t>(e * feat + f);
        const bool d = reset != ReturnReset::never && done[static_cast<std::size_t>(e)] != 0;
        // A row the mask leaves out is inactive: its return holds.
        entered[i] = mask[static_cast<std::size_t>(e)] == 0      ? R[i]
                     : (d && reset == ReturnReset::before) ? r[i]
                                                           : R[i] * kGamma + r[i];
      }
    if (!frozen) {
      double m = 0.0;
      for (std::int64_t e = 0; e < envs; ++e) m += mask[static_cast<std::size_t>(e)] != 0 ? 1.0 : 0.0;
      if (m > 0)
        for (std::int64_t f = 0; f < feat; ++f) {
          double bm = 0.0, bv = 0.0;
          for (std::int64_t e = 0; e < envs; ++e)
            if (mask[static_cast<std::size_t>(e)] != 0) bm += entered[static_cast<std::size_t>(e * feat + f)];
          bm /= m;
          for (std::int64_t e = 0; e < envs; ++e)
            if (mask[static_cast<std::size_t>(e)] != 0) {
              const double d = entered[static_cast<std::size_t>(e * feat + f)] - bm;
              bv += d * d;
            }
          bv /= m;
          const std::size_t fi = static_cast<std::size_t>(f);
          const double tot = count + m, delta = bm - mean[fi];
          const double m2 = var[fi] * count + bv * m + delta * delta * count * m / tot;
          mean[fi] += delta * m / tot;
          var[fi] = m2 / tot;
        }
      count += m;
    }
    std::vector<double> y(r.size());
    for (std::size_t i = 0; i < r.size(); ++i)
      y[i] = std::clamp(r[i] / std::sqrt(var[i % static_cast<std::size_t>(feat)] + kEps), -kClip, kClip);
    for (std::int64_t e = 0; e < envs; ++e)
      for (std::int64_t f = 0; f < feat; ++f) {
        const std::size_t i = static_cast<std::size_t>(e * feat + f);
        const bool d = reset != ReturnReset::never && done[static_cast<std::size_t>(e)] != 0;
        if (mask[static_cast<std::size_t>(e)] != 0) R[i] = (d && reset == ReturnReset::after) ? 0.0 : entered[i];
      }
    return y;
  }
};

/// SB3's return statistics (include/vecnorm/reward.hpp).
vecnorm::Options sb3_stats(Backend b, DType dtype) {
  vecnorm::Options o = vntest::options_for(b);
  o.estimator = vecnorm::Estimator::stable;
  o.decay = 1.0;
  o.prior_count = kPrior;
  o.scale = vecnorm::ScaleForm::sqrt_var_plus_eps;
  o.eps = kEps;
  o.clip = kClip;
  o.stats_dtype = dtype;
  o.reduce_batch_dims = true;
  o.center = false;
  return o;
}

/// Step t's rewards (float32 values: exact in both dtypes; two outliers), dones
/// (about 1 in 10) and row mask (about 1 row in 5 left out; every row when !masked).
struct Stream {
  std::vector<double> r;
  std::vector<std::uint8_t> done, mask;
};
Stream stream_at(int t, std::int64_t envs, std::int64_t feat, bool masked) {
  std::mt19937_64 rng(1234u + static_cast<unsigned>(t));
  std::normal_distribution<double> z(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  Stream s;
  for (std::int64_t i = 0; i < envs * feat; ++i)
    s.r.push_back(static_cast<double>(static_cast<float>(0.5 + 2.0 * z(rng) + (i % 3 == 0 ? 5.0 : 0.0))));
  // Late outliers (a count of thousands by then: one return moves the variance
  // little, so the reward divided by the scale reaches the clip bound).
  if (t == 120 || t == 199) s.r[0] = 3000.0;
  for (std::int64_t e = 0; e < envs; ++e) {
    s.done.push_back(u(rng) < 0.1 ? 1 : 0);
    s.mask.push_back(masked && u(rng) < 0.2 ? 0 : 1);
  }
  return s;
}

using Param = std::tuple<Backend, ReturnReset, DType, bool /*masked*/, bool /*scalar*/>;
class Rewards : public ::testing::TestWithParam<Param> {
 protected:
  Backend backend() const { return std::get<0>(GetParam()); }
  ReturnReset reset() const { return std::get<1>(GetParam()); }
  DType dtype() const { return std::get<2>(GetParam()); }
  bool masked() const { return std::get<3>(GetParam()); }
  /// One reward per environment (feature shape [], the CPU's flat loops), else 2.
  bool scalar() const { return std::get<4>(GetParam()); }
  double rtol() const { return dtype() == DType::float64 ? 1e-12 : 2e-5; }
};

TEST_P(Rewards, FollowTheReferenceOverAnEpisodeStream) {
  const std::int64_t envs = 16, feat = scalar() ? 1 : 2;
  const Shape fshape = scalar() ? Shape{} : Shape{feat};
  vecnorm::RewardScaler rs(sb3_stats(backend(), dtype()), {kGamma, reset()},
                           {Shape{envs}, {{"reward", fshape, dtype()}}});
  Reference ref(reset(), envs, feat);
  bool clipped = false;
  for (int t = 0; t < 200; ++t) {
    const std::string at = "step " + std::to_string(t);
    const Stream s = stream_at(t, envs, feat, masked());
    const std::vector<double> want = ref.step(s.r, s.done, s.mask);
    const Shape rshape = Shape{envs}.concat(fshape);
    auto r = DeviceBuffer::from_values(backend(), dtype(), rshape, s.r);
    DeviceBuffer y(backend(), dtype(), rshape);
    std::vector<double> dv(s.done.begin(), s.done.end()), mv(s.mask.begin(), s.mask.end());
    auto done = DeviceBuffer::from_values(backend(), DType::uint8, Shape{envs}, dv);
    auto mask = DeviceBuffer::from_values(backend(), DType::uint8, Shape{envs}, mv);
    rs.step({{"reward", r.cview(), y.view(), done.cview(), masked() ? mask.cview() : vecnorm::ConstTensorView{}}});
    const std::vector<double> got = y.values();
    for (std::size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], rtol() * std::max(1.0, std::abs(want[i]))) << at << " y[" << i << "]";
      clipped = clipped || std::abs(want[i]) == kClip;
    }
    // The returns: the same formula in the same order (float64: the same bits).
    const std::vector<double> R = rs.returns("reward");
    for (std::size_t i = 0; i < R.size(); ++i)
      ASSERT_NEAR(R[i], ref.R[i], rtol() * std::max(1.0, std::abs(ref.R[i]))) << at << " R[" << i << "]";
  }
  const std::vector<double> scale = rs.statistics().scale("reward");
  for (std::int64_t f = 0; f < feat; ++f)
    EXPECT_NEAR(scale[static_cast<std::size_t>(f)], std::sqrt(ref.var[static_cast<std::size_t>(f)] + kEps),
                rtol() * scale[static_cast<std::size_t>(f)]);
  EXPECT_EQ(static_cast<double>(rs.statistics().count("reward")) + kPrior, ref.count);
  EXPECT_TRUE(clipped) << "the stream never reached the clip bound";
}

INSTANTIATE_TEST_SUITE_P(All, Rewards,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(ReturnReset::after, ReturnReset::before,
                                                              ReturnReset::never),
                                            ::testing::Values(DType::float64, DType::float32), ::testing::Bool(),
                                            ::testing::Bool()),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::string(vntest::backend_name(std::get<0>(info.param))) + "_" +
                                  vecnorm::to_string(std::get<1>(info.param)) + "_" +
                                  vecnorm::to_string(std::get<2>(info.param)) +
                                  (std::get<3>(info.param) ? "_masked" : "") +
                                  (std::get<4>(info.param) ? "_scalar" : "");
                         });

// Where a done resets, a NaN or infinite return is reset too (a select, not a
// product by 1 - done); a row the mask leaves out keeps its return's bits
// (a NaN's payload included), frozen or not; with one reward per environment
// (the CPU's flat loops) and two. A frozen scaler still checks the mask.
TEST(RewardState, NonFiniteReturnsResetAndInactiveRowsKeepTheirBits) {
  const double nan_payload = std::bit_cast<double>(std::uint64_t{0x7FF8000000000123});
  const double inf = std::numeric_limits<double>::infinity();
  for (const Backend b : vntest::test_backends())
    for (const ReturnReset reset : {ReturnReset::after, ReturnReset::before})
      for (const std::int64_t feat : {std::int64_t{1}, std::int64_t{2}}) {
        const std::string at = std::string(vntest::backend_name(b)) + " " + vecnorm::to_string(reset) + " feat " +
                               std::to_string(feat);
        const Shape fshape = feat == 1 ? Shape{} : Shape{feat};
        vecnorm::RewardScaler rs(sb3_stats(b, DType::float64), {kGamma, reset},
                                 {Shape{4}, {{"reward", fshape, DType::float64}}});
        rs.statistics().freeze();  // non-finite returns do not enter the statistics here
        // env 0: done, active; 1: done, inactive; 2: active; 3: inactive.
        const double R0[4] = {std::nan(""), nan_payload, -inf, 1.5};
        std::vector<double> R, rv;
        for (int e = 0; e < 4; ++e)
          for (std::int64_t f = 0; f < feat; ++f) {
            R.push_back(e == 1 && f == 1 ? inf : R0[e]);
            rv.push_back(2.0 + static_cast<double>(e));
          }
        rs.set_returns("reward", R);
        const Shape rshape = Shape{4}.concat(fshape);
        auto r = DeviceBuffer::from_values(b, DType::float64, rshape, rv);
        DeviceBuffer y(b, DType::float64, rshape);
        auto done = DeviceBuffer::from_values(b, DType::uint8, Shape{4}, {1.0, 1.0, 0.0, 0.0});
        auto mask = DeviceBuffer::from_values(b, DType::uint8, Shape{4}, {1.0, 0.0, 1.0, 0.0});
        rs.step({{"reward", r.cview(), y.view(), done.cview(), mask.cview()}});
        const std::vector<double> got = rs.returns("reward");
        for (std::int64_t f = 0; f < feat; ++f) {
          const std::size_t i0 = static_cast<std::size_t>(f), i1 = static_cast<std::size_t>(feat + f),
                            i2 = static_cast<std::size_t>(2 * feat + f), i3 = static_cast<std::size_t>(3 * feat + f);
          // env 0: after: NaN gamma + r enters, then 0; before: r alone.
          EXPECT_EQ(got[i0], reset == ReturnReset::after ? 0.0 : 2.0) << at;
          EXPECT_EQ(std::bit_cast<std::uint64_t>(got[i1]), std::bit_cast<std::uint64_t>(R[i1])) << at << " held";
          EXPECT_EQ(got[i2], -inf) << at;
          EXPECT_EQ(std::bit_cast<std::uint64_t>(got[i3]), std::bit_cast<std::uint64_t>(1.5)) << at << " held";
        }
        // A frozen scaler still checks the mask it reads.
        auto bad = DeviceBuffer::from_values(b, DType::float64, Shape{4}, {1.0, 1.0, 1.0, 1.0});
        const std::string m = message_of([&] { rs.step({{"reward", r.cview(), y.view(), {}, bad.cview()}}); },
                                         ErrorCode::dtype_mismatch);
        EXPECT_NE(m.find("key 'reward': mask dtype: expected uint8, got float64"), std::string::npos) << m;
      }
}

// Overlaps across keys: one key's output may not be another key's mask (the
// kept pass reads the mask after the outputs are written), nor its dones.
TEST(RewardErrors, AKeysOutputMayNotOverlapAnotherKeysMaskOrDones) {
  const Backend b = Backend::cpu;
  vecnorm::RewardScaler rs(sb3_stats(b, DType::float64), {kGamma, ReturnReset::after},
                           {Shape{8}, {{"a", Shape{}, DType::float64}, {"b", Shape{}, DType::float64}}});
  std::vector<double> ra(8, 1.0), rb(8, 2.0), ya(8);
  std::vector<std::uint8_t> mask(8 * sizeof(double), 1);
  const vecnorm::ConstTensorView mv{mask.data(), DType::uint8, Shape{8}};
  // a's output is b's mask's memory.
  const vecnorm::TensorView into_mask{mask.data(), DType::float64, Shape{8}};
  const std::string m = message_of(
      [&] {
        rs.step({{"a", vecnorm::ConstTensorView{ra.data(), DType::float64, Shape{8}}, into_mask},
                 {"b", vecnorm::ConstTensorView{rb.data(), DType::float64, Shape{8}},
                  vecnorm::TensorView{ya.data(), DType::float64, Shape{8}}, {}, mv}});
      },
      ErrorCode::invalid_argument);
  EXPECT_NE(m.find("key 'a': output"), std::string::npos) << m;
  EXPECT_NE(m.find("key 'b' mask"), std::string::npos) << m;
  EXPECT_EQ(rs.returns("a"), std::vector<double>(8, 0.0)) << "nothing ran";
}

// The rules on a hand-made episode (SB3 and Gymnasium differ exactly where an
// episode ends): one environment, rewards 1, 2, 3 with a done at the second.
TEST(RewardRules, WhereAnEpisodeEndsTheReturnsFollowEachAnchorsRule) {
  for (const Backend b : vntest::test_backends()) {
    for (const ReturnReset reset : {ReturnReset::after, ReturnReset::before, ReturnReset::never}) {
      vecnorm::RewardScaler rs(sb3_stats(b, DType::float64), {0.5, reset}, {Shape{1}, {{"r", Shape{}, DType::float64}}});
      const double rewards[3] = {1.0, 2.0, 3.0};
      const std::uint8_t dones[3] = {0, 1, 0};
      std::vector<double> seen;
      for (int t = 0; t < 3; ++t) {
        auto r = DeviceBuffer::from_values(b, DType::float64, Shape{1}, {rewards[t]});
        auto d = DeviceBuffer::from_values(b, DType::uint8, Shape{1}, {static_cast<double>(dones[t])});
        rs.step({{"r", r.cview(), vecnorm::TensorView{}, d.cview()}});
        seen.push_back(rs.returns("r")[0]);
      }
      // after: 1, then 0.5 + 2 enters and 0 is kept, then 3.
      // before: 1, then 2 (reset before adding), then 1 + 3.
      // never: 1, 2.5, 4.25.
      const std::vector<double> want = reset == ReturnReset::after    ? std::vector<double>{1.0, 0.0, 3.0}
                                       : reset == ReturnReset::before ? std::vector<double>{1.0, 2.0, 4.0}
                                                                      : std::vector<double>{1.0, 2.5, 4.25};
      EXPECT_EQ(seen, want) << vntest::backend_name(b) << " " << vecnorm::to_string(reset);
      // The statistics took the entered returns: after's second is 2.5 (not the kept 0).
      const double entered2 = reset == ReturnReset::before ? 2.0 : 2.5;
      const double entered3 = reset == ReturnReset::never ? 4.25 : reset == ReturnReset::before ? 4.0 : 3.0;
      double n = kPrior, mean = 0.0, var = 1.0;
      for (const double x : {1.0, entered2, entered3}) {
        const double tot = n + 1.0, delta = x - mean;
        var = (var * n + delta * delta * n / tot) / tot;
        mean += delta / tot;
        n = tot;
      }
      EXPECT_NEAR(rs.statistics().scale("r")[0], std::sqrt(var + kEps), 1e-12) << vecnorm::to_string(reset);
    }
  }
}

TEST(RewardState, FrozenStatisticsStillAdvanceTheReturns) {
  for (const Backend b : vntest::test_backends()) {
    const std::int64_t envs = 4;
    vecnorm::RewardScaler rs(sb3_stats(b, DType::float64), {kGamma, ReturnReset::after},
                             {Shape{envs}, {{"reward", Shape{}, DType::float64}}});
    Reference ref(ReturnReset::after, envs, 1);
    for (int t = 0; t < 10; ++t) {
      const Stream s = stream_at(t, envs, 1, false);
      const bool frozen = t >= 5;
      if (t == 5) rs.statistics().freeze();
      const std::vector<double> want = ref.step(s.r, s.done, s.mask, frozen);
      auto r = DeviceBuffer::from_values(b, DType::float64, Shape{envs}, s.r);
      DeviceBuffer y(b, DType::float64, Shape{envs});
      std::vector<double> dv(s.done.begin(), s.done.end());
      auto done = DeviceBuffer::from_values(b, DType::uint8, Shape{envs}, dv);
      rs.step({{"reward", r.cview(), y.view(), done.cview()}});
      const std::vector<double> got = y.values();
      for (std::size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12 * std::max(1.0, std::abs(want[i])));
      EXPECT_EQ(rs.returns("reward"), ref.R) << "step " << t;
    }
    EXPECT_EQ(rs.statistics().count("reward"), 5 * envs);
  }
}

// ReturnOptions::hold_frozen (SB3's training = False): a frozen scaler's
// returns hold, but for a done, which zeroes its environment's (under every
// rule that reads dones; an inactive row holds without the reset). By hand,
// gamma 0.5, one environment, rewards 1, 2, 3, 4: unfrozen,
// R = 1, then 2.5; frozen from step 2 on: R stays 2.5, step 3's done zeroes it.
// The outputs are the rewards over the frozen scale; the external step with
// update = false holds the same way.
TEST(RewardState, FrozenStatisticsHoldTheReturnsWhenAskedAsSb3sEvalMode) {
  for (const Backend b : vntest::test_backends()) {
    for (const ReturnReset reset : {ReturnReset::after, ReturnReset::before, ReturnReset::never}) {
      const std::string at = std::string(vntest::backend_name(b)) + " " + vecnorm::to_string(reset);
      vecnorm::ReturnOptions ro{0.5, reset, true};
      vecnorm::RewardScaler rs(sb3_stats(b, DType::float64), ro, {Shape{1}, {{"r", Shape{}, DType::float64}}});
      const double rewards[4] = {1.0, 2.0, 3.0, 4.0};
      const std::uint8_t dones[4] = {0, 0, 0, 1};
      std::vector<double> seen, outs;
      double scale = 0.0;
      for (int t = 0; t < 4; ++t) {
        if (t == 2) {
          rs.statistics().freeze();
          scale = rs.statistics().scale("r")[0];
        }
        auto r = DeviceBuffer::from_values(b, DType::float64, Shape{1}, {rewards[t]});
        auto d = DeviceBuffer::from_values(b, DType::uint8, Shape{1}, {static_cast<double>(dones[t])});
        DeviceBuffer y(b, DType::float64, Shape{1});
        rs.step({{"r", r.cview(), y.view(), d.cview()}});
        seen.push_back(rs.returns("r")[0]);
        outs.push_back(y.values()[0]);
      }
      const double last = reset == ReturnReset::never ? 2.5 : 0.0;  // (never reads no dones)
      EXPECT_EQ(seen, (std::vector<double>{1.0, 2.5, 2.5, last})) << at;
      EXPECT_EQ(rs.statistics().count("r"), 2) << at;
      EXPECT_NEAR(outs[2], 3.0 / scale, 1e-12) << at;
      EXPECT_NEAR(outs[3], 4.0 / scale, 1e-12) << at;
      // Without the option a frozen scaler's returns advance: R = 0.5 * 0 + 3.
      vecnorm::RewardScaler adv(sb3_stats(b, DType::float64), {0.5, ReturnReset::after},
                                {Shape{1}, {{"r", Shape{}, DType::float64}}});
      adv.statistics().freeze();
      auto r = DeviceBuffer::from_values(b, DType::float64, Shape{1}, {3.0});
      adv.step({{"r", r.cview(), vecnorm::TensorView{}}});
      EXPECT_EQ(adv.returns("r")[0], 3.0) << at;
      // The scaler's own option outlives an import of a state (a checkpoint's
      // never holds it: not part of the format).
      vecnorm::State st = rs.export_state();
      st.returns->options.hold_frozen = false;
      rs.import_state(st);
      EXPECT_TRUE(rs.return_options().hold_frozen) << at;
    }
    // external::reward_step with update = false, two environments, a mask
    // leaving out the second (it holds without the reset), a done on the first.
    const vecnorm::Options o = sb3_stats(b, DType::float64);
    const vecnorm::KeyTable table{Shape{}, {{"reward", Shape{}, DType::float64}}};
    DeviceBuffer loc(b, DType::float64, Shape{}), var(b, DType::float64, Shape{}), count(b, DType::int64, Shape{}),
        skipped(b, DType::int64, Shape{}), entered(b, DType::float64, Shape{2});
    for (DeviceBuffer* z : {&loc, &var, &count, &skipped}) z->fill(0);
    auto returns = DeviceBuffer::from_values(b, DType::float64, Shape{2}, {1.5, -2.0});
    auto r = DeviceBuffer::from_values(b, DType::float64, Shape{2}, {7.0, 9.0});
    auto done = DeviceBuffer::from_values(b, DType::uint8, Shape{2}, {1.0, 1.0});
    auto mask = DeviceBuffer::from_values(b, DType::uint8, Shape{2}, {1.0, 0.0});
    DeviceBuffer y(b, DType::float64, Shape{2});
    vecnorm::ExternalRewardItem item{"reward", r.cview(), y.view(), done.cview(), mask.cview(), returns.view(),
                                     entered.view(), {loc.view(), var.view(), count.view(), {}, skipped.view()}};
    vecnorm::external::reward_step(o, {kGamma, ReturnReset::before, true}, table, {&item, 1}, {}, nullptr, false);
    EXPECT_EQ(returns.values(), (std::vector<double>{0.0, -2.0})) << vntest::backend_name(b);
    EXPECT_EQ(count.values()[0], 0.0) << vntest::backend_name(b);
  }
}

// At count 0 the statistics are the prior's (mean 0, variance 1; SB3's count
// 1e-4): a scaler frozen before its first step, or a first step that leaves
// out every row, divides by sqrt(1 + 1e-8), as SB3 and Gymnasium do. In
// place (out is the reward's memory), with two keys.
TEST(RewardState, AtCountZeroTheScaleIsThePriorsAndOutMayBeTheReward) {
  for (const Backend b : vntest::test_backends()) {
    for (const bool frozen : {true, false}) {
      vecnorm::RewardScaler rs(sb3_stats(b, DType::float64), {kGamma, ReturnReset::after},
                               {Shape{3}, {{"a", Shape{}, DType::float64}, {"b", Shape{2}, DType::float64}}});
      if (frozen) rs.statistics().freeze();
      auto ra = DeviceBuffer::from_values(b, DType::float64, Shape{3}, {2.0, -4.0, 30.0});
      auto rb = DeviceBuffer::from_values(b, DType::float64, Shape{3, 2}, {1.0, 2.0, 3.0, 4.0, 5.0, 6.0});
      auto none = DeviceBuffer::from_values(b, DType::uint8, Shape{3}, {0.0, 0.0, 0.0});
      const vecnorm::ConstTensorView mask = frozen ? vecnorm::ConstTensorView{} : none.cview();
      rs.step({{"a", ra.cview(), ra.view(), {}, mask}, {"b", rb.cview(), rb.view(), {}, mask}});
      const double s = std::sqrt(1.0 + kEps);
      const std::vector<double> ya = ra.values(), yb = rb.values();
      const double want_a[3] = {2.0 / s, -4.0 / s, kClip};  // 30 / s is clipped
      for (int i = 0; i < 3; ++i) EXPECT_DOUBLE_EQ(ya[static_cast<std::size_t>(i)], want_a[i]) << "a " << i;
      for (int i = 0; i < 6; ++i) EXPECT_DOUBLE_EQ(yb[static_cast<std::size_t>(i)], (i + 1.0) / s) << "b " << i;
      EXPECT_EQ(rs.statistics().count("a"), 0);
      // Frozen, the returns advance; rows the mask leaves out are inactive: theirs hold.
      EXPECT_EQ(rs.returns("a"), frozen ? (std::vector<double>{2.0, -4.0, 30.0}) : std::vector<double>(3, 0.0));
    }
  }
}

TEST(RewardState, ARefusedUpdateChangesNothingAndReturnsCanBeRestored) {
  for (const Backend b : vntest::test_backends()) {
    vecnorm::Options o = sb3_stats(b, DType::float64);
    o.nonfinite = vecnorm::NonFinite::error;
    vecnorm::RewardScaler rs(o, {kGamma, ReturnReset::after}, {Shape{3}, {{"reward", Shape{}, DType::float64}}});
    auto r = DeviceBuffer::from_values(b, DType::float64, Shape{3}, {1.0, 2.0, 3.0});
    DeviceBuffer y(b, DType::float64, Shape{3});
    rs.step({{"reward", r.cview(), y.view()}});
    const std::vector<double> before = rs.returns("reward");
    const vecnorm::State stats_before = rs.statistics().export_state();
    auto bad = DeviceBuffer::from_values(b, DType::float64, Shape{3}, {1.0, std::nan(""), 3.0});
    const std::string m = message_of([&] { rs.step({{"reward", bad.cview(), y.view()}}); }, ErrorCode::nonfinite_input);
    EXPECT_NE(m.find("key 'reward'"), std::string::npos) << m;
    EXPECT_EQ(rs.returns("reward"), before);
    EXPECT_EQ(rs.statistics().export_state().keys[0].var, stats_before.keys[0].var);
    // Restore and reset.
    rs.set_returns("reward", std::vector<double>{4.0, -5.0, 6.5});
    EXPECT_EQ(rs.returns("reward"), (std::vector<double>{4.0, -5.0, 6.5}));
    const std::string ms =
        message_of([&] { rs.set_returns("reward", std::vector<double>{1.0}); }, ErrorCode::invalid_argument);
    EXPECT_NE(ms.find("key 'reward': expected 3 values (returns of shape [3]), got 1"), std::string::npos) << ms;
    rs.reset_returns();
    EXPECT_EQ(rs.returns("reward"), (std::vector<double>{0.0, 0.0, 0.0}));
  }
}

// A scaler's state carries its returns: export_state holds the reference's
// returns, a checkpoint file (format 6) restores them and the return options
// into another scaler, which then steps on as the original (and as the
// reference); a file of another table, or one without returns, is refused
// naming why and changes nothing; a VecNorm takes the statistics of such a file.
TEST(RewardState, CheckpointsCarryTheReturnsAndTheScalerStepsOnAsTheOriginal) {
  const std::int64_t envs = 16, feat = 2;
  const vecnorm::KeyTable table{Shape{envs}, {{"reward", Shape{feat}, DType::float64}}};
  const auto dir = std::filesystem::temp_directory_path() / ("vecnorm-reward-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  for (const Backend b : vntest::test_backends()) {
    const std::string at = vntest::backend_name(b);
    vecnorm::RewardScaler rs(sb3_stats(b, DType::float64), {kGamma, ReturnReset::after}, table);
    Reference ref(ReturnReset::after, envs, feat);
    auto step = [&](vecnorm::RewardScaler& s, int t) {
      const Stream st = stream_at(t, envs, feat, false);
      auto r = DeviceBuffer::from_values(b, DType::float64, Shape{envs, feat}, st.r);
      DeviceBuffer y(b, DType::float64, Shape{envs, feat});
      std::vector<double> dv(st.done.begin(), st.done.end());
      auto done = DeviceBuffer::from_values(b, DType::uint8, Shape{envs}, dv);
      s.step({{"reward", r.cview(), y.view(), done.cview()}});
      return y.values();
    };
    for (int t = 0; t < 60; ++t) {
      const Stream st = stream_at(t, envs, feat, false);
      ref.step(st.r, st.done, st.mask);
      step(rs, t);
    }
    // The state holds the returns (float64: the reference's formula in its order).
    const vecnorm::State state = rs.export_state();
    ASSERT_TRUE(state.returns.has_value()) << at;
    EXPECT_EQ(state.returns->options.gamma, kGamma);
    EXPECT_EQ(state.returns->options.reset, ReturnReset::after);
    ASSERT_EQ(state.returns->values.size(), 1u);
    ASSERT_EQ(state.returns->values[0].size(), ref.R.size() * sizeof(double));
    std::vector<double> saved(ref.R.size());
    std::memcpy(saved.data(), state.returns->values[0].data(), saved.size() * sizeof(double));
    for (std::size_t i = 0; i < saved.size(); ++i)
      ASSERT_NEAR(saved[i], ref.R[i], 1e-12 * std::max(1.0, std::abs(ref.R[i]))) << at << " R[" << i << "]";
    const std::string path = (dir / ("reward-" + at + ".ckpt")).string();
    vecnorm::save_state(rs, path);
    EXPECT_EQ(vecnorm::read_state_file(path).returns->values, state.returns->values);
    // Another scaler (other return options, nothing seen) takes it all.
    vecnorm::RewardScaler back(sb3_stats(b, DType::float64), {0.5, ReturnReset::before}, table);
    vecnorm::load_state(back, path);
    EXPECT_EQ(back.return_options().gamma, kGamma);
    EXPECT_EQ(back.return_options().reset, ReturnReset::after);
    for (int t = 60; t < 100; ++t) {
      const Stream st = stream_at(t, envs, feat, false);
      const std::vector<double> want = ref.step(st.r, st.done, st.mask);
      const std::vector<double> y1 = step(rs, t), y2 = step(back, t);
      ASSERT_EQ(y1, y2) << at << " step " << t;
      for (std::size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(y2[i], want[i], 1e-12 * std::max(1.0, std::abs(want[i]))) << at << " step " << t;
    }
    EXPECT_EQ(back.returns("reward"), rs.returns("reward"));
    // Refusals, naming why; the receiver unchanged.
    vecnorm::RewardScaler other(sb3_stats(b, DType::float64), {kGamma, ReturnReset::after},
                                {Shape{envs + 1}, {{"reward", Shape{feat}, DType::float64}}});
    const std::string mt = message_of([&] { vecnorm::load_state(other, path); }, ErrorCode::state_mismatch);
    EXPECT_NE(mt.find("batch shape: expected [17] (this RewardScaler's), got [16] (the state's)"), std::string::npos)
        << mt;
    EXPECT_EQ(other.returns("reward"), std::vector<double>(static_cast<std::size_t>((envs + 1) * feat), 0.0));
    EXPECT_EQ(other.statistics().count("reward"), 0);
    const std::string stats_only = (dir / ("stats-" + at + ".ckpt")).string();
    vecnorm::save_state(rs.statistics(), stats_only);
    const std::vector<double> back_returns = back.returns("reward");
    const vecnorm::State back_state = back.export_state();
    const std::string ms = message_of([&] { vecnorm::load_state(back, stats_only); }, ErrorCode::state_mismatch);
    EXPECT_NE(ms.find("expected a state with returns"), std::string::npos) << ms;
    vecnorm::RewardScaler narrow(sb3_stats(b, DType::float32), {kGamma, ReturnReset::after},
                                 {Shape{envs}, {{"reward", Shape{feat}, DType::float32}}});
    const std::string md = message_of([&] { vecnorm::load_state(narrow, path); }, ErrorCode::state_mismatch);
    EXPECT_NE(md.find("RewardScaler::import_state: "), std::string::npos) << md;
    // The reward's dtype differs (its statistics' dtype follows from it): the key is named.
    EXPECT_NE(md.find("key 'reward': dtype: expected float32 (this RewardScaler's), got float64 (the state's)"),
              std::string::npos)
        << md;
    EXPECT_EQ(back.returns("reward"), back_returns);
    EXPECT_EQ(back.export_state().keys[0].var, back_state.keys[0].var);
    EXPECT_EQ(narrow.statistics().count("reward"), 0);
    // A VecNorm takes the statistics of a reward checkpoint.
    vecnorm::VecNorm plain{vecnorm::Options{}};
    vecnorm::load_state(plain, path);
    EXPECT_EQ(plain.export_state().keys[0].var, state.keys[0].var);
  }
  std::filesystem::remove_all(dir);
}

// external::reward_step: the same step over statistics and returns the caller
// owns (what the PyTorch module runs), against the reference, with no host
// synchronization in between (the CUDA backend under the emulator counts none).
TEST(RewardExternal, FollowsTheReferenceWithCallerOwnedBuffers) {
  for (const Backend b : vntest::test_backends()) {
    for (const ReturnReset reset : {ReturnReset::after, ReturnReset::before}) {
      const std::int64_t envs = 12, feat = 3;
      const vecnorm::Options o = sb3_stats(b, DType::float64);
      const vecnorm::KeyTable table{Shape{}, {{"reward", Shape{feat}, DType::float64}}};
      DeviceBuffer loc(b, DType::float64, Shape{feat}), var(b, DType::float64, Shape{feat}),
          count(b, DType::int64, Shape{}), skipped(b, DType::int64, Shape{}),
          returns(b, DType::float64, Shape{envs, feat}), entered(b, DType::float64, Shape{envs, feat});
      for (DeviceBuffer* z : {&loc, &var, &count, &skipped, &returns}) z->fill(0);
      Reference ref(reset, envs, feat);
      for (int t = 0; t < 60; ++t) {
        const Stream s = stream_at(t, envs, feat, true);
        const std::vector<double> want = ref.step(s.r, s.done, s.mask);
        auto r = DeviceBuffer::from_values(b, DType::float64, Shape{envs, feat}, s.r);
        DeviceBuffer y(b, DType::float64, Shape{envs, feat});
        std::vector<double> dv(s.done.begin(), s.done.end()), mv(s.mask.begin(), s.mask.end());
        auto done = DeviceBuffer::from_values(b, DType::uint8, Shape{envs}, dv);
        auto mask = DeviceBuffer::from_values(b, DType::uint8, Shape{envs}, mv);
        vecnorm::ExternalRewardItem item{"reward", r.cview(), y.view(), done.cview(), mask.cview(), returns.view(),
                                         entered.view(), {loc.view(), var.view(), count.view(), {}, skipped.view()}};
        vecnorm::external::reward_step(o, {kGamma, reset}, table, {&item, 1});
        const std::vector<double> got = y.values(), R = returns.values();
        for (std::size_t i = 0; i < got.size(); ++i) {
          ASSERT_NEAR(got[i], want[i], 1e-12 * std::max(1.0, std::abs(want[i]))) << "step " << t << " y[" << i << "]";
          ASSERT_EQ(R[i], ref.R[i]) << "step " << t << " R[" << i << "]";
        }
      }
      EXPECT_EQ(count.values()[0] + kPrior, ref.count);
    }
  }
}

// Across ranks (Options::collective): each rank keeps its own environments'
// returns; the statistics pool the entered returns of every rank's
// environments. Against one reference over all environments.
TEST(RewardRanks, EveryRankDividesByTheScaleOfAllRanksReturns) {
  constexpr int kRanks = 2;
  const std::int64_t per_rank = 5, envs = kRanks * per_rank;
  for (const Backend b : vntest::test_backends()) {
    const auto group = vecnorm::thread_group(kRanks);
    std::vector<std::unique_ptr<vecnorm::RewardScaler>> ranks;
    for (int r = 0; r < kRanks; ++r) {
      vecnorm::Options o = sb3_stats(b, DType::float64);
      o.collective = group[static_cast<std::size_t>(r)];
      ranks.push_back(std::make_unique<vecnorm::RewardScaler>(
          o, vecnorm::ReturnOptions{kGamma, ReturnReset::after},
          vecnorm::KeyTable{Shape{per_rank}, {{"reward", Shape{}, DType::float64}}}));
    }
    Reference ref(ReturnReset::after, envs, 1);
    for (int t = 0; t < 30; ++t) {
      const Stream s = stream_at(t, envs, 1, false);
      const std::vector<double> want = ref.step(s.r, s.done, s.mask);
      std::vector<std::vector<double>> ys(kRanks);
      vntest::on_ranks(kRanks, [&](int r) {
        const auto first = static_cast<std::ptrdiff_t>(r * per_rank);
        const std::vector<double> rr(s.r.begin() + first, s.r.begin() + first + per_rank);
        const std::vector<double> dd(s.done.begin() + first, s.done.begin() + first + per_rank);
        auto rb = DeviceBuffer::from_values(b, DType::float64, Shape{per_rank}, rr);
        auto db = DeviceBuffer::from_values(b, DType::uint8, Shape{per_rank}, dd);
        DeviceBuffer y(b, DType::float64, Shape{per_rank});
        ranks[static_cast<std::size_t>(r)]->step({{"reward", rb.cview(), y.view(), db.cview()}});
        ys[static_cast<std::size_t>(r)] = y.values();
      });
      for (int r = 0; r < kRanks; ++r) {
        const std::vector<double> R = ranks[static_cast<std::size_t>(r)]->returns("reward");
        for (std::int64_t e = 0; e < per_rank; ++e) {
          const std::size_t i = static_cast<std::size_t>(r * per_rank + e);
          ASSERT_NEAR(ys[static_cast<std::size_t>(r)][static_cast<std::size_t>(e)], want[i],
                      1e-12 * std::max(1.0, std::abs(want[i])))
              << vntest::backend_name(b) << " step " << t << " rank " << r << " env " << e;
          ASSERT_EQ(R[static_cast<std::size_t>(e)], ref.R[i]) << "step " << t << " rank " << r << " env " << e;
        }
      }
    }
  }
}

// external::reward_step refuses views that overlap the returns or the entered
// returns (the passes would read what they wrote), and a key given twice.
TEST(RewardErrors, OverlapsAndRepeatedKeysAreRefusedBeforeAnythingRuns) {
  const vecnorm::Options o = sb3_stats(Backend::cpu, DType::float64);
  const vecnorm::KeyTable table{Shape{}, {{"reward", Shape{}, DType::float64}}};
  std::vector<double> loc(1), var(1), r = {1.0, 2.0}, y(2), returns(2), entered(2);
  std::vector<std::int64_t> count(1), skipped(1);
  std::vector<std::uint8_t> done(2, 0);
  auto item = [&](vecnorm::TensorView out, vecnorm::TensorView ent) {
    return vecnorm::ExternalRewardItem{"reward", vecnorm::view(static_cast<const double*>(r.data()), Shape{2}), out,
                                       vecnorm::view(static_cast<const std::uint8_t*>(done.data()), Shape{2}), {},
                                       vecnorm::view(returns.data(), Shape{2}), ent,
                                       {vecnorm::view(loc.data(), Shape{}), vecnorm::view(var.data(), Shape{}),
                                        vecnorm::view(count.data(), Shape{}), {}, vecnorm::view(skipped.data(), Shape{})}};
  };
  auto run = [&](const std::vector<vecnorm::ExternalRewardItem>& items) {
    return message_of([&] { vecnorm::external::reward_step(o, {}, table, items); }, ErrorCode::invalid_argument);
  };
  const std::string m1 = run({item(vecnorm::view(entered.data(), Shape{2}), vecnorm::view(entered.data(), Shape{2}))});
  EXPECT_NE(m1.find("key 'reward': entered returns"), std::string::npos) << m1;
  EXPECT_NE(m1.find("output"), std::string::npos) << m1;
  const std::string m2 = run({item(vecnorm::view(y.data(), Shape{2}), vecnorm::view(returns.data(), Shape{2}))});
  EXPECT_NE(m2.find("returns"), std::string::npos) << m2;
  const auto ok = item(vecnorm::view(y.data(), Shape{2}), vecnorm::view(entered.data(), Shape{2}));
  const std::string m3 =
      message_of([&] { vecnorm::external::reward_step(o, {}, table, std::vector<vecnorm::ExternalRewardItem>{ok, ok}); },
                 ErrorCode::duplicate_key);
  EXPECT_NE(m3.find("reward"), std::string::npos) << m3;
  EXPECT_EQ(count[0], 0) << "nothing ran";
  EXPECT_EQ(returns, (std::vector<double>{0.0, 0.0})) << "nothing ran";
}

TEST(RewardErrors, NameTheOptionTheKeyAndTheValue) {
  const vecnorm::KeyTable table{Shape{3}, {{"reward", Shape{}, DType::float64}}};
  vecnorm::Options o = sb3_stats(Backend::cpu, DType::float64);
  auto construct = [&](vecnorm::Options opts, vecnorm::ReturnOptions ro, vecnorm::KeyTable t) {
    vecnorm::RewardScaler rs(opts, ro, t);
  };
  EXPECT_NE(message_of([&] { construct(o, {1.5, ReturnReset::after}, table); }, ErrorCode::invalid_option)
                .find("return option gamma: expected 0 <= gamma <= 1, got 1.5"),
            std::string::npos);
  vecnorm::Options centred = o;
  centred.center = true;
  EXPECT_NE(message_of([&] { construct(centred, {}, table); }, ErrorCode::invalid_option)
                .find("option center: expected false"),
            std::string::npos);
  vecnorm::Options per_element = o;
  per_element.reduce_batch_dims = false;
  EXPECT_NE(message_of([&] { construct(per_element, {}, table); }, ErrorCode::invalid_option)
                .find("option reduce_batch_dims: expected true"),
            std::string::npos);
  const vecnorm::KeyTable f32{Shape{3}, {{"reward", Shape{}, DType::float32}}};
  EXPECT_NE(message_of([&] { construct(o, {}, f32); }, ErrorCode::invalid_key_table)
                .find("key 'reward': dtype: expected float64 (the statistics' dtype"),
            std::string::npos);
  // A step's arguments: all checked before anything runs.
  vecnorm::RewardScaler rs(o, {}, table);
  std::vector<double> r = {1.0, 2.0, 3.0}, y(3);
  std::vector<float> done_f(3, 0.0f);
  std::vector<std::uint8_t> done2(2, 0);
  const std::string m1 = message_of(
      [&] { rs.step({{"reward", vecnorm::view(static_cast<const double*>(r.data()), Shape{3}), vecnorm::view(y.data(), Shape{3}),
                      vecnorm::view(static_cast<const float*>(done_f.data()), Shape{3})}}); },
      ErrorCode::dtype_mismatch);
  EXPECT_NE(m1.find("key 'reward': done dtype: expected uint8, got float32"), std::string::npos) << m1;
  const std::string m2 = message_of(
      [&] { rs.step({{"reward", vecnorm::view(static_cast<const double*>(r.data()), Shape{3}), vecnorm::view(y.data(), Shape{3}),
                      vecnorm::view(static_cast<const std::uint8_t*>(done2.data()), Shape{2})}}); },
      ErrorCode::shape_mismatch);
  EXPECT_NE(m2.find("key 'reward': done shape: expected [3]"), std::string::npos) << m2;
  const std::string m3 = message_of(
      [&] { rs.step({{"reward", vecnorm::view(static_cast<const double*>(r.data()), Shape{1, 3}), vecnorm::view(y.data(), Shape{1, 3})}}); },
      ErrorCode::shape_mismatch);
  EXPECT_NE(m3.find("key 'reward': input shape: expected [3]"), std::string::npos) << m3;
  EXPECT_EQ(rs.returns("reward"), (std::vector<double>{0.0, 0.0, 0.0})) << "nothing ran";
  EXPECT_EQ(rs.statistics().count("reward"), 0) << "nothing ran";
  // A second key's bad argument stops the step before the first key's
  // statistics or returns move.
  vecnorm::RewardScaler two(o, {}, {Shape{3}, {{"a", Shape{}, DType::float64}, {"b", Shape{}, DType::float64}}});
  std::vector<double> ya(3), yb(3);
  const std::string m4 = message_of(
      [&] {
        two.step({{"a", vecnorm::view(static_cast<const double*>(r.data()), Shape{3}), vecnorm::view(ya.data(), Shape{3})},
                  {"b", vecnorm::view(static_cast<const double*>(r.data()), Shape{3}), vecnorm::view(yb.data(), Shape{3}),
                   vecnorm::view(static_cast<const float*>(done_f.data()), Shape{3})}});
      },
      ErrorCode::dtype_mismatch);
  EXPECT_NE(m4.find("key 'b': done dtype"), std::string::npos) << m4;
  EXPECT_EQ(two.statistics().count("a"), 0) << "nothing ran";
  EXPECT_EQ(two.returns("a"), (std::vector<double>{0.0, 0.0, 0.0})) << "nothing ran";
  // No prior: no scale before the first update.
  vecnorm::Options no_prior = o;
  no_prior.prior_count = 0.0;
  EXPECT_NE(message_of([&] { construct(no_prior, {}, table); }, ErrorCode::invalid_option)
                .find("option prior_count: expected > 0"),
            std::string::npos);
  // estimator torchrl (no prior, no map at count 0) is refused.
  vecnorm::Options ema = o;
  ema.estimator = vecnorm::Estimator::torchrl;
  ema.prior_count = 0.0;
  EXPECT_NE(message_of([&] { construct(ema, {}, table); }, ErrorCode::invalid_option)
                .find("option estimator: expected stable"),
            std::string::npos);
}

}  // namespace
