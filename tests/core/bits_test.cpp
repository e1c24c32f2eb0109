// tests/core/bits_test.cpp -- the CPU backend and the CUDA backend compute the
// same bits (docs/numerics.md, "The same bits on every backend"): on the same
// data, per-element steps of both estimators, every input dtype, float32 and
// float64 statistics, counts per key and per element, give identical outputs
// and statistics; an AffineNormalizer gives a frozen step's bits on each
// backend and the same bits on both; pooled steps, whose sums are partitioned
// differently (128-row tiles on the CPU, 32-row threads on the GPU), agree
// within the bound docs/numerics.md derives, and the GPU's pooled step gives
// the same bits run to run.
//
// Needs both backends in one process: the emulated CUDA build here (the
// kernels run by the SIMT emulator), the real one on a machine with a GPU
// (scripts/gpu-check.sh runs this suite there). Skips otherwise.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
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
using vntest::DeviceBuffer;

bool both_backends() {
  const auto b = vntest::test_backends();
  return std::find(b.begin(), b.end(), Backend::cuda) != b.end();
}
#define REQUIRE_BOTH_BACKENDS()                                                                   \
  if (!both_backends()) GTEST_SKIP() << "needs the CPU and a CUDA backend in one build (emulated " \
                                        "or with a GPU): this build has the CPU only"

constexpr std::int64_t kB = 37, kF = 5;  // odd sizes: partial blocks and vectors

/// The steps' data: exact in `dtype`, with a NaN in step 2 for float inputs
/// (skipped: the element keeps its statistics).
std::vector<std::vector<double>> step_data(DType dtype, int steps, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const auto dist = vntest::random_distribution(rng, kF, 50.0, 0.01, 20.0);
  std::vector<std::vector<double>> data;
  for (int s = 0; s < steps; ++s) {
    data.push_back(vntest::random_values(rng, dtype, kB, kF, dist));
    if (s == 2 && vecnorm::is_floating(dtype)) data.back()[7] = std::numeric_limits<double>::quiet_NaN();
  }
  return data;
}

vecnorm::Options options(Backend b, Estimator e, DType stats, double decay, bool pooled = false) {
  vecnorm::Options o = vntest::options_for(b);
  o.estimator = e;
  o.stats_dtype = stats;
  o.decay = decay;
  o.reduce_batch_dims = pooled;
  return o;
}

// ---------------------------------------------------------------- per element

using ElemParam = std::tuple<Estimator, DType /*input*/, DType /*stats*/, double /*decay*/>;
class SameBits : public ::testing::TestWithParam<ElemParam> {};

TEST_P(SameBits, PerElementStepsAndStatisticsOnBothBackends) {
  REQUIRE_BOTH_BACKENDS();
  const auto& [est, in, stats, decay] = GetParam();
  const vecnorm::KeyTable t{Shape{kB}, {{"obs", Shape{kF}, in}}};
  const Shape shape{kB, kF};
  const auto data = step_data(in, 6, 99);
  std::vector<std::vector<std::byte>> out[2];
  vecnorm::State state[2];
  for (int bi = 0; bi < 2; ++bi) {
    const Backend b = bi == 0 ? Backend::cpu : Backend::cuda;
    vecnorm::VecNorm vn(options(b, est, stats, decay), t);
    for (const auto& x : data) out[bi].push_back(vntest::call_one(vntest::Call::step, vn, b, "obs", in, shape, x));
    out[bi].push_back(vntest::call_one(vntest::Call::normalize, vn, b, "obs", in, shape, data[0]));
    out[bi].push_back(vntest::call_one(vntest::Call::denormalize, vn, b, "obs", vecnorm::output_dtype(in), shape,
                                       vntest::decode(vecnorm::output_dtype(in), out[bi][1])));
    state[bi] = vn.export_state();
  }
  const DType od = vecnorm::output_dtype(in);
  for (std::size_t s = 0; s < out[0].size(); ++s)
    ASSERT_TRUE(vntest::BitEqual("call " + std::to_string(s) + ": output cpu vs cuda", od, out[0][s], out[1][s]));
  EXPECT_TRUE(vntest::BitEqual("loc cpu vs cuda", stats, vntest::as_bytes(state[0].keys[0].loc),
                               vntest::as_bytes(state[1].keys[0].loc)));
  EXPECT_TRUE(vntest::BitEqual("var cpu vs cuda", stats, vntest::as_bytes(state[0].keys[0].var),
                               vntest::as_bytes(state[1].keys[0].var)));
  EXPECT_EQ(state[0].keys[0].count, state[1].keys[0].count);
  EXPECT_EQ(state[0].keys[0].skips, state[1].keys[0].skips);
  EXPECT_EQ(state[0].keys[0].skipped, state[1].keys[0].skipped);
}

TEST_P(SameBits, StatelessStepsOnBothBackends) {
  REQUIRE_BOTH_BACKENDS();
  const auto& [est, in, stats, decay] = GetParam();
  const vecnorm::KeyTable t{Shape{kB}, {{"obs", Shape{kF}, in}}};
  const Shape shape{kB, kF};
  const auto data = step_data(in, 5, 17);
  std::vector<std::byte> bytes[2];
  for (int bi = 0; bi < 2; ++bi) {
    const Backend b = bi == 0 ? Backend::cpu : Backend::cuda;
    const vecnorm::Options o = options(b, est, stats, decay);
    DeviceBuffer loc(b, stats, shape), var(b, stats, shape), count(b, DType::int64, shape);
    for (const auto& x : data) {
      auto xb = DeviceBuffer::from_values(b, in, shape, x);
      DeviceBuffer yb(b, vecnorm::output_dtype(in), shape);
      vecnorm::stateless::step(o, t, {{"obs", xb.cview(), yb.view(), {loc.cview(), var.cview(), count.cview()},
                                       {loc.view(), var.view(), count.view()}}});
      const auto y = yb.bytes();
      bytes[bi].insert(bytes[bi].end(), y.begin(), y.end());
    }
    for (const DeviceBuffer* s : {&loc, &var, &count}) {
      const auto v = s->bytes();
      bytes[bi].insert(bytes[bi].end(), v.begin(), v.end());
    }
  }
  EXPECT_EQ(bytes[0], bytes[1]) << "stateless outputs and statistics differ between cpu and cuda";
}

TEST_P(SameBits, AffineIsAFrozenStepOnEachBackendAndTheSameOnBoth) {
  REQUIRE_BOTH_BACKENDS();
  const auto& [est, in, stats, decay] = GetParam();
  const vecnorm::KeyTable t{Shape{kB}, {{"obs", Shape{kF}, in}}};
  const Shape shape{kB, kF};
  const auto data = step_data(in, 4, 5);
  std::vector<std::byte> affine_out[2];
  for (int bi = 0; bi < 2; ++bi) {
    const Backend b = bi == 0 ? Backend::cpu : Backend::cuda;
    vecnorm::VecNorm vn(options(b, est, stats, decay), t);
    for (const auto& x : data) vntest::call_one(vntest::Call::step, vn, b, "obs", in, shape, x);
    const vecnorm::AffineNormalizer affine = vn.to_affine();
    vn.freeze();
    affine_out[bi] = vntest::call_one(vntest::Call::affine_apply, nullptr, &affine, b, "obs", in, shape, data[0]);
    const auto frozen = vntest::call_one(vntest::Call::step, vn, b, "obs", in, shape, data[0]);
    EXPECT_TRUE(vntest::BitEqual(std::string(vntest::backend_name(b)) + ": affine vs frozen step",
                                 vecnorm::output_dtype(in), frozen, affine_out[bi]));
  }
  EXPECT_TRUE(vntest::BitEqual("affine cpu vs cuda", vecnorm::output_dtype(in), affine_out[0], affine_out[1]));
}

INSTANTIATE_TEST_SUITE_P(All, SameBits,
                         ::testing::Combine(::testing::Values(Estimator::torchrl, Estimator::stable),
                                            ::testing::Values(DType::float32, DType::float64, DType::float16,
                                                              DType::bfloat16, DType::int32, DType::int64,
                                                              DType::uint8),
                                            ::testing::Values(DType::float32, DType::float64),
                                            ::testing::Values(0.99, 1.0)),
                         [](const ::testing::TestParamInfo<ElemParam>& info) {
                           return std::string(vntest::estimator_name(std::get<0>(info.param))) + "_" +
                                  vntest::short_name(std::get<1>(info.param)) + "_stats_" +
                                  vntest::short_name(std::get<2>(info.param)) +
                                  (std::get<3>(info.param) == 1.0 ? "_d1" : "_d0p99");
                         });

// ---------------------------------------------------------------- pooled

// The bound of docs/numerics.md ("Pooled steps on two backends"): per feature,
// with d = x - K over the m rows (K the call's shift), A1 = mean |d|,
// A2 = mean d^2 and g = (Tc + Tg + m/32 + 4) u (Tc = 128, Tg = 32 rows summed
// in the compute type, whose unit roundoff is u), the two backends' batch
// means differ by at most g A1 and their batch variances by at most 3 g A2.
// After one step from count 0 at decay 1 (the shift is the first row; loc is
// the batch mean, var the batch variance, plus mean^2 for torchrl) that bounds
//   loc by g A1 + an ulp of it,  var by 3 g A2 (+ 2 |mean| g A1 for torchrl) + an ulp,
//   mu by loc's bound, v by var's (+ 2 |loc| times loc's for torchrl: var - loc^2),
//   y = (x - mu) / scale by (|d mu| + |y| |d scale|) / scale, |d scale| <= |d v| / (2 scale),
// plus the roundings of mu and y to the compute and output types.
using PoolParam = std::tuple<Estimator, DType /*input*/, DType /*stats*/, std::int64_t /*rows*/>;
class PooledBits : public ::testing::TestWithParam<PoolParam> {};

double ulp_of(double v, DType d) {
  const double a = std::fabs(v);
  if (d == DType::float64) return std::nextafter(a, std::numeric_limits<double>::infinity()) - a;
  if (d == DType::bfloat16 || d == DType::float16) {  // 8 / 11 significant bits (normal range)
    const int bits = d == DType::bfloat16 ? 8 : 11;
    return std::ldexp(1.0, std::ilogb(std::max(a, 0x1p-14)) - bits + 1);
  }
  const float f = static_cast<float>(a);
  return static_cast<double>(std::nextafter(f, std::numeric_limits<float>::infinity()) - f);
}

TEST_P(PooledBits, AgreeWithinTheBoundAndRepeatOnTheDevice) {
  REQUIRE_BOTH_BACKENDS();
  const auto& [est, in, stats, rows] = GetParam();
  const std::int64_t F = 7;
  const vecnorm::KeyTable t{Shape{rows}, {{"obs", Shape{F}, in}}};
  const Shape shape{rows, F};
  std::mt19937_64 rng(31 + static_cast<std::uint64_t>(rows));
  const auto x = vntest::random_values(rng, in, rows, F, vntest::random_distribution(rng, F, 30.0, 0.1, 10.0));
  std::vector<double> y[3];
  vecnorm::State state[3];
  std::vector<std::byte> ybytes[3];
  for (int run = 0; run < 3; ++run) {  // cpu, cuda, cuda again
    const Backend b = run == 0 ? Backend::cpu : Backend::cuda;
    vecnorm::VecNorm vn(options(b, est, stats, 1.0, true), t);
    ybytes[run] = vntest::call_one(vntest::Call::step, vn, b, "obs", in, shape, x);
    y[run] = vntest::decode(vecnorm::output_dtype(in), ybytes[run]);
    state[run] = vn.export_state();
  }
  const DType od = vecnorm::output_dtype(in);
  EXPECT_TRUE(vntest::BitEqual("cuda run 1 vs run 2: outputs", od, ybytes[1], ybytes[2]));
  EXPECT_EQ(state[1].keys[0].loc, state[2].keys[0].loc) << "cuda run 1 vs run 2: loc";
  EXPECT_EQ(state[1].keys[0].var, state[2].keys[0].var) << "cuda run 1 vs run 2: var";

  const DType compute = in == DType::float64 || stats == DType::float64 ? DType::float64 : DType::float32;
  const double u = compute == DType::float64 ? 0x1p-53 : 0x1p-24;
  const double g = (128.0 + 32.0 + static_cast<double>(rows) / 32.0 + 4.0) * u;
  const auto loc0 = vntest::decode(stats, vntest::as_bytes(state[0].keys[0].loc));
  const auto loc1 = vntest::decode(stats, vntest::as_bytes(state[1].keys[0].loc));
  const auto var0 = vntest::decode(stats, vntest::as_bytes(state[0].keys[0].var));
  const auto var1 = vntest::decode(stats, vntest::as_bytes(state[1].keys[0].var));
  const auto fs = static_cast<std::size_t>(F);
  std::vector<double> loc_tol(fs), var_tol(fs), v_tol(fs), scale(fs);
  for (std::size_t f = 0; f < fs; ++f) {
    const double K = x[f];  // count 0: the shift is the first row
    double a1 = 0, a2 = 0;
    for (std::int64_t r = 0; r < rows; ++r) {
      const double d = x[static_cast<std::size_t>(r) * fs + f] - K;
      a1 += std::fabs(d);
      a2 += d * d;
    }
    a1 /= static_cast<double>(rows);
    a2 /= static_cast<double>(rows);
    const bool torchrl = est == Estimator::torchrl;
    loc_tol[f] = g * a1 + ulp_of(loc0[f], stats);
    var_tol[f] = 3 * g * a2 + (torchrl ? 2 * std::fabs(loc0[f]) * g * a1 : 0.0) + ulp_of(var0[f], stats);
    v_tol[f] = var_tol[f] + (torchrl ? 2 * std::fabs(loc0[f]) * loc_tol[f] : 0.0);
    const double v = torchrl ? var0[f] - loc0[f] * loc0[f] : var0[f];
    scale[f] = std::max(std::sqrt(std::max(v, 0.0)), 1e-4);
  }
  EXPECT_TRUE(vntest::AllClose("pooled loc cpu vs cuda", loc0, loc1, loc_tol));
  EXPECT_TRUE(vntest::AllClose("pooled var cpu vs cuda", var0, var1, var_tol));
  std::vector<double> y_tol(y[0].size());
  for (std::size_t i = 0; i < y_tol.size(); ++i) {
    const std::size_t f = i % fs;
    const double dscale = v_tol[f] / (2 * scale[f]) + 2 * ulp_of(scale[f], compute);
    const double dmu = loc_tol[f] + 2 * ulp_of(loc0[f], compute);
    y_tol[i] = (dmu + std::fabs(y[0][i]) * dscale) / scale[f] + 4 * ulp_of(y[0][i], compute) +
               2 * ulp_of(y[0][i], od);
  }
  EXPECT_TRUE(vntest::AllClose("pooled outputs cpu vs cuda", y[0], y[1], y_tol));
}

INSTANTIATE_TEST_SUITE_P(All, PooledBits,
                         ::testing::Combine(::testing::Values(Estimator::torchrl, Estimator::stable),
                                            ::testing::Values(DType::float32, DType::float64, DType::bfloat16,
                                                              DType::int32),
                                            ::testing::Values(DType::float32, DType::float64),
                                            ::testing::Values<std::int64_t>(1, 257, 3001)),
                         [](const ::testing::TestParamInfo<PoolParam>& info) {
                           return std::string(vntest::estimator_name(std::get<0>(info.param))) + "_" +
                                  vntest::short_name(std::get<1>(info.param)) + "_stats_" +
                                  vntest::short_name(std::get<2>(info.param)) + "_rows" +
                                  std::to_string(std::get<3>(info.param));
                         });

}  // namespace
