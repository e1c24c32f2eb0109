// tests/api/collective_test.cpp -- pooled statistics across ranks
// (Options::collective, vecnorm/collective.hpp), with the ranks as threads of
// this process (vecnorm::thread_group), on every backend.
//
// N ranks stepping B_r rows each must store the statistics of one process
// stepping the concatenated batches (within rounding; checked against the
// naive reference over the concatenation and against a VecNorm without a
// collective), the same bits on every rank; one rank is the plain step bit
// for bit; a failed rank, a key only some ranks have or a rank configured
// differently changes nothing on any rank; a missing rank times out.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "support/check.hpp"
#include "support/data.hpp"
#include "support/device_buffer.hpp"
#include "support/ranks.hpp"
#include "support/dtypes.hpp"
#include "support/harness.hpp"
#include "vecnorm/collective.hpp"

namespace {

using vecnorm::Backend;
using vecnorm::DType;
using vecnorm::ErrorCode;
using vecnorm::Shape;
using vntest::DeviceBuffer;

constexpr int kRanks = 4;
constexpr std::int64_t kF = 6;

vecnorm::KeyTable table() {
  return {Shape{8}, {{"obs", Shape{kF}, DType::float32}, {"reward", Shape{}, DType::float32}}};
}

using vntest::on_ranks;

/// What a rank steps at one step: rows of obs and of reward (absent: no reward).
struct RankBatch {
  std::int64_t rows = 0;
  std::vector<double> obs, reward;
  bool has_reward = true;
};

/// Rank r's batch at step s: 3 + 5 r rows (rank 3 has none at step 2), the
/// reward absent on every rank at step 0 (a reset), a NaN in rank 1's row 2
/// at step 4.
RankBatch batch_of(int r, int s) {
  std::mt19937_64 rng(1000u * static_cast<unsigned>(s) + static_cast<unsigned>(r));
  RankBatch b;
  b.rows = (r == 3 && s == 2) ? 0 : 3 + 5 * r;
  const vntest::FeatureDistribution obs{{2.0, -1.0, 30.0, 0.0, 1e3, -5.0}, {0.5, 2.0, 4.0, 1.0, 10.0, 0.1}};
  b.obs = vntest::random_values(rng, DType::float32, b.rows, kF, obs);
  b.reward = vntest::random_values(rng, DType::float32, b.rows, 1, {{0.5}, {1.0}});
  b.has_reward = s != 0;
  if (r == 1 && s == 4) b.obs[2 * kF + 3] = std::numeric_limits<double>::quiet_NaN();
  return b;
}

/// Steps `vn` with a batch (outputs into y_obs / y_reward, resized).
void step(vecnorm::VecNorm& vn, Backend backend, const RankBatch& b, std::vector<double>* y_obs = nullptr,
          std::vector<double>* y_reward = nullptr) {
  auto xo = DeviceBuffer::from_values(backend, DType::float32, Shape{b.rows, kF}, b.obs);
  auto xr = DeviceBuffer::from_values(backend, DType::float32, Shape{b.rows}, b.reward);
  DeviceBuffer yo(backend, DType::float32, Shape{b.rows, kF}), yr(backend, DType::float32, Shape{b.rows});
  std::vector<vecnorm::KeyData> items = {{"obs", xo.cview(), yo.view()}};
  if (b.has_reward) items.push_back({"reward", xr.cview(), yr.view()});
  vn.step(items);
  if (y_obs) *y_obs = yo.values();
  if (y_reward) *y_reward = yr.values();
}

/// The statistics of a normalizer as stored: loc, var bytes and the count of each key.
struct Snapshot {
  std::vector<std::vector<std::uint8_t>> loc, var;
  std::vector<std::int64_t> count, skipped;
};
Snapshot snapshot(const vecnorm::VecNorm& vn) {
  const vecnorm::State st = vn.export_state();
  Snapshot s;
  for (const auto& k : st.keys) {
    s.loc.push_back(k.loc);
    s.var.push_back(k.var);
    s.count.push_back(k.count);
    s.skipped.push_back(k.skipped);
  }
  return s;
}
bool same_stats(const Snapshot& a, const Snapshot& b) { return a.loc == b.loc && a.var == b.var && a.count == b.count; }

/// Values of a State's loc/var bytes.
std::vector<double> values_of(const std::vector<std::uint8_t>& bytes, DType d) {
  return vntest::decode(d, vntest::as_bytes(bytes));
}

using Param = std::tuple<Backend, DType /*stats*/, double /*decay*/>;
class Collective : public ::testing::TestWithParam<Param> {
 protected:
  Backend backend() const { return std::get<0>(GetParam()); }
  vecnorm::Options opts() const {
    vecnorm::Options o = vntest::options_for(backend());
    o.reduce_batch_dims = true;
    o.stats_dtype = std::get<1>(GetParam());
    o.decay = std::get<2>(GetParam());
    return o;
  }
};

TEST_P(Collective, RanksStoreTheStatisticsOfTheConcatenatedBatchOnEveryRankBitForBit) {
  const vecnorm::Options base = opts();
  const auto group = vecnorm::thread_group(kRanks);
  std::vector<std::unique_ptr<vecnorm::VecNorm>> vns;
  for (int r = 0; r < kRanks; ++r) {
    vecnorm::Options o = base;
    o.collective = group[static_cast<std::size_t>(r)];
    vns.push_back(std::make_unique<vecnorm::VecNorm>(o, table()));
  }
  vecnorm::VecNorm single(base, table());  // one process over the concatenation
  const vnref::Config rc{vnref::Estimator::torchrl, base.decay, base.eps};
  vnref::StatefulKey ref_obs(rc, true, kF), ref_reward(rc, true, 1);
  double worst = 0.0;  // the largest relative difference from the single process
  const int steps = 12;
  for (int s = 0; s < steps; ++s) {
    std::vector<RankBatch> batches;
    RankBatch all;
    all.has_reward = s != 0;
    for (int r = 0; r < kRanks; ++r) {
      batches.push_back(batch_of(r, s));
      const RankBatch& b = batches.back();
      all.rows += b.rows;
      all.obs.insert(all.obs.end(), b.obs.begin(), b.obs.end());
      all.reward.insert(all.reward.end(), b.reward.begin(), b.reward.end());
    }
    std::vector<std::vector<double>> y_obs(kRanks), y_reward(kRanks);
    on_ranks(kRanks, [&](int r) {
      step(*vns[static_cast<std::size_t>(r)], backend(), batches[static_cast<std::size_t>(r)],
           &y_obs[static_cast<std::size_t>(r)], &y_reward[static_cast<std::size_t>(r)]);
    });
    step(single, backend(), all);
    const std::string at = "step " + std::to_string(s);

    // The same bits on every rank.
    const Snapshot s0 = snapshot(*vns[0]);
    for (int r = 1; r < kRanks; ++r)
      EXPECT_TRUE(same_stats(s0, snapshot(*vns[static_cast<std::size_t>(r)]))) << at << ": rank " << r << " differs from rank 0";
    // The single process's statistics (within rounding: Chan's merge of the
    // ranks' moments against shifted sums over the concatenation) and counts.
    const Snapshot one = snapshot(single);
    EXPECT_EQ(s0.count, one.count) << at;
    for (std::size_t k = 0; k < 2; ++k) {
      const auto a = values_of(s0.loc[k], *base.stats_dtype), b = values_of(one.loc[k], *base.stats_dtype);
      const auto va = values_of(s0.var[k], *base.stats_dtype), vb = values_of(one.var[k], *base.stats_dtype);
      const double u = vntest::unit_roundoff(*base.stats_dtype);
      for (std::size_t i = 0; i < a.size(); ++i) {
        // Relative to the spread of the data (a mean near 0 has no digits of its own).
        const double spread = std::sqrt(std::abs(vb[i])) + std::abs(b[i]);
        const double dl = std::abs(a[i] - b[i]) / std::max(spread, 1e-300);
        const double dv = std::abs(va[i] - vb[i]) / std::max(std::abs(vb[i]) + b[i] * b[i], 1e-300);
        worst = std::max({worst, dl, dv});
        EXPECT_LE(dl, 8 * u) << at << ": key " << k << " loc[" << i << "]: " << a[i] << " vs " << b[i];
        EXPECT_LE(dv, 8 * u) << at << ": key " << k << " var[" << i << "]: " << va[i] << " vs " << vb[i];
      }
    }
    // The naive reference over the concatenation (the NaN row left out, as
    // NonFinite::skip leaves it out), and each rank's outputs against it.
    std::vector<double> obs_ok;
    std::int64_t rows_ok = 0;
    for (std::int64_t i = 0; i < all.rows; ++i) {
      bool finite = true;
      for (std::int64_t f = 0; f < kF; ++f) finite = finite && std::isfinite(all.obs[static_cast<std::size_t>(i * kF + f)]);
      if (!finite) continue;
      obs_ok.insert(obs_ok.end(), all.obs.begin() + i * kF, all.obs.begin() + (i + 1) * kF);
      ++rows_ok;
    }
    ref_obs.update(obs_ok, rows_ok);
    if (all.has_reward) ref_reward.update(all.reward, all.rows);
    const double rtol = vntest::rtol_for(*base.stats_dtype, s + 1);
    for (int r = 0; r < kRanks; ++r) {
      const RankBatch& b = batches[static_cast<std::size_t>(r)];
      if (b.rows == 0) continue;
      std::vector<double> x = b.obs, y = y_obs[static_cast<std::size_t>(r)];
      if (r == 1 && s == 4) {  // the NaN row's output is NaN: compare the others
        for (std::int64_t f = 0; f < kF; ++f) x[static_cast<std::size_t>(2 * kF + f)] = y[static_cast<std::size_t>(2 * kF + f)] = 0.0;
      }
      std::vector<double> expect = ref_obs.normalize(x, b.rows);
      if (r == 1 && s == 4)
        for (std::int64_t f = 0; f < kF; ++f) expect[static_cast<std::size_t>(2 * kF + f)] = 0.0;
      EXPECT_TRUE(vntest::AllClose(at + ": rank " + std::to_string(r) + " obs output vs reference", expect, y,
                                   vntest::y_tolerances(ref_obs.readouts(), true, kF, x, rtol, base.eps, DType::float32)));
      if (all.has_reward) {
        EXPECT_TRUE(vntest::AllClose(
            at + ": rank " + std::to_string(r) + " reward output vs reference", ref_reward.normalize(b.reward, b.rows),
            y_reward[static_cast<std::size_t>(r)],
            vntest::y_tolerances(ref_reward.readouts(), true, 1, b.reward, rtol, base.eps, DType::float32)));
      }
    }
  }
  // Only the rank that had the NaN counts it as skipped.
  for (int r = 0; r < kRanks; ++r)
    EXPECT_EQ(snapshot(*vns[static_cast<std::size_t>(r)]).skipped[0], r == 1 ? 1 : 0) << "rank " << r;
  char text[32];
  std::snprintf(text, sizeof text, "%.3g", worst);
  RecordProperty("max_relative_difference_from_single_process", text);
}

TEST_P(Collective, OneRankIsThePlainStepBitForBit) {
  const vecnorm::Options base = opts();
  vecnorm::Options o = base;
  o.collective = vecnorm::thread_group(1)[0];
  vecnorm::VecNorm with(o, table()), without(base, table());
  for (int s = 0; s < 6; ++s) {
    const RankBatch b = batch_of(1, s);  // with a NaN row at step 4
    std::vector<double> y1, y2, r1, r2;
    step(with, backend(), b, &y1, &r1);
    step(without, backend(), b, &y2, &r2);
    EXPECT_TRUE(vntest::AllEqual("step " + std::to_string(s) + " obs output", y2, y1));
    EXPECT_TRUE(same_stats(snapshot(without), snapshot(with))) << "step " << s;
  }
}

/// Rank `odd` does something the others do not; `expect_own` is the code it throws.
void expect_nothing_changes(Backend backend, const vecnorm::Options& base, int odd,
                            const std::function<void(vecnorm::VecNorm&, const RankBatch&)>& odd_step,
                            ErrorCode expect_own, const std::string& others_say, bool odd_config = false) {
  const auto group = vecnorm::thread_group(kRanks);
  std::vector<std::unique_ptr<vecnorm::VecNorm>> vns;
  for (int r = 0; r < kRanks; ++r) {
    vecnorm::Options o = base;
    if (odd_config && r == odd) o.decay = base.decay == 1.0 ? 0.5 : 1.0;
    o.collective = group[static_cast<std::size_t>(r)];
    vns.push_back(std::make_unique<vecnorm::VecNorm>(o, table()));
  }
  if (!odd_config)  // a good step first, so that the statistics are not empty
    on_ranks(kRanks, [&](int r) { step(*vns[static_cast<std::size_t>(r)], backend, batch_of(r, 1)); });
  std::vector<Snapshot> before;
  for (auto& vn : vns) before.push_back(snapshot(*vn));
  std::vector<std::string> said(kRanks);
  std::vector<int> code(kRanks, -1);
  on_ranks(kRanks, [&](int r) {
    try {
      if (r == odd)
        odd_step(*vns[static_cast<std::size_t>(r)], batch_of(r, 5));
      else
        step(*vns[static_cast<std::size_t>(r)], backend, batch_of(r, 5));
    } catch (const vecnorm::Error& e) {
      said[static_cast<std::size_t>(r)] = e.what();
      code[static_cast<std::size_t>(r)] = static_cast<int>(e.code());
    }
  });
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_TRUE(same_stats(before[static_cast<std::size_t>(r)], snapshot(*vns[static_cast<std::size_t>(r)])))
        << "rank " << r << " changed its statistics";
    const bool own = r == odd && expect_own != ErrorCode::collective_error;
    if (own) {
      EXPECT_EQ(code[static_cast<std::size_t>(r)], static_cast<int>(expect_own)) << "rank " << r << ": " << said[static_cast<std::size_t>(r)];
    } else if (backend == Backend::cpu) {
      // The host reads the verdict: every rank says what went wrong.
      EXPECT_EQ(code[static_cast<std::size_t>(r)], static_cast<int>(ErrorCode::collective_error)) << "rank " << r;
      EXPECT_NE(said[static_cast<std::size_t>(r)].find(others_say), std::string::npos)
          << "rank " << r << " said: " << said[static_cast<std::size_t>(r)];
    } else {
      // On a device the kernel decides without the host: nothing changes, no error.
      EXPECT_EQ(code[static_cast<std::size_t>(r)], -1) << "rank " << r << ": " << said[static_cast<std::size_t>(r)];
    }
  }
}

TEST_P(Collective, ARankThatFailsChangesNothingOnAnyRank) {
  const Backend b = backend();
  expect_nothing_changes(b, opts(), 2,
                         [&](vecnorm::VecNorm& vn, const RankBatch& batch) {
                           // obs with 5 features instead of 6
                           auto x = DeviceBuffer::from_values(b, DType::float32, Shape{batch.rows, kF - 1},
                                                              std::vector<double>(static_cast<std::size_t>(batch.rows * (kF - 1)), 1.0));
                           DeviceBuffer y(b, DType::float32, Shape{batch.rows, kF - 1});
                           vn.step({{"obs", x.cview(), y.view()}});
                         },
                         ErrorCode::shape_mismatch, "rank 2 failed its step (shape_mismatch");
}

TEST_P(Collective, AKeyOnlySomeRanksStepChangesNothingOnAnyRank) {
  const Backend b = backend();
  expect_nothing_changes(b, opts(), 1,
                         [&](vecnorm::VecNorm& vn, const RankBatch& batch) {
                           RankBatch no_reward = batch;
                           no_reward.has_reward = false;
                           step(vn, b, no_reward);
                         },
                         ErrorCode::collective_error,
                         "key 'reward': expected on every rank or on none, got it from rank(s) 0, 2, 3 but not from rank(s) 1");
}

TEST_P(Collective, RanksConfiguredDifferentlyChangeNothing) {
  const Backend b = backend();
  expect_nothing_changes(b, opts(), 3, [&](vecnorm::VecNorm& vn, const RankBatch& batch) { step(vn, b, batch); },
                         ErrorCode::collective_error, "rank 3's normalizer differs from rank 0's", /*odd_config=*/true);
}

TEST_P(Collective, PerElementStatisticsStayLocal) {
  vecnorm::Options base = opts();
  base.reduce_batch_dims = false;
  const auto group = vecnorm::thread_group(2);
  const vecnorm::KeyTable t{Shape{3}, {{"obs", Shape{kF}, DType::float32}}};
  std::vector<std::unique_ptr<vecnorm::VecNorm>> with, without;
  for (int r = 0; r < 2; ++r) {
    vecnorm::Options o = base;
    o.collective = group[static_cast<std::size_t>(r)];
    with.push_back(std::make_unique<vecnorm::VecNorm>(o, t));
    without.push_back(std::make_unique<vecnorm::VecNorm>(base, t));
  }
  for (int s = 0; s < 3; ++s)
    for (int r = 0; r < 2; ++r) {  // one rank at a time: no collective is called
      std::mt19937_64 rng(static_cast<unsigned>(10 * s + r));
      const auto x = vntest::random_values(rng, DType::float32, 3, kF,
                                            {std::vector<double>(kF, 1.0), std::vector<double>(kF, 2.0)});
      auto xb = DeviceBuffer::from_values(backend(), DType::float32, Shape{3, kF}, x);
      DeviceBuffer y1(backend(), DType::float32, Shape{3, kF}), y2(backend(), DType::float32, Shape{3, kF});
      with[static_cast<std::size_t>(r)]->step({{"obs", xb.cview(), y1.view()}});
      without[static_cast<std::size_t>(r)]->step({{"obs", xb.cview(), y2.view()}});
      EXPECT_TRUE(vntest::BitEqual("rank " + std::to_string(r), DType::float32, y2.bytes(), y1.bytes()));
    }
}

INSTANTIATE_TEST_SUITE_P(All, Collective,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(DType::float32, DType::float64),
                                            ::testing::Values(1.0, 0.99)),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::string(vntest::backend_name(std::get<0>(info.param))) + "_" +
                                  vecnorm::to_string(std::get<1>(info.param)) +
                                  (std::get<2>(info.param) == 1.0 ? "_cumulative" : "_decaying");
                         });

TEST(ThreadGroup, AMissingRankTimesOutWithAClearError) {
  const auto group = vecnorm::thread_group(2, 0.3);
  vecnorm::Options o;
  o.reduce_batch_dims = true;
  o.collective = group[0];
  vecnorm::VecNorm vn(o, table());
  const auto start = std::chrono::steady_clock::now();
  try {
    step(vn, Backend::cpu, batch_of(0, 1));
    FAIL() << "expected Error(collective_error)";
  } catch (const vecnorm::Error& e) {
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(e.code(), ErrorCode::collective_error);
    EXPECT_NE(std::string(e.what()).find("did not all arrive within"), std::string::npos) << e.what();
    EXPECT_GE(waited, 0.25);
    EXPECT_LT(waited, 30.0);
  }
  EXPECT_EQ(vn.count("obs"), 0) << "nothing was updated";
  // The group stays broken.
  try {
    step(vn, Backend::cpu, batch_of(0, 1));
    FAIL() << "expected Error(collective_error)";
  } catch (const vecnorm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("broken"), std::string::npos) << e.what();
  }
}

TEST(ThreadGroup, GathersInRankOrder) {
  const auto group = vecnorm::thread_group(3);
  std::vector<std::vector<int>> got(3);
  on_ranks(3, [&](int r) {
    for (int round = 0; round < 50; ++round) {
      const int mine[2] = {r, round};
      std::vector<int> all(6, -1);
      group[static_cast<std::size_t>(r)]->all_gather(mine, all.data(), sizeof mine, vecnorm::Device::cpu(), {});
      for (int q = 0; q < 3; ++q) {
        if (all[static_cast<std::size_t>(2 * q)] != q || all[static_cast<std::size_t>(2 * q + 1)] != round)
          throw std::runtime_error("rank " + std::to_string(r) + " round " + std::to_string(round) + ": slot " +
                                   std::to_string(q) + " holds " + std::to_string(all[static_cast<std::size_t>(2 * q)]));
      }
    }
  });
  EXPECT_EQ(group[1]->rank(), 1);
  EXPECT_EQ(group[1]->size(), 3);
}

TEST(ThreadGroup, SharedVecNormRefusesACollective) {
  vecnorm::Options o;
  o.reduce_batch_dims = true;
  o.collective = vecnorm::thread_group(1)[0];
  try {
    vecnorm::SharedVecNorm::create("/vecnorm-collective-test", o, table());
    FAIL() << "expected Error(invalid_option)";
  } catch (const vecnorm::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_option);
    EXPECT_NE(std::string(e.what()).find("option collective"), std::string::npos) << e.what();
  }
}

}  // namespace
