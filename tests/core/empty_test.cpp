// tests/core/empty_test.cpp -- steps with no elements (batch size 0, feature size 0).
//
// semantics.md defines counts by formula: per-element "count += 1" per step and
// pooled "count += m". It says nothing special about empty tensors, so these
// tests hold the library to the formulas:
//   - per-element, any empty shape: a step is still a step, count += 1;
//   - pooled, feature size 0 with m > 0 samples: count += m (there are m samples
//     of an empty feature vector);
//   - pooled, batch size 0: m = 0, count += 0, and the statistics do not move
//     (w = 1 - d^0 = 0, or m / count = 0);
// and every such call must neither crash nor write anything.
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "support/check.hpp"
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

using Param = std::tuple<Backend, Estimator>;
class Empty : public ::testing::TestWithParam<Param> {
 protected:
  vecnorm::Options opts(bool pooled, double decay) const {
    vecnorm::Options o = vntest::options_for(std::get<0>(GetParam()));
    o.estimator = std::get<1>(GetParam());
    o.reduce_batch_dims = pooled;
    o.decay = decay;
    return o;
  }
  Backend backend() const { return std::get<0>(GetParam()); }
};

TEST_P(Empty, PerElementEmptyStepsCountAsSteps) {
  for (double decay : {1.0, 0.9})
    for (const auto& [batch, feature] : {std::pair{Shape{0}, Shape{3}}, std::pair{Shape{4}, Shape{0}},
                                         std::pair{Shape{2, 0}, Shape{3}}, std::pair{Shape{}, Shape{0}}}) {
      const std::string where = "per-element batch " + batch.str() + " feature " + feature.str();
      vecnorm::VecNorm vn(opts(false, decay), vecnorm::KeyTable{batch, {{"obs", feature, DType::float32}}});
      const Shape shape = batch.concat(feature);
      for (int step = 1; step <= 3; ++step) {
        const auto y = vntest::call_one(Call::step, vn, backend(), "obs", DType::float32, shape, {});
        EXPECT_TRUE(y.empty()) << where;
        EXPECT_EQ(vn.count("obs"), step) << where << ": a step with no elements is still one step";
      }
      EXPECT_EQ(vn.stats_shape("obs"), shape) << where;
      EXPECT_TRUE(vn.loc("obs").empty()) << where;
      EXPECT_TRUE(vn.scale("obs").empty()) << where;
      vntest::call_one(Call::normalize, vn, backend(), "obs", DType::float32, shape, {});
      (void)vn.to_affine();
    }
}

TEST_P(Empty, PooledEmptyFeatureCountsSamples) {
  vecnorm::VecNorm vn(opts(true, 0.9), vecnorm::KeyTable{Shape{}, {{"obs", Shape{0}, DType::float32}}});
  vntest::call_one(Call::step, vn, backend(), "obs", DType::float32, Shape{4, 0}, {});
  vntest::call_one(Call::step, vn, backend(), "obs", DType::float32, Shape{3, 0}, {});
  EXPECT_EQ(vn.count("obs"), 7) << "pooled: count += m per step, also for an empty feature";
  EXPECT_EQ(vn.stats_shape("obs"), Shape{0});
  EXPECT_TRUE(vn.scale("obs").empty());
}

TEST_P(Empty, PooledEmptyBatchChangesNothing) {
  for (double decay : {1.0, 0.9}) {
    vecnorm::VecNorm vn(opts(true, decay), vecnorm::KeyTable{Shape{}, {{"obs", Shape{3}, DType::float32}}});
    vntest::call_one(Call::step, vn, backend(), "obs", DType::float32, Shape{2, 3}, {1, 2, 3, 5, 7, 11});
    const auto before = vn.export_state();
    const auto y = vntest::call_one(Call::step, vn, backend(), "obs", DType::float32, Shape{0, 3}, {});
    EXPECT_TRUE(y.empty());
    EXPECT_EQ(vn.count("obs"), 2) << "decay " << decay << ": an empty pooled batch adds m = 0 samples";
    const auto after = vn.export_state();
    EXPECT_EQ(before.keys[0].loc, after.keys[0].loc) << "decay " << decay << ": an empty batch moved loc";
    EXPECT_EQ(before.keys[0].var, after.keys[0].var) << "decay " << decay << ": an empty batch moved var";
    for (double s : vn.scale("obs")) EXPECT_TRUE(std::isfinite(s)) << "decay " << decay;
  }
}

// An empty pooled batch before any sample: m = 0, so the count stays 0. There is
// nothing to normalize, so either outcome is sensible: success (nothing
// written), or Error(zero_count) for normalizing a key with count 0. What must
// not happen: a crash, a count that moved, or NaN statistics (0/0 in m/count).
TEST_P(Empty, PooledEmptyFirstBatchKeepsCountZero) {
  for (double decay : {1.0, 0.9}) {
    vecnorm::VecNorm vn(opts(true, decay), vecnorm::KeyTable{Shape{}, {{"obs", Shape{3}, DType::float32}}});
    try {
      vntest::call_one(Call::step, vn, backend(), "obs", DType::float32, Shape{0, 3}, {});
    } catch (const vecnorm::Error& e) {
      EXPECT_EQ(e.code(), vecnorm::ErrorCode::zero_count) << e.what();
    }
    EXPECT_EQ(vn.count("obs"), 0);
    vntest::call_one(Call::update, vn, backend(), "obs", DType::float32, Shape{0, 3}, {});
    EXPECT_EQ(vn.count("obs"), 0);
    // The first real batch then behaves as a first batch: stable and torchrl
    // (decay 1) give loc = the batch mean exactly for these integers.
    vntest::call_one(Call::step, vn, backend(), "obs", DType::float32, Shape{2, 3}, {1, 2, 3, 5, 6, 7});
    EXPECT_EQ(vn.count("obs"), 2);
    const auto loc = vn.loc("obs");
    const std::vector<double> tol(3, decay < 1.0 ? 1e-5 * 6 : 0.0);
    EXPECT_TRUE(vntest::AllClose("loc after an empty first batch, decay " + vntest::decay_name(decay),
                                 {3.0, 4.0, 5.0}, loc, tol));
  }
}

TEST_P(Empty, StatelessEmptyDoesNothing) {
  for (const auto& [batch, feature] : {std::pair{Shape{0}, Shape{3}}, std::pair{Shape{4}, Shape{0}}}) {
    const vecnorm::KeyTable table{batch, {{"obs", feature, DType::float32}}};
    const Shape shape = batch.concat(feature);
    DeviceBuffer x(backend(), DType::float32, shape), y(backend(), DType::float32, shape);
    DeviceBuffer loc(backend(), DType::float32, shape), var(backend(), DType::float32, shape),
        count(backend(), DType::int64, shape);
    vecnorm::StatelessItem item{"obs", x.cview(), y.view(), {loc.cview(), var.cview(), count.cview()},
                                {loc.view(), var.view(), count.view()}};
    for (vecnorm::Op op : {vecnorm::Op::update_and_normalize, vecnorm::Op::update, vecnorm::Op::normalize})
      EXPECT_NO_THROW(vecnorm::stateless::step(opts(false, 0.9), table, {item}, op)) << shape.str();
  }
}

// Empty tensors from other frameworks may have a null data pointer (DLPack
// allows it). With no elements nothing is read, so null must be accepted.
TEST_P(Empty, NullDataWithNoElementsIsAccepted) {
  vecnorm::VecNorm vn(opts(false, 0.9), vecnorm::KeyTable{Shape{0}, {{"obs", Shape{3}, DType::float32}}});
  const vecnorm::ConstTensorView x(nullptr, DType::float32, Shape{0, 3}, vntest::device_of(backend()));
  const vecnorm::TensorView y{nullptr, DType::float32, Shape{0, 3}, vntest::device_of(backend())};
  EXPECT_NO_THROW(vn.step({{"obs", x, y}}));
  EXPECT_EQ(vn.count("obs"), 1);
}

INSTANTIATE_TEST_SUITE_P(All, Empty,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(Estimator::torchrl, Estimator::stable)),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::string(vntest::backend_name(std::get<0>(info.param))) + "_" +
                                  vntest::estimator_name(std::get<1>(info.param));
                         });

}  // namespace
