// tests/core/multikey_test.cpp -- steps over several keys where some keys are
// absent on some steps (the reward on reset steps): absent keys are neither
// updated nor normalized, and their counts do not move.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
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
using vntest::DeviceBuffer;
using vntest::Mode;

struct KeyDef {
  std::string name;
  Shape feature;
  DType dtype;
};

const std::vector<KeyDef> kKeys = {
    {"observation", Shape{3}, DType::float16},
    {"reward", Shape{}, DType::float32},
    {"agents/observation", Shape{2, 2}, DType::int32},
};

// Which keys a step carries: the reward is absent on reset steps (1, 5, 9, ...),
// the agents' key on step 3; the order of the keys varies.
std::vector<int> keys_of_step(int step) {
  std::vector<int> k;
  if (step % 4 != 1) k.push_back(1);
  k.push_back(0);
  if (step != 3) k.push_back(2);
  if (step % 2 == 0) std::reverse(k.begin(), k.end());
  return k;
}

using Param = std::tuple<Backend, Mode, Estimator>;
class MultiKey : public ::testing::TestWithParam<Param> {};

TEST_P(MultiKey, AbsentKeysDoNotMove) {
  const auto& [backend, mode, est] = GetParam();
  const Shape batch{4};
  const std::int64_t m = batch.numel();
  const bool pooled = mode == Mode::pooled;
  for (double decay : {1.0, 0.9})
    for (DType stats : {DType::float32, DType::float64}) {
      vecnorm::Options o = vntest::options_for(backend);
      o.decay = decay;
      o.estimator = est;
      o.stats_dtype = stats;
      o.reduce_batch_dims = pooled;
      vecnorm::KeyTable table{batch, {}};
      for (const auto& k : kKeys) table.keys.push_back({k.name, k.feature, k.dtype});
      const vnref::Config cfg{vntest::to_ref(est), decay, o.eps};
      const std::string where0 = std::string(vntest::mode_name(mode)) + "/" + vntest::estimator_name(est) + "/d=" +
                                 vntest::decay_name(decay) + "/stats=" + vntest::short_name(stats);

      std::unique_ptr<vecnorm::VecNorm> vn;
      if (mode != Mode::stateless) vn = std::make_unique<vecnorm::VecNorm>(o, table);
      std::vector<vnref::StatefulKey> ref;
      std::vector<vnref::StatelessStats> sref;
      struct Stats {
        DeviceBuffer loc, var, count;
      };
      std::vector<Stats> sbuf;
      for (const auto& k : kKeys) {
        ref.emplace_back(cfg, pooled, k.feature.numel(), m);
        sref.push_back(vnref::StatelessStats::zeros(m * k.feature.numel()));
        const Shape s = batch.concat(k.feature);
        sbuf.push_back(Stats{DeviceBuffer(backend, stats, s), DeviceBuffer(backend, stats, s),
                             DeviceBuffer(backend, DType::int64, s)});
      }
      std::mt19937_64 rng(41);
      std::vector<vntest::FeatureDistribution> dist;
      for (const auto& k : kKeys) dist.push_back(vntest::random_distribution(rng, k.feature.numel()));
      std::vector<std::int64_t> present_steps(kKeys.size(), 0);

      for (int step = 1; step <= 12; ++step) {
        const auto keys = keys_of_step(step);
        std::vector<DeviceBuffer> xs, ys;
        std::vector<std::vector<double>> xv(kKeys.size());
        std::vector<vecnorm::KeyData> items;
        std::vector<vecnorm::StatelessItem> sitems;
        std::vector<std::vector<std::byte>> absent_before(kKeys.size());
        for (std::size_t k = 0; k < kKeys.size(); ++k) absent_before[k] = sbuf[k].loc.bytes();
        xs.reserve(keys.size());
        ys.reserve(keys.size());
        for (int k : keys) {
          const auto& def = kKeys[k];
          const Shape s = batch.concat(def.feature);
          const auto stored = vntest::random_values(rng, def.dtype, m, def.feature.numel(), dist[k]);
          xv[k] = vntest::computed_inputs(def.dtype, stored);
          xs.push_back(DeviceBuffer::from_values(backend, def.dtype, s, stored));
          ys.emplace_back(backend, vecnorm::output_dtype(def.dtype), s);
          items.push_back({def.name, xs.back().cview(), ys.back().view()});
          sitems.push_back({def.name, xs.back().cview(), ys.back().view(),
                            {sbuf[k].loc.cview(), sbuf[k].var.cview(), sbuf[k].count.cview()},
                            {sbuf[k].loc.view(), sbuf[k].var.view(), sbuf[k].count.view()}});
        }
        if (mode == Mode::stateless) vecnorm::stateless::step(o, table, sitems);
        else vn->step(items);
        for (int k : keys) {
          ++present_steps[k];
          if (mode == Mode::stateless) vnref::stateless_update(cfg, sref[k], xv[k]);
          else ref[k].update(xv[k], m);
        }
        for (std::size_t j = 0; j < keys.size(); ++j) {
          const int k = keys[j];
          const auto& def = kKeys[k];
          const std::string where = where0 + " step " + std::to_string(step) + " key " + def.name;
          const double rtol = vntest::rtol_for(stats, static_cast<int>(present_steps[k]));
          const DType out = vecnorm::output_dtype(def.dtype);
          if (mode == Mode::stateless) {
            const auto r = vnref::stateless_readouts(cfg, sref[k]);
            ASSERT_TRUE(vntest::AllClose(where + ": y", vnref::stateless_normalize(cfg, sref[k], xv[k]), ys[j].values(),
                                         vntest::y_tolerances(r, false, def.feature.numel(), xv[k], rtol, o.eps, out)));
            ASSERT_TRUE(vntest::AllEqual(where + ": count", std::vector<double>(r.size(), present_steps[k]),
                                         sbuf[k].count.values()));
          } else {
            ASSERT_TRUE(vntest::AllClose(
                where + ": y", ref[k].normalize(xv[k], m), ys[j].values(),
                vntest::y_tolerances(ref[k].readouts(), pooled, def.feature.numel(), xv[k], rtol, o.eps, out)));
          }
        }
        for (std::size_t k = 0; k < kKeys.size(); ++k) {
          const std::string where = where0 + " step " + std::to_string(step) + " key " + kKeys[k].name;
          if (mode == Mode::stateless) {
            if (std::find(keys.begin(), keys.end(), static_cast<int>(k)) == keys.end()) {
              ASSERT_TRUE(vntest::BitEqual(where + " (absent): loc must not change", stats, absent_before[k],
                                           sbuf[k].loc.bytes()));
            }
          } else {
            // Counts move only for present keys: per step (per-element) or per sample (pooled).
            ASSERT_EQ(vn->count(kKeys[k].name), present_steps[k] * (pooled ? m : 1)) << where;
            if (present_steps[k] == 0) continue;  // never present yet: nothing to read
            const auto r = ref[k].readouts();
            ASSERT_TRUE(vntest::AllClose(where + ": loc", ref[k].loc(), vn->loc(kKeys[k].name),
                                         vntest::mu_tolerances(r, vntest::rtol_for(stats, 12))));
            ASSERT_TRUE(vntest::AllClose(where + ": scale", ref[k].scale(), vn->scale(kKeys[k].name),
                                         vntest::scale_tolerances(r, vntest::rtol_for(stats, 12), o.eps)));
          }
        }
      }
    }
}

INSTANTIATE_TEST_SUITE_P(All, MultiKey,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(Mode::per_element, Mode::pooled, Mode::stateless),
                                            ::testing::Values(Estimator::torchrl, Estimator::stable)),
                         [](const ::testing::TestParamInfo<Param>& info) { return vntest::param_name(info.param); });

// A key that was never present cannot be normalized or read: zero_count.
TEST(MultiKeyFixed, NeverUpdatedKeyIsZeroCount) {
  for (Backend backend : vntest::test_backends()) {
    vecnorm::VecNorm vn(vntest::options_for(backend),
                        vecnorm::KeyTable{Shape{2}, {{"obs", Shape{2}, DType::float32}, {"reward", Shape{}, DType::float32}}});
    vntest::call_one(vntest::Call::step, vn, backend, "obs", DType::float32, Shape{2, 2}, {1, 2, 3, 4});
    EXPECT_EQ(vn.count("obs"), 1);
    EXPECT_EQ(vn.count("reward"), 0);
    try {
      (void)vn.loc("reward");
      ADD_FAILURE() << "loc() of a never-updated key must throw Error(zero_count)";
    } catch (const vecnorm::Error& e) {
      EXPECT_EQ(e.code(), vecnorm::ErrorCode::zero_count) << e.what();
      EXPECT_NE(std::string(e.what()).find("reward"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
