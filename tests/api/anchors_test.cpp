// tests/api/anchors_test.cpp -- the options that make vecnorm another
// normalizer (docs/anchors.md): the scale forms (Options::scale), the output
// bound (clip), the stable estimator's prior (prior_count) and the unbiased
// batch variance, on every backend, against a naive double-precision
// reference written here from the anchors' formulas (Chan's merge of a prior
// (n0, 0, 1) with every batch; SB3's, rl_games' and skrl's RunningMeanStd), and
// their life in checkpoints and validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "support/check.hpp"
#include "support/device_buffer.hpp"
#include "support/dtypes.hpp"
#include "support/errors.hpp"
#include "support/harness.hpp"
#include "vecnorm/checkpoint.hpp"
#include "vecnorm/stateless.hpp"

namespace {

using vecnorm::Backend;
using vecnorm::DType;
using vecnorm::ErrorCode;
using vecnorm::ScaleForm;
using vecnorm::Shape;
using vntest::DeviceBuffer;

constexpr double kInf = std::numeric_limits<double>::infinity();

/// The naive reference of one statistics array (per feature, or per element):
/// weighted samples with a prior, in double. Decay d: a sample seen k updates
/// ago weighs d^k per sample; the prior n0 weighs n0 d^(samples seen).
struct Reference {
  double d = 1.0, n0 = 0.0;
  bool unbiased = false;
  std::int64_t n = 0;  // samples seen
  std::vector<double> mean, var;

  Reference(std::size_t numel, double decay, double prior, bool unb)
      : d(decay), n0(prior), unbiased(unb), mean(numel, 0.0), var(numel, prior > 0 ? 1.0 : 0.0) {}

  /// Total weight after n samples.
  double total(std::int64_t k) const {
    const double dk = std::pow(d, static_cast<double>(k));
    const double samples = d == 1.0 ? static_cast<double>(k) : (1.0 - dk) / (1.0 - d);
    return samples + n0 * dk;
  }
  /// A batch of m rows: rows[r * numel + i]. The batch's own mean and variance
  /// (biased, or unbiased with m - 1), merged by Chan's formula with weights
  /// W_old d^m (what is stored) and W_new (the batch's m samples).
  void update(const std::vector<double>& rows, std::int64_t m) {
    const std::size_t numel = mean.size();
    const double w_old = total(n) * std::pow(d, static_cast<double>(m));
    const double w_all = total(n + m);
    const double w_new = w_all - w_old;
    for (std::size_t i = 0; i < numel; ++i) {
      double bm = 0.0;
      for (std::int64_t r = 0; r < m; ++r) bm += rows[static_cast<std::size_t>(r) * numel + i];
      bm /= static_cast<double>(m);
      double bv = 0.0;
      for (std::int64_t r = 0; r < m; ++r) {
        const double e = rows[static_cast<std::size_t>(r) * numel + i] - bm;
        bv += e * e;
      }
      bv /= (unbiased && m > 1) ? static_cast<double>(m - 1) : static_cast<double>(m);
      const double delta = bm - mean[i];
      const double new_mean = mean[i] + delta * w_new / w_all;
      const double m2 = var[i] * w_old + bv * w_new + delta * delta * w_old * w_new / w_all;
      mean[i] = new_mean;
      var[i] = m2 / w_all;
    }
    n += m;
  }
};

double scale_of(ScaleForm f, double v, double eps) {
  switch (f) {
    case ScaleForm::sqrt_var_plus_eps: return std::sqrt(v + eps);
    case ScaleForm::std_plus_eps: return std::sqrt(v) + eps;
    case ScaleForm::clamp: break;
  }
  return std::max(std::sqrt(v), eps);
}

double normalized(ScaleForm f, double x, double mean, double var, double eps, double clip, bool center) {
  const double y = (center ? x - mean : x) / scale_of(f, var, eps);
  return std::clamp(y, -clip, clip);
}

/// One anchor's configuration.
struct Anchor {
  const char* name;
  ScaleForm scale;
  double eps, clip, prior;
  bool unbiased;
  double decay;
  bool center = true;
};
// SB3 (VecNormalize + RunningMeanStd), rl_games, skrl, rsl_rl, and a decaying
// prior (no anchor: the weighting of docs/numerics.md, "Prior").
const Anchor kAnchors[] = {
    {"sb3", ScaleForm::sqrt_var_plus_eps, 1e-8, 10.0, 1e-4, false, 1.0},
    {"rl_games", ScaleForm::sqrt_var_plus_eps, 1e-5, 5.0, 1.0, false, 1.0},
    {"skrl", ScaleForm::std_plus_eps, 1e-8, 5.0, 1.0, true, 1.0},
    {"rsl_rl", ScaleForm::std_plus_eps, 1e-2, kInf, 0.0, false, 1.0},
    {"decaying_prior", ScaleForm::sqrt_var_plus_eps, 1e-3, 3.0, 2.5, true, 0.95},
    // Uncentred maps (Options::center false): SB3's reward (x / sqrt(var + 1e-8),
    // clip 10, its return statistics' prior) and rl_games' norm_only (no bound).
    {"sb3_reward", ScaleForm::sqrt_var_plus_eps, 1e-8, 10.0, 1e-4, false, 1.0, false},
    {"rl_games_norm_only", ScaleForm::sqrt_var_plus_eps, 1e-5, kInf, 1.0, false, 1.0, false},
};

using Param = std::tuple<Backend, int /*anchor*/, bool /*pooled*/>;
class AnchorOptions : public ::testing::TestWithParam<Param> {
 protected:
  Backend backend() const { return std::get<0>(GetParam()); }
  const Anchor& anchor() const { return kAnchors[std::get<1>(GetParam())]; }
  bool pooled() const { return std::get<2>(GetParam()); }
  vecnorm::Options opts() const {
    const Anchor& a = anchor();
    vecnorm::Options o = vntest::options_for(backend());
    o.estimator = vecnorm::Estimator::stable;
    o.stats_dtype = DType::float64;
    o.reduce_batch_dims = pooled();
    o.scale = a.scale;
    o.eps = a.eps;
    o.clip = a.clip;
    o.prior_count = a.prior;
    o.unbiased = a.unbiased;
    o.decay = a.decay;
    o.center = a.center;
    return o;
  }
};

constexpr std::int64_t kB = 16, kF = 5;

/// Step t's batch: features of very different location and spread, and at
/// step 30 one outlier far enough out to be clipped (a single sample among N
/// normalizes to about sqrt(N - 1): 22 here).
std::vector<double> batch(int t) {
  std::mt19937_64 rng(77u + static_cast<unsigned>(t));
  const double loc[kF] = {3.0, -200.0, 0.0, 1e3, 0.5};
  const double sd[kF] = {2.0, 15.0, 1e-3, 40.0, 0.5};
  std::normal_distribution<double> z(0.0, 1.0);
  std::vector<double> v(static_cast<std::size_t>(kB * kF));
  for (std::int64_t r = 0; r < kB; ++r)
    for (std::int64_t f = 0; f < kF; ++f) {
      double x = loc[f] + sd[f] * z(rng);
      if (t == 30 && r == 3 && f == 0) x += 1e4 * sd[f];  // the outlier
      v[static_cast<std::size_t>(r * kF + f)] = static_cast<double>(static_cast<float>(x));  // float32 inputs
    }
  return v;
}

std::vector<double> values_of(const std::vector<std::uint8_t>& bytes) {
  return vntest::decode(DType::float64, vntest::as_bytes(bytes));
}

TEST_P(AnchorOptions, StatisticsAndOutputsFollowTheReference) {
  const Anchor& a = anchor();
  const vecnorm::Options o = opts();
  vecnorm::VecNorm vn(o, {Shape{kB}, {{"obs", Shape{kF}, DType::float32}}});
  const std::size_t numel = pooled() ? kF : kB * kF;
  Reference ref(numel, a.decay, a.prior, a.unbiased);
  std::int64_t clipped = 0;
  for (int t = 0; t < 40; ++t) {
    const std::vector<double> x = batch(t);
    auto xb = DeviceBuffer::from_values(backend(), DType::float32, Shape{kB, kF}, x);
    DeviceBuffer yb(backend(), DType::float32, Shape{kB, kF});
    vn.step({{"obs", xb.cview(), yb.view()}});
    if (pooled())
      ref.update(x, kB);
    else
      ref.update(x, 1);
    const std::string at = std::string(a.name) + " step " + std::to_string(t);
    // Statistics (float64): Chan's merge in another order, within rounding.
    const vecnorm::State st = vn.export_state();
    const auto loc = values_of(st.keys[0].loc), var = values_of(st.keys[0].var);
    ASSERT_EQ(loc.size(), numel);
    for (std::size_t i = 0; i < numel; ++i) {
      const double spread = std::sqrt(ref.var[i]) + std::abs(ref.mean[i]);
      EXPECT_NEAR(loc[i], ref.mean[i], 1e-12 * spread) << at << " loc[" << i << "]";
      EXPECT_NEAR(var[i], ref.var[i], 1e-11 * (ref.var[i] + ref.mean[i] * ref.mean[i])) << at << " var[" << i << "]";
    }
    // Outputs (float32): the scale form and the bound.
    const std::vector<double> y = yb.values();
    for (std::int64_t r = 0; r < kB; ++r)
      for (std::int64_t f = 0; f < kF; ++f) {
        const std::size_t j = static_cast<std::size_t>(r * kF + f);
        const std::size_t s = pooled() ? static_cast<std::size_t>(f) : j;
        const double want = normalized(a.scale, x[j], ref.mean[s], ref.var[s], a.eps, a.clip, a.center);
        EXPECT_NEAR(y[j], want, 4e-6 * std::max(1.0, std::abs(want))) << at << " y[" << r << "," << f << "]";
        if (std::abs(want) == a.clip) ++clipped;
      }
  }
  // The bound was reached where there is one (the outliers).
  if (a.clip < kInf && pooled()) {
    EXPECT_GT(clipped, 0) << a.name;
  }
}

TEST_P(AnchorOptions, NormalizeToAffineAndDenormalizeAgree) {
  const Anchor& a = anchor();
  vecnorm::VecNorm vn(opts(), {Shape{kB}, {{"obs", Shape{kF}, DType::float32}}});
  for (int t = 0; t < 5; ++t) {
    auto xb = DeviceBuffer::from_values(backend(), DType::float32, Shape{kB, kF}, batch(t));
    DeviceBuffer yb(backend(), DType::float32, Shape{kB, kF});
    vn.update({{"obs", xb.cview(), yb.view()}});
  }
  const std::vector<double> x = batch(99);
  auto xb = DeviceBuffer::from_values(backend(), DType::float32, Shape{kB, kF}, x);
  DeviceBuffer y1(backend(), DType::float32, Shape{kB, kF}), y2(backend(), DType::float32, Shape{kB, kF}),
      back(backend(), DType::float32, Shape{kB, kF});
  vn.normalize({{"obs", xb.cview(), y1.view()}});
  const vecnorm::AffineNormalizer affine = vn.to_affine();
  affine.apply({{"obs", xb.cview(), y2.view()}});
  EXPECT_EQ(y1.values(), y2.values()) << a.name << ": to_affine() applies the same map and bound";
  // The read-outs: scale() follows the form; loc() is the mean the map
  // subtracts (the stable estimator stores it), 0 for an uncentred map.
  const vecnorm::State st = vn.export_state();
  const auto var = values_of(st.keys[0].var), stored_loc = values_of(st.keys[0].loc);
  const std::vector<double> loc = vn.loc("obs");
  for (std::size_t i = 0; i < loc.size(); ++i)
    EXPECT_EQ(loc[i], a.center ? stored_loc[i] : 0.0) << a.name << " loc[" << i << "]";
  const std::vector<double> scale = vn.scale("obs");
  for (std::size_t i = 0; i < var.size(); ++i)
    EXPECT_NEAR(scale[i], scale_of(a.scale, var[i], a.eps), 1e-6 * scale[i]) << a.name << " scale[" << i << "]";
  // Denormalize inverts the map (not the bound): values inside it come back.
  vn.denormalize({{"obs", y1.cview(), back.view()}});
  const std::vector<double> y = y1.values(), xr = back.values();
  for (std::size_t j = 0; j < x.size(); ++j) {
    if (std::abs(y[j]) < a.clip) {
      EXPECT_NEAR(xr[j], x[j], 1e-4 * std::max(1.0, std::abs(x[j]))) << a.name << " x[" << j << "]";
    }
  }
}

TEST_P(AnchorOptions, CheckpointKeepsTheOptions) {
  const vecnorm::Options o = opts();
  vecnorm::VecNorm vn(o, {Shape{kB}, {{"obs", Shape{kF}, DType::float32}}});
  auto xb = DeviceBuffer::from_values(backend(), DType::float32, Shape{kB, kF}, batch(0));
  DeviceBuffer yb(backend(), DType::float32, Shape{kB, kF});
  vn.step({{"obs", xb.cview(), yb.view()}});
  const std::vector<std::uint8_t> bytes = vecnorm::encode_state(vn.export_state());
  const std::uint32_t version = static_cast<std::uint32_t>(bytes[8]) | static_cast<std::uint32_t>(bytes[9]) << 8;
  EXPECT_EQ(version, o.center ? 3u : 5u) << "options past format 2 need format 3, center false format 5";
  const vecnorm::State back = vecnorm::decode_state(bytes);
  EXPECT_EQ(back.options.scale, o.scale);
  EXPECT_EQ(back.options.clip, o.clip);
  EXPECT_EQ(back.options.prior_count, o.prior_count);
  EXPECT_EQ(back.options.unbiased, o.unbiased);
  EXPECT_EQ(back.options.center, o.center);
  // An unconfigured normalizer adopts them; one configured otherwise says which differs.
  vecnorm::Options fresh = vntest::options_for(backend());
  vecnorm::VecNorm adopted(fresh);
  adopted.import_state(back);
  DeviceBuffer y1(backend(), DType::float32, Shape{kB, kF}), y2(backend(), DType::float32, Shape{kB, kF});
  auto x2 = DeviceBuffer::from_values(backend(), DType::float32, Shape{kB, kF}, batch(1));
  vn.step({{"obs", x2.cview(), y1.view()}});
  adopted.step({{"obs", x2.cview(), y2.view()}});
  EXPECT_EQ(y1.values(), y2.values());
  EXPECT_EQ(vn.export_state().keys[0].var, adopted.export_state().keys[0].var);
}

// Before the first update (count 0) a normalizer with a prior normalizes
// with the prior's map, mean 0 and variance 1 (SB3, rl_games and skrl
// normalize with their initial state); one without refuses by name.
TEST_P(AnchorOptions, BeforeTheFirstUpdateNormalizesWithThePriorOrRefuses) {
  const Anchor& a = anchor();
  vecnorm::VecNorm vn(opts(), {Shape{kB}, {{"obs", Shape{kF}, DType::float32}}});
  const std::vector<double> x = batch(7);
  auto xb = DeviceBuffer::from_values(backend(), DType::float32, Shape{kB, kF}, x);
  DeviceBuffer yb(backend(), DType::float32, Shape{kB, kF}), y2(backend(), DType::float32, Shape{kB, kF}),
      back(backend(), DType::float32, Shape{kB, kF});
  if (a.prior == 0.0) {
    const std::string e = vntest::message_of([&] { vn.normalize({{"obs", xb.cview(), yb.view()}}); },
                                             ErrorCode::zero_count);
    EXPECT_NE(e.find("key 'obs': cannot normalize: expected count > 0, got 0"), std::string::npos) << e;
    EXPECT_THROW(vn.to_affine(), vecnorm::Error) << a.name;
    return;
  }
  vn.normalize({{"obs", xb.cview(), yb.view()}});
  const std::vector<double> y = yb.values();
  for (std::size_t j = 0; j < x.size(); ++j) {
    const double want = normalized(a.scale, x[j], 0.0, 1.0, a.eps, a.clip, a.center);
    EXPECT_NEAR(y[j], want, 4e-6 * std::max(1.0, std::abs(want))) << a.name << " y[" << j << "]";
  }
  for (const double l : vn.loc("obs")) EXPECT_EQ(l, 0.0) << a.name;
  for (const double sc : vn.scale("obs")) EXPECT_NEAR(sc, scale_of(a.scale, 1.0, a.eps), 1e-15) << a.name;
  vn.to_affine().apply({{"obs", xb.cview(), y2.view()}});
  EXPECT_EQ(y2.values(), y) << a.name << ": to_affine() applies the same map";
  vn.denormalize({{"obs", yb.cview(), back.view()}});
  const std::vector<double> xr = back.values();
  for (std::size_t j = 0; j < x.size(); ++j) {
    if (std::abs(y[j]) < a.clip) EXPECT_NEAR(xr[j], x[j], 1e-4 * std::max(1.0, std::abs(x[j]))) << a.name;
  }
  EXPECT_EQ(vn.count("obs"), 0);
}

INSTANTIATE_TEST_SUITE_P(All, AnchorOptions,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Range(0, static_cast<int>(std::size(kAnchors))),
                                            ::testing::Bool()),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::string(vntest::backend_name(std::get<0>(info.param))) + "_" +
                                  kAnchors[std::get<1>(info.param)].name +
                                  (std::get<2>(info.param) ? "_pooled" : "_per_element");
                         });

// A prior of weight 2^-60 (the brax and rsl_rl presets: their initial state
// is mean 0 and std 1, weighted 0 by their first update) gives the prior's map
// before the first update and vanishes at it: every later statistic and
// output has the bits of a normalizer without a prior. Both layouts, the
// external per-element counts (stateless) too, each backend.
TEST(AnchorPrior, ANegligiblePriorVanishesAtTheFirstUpdateBitForBit) {
  for (const Backend backend : vntest::test_backends()) {
    for (const bool pooled : {false, true}) {
      const std::string at = std::string(vntest::backend_name(backend)) + (pooled ? " pooled" : " per-element");
      vecnorm::Options o = vntest::options_for(backend);
      o.estimator = vecnorm::Estimator::stable;
      o.decay = 1.0;
      o.scale = ScaleForm::std_plus_eps;
      o.eps = 1e-2;
      o.reduce_batch_dims = pooled;
      const vecnorm::KeyTable table{Shape{kB}, {{"obs", Shape{kF}, DType::float32}}};
      vecnorm::VecNorm plain(o, table);
      o.prior_count = std::ldexp(1.0, -60);
      vecnorm::VecNorm prior(o, table);
      const std::vector<double> x0 = batch(0);
      auto x0b = DeviceBuffer::from_values(backend, DType::float32, Shape{kB, kF}, x0);
      DeviceBuffer y0(backend, DType::float32, Shape{kB, kF});
      prior.normalize({{"obs", x0b.cview(), y0.view()}});  // rsl_rl's initial map: x / (1 + eps)
      const std::vector<double> y0v = y0.values();
      for (std::size_t j = 0; j < x0.size(); ++j)
        EXPECT_NEAR(y0v[j], x0[j] / 1.01, 4e-7 * std::max(1.0, std::abs(x0[j]))) << at << " y[" << j << "]";
      EXPECT_THROW(plain.normalize({{"obs", x0b.cview(), y0.view()}}), vecnorm::Error) << at;
      // Stateless: the prior's map for elements of count 0.
      if (!pooled) {
        DeviceBuffer loc(backend, DType::float32, Shape{kB, kF}), var(backend, DType::float32, Shape{kB, kF}),
            count(backend, DType::int64, Shape{kB, kF}), ys(backend, DType::float32, Shape{kB, kF});
        const vecnorm::StatsView st{loc.view(), var.view(), count.view()};
        vecnorm::stateless::step(o, table, {{"obs", x0b.cview(), ys.view(), {st.loc, st.var, st.count}, {}}},
                                 vecnorm::Op::normalize);
        EXPECT_EQ(ys.values(), y0v) << at << ": stateless at count 0";
      }
      for (int t = 0; t < 6; ++t) {
        auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{kB, kF}, batch(t));
        DeviceBuffer ya(backend, DType::float32, Shape{kB, kF}), yb(backend, DType::float32, Shape{kB, kF});
        plain.step({{"obs", xb.cview(), ya.view()}});
        prior.step({{"obs", xb.cview(), yb.view()}});
        EXPECT_EQ(ya.values(), yb.values()) << at << " step " << t;
        EXPECT_EQ(plain.export_state().keys[0].loc, prior.export_state().keys[0].loc) << at << " step " << t;
        EXPECT_EQ(plain.export_state().keys[0].var, prior.export_state().keys[0].var) << at << " step " << t;
      }
    }
  }
}

// Defaults write format 2 (readable by a vecnorm that knows no more); the
// clamp form with no bound and no prior is TorchRL's.
TEST(AnchorOptionsFormat, DefaultOptionsStillWriteFormat2) {
  vecnorm::VecNorm vn(vecnorm::Options{}, {Shape{2}, {{"obs", Shape{3}, DType::float32}}});
  const std::vector<std::uint8_t> bytes = vecnorm::encode_state(vn.export_state());
  EXPECT_EQ(bytes[8], 2u);
}

TEST(AnchorOptionsValidation, NamesTheOptionAndTheValue) {
  auto message = [](const vecnorm::Options& o) {
    try {
      o.validate();
    } catch (const vecnorm::Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_option);
      return std::string(e.what());
    }
    return std::string("no error");
  };
  vecnorm::Options o;
  o.prior_count = 1.0;  // estimator torchrl
  EXPECT_NE(message(o).find("prior_count: expected 0 with estimator torchrl"), std::string::npos) << message(o);
  o.estimator = vecnorm::Estimator::stable;
  o.prior_count = -1.0;
  EXPECT_NE(message(o).find("prior_count: expected a finite prior_count >= 0, got -1"), std::string::npos)
      << message(o);
  o.prior_count = 0.0;
  o.clip = 0.0;
  EXPECT_NE(message(o).find("clip: expected clip > 0"), std::string::npos) << message(o);
  o.clip = std::numeric_limits<double>::quiet_NaN();
  EXPECT_NE(message(o).find("option clip"), std::string::npos) << message(o);
  o.clip = 5.0;
  o.scale = static_cast<ScaleForm>(7);
  EXPECT_NE(message(o).find("option scale: expected clamp, sqrt_var_plus_eps or std_plus_eps, got value 7"),
            std::string::npos)
      << message(o);
}

}  // namespace
