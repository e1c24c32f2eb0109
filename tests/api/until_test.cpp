// tests/api/until_test.cpp -- Options::until (rsl_rl's EmpiricalNormalization
// bound): a key's updates stop once its count has reached `until`; the batch
// that crosses the bound is merged whole. On every backend (the CUDA kernels
// under the emulator decide on the device), per element and pooled, alone and
// across ranks, against the naive reference (tests/reference) stepped by the
// rule as docs/anchors.md states it; the statistics after the stop are the
// same bits as at the stop; the option's life in checkpoints, shared segments,
// validation and the stateless refusal.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "reference.hpp"
#include "support/device_buffer.hpp"
#include "support/errors.hpp"
#include "support/data.hpp"
#include "support/ranks.hpp"
#include "support/dtypes.hpp"
#include "vecnorm/checkpoint.hpp"
#include "vecnorm/collective.hpp"
#include "vecnorm/stateless.hpp"
#include "vecnorm/vecnorm.hpp"

namespace {

using vecnorm::Backend;
using vecnorm::DType;
using vecnorm::ErrorCode;
using vecnorm::Shape;
using vntest::DeviceBuffer;

constexpr std::int64_t kF = 4;

/// Step t's batch of m rows (float32 values), features of different location and spread.
std::vector<double> batch(int t, std::int64_t m, unsigned seed = 5) {
  static const vntest::FeatureDistribution dist{{2.0, -40.0, 0.0, 300.0}, {1.0, 5.0, 0.01, 20.0}};
  return vntest::step_values(dist, seed, t, m);
}

using vntest::message_of;

// ---------------------------------------------------------------- one process

using Param = std::tuple<Backend, bool /*pooled*/, vnref::Estimator, bool /*update only*/>;
class Until : public ::testing::TestWithParam<Param> {
 protected:
  Backend backend() const { return std::get<0>(GetParam()); }
  bool pooled() const { return std::get<1>(GetParam()); }
  vnref::Estimator estimator() const { return std::get<2>(GetParam()); }
  bool update_only() const { return std::get<3>(GetParam()); }
  vecnorm::Options opts(std::int64_t until) const {
    vecnorm::Options o = vntest::options_for(backend());
    o.reduce_batch_dims = pooled();
    o.estimator = estimator() == vnref::Estimator::stable ? vecnorm::Estimator::stable : vecnorm::Estimator::torchrl;
    o.decay = estimator() == vnref::Estimator::stable ? 1.0 : 0.9;
    o.stats_dtype = DType::float64;
    o.until = until;
    return o;
  }
};

TEST_P(Until, UpdatesStopOnceTheCountHasReachedTheBound) {
  // Pooled: 6 rows a step, bound 20: merged at counts 0, 6, 12, 18 (the step
  // that crosses the bound is merged whole), count 24 and no more.
  // Per element: 3 rows a step, count + 1 a step, bound 5.
  const std::int64_t rows = pooled() ? 6 : 3;
  const std::int64_t until = pooled() ? 20 : 5;
  const std::int64_t last_count = pooled() ? 24 : 5;
  const vecnorm::Options o = opts(until);
  vecnorm::VecNorm vn(o, {Shape{rows}, {{"obs", Shape{kF}, DType::float32}}});
  const vnref::Config rc{estimator(), o.decay, o.eps};
  vnref::StatefulKey ref(rc, pooled(), kF, rows);
  vecnorm::State at_stop;
  bool stopped = false;
  for (int t = 0; t < 9; ++t) {
    const std::string at = "step " + std::to_string(t);
    std::vector<double> x = batch(t, rows);
    // Past the stop, a NaN (NonFinite::skip, the default): a stopped key
    // counts no skip (its update was not left out: there is none).
    const std::size_t nan_at = static_cast<std::size_t>(kF + 2);
    if (t == 7) x[nan_at] = std::nan("");
    // The rule, stated again: a key whose count has reached the bound takes no update.
    const bool merges = ref.count() < until;
    if (merges) ref.update(x, rows);
    auto xb = DeviceBuffer::from_values(backend(), DType::float32, Shape{rows, kF}, x);
    DeviceBuffer yb(backend(), DType::float32, Shape{rows, kF});
    if (update_only())
      vn.update({{"obs", xb.cview(), yb.view()}});
    else
      vn.step({{"obs", xb.cview(), yb.view()}});
    const vecnorm::State st = vn.export_state();
    ASSERT_EQ(st.keys[0].count, ref.count()) << at;
    if (!merges && !stopped) {
      stopped = true;
      EXPECT_EQ(ref.count(), last_count) << at;
    }
    if (stopped) {
      // Nothing moves once stopped: the same bits as at the stop, no skips counted.
      EXPECT_EQ(st.keys[0].loc, at_stop.keys[0].loc) << at;
      EXPECT_EQ(st.keys[0].var, at_stop.keys[0].var) << at;
      EXPECT_EQ(st.keys[0].skipped, 0) << at;
      EXPECT_TRUE(st.keys[0].skips.empty()) << at;
    } else {
      at_stop = st;
    }
    // The normalizer's mean and scale are the reference's (within rounding).
    const std::vector<double> mean = vn.loc("obs"), scale = vn.scale("obs"), want_mu = ref.loc(),
                              want_scale = ref.scale();
    ASSERT_EQ(mean.size(), want_mu.size());
    for (std::size_t i = 0; i < mean.size(); ++i) {
      EXPECT_NEAR(mean[i], want_mu[i], 1e-10 * (std::abs(want_mu[i]) + want_scale[i])) << at << " mean[" << i << "]";
      EXPECT_NEAR(scale[i], want_scale[i], 1e-7 * want_scale[i]) << at << " scale[" << i << "]";
    }
    if (update_only()) continue;
    // Outputs: normalized with the statistics after this step's update (or as
    // they are, once stopped).
    const std::vector<double> y = yb.values(), want = ref.normalize(x, rows);
    for (std::size_t j = 0; j < y.size(); ++j) {
      if (t == 7 && j == nan_at) {
        EXPECT_TRUE(std::isnan(y[j])) << at;
        continue;
      }
      EXPECT_NEAR(y[j], want[j], 2e-6 * std::max(1.0, std::abs(want[j]))) << at << " y[" << j << "]";
    }
  }
  EXPECT_TRUE(stopped);
}

INSTANTIATE_TEST_SUITE_P(All, Until,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()), ::testing::Bool(),
                                            ::testing::Values(vnref::Estimator::torchrl, vnref::Estimator::stable),
                                            ::testing::Bool()),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::string(vntest::backend_name(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) ? "_pooled" : "_per_element") +
                                  (std::get<2>(info.param) == vnref::Estimator::stable ? "_stable" : "_torchrl") +
                                  (std::get<3>(info.param) ? "_update" : "_step");
                         });

// Keys stop one by one: each is bounded by its own count (a reward that
// arrives from step 1 on stops a step later than the observation).
TEST(UntilKeys, EachKeyStopsAtItsOwnCount) {
  for (const Backend backend : vntest::test_backends()) {
    vecnorm::Options o = vntest::options_for(backend);
    o.reduce_batch_dims = true;
    o.until = 8;
    vecnorm::VecNorm vn(o, {Shape{4}, {{"obs", Shape{kF}, DType::float32}, {"reward", Shape{}, DType::float32}}});
    std::int64_t obs = 0, reward = 0;
    for (int t = 0; t < 5; ++t) {
      const std::vector<double> x = batch(t, 4), r = {1.0, 2.0, 3.0, 4.0 + t};
      auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{4, kF}, x);
      auto rb = DeviceBuffer::from_values(backend, DType::float32, Shape{4}, r);
      DeviceBuffer yb(backend, DType::float32, Shape{4, kF}), yr(backend, DType::float32, Shape{4});
      std::vector<vecnorm::KeyData> items = {{"obs", xb.cview(), yb.view()}};
      if (t > 0) items.push_back({"reward", rb.cview(), yr.view()});
      vn.step(items);
      if (obs < 8) obs += 4;
      if (t > 0 && reward < 8) reward += 4;
      const vecnorm::State st = vn.export_state();
      EXPECT_EQ(st.keys[0].count, obs) << vntest::backend_name(backend) << " step " << t;
      EXPECT_EQ(st.keys[1].count, reward) << vntest::backend_name(backend) << " step " << t;
    }
  }
}

// ---------------------------------------------------------------- across ranks

using vntest::on_ranks;

// A distributed pooled update stops on every rank at once (the ranks share
// the count); what each rank stores is the reference over the concatenated
// batches merged while the count was below the bound.
TEST(UntilRanks, EveryRankStopsAtTheSameCount) {
  constexpr int kRanks = 3;
  for (const Backend backend : vntest::test_backends()) {
    vecnorm::Options base = vntest::pooled_cumulative_options(backend);
    base.until = 25;  // 2 + 3 + 4 = 9 rows a step: merged at 0, 9, 18; stops at 27
    const auto vns = vntest::ranks_of(base, {Shape{}, {{"obs", Shape{kF}, DType::float32}}}, kRanks);
    vnref::StatefulKey ref({vnref::Estimator::stable, 1.0, base.eps}, true, kF);
    for (int t = 0; t < 6; ++t) {
      std::vector<std::vector<double>> xs(kRanks), ys(kRanks);
      std::vector<double> all;
      for (int r = 0; r < kRanks; ++r) {
        xs[static_cast<std::size_t>(r)] = batch(t, 2 + r, 7u + static_cast<unsigned>(r));
        // Past the stop (step 3 on), a NaN on rank 1: no skip counted.
        if (t == 4 && r == 1) xs[1][kF + 1] = std::nan("");
        all.insert(all.end(), xs[static_cast<std::size_t>(r)].begin(), xs[static_cast<std::size_t>(r)].end());
      }
      if (ref.count() < base.until) ref.update(all, 9);
      on_ranks(kRanks, [&](int r) {
        const auto& x = xs[static_cast<std::size_t>(r)];
        auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{2 + r, kF}, x);
        DeviceBuffer yb(backend, DType::float32, Shape{2 + r, kF});
        vns[static_cast<std::size_t>(r)]->step({{"obs", xb.cview(), yb.view()}});
        ys[static_cast<std::size_t>(r)] = yb.values();
      });
      const std::string at = std::string(vntest::backend_name(backend)) + " step " + std::to_string(t);
      const vecnorm::State s0 = vns[0]->export_state();
      EXPECT_EQ(s0.keys[0].count, ref.count()) << at;
      EXPECT_EQ(s0.keys[0].skipped, 0) << at;
      for (int r = 1; r < kRanks; ++r) {
        const vecnorm::State sr = vns[static_cast<std::size_t>(r)]->export_state();
        EXPECT_EQ(sr.keys[0].count, s0.keys[0].count) << at << " rank " << r;
        EXPECT_EQ(sr.keys[0].loc, s0.keys[0].loc) << at << " rank " << r;
        EXPECT_EQ(sr.keys[0].var, s0.keys[0].var) << at << " rank " << r;
      }
      const std::vector<double> mean = vns[0]->loc("obs"), want = ref.loc();
      for (std::size_t i = 0; i < mean.size(); ++i)
        EXPECT_NEAR(mean[i], want[i], 1e-10 * (std::abs(want[i]) + 1.0)) << at << " mean[" << i << "]";
      for (int r = 0; r < kRanks; ++r) {
        const std::vector<double> w = ref.normalize(xs[static_cast<std::size_t>(r)], 2 + r);
        for (std::size_t j = 0; j < w.size(); ++j) {
          if (std::isnan(w[j])) continue;
          EXPECT_NEAR(ys[static_cast<std::size_t>(r)][j], w[j], 2e-6 * std::max(1.0, std::abs(w[j])))
              << at << " rank " << r << " y[" << j << "]";
        }
      }
    }
    EXPECT_EQ(ref.count(), 27);
  }
}

// ---------------------------------------------------------------- the option's life

TEST(UntilOption, ValidationNamesTheOptionAndTheValue) {
  vecnorm::Options o;
  o.until = -3;
  EXPECT_NE(message_of([&] { o.validate(); }, ErrorCode::invalid_option).find("option until: expected until >= 0 "
                                                                               "(0: no bound), got -3"),
            std::string::npos);
  // Stateless steps count per element: no bound there.
  o.until = 10;
  const vecnorm::KeyTable table{Shape{2}, {{"obs", Shape{kF}, DType::float32}}};
  std::vector<float> x(2 * kF, 1.0f), y(2 * kF), loc(2 * kF), var(2 * kF);
  std::vector<std::int64_t> count(2 * kF, 0);
  vecnorm::StatelessItem item;
  item.key = "obs";
  item.x = vecnorm::ConstTensorView(x.data(), DType::float32, Shape{2, kF});
  item.y = vecnorm::TensorView{y.data(), DType::float32, Shape{2, kF}};
  item.out.loc = vecnorm::TensorView{loc.data(), DType::float32, Shape{2, kF}};
  item.out.var = vecnorm::TensorView{var.data(), DType::float32, Shape{2, kF}};
  item.out.count = vecnorm::TensorView{count.data(), DType::int64, Shape{2, kF}};
  item.in.loc = item.out.loc;
  item.in.var = item.out.var;
  item.in.count = item.out.count;
  const std::string m = message_of([&] { vecnorm::stateless::step(o, table, {item}); }, ErrorCode::invalid_option);
  EXPECT_NE(m.find("option until: expected 0 in stateless mode and with one count per element"), std::string::npos)
      << m;
  EXPECT_EQ(count[0], 0) << "nothing ran";
}

TEST(UntilOption, CheckpointsKeepItInFormat4AndImportsAdoptIt) {
  vecnorm::Options o;
  o.reduce_batch_dims = true;
  o.until = 12;
  vecnorm::VecNorm vn(o, {Shape{}, {{"obs", Shape{kF}, DType::float32}}});
  std::vector<float> x(8 * kF, 1.5f), y(8 * kF);
  x[3] = 2.0f;
  vn.step({{"obs", vecnorm::ConstTensorView(x.data(), DType::float32, Shape{8, kF}),
            vecnorm::TensorView{y.data(), DType::float32, Shape{8, kF}}}});
  const std::vector<std::uint8_t> bytes = vecnorm::encode_state(vn.export_state());
  EXPECT_EQ(bytes[8], 4u) << "until needs format 4";
  const vecnorm::State back = vecnorm::decode_state(bytes);
  EXPECT_EQ(back.options.until, 12);
  // Without it the file stays at the older format.
  vecnorm::State plain = back;
  plain.options.until = 0;
  EXPECT_EQ(vecnorm::encode_state(plain)[8], 2u);
  // A fresh normalizer adopts the bound: two more steps of 8 rows (count 8 -> 16, then stopped).
  vecnorm::VecNorm adopted{vecnorm::Options{}};
  adopted.import_state(back);
  for (int t = 0; t < 2; ++t)
    adopted.step({{"obs", vecnorm::ConstTensorView(x.data(), DType::float32, Shape{8, kF}),
                   vecnorm::TensorView{y.data(), DType::float32, Shape{8, kF}}}});
  EXPECT_EQ(adopted.export_state().keys[0].count, 16);
  // A negative bound in a file is refused, naming it: until is the last
  // option of the version 4 header (a little-endian int64 at byte 84, before
  // the batch shape's ndim), the CRC-32C trailer made again.
  std::vector<std::uint8_t> bad = bytes;
  for (std::size_t i = 0; i < 8; ++i) EXPECT_EQ(bad[84 + i], i == 0 ? 12u : 0u) << "byte " << 84 + i;
  for (std::size_t i = 0; i < 8; ++i) bad[84 + i] = 0xff;  // -1
  const std::uint32_t crc =
      vecnorm::crc32c(std::span<const std::uint8_t>(bad.data(), bad.size() - 4));
  for (std::size_t i = 0; i < 4; ++i) bad[bad.size() - 4 + i] = static_cast<std::uint8_t>(crc >> (8 * i));
  const std::string m = message_of([&] { (void)vecnorm::decode_state(bad); }, ErrorCode::state_mismatch);
  EXPECT_NE(m.find("until: expected until >= 0, got -1"), std::string::npos) << m;
}

}  // namespace
