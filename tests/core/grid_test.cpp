// tests/core/grid_test.cpp -- every mode x estimator x decay x input dtype x
// stats dtype against the reference, on every backend available.
//
// One gtest per (backend, mode, estimator, input dtype); each loops over
// decays {1, 0.9, 0.9999} x stats dtypes {float32, float64} x 2 seeds x 3
// shapes (6 steps + an update-only and a normalize-only call each), and the
// Sizes suite covers the sizes 0, 1, 31, 257, 2049 on the batch and feature
// dims without the full cross product.
#include <gtest/gtest.h>

#include <tuple>

#include "support/device_buffer.hpp"
#include "support/dtypes.hpp"
#include "support/harness.hpp"

namespace {

using vecnorm::Backend;
using vecnorm::DType;
using vecnorm::Estimator;
using vecnorm::Shape;
using vntest::Mode;

const std::vector<Mode> kModes = {Mode::per_element, Mode::pooled, Mode::stateless};
const std::vector<Estimator> kEstimators = {Estimator::torchrl, Estimator::stable};
const std::vector<double> kDecays = {1.0, 0.9, 0.9999};
const std::vector<DType> kStats = {DType::float32, DType::float64};

using GridParam = std::tuple<Backend, Mode, Estimator, DType>;

std::string grid_name(const ::testing::TestParamInfo<GridParam>& info) {
  const auto& [backend, mode, est, dtype] = info.param;
  return std::string(vntest::backend_name(backend)) + "_" + vntest::mode_name(mode) + "_" +
         vntest::estimator_name(est) + "_" + vntest::short_name(dtype);
}

class Grid : public ::testing::TestWithParam<GridParam> {};

TEST_P(Grid, AgreesWithReference) {
  const auto& [backend, mode, est, dtype] = GetParam();
  // (batch, feature): a scalar-per-element key with a batch, a batch-less key,
  // and a 2-d batch with a feature vector.
  const std::vector<std::pair<Shape, Shape>> shapes = {{Shape{}, Shape{7}}, {Shape{4}, Shape{}}, {Shape{2, 3}, Shape{5}}};
  for (double decay : kDecays)
    for (DType stats : kStats)
      for (std::uint64_t seed : {1u, 2u})
        for (const auto& [batch, feature] : shapes) {
          vntest::Case c;
          c.backend = backend;
          c.mode = mode;
          c.estimator = est;
          c.decay = decay;
          c.input = dtype;
          c.stats = stats;
          c.batch = batch;
          c.feature = feature;
          c.seed = seed;
          c.steps = 6;
          vntest::run_case(c);
        }
}

INSTANTIATE_TEST_SUITE_P(All, Grid,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()), ::testing::ValuesIn(kModes),
                                            ::testing::ValuesIn(kEstimators),
                                            ::testing::ValuesIn(vntest::all_input_dtypes())),
                         grid_name);

// ---------------------------------------------------------------- sizes

using SizesParam = std::tuple<Backend, Mode, Estimator>;

std::string sizes_name(const ::testing::TestParamInfo<SizesParam>& info) {
  const auto& [backend, mode, est] = info.param;
  return std::string(vntest::backend_name(backend)) + "_" + vntest::mode_name(mode) + "_" + vntest::estimator_name(est);
}

class Sizes : public ::testing::TestWithParam<SizesParam> {};

TEST_P(Sizes, AgreesWithReference) {
  const auto& [backend, mode, est] = GetParam();
  // Sizes 0, 1, 31, 257, 2049 on each side; the empty-batch pooled case has no
  // samples to pool and lives in empty_test.cpp.
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {Shape{0}, Shape{5}},    {Shape{5}, Shape{0}},   {Shape{1}, Shape{1}},     {Shape{31}, Shape{1}},
      {Shape{1}, Shape{31}},   {Shape{257}, Shape{3}}, {Shape{3}, Shape{257}},   {Shape{2049}, Shape{1}},
      {Shape{1}, Shape{2049}}, {Shape{31}, Shape{257}}, {Shape{257, 1}, Shape{31}}, {Shape{2049}, Shape{}},
  };
  const auto& dtypes = vntest::all_input_dtypes();
  int k = 0;
  for (const auto& [batch, feature] : shapes) {
    if (mode == Mode::pooled && batch.numel() == 0) continue;
    for (DType stats : kStats) {
      ++k;
      vntest::Case c;
      c.backend = backend;
      c.mode = mode;
      c.estimator = est;
      // Rotate dtypes and decays through the sizes instead of crossing them.
      c.input = dtypes[k % dtypes.size()];
      c.decay = kDecays[k % kDecays.size()];
      c.stats = stats;
      c.batch = batch;
      c.feature = feature;
      c.seed = 100 + k;
      c.steps = 4;
      vntest::run_case(c);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, Sizes,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()), ::testing::ValuesIn(kModes),
                                            ::testing::ValuesIn(kEstimators)),
                         sizes_name);

}  // namespace
