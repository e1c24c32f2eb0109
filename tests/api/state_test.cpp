// tests/api/state_test.cpp -- export_state / import_state: bit-for-bit round
// trips, adoption by an unconfigured normalizer, and mismatches that are
// rejected without touching the target.
#include <gtest/gtest.h>

#include <functional>
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

::testing::AssertionResult SameState(const vecnorm::State& a, const vecnorm::State& b) {
  if (!(a.table == b.table)) return ::testing::AssertionFailure() << "key tables differ";
  if (a.options.estimator != b.options.estimator || a.options.decay != b.options.decay ||
      a.options.eps != b.options.eps || a.options.reduce_batch_dims != b.options.reduce_batch_dims ||
      a.options.stats_dtype != b.options.stats_dtype)
    return ::testing::AssertionFailure() << "options differ";
  if (a.keys.size() != b.keys.size()) return ::testing::AssertionFailure() << "number of keys differs";
  for (std::size_t k = 0; k < a.keys.size(); ++k) {
    const auto& x = a.keys[k];
    const auto& y = b.keys[k];
    const std::string name = a.table.keys[k].name;
    if (x.stats_shape != y.stats_shape)
      return ::testing::AssertionFailure() << name << ": stats_shape " << x.stats_shape.str() << " vs "
                                           << y.stats_shape.str();
    if (x.count != y.count) return ::testing::AssertionFailure() << name << ": count " << x.count << " vs " << y.count;
    auto r = vntest::BitEqual(name + ": loc", *a.options.stats_dtype, vntest::as_bytes(x.loc), vntest::as_bytes(y.loc));
    if (!r) return r;
    r = vntest::BitEqual(name + ": var", *a.options.stats_dtype, vntest::as_bytes(x.var), vntest::as_bytes(y.var));
    if (!r) return r;
  }
  return ::testing::AssertionSuccess();
}

using Param = std::tuple<Backend, Estimator, bool /*pooled*/, DType /*stats*/>;
class StateTest : public ::testing::TestWithParam<Param> {
 protected:
  Backend backend() const { return std::get<0>(GetParam()); }
  vecnorm::Options opts() const {
    vecnorm::Options o = vntest::options_for(backend());
    o.estimator = std::get<1>(GetParam());
    o.reduce_batch_dims = std::get<2>(GetParam());
    o.stats_dtype = std::get<3>(GetParam());
    o.decay = 0.95;
    o.eps = 1e-3;
    return o;
  }
  static vecnorm::KeyTable table() {
    return vecnorm::KeyTable{Shape{3}, {{"obs", Shape{2}, DType::float32}, {"reward", Shape{}, DType::float16}}};
  }
  // One step of both keys with data from rng; returns the outputs' bytes.
  std::vector<std::vector<std::byte>> step(vecnorm::VecNorm& vn, std::mt19937_64& rng) const {
    const auto obs = vntest::random_values(rng, DType::float32, 3, 2, vntest::FeatureDistribution{{1, -2}, {2, 0.5}});
    const auto rew = vntest::random_values(rng, DType::float16, 3, 1, vntest::FeatureDistribution{{0.5}, {1}});
    auto xb = vntest::DeviceBuffer::from_values(backend(), DType::float32, Shape{3, 2}, obs);
    auto rb = vntest::DeviceBuffer::from_values(backend(), DType::float16, Shape{3}, rew);
    vntest::DeviceBuffer yb(backend(), DType::float32, Shape{3, 2}), ryb(backend(), DType::float16, Shape{3});
    vn.step({{"obs", xb.cview(), yb.view()}, {"reward", rb.cview(), ryb.view()}});
    return {yb.bytes(), ryb.bytes()};
  }
};

TEST_P(StateTest, RoundTripIsBitExact) {
  std::mt19937_64 rng(1);
  vecnorm::VecNorm a(opts(), table());
  for (int i = 0; i < 5; ++i) step(a, rng);
  const vecnorm::State s = a.export_state();
  EXPECT_NO_THROW(s.validate());
  EXPECT_EQ(s.table, table());
  ASSERT_EQ(s.keys.size(), 2u);
  EXPECT_EQ(s.keys[0].count, a.count("obs"));
  EXPECT_EQ(s.keys[0].stats_shape, a.stats_shape("obs"));
  EXPECT_EQ(s.keys[0].loc.size(), static_cast<std::size_t>(a.stats_shape("obs").numel()) *
                                      vecnorm::dtype_size(*opts().stats_dtype));

  vecnorm::VecNorm b(opts(), table());
  b.import_state(s);
  EXPECT_TRUE(SameState(s, b.export_state()));
  EXPECT_TRUE(vntest::AllEqual("loc after import", a.loc("obs"), b.loc("obs")));
  EXPECT_TRUE(vntest::AllEqual("scale after import", a.scale("reward"), b.scale("reward")));
  EXPECT_EQ(a.count("reward"), b.count("reward"));

  // Both go on identically.
  std::mt19937_64 ra(9), rb(9);
  for (int i = 0; i < 3; ++i) {
    const auto ya = step(a, ra);
    const auto yb = step(b, rb);
    ASSERT_TRUE(vntest::BitEqual("obs after import, step " + std::to_string(i), DType::float32, ya[0], yb[0]));
    ASSERT_TRUE(vntest::BitEqual("reward after import, step " + std::to_string(i), DType::float16, ya[1], yb[1]));
  }
  // The imported state is a copy: stepping b did not change s.
  EXPECT_NE(b.count("obs"), s.keys[0].count);
}

TEST_P(StateTest, UnconfiguredNormalizerAdoptsTheState) {
  std::mt19937_64 rng(2);
  vecnorm::VecNorm a(opts(), table());
  for (int i = 0; i < 4; ++i) step(a, rng);
  const vecnorm::State s = a.export_state();

  vecnorm::VecNorm c(vntest::options_for(backend()));  // default options: torchrl, 0.9999, float32, per-element
  ASSERT_FALSE(c.configured());
  c.import_state(s);
  ASSERT_TRUE(c.configured());
  EXPECT_EQ(c.key_table(), table());
  EXPECT_EQ(c.options().estimator, opts().estimator);
  EXPECT_EQ(c.options().reduce_batch_dims, opts().reduce_batch_dims);
  EXPECT_EQ(c.options().stats_dtype, opts().stats_dtype);
  EXPECT_EQ(c.options().decay, opts().decay) << "an unconfigured normalizer adopts the state whole";
  EXPECT_EQ(c.options().eps, opts().eps) << "an unconfigured normalizer adopts the state whole";
  EXPECT_TRUE(SameState(s, c.export_state()));
  std::mt19937_64 ra(5), rc(5);
  for (int i = 0; i < 3; ++i) {
    const auto ya = step(a, ra);
    const auto yc = step(c, rc);
    ASSERT_TRUE(vntest::BitEqual("obs after adoption", DType::float32, ya[0], yc[0]));
    ASSERT_TRUE(vntest::BitEqual("reward after adoption", DType::float16, ya[1], yc[1]));
  }
}

TEST_P(StateTest, ConfiguredNormalizerKeepsItsDecayAndEps) {
  std::mt19937_64 rng(3);
  vecnorm::VecNorm a(opts(), table());
  for (int i = 0; i < 2; ++i) step(a, rng);
  vecnorm::Options other = opts();
  other.decay = 0.5;
  other.eps = 0.25;
  vecnorm::VecNorm b(other, table());
  b.import_state(a.export_state());
  EXPECT_EQ(b.options().decay, 0.5);
  EXPECT_EQ(b.options().eps, 0.25);
  EXPECT_EQ(b.count("obs"), a.count("obs"));
}

TEST_P(StateTest, MismatchesAreRejectedAndChangeNothing) {
  std::mt19937_64 rng(4);
  vecnorm::VecNorm source(opts(), table());
  for (int i = 0; i < 3; ++i) step(source, rng);
  const vecnorm::State good = source.export_state();

  struct Bad {
    std::string what;
    std::function<void(vecnorm::State&)> edit;
    std::vector<std::string> fragments;  // the message names the mismatch
  };
  const bool pooled = opts().reduce_batch_dims;
  std::vector<Bad> bad = {
      {"key name", [](vecnorm::State& s) { s.table.keys[1].name = "rewards"; }, {"rewards"}},
      {"feature shape",
       [](vecnorm::State& s) {
         s.table.keys[0].feature_shape = Shape{5};
         s.keys[0].stats_shape = s.options.reduce_batch_dims ? Shape{5} : Shape{3, 5};
         s.keys[0].loc.resize(s.keys[0].stats_shape.numel() * vecnorm::dtype_size(*s.options.stats_dtype));
         s.keys[0].var.resize(s.keys[0].loc.size());
       },
       {"obs", "[5]"}},
      {"number of keys",
       [](vecnorm::State& s) {
         s.table.keys.pop_back();
         s.keys.pop_back();
       },
       {}},
      {"estimator",
       [](vecnorm::State& s) {
         s.options.estimator =
             s.options.estimator == Estimator::stable ? Estimator::torchrl : Estimator::stable;
       },
       {"torchrl", "stable"}},
      {"reduce_batch_dims",
       [](vecnorm::State& s) {
         s.options.reduce_batch_dims = !s.options.reduce_batch_dims;
         for (std::size_t k = 0; k < s.keys.size(); ++k) {
           s.keys[k].stats_shape =
               s.options.reduce_batch_dims ? s.table.keys[k].feature_shape : s.table.batch_shape.concat(s.table.keys[k].feature_shape);
           s.keys[k].loc.resize(s.keys[k].stats_shape.numel() * vecnorm::dtype_size(*s.options.stats_dtype));
           s.keys[k].var.resize(s.keys[k].loc.size());
         }
       },
       {"reduce"}},
      {"stats dtype",
       [](vecnorm::State& s) {
         s.options.stats_dtype = s.options.stats_dtype == DType::float32 ? DType::float64 : DType::float32;
         for (auto& k : s.keys) {
           k.loc.resize(k.stats_shape.numel() * vecnorm::dtype_size(*s.options.stats_dtype));
           k.var.resize(k.loc.size());
         }
       },
       {"float32", "float64"}},
      {"inconsistent loc size", [](vecnorm::State& s) { s.keys[0].loc.pop_back(); }, {"obs"}},
      {"inconsistent stats shape", [](vecnorm::State& s) { s.keys[1].stats_shape = Shape{7}; }, {"reward"}},
      {"keys not parallel to the table", [](vecnorm::State& s) { s.keys.pop_back(); }, {}},
  };
  if (!pooled)  // the batch shape is part of per-element statistics only
    bad.push_back({"batch shape",
                   [](vecnorm::State& s) {
                     s.table.batch_shape = Shape{4};
                     for (std::size_t k = 0; k < s.keys.size(); ++k) {
                       s.keys[k].stats_shape = s.table.batch_shape.concat(s.table.keys[k].feature_shape);
                       s.keys[k].loc.resize(s.keys[k].stats_shape.numel() * vecnorm::dtype_size(*s.options.stats_dtype));
                       s.keys[k].var.resize(s.keys[k].loc.size());
                     }
                   },
                   {"[3", "[4"}});

  for (const auto& b : bad) {
    vecnorm::State s = good;
    b.edit(s);
    std::mt19937_64 r1(7);
    vecnorm::VecNorm target(opts(), table());
    for (int i = 0; i < 2; ++i) step(target, r1);
    const vecnorm::State before = target.export_state();
    try {
      target.import_state(s);
      ADD_FAILURE() << b.what << ": import_state must throw Error(state_mismatch)";
    } catch (const vecnorm::Error& e) {
      EXPECT_EQ(e.code(), vecnorm::ErrorCode::state_mismatch) << b.what << ": " << e.what();
      for (const auto& f : b.fragments)
        EXPECT_NE(std::string(e.what()).find(f), std::string::npos)
            << b.what << ": the message should contain \"" << f << "\": " << e.what();
    }
    EXPECT_TRUE(SameState(before, target.export_state())) << b.what << ": a rejected import changed the target";
    EXPECT_EQ(target.key_table(), table()) << b.what;
  }
}

// Pooled statistics do not depend on the batch shape, so a pooled state loads
// into a pooled normalizer whose table names another batch shape.
TEST_P(StateTest, PooledStateIgnoresTheBatchShape) {
  if (!opts().reduce_batch_dims) GTEST_SKIP() << "pooled only";
  std::mt19937_64 rng(8);
  vecnorm::VecNorm a(opts(), table());
  for (int i = 0; i < 2; ++i) step(a, rng);
  vecnorm::KeyTable other = table();
  other.batch_shape = Shape{7, 2};
  vecnorm::VecNorm b(opts(), other);
  EXPECT_NO_THROW(b.import_state(a.export_state()));
  EXPECT_EQ(b.count("obs"), a.count("obs"));
  EXPECT_TRUE(vntest::AllEqual("pooled loc", a.loc("obs"), b.loc("obs")));
}

INSTANTIATE_TEST_SUITE_P(All, StateTest,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(Estimator::torchrl, Estimator::stable),
                                            ::testing::Bool(), ::testing::Values(DType::float32, DType::float64)),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::string(vntest::backend_name(std::get<0>(info.param))) + "_" +
                                  vntest::estimator_name(std::get<1>(info.param)) + "_" +
                                  (std::get<2>(info.param) ? "pooled" : "per_element") + "_" +
                                  vntest::short_name(std::get<3>(info.param));
                         });

}  // namespace
