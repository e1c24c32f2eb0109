// tests/core/nonfinite_test.cpp -- NonFinite = propagate | skip | error.
//
// skip: non-finite input is left out of the statistics as if it never arrived.
// The expected statistics come from the reference (tests/reference) fed only
// the finite values: per element, each element's own cell and count (its
// count moves only with a finite value); pooled, the batch without the rows
// that hold a non-finite value. Every backend (CPU, and the CUDA kernels under
// the emulator) is checked against that, plus the health counter, the element
// counts, the outputs, state round trips and the error mode's message.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "support/device_buffer.hpp"
#include "support/harness.hpp"

namespace {

using vecnorm::Backend;
using vecnorm::DType;
using vecnorm::Estimator;
using vecnorm::NonFinite;
using vecnorm::Shape;
using vntest::DeviceBuffer;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

/// |got - want| <= rtol * max(1, |want|) for every value; NaN only where want is NaN.
::testing::AssertionResult Close(const std::string& what, const std::vector<double>& want,
                                 const std::vector<double>& got, double rtol) {
  if (want.size() != got.size())
    return ::testing::AssertionFailure() << what << ": size " << got.size() << ", expected " << want.size();
  for (std::size_t i = 0; i < want.size(); ++i) {
    const bool wn = std::isnan(want[i]), gn = std::isnan(got[i]);
    if (wn || gn) {
      if (wn != gn) return ::testing::AssertionFailure() << what << "[" << i << "] = " << got[i] << ", expected " << want[i];
      continue;
    }
    if (std::isinf(want[i]) || std::isinf(got[i])) {
      if (want[i] != got[i])
        return ::testing::AssertionFailure() << what << "[" << i << "] = " << got[i] << ", expected " << want[i];
      continue;
    }
    if (std::abs(got[i] - want[i]) > rtol * std::max(1.0, std::abs(want[i])))
      return ::testing::AssertionFailure() << what << "[" << i << "] = " << got[i] << ", expected " << want[i]
                                           << " (rtol " << rtol << ")";
  }
  return ::testing::AssertionSuccess();
}

using Param = std::tuple<Backend, Estimator, DType>;
class NonFiniteTest : public ::testing::TestWithParam<Param> {
 protected:
  Backend backend() const { return std::get<0>(GetParam()); }
  Estimator estimator() const { return std::get<1>(GetParam()); }
  DType stats() const { return std::get<2>(GetParam()); }
  double rtol() const { return stats() == DType::float64 ? 1e-9 : 2e-4; }
  /// Outputs are float32 (the input dtype) whatever the statistics dtype.
  double ytol() const { return std::max(50 * rtol(), 1e-6); }
  vecnorm::Options options(bool pooled, NonFinite nf, double decay) const {
    vecnorm::Options o = vntest::options_for(backend());
    o.estimator = estimator();
    o.stats_dtype = stats();
    o.reduce_batch_dims = pooled;
    o.nonfinite = nf;
    o.decay = decay;
    return o;
  }
  vnref::Config config(double decay, double eps) const {
    return {estimator() == Estimator::stable ? vnref::Estimator::stable : vnref::Estimator::torchrl, decay, eps};
  }
};

/// Random data with non-finite values planted at fixed places: step s plants
/// NaN / +inf / -inf in a few elements (and none on some steps).
std::vector<double> step_data(std::mt19937_64& rng, int step, std::int64_t n, std::vector<std::int64_t>* planted) {
  std::normal_distribution<double> d(1.5, 2.0);
  std::vector<double> x(static_cast<std::size_t>(n));
  for (double& v : x) v = static_cast<double>(static_cast<float>(d(rng)));
  if (step % 3 != 2) {
    const double bad[] = {kNaN, kInf, -kInf};
    for (int j = 0; j < 3; ++j) {
      const std::int64_t i = (step * 7 + j * 13) % n;
      x[static_cast<std::size_t>(i)] = bad[(step + j) % 3];
      if (planted) planted->push_back(i);
    }
  }
  return x;
}

TEST_P(NonFiniteTest, PerElementSkipLeavesElementsOutAsIfNeverArrived) {
  const Shape batch{4}, feat{5};
  const std::int64_t n = 20;
  for (double decay : {1.0, 0.9}) {
    vecnorm::VecNorm vn(options(false, NonFinite::skip, decay), {batch, {{"obs", feat, DType::float32}}});
    const vnref::Config cfg = config(decay, vn.options().eps);
    std::vector<vnref::Cell> cells(static_cast<std::size_t>(n));
    std::vector<std::int64_t> counts(static_cast<std::size_t>(n), 0);
    std::int64_t skipped = 0;
    std::mt19937_64 rng(7);
    for (int step = 0; step < 8; ++step) {
      const std::string where = "decay " + std::to_string(decay) + " step " + std::to_string(step);
      std::vector<std::int64_t> planted;
      const auto x = step_data(rng, step, n, &planted);
      auto xb = DeviceBuffer::from_values(backend(), DType::float32, batch.concat(feat), x);
      DeviceBuffer yb(backend(), DType::float32, batch.concat(feat));
      vn.step({{"obs", xb.cview(), yb.view()}});
      std::vector<double> want_y(static_cast<std::size_t>(n));
      for (std::int64_t i = 0; i < n; ++i) {
        const std::size_t u = static_cast<std::size_t>(i);
        if (std::isfinite(x[u])) {
          vnref::update_one(cfg, cells[u], counts[u], x[u]);
          ++counts[u];
          want_y[u] = vnref::normalize(vnref::read(cfg, cells[u], counts[u]), x[u]);
        } else {
          ++skipped;
          // Non-finite in, non-finite out: NaN stays NaN, an infinity keeps its
          // sign (the element has statistics: planted elements differ per step).
          want_y[u] = std::isnan(x[u]) ? kNaN : x[u];
        }
      }
      const auto y = yb.values();
      for (std::int64_t i = 0; i < n; ++i) {
        const std::size_t u = static_cast<std::size_t>(i);
        if (!std::isfinite(x[u]) && counts[u] == 0) want_y[u] = y[u];  // no statistics yet: any non-finite
        if (!std::isfinite(x[u])) {
          ASSERT_FALSE(std::isfinite(y[u])) << where << " element " << i;
        }
      }
      ASSERT_TRUE(Close(where + ": y", want_y, y, ytol()));
      ASSERT_EQ(vn.skipped("obs"), skipped) << where;
      ASSERT_EQ(vn.count("obs"), step + 1) << where;
      ASSERT_EQ(vn.element_counts("obs"), counts) << where;
      std::vector<double> want_loc(static_cast<std::size_t>(n)), want_scale(want_loc.size());
      bool all_seen = true;
      for (std::size_t u = 0; u < cells.size(); ++u) {
        if (counts[u] == 0) {
          all_seen = false;
          continue;
        }
        const auto r = vnref::read(cfg, cells[u], counts[u]);
        want_loc[u] = r.mu;
        want_scale[u] = r.scale;
      }
      if (all_seen) {
        ASSERT_TRUE(Close(where + ": loc", want_loc, vn.loc("obs"), 10 * rtol()));
        ASSERT_TRUE(Close(where + ": scale", want_scale, vn.scale("obs"), 10 * rtol()));
      }
    }
    ASSERT_GT(vn.skipped("obs"), 0);

    // Frozen normalize and denormalize use each element's own count.
    std::vector<double> xs(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) xs[static_cast<std::size_t>(i)] = 0.25 * static_cast<double>(i) - 2.0;
    auto xb = DeviceBuffer::from_values(backend(), DType::float32, batch.concat(feat), xs);
    DeviceBuffer yb(backend(), DType::float32, batch.concat(feat));
    DeviceBuffer zb(backend(), DType::float32, batch.concat(feat));
    vn.normalize({{"obs", xb.cview(), yb.view()}});
    vn.denormalize({{"obs", yb.cview(), zb.view()}});
    std::vector<double> want_y(xs.size());
    for (std::size_t u = 0; u < xs.size(); ++u)
      want_y[u] = vnref::normalize(vnref::read(cfg, cells[u], counts[u]), xs[u]);
    ASSERT_TRUE(Close("normalize", want_y, yb.values(), ytol()));
    ASSERT_TRUE(Close("denormalize(normalize(x))", xs, zb.values(), ytol()));

    // The state carries the skips: a normalizer rebuilt from it continues
    // exactly as the original (bit-equal statistics after more steps).
    const vecnorm::State st = vn.export_state();
    ASSERT_EQ(st.keys[0].skipped, skipped);
    ASSERT_EQ(st.keys[0].skips.size(), static_cast<std::size_t>(n));
    std::int64_t sum = 0;
    for (std::size_t u = 0; u < st.keys[0].skips.size(); ++u) {
      ASSERT_EQ(st.keys[0].skips[u], vn.count("obs") - counts[u]);
      sum += st.keys[0].skips[u];
    }
    ASSERT_EQ(sum, skipped);
    vecnorm::VecNorm back(options(false, NonFinite::skip, decay));
    back.import_state(st);
    vecnorm::VecNorm twin = vn.clone();
    for (int step = 8; step < 11; ++step) {
      const auto x = step_data(rng, step, n, nullptr);
      auto xb2 = DeviceBuffer::from_values(backend(), DType::float32, batch.concat(feat), x);
      DeviceBuffer y1(backend(), DType::float32, batch.concat(feat)), y2(backend(), DType::float32, batch.concat(feat)),
          y3(backend(), DType::float32, batch.concat(feat));
      vn.step({{"obs", xb2.cview(), y1.view()}});
      back.step({{"obs", xb2.cview(), y2.view()}});
      twin.step({{"obs", xb2.cview(), y3.view()}});
      ASSERT_EQ(y1.bytes(), y2.bytes()) << "imported state, step " << step;
      ASSERT_EQ(y1.bytes(), y3.bytes()) << "clone, step " << step;
    }
    const vecnorm::State a = vn.export_state(), b = back.export_state(), c = twin.export_state();
    ASSERT_EQ(a.keys[0].loc, b.keys[0].loc);
    ASSERT_EQ(a.keys[0].var, b.keys[0].var);
    ASSERT_EQ(a.keys[0].skips, b.keys[0].skips);
    ASSERT_EQ(a.keys[0].skips, c.keys[0].skips);
    ASSERT_EQ(a.keys[0].skipped, c.keys[0].skipped);
  }
}

TEST_P(NonFiniteTest, PooledSkipLeavesRowsOutAsIfNeverArrived) {
  const Shape feat{3};
  const std::int64_t F = 3;
  for (double decay : {1.0, 0.9}) {
    vecnorm::VecNorm vn(options(true, NonFinite::skip, decay), {Shape{}, {{"obs", feat, DType::float32}}});
    const vnref::Config cfg = config(decay, vn.options().eps);
    std::vector<vnref::Cell> cells(static_cast<std::size_t>(F));
    std::int64_t count = 0, skipped = 0;
    std::mt19937_64 rng(11);
    // Step 0 plants a NaN in row 0 (the first sample is no shift then); step 3
    // is all rows bad (nothing changes); a large batch (several CUDA blocks,
    // several CPU threads' worth) plants one bad value deep inside.
    const std::int64_t rows_of[] = {6, 5, 9, 4, 3000, 7};
    for (int step = 0; step < 6; ++step) {
      const std::int64_t m = rows_of[step];
      const std::string where = "decay " + std::to_string(decay) + " step " + std::to_string(step);
      std::normal_distribution<double> d(-3.0, 0.5);
      std::vector<double> x(static_cast<std::size_t>(m * F));
      for (double& v : x) v = static_cast<double>(static_cast<float>(d(rng)));
      std::vector<bool> bad(static_cast<std::size_t>(m), false);
      auto plant = [&](std::int64_t r, std::int64_t f, double v) {
        x[static_cast<std::size_t>(r * F + f)] = v;
        bad[static_cast<std::size_t>(r)] = true;
      };
      if (step == 0) plant(0, 1, kNaN);
      if (step == 1) {
        plant(2, 0, kInf);
        plant(4, 2, -kInf);
      }
      if (step == 3)
        for (std::int64_t r = 0; r < m; ++r) plant(r, r % F, kNaN);
      if (step == 4) plant(2345, 2, kNaN);
      auto xb = DeviceBuffer::from_values(backend(), DType::float32, Shape{m}.concat(feat), x);
      DeviceBuffer yb(backend(), DType::float32, Shape{m}.concat(feat));
      const auto loc_before = count > 0 ? vn.loc("obs") : std::vector<double>{};
      vn.step({{"obs", xb.cview(), yb.view()}});
      std::int64_t ok = 0;
      for (std::int64_t f = 0; f < F; ++f) {
        std::vector<double> xs;
        for (std::int64_t r = 0; r < m; ++r)
          if (!bad[static_cast<std::size_t>(r)]) xs.push_back(x[static_cast<std::size_t>(r * F + f)]);
        ok = static_cast<std::int64_t>(xs.size());
        if (!xs.empty()) vnref::update_batch(cfg, cells[static_cast<std::size_t>(f)], count, xs);
      }
      count += ok;
      skipped += m - ok;
      ASSERT_EQ(vn.count("obs"), count) << where;
      ASSERT_EQ(vn.skipped("obs"), skipped) << where;
      ASSERT_EQ(vn.element_counts("obs"), std::vector<std::int64_t>{count}) << where;
      std::vector<double> want_loc(static_cast<std::size_t>(F)), want_scale(want_loc.size());
      std::vector<vnref::Readout> rd;
      for (std::size_t f = 0; f < cells.size(); ++f) {
        rd.push_back(vnref::read(cfg, cells[f], count));
        want_loc[f] = rd.back().mu;
        want_scale[f] = rd.back().scale;
      }
      ASSERT_TRUE(Close(where + ": loc", want_loc, vn.loc("obs"), 10 * rtol()));
      ASSERT_TRUE(Close(where + ": scale", want_scale, vn.scale("obs"), 10 * rtol()));
      if (step == 3) {
        ASSERT_EQ(vn.loc("obs"), loc_before) << where << ": an all-bad batch changed the statistics";
      }
      // Outputs: every value normalized with the new statistics, finite or not.
      const auto y = yb.values();
      std::vector<double> want_y(y.size());
      for (std::int64_t r = 0; r < m; ++r)
        for (std::int64_t f = 0; f < F; ++f) {
          const std::size_t u = static_cast<std::size_t>(r * F + f);
          want_y[u] = std::isfinite(x[u]) ? vnref::normalize(rd[static_cast<std::size_t>(f)], x[u])
                                          : (std::isnan(x[u]) ? kNaN : x[u]);
        }
      ASSERT_TRUE(Close(where + ": y", want_y, y, ytol()));
    }
    const vecnorm::State st = vn.export_state();
    ASSERT_TRUE(st.keys[0].skips.empty());
    ASSERT_EQ(st.keys[0].skipped, skipped);
  }
}

TEST_P(NonFiniteTest, StatelessSkipKeepsTheElementAndItsCount) {
  const Shape batch{3}, feat{2};
  const std::int64_t n = 6;
  vecnorm::Options o = options(false, NonFinite::skip, 0.9);
  const vecnorm::KeyTable table{batch, {{"obs", feat, DType::float32}}};
  const vnref::Config cfg = config(0.9, o.eps);
  const Shape s = batch.concat(feat);
  DeviceBuffer loc(backend(), stats(), s), var(backend(), stats(), s), cnt(backend(), DType::int64, s);
  std::vector<vnref::Cell> cells(static_cast<std::size_t>(n));
  std::vector<std::int64_t> counts(static_cast<std::size_t>(n), 0);
  std::mt19937_64 rng(3);
  for (int step = 0; step < 6; ++step) {
    const auto x = step_data(rng, step, n, nullptr);
    auto xb = DeviceBuffer::from_values(backend(), DType::float32, s, x);
    DeviceBuffer yb(backend(), DType::float32, s);
    vecnorm::stateless::step(o, table,
                             {{"obs", xb.cview(), yb.view(), {loc.cview(), var.cview(), cnt.cview()},
                               {loc.view(), var.view(), cnt.view()}}});
    for (std::size_t u = 0; u < x.size(); ++u)
      if (std::isfinite(x[u])) vnref::update_one(cfg, cells[u], counts[u]++, x[u]);
    const auto got_counts = cnt.values();
    for (std::size_t u = 0; u < x.size(); ++u) ASSERT_EQ(got_counts[u], static_cast<double>(counts[u])) << "step " << step;
    // Stored statistics as the estimator stores them.
    const auto l = loc.values(), v = var.values();
    for (std::size_t u = 0; u < x.size(); ++u) {
      ASSERT_NEAR(l[u], static_cast<double>(cells[u].loc), 10 * rtol() * std::max(1.0, std::abs(l[u]))) << "step " << step;
      ASSERT_NEAR(v[u], static_cast<double>(cells[u].var), 10 * rtol() * std::max(1.0, std::abs(v[u]))) << "step " << step;
    }
  }
}

TEST_P(NonFiniteTest, PropagateLetsThemIn) {
  // The reference behaviour: a NaN poisons its element (per-element) or its
  // feature (pooled); nothing is counted.
  for (bool pooled : {false, true}) {
    vecnorm::VecNorm vn(options(pooled, NonFinite::propagate, 0.9), {Shape{2}, {{"obs", Shape{3}, DType::float32}}});
    std::vector<double> x = {1, 2, 3, 4, kNaN, 6};
    auto xb = DeviceBuffer::from_values(backend(), DType::float32, Shape{2, 3}, x);
    DeviceBuffer yb(backend(), DType::float32, Shape{2, 3});
    vn.step({{"obs", xb.cview(), yb.view()}});
    const auto loc = vn.loc("obs");
    for (std::size_t i = 0; i < loc.size(); ++i) {
      const bool poisoned = pooled ? i == 1 : i == 4;
      EXPECT_EQ(std::isnan(loc[i]), poisoned) << (pooled ? "pooled" : "per-element") << " loc[" << i << "] = " << loc[i];
    }
    EXPECT_EQ(vn.skipped("obs"), 0);
    EXPECT_EQ(vn.count("obs"), pooled ? 2 : 1);
  }
}

TEST_P(NonFiniteTest, ErrorRefusesTheStepNamingKeyAndIndex) {
  for (bool pooled : {false, true}) {
    vecnorm::VecNorm vn(options(pooled, NonFinite::error, 0.9),
                        {Shape{3}, {{"obs", Shape{2, 2}, DType::float32}, {"reward", Shape{}, DType::float32}}});
    std::vector<double> x(12, 0.5), r = {1, 2, 3};
    auto xb = DeviceBuffer::from_values(backend(), DType::float32, Shape{3, 2, 2}, x);
    auto rb = DeviceBuffer::from_values(backend(), DType::float32, Shape{3}, r);
    DeviceBuffer yb(backend(), DType::float32, Shape{3, 2, 2}), ry(backend(), DType::float32, Shape{3});
    vn.step({{"obs", xb.cview(), yb.view()}, {"reward", rb.cview(), ry.view()}});
    const vecnorm::State before = vn.export_state();
    x[2 * 4 + 1 * 2 + 0] = -kInf;  // row 2, feature [1, 0]
    x[2 * 4 + 1 * 2 + 1] = kNaN;
    auto bad = DeviceBuffer::from_values(backend(), DType::float32, Shape{3, 2, 2}, x);
    yb.fill(0xAB);
    const auto y_before = yb.bytes();
    try {
      vn.step({{"reward", rb.cview(), ry.view()}, {"obs", bad.cview(), yb.view()}});
      FAIL() << "expected Error(nonfinite_input)";
    } catch (const vecnorm::Error& e) {
      EXPECT_EQ(e.code(), vecnorm::ErrorCode::nonfinite_input);
      const std::string msg = e.what();
      for (const char* part : {"'obs'", "-inf", "row 2", "[1, 0]", "nonfinite = error"})
        EXPECT_NE(msg.find(part), std::string::npos) << "message lacks '" << part << "': " << msg;
    }
    // Nothing changed: no key updated (not even the finite reward), no output written.
    const vecnorm::State after = vn.export_state();
    for (std::size_t k = 0; k < 2; ++k) {
      EXPECT_EQ(after.keys[k].loc, before.keys[k].loc);
      EXPECT_EQ(after.keys[k].var, before.keys[k].var);
      EXPECT_EQ(after.keys[k].count, before.keys[k].count);
    }
    EXPECT_EQ(yb.bytes(), y_before);
    // A normalize-only call is not an update: it runs.
    vn.normalize({{"obs", bad.cview(), yb.view()}});
  }
}

TEST_P(NonFiniteTest, IntegerAndHalfInputs) {
  // Integers are always finite; half and bfloat16 infinities and NaNs are seen.
  for (DType dt : {DType::int32, DType::float16, DType::bfloat16}) {
    vecnorm::VecNorm vn(options(false, NonFinite::skip, 0.9), {Shape{2}, {{"obs", Shape{2}, dt}}});
    std::vector<double> x = {1, -2, 3, 4};
    if (dt != DType::int32) x[1] = kInf;
    auto xb = DeviceBuffer::from_values(backend(), dt, Shape{2, 2}, x);
    DeviceBuffer yb(backend(), vecnorm::output_dtype(dt), Shape{2, 2});
    vn.step({{"obs", xb.cview(), yb.view()}});
    const std::vector<std::int64_t> want = dt == DType::int32 ? std::vector<std::int64_t>{1, 1, 1, 1}
                                                              : std::vector<std::int64_t>{1, 0, 1, 1};
    EXPECT_EQ(vn.element_counts("obs"), want) << vecnorm::to_string(dt);
    EXPECT_EQ(vn.skipped("obs"), dt == DType::int32 ? 0 : 1) << vecnorm::to_string(dt);
  }
}

TEST_P(NonFiniteTest, InconsistentStatesAreRejected) {
  vecnorm::VecNorm vn(options(false, NonFinite::skip, 0.9), {Shape{2}, {{"obs", Shape{1}, DType::float32}}});
  std::vector<double> x = {kNaN, 1.0};
  auto xb = DeviceBuffer::from_values(backend(), DType::float32, Shape{2, 1}, x);
  DeviceBuffer yb(backend(), DType::float32, Shape{2, 1});
  vn.step({{"obs", xb.cview(), yb.view()}});
  const vecnorm::State good = vn.export_state();
  ASSERT_EQ(good.keys[0].skips, (std::vector<std::int64_t>{1, 0}));
  auto expect_rejected = [&](vecnorm::State s, const char* what, const char* needle) {
    vecnorm::VecNorm target(options(false, NonFinite::skip, 0.9), {Shape{2}, {{"obs", Shape{1}, DType::float32}}});
    try {
      target.import_state(s);
      ADD_FAILURE() << what << ": accepted";
    } catch (const vecnorm::Error& e) {
      EXPECT_EQ(e.code(), vecnorm::ErrorCode::state_mismatch) << what;
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << what << ": " << e.what();
    }
    EXPECT_EQ(target.count("obs"), 0) << what << ": the target changed";
  };
  vecnorm::State s = good;
  s.keys[0].skipped = 2;
  expect_rejected(s, "sum", "sum of skips");
  s = good;
  s.keys[0].skips = {2, 0};
  s.keys[0].skipped = 2;
  expect_rejected(s, "skip above count", "skips[0]");
  s = good;
  s.keys[0].skips = {1};
  expect_rejected(s, "length", "skips");
  s = good;
  s.keys[0].skips.clear();
  expect_rejected(s, "missing", "got none");
  s = good;
  s.keys[0].skipped = -1;
  s.keys[0].skips.clear();
  expect_rejected(s, "negative", "skipped");
}

std::string name(const ::testing::TestParamInfo<Param>& info) {
  return std::string(vntest::backend_name(std::get<0>(info.param))) + "_" + vntest::estimator_name(std::get<1>(info.param)) +
         "_" + (std::get<2>(info.param) == DType::float64 ? "f64" : "f32");
}

INSTANTIATE_TEST_SUITE_P(All, NonFiniteTest,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(Estimator::torchrl, Estimator::stable),
                                            ::testing::Values(DType::float32, DType::float64)),
                         name);

}  // namespace
