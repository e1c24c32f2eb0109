// tests/core/semantics_test.cpp -- the reference implementation's own checks
// (stateful == stateless, a long rollout normalizes, to_affine reproduces a
// frozen step, copies share nothing) plus freeze, denormalize and in-place use.
#include <gtest/gtest.h>

#include <cmath>
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
using vntest::Call;
using vntest::DeviceBuffer;

std::string pname(Backend b, Estimator e) {
  return std::string(vntest::backend_name(b)) + "_" + vntest::estimator_name(e);
}

using BE = std::tuple<Backend, Estimator>;
class Semantics : public ::testing::TestWithParam<BE> {
 protected:
  Backend backend() const { return std::get<0>(GetParam()); }
  Estimator estimator() const { return std::get<1>(GetParam()); }
  vecnorm::Options opts(double decay, DType stats = DType::float32, bool pooled = false) const {
    vecnorm::Options o = vntest::options_for(backend());
    o.decay = decay;
    o.estimator = estimator();
    o.stats_dtype = stats;
    o.reduce_batch_dims = pooled;
    return o;
  }
};

// Stateful per-element and stateless run the same step function: for the same
// data their outputs are identical, bit for bit (and so are the statistics).
TEST_P(Semantics, StatefulPerElementEqualsStateless) {
  for (DType dtype : {DType::float32, DType::float16, DType::int32, DType::float64})
    for (double decay : {1.0, 0.9, 0.9999})
      for (DType stats : {DType::float32, DType::float64}) {
        const std::string where = std::string("in ") + vntest::short_name(dtype) + " d=" + vntest::decay_name(decay) +
                                  " stats " + vntest::short_name(stats);
        const Shape batch{6}, feature{3}, shape{6, 3};
        const vecnorm::KeyTable table{batch, {{"obs", feature, dtype}}};
        const vecnorm::Options o = opts(decay, stats);
        vecnorm::VecNorm vn(o, table);
        DeviceBuffer loc(backend(), stats, shape), var(backend(), stats, shape), count(backend(), DType::int64, shape);
        std::mt19937_64 rng(static_cast<std::uint64_t>(dtype) * 7 + static_cast<std::uint64_t>(decay * 10));
        const auto dist = vntest::random_distribution(rng, 3);
        const DType out = vecnorm::output_dtype(dtype);
        for (int step = 1; step <= 10; ++step) {
          const auto x = vntest::random_values(rng, dtype, 6, 3, dist);
          const auto y_stateful = vntest::call_one(Call::step, vn, backend(), "obs", dtype, shape, x);
          auto xb = DeviceBuffer::from_values(backend(), dtype, shape, x);
          DeviceBuffer yb(backend(), out, shape);
          vecnorm::StatelessItem item{"obs", xb.cview(), yb.view(), {loc.cview(), var.cview(), count.cview()},
                                      {loc.view(), var.view(), count.view()}};
          vecnorm::stateless::step(o, table, {item});
          ASSERT_TRUE(vntest::BitEqual(where + " step " + std::to_string(step) + ": y stateful vs stateless", out,
                                       y_stateful, yb.bytes()));
          ASSERT_TRUE(vntest::AllEqual(where + ": stateless counts", std::vector<double>(18, step), count.values()));
        }
        const vecnorm::State st = vn.export_state();
        EXPECT_TRUE(vntest::BitEqual(where + ": loc stateful vs stateless", stats, vntest::as_bytes(st.keys[0].loc),
                                     loc.bytes()));
        EXPECT_TRUE(vntest::BitEqual(where + ": var stateful vs stateless", stats, vntest::as_bytes(st.keys[0].var),
                                     var.bytes()));
      }
}

// A long rollout with decay 0.9 normalizes features of very different scales:
// over the last 200 steps every feature of the output has |mean| < 0.2 and
// |std - 1| < 0.2. The outputs also agree with the reference step by step.
TEST_P(Semantics, RolloutNormalizesEveryFeature) {
  // mean / std per feature; |mean| / std <= 200 so that torchrl's var - loc^2
  // keeps enough digits in float32 (the extreme case is numerics' business).
  const std::vector<double> mu = {-100.0, 0.001, 50.0, 1000.0, -7.0};
  const std::vector<double> sigma = {5.0, 0.01, 2.0, 200.0, 0.5};
  const std::int64_t B = 8, F = 5;
  for (bool pooled : {false, true}) {
    const vecnorm::Options o = opts(0.9, DType::float32, pooled);
    vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{B}, {{"obs", Shape{F}, DType::float32}}});
    vnref::StatefulKey ref({vntest::to_ref(estimator()), 0.9, o.eps}, pooled, F, B);
    std::mt19937_64 rng(pooled ? 5 : 6);
    std::normal_distribution<double> z;
    std::vector<std::vector<double>> outputs(F);
    for (int step = 1; step <= 300; ++step) {
      std::vector<double> x(B * F);
      for (std::int64_t i = 0; i < B * F; ++i) x[i] = static_cast<float>(mu[i % F] + sigma[i % F] * z(rng));
      const auto y = vntest::decode(DType::float32, vntest::call_one(Call::step, vn, backend(), "obs", DType::float32,
                                                                      Shape{B, F}, x));
      ref.update(x, B);
      // Rounding errors do not accumulate at decay 0.9: rtol of a few steps.
      const double rtol = vntest::rtol_for(DType::float32, 10);
      ASSERT_TRUE(vntest::AllClose(std::string(pooled ? "pooled" : "per-element") + " step " + std::to_string(step) +
                                       ": y vs reference",
                                   ref.normalize(x, B), y,
                                   vntest::y_tolerances(ref.readouts(), pooled, F, x, rtol, o.eps, DType::float32)));
      if (step > 100)
        for (std::int64_t i = 0; i < B * F; ++i) outputs[i % F].push_back(y[i]);
    }
    for (std::int64_t f = 0; f < F; ++f) {
      double mean, sd;
      vnref::mean_std(outputs[f], mean, sd);
      EXPECT_LT(std::fabs(mean), 0.2) << (pooled ? "pooled" : "per-element") << " feature " << f << " (mean " << mu[f]
                                      << ", std " << sigma[f] << "): normalized mean " << mean;
      EXPECT_LT(std::fabs(sd - 1.0), 0.2) << (pooled ? "pooled" : "per-element") << " feature " << f << " (mean "
                                          << mu[f] << ", std " << sigma[f] << "): normalized std " << sd;
    }
  }
}

// to_affine() copies loc and scale: applying it gives a frozen step's output bit
// for bit, for every key, and later updates of the normalizer do not reach it.
TEST_P(Semantics, ToAffineReproducesAFrozenStep) {
  for (DType dtype : {DType::float32, DType::float16, DType::bfloat16, DType::int64, DType::float64})
    for (bool pooled : {false, true}) {
      const std::string where = std::string("in ") + vntest::short_name(dtype) + (pooled ? " pooled" : " per-element");
      const Shape batch{4}, obs_shape{4, 3}, rew_shape{4};
      vecnorm::VecNorm vn(opts(0.99, DType::float32, pooled),
                          vecnorm::KeyTable{batch, {{"obs", Shape{3}, dtype}, {"reward", Shape{}, DType::float32}}});
      std::mt19937_64 rng(17);
      const auto dist = vntest::random_distribution(rng, 3);
      const auto rdist = vntest::random_distribution(rng, 1);
      for (int step = 0; step < 5; ++step) {
        const auto x = vntest::random_values(rng, dtype, 4, 3, dist);
        const auto r = vntest::random_values(rng, DType::float32, 4, 1, rdist);
        auto xb = DeviceBuffer::from_values(backend(), dtype, obs_shape, x);
        auto rb = DeviceBuffer::from_values(backend(), DType::float32, rew_shape, r);
        DeviceBuffer yb(backend(), vecnorm::output_dtype(dtype), obs_shape), ryb(backend(), DType::float32, rew_shape);
        vn.step({{"obs", xb.cview(), yb.view()}, {"reward", rb.cview(), ryb.view()}});
      }
      const auto affine = vn.to_affine();
      EXPECT_EQ(affine.key_table(), vn.key_table()) << where;
      EXPECT_TRUE(vntest::AllEqual(where + ": affine loc(obs)", vn.loc("obs"), affine.loc("obs")));
      EXPECT_TRUE(vntest::AllEqual(where + ": affine scale(obs)", vn.scale("obs"), affine.scale("obs")));
      EXPECT_TRUE(vntest::AllEqual(where + ": affine loc(reward)", vn.loc("reward"), affine.loc("reward")));
      EXPECT_EQ(affine.stats_shape("obs"), vn.stats_shape("obs")) << where;
      const auto loc_before = vn.loc("obs");
      const auto scale_before = vn.scale("obs");
      vn.freeze();
      for (int trial = 0; trial < 3; ++trial) {
        const auto x = vntest::random_values(rng, dtype, 4, 3, dist);
        const auto frozen = vntest::call_one(Call::step, vn, backend(), "obs", dtype, obs_shape, x);
        const auto normalized = vntest::call_one(Call::normalize, vn, backend(), "obs", dtype, obs_shape, x);
        const auto applied = vntest::call_one(Call::affine_apply, nullptr, &affine, backend(), "obs", dtype, obs_shape, x);
        ASSERT_TRUE(vntest::BitEqual(where + ": affine apply vs frozen step", vecnorm::output_dtype(dtype), frozen,
                                     applied));
        ASSERT_TRUE(vntest::BitEqual(where + ": frozen step vs normalize", vecnorm::output_dtype(dtype), frozen,
                                     normalized));
        const auto r = vntest::random_values(rng, DType::float32, 4, 1, rdist);
        ASSERT_TRUE(vntest::BitEqual(
            where + ": affine apply vs frozen step (reward)", DType::float32,
            vntest::call_one(Call::step, vn, backend(), "reward", DType::float32, rew_shape, r),
            vntest::call_one(Call::affine_apply, nullptr, &affine, backend(), "reward", DType::float32, rew_shape, r)));
      }
      // The normalizer moves on; the affine copy does not.
      vn.unfreeze();
      for (int step = 0; step < 3; ++step)
        vntest::call_one(Call::step, vn, backend(), "obs", dtype, obs_shape,
                         vntest::random_values(rng, dtype, 4, 3, dist));
      EXPECT_TRUE(vntest::AllEqual(where + ": affine loc after the normalizer moved", loc_before, affine.loc("obs")));
      EXPECT_TRUE(vntest::AllEqual(where + ": affine scale after the normalizer moved", scale_before,
                                   affine.scale("obs")));
      // invert is the inverse map: x -> apply -> invert ~ x.
      if (vecnorm::is_floating(dtype) && dtype != DType::bfloat16 && dtype != DType::float16) {
        const auto x = vntest::random_values(rng, dtype, 4, 3, dist);
        const auto y = vntest::decode(dtype, vntest::call_one(Call::affine_apply, nullptr, &affine, backend(), "obs",
                                                              dtype, obs_shape, x));
        const auto back = vntest::decode(
            dtype, vntest::call_one(Call::affine_invert, nullptr, &affine, backend(), "obs", dtype, obs_shape, y));
        std::vector<double> tol(x.size());
        for (std::size_t i = 0; i < x.size(); ++i)
          tol[i] = 1e-5 * (std::fabs(x[i]) + std::fabs(loc_before[pooled ? i % 3 : i]) + scale_before[pooled ? i % 3 : i]);
        EXPECT_TRUE(vntest::AllClose(where + ": invert(apply(x))", x, back, tol));
      }
    }
}

TEST_P(Semantics, ToAffineBeforeAnyUpdateIsZeroCountError) {
  vecnorm::VecNorm vn(opts(0.99), vecnorm::KeyTable{Shape{2}, {{"obs", Shape{3}, DType::float32}}});
  try {
    (void)vn.to_affine();
    FAIL() << "to_affine() before any update must throw Error(zero_count)";
  } catch (const vecnorm::Error& e) {
    EXPECT_EQ(e.code(), vecnorm::ErrorCode::zero_count) << e.what();
    EXPECT_NE(std::string(e.what()).find("obs"), std::string::npos) << "message must name the key: " << e.what();
  }
}

// frozen_copy() and clone() share nothing with the original.
TEST_P(Semantics, CopiesAreIndependent) {
  const Shape shape{3, 2};
  for (bool pooled : {false, true}) {
    vecnorm::VecNorm a(opts(0.95, DType::float64, pooled), vecnorm::KeyTable{Shape{3}, {{"obs", Shape{2}, DType::float32}}});
    std::mt19937_64 rng(3);
    const auto dist = vntest::random_distribution(rng, 2);
    auto data = [&] { return vntest::random_values(rng, DType::float32, 3, 2, dist); };
    for (int i = 0; i < 4; ++i) vntest::call_one(Call::step, a, backend(), "obs", DType::float32, shape, data());
    const auto loc0 = a.loc("obs"), scale0 = a.scale("obs");
    const auto count0 = a.count("obs");

    vecnorm::VecNorm frozen = a.frozen_copy();
    vecnorm::VecNorm cloned = a.clone();
    EXPECT_TRUE(frozen.is_frozen());
    EXPECT_FALSE(cloned.is_frozen());
    EXPECT_FALSE(a.is_frozen());
    EXPECT_TRUE(vntest::AllEqual("clone loc", loc0, cloned.loc("obs")));
    EXPECT_TRUE(vntest::AllEqual("frozen_copy scale", scale0, frozen.scale("obs")));

    // Stepping the original moves neither copy.
    for (int i = 0; i < 3; ++i) vntest::call_one(Call::step, a, backend(), "obs", DType::float32, shape, data());
    EXPECT_EQ(a.count("obs"), count0 + (pooled ? 9 : 3));
    EXPECT_EQ(cloned.count("obs"), count0);
    EXPECT_EQ(frozen.count("obs"), count0);
    EXPECT_TRUE(vntest::AllEqual("clone loc after the original stepped", loc0, cloned.loc("obs")));
    EXPECT_TRUE(vntest::AllEqual("frozen_copy loc after the original stepped", loc0, frozen.loc("obs")));
    EXPECT_TRUE(vntest::AllEqual("frozen_copy scale after the original stepped", scale0, frozen.scale("obs")));
    const auto loc_a = a.loc("obs");

    // Stepping the clone does not move the original; stepping the frozen copy moves nothing.
    for (int i = 0; i < 2; ++i) vntest::call_one(Call::step, cloned, backend(), "obs", DType::float32, shape, data());
    vntest::call_one(Call::step, frozen, backend(), "obs", DType::float32, shape, data());
    EXPECT_EQ(cloned.count("obs"), count0 + (pooled ? 6 : 2));
    EXPECT_EQ(frozen.count("obs"), count0);
    EXPECT_TRUE(vntest::AllEqual("frozen_copy loc after its own step", loc0, frozen.loc("obs")));
    EXPECT_TRUE(vntest::AllEqual("original loc after the clone stepped", loc_a, a.loc("obs")));
    EXPECT_EQ(a.count("obs"), count0 + (pooled ? 9 : 3));

    // clone() keeps the frozen flag; unfreezing a copy leaves the original frozen.
    a.freeze();
    vecnorm::VecNorm frozen_clone = a.clone();
    EXPECT_TRUE(frozen_clone.is_frozen());
    frozen_clone.unfreeze();
    EXPECT_TRUE(a.is_frozen());
    vntest::call_one(Call::step, frozen_clone, backend(), "obs", DType::float32, shape, data());
    EXPECT_EQ(frozen_clone.count("obs"), a.count("obs") + (pooled ? 3 : 1));
    // A moved-from-free check of the options: copies keep them.
    EXPECT_EQ(cloned.options().decay, 0.95);
    EXPECT_EQ(frozen.options().estimator, estimator());
  }
}

// A frozen normalizer normalizes with the statistics it has and never updates.
TEST_P(Semantics, FrozenStepsNormalizeWithoutUpdating) {
  for (bool pooled : {false, true}) {
    const vecnorm::Options o = opts(0.9, DType::float64, pooled);
    vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{5}, {{"obs", Shape{2}, DType::float64}}});
    vnref::StatefulKey ref({vntest::to_ref(estimator()), 0.9, o.eps}, pooled, 2, 5);
    std::mt19937_64 rng(23);
    const auto dist = vntest::random_distribution(rng, 2);
    for (int i = 0; i < 3; ++i) {
      const auto x = vntest::random_values(rng, DType::float64, 5, 2, dist);
      vntest::call_one(Call::step, vn, backend(), "obs", DType::float64, Shape{5, 2}, x);
      ref.update(x, 5);
    }
    vn.freeze();
    ASSERT_TRUE(vn.is_frozen());
    const auto state_before = vn.export_state();
    for (int i = 0; i < 3; ++i) {
      const auto x = vntest::random_values(rng, DType::float64, 5, 2, dist);
      const auto y = vntest::decode(DType::float64,
                                    vntest::call_one(Call::step, vn, backend(), "obs", DType::float64, Shape{5, 2}, x));
      vntest::call_one(Call::update, vn, backend(), "obs", DType::float64, Shape{5, 2}, x);
      EXPECT_TRUE(vntest::AllClose("frozen step y", ref.normalize(x, 5), y,
                                   vntest::y_tolerances(ref.readouts(), pooled, 2, x,
                                                        vntest::rtol_for(DType::float64, 4), o.eps, DType::float64)));
    }
    EXPECT_EQ(vn.count("obs"), ref.count());
    const auto state_after = vn.export_state();
    EXPECT_EQ(state_after.keys[0].loc, state_before.keys[0].loc) << "a frozen step changed loc";
    EXPECT_EQ(state_after.keys[0].var, state_before.keys[0].var) << "a frozen step changed var";
    vn.unfreeze();
    const auto x = vntest::random_values(rng, DType::float64, 5, 2, dist);
    vntest::call_one(Call::step, vn, backend(), "obs", DType::float64, Shape{5, 2}, x);
    ref.update(x, 5);
    EXPECT_EQ(vn.count("obs"), ref.count());
  }
}

// denormalize is the inverse: y * scale + mu.
TEST_P(Semantics, DenormalizeInvertsNormalize) {
  for (DType dtype : {DType::float32, DType::float64, DType::float16, DType::int32})
    for (bool pooled : {false, true}) {
      const DType out = vecnorm::output_dtype(dtype);
      const vecnorm::Options o = opts(0.9999, DType::float64, pooled);
      vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{3}, {{"obs", Shape{4}, dtype}}});
      vnref::StatefulKey ref({vntest::to_ref(estimator()), 0.9999, o.eps}, pooled, 4, 3);
      std::mt19937_64 rng(29);
      const auto dist = vntest::random_distribution(rng, 4);
      for (int i = 0; i < 4; ++i) {
        const auto x = vntest::random_values(rng, dtype, 3, 4, dist);
        vntest::call_one(Call::step, vn, backend(), "obs", dtype, Shape{3, 4}, x);
        ref.update(vntest::computed_inputs(dtype, x), 3);
      }
      // Normalized values, exact in the output dtype.
      const auto y = vntest::random_values(rng, out, 3, 4, vntest::FeatureDistribution{{0, 0, 0, 0}, {1, 1, 1, 1}});
      const auto back = vntest::decode(out, vntest::call_one(Call::denormalize, vn, backend(), "obs", out, Shape{3, 4}, y));
      const auto expected = ref.denormalize(y, 3);
      const auto r = ref.readouts();
      std::vector<double> tol(y.size());
      for (std::size_t i = 0; i < y.size(); ++i) {
        const auto& ri = r[pooled ? i % 4 : i];
        const double rtol = vntest::rtol_for(DType::float64, 4);
        tol[i] = vntest::mu_tolerance(ri, rtol) + std::fabs(y[i]) * vntest::scale_tolerance(ri, rtol, o.eps) +
                 rtol * std::fabs(expected[i]) + 0.5 * vntest::ulp(out, expected[i]) * 1.01;
      }
      EXPECT_TRUE(vntest::AllClose(std::string("denormalize, in ") + vntest::short_name(dtype) +
                                       (pooled ? " pooled" : " per-element"),
                                   expected, back, tol));
    }
}

// y may alias x (same dtype): the in-place result equals the out-of-place one.
TEST_P(Semantics, InPlaceEqualsOutOfPlace) {
  for (DType dtype : {DType::float32, DType::float64, DType::float16, DType::bfloat16}) {
    const Shape shape{4, 3};
    vecnorm::VecNorm a(opts(0.9), vecnorm::KeyTable{Shape{4}, {{"obs", Shape{3}, dtype}}});
    vecnorm::VecNorm b(opts(0.9), vecnorm::KeyTable{Shape{4}, {{"obs", Shape{3}, dtype}}});
    std::mt19937_64 rng(31);
    const auto dist = vntest::random_distribution(rng, 3);
    for (int step = 0; step < 4; ++step) {
      const auto x = vntest::random_values(rng, dtype, 4, 3, dist);
      const auto separate = vntest::call_one(Call::step, a, backend(), "obs", dtype, shape, x);
      auto xb = DeviceBuffer::from_values(backend(), dtype, shape, x);
      b.step({{"obs", xb.cview(), xb.view()}});
      ASSERT_TRUE(vntest::BitEqual(std::string("in-place ") + vntest::short_name(dtype), dtype, separate, xb.bytes()));
    }
  }
}

// "Missing statistics start as zeros": null in-views (default-constructed, or
// null with the right dtype and shape) give the same bits as explicit zeros.
TEST_P(Semantics, MissingStatisticsReadAsZeros) {
  for (DType stats : {DType::float32, DType::float64}) {
    const Shape shape{3, 2};
    const vecnorm::KeyTable table{Shape{3}, {{"obs", Shape{2}, DType::float32}}};
    const vecnorm::Options o = opts(0.9, stats);
    const std::vector<double> x = {1.5, -2.0, 0.25, 3.0, -1.0, 2.5};
    auto run = [&](int variant) {
      auto xb = DeviceBuffer::from_values(backend(), DType::float32, shape, x);
      DeviceBuffer yb(backend(), DType::float32, shape);
      DeviceBuffer loc(backend(), stats, shape), var(backend(), stats, shape), count(backend(), DType::int64, shape);
      vecnorm::StatelessItem item{"obs", xb.cview(), yb.view(), {}, {loc.view(), var.view(), count.view()}};
      if (variant == 1) item.in = {loc.cview(), var.cview(), count.cview()};  // explicit zeros
      if (variant == 2) {
        const auto dev = vntest::device_of(backend());
        item.in.loc = vecnorm::ConstTensorView(nullptr, stats, shape, dev);
        item.in.var = vecnorm::ConstTensorView(nullptr, stats, shape, dev);
        item.in.count = vecnorm::ConstTensorView(nullptr, DType::int64, shape, dev);
      }
      vecnorm::stateless::step(o, table, {item});
      auto bytes = yb.bytes();
      const auto l = loc.bytes();
      bytes.insert(bytes.end(), l.begin(), l.end());
      return bytes;
    };
    const auto zeros = run(1);
    EXPECT_TRUE(vntest::BitEqual(std::string("null typed in-views, stats ") + vntest::short_name(stats), DType::float32,
                                 zeros, run(2)));
    EXPECT_TRUE(vntest::BitEqual(std::string("default in-views, stats ") + vntest::short_name(stats), DType::float32,
                                 zeros, run(0)));
  }
}

INSTANTIATE_TEST_SUITE_P(All, Semantics,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(Estimator::torchrl, Estimator::stable)),
                         [](const ::testing::TestParamInfo<BE>& info) {
                           return pname(std::get<0>(info.param), std::get<1>(info.param));
                         });

// Backend::automatic resolves to a real backend; cuda without a device is an error.
TEST(Backends, AutomaticResolvesAndUnavailableCudaIsAnError) {
  vecnorm::Options o;
  o.backend = Backend::automatic;
  vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{}, {{"obs", Shape{2}, DType::float32}}});
  EXPECT_EQ(vn.backend(), vecnorm::cuda_available() ? Backend::cuda : Backend::cpu);
  if (!vecnorm::cuda_available()) {
    o.backend = Backend::cuda;
    try {
      vecnorm::VecNorm bad(o, vecnorm::KeyTable{Shape{}, {{"obs", Shape{2}, DType::float32}}});
      FAIL() << "Backend::cuda without a usable device must throw Error(backend_unavailable)";
    } catch (const vecnorm::Error& e) {
      EXPECT_EQ(e.code(), vecnorm::ErrorCode::backend_unavailable) << e.what();
    }
  }
}

}  // namespace
