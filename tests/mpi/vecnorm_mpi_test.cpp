// tests/mpi/vecnorm_mpi_test.cpp -- VecNorm's distributed pooled statistics
// (Options::collective) over MPI, one normalizer per rank, CPU backend.
//
// Every rank generates every rank's batches (deterministic, seeded by step,
// rank and key), steps its own with a distributed normalizer and the
// concatenation of all of them (rank 0's rows, then rank 1's, ...) with a
// single-process one (no collective), and checks:
//   - the distributed statistics equal the single-process ones within a tight
//     relative tolerance (and, at decay 1, the naive double-precision mean and
//     population variance of every row seen), the outputs too;
//   - every rank holds the same bits;
//   - batch sizes that differ per rank, a rank with no rows, a step without
//     the reward on every rank;
//   - a rank's bad input: its own error, collective_error on every other
//     rank, no statistics changed anywhere;
//   - a checkpoint written by rank 0 and loaded by every rank continues with
//     the same bits, counting every row once;
//   - per-element statistics stay local.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <unistd.h>
#include <vector>

#include <vecnorm/mpi.hpp>
#include <vecnorm/vecnorm.hpp>

#include "mpi_test_util.hpp"

namespace vecnorm {
inline void PrintTo(Estimator e, std::ostream* os) { *os << to_string(e); }
inline void PrintTo(DType d, std::ostream* os) { *os << to_string(d); }
}  // namespace vecnorm

namespace {

using vecnorm::DType;
using vecnorm::ErrorCode;
using vecnorm::Estimator;
using vecnorm::KeyData;
using vecnorm::Shape;
using vecnorm::VecNorm;
using vnmpi::world_rank;
using vnmpi::world_size;

constexpr std::int64_t kFeatures = 6;
constexpr int kSteps = 20;
constexpr int kZeroRowsStep = 7;   // the last rank has no rows at this step
constexpr int kNoRewardStep = 12;  // no rank passes the reward at this step
// The adapters of these tests give up after a minute (a bug shows as an error,
// not as a hang until ctest's timeout).
constexpr double kTimeout = 60.0;

// ---------------------------------------------------------------- host tensors
struct Tensor {
  DType dtype = DType::float32;
  Shape shape;
  std::vector<unsigned char> bytes;  // at least 8 (a non-null pointer for empty tensors)

  Tensor() = default;
  Tensor(DType d, Shape s, const std::vector<double>& values) : dtype(d), shape(s) {
    const std::size_t n = static_cast<std::size_t>(s.numel());
    bytes.assign(std::max<std::size_t>(8, n * vecnorm::dtype_size(d)), 0);
    for (std::size_t i = 0; i < n && i < values.size(); ++i) {
      if (d == DType::float32) {
        const float v = static_cast<float>(values[i]);
        std::memcpy(bytes.data() + i * 4, &v, 4);
      } else {
        std::memcpy(bytes.data() + i * 8, &values[i], 8);
      }
    }
  }
  vecnorm::ConstTensorView cview() const { return {bytes.data(), dtype, shape}; }
  vecnorm::TensorView view() { return {bytes.data(), dtype, shape, vecnorm::Device::cpu()}; }
  std::vector<double> values() const {
    const std::size_t n = static_cast<std::size_t>(shape.numel());
    std::vector<double> out(n);
    for (std::size_t i = 0; i < n; ++i) {
      if (dtype == DType::float32) {
        float v;
        std::memcpy(&v, bytes.data() + i * 4, 4);
        out[i] = v;
      } else {
        std::memcpy(&out[i], bytes.data() + i * 8, 8);
      }
    }
    return out;
  }
};

std::vector<double> decode(DType stats, const std::vector<std::uint8_t>& b) {
  std::vector<double> out;
  if (stats == DType::float32) {
    for (std::size_t i = 0; i + 4 <= b.size(); i += 4) {
      float v;
      std::memcpy(&v, b.data() + i, 4);
      out.push_back(v);
    }
  } else {
    for (std::size_t i = 0; i + 8 <= b.size(); i += 8) {
      double v;
      std::memcpy(&v, b.data() + i, 8);
      out.push_back(v);
    }
  }
  return out;
}

// ---------------------------------------------------------------- the data
std::int64_t rows_of(int step, int rank, int ranks) {
  if (step == kZeroRowsStep && rank == ranks - 1) return 0;
  return 3 + 5 * rank;
}

// Values of one rank's key at one step, rounded to `dtype`.
std::vector<double> values_of(int step, int rank, int key, std::int64_t rows, DType dtype) {
  std::mt19937_64 rng(0x9E3779B97F4A7C15ull ^ (static_cast<std::uint64_t>(step) * 1000003u +
                                                static_cast<std::uint64_t>(rank) * 7919u + static_cast<std::uint64_t>(key)));
  const std::int64_t f = key == 0 ? kFeatures : 1;
  std::vector<double> v(static_cast<std::size_t>(rows * f));
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < f; ++j) {
      // Means 1..6 (rewards 2), stddevs 0.5..2: relative differences mean something.
      const double mean = key == 0 ? 1.0 + static_cast<double>(j) : 2.0;
      const double sd = key == 0 ? 0.5 + 0.3 * static_cast<double>(j) : 1.5;
      double x = std::normal_distribution<double>(mean, sd)(rng);
      if (dtype == DType::float32) x = static_cast<float>(x);
      v[static_cast<std::size_t>(i * f + j)] = x;
    }
  return v;
}

// The batch of the given ranks at one step, concatenated in rank order.
struct Batch {
  std::int64_t rows = 0;
  std::vector<double> obs, rew;
  bool has_reward = true;
};
Batch batch_of(int step, const std::vector<int>& ranks, int world, DType dtype) {
  Batch b;
  b.has_reward = step != kNoRewardStep;
  for (int r : ranks) {
    const std::int64_t n = rows_of(step, r, world);
    const auto o = values_of(step, r, 0, n, dtype);
    const auto w = values_of(step, r, 1, n, dtype);
    b.obs.insert(b.obs.end(), o.begin(), o.end());
    b.rew.insert(b.rew.end(), w.begin(), w.end());
    b.rows += n;
  }
  return b;
}
std::vector<int> all_ranks(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  for (int r = 0; r < n; ++r) v[static_cast<std::size_t>(r)] = r;
  return v;
}

vecnorm::KeyTable table_for(DType in) {
  return vecnorm::KeyTable{Shape{3}, {{"observation", Shape{kFeatures}, in}, {"reward", Shape{}, in}}};
}

struct Outputs {
  std::vector<double> obs, rew;
};

// One call (a step, or an update every fifth step) with `b`.
Outputs call(VecNorm& vn, const Batch& b, int step, DType dtype, std::int64_t obs_features = kFeatures) {
  Tensor x(dtype, Shape{b.rows, obs_features}, b.obs), y(dtype, Shape{b.rows, obs_features}, {});
  Tensor rx(dtype, Shape{b.rows}, b.rew), ry(dtype, Shape{b.rows}, {});
  std::vector<KeyData> keys{{"observation", x.cview(), y.view()}};
  if (b.has_reward) keys.push_back({"reward", rx.cview(), ry.view()});
  const bool update_only = step % 5 == 4;
  if (update_only)
    vn.update(keys);
  else
    vn.step(keys);
  if (update_only) return {};
  return {y.values(), b.has_reward ? ry.values() : std::vector<double>{}};
}

// Every byte of a normalizer's statistics (loc, var, count, skipped of every key).
std::vector<std::uint8_t> state_bytes(const VecNorm& vn) {
  const vecnorm::State s = vn.export_state();
  std::vector<std::uint8_t> out;
  for (const auto& k : s.keys) {
    out.insert(out.end(), k.loc.begin(), k.loc.end());
    out.insert(out.end(), k.var.begin(), k.var.end());
    const std::int64_t c[2] = {k.count, k.skipped};
    const auto* p = reinterpret_cast<const std::uint8_t*>(c);
    out.insert(out.end(), p, p + sizeof c);
  }
  return out;
}

// max over i of |a - b| / max(|a|, |b|) (0 where both are 0).
double max_rel(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  if (a.size() != b.size()) return INFINITY;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(a[i] - b[i]);
    const double s = std::max(std::fabs(a[i]), std::fabs(b[i]));
    if (d > 0) m = std::max(m, s > 0 ? d / s : INFINITY);
  }
  return m;
}
// max over i of |a - b| / (1 + |b|): outputs (values around 0).
double max_scaled(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  if (a.size() != b.size()) return INFINITY;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]) / (1.0 + std::fabs(b[i])));
  return m;
}

double unit_roundoff(DType stats) { return stats == DType::float32 ? 0x1p-24 : 0x1p-53; }
// The rounding model of tests/support/check.hpp: 16 u per step, plus 4.
double rtol_for(DType stats, int steps) { return unit_roundoff(stats) * 16.0 * (steps + 4); }

// Naive double statistics of every row seen: sums per feature.
struct Naive {
  std::vector<double> sum, sum_abs, sum_sq;
  std::int64_t n = 0;
  explicit Naive(std::int64_t f) : sum(static_cast<std::size_t>(f)), sum_abs(sum), sum_sq(sum) {}
  void add(const std::vector<double>& v, std::int64_t rows) {
    const std::size_t f = sum.size();
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::size_t j = 0; j < f; ++j) {
        const double x = v[static_cast<std::size_t>(i) * f + j];
        sum[j] += x;
        sum_abs[j] += std::fabs(x);
        sum_sq[j] += x * x;
      }
    n += rows;
  }
};

struct Worst {  // the largest differences seen, printed by rank 0
  double state = 0, readout = 0, outputs = 0, naive_mu = 0, naive_scale = 0;
};

void report(const std::string& what, const Worst& w, bool naive) {
  const Worst g{vnmpi::max_all(w.state), vnmpi::max_all(w.readout), vnmpi::max_all(w.outputs),
                vnmpi::max_all(w.naive_mu), vnmpi::max_all(w.naive_scale)};
  if (world_rank() != 0) return;
  std::printf("[ max diff ] %s, %d ranks: vs one process: stored loc/var rel %.3g, loc/scale rel %.3g, outputs %.3g",
              what.c_str(), world_size(), g.state, g.readout, g.outputs);
  if (naive) std::printf("; vs naive double: mean rel %.3g, scale rel %.3g", g.naive_mu, g.naive_scale);
  std::printf("\n");
  std::fflush(stdout);
  ::testing::Test::RecordProperty("max_rel_state", std::to_string(g.state));
  ::testing::Test::RecordProperty("max_rel_readout", std::to_string(g.readout));
  ::testing::Test::RecordProperty("max_outputs", std::to_string(g.outputs));
  if (naive) {
    ::testing::Test::RecordProperty("max_rel_naive_mean", std::to_string(g.naive_mu));
    ::testing::Test::RecordProperty("max_rel_naive_scale", std::to_string(g.naive_scale));
  }
}

// Every rank's bytes equal rank 0's.
void expect_same_on_every_rank(const std::vector<std::uint8_t>& mine, const std::string& what) {
  // Sizes first (a different size would make the gather invalid).
  const double size = static_cast<double>(mine.size());
  const double max_size = vnmpi::max_all(size);
  const double min_size = -vnmpi::max_all(-size);
  EXPECT_EQ(max_size, min_size) << what << ": the ranks' statistics differ in size";
  if (max_size != min_size) return;
  const auto all = vnmpi::gather_all(mine);
  for (std::size_t r = 1; r < all.size(); ++r)
    EXPECT_TRUE(all[r] == all[0]) << what << ": rank " << r << "'s statistics differ from rank 0's (bits)";
}

vecnorm::Options base_options(Estimator est, DType stats, double decay) {
  vecnorm::Options o;
  o.backend = vecnorm::Backend::cpu;
  o.cpu_threads = 1;  // ranks share the cores
  o.reduce_batch_dims = true;
  o.estimator = est;
  o.stats_dtype = stats;
  o.decay = decay;
  return o;
}

using Param = std::tuple<Estimator, DType /*stats and inputs*/, double /*decay*/>;
class DistributedPooled : public ::testing::TestWithParam<Param> {};

// (a) (b) (c) (d): 20 steps against one process stepping the concatenation.
TEST_P(DistributedPooled, MatchesOneProcessOverTheConcatenatedBatches) {
  const auto [est, dtype, decay] = GetParam();
  const int n = world_size();
  const int me = world_rank();
  vecnorm::Options o = base_options(est, dtype, decay);
  vecnorm::Options single = o;
  o.collective = vecnorm::mpi_collective(MPI_COMM_WORLD, kTimeout);
  VecNorm dist(o, table_for(dtype));
  VecNorm one(single, table_for(dtype));

  const double rtol = rtol_for(dtype, kSteps);
  Worst w;
  Naive naive_obs(kFeatures), naive_rew(1);
  std::int64_t total_rows = 0, reward_rows = 0;
  std::int64_t my_offset = 0;  // this rank's first row in the concatenation
  for (int step = 0; step < kSteps; ++step) {
    const Batch mine = batch_of(step, {me}, n, dtype);
    const Batch all = batch_of(step, all_ranks(n), n, dtype);
    my_offset = 0;
    for (int r = 0; r < me; ++r) my_offset += rows_of(step, r, n);
    Outputs yd, y1;
    try {
      yd = call(dist, mine, step, dtype);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "step " << step << ": the distributed step threw: " << e.what();
    }
    y1 = call(one, all, step, dtype);
    total_rows += all.rows;
    if (all.has_reward) reward_rows += all.rows;
    naive_obs.add(all.obs, all.rows);
    if (all.has_reward) naive_rew.add(all.rew, all.rows);
    // This rank's rows of the one-process output.
    if (!y1.obs.empty()) {
      const std::vector<double> o1(y1.obs.begin() + my_offset * kFeatures,
                                   y1.obs.begin() + (my_offset + mine.rows) * kFeatures);
      w.outputs = std::max(w.outputs, max_scaled(yd.obs, o1));
      if (all.has_reward) {
        const std::vector<double> r1(y1.rew.begin() + my_offset, y1.rew.begin() + my_offset + mine.rows);
        w.outputs = std::max(w.outputs, max_scaled(yd.rew, r1));
      }
    }
  }

  EXPECT_EQ(dist.count("observation"), total_rows);
  EXPECT_EQ(dist.count("reward"), reward_rows) << "the step without the reward must not count it";
  EXPECT_EQ(one.count("observation"), total_rows);

  const vecnorm::State sd = dist.export_state(), s1 = one.export_state();
  for (std::size_t k = 0; k < sd.keys.size(); ++k) {
    w.state = std::max(w.state, max_rel(decode(dtype, sd.keys[k].loc), decode(dtype, s1.keys[k].loc)));
    w.state = std::max(w.state, max_rel(decode(dtype, sd.keys[k].var), decode(dtype, s1.keys[k].var)));
    EXPECT_EQ(sd.keys[k].count, s1.keys[k].count);
  }
  for (const char* key : {"observation", "reward"}) {
    w.readout = std::max(w.readout, max_rel(dist.loc(key), one.loc(key)));
    w.readout = std::max(w.readout, max_rel(dist.scale(key), one.scale(key)));
  }
  // Tolerances: torchrl's scale comes from var - loc^2 (E[x^2] up to ~40 for
  // variances of ~0.25): allow that cancellation's factor on read-outs.
  EXPECT_LE(w.state, 4 * rtol) << "stored statistics: distributed vs one process";
  EXPECT_LE(w.readout, 200 * rtol) << "read-outs: distributed vs one process";
  EXPECT_LE(w.outputs, 200 * rtol) << "outputs: distributed vs one process";

  if (decay == 1.0) {
    // The naive double mean and population variance of every row seen, with
    // the error model of tests/support/check.hpp.
    for (int key = 0; key < 2; ++key) {
      const Naive& nv = key == 0 ? naive_obs : naive_rew;
      const auto loc = dist.loc(key == 0 ? "observation" : "reward");
      const auto scale = dist.scale(key == 0 ? "observation" : "reward");
      for (std::size_t j = 0; j < nv.sum.size(); ++j) {
        const double cnt = static_cast<double>(nv.n);
        const double mu = nv.sum[j] / cnt;
        const double ex2 = nv.sum_sq[j] / cnt;
        const double v = std::max(ex2 - mu * mu, 0.0);
        const double sc = std::max(std::sqrt(v), o.eps);
        const double mu_tol = rtol * (nv.sum_abs[j] / cnt + std::fabs(mu));
        const double v_tol = rtol * (ex2 + mu * mu);
        const double sc_tol = v_tol / (2 * sc) + 1e-300;
        EXPECT_NEAR(loc[j], mu, mu_tol) << "key " << key << " feature " << j;
        EXPECT_NEAR(scale[j], sc, sc_tol) << "key " << key << " feature " << j;
        w.naive_mu = std::max(w.naive_mu, std::fabs(loc[j] - mu) / std::fabs(mu));
        w.naive_scale = std::max(w.naive_scale, std::fabs(scale[j] - sc) / sc);
      }
    }
  }

  // (b) the same bits on every rank.
  expect_same_on_every_rank(state_bytes(dist), "after 20 steps");
  report(std::string(vecnorm::to_string(est)) + " " + vecnorm::to_string(dtype) + (decay == 1.0 ? " decay 1" : " decay 0.99"),
         w, decay == 1.0);
}

INSTANTIATE_TEST_SUITE_P(Mpi, DistributedPooled,
                         ::testing::Combine(::testing::Values(Estimator::torchrl, Estimator::stable),
                                            ::testing::Values(DType::float32, DType::float64),
                                            ::testing::Values(1.0, 0.99)),
                         [](const ::testing::TestParamInfo<Param>& i) {
                           return std::string(vecnorm::to_string(std::get<0>(i.param))) + "_" +
                                  vecnorm::to_string(std::get<1>(i.param)) + "_decay" +
                                  (std::get<2>(i.param) == 1.0 ? "1" : "099");
                         });

// (e) a rank's bad input: its own error there, collective_error on every other
// rank, nothing changed anywhere; the group goes on afterwards.
TEST(DistributedErrors, OneRanksBadInputFailsEveryRankAndChangesNothing) {
  const int n = world_size();
  const int me = world_rank();
  const DType dt = DType::float32;
  vecnorm::Options o = base_options(Estimator::torchrl, dt, 0.99);
  vecnorm::Options single = o;
  o.collective = vecnorm::mpi_collective(MPI_COMM_WORLD, kTimeout);
  VecNorm dist(o, table_for(dt));
  VecNorm one(single, table_for(dt));
  auto good_step = [&](int step) {
    EXPECT_NO_THROW(call(dist, batch_of(step, {me}, n, dt), step, dt)) << "step " << step;
    call(one, batch_of(step, all_ranks(n), n, dt), step, dt);
  };
  for (int step = 0; step < 3; ++step) good_step(step);
  const auto before = state_bytes(dist);

  // A wrong feature shape on the last rank.
  const int bad = n - 1;
  {
    const Batch b = batch_of(3, {me}, n, dt);
    try {
      if (me == bad) {
        Batch wrong = b;
        wrong.obs.resize(static_cast<std::size_t>(b.rows * 5));
        call(dist, wrong, 3, dt, 5);
      } else {
        call(dist, b, 3, dt);
      }
      ADD_FAILURE() << "rank " << me << ": the step with rank " << bad << "'s bad input did not throw";
    } catch (const vecnorm::Error& e) {
      if (me == bad) {
        EXPECT_EQ(e.code(), ErrorCode::shape_mismatch) << e.what();
      } else {
        EXPECT_EQ(e.code(), ErrorCode::collective_error) << e.what();
        EXPECT_NE(std::string(e.what()).find("rank " + std::to_string(bad)), std::string::npos)
            << "the message names the failing rank: " << e.what();
      }
    }
    EXPECT_TRUE(state_bytes(dist) == before) << "rank " << me << ": statistics changed by a failed step";
  }

  // A key the table does not have, on rank 0.
  {
    const Batch b = batch_of(3, {me}, n, dt);
    Tensor x(dt, Shape{b.rows, kFeatures}, b.obs), y(dt, Shape{b.rows, kFeatures}, {});
    try {
      dist.step({{me == 0 ? "bogus" : "observation", x.cview(), y.view()}});
      ADD_FAILURE() << "rank " << me << ": the step with rank 0's unknown key did not throw";
    } catch (const vecnorm::Error& e) {
      EXPECT_EQ(e.code(), me == 0 ? ErrorCode::unknown_key : ErrorCode::collective_error) << e.what();
    }
    EXPECT_TRUE(state_bytes(dist) == before) << "rank " << me << ": statistics changed by a failed step";
  }

  // The reward on rank 0 only: every rank refuses (a key on every rank or on none).
  if (n >= 2) {
    const Batch b = batch_of(3, {me}, n, dt);
    Tensor x(dt, Shape{b.rows, kFeatures}, b.obs), y(dt, Shape{b.rows, kFeatures}, {});
    Tensor rx(dt, Shape{b.rows}, b.rew), ry(dt, Shape{b.rows}, {});
    std::vector<KeyData> keys{{"observation", x.cview(), y.view()}};
    if (me == 0) keys.push_back({"reward", rx.cview(), ry.view()});
    try {
      dist.step(keys);
      ADD_FAILURE() << "rank " << me << ": a key on some ranks only was accepted";
    } catch (const vecnorm::Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::collective_error) << e.what();
    }
    EXPECT_TRUE(state_bytes(dist) == before) << "rank " << me << ": statistics changed by a failed step";
  }
  expect_same_on_every_rank(state_bytes(dist), "after the failed steps");

  // The group still works: the good steps go on as if the failed ones never were.
  for (int step = 3; step < 8; ++step) good_step(step);
  const double rtol = rtol_for(dt, 8);
  const vecnorm::State sd = dist.export_state(), s1 = one.export_state();
  for (std::size_t k = 0; k < sd.keys.size(); ++k) {
    EXPECT_EQ(sd.keys[k].count, s1.keys[k].count);
    EXPECT_LE(max_rel(decode(dt, sd.keys[k].loc), decode(dt, s1.keys[k].loc)), 4 * rtol);
    EXPECT_LE(max_rel(decode(dt, sd.keys[k].var), decode(dt, s1.keys[k].var)), 4 * rtol);
  }
  expect_same_on_every_rank(state_bytes(dist), "after the good steps");
}

// Normalizers that disagree (here: the decay of rank 1) refuse to pool.
TEST(DistributedErrors, DifferentOptionsOnOneRankFailEveryRank) {
  const int n = world_size();
  const int me = world_rank();
  if (n < 2) GTEST_SKIP() << "needs at least 2 ranks";
  const DType dt = DType::float32;
  vecnorm::Options o = base_options(Estimator::torchrl, dt, me == 1 ? 0.9 : 0.99);
  o.collective = vecnorm::mpi_collective(MPI_COMM_WORLD, kTimeout);
  VecNorm dist(o, table_for(dt));
  const auto before = state_bytes(dist);
  try {
    call(dist, batch_of(0, {me}, n, dt), 0, dt);
    ADD_FAILURE() << "rank " << me << ": normalizers with different decays pooled";
  } catch (const vecnorm::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::collective_error) << e.what();
  }
  EXPECT_TRUE(state_bytes(dist) == before);
}

// (f) a checkpoint of rank 0 loaded by every rank: the same bits as the
// normalizer that went on, and every row counted once.
class DistributedCheckpoint : public ::testing::TestWithParam<Estimator> {};

TEST_P(DistributedCheckpoint, RankZerosCheckpointContinuesOnEveryRank) {
  const int n = world_size();
  const int me = world_rank();
  const DType dt = DType::float32;
  vecnorm::Options o = base_options(GetParam(), dt, 0.99);
  o.collective = vecnorm::mpi_collective(MPI_COMM_WORLD, kTimeout);
  VecNorm dist(o, table_for(dt));
  std::int64_t total_rows = 0;
  for (int step = 0; step < 10; ++step) {
    EXPECT_NO_THROW(call(dist, batch_of(step, {me}, n, dt), step, dt));
    total_rows += batch_of(step, all_ranks(n), n, dt).rows;
  }
  EXPECT_EQ(dist.count("observation"), total_rows);

  int pid = static_cast<int>(::getpid());
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
  const std::string path = ::testing::TempDir() + "vecnorm_mpi_ckpt_" + std::to_string(pid) + "_" +
                           vecnorm::to_string(GetParam()) + ".bin";
  if (me == 0) {
    EXPECT_NO_THROW(vecnorm::save_state(dist, path));
  }
  vnmpi::barrier();

  // A configured normalizer that loads it, and an unconfigured one that adopts
  // it (the collective of its own options must survive the adoption).
  vecnorm::Options o2 = o;
  o2.collective = vecnorm::mpi_collective(MPI_COMM_WORLD, kTimeout);
  VecNorm loaded(o2, table_for(dt));
  vecnorm::Options o3 = o;
  o3.collective = vecnorm::mpi_collective(MPI_COMM_WORLD, kTimeout);
  VecNorm adopted(o3);
  EXPECT_NO_THROW(vecnorm::load_state(loaded, path));
  EXPECT_NO_THROW(vecnorm::load_state(adopted, path));
  EXPECT_TRUE(state_bytes(loaded) == state_bytes(dist)) << "rank " << me;
  EXPECT_TRUE(state_bytes(adopted) == state_bytes(dist)) << "rank " << me;
  EXPECT_TRUE(adopted.options().collective != nullptr) << "the adopting normalizer lost its collective";

  for (int step = 10; step < 20; ++step) {
    const Batch b = batch_of(step, {me}, n, dt);
    Outputs a, l, d;
    EXPECT_NO_THROW(a = call(dist, b, step, dt));
    EXPECT_NO_THROW(l = call(loaded, b, step, dt));
    EXPECT_NO_THROW(d = call(adopted, b, step, dt));
    EXPECT_TRUE(a.obs == l.obs && a.rew == l.rew) << "step " << step << ": outputs of the loaded normalizer";
    EXPECT_TRUE(a.obs == d.obs && a.rew == d.rew) << "step " << step << ": outputs of the adopting normalizer";
    total_rows += batch_of(step, all_ranks(n), n, dt).rows;
  }
  EXPECT_TRUE(state_bytes(loaded) == state_bytes(dist)) << "rank " << me << ": loaded vs continuing (bits)";
  EXPECT_TRUE(state_bytes(adopted) == state_bytes(dist)) << "rank " << me << ": adopted vs continuing (bits)";
  EXPECT_EQ(loaded.count("observation"), total_rows) << "every row counted once";
  EXPECT_EQ(adopted.count("observation"), total_rows) << "every row counted once";
  expect_same_on_every_rank(state_bytes(loaded), "the loaded normalizers");
  vnmpi::barrier();
  if (me == 0) std::remove(path.c_str());
}

INSTANTIATE_TEST_SUITE_P(Mpi, DistributedCheckpoint, ::testing::Values(Estimator::torchrl, Estimator::stable),
                         [](const ::testing::TestParamInfo<Estimator>& i) {
                           return std::string(vecnorm::to_string(i.param));
                         });

// Per-element statistics are never pooled: each rank's equal its own
// single-process run, bit for bit, and no rank waits for another (the last
// step is rank 0's alone, with a collective that would time out in 5 s).
TEST(DistributedPerElement, StatisticsStayLocal) {
  const int me = world_rank();
  const DType dt = DType::float32;
  vecnorm::Options o = base_options(Estimator::torchrl, dt, 0.99);
  o.reduce_batch_dims = false;
  vecnorm::Options local = o;
  o.collective = vecnorm::mpi_collective(MPI_COMM_WORLD, 5.0);
  const vecnorm::KeyTable table{Shape{4}, {{"observation", Shape{kFeatures}, dt}, {"reward", Shape{}, dt}}};
  VecNorm dist(o, table);
  VecNorm alone(local, table);
  const int steps = 6 + (me == 0 ? 1 : 0);
  for (int step = 0; step < steps; ++step) {
    Batch b;
    b.rows = 4;
    b.obs = values_of(step, me, 0, 4, dt);
    b.rew = values_of(step, me, 1, 4, dt);
    Outputs a, l;
    EXPECT_NO_THROW(a = call(dist, b, step, dt)) << "rank " << me << " step " << step;
    l = call(alone, b, step, dt);
    EXPECT_TRUE(a.obs == l.obs && a.rew == l.rew) << "rank " << me << " step " << step;
  }
  EXPECT_TRUE(state_bytes(dist) == state_bytes(alone)) << "rank " << me;
  EXPECT_EQ(dist.count("observation"), steps);
  vnmpi::barrier();
}

// A broken adapter makes the steps of its normalizer throw collective_error.
TEST(DistributedErrors, StepsOnABrokenAdapterThrow) {
  const int n = world_size();
  const int me = world_rank();
  if (n < 2) GTEST_SKIP() << "needs at least 2 ranks";
  const DType dt = DType::float32;
  auto adapter = std::make_shared<vecnorm::MpiCollective>(MPI_COMM_WORLD, me == 0 ? 0.5 : kTimeout);
  vecnorm::Options o = base_options(Estimator::torchrl, dt, 0.99);
  o.collective = adapter;
  VecNorm dist(o, table_for(dt));
  // Rank 0 steps alone: it times out, and its normalizer is unchanged.
  if (me == 0) {
    const auto before = state_bytes(dist);
    try {
      call(dist, batch_of(0, {me}, n, dt), 0, dt);
      ADD_FAILURE() << "a step with no other rank completed";
    } catch (const vecnorm::Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::collective_error) << e.what();
    }
    EXPECT_TRUE(state_bytes(dist) == before);
    EXPECT_TRUE(adapter->broken());
    try {
      call(dist, batch_of(1, {me}, n, dt), 1, dt);
      ADD_FAILURE() << "a step on a broken adapter completed";
    } catch (const vecnorm::Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::collective_error) << e.what();
    }
  }
  vnmpi::barrier();
  // The others join the first gather now, so that rank 0's request
  // completes: their steps pool rank 0's message while rank 0 changed nothing
  // -- the disagreement a timeout leaves, why the adapter stays broken.
  if (me != 0) {
    try {
      call(dist, batch_of(0, {me}, n, dt), 0, dt);
    } catch (const vecnorm::Error&) {
    }
  } else {
    EXPECT_TRUE(adapter->drain(kTimeout));
  }
  vnmpi::barrier();
}

}  // namespace
