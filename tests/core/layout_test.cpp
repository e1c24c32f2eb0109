// tests/core/layout_test.cpp -- the CPU backend's data-layout paths, against
// the reference:
//  * outputs of 4 MiB and more are written with non-temporal stores through a
//    staging buffer (src/cpu: kStreamBytes), including outputs that do not
//    start on a 16-byte boundary;
//  * pooled keys with few features are reduced and normalized as "super rows"
//    of several rows (F = 1, 3, 17, 63 with batch sizes that leave a partial
//    super row), and wide features in blocks of 16 columns with a remainder.
#include <gtest/gtest.h>

#include <cstring>
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
using vntest::Mode;

vntest::Case make(Backend b, Mode mode, Estimator e, DType in, Shape batch, Shape feature, int steps = 3) {
  vntest::Case c;
  c.backend = b;
  c.mode = mode;
  c.estimator = e;
  c.input = in;
  c.batch = batch;
  c.feature = feature;
  c.steps = steps;
  c.decay = 0.99;
  return c;
}

class Layout : public ::testing::TestWithParam<std::tuple<Backend, Estimator>> {};

// Small F pooled: super rows with a partial last one; every input dtype class.
TEST_P(Layout, PooledSuperRows) {
  const auto& [backend, est] = GetParam();
  // The super rows are the CPU backend's; other backends get a few of the cases.
  const bool cpu = backend == Backend::cpu;
  const std::vector<std::int64_t> feats = cpu ? std::vector<std::int64_t>{1, 3, 17, 63, 64, 65, 100}
                                              : std::vector<std::int64_t>{1, 17, 65};
  const std::vector<std::int64_t> batches = cpu ? std::vector<std::int64_t>{1, 5, 67, 1000} : std::vector<std::int64_t>{67};
  const std::vector<DType> dtypes = cpu ? std::vector<DType>{DType::float32, DType::bfloat16, DType::int32, DType::float64}
                                        : std::vector<DType>{DType::float32};
  for (std::int64_t F : feats)
    for (std::int64_t m : batches)
      for (DType in : dtypes) {
        const vntest::Case c = make(backend, Mode::pooled, est, in, Shape{m}, Shape{F});
        SCOPED_TRACE(c.name());
        vntest::run_case(c);
        if (HasFailure()) return;
      }
}

// Large outputs (>= 4 MiB): the streamed write path, per-element, pooled and stateless.
TEST_P(Layout, StreamedOutputs) {
  const auto& [backend, est] = GetParam();
  if (backend != Backend::cpu) GTEST_SKIP() << "the streamed write path is the CPU backend's";
  const vntest::Case cases[] = {
      make(backend, Mode::per_element, est, DType::float32, Shape{1031}, Shape{1021}, 1),
      make(backend, Mode::pooled, est, DType::float32, Shape{1031}, Shape{1021}, 1),
      make(backend, Mode::pooled, est, DType::float32, Shape{(1 << 20) + 37}, Shape{}, 1),
      make(backend, Mode::pooled, est, DType::bfloat16, Shape{(1 << 20) / 3 + 5}, Shape{3}, 1),
      make(backend, Mode::stateless, est, DType::float32, Shape{1031}, Shape{1021}, 1),
  };
  for (const vntest::Case& c : cases) {
    SCOPED_TRACE(c.name());
    vntest::run_case(c);
    if (HasFailure()) return;
  }
}

// A streamed output that starts 4 bytes past a 16-byte boundary: every element
// is written, nothing before or after it.
TEST_P(Layout, StreamedOutputNotAligned) {
  const auto& [backend, est] = GetParam();
  if (backend != Backend::cpu) GTEST_SKIP() << "the streamed write path is the CPU backend's";
  for (bool pooled : {false, true}) {
    SCOPED_TRACE(pooled ? "pooled" : "per_element");
    const std::int64_t m = 1031, F = 1021;  // 4.2 MB of float32, odd row length
    vecnorm::Options o;
    o.backend = Backend::cpu;
    o.estimator = est;
    o.decay = 0.9;
    o.reduce_batch_dims = pooled;
    vecnorm::KeyTable t;
    t.batch_shape = Shape{m};
    t.keys = {{"obs", Shape{F}, DType::float32}};
    vecnorm::VecNorm vn(o, t);
    vnref::StatefulKey ref({est == Estimator::stable ? vnref::Estimator::stable : vnref::Estimator::torchrl, 0.9, 1e-4},
                           pooled, F, m);
    std::mt19937_64 rng(77);
    const std::int64_t n = m * F;
    // y lives at offset 1 float (4 bytes) of a 16-byte aligned buffer, with a
    // guard value before and after it.
    std::vector<float> ybuf(static_cast<std::size_t>(n) + 8);
    ASSERT_EQ(reinterpret_cast<std::uintptr_t>(ybuf.data()) % 16, 0u);
    float* y = ybuf.data() + 1;
    for (int step = 0; step < 2; ++step) {
      const std::vector<double> xd =
          vntest::random_values(rng, DType::float32, m, F, vntest::random_distribution(rng, F));
      std::vector<float> x(xd.begin(), xd.end());
      std::fill(ybuf.begin(), ybuf.end(), -12345.f);
      vn.step({{"obs", vecnorm::view(static_cast<const float*>(x.data()), Shape{m, F}), vecnorm::view(y, Shape{m, F})}});
      ref.update(xd, m);
      const std::vector<double> expected = ref.normalize(xd, m);
      const std::vector<double> actual(y, y + n);
      const double rtol = vntest::rtol_for(DType::float32, step + 1);
      EXPECT_TRUE(vntest::AllClose("y", expected, actual,
                                   vntest::y_tolerances(ref.readouts(), pooled, F, xd, rtol, 1e-4, DType::float32)));
      EXPECT_EQ(ybuf[0], -12345.f) << "written before y";
      EXPECT_EQ(ybuf[static_cast<std::size_t>(n) + 1], -12345.f) << "written after y";
    }
  }
}

std::string param_name(const ::testing::TestParamInfo<std::tuple<Backend, Estimator>>& info) {
  return std::string(vecnorm::to_string(std::get<0>(info.param))) + "_" + vecnorm::to_string(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(All, Layout,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(Estimator::torchrl, Estimator::stable)),
                         param_name);

}  // namespace
