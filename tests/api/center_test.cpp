// tests/api/center_test.cpp -- Options::center false: the map divides without
// subtracting the mean, y = x / scale (every reward scaler: SB3, Gymnasium,
// rsl_rl; rl_games' norm_only). On every backend (the CUDA kernels under the
// emulator), per element and pooled, both estimators, against the naive
// reference (tests/reference): outputs, read-outs (loc() is the mean the map
// subtracts: 0), to_affine, denormalize; the statistics are those of a centred
// normalizer; across ranks; the option's life in checkpoints (format 5),
// imports and shared segments.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "reference.hpp"
#include "support/device_buffer.hpp"
#include "support/errors.hpp"
#include "support/data.hpp"
#include "support/ranks.hpp"
#include "vecnorm/checkpoint.hpp"
#include "vecnorm/collective.hpp"
#include "vecnorm/vecnorm.hpp"

namespace {

using vecnorm::Backend;
using vecnorm::DType;
using vecnorm::ErrorCode;
using vecnorm::Shape;
using vntest::DeviceBuffer;
using vntest::message_of;

constexpr std::int64_t kF = 4;

/// Step t's batch of m rows (float32 values). Means far from 0 against their
/// spread, so that a centred output (about N(0, 1)) and an uncentred one
/// (mean / std: 2 to 15) are far apart.
std::vector<double> batch(int t, std::int64_t m, unsigned seed = 3) {
  static const vntest::FeatureDistribution dist{{2.0, -40.0, 0.05, 300.0}, {1.0, 5.0, 0.01, 20.0}};
  return vntest::step_values(dist, seed, t, m);
}

/// x / scale of the reference, element by element (scale per statistics element).
std::vector<double> uncentred(const vnref::StatefulKey& ref, const std::vector<double>& x) {
  const std::vector<double> s = ref.scale();
  std::vector<double> y(x.size());
  for (std::size_t j = 0; j < x.size(); ++j) y[j] = x[j] / s[ref.pooled() ? j % kF : j];
  return y;
}

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, double rtol,
                     const std::string& at) {
  ASSERT_EQ(got.size(), want.size()) << at;
  for (std::size_t j = 0; j < got.size(); ++j)
    EXPECT_NEAR(got[j], want[j], rtol * std::max(1.0, std::abs(want[j]))) << at << " [" << j << "]";
}

using Param = std::tuple<Backend, bool /*pooled*/, vnref::Estimator>;
class Center : public ::testing::TestWithParam<Param> {
 protected:
  Backend backend() const { return std::get<0>(GetParam()); }
  bool pooled() const { return std::get<1>(GetParam()); }
  vnref::Estimator estimator() const { return std::get<2>(GetParam()); }
  vecnorm::Options opts(bool center) const {
    vecnorm::Options o = vntest::options_for(backend());
    o.reduce_batch_dims = pooled();
    o.estimator = estimator() == vnref::Estimator::stable ? vecnorm::Estimator::stable : vecnorm::Estimator::torchrl;
    o.decay = estimator() == vnref::Estimator::stable ? 1.0 : 0.9;
    o.stats_dtype = DType::float64;
    o.center = center;
    return o;
  }
};

TEST_P(Center, OutputsAreTheInputOverTheScale) {
  const std::int64_t rows = 5;
  const vecnorm::KeyTable table{Shape{rows}, {{"obs", Shape{kF}, DType::float32}}};
  const vecnorm::Options o = opts(false);
  vecnorm::VecNorm vn(o, table), centred(opts(true), table);
  vnref::StatefulKey ref({estimator(), o.decay, o.eps}, pooled(), kF, rows);
  for (int t = 0; t < 8; ++t) {
    const std::string at = "step " + std::to_string(t);
    const std::vector<double> x = batch(t, rows);
    ref.update(x, rows);
    auto xb = DeviceBuffer::from_values(backend(), DType::float32, Shape{rows, kF}, x);
    DeviceBuffer yb(backend(), DType::float32, Shape{rows, kF}), yc(backend(), DType::float32, Shape{rows, kF});
    vn.step({{"obs", xb.cview(), yb.view()}});
    centred.step({{"obs", xb.cview(), yc.view()}});
    // y = x / scale, the scale of the statistics after this step's update.
    expect_near_all(yb.values(), uncentred(ref, x), 2e-6, at + " y");
    // The statistics are the map's business only: the same bits as centred.
    const vecnorm::State a = vn.export_state(), b = centred.export_state();
    EXPECT_EQ(a.keys[0].loc, b.keys[0].loc) << at;
    EXPECT_EQ(a.keys[0].var, b.keys[0].var) << at;
    EXPECT_EQ(a.keys[0].count, b.keys[0].count) << at;
    // And the centred outputs are not these (the test tells them apart).
    EXPECT_NE(yb.values(), yc.values()) << at;
  }
  // Read-outs: the map subtracts 0; the scale is the reference's.
  const std::vector<double> loc = vn.loc("obs"), scale = vn.scale("obs"), want_scale = ref.scale();
  EXPECT_EQ(loc, std::vector<double>(loc.size(), 0.0));
  expect_near_all(scale, want_scale, 1e-9, "scale");
  // normalize, to_affine and denormalize of a fresh batch.
  const std::vector<double> x = batch(50, rows);
  auto xb = DeviceBuffer::from_values(backend(), DType::float32, Shape{rows, kF}, x);
  DeviceBuffer y1(backend(), DType::float32, Shape{rows, kF}), y2(backend(), DType::float32, Shape{rows, kF}),
      back(backend(), DType::float32, Shape{rows, kF});
  vn.normalize({{"obs", xb.cview(), y1.view()}});
  expect_near_all(y1.values(), uncentred(ref, x), 2e-6, "normalize");
  const vecnorm::AffineNormalizer affine = vn.to_affine();
  affine.apply({{"obs", xb.cview(), y2.view()}});
  EXPECT_EQ(y1.values(), y2.values()) << "to_affine() applies the same map";
  vn.denormalize({{"obs", y1.cview(), back.view()}});
  expect_near_all(back.values(), x, 1e-6, "denormalize");
}

INSTANTIATE_TEST_SUITE_P(All, Center,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()), ::testing::Bool(),
                                            ::testing::Values(vnref::Estimator::torchrl, vnref::Estimator::stable)),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::string(vntest::backend_name(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) ? "_pooled" : "_per_element") +
                                  (std::get<2>(info.param) == vnref::Estimator::stable ? "_stable" : "_torchrl");
                         });

// Pooled across ranks: every rank divides by the scale of all ranks' rows; a
// rank configured otherwise is refused.
TEST(CenterRanks, EveryRankDividesByThePooledScale) {
  constexpr int kRanks = 3;
  for (const Backend backend : vntest::test_backends()) {
    vecnorm::Options base = vntest::pooled_cumulative_options(backend);
    base.center = false;
    const auto vns = vntest::ranks_of(base, {Shape{}, {{"obs", Shape{kF}, DType::float32}}}, kRanks);
    vnref::StatefulKey ref({vnref::Estimator::stable, 1.0, base.eps}, true, kF);
    for (int t = 0; t < 4; ++t) {
      std::vector<std::vector<double>> xs(kRanks), ys(kRanks);
      std::vector<double> all;
      for (int r = 0; r < kRanks; ++r) {
        xs[static_cast<std::size_t>(r)] = batch(t, 2 + r, 11u + static_cast<unsigned>(r));
        all.insert(all.end(), xs[static_cast<std::size_t>(r)].begin(), xs[static_cast<std::size_t>(r)].end());
      }
      ref.update(all, 9);
      vntest::on_ranks(kRanks, [&](int r) {
        const auto& x = xs[static_cast<std::size_t>(r)];
        auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{2 + r, kF}, x);
        DeviceBuffer yb(backend, DType::float32, Shape{2 + r, kF});
        vns[static_cast<std::size_t>(r)]->step({{"obs", xb.cview(), yb.view()}});
        ys[static_cast<std::size_t>(r)] = yb.values();
      });
      for (int r = 0; r < kRanks; ++r)
        expect_near_all(ys[static_cast<std::size_t>(r)], uncentred(ref, xs[static_cast<std::size_t>(r)]), 2e-6,
                        std::string(vntest::backend_name(backend)) + " step " + std::to_string(t) + " rank " +
                            std::to_string(r));
    }
  }
}

TEST(CenterRanks, ARankThatCentresIsRefused) {
  const auto group = vecnorm::thread_group(2);
  std::vector<std::unique_ptr<vecnorm::VecNorm>> vns;
  for (int r = 0; r < 2; ++r) {
    vecnorm::Options o;
    o.reduce_batch_dims = true;
    o.center = r == 0;
    o.collective = group[static_cast<std::size_t>(r)];
    vns.push_back(std::make_unique<vecnorm::VecNorm>(o, vecnorm::KeyTable{Shape{}, {{"obs", Shape{kF}, DType::float32}}}));
  }
  std::vector<std::string> errors(2);
  vntest::on_ranks(2, [&](int r) {
    std::vector<float> x(3 * kF, 1.0f + static_cast<float>(r)), y(3 * kF);
    errors[static_cast<std::size_t>(r)] = message_of(
        [&] {
          vns[static_cast<std::size_t>(r)]->step({{"obs", vecnorm::ConstTensorView(x.data(), DType::float32, Shape{3, kF}),
                                                   vecnorm::TensorView{y.data(), DType::float32, Shape{3, kF}}}});
        },
        ErrorCode::collective_error);
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(errors[static_cast<std::size_t>(r)].find("rank 1's normalizer differs from rank 0's"), std::string::npos)
        << errors[static_cast<std::size_t>(r)];
    EXPECT_NE(errors[static_cast<std::size_t>(r)].find("center"), std::string::npos) << errors[static_cast<std::size_t>(r)];
    EXPECT_EQ(vns[static_cast<std::size_t>(r)]->count("obs"), 0) << "rank " << r << " changed nothing";
  }
}

// ---------------------------------------------------------------- the option's life

TEST(CenterOption, CheckpointsKeepItInFormat5AndImportsAdoptItOrKeepTheirOwnMap) {
  vecnorm::Options o;
  o.reduce_batch_dims = true;
  o.center = false;
  const vecnorm::KeyTable table{Shape{}, {{"obs", Shape{kF}, DType::float32}}};
  vecnorm::VecNorm vn(o, table);
  std::vector<float> x(6 * kF), y1(6 * kF), y2(6 * kF);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = 10.0f + static_cast<float>(i % 7);
  auto step = [&](vecnorm::VecNorm& v, std::vector<float>& y) {
    v.step({{"obs", vecnorm::ConstTensorView(x.data(), DType::float32, Shape{6, kF}),
             vecnorm::TensorView{y.data(), DType::float32, Shape{6, kF}}}});
  };
  step(vn, y1);
  const std::vector<std::uint8_t> bytes = vecnorm::encode_state(vn.export_state());
  EXPECT_EQ(bytes[8], 5u) << "center false needs format 5";
  const vecnorm::State back = vecnorm::decode_state(bytes);
  EXPECT_FALSE(back.options.center);
  // Centred files stay at the older format.
  vecnorm::State plain = back;
  plain.options.center = true;
  EXPECT_EQ(vecnorm::encode_state(plain)[8], 2u);
  EXPECT_TRUE(vecnorm::decode_state(vecnorm::encode_state(plain)).options.center);
  // A fresh normalizer adopts it: its next step is the original's, bit for bit.
  vecnorm::VecNorm adopted{vecnorm::Options{}};
  adopted.import_state(back);
  step(vn, y1);
  step(adopted, y2);
  EXPECT_EQ(y1, y2);
  // One configured already takes the statistics only (as for clip and the
  // scale form: the statistics do not depend on the map) and keeps centring.
  vecnorm::Options c = o;
  c.center = true;
  vecnorm::VecNorm other(c, table);
  other.import_state(back);
  EXPECT_EQ(other.export_state().keys[0].loc, back.keys[0].loc);
  EXPECT_TRUE(other.export_state().options.center);
  const std::vector<double> mu = other.loc("obs");
  for (double m : mu) EXPECT_GT(m, 10.0) << "a centred map subtracts the mean";
  // A code other than 0 or 1 in a file is refused, naming it: center is the
  // last option of the version 5 header (a little-endian uint32 at byte 92,
  // after until), the CRC-32C trailer made again.
  std::vector<std::uint8_t> bad = bytes;
  for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(bad[92 + i], 0u) << "byte " << 92 + i;
  bad[92] = 2;
  const std::uint32_t crc = vecnorm::crc32c(std::span<const std::uint8_t>(bad.data(), bad.size() - 4));
  for (std::size_t i = 0; i < 4; ++i) bad[bad.size() - 4 + i] = static_cast<std::uint8_t>(crc >> (8 * i));
  const std::string mb = message_of([&] { (void)vecnorm::decode_state(bad); }, ErrorCode::state_mismatch);
  EXPECT_NE(mb.find("center: expected 0 or 1, got 2"), std::string::npos) << mb;
}

}  // namespace
