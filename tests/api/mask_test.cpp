// tests/api/mask_test.cpp -- row masks on pooled updates (KeyData::mask,
// ExternalItem::mask): a row whose mask byte is 0 is left out of the update as
// if it had not arrived (done or truncated environments), its output still
// produced. On every backend (the CUDA kernels under the emulator, batches of
// several blocks), both estimators, against the naive reference
// (tests/reference) updated with the kept rows only; left-out rows holding
// anything (NaN, inf, 1e30) change nothing and count no skip; a NaN in a kept
// row is a skip as without a mask; across ranks; and the checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "reference.hpp"
#include "support/device_buffer.hpp"
#include "support/errors.hpp"
#include "support/ranks.hpp"
#include "vecnorm/collective.hpp"
#include "vecnorm/vecnorm.hpp"

namespace {

using vecnorm::Backend;
using vecnorm::DType;
using vecnorm::ErrorCode;
using vecnorm::Shape;
using vntest::DeviceBuffer;

constexpr std::int64_t kF = 5;

struct Batch {
  std::int64_t rows = 0;
  std::vector<double> x;             // rows x kF, float32 values (NaN/inf where a left-out row holds them)
  std::vector<double> mask;          // rows, 0 or 1
  std::vector<double> kept;          // the kept rows' values
  std::int64_t kept_rows = 0;
};

/// Step t's batch: about a third of the rows left out (all at step 3, none at
/// step 5); left-out rows at odd steps hold NaN, inf and 1e30.
Batch batch(int t, std::int64_t rows, unsigned seed = 11) {
  std::mt19937_64 rng(seed * 100u + static_cast<unsigned>(t));
  std::normal_distribution<double> z(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const double loc[kF] = {1.0, -30.0, 0.0, 500.0, 2.0};
  const double sd[kF] = {2.0, 4.0, 0.01, 50.0, 0.5};
  Batch b;
  b.rows = rows;
  for (std::int64_t r = 0; r < rows; ++r) {
    const bool keep = t == 5 || (t != 3 && u(rng) > 0.35);
    b.mask.push_back(keep ? 1.0 : 0.0);
    for (std::int64_t f = 0; f < kF; ++f) {
      double v = static_cast<double>(static_cast<float>(loc[f] + sd[f] * z(rng)));
      if (!keep && t % 2 == 1) v = f == 0 ? std::nan("") : f == 1 ? std::numeric_limits<double>::infinity() : 1e30;
      b.x.push_back(v);
      if (keep) b.kept.push_back(v);
    }
    if (keep) ++b.kept_rows;
  }
  return b;
}

using Param = std::tuple<Backend, vnref::Estimator, std::int64_t /*rows*/>;
class Masks : public ::testing::TestWithParam<Param> {
 protected:
  Backend backend() const { return std::get<0>(GetParam()); }
  vnref::Estimator estimator() const { return std::get<1>(GetParam()); }
  std::int64_t rows() const { return std::get<2>(GetParam()); }
  vecnorm::Options opts() const {
    vecnorm::Options o = vntest::options_for(backend());
    o.reduce_batch_dims = true;
    o.stats_dtype = DType::float64;
    o.estimator = estimator() == vnref::Estimator::stable ? vecnorm::Estimator::stable : vecnorm::Estimator::torchrl;
    o.decay = estimator() == vnref::Estimator::stable ? 1.0 : 0.95;
    return o;
  }
};

TEST_P(Masks, LeftOutRowsChangeNothingAndAreStillNormalized) {
  const vecnorm::Options o = opts();
  vecnorm::VecNorm vn(o, {Shape{}, {{"obs", Shape{kF}, DType::float32}}});
  vnref::StatefulKey ref({estimator(), o.decay, o.eps}, true, kF);
  const std::int64_t m = rows();
  for (int t = 0; t < 8; ++t) {
    const std::string at = "step " + std::to_string(t);
    const Batch b = batch(t, m);
    ref.update(b.kept, b.kept_rows);
    auto xb = DeviceBuffer::from_values(backend(), DType::float32, Shape{m, kF}, b.x);
    auto mb = DeviceBuffer::from_values(backend(), DType::uint8, Shape{m}, b.mask);
    DeviceBuffer yb(backend(), DType::float32, Shape{m, kF});
    if (t == 0) {
      // No update yet and every row left out: nothing to normalize with.
      auto none = DeviceBuffer::from_values(backend(), DType::uint8, Shape{m}, std::vector<double>(m, 0.0));
      vn.update({{"obs", xb.cview(), yb.view(), none.cview()}});
      EXPECT_EQ(vn.export_state().keys[0].count, 0);
    }
    vn.step({{"obs", xb.cview(), yb.view(), mb.cview()}});
    const vecnorm::State st = vn.export_state();
    ASSERT_EQ(st.keys[0].count, ref.count()) << at;
    EXPECT_EQ(st.keys[0].skipped, 0) << at << ": left-out rows are not skips";
    const std::vector<double> mean = vn.loc("obs"), scale = vn.scale("obs"), want_mu = ref.loc(),
                              want_scale = ref.scale();
    for (std::size_t f = 0; f < static_cast<std::size_t>(kF); ++f) {
      EXPECT_NEAR(mean[f], want_mu[f], 1e-10 * (std::abs(want_mu[f]) + want_scale[f])) << at << " mean[" << f << "]";
      EXPECT_NEAR(scale[f], want_scale[f], 1e-8 * want_scale[f]) << at << " scale[" << f << "]";
    }
    // Every row's output, left-out ones included, from the statistics after the update.
    const std::vector<double> y = yb.values(), want = ref.normalize(b.x, m);
    for (std::size_t j = 0; j < y.size(); ++j) {
      if (!std::isfinite(b.x[j])) continue;
      EXPECT_NEAR(y[j], want[j], 2e-6 * std::max(1.0, std::abs(want[j]))) << at << " y[" << j << "]";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, Masks,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(vnref::Estimator::torchrl, vnref::Estimator::stable),
                                            ::testing::Values<std::int64_t>(24, 3001)),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::string(vntest::backend_name(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) == vnref::Estimator::stable ? "_stable" : "_torchrl") +
                                  "_rows" + std::to_string(std::get<2>(info.param));
                         });

// The CPU's vector reduction over super rows of W / F batch rows (F < 64) or
// one row (F >= 64): super rows the mask keeps whole, leaves out whole, and
// keeps in part (lanes masked), several chunks, a partial last super row, a
// first row left out holding NaN or a far-off value; float32 input summed in
// float per 128-row tile. Under NonFinite::propagate (no one-thread pass over
// the kept finite rows to hide a leak), against the naive reference over the
// kept rows, and the same bits on 1 and 2 threads.
TEST(MaskWidths, EveryFeatureWidthAndChunkingOnTheCpu) {
  for (const std::int64_t F : {std::int64_t{1}, std::int64_t{3}, std::int64_t{48}, std::int64_t{64}, std::int64_t{70}}) {
    const std::int64_t m = F == 1 ? 40001 : 5003;  // several chunks, a partial last super row
    vecnorm::Options o = vntest::options_for(Backend::cpu);
    o.reduce_batch_dims = true;
    o.stats_dtype = DType::float64;
    o.nonfinite = vecnorm::NonFinite::propagate;
    o.decay = 0.99;
    const vecnorm::KeyTable table{Shape{}, {{"obs", Shape{F}, DType::float32}}};
    o.cpu_threads = 2;
    vecnorm::VecNorm vn(o, table);
    o.cpu_threads = 1;
    vecnorm::VecNorm one(o, table);
    vnref::StatefulKey ref({vnref::Estimator::torchrl, o.decay, o.eps}, true, F);
    std::mt19937_64 rng(static_cast<unsigned>(F));
    std::normal_distribution<double> z(0.0, 1.0);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (int t = 0; t < 4; ++t) {
      const std::string at = "F " + std::to_string(F) + " step " + std::to_string(t);
      std::vector<double> x, mask, kept;
      std::int64_t kept_rows = 0;
      for (std::int64_t r = 0; r < m; ++r) {
        // Runs of 100 rows left out whole at step 1, none left out at step 2,
        // about one row in four elsewhere; row 0 always left out (but at step 2).
        const bool keep = t == 2 || (r > 0 && (t == 1 ? (r / 100) % 3 != 0 : u(rng) > 0.25));
        mask.push_back(keep ? 1.0 : 0.0);
        for (std::int64_t f = 0; f < F; ++f) {
          const double v = static_cast<double>(static_cast<float>(100.0 * static_cast<double>(f % 7) - 250.0 +
                                                                  (1.0 + static_cast<double>(f % 3)) * z(rng)));
          // left out: NaN, or at odd steps finite values far off
          x.push_back(keep ? v : t % 2 == 1 ? v + 1e4 : std::nan(""));
          if (keep) kept.push_back(v);
        }
        kept_rows += keep;
      }
      ref.update(kept, kept_rows);
      auto xb = DeviceBuffer::from_values(Backend::cpu, DType::float32, Shape{m, F}, x);
      auto mb = DeviceBuffer::from_values(Backend::cpu, DType::uint8, Shape{m}, mask);
      DeviceBuffer yb(Backend::cpu, DType::float32, Shape{m, F});
      vn.step({{"obs", xb.cview(), yb.view(), mb.cview()}});
      one.step({{"obs", xb.cview(), yb.view(), mb.cview()}});
      const vecnorm::State st = vn.export_state(), st1 = one.export_state();
      ASSERT_EQ(st.keys[0].count, ref.count()) << at;
      EXPECT_EQ(st.keys[0].loc, st1.keys[0].loc) << at << ": 1 and 2 threads differ";
      EXPECT_EQ(st.keys[0].var, st1.keys[0].var) << at << ": 1 and 2 threads differ";
      const std::vector<double> mean = vn.loc("obs"), scale = vn.scale("obs"), want_mu = ref.loc(),
                                want_scale = ref.scale();
      for (std::size_t f = 0; f < static_cast<std::size_t>(F); ++f) {
        // float sums over 128-row tiles: relative errors of ~1e-7 per tile, in the spread
        EXPECT_NEAR(mean[f], want_mu[f], 1e-6 * want_scale[f]) << at << " mean[" << f << "]";
        EXPECT_NEAR(scale[f], want_scale[f], 1e-5 * want_scale[f]) << at << " scale[" << f << "]";
      }
    }
  }
}

// A NaN in a kept row is a skip, as without a mask; in a left-out row it is nothing.
TEST(MaskSkips, ANonFiniteKeptRowIsASkipALeftOutOneIsNot) {
  for (const Backend backend : vntest::test_backends()) {
    vecnorm::Options o = vntest::options_for(backend);
    o.reduce_batch_dims = true;
    o.estimator = vecnorm::Estimator::stable;
    o.decay = 1.0;
    vecnorm::VecNorm vn(o, {Shape{}, {{"obs", Shape{2}, DType::float32}}});
    const double nan = std::nan("");
    // Rows: kept, kept with a NaN, left out with a NaN, kept.
    const std::vector<double> x = {1.0, 2.0, nan, 5.0, nan, nan, 3.0, 6.0}, mask = {1, 1, 0, 1};
    auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{4, 2}, x);
    auto mb = DeviceBuffer::from_values(backend, DType::uint8, Shape{4}, mask);
    DeviceBuffer yb(backend, DType::float32, Shape{4, 2});
    vn.step({{"obs", xb.cview(), yb.view(), mb.cview()}});
    const vecnorm::State st = vn.export_state();
    EXPECT_EQ(st.keys[0].count, 2) << vntest::backend_name(backend);
    EXPECT_EQ(st.keys[0].skipped, 1) << vntest::backend_name(backend);
    const std::vector<double> mean = vn.loc("obs");
    EXPECT_DOUBLE_EQ(mean[0], 2.0) << vntest::backend_name(backend);
    EXPECT_DOUBLE_EQ(mean[1], 4.0) << vntest::backend_name(backend);
  }
}

// NonFinite::error reads the mask: a NaN in a left-out row is nothing, in a kept row an error.
TEST(MaskSkips, ErrorModeScansTheKeptRowsOnly) {
  for (const Backend backend : vntest::test_backends()) {
    vecnorm::Options o = vntest::options_for(backend);
    o.reduce_batch_dims = true;
    o.nonfinite = vecnorm::NonFinite::error;
    vecnorm::VecNorm vn(o, {Shape{}, {{"obs", Shape{2}, DType::float32}}});
    const double nan = std::nan("");
    const std::vector<double> x = {1.0, 2.0, nan, 5.0, nan, nan, 3.0, 6.0};
    auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{4, 2}, x);
    auto left_out = DeviceBuffer::from_values(backend, DType::uint8, Shape{4}, {1, 0, 0, 1});
    auto kept = DeviceBuffer::from_values(backend, DType::uint8, Shape{4}, {1, 1, 0, 1});
    DeviceBuffer yb(backend, DType::float32, Shape{4, 2});
    vn.update({{"obs", xb.cview(), yb.view(), left_out.cview()}});
    EXPECT_EQ(vn.export_state().keys[0].count, 2) << vntest::backend_name(backend);
    try {
      vn.update({{"obs", xb.cview(), yb.view(), kept.cview()}});
      ADD_FAILURE() << "a NaN in a kept row was accepted";
    } catch (const vecnorm::Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::nonfinite_input);
      EXPECT_NE(std::string(e.what()).find("batch row 1"), std::string::npos) << e.what();
    }
    EXPECT_EQ(vn.export_state().keys[0].count, 2) << vntest::backend_name(backend);
  }
}

// At count 0 the sums shift by a sample: with a mask, a kept one. Every
// block's first rows are left out holding NaN (rows r with r % 16 < 2: the
// first rows of every CUDA statistics block, whose row counts are multiples
// of 16), and NonFinite::propagate would let a NaN shift poison the statistics.
TEST(MaskSkips, ALeftOutFirstRowIsNeverTheShift) {
  for (const Backend backend : vntest::test_backends()) {
    vecnorm::Options o = vntest::pooled_cumulative_options(backend);
    o.nonfinite = vecnorm::NonFinite::propagate;
    constexpr std::int64_t m = 3001;
    vecnorm::VecNorm vn(o, {Shape{}, {{"obs", Shape{kF}, DType::float32}}});
    Batch b = batch(5, m);  // every row kept, then the left-out ones set
    b.kept.clear();
    b.kept_rows = 0;
    for (std::int64_t r = 0; r < m; ++r) {
      const bool keep = r % 16 >= 2;
      b.mask[static_cast<std::size_t>(r)] = keep ? 1.0 : 0.0;
      for (std::int64_t f = 0; f < kF; ++f) {
        double& v = b.x[static_cast<std::size_t>(r * kF + f)];
        if (!keep) v = std::nan("");
        else b.kept.push_back(v);
      }
      if (keep) ++b.kept_rows;
    }
    vnref::StatefulKey ref({vnref::Estimator::stable, 1.0, o.eps}, true, kF);
    ref.update(b.kept, b.kept_rows);
    auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{m, kF}, b.x);
    auto mb = DeviceBuffer::from_values(backend, DType::uint8, Shape{m}, b.mask);
    DeviceBuffer yb(backend, DType::float32, Shape{m, kF});
    vn.update({{"obs", xb.cview(), yb.view(), mb.cview()}});
    EXPECT_EQ(vn.export_state().keys[0].count, ref.count());
    const std::vector<double> mean = vn.loc("obs"), scale = vn.scale("obs"), want = ref.loc(), ws = ref.scale();
    for (std::size_t f = 0; f < static_cast<std::size_t>(kF); ++f) {
      EXPECT_NEAR(mean[f], want[f], 1e-10 * (std::abs(want[f]) + ws[f])) << vntest::backend_name(backend) << " mean[" << f << "]";
      EXPECT_NEAR(scale[f], ws[f], 1e-8 * ws[f]) << vntest::backend_name(backend) << " scale[" << f << "]";
    }
  }
}

// Across ranks: each rank's kept rows, merged; the same bits on every rank,
// the reference over the concatenation of the kept rows.
TEST(MaskRanks, RanksMergeTheirKeptRows) {
  constexpr int kRanks = 3;
  for (const Backend backend : vntest::test_backends()) {
    vecnorm::Options base = vntest::pooled_cumulative_options(backend);
    const auto vns = vntest::ranks_of(base, {Shape{}, {{"obs", Shape{kF}, DType::float32}}}, kRanks);
    vnref::StatefulKey ref({vnref::Estimator::stable, 1.0, base.eps}, true, kF);
    for (int t = 0; t < 6; ++t) {
      std::vector<Batch> bs;
      std::vector<double> kept;
      std::int64_t kept_rows = 0;
      for (int r = 0; r < kRanks; ++r) {
        bs.push_back(batch(t, 4 + 3 * r, 20u + static_cast<unsigned>(r)));
        kept.insert(kept.end(), bs.back().kept.begin(), bs.back().kept.end());
        kept_rows += bs.back().kept_rows;
      }
      ref.update(kept, kept_rows);
      vntest::on_ranks(kRanks, [&](int r) {
        const Batch& b = bs[static_cast<std::size_t>(r)];
        auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{b.rows, kF}, b.x);
        auto mb = DeviceBuffer::from_values(backend, DType::uint8, Shape{b.rows}, b.mask);
        DeviceBuffer yb(backend, DType::float32, Shape{b.rows, kF});
        vns[static_cast<std::size_t>(r)]->step({{"obs", xb.cview(), yb.view(), mb.cview()}});
      });
      const std::string at = std::string(vntest::backend_name(backend)) + " step " + std::to_string(t);
      const vecnorm::State s0 = vns[0]->export_state();
      EXPECT_EQ(s0.keys[0].count, ref.count()) << at;
      for (int r = 0; r < kRanks; ++r) {
        const vecnorm::State sr = vns[static_cast<std::size_t>(r)]->export_state();
        EXPECT_EQ(sr.keys[0].loc, s0.keys[0].loc) << at << " rank " << r;
        EXPECT_EQ(sr.keys[0].var, s0.keys[0].var) << at << " rank " << r;
        EXPECT_EQ(sr.keys[0].skipped, 0) << at << " rank " << r;
      }
      if (ref.count() == 0) continue;
      const std::vector<double> mean = vns[0]->loc("obs"), want = ref.loc(), ws = ref.scale();
      for (std::size_t f = 0; f < static_cast<std::size_t>(kF); ++f)
        EXPECT_NEAR(mean[f], want[f], 1e-10 * (std::abs(want[f]) + ws[f])) << at << " mean[" << f << "]";
    }
  }
}

using vntest::message_of;

TEST(MaskChecks, NameTheKeyTheExpectedAndTheActualAndChangeNothing) {
  vecnorm::Options o;
  o.reduce_batch_dims = true;
  vecnorm::VecNorm vn(o, {Shape{}, {{"obs", Shape{2}, DType::float32}}});
  std::vector<float> x(8, 1.0f), y(8);
  std::vector<std::uint8_t> mask(4, 1);
  std::vector<std::int64_t> wide(4, 1);  // (int32 is a pooled update's row weights: brax_options_test.cpp)
  const vecnorm::ConstTensorView xv(x.data(), DType::float32, Shape{4, 2});
  const vecnorm::TensorView yv{y.data(), DType::float32, Shape{4, 2}};
  auto step = [&](vecnorm::ConstTensorView m) { return [&, m] { vn.step({{"obs", xv, yv, m}}); }; };
  std::string e = message_of(step(vecnorm::ConstTensorView(mask.data(), DType::uint8, Shape{3})), ErrorCode::shape_mismatch);
  EXPECT_NE(e.find("key 'obs': mask shape: expected [4], got [3]"), std::string::npos) << e;
  e = message_of(step(vecnorm::ConstTensorView(wide.data(), DType::int64, Shape{4})), ErrorCode::dtype_mismatch);
  EXPECT_NE(e.find("key 'obs': mask dtype: expected uint8, got int64"), std::string::npos) << e;
  EXPECT_EQ(vn.export_state().keys[0].count, 0) << "nothing ran";
  // Per-element statistics check it the same way (tests/api/element_mask_test.cpp runs it).
  vecnorm::VecNorm per(vecnorm::Options{}, {Shape{4}, {{"obs", Shape{2}, DType::float32}}});
  e = message_of([&] { per.step({{"obs", xv, yv, vecnorm::ConstTensorView(mask.data(), DType::uint8, Shape{2, 2})}}); },
                 ErrorCode::shape_mismatch);
  EXPECT_NE(e.find("key 'obs': mask shape: expected [4], got [2, 2]"), std::string::npos) << e;
  EXPECT_EQ(per.count("obs"), 0) << "nothing ran";
  // A call that does not update reads no mask.
  vn.step({{"obs", xv, yv, vecnorm::ConstTensorView(mask.data(), DType::uint8, Shape{4})}});
  EXPECT_NO_THROW(vn.normalize({{"obs", xv, yv, vecnorm::ConstTensorView(mask.data(), DType::uint8, Shape{3})}}));
  EXPECT_EQ(vn.export_state().keys[0].count, 4);
}

}  // namespace
