// tests/reference/reference_test.cpp -- the oracle checked against closed forms
// and brute-force weighted sums, so that the library tests rest on a verified
// reference. Needs nothing of the library.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "reference.hpp"

namespace {

using vnref::Config;
using vnref::Estimator;

// Brute-force weighted moments of a history of batches: batch k (m_k samples)
// has total weight (1 - d^m_k) / (1 - d), shared equally, decayed by d per later
// sample (d = 1: every sample weighs 1). Straight from the semantics' definition.
struct Weighted {
  long double mean = 0, var = 0, mean_sq = 0, total = 0;
};
Weighted brute_force(double d, const std::vector<std::vector<double>>& batches) {
  std::vector<long double> w;
  std::vector<long double> x;
  long double later = 0;  // samples after batch k
  for (std::size_t k = batches.size(); k-- > 0;) {
    const long double m = static_cast<long double>(batches[k].size());
    const long double batch_weight =
        d < 1.0 ? (1.0L - std::pow(static_cast<long double>(d), m)) / (1.0L - d) : m;
    const long double decay_after = d < 1.0 ? std::pow(static_cast<long double>(d), later) : 1.0L;
    for (double v : batches[k]) {
      w.push_back(batch_weight / m * decay_after);
      x.push_back(v);
    }
    later += m;
  }
  Weighted r;
  for (std::size_t i = 0; i < w.size(); ++i) {
    r.total += w[i];
    r.mean += w[i] * x[i];
    r.mean_sq += w[i] * x[i] * x[i];
  }
  r.mean /= r.total;
  r.mean_sq /= r.total;
  for (std::size_t i = 0; i < w.size(); ++i) r.var += w[i] * (x[i] - r.mean) * (x[i] - r.mean);
  r.var /= r.total;
  return r;
}

void expect_rel(double expected, double actual, double rel, const std::string& what) {
  EXPECT_LE(std::fabs(actual - expected), rel * std::fabs(expected) + 1e-300)
      << what << ": expected " << expected << ", actual " << actual;
}

class ReferenceSelfTest : public ::testing::TestWithParam<unsigned> {};

TEST_P(ReferenceSelfTest, CumulativeIsRunningMeanAndPopulationStd) {
  std::mt19937_64 rng(GetParam());
  std::normal_distribution<double> dist(3.0, 2.0);
  for (Estimator est : {Estimator::torchrl, Estimator::stable}) {
    Config c{est, 1.0, 1e-4};
    vnref::StatefulKey key(c, /*pooled=*/false, 1, 1);
    std::vector<double> seen;
    for (int t = 1; t <= 50; ++t) {
      const double x = dist(rng);
      seen.push_back(x);
      key.update({x}, 1);
      double mean, sd;
      vnref::mean_std(seen, mean, sd);
      expect_rel(mean, key.loc()[0], 1e-15, "loc at step " + std::to_string(t));
      expect_rel(std::max(sd, 1e-4), key.scale()[0], 1e-12, "scale at step " + std::to_string(t));
      EXPECT_EQ(key.count(), t);
    }
  }
}

TEST_P(ReferenceSelfTest, ConstantDataClosedForms) {
  std::mt19937_64 rng(GetParam());
  const double x = std::uniform_real_distribution<double>(-10, 10)(rng);
  for (double d : {0.9, 0.9999}) {
    vnref::StatefulKey tr({Estimator::torchrl, d, 1e-4}, false, 1, 1);
    vnref::StatefulKey st({Estimator::stable, d, 1e-4}, false, 1, 1);
    for (int t = 1; t <= 30; ++t) {
      tr.update({x}, 1);
      st.update({x}, 1);
      // torchrl's variance bias: v = E[x^2] - bc mu^2 = (1 - bc) x^2 = d^t x^2.
      const double torchrl_v = std::pow(d, t) * x * x;
      expect_rel(x, tr.loc()[0], 1e-14, "torchrl loc");
      expect_rel(std::sqrt(torchrl_v), tr.scale()[0], 1e-9, "torchrl scale (variance bias)");
      // stable is exact: mean x, variance 0 -> scale eps.
      expect_rel(x, st.loc()[0], 1e-15, "stable loc");
      EXPECT_EQ(st.scale()[0], 1e-4);
    }
  }
}

TEST_P(ReferenceSelfTest, MatchesBruteForceWeightedMoments) {
  std::mt19937_64 rng(GetParam());
  std::normal_distribution<double> dist(-1.5, 0.7);
  std::uniform_int_distribution<int> batch_size(1, 7);
  for (double d : {1.0, 0.9, 0.99}) {
    for (bool pooled : {false, true}) {
      vnref::StatefulKey tr({Estimator::torchrl, d, 1e-4}, pooled, 1, 1);
      vnref::StatefulKey st({Estimator::stable, d, 1e-4}, pooled, 1, 1);
      std::vector<std::vector<double>> history;
      for (int t = 1; t <= 40; ++t) {
        const int m = pooled ? batch_size(rng) : 1;
        std::vector<double> batch(m);
        for (double& v : batch) v = dist(rng);
        history.push_back(batch);
        tr.update(batch, m);
        st.update(batch, m);
        const Weighted bf = brute_force(d, history);
        const std::string where = "d=" + std::to_string(d) + (pooled ? " pooled" : " per-element") +
                                  " step " + std::to_string(t);
        expect_rel(static_cast<double>(bf.mean), st.loc()[0], 1e-13, "stable mu, " + where);
        expect_rel(std::max(std::sqrt(static_cast<double>(bf.var)), 1e-4), st.scale()[0], 1e-10,
                   "stable scale, " + where);
        expect_rel(static_cast<double>(bf.mean), tr.loc()[0], 1e-13, "torchrl mu, " + where);
        // torchrl's v = E_w[x^2] - bc mu^2 (bc = 1 - d^count), i.e. var + (1 - bc) mu^2.
        const double bc = d < 1.0 ? 1.0 - std::pow(d, static_cast<double>(tr.count())) : 1.0;
        const double torchrl_v = static_cast<double>(bf.mean_sq - bc * bf.mean * bf.mean);
        expect_rel(std::max(std::sqrt(torchrl_v), 1e-4), tr.scale()[0], 1e-9, "torchrl scale, " + where);
      }
    }
  }
}

TEST_P(ReferenceSelfTest, StatefulPerElementEqualsStateless) {
  std::mt19937_64 rng(GetParam());
  std::normal_distribution<double> dist(0.5, 3.0);
  for (Estimator est : {Estimator::torchrl, Estimator::stable}) {
    for (double d : {1.0, 0.9}) {
      Config c{est, d, 1e-4};
      vnref::StatefulKey stateful(c, false, 3, 4);
      vnref::StatelessStats stateless = vnref::StatelessStats::zeros(12);
      for (int t = 0; t < 10; ++t) {
        std::vector<double> x(12);
        for (double& v : x) v = dist(rng);
        stateful.update(x, 4);
        vnref::stateless_update(c, stateless, x);
        const auto a = stateful.normalize(x, 4);
        const auto b = vnref::stateless_normalize(c, stateless, x);
        for (int i = 0; i < 12; ++i) EXPECT_EQ(a[i], b[i]) << "element " << i;
      }
    }
  }
}

TEST(ReferenceSelfTestFixed, FirstSampleOfStableIsExact) {
  for (double d : {1.0, 0.9, 0.9999}) {
    vnref::StatefulKey st({Estimator::stable, d, 1e-4}, false, 1, 1);
    st.update({42.25}, 1);
    EXPECT_EQ(st.loc()[0], 42.25);
    EXPECT_EQ(st.scale()[0], 1e-4);
    vnref::StatefulKey pooled({Estimator::stable, d, 1e-4}, true, 1);
    pooled.update({1.0, 2.0, 6.0}, 3);  // mean 3, population variance 14/3
    EXPECT_DOUBLE_EQ(pooled.loc()[0], 3.0);
    EXPECT_DOUBLE_EQ(pooled.scale()[0], std::sqrt(14.0 / 3.0));
  }
}

TEST(ReferenceSelfTestFixed, CountZeroAndEmptyBatches) {
  vnref::StatefulKey pooled({Estimator::torchrl, 0.9, 1e-4}, true, 2);
  EXPECT_THROW(pooled.readouts(), std::domain_error);
  pooled.update({}, 0);
  EXPECT_EQ(pooled.count(), 0);
  pooled.update({1, 2, 3, 4}, 2);
  EXPECT_EQ(pooled.count(), 2);
  vnref::StatefulKey per_element({Estimator::torchrl, 0.9, 1e-4}, false, 2, 0);
  per_element.update({}, 0);
  EXPECT_EQ(per_element.count(), 1);
  EXPECT_TRUE(per_element.readouts().empty());
}

INSTANTIATE_TEST_SUITE_P(Seeds, ReferenceSelfTest, ::testing::Values(1u, 2u, 3u));

}  // namespace
