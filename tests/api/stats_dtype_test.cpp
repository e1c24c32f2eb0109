// tests/api/stats_dtype_test.cpp -- Options::stats_dtype none (the default):
// each key's statistics follow its input, float64 for a float64 input and
// float32 for every other, as VecNormV2 keeps them in the data's dtype. Keys of
// both statistics dtypes in one call (the CUDA backend launches each run of
// keys of one statistics dtype apart), against the naive double reference; the
// first step of a float64 input (issue 18 item 7); states, imports and ranks.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "support/check.hpp"
#include "support/data.hpp"
#include "support/device_buffer.hpp"
#include "support/dtypes.hpp"
#include "support/errors.hpp"
#include "support/harness.hpp"
#include "support/ranks.hpp"
#include "vecnorm/collective.hpp"
#include "vecnorm/shared.hpp"
#include "vecnorm/reward.hpp"

namespace {

using vecnorm::Backend;
using vecnorm::DType;
using vecnorm::Estimator;
using vecnorm::Shape;
using vntest::DeviceBuffer;
using vntest::message_of;
using vntest::Mode;

struct KeyDef {
  std::string name;
  Shape feature;
  DType dtype;
  DType stats;  ///< the statistics dtype the key must get (Options::stats_dtype's documented rule, written out here)
};

// The float64 key sits between float32-statistics keys: a CUDA call runs three
// groups (obs | pos | half, count).
const std::vector<KeyDef> kKeys = {
    {"obs", Shape{2}, DType::float32, DType::float32},
    {"pos", Shape{3}, DType::float64, DType::float64},
    {"half", Shape{2}, DType::float16, DType::float32},
    {"count", Shape{}, DType::int32, DType::float32},
};

using Param = std::tuple<Backend, Mode, Estimator>;
class StatsDType : public ::testing::TestWithParam<Param> {};

TEST_P(StatsDType, EachKeysStatisticsFollowItsInput) {
  const auto& [backend, mode, est] = GetParam();
  const Shape batch{5};
  const std::int64_t m = batch.numel();
  const bool pooled = mode == Mode::pooled;
  vecnorm::Options o = vntest::options_for(backend);
  ASSERT_FALSE(o.stats_dtype.has_value()) << "the default";
  o.estimator = est;
  o.decay = 0.9;
  o.reduce_batch_dims = pooled;
  vecnorm::KeyTable table{batch, {}};
  for (const auto& k : kKeys) table.keys.push_back({k.name, k.feature, k.dtype});
  const vnref::Config cfg{vntest::to_ref(est), o.decay, o.eps};
  const std::string where0 = std::string(vntest::mode_name(mode)) + "/" + vntest::estimator_name(est);

  std::unique_ptr<vecnorm::VecNorm> vn;
  if (mode != Mode::stateless) vn = std::make_unique<vecnorm::VecNorm>(o, table);
  std::vector<vnref::StatefulKey> ref;
  std::vector<vnref::StatelessStats> sref;
  struct Stats {
    DeviceBuffer loc, var, count;
  };
  std::vector<Stats> sbuf;  // stateless: the caller's, of each key's statistics dtype
  for (const auto& k : kKeys) {
    ref.emplace_back(cfg, pooled, k.feature.numel(), m);
    sref.push_back(vnref::StatelessStats::zeros(m * k.feature.numel()));
    const Shape s = batch.concat(k.feature);
    sbuf.push_back(Stats{DeviceBuffer(backend, k.stats, s), DeviceBuffer(backend, k.stats, s),
                         DeviceBuffer(backend, DType::int64, s)});
  }
  std::mt19937_64 rng(7);
  std::vector<vntest::FeatureDistribution> dist;
  for (const auto& k : kKeys) dist.push_back(vntest::random_distribution(rng, k.feature.numel()));

  const int steps = 10;
  for (int step = 1; step <= steps; ++step) {
    std::vector<DeviceBuffer> xs, ys;
    std::vector<std::vector<double>> xv(kKeys.size());
    std::vector<vecnorm::KeyData> items;
    std::vector<vecnorm::StatelessItem> sitems;
    xs.reserve(kKeys.size());
    ys.reserve(kKeys.size());
    for (std::size_t k = 0; k < kKeys.size(); ++k) {
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
    if (mode == Mode::stateless)
      vecnorm::stateless::step(o, table, sitems);
    else
      vn->step(items);
    for (std::size_t k = 0; k < kKeys.size(); ++k) {
      const auto& def = kKeys[k];
      const std::string where = where0 + " step " + std::to_string(step) + " key " + def.name;
      // The tolerance of the statistics dtype the key must have: a float64
      // key with float32 statistics fails it.
      const double rtol = vntest::rtol_for(def.stats, step);
      const DType out = vecnorm::output_dtype(def.dtype);
      if (mode == Mode::stateless) {
        vnref::stateless_update(cfg, sref[k], xv[k]);
        const auto r = vnref::stateless_readouts(cfg, sref[k]);
        ASSERT_TRUE(vntest::AllClose(where + ": y", vnref::stateless_normalize(cfg, sref[k], xv[k]), ys[k].values(),
                                     vntest::y_tolerances(r, false, def.feature.numel(), xv[k], rtol, o.eps, out)));
      } else {
        ref[k].update(xv[k], m);
        ASSERT_TRUE(vntest::AllClose(
            where + ": y", ref[k].normalize(xv[k], m), ys[k].values(),
            vntest::y_tolerances(ref[k].readouts(), pooled, def.feature.numel(), xv[k], rtol, o.eps, out)));
        const auto r = ref[k].readouts();
        ASSERT_TRUE(vntest::AllClose(where + ": loc", ref[k].loc(), vn->loc(def.name), vntest::mu_tolerances(r, rtol)));
        ASSERT_TRUE(vntest::AllClose(where + ": scale", ref[k].scale(), vn->scale(def.name),
                                     vntest::scale_tolerances(r, rtol, o.eps)));
      }
    }
  }
  if (mode == Mode::stateless) return;
  // The state holds each key's statistics in its own dtype, and round-trips.
  const vecnorm::State st = vn->export_state();
  EXPECT_FALSE(st.options.stats_dtype.has_value());
  for (std::size_t k = 0; k < kKeys.size(); ++k) {
    const std::size_t numel = static_cast<std::size_t>(vn->stats_shape(kKeys[k].name).numel());
    EXPECT_EQ(st.keys[k].loc.size(), numel * vecnorm::dtype_size(kKeys[k].stats)) << kKeys[k].name;
    EXPECT_EQ(st.keys[k].var.size(), numel * vecnorm::dtype_size(kKeys[k].stats)) << kKeys[k].name;
  }
  vecnorm::VecNorm back(vntest::options_for(backend));
  back.import_state(vecnorm::decode_state(vecnorm::encode_state(st)));
  for (const auto& k : kKeys) {
    EXPECT_EQ(back.loc(k.name), vn->loc(k.name)) << k.name;
    EXPECT_EQ(back.scale(k.name), vn->scale(k.name)) << k.name;
  }
}

INSTANTIATE_TEST_SUITE_P(All, StatsDType,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(Mode::per_element, Mode::pooled, Mode::stateless),
                                            ::testing::Values(Estimator::torchrl, Estimator::stable)),
                         [](const ::testing::TestParamInfo<Param>& info) { return vntest::param_name(info.param); });

// Issue 18 item 7: x = 1 + (i + 1) 2^-30 is no float32 (float32(x) = 1), so a
// float64 input with float32 statistics normalized its first step to
// (x - 1) / eps ~ 1e-5 (i + 1) (stable, decay 1: loc = float32(x), var 0);
// with the default its statistics are float64 and the first step is 0
// (stable: loc = x exactly) or within rounding of 0 (torchrl's bias-corrected
// mean).
TEST(StatsDTypeFixed, AFloat64InputsFirstStepIsZero) {
  for (Backend backend : vntest::test_backends())
    for (Estimator est : {Estimator::stable, Estimator::torchrl})
      for (bool pinned : {false, true}) {
        if (pinned && est == Estimator::torchrl) continue;  // torchrl's float32 first step has no closed form here
        vecnorm::Options o = vntest::options_for(backend);
        o.estimator = est;
        o.decay = est == Estimator::stable ? 1.0 : 0.99;
        o.eps = 1e-4;
        if (pinned) o.stats_dtype = DType::float32;
        std::vector<double> x(6);
        for (std::size_t i = 0; i < x.size(); ++i) x[i] = 1.0 + std::ldexp(static_cast<double>(i + 1), -30);
        vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{2}, {{"pos", Shape{3}, DType::float64}}});
        const auto yb = vntest::call_one(vntest::Call::step, vn, backend, "pos", DType::float64, Shape{2, 3}, x);
        std::vector<double> y(yb.size() / sizeof(double));
        std::memcpy(y.data(), yb.data(), yb.size());
        const std::string where = std::string(vntest::backend_name(backend)) + "/" + vntest::estimator_name(est) +
                                  (pinned ? " float32 statistics" : " default");
        for (std::size_t i = 0; i < y.size(); ++i) {
          const double float32_error = std::ldexp(static_cast<double>(i + 1), -30) / o.eps;  // ~9.3e-6 (i + 1)
          if (pinned)
            EXPECT_NEAR(std::abs(y[i]), float32_error, 1e-3 * float32_error) << where << " element " << i;
          else if (est == Estimator::stable)
            EXPECT_EQ(y[i], 0.0) << where << " element " << i;
          else
            EXPECT_LE(std::abs(y[i]), 1e-10) << where << " element " << i;
        }
      }
}

// A state's statistics dtypes must be the receiver's, key by key: an old
// default (float32 statistics of a float64 input) does not load into a
// default normalizer, and says how to load it.
TEST(StatsDTypeFixed, ImportComparesEachKeysStatisticsDType) {
  const vecnorm::KeyTable table{Shape{2}, {{"pos", Shape{}, DType::float64}, {"obs", Shape{}, DType::float32}}};
  vecnorm::Options pinned;
  pinned.stats_dtype = DType::float32;
  vecnorm::VecNorm old(pinned, table);
  const std::vector<double> x = {1.0, 2.0};
  vntest::call_one(vntest::Call::step, old, Backend::cpu, "pos", DType::float64, Shape{2}, x);
  vecnorm::VecNorm fresh(vecnorm::Options{}, table);
  std::string m = message_of([&] { fresh.import_state(old.export_state()); }, vecnorm::ErrorCode::state_mismatch);
  EXPECT_NE(m.find("stats_dtype: expected auto (each key's from its input) (this VecNorm's), got float32 (the state's)"),
            std::string::npos)
      << m;
  // Both default, a key's input dtype differs: the key's dtype is named, not
  // the statistics dtype (which follows from it).
  vecnorm::VecNorm narrow(vecnorm::Options{}, vecnorm::KeyTable{Shape{2}, {{"pos", Shape{}, DType::float32},
                                                                           {"obs", Shape{}, DType::float32}}});
  m = message_of([&] { fresh.import_state(narrow.export_state()); }, vecnorm::ErrorCode::state_mismatch);
  EXPECT_NE(m.find("key 'pos': dtype: expected float64 (this VecNorm's), got float32"), std::string::npos) << m;
  // Pinned to float32 it loads; so does a default state into a default normalizer.
  vecnorm::VecNorm same(pinned, table);
  EXPECT_NO_THROW(same.import_state(old.export_state()));
  vecnorm::VecNorm a(vecnorm::Options{}, table), b(vecnorm::Options{}, table);
  vntest::call_one(vntest::Call::step, a, Backend::cpu, "pos", DType::float64, Shape{2}, x);
  EXPECT_NO_THROW(b.import_state(a.export_state()));
  EXPECT_EQ(b.loc("pos"), a.loc("pos"));
  // Keys that agree: none and float64 are the same statistics.
  const vecnorm::KeyTable wide{Shape{2}, {{"pos", Shape{}, DType::float64}}};
  vecnorm::Options f64;
  f64.stats_dtype = DType::float64;
  vecnorm::VecNorm c(vecnorm::Options{}, wide), d(f64, wide);
  vntest::call_one(vntest::Call::step, c, Backend::cpu, "pos", DType::float64, Shape{2}, x);
  EXPECT_NO_THROW(d.import_state(c.export_state()));
  EXPECT_EQ(d.loc("pos"), c.loc("pos"));
}

// A reward scaler's returns have each key's statistics dtype: with the
// default, float32 and float64 rewards in one scaler; a float16 reward names
// the float32 it needs.
TEST(StatsDTypeFixed, ARewardScalersKeysMayDifferInDType) {
  vecnorm::Options o;
  o.estimator = Estimator::stable;
  o.decay = 1.0;
  o.reduce_batch_dims = true;
  o.center = false;
  o.prior_count = 1e-4;
  o.scale = vecnorm::ScaleForm::sqrt_var_plus_eps;
  o.eps = 1e-8;
  const vecnorm::KeyTable table{Shape{3}, {{"r32", Shape{}, DType::float32}, {"r64", Shape{}, DType::float64}}};
  vecnorm::RewardScaler rs(o, vecnorm::ReturnOptions{}, table);
  const float r32[3] = {1.0f, 2.0f, -1.0f};
  const double r64[3] = {1.0, 2.0, -1.0};
  float y32[3];
  double y64[3];
  const std::vector<vecnorm::RewardData> items = {
      {"r32", {r32, DType::float32, Shape{3}}, {y32, DType::float32, Shape{3}}},
      {"r64", {r64, DType::float64, Shape{3}}, {y64, DType::float64, Shape{3}}}};
  rs.step(items);
  rs.step(items);
  // Both keys saw the same rewards: the same scale, each to its own precision.
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(y32[i], y64[i], 1e-6 * std::abs(y64[i])) << i;
  const vecnorm::State st = rs.export_state();
  ASSERT_TRUE(st.returns.has_value());
  EXPECT_EQ(st.returns->values[0].size(), 3u * 4u);
  EXPECT_EQ(st.returns->values[1].size(), 3u * 8u);
  const std::string m = message_of(
      [&] { vecnorm::RewardScaler(o, vecnorm::ReturnOptions{}, {Shape{3}, {{"h", Shape{}, DType::float16}}}); },
      vecnorm::ErrorCode::invalid_key_table);
  EXPECT_NE(m.find("key 'h': dtype: expected float32"), std::string::npos) << m;
}

// More keys than one launch holds (16), in runs of both statistics dtypes
// (18 float64, 18 float32, then alternating): on the CUDA backend a call is
// many groups; every key against the naive reference to its own dtype's
// rounding, per-element and pooled.
TEST(StatsDTypeFixed, ManyKeysInRunsOfBothDTypes) {
  for (Backend backend : vntest::test_backends())
    for (bool pooled : {false, true}) {
      vecnorm::Options o = vntest::options_for(backend);
      o.estimator = Estimator::stable;
      o.decay = 0.95;
      o.reduce_batch_dims = pooled;
      const Shape batch{3};
      const std::int64_t m = batch.numel();
      std::vector<KeyDef> keys;
      for (int i = 0; i < 44; ++i) {
        const bool wide = i < 18 || (i >= 36 && i % 2 == 0);
        keys.push_back({"k" + std::to_string(i), Shape{2}, wide ? DType::float64 : DType::float32,
                        wide ? DType::float64 : DType::float32});
      }
      vecnorm::KeyTable table{batch, {}};
      for (const auto& k : keys) table.keys.push_back({k.name, k.feature, k.dtype});
      vecnorm::VecNorm vn(o, table);
      const vnref::Config cfg{vntest::to_ref(o.estimator), o.decay, o.eps};
      std::vector<vnref::StatefulKey> ref;
      for (const auto& k : keys) ref.emplace_back(cfg, pooled, k.feature.numel(), m);
      std::mt19937_64 rng(3);
      for (int step = 1; step <= 3; ++step) {
        std::vector<DeviceBuffer> xs, ys;
        xs.reserve(keys.size());
        ys.reserve(keys.size());
        std::vector<std::vector<double>> xv;
        std::vector<vecnorm::KeyData> items;
        for (const auto& k : keys) {
          const Shape s = batch.concat(k.feature);
          const auto stored = vntest::random_values(rng, k.dtype, m, 2, vntest::random_distribution(rng, 2));
          xv.push_back(vntest::computed_inputs(k.dtype, stored));
          xs.push_back(DeviceBuffer::from_values(backend, k.dtype, s, stored));
          ys.emplace_back(backend, k.dtype, s);
          items.push_back({k.name, xs.back().cview(), ys.back().view()});
        }
        vn.step(items);
        for (std::size_t k = 0; k < keys.size(); ++k) {
          ref[k].update(xv[k], m);
          const std::string where = std::string(vntest::backend_name(backend)) + (pooled ? " pooled" : " per-element") +
                                    " step " + std::to_string(step) + " key " + keys[k].name;
          ASSERT_TRUE(vntest::AllClose(where + ": y", ref[k].normalize(xv[k], m), ys[k].values(),
                                       vntest::y_tolerances(ref[k].readouts(), pooled, 2, xv[k],
                                                            vntest::rtol_for(keys[k].stats, step), o.eps,
                                                            keys[k].dtype)));
        }
      }
    }
}

// Ranks merge keys of both statistics dtypes (the exchange's signature holds
// each key's statistics dtype): as one normalizer over every rank's rows; a
// rank whose float64 key has float32 statistics is refused by every rank.
TEST(StatsDTypeRanks, RanksMergeKeysOfBothDTypes) {
  for (Backend backend : vntest::test_backends()) {
    vecnorm::Options base = vntest::options_for(backend);
    base.reduce_batch_dims = true;
    base.estimator = Estimator::stable;
    base.decay = 1.0;
    const std::vector<KeyDef> keys = {kKeys[1], kKeys[0]};  // pos (float64), obs (float32)
    auto table_of = [&](std::int64_t rows) {
      vecnorm::KeyTable t{Shape{rows}, {}};
      for (const auto& k : keys) t.keys.push_back({k.name, k.feature, k.dtype});
      return t;
    };
    auto vns = vntest::ranks_of(base, table_of(3), 2);
    vecnorm::VecNorm single(base, table_of(6));
    std::mt19937_64 rng(11);
    for (int step = 0; step < 4; ++step) {
      std::vector<std::vector<double>> all(keys.size());
      for (std::size_t k = 0; k < keys.size(); ++k)
        all[k] = vntest::random_values(rng, keys[k].dtype, 6, keys[k].feature.numel(),
                                       vntest::random_distribution(rng, keys[k].feature.numel()));
      auto run = [&](vecnorm::VecNorm& vn, std::int64_t first, std::int64_t rows) {
        std::vector<DeviceBuffer> xs;
        xs.reserve(keys.size());
        std::vector<vecnorm::KeyData> items;
        for (std::size_t k = 0; k < keys.size(); ++k) {
          const std::int64_t f = keys[k].feature.numel();
          const std::vector<double> part(all[k].begin() + first * f, all[k].begin() + (first + rows) * f);
          xs.push_back(DeviceBuffer::from_values(backend, keys[k].dtype, Shape{rows}.concat(keys[k].feature), part));
          items.push_back({keys[k].name, xs.back().cview(), {}});
        }
        vn.update(items);
      };
      vntest::on_ranks(2, [&](int r) { run(*vns[static_cast<std::size_t>(r)], 3 * r, 3); });
      run(single, 0, 6);
    }
    for (const auto& k : keys) {
      const auto a = vns[0]->loc(k.name), b = single.loc(k.name);
      const auto sa = vns[1]->scale(k.name), sb = single.scale(k.name);
      const double tol = 64 * vntest::unit_roundoff(k.stats);
      for (std::size_t i = 0; i < a.size(); ++i) {
        EXPECT_NEAR(a[i], b[i], tol * (1 + std::abs(b[i]))) << vntest::backend_name(backend) << " " << k.name;
        EXPECT_NEAR(sa[i], sb[i], tol * sb[i]) << vntest::backend_name(backend) << " " << k.name;
      }
    }
    // The float64 key's loc holds what float32 cannot: its state has 8 bytes a value.
    EXPECT_EQ(vns[0]->export_state().keys[0].loc.size(), 3u * 8u);  // pos: feature [3]

    // One rank pins float32: every rank refuses the exchange.
    vecnorm::Options pinned = base;
    pinned.stats_dtype = DType::float32;
    const auto group = vecnorm::thread_group(2);
    std::vector<std::unique_ptr<vecnorm::VecNorm>> mixed;
    for (int r = 0; r < 2; ++r) {
      vecnorm::Options o = r == 0 ? base : pinned;
      o.collective = group[static_cast<std::size_t>(r)];
      mixed.push_back(std::make_unique<vecnorm::VecNorm>(o, table_of(3)));
    }
    std::vector<std::string> errors(2);
    vntest::on_ranks(2, [&](int r) {
      const std::vector<double> x(3 * 3, 0.5);
      DeviceBuffer xb = DeviceBuffer::from_values(backend, DType::float64, Shape{3, 3}, x);
      const std::vector<vecnorm::KeyData> items = {{"pos", xb.cview(), {}}};
      try {
        mixed[static_cast<std::size_t>(r)]->update(items);
      } catch (const vecnorm::Error& e) {
        errors[static_cast<std::size_t>(r)] =
            std::string(e.code() == vecnorm::ErrorCode::collective_error ? "" : "(not collective_error) ") + e.what();
      }
    });
    // On the host every rank throws; on a device the kernels see the
    // signatures differ and change nothing, without a host synchronization
    // (docs/distributed.md).
    for (int r = 0; r < 2; ++r) {
      const std::string& e = errors[static_cast<std::size_t>(r)];
      if (backend == Backend::cpu)
        EXPECT_NE(e.find("stats_dtype"), std::string::npos) << "rank " << r << ": " << e;
      else
        EXPECT_EQ(e, "") << "rank " << r;
      EXPECT_EQ(mixed[static_cast<std::size_t>(r)]->count("pos"), 0) << vntest::backend_name(backend) << " rank " << r;
    }
  }
}

// Ranks whose inputs of a key differ in dtype (float16 on one, float32 on the
// other) share its float32 statistics: the messages carry moments in double,
// and the exchange's signature holds each key's statistics dtype, not its
// input's. As one normalizer over every rank's rows (values exact in float16).
TEST(StatsDTypeRanks, InputDTypesMayDifferAcrossRanks) {
  for (Backend backend : vntest::test_backends()) {
    vecnorm::Options base = vntest::pooled_cumulative_options(backend);
    base.stats_dtype.reset();  // each key's from its input: float32 for both
    const auto group = vecnorm::thread_group(2);
    std::vector<std::unique_ptr<vecnorm::VecNorm>> vns;
    for (int r = 0; r < 2; ++r) {
      vecnorm::Options o = base;
      o.collective = group[static_cast<std::size_t>(r)];
      const DType in = r == 0 ? DType::float16 : DType::float32;
      vns.push_back(std::make_unique<vecnorm::VecNorm>(o, vecnorm::KeyTable{Shape{3}, {{"obs", Shape{2}, in}}}));
    }
    vecnorm::VecNorm single(base, {Shape{6}, {{"obs", Shape{2}, DType::float32}}});
    const std::vector<double> all = {1, 2, 3.5, -4, 0.5, 6, 7, -8, 9, 10.5, 11, 12};
    vntest::on_ranks(2, [&](int r) {
      const std::vector<double> part(all.begin() + 6 * r, all.begin() + 6 * r + 6);
      DeviceBuffer xb = DeviceBuffer::from_values(backend, r == 0 ? DType::float16 : DType::float32, Shape{3, 2}, part);
      const std::vector<vecnorm::KeyData> items = {{"obs", xb.cview(), {}}};
      vns[static_cast<std::size_t>(r)]->update(items);
    });
    DeviceBuffer xb = DeviceBuffer::from_values(backend, DType::float32, Shape{6, 2}, all);
    const std::vector<vecnorm::KeyData> items = {{"obs", xb.cview(), {}}};
    single.update(items);
    const auto want_loc = single.loc("obs"), want_scale = single.scale("obs");
    EXPECT_NEAR(want_loc[0], 32.0 / 6.0, 1e-6) << "the closed form";
    for (int r = 0; r < 2; ++r) {
      const std::string at = std::string(vntest::backend_name(backend)) + " rank " + std::to_string(r);
      EXPECT_EQ(vns[static_cast<std::size_t>(r)]->count("obs"), 6) << at;
      const auto loc = vns[static_cast<std::size_t>(r)]->loc("obs"), scale = vns[static_cast<std::size_t>(r)]->scale("obs");
      for (std::size_t f = 0; f < 2; ++f) {
        EXPECT_NEAR(loc[f], want_loc[f], 1e-6 * (1.0 + std::abs(want_loc[f]))) << at;
        EXPECT_NEAR(scale[f], want_scale[f], 1e-6 * want_scale[f]) << at;
      }
    }
  }
}

// A shared segment of keys of both statistics dtypes: attached with the
// default it steps as a VecNorm does, bit for bit; attached with float32
// statistics it is refused by name.
TEST(StatsDTypeShared, ASegmentHoldsEachKeysStatisticsDType) {
  const std::string name = "/vecnorm-test-" + std::to_string(::getpid()) + "-statsdtype";
  vecnorm::KeyTable table{Shape{4}, {}};
  for (const auto& k : kKeys) table.keys.push_back({k.name, k.feature, k.dtype});
  const vecnorm::Options o;
  auto created = vecnorm::SharedVecNorm::create(name, o, table);
  struct Unlink {
    std::string n;
    ~Unlink() { vecnorm::SharedVecNorm::unlink(n); }
  } unlink{name};
  auto attached = vecnorm::SharedVecNorm::attach(name, o, table);
  vecnorm::VecNorm plain(o, table);
  std::mt19937_64 rng(5);
  for (int step = 0; step < 3; ++step) {
    std::vector<DeviceBuffer> xs, ys, zs;
    xs.reserve(kKeys.size());
    ys.reserve(kKeys.size());
    zs.reserve(kKeys.size());
    std::vector<vecnorm::KeyData> a, b;
    for (const auto& k : kKeys) {
      const Shape s = table.batch_shape.concat(k.feature);
      xs.push_back(DeviceBuffer::from_values(
          Backend::cpu, k.dtype, s,
          vntest::random_values(rng, k.dtype, 4, k.feature.numel(), vntest::random_distribution(rng, k.feature.numel()))));
      ys.emplace_back(Backend::cpu, vecnorm::output_dtype(k.dtype), s);
      zs.emplace_back(Backend::cpu, vecnorm::output_dtype(k.dtype), s);
      a.push_back({k.name, xs.back().cview(), ys.back().view()});
      b.push_back({k.name, xs.back().cview(), zs.back().view()});
    }
    (step % 2 ? created : attached).step(a);
    plain.step(b);
    for (std::size_t k = 0; k < kKeys.size(); ++k) EXPECT_EQ(ys[k].bytes(), zs[k].bytes()) << kKeys[k].name;
  }
  const vecnorm::State st = attached.export_state();
  const vecnorm::State ref = plain.export_state();
  for (std::size_t k = 0; k < kKeys.size(); ++k) {
    EXPECT_EQ(st.keys[k].loc, ref.keys[k].loc) << kKeys[k].name;
    EXPECT_EQ(st.keys[k].var, ref.keys[k].var) << kKeys[k].name;
  }
  vecnorm::Options pinned;
  pinned.stats_dtype = DType::float32;
  const std::string m =
      message_of([&] { (void)vecnorm::SharedVecNorm::attach(name, pinned, table); }, vecnorm::ErrorCode::state_mismatch);
  EXPECT_NE(m.find("stats_dtype: expected float32 (the caller's), got auto (each key's from its input) (the segment's)"),
            std::string::npos)
      << m;
}

}  // namespace
