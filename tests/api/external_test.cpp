// tests/api/external_test.cpp -- stateful steps on statistics the caller owns
// (vecnorm::external) and the Workspace those calls take their scratch from.
//
// The external steps run the pipeline of a VecNorm on views of the caller's
// memory: on the same data they agree with the reference and give VecNorm's
// outputs and statistics bit for bit (per key counts, per-element and pooled,
// NaN inputs skipped); with one count per element they are the stateless step
// done in place. Errors name the key and change nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <new>
#include <memory>
#include <random>
#include <tuple>

#include "support/check.hpp"
#include "support/data.hpp"
#include "support/device_buffer.hpp"
#include "support/dtypes.hpp"
#include "support/harness.hpp"

namespace {

using vecnorm::Backend;
using vecnorm::CountLayout;
using vecnorm::DType;
using vecnorm::ErrorCode;
using vecnorm::Estimator;
using vecnorm::Op;
using vecnorm::Shape;
using vntest::DeviceBuffer;

constexpr std::int64_t kB = 6;

/// The statistics of one key in buffers of the test's own.
struct OwnedStats {
  DeviceBuffer loc, var, count, skips, skipped;
  OwnedStats(Backend b, DType stats, const Shape& stats_shape, const Shape& count_shape, bool with_skips)
      : loc(b, stats, stats_shape), var(b, stats, stats_shape), count(b, DType::int64, count_shape) {
    if (with_skips) {
      skips = DeviceBuffer(b, DType::int64, stats_shape);
      skipped = DeviceBuffer(b, DType::int64, Shape{});
    }
  }
  vecnorm::ExternalStats views() {
    vecnorm::ExternalStats s{loc.view(), var.view(), count.view(), {}, {}};
    if (skips.nbytes() > 0 || skipped.nbytes() > 0) {
      s.skips = skips.view();
      s.skipped = skipped.view();
    }
    return s;
  }
};

using Param = std::tuple<Backend, Estimator, bool /*pooled*/, DType /*stats*/>;
class ExternalSteps : public ::testing::TestWithParam<Param> {
 protected:
  Backend backend() const { return std::get<0>(GetParam()); }
  bool pooled() const { return std::get<2>(GetParam()); }
  vecnorm::Options opts() const {
    vecnorm::Options o = vntest::options_for(backend());
    o.estimator = std::get<1>(GetParam());
    o.reduce_batch_dims = pooled();
    o.stats_dtype = std::get<3>(GetParam());
    o.decay = 0.9;
    return o;
  }
  static vecnorm::KeyTable table() {
    return {Shape{kB}, {{"obs", Shape{3}, DType::float32}, {"reward", Shape{}, DType::float16}}};
  }
};

TEST_P(ExternalSteps, AgreeWithTheReferenceAndVecNormBitForBit) {
  const vecnorm::Options o = opts();
  const vecnorm::KeyTable t = table();
  vecnorm::VecNorm vn(o, t);
  std::vector<OwnedStats> stats;
  std::vector<vnref::StatefulKey> refs;
  for (const auto& spec : t.keys) {
    const Shape shape = pooled() ? spec.feature_shape : t.batch_shape.concat(spec.feature_shape);
    stats.emplace_back(backend(), *o.stats_dtype, shape, Shape{}, !pooled());
    refs.emplace_back(vnref::Config{vntest::to_ref(o.estimator), o.decay, o.eps}, pooled(), spec.feature_shape.numel(),
                      kB);
  }
  std::mt19937_64 rng(11);
  const vntest::FeatureDistribution obs_dist{{2.0, -1.0, 30.0}, {0.5, 2.0, 4.0}};
  const vntest::FeatureDistribution rew_dist{{0.5}, {1.0}};
  for (int s = 0; s < 4; ++s) {
    const bool reset = s == 0;  // a reset step carries no reward
    const auto obs = vntest::random_values(rng, DType::float32, kB, 3, obs_dist);
    const auto rew = vntest::random_values(rng, DType::float16, kB, 1, rew_dist);
    const Shape obs_shape{kB, 3}, rew_shape{kB};
    auto xo = DeviceBuffer::from_values(backend(), DType::float32, obs_shape, obs);
    auto xr = DeviceBuffer::from_values(backend(), DType::float16, rew_shape, rew);
    DeviceBuffer yo(backend(), DType::float32, obs_shape), yr(backend(), DType::float16, rew_shape);
    DeviceBuffer zo(backend(), DType::float32, obs_shape), zr(backend(), DType::float16, rew_shape);
    std::vector<vecnorm::ExternalItem> items = {{"obs", xo.cview(), yo.view(), stats[0].views()}};
    std::vector<vecnorm::KeyData> batch = {{"obs", xo.cview(), zo.view()}};
    if (!reset) {
      items.push_back({"reward", xr.cview(), yr.view(), stats[1].views()});
      batch.push_back({"reward", xr.cview(), zr.view()});
    }
    vecnorm::external::step(o, t, CountLayout::per_key, items);
    vn.step(batch);
    const std::string at = "step " + std::to_string(s);
    EXPECT_TRUE(vntest::BitEqual(at + ": obs output", DType::float32, zo.bytes(), yo.bytes()));
    refs[0].update(obs, kB);
    EXPECT_TRUE(vntest::AllClose(at + ": obs output vs reference", refs[0].normalize(obs, kB), yo.values(),
                                 vntest::y_tolerances(refs[0].readouts(), pooled(), 3, obs,
                                                      vntest::rtol_for(*o.stats_dtype, s + 1), o.eps, DType::float32)));
    if (reset) continue;
    EXPECT_TRUE(vntest::BitEqual(at + ": reward output", DType::float16, zr.bytes(), yr.bytes()));
    refs[1].update(rew, kB);
    EXPECT_TRUE(vntest::AllClose(at + ": reward output vs reference", refs[1].normalize(rew, kB), yr.values(),
                                 vntest::y_tolerances(refs[1].readouts(), pooled(), 1, rew,
                                                      vntest::rtol_for(*o.stats_dtype, s), o.eps, DType::float16)));
  }
  // Steps with a NaN and an infinity, left out (the element, or the row when
  // pooled; the output still written): the reference has no such rule (VecNorm's
  // is checked against it in tests/core/nonfinite_test.cpp), the statistics
  // must stay VecNorm's.
  for (int s = 4; s < 8; ++s) {
    auto obs = vntest::random_values(rng, DType::float32, kB, 3, obs_dist);
    if (s == 4) obs[2 * 3 + 1] = std::numeric_limits<double>::quiet_NaN();
    if (s == 5) obs[0] = std::numeric_limits<double>::infinity();
    auto xo = DeviceBuffer::from_values(backend(), DType::float32, Shape{kB, 3}, obs);
    DeviceBuffer yo(backend(), DType::float32, Shape{kB, 3}), zo(backend(), DType::float32, Shape{kB, 3});
    vecnorm::external::step(o, t, CountLayout::per_key, {{"obs", xo.cview(), yo.view(), stats[0].views()}});
    vn.step({{"obs", xo.cview(), zo.view()}});
    EXPECT_TRUE(vntest::BitEqual("step " + std::to_string(s) + ": obs output", DType::float32, zo.bytes(), yo.bytes()));
  }
  // The statistics as VecNorm stores them, bit for bit.
  const vecnorm::State st = vn.export_state();
  for (std::size_t k = 0; k < t.keys.size(); ++k) {
    const std::string key = t.keys[k].name;
    EXPECT_TRUE(vntest::BitEqual(key + ": loc", *o.stats_dtype, vntest::as_bytes(st.keys[k].loc), stats[k].loc.bytes()));
    EXPECT_TRUE(vntest::BitEqual(key + ": var", *o.stats_dtype, vntest::as_bytes(st.keys[k].var), stats[k].var.bytes()));
    EXPECT_EQ(stats[k].count.values(), std::vector<double>{static_cast<double>(st.keys[k].count)}) << key << ": count";
    if (!pooled()) {
      EXPECT_EQ(stats[k].skipped.values(), std::vector<double>{static_cast<double>(st.keys[k].skipped)})
          << key << ": skipped";
      std::vector<double> skips(static_cast<std::size_t>(st.keys[k].stats_shape.numel()), 0.0);
      for (std::size_t i = 0; i < st.keys[k].skips.size(); ++i) skips[i] = static_cast<double>(st.keys[k].skips[i]);
      EXPECT_EQ(stats[k].skips.values(), skips) << key << ": skips";
    }
  }
  EXPECT_GT(st.keys[0].skipped, 0) << "the NaN and the infinity were left out";
  // Normalize-only and denormalize: VecNorm's bits too.
  const auto obs = vntest::random_values(rng, DType::float32, kB, 3, obs_dist);
  auto xo = DeviceBuffer::from_values(backend(), DType::float32, Shape{kB, 3}, obs);
  DeviceBuffer yo(backend(), DType::float32, Shape{kB, 3}), zo(backend(), DType::float32, Shape{kB, 3});
  vecnorm::external::step(o, t, CountLayout::per_key, {{"obs", xo.cview(), yo.view(), stats[0].views()}},
                          Op::normalize);
  vn.normalize({{"obs", xo.cview(), zo.view()}});
  EXPECT_TRUE(vntest::BitEqual("normalize", DType::float32, zo.bytes(), yo.bytes()));
  vecnorm::external::denormalize(o, t, {{"obs", yo.cview(), xo.view(), stats[0].views()}});
  vn.denormalize({{"obs", zo.cview(), zo.view()}});
  EXPECT_TRUE(vntest::BitEqual("denormalize", DType::float32, zo.bytes(), xo.bytes()));
}

INSTANTIATE_TEST_SUITE_P(All, ExternalSteps,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(Estimator::torchrl, Estimator::stable), ::testing::Bool(),
                                            ::testing::Values(DType::float32, DType::float64)),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::string(vntest::backend_name(std::get<0>(info.param))) + "_" +
                                  vntest::estimator_name(std::get<1>(info.param)) + "_" +
                                  (std::get<2>(info.param) ? "pooled" : "per_element") + "_" +
                                  vntest::short_name(std::get<3>(info.param));
                         });

// One count per element, in place: the stateless step with in == out.
using BackendParam = std::tuple<Backend, Estimator>;
class ExternalPerElement : public ::testing::TestWithParam<BackendParam> {};

TEST_P(ExternalPerElement, IsTheStatelessStepInPlace) {
  const auto& [backend, est] = GetParam();
  vecnorm::Options o = vntest::options_for(backend);
  o.estimator = est;
  o.decay = 0.8;
  const vecnorm::KeyTable t{Shape{4}, {{"obs", Shape{2}, DType::float32}}};
  const Shape shape{4, 2};
  OwnedStats mine(backend, DType::float32, shape, shape, false);
  DeviceBuffer loc(backend, DType::float32, shape), var(backend, DType::float32, shape),
      count(backend, DType::int64, shape);
  DeviceBuffer loc2(backend, DType::float32, shape), var2(backend, DType::float32, shape),
      count2(backend, DType::int64, shape);
  std::mt19937_64 rng(3);
  for (int s = 0; s < 5; ++s) {
    auto x = vntest::random_values(rng, DType::float32, 4, 2, vntest::FeatureDistribution{{1.0, 5.0}, {1.0, 0.1}});
    if (s == 2) x[3] = std::numeric_limits<double>::quiet_NaN();  // one element keeps its count
    auto xb = DeviceBuffer::from_values(backend, DType::float32, shape, x);
    DeviceBuffer y1(backend, DType::float32, shape), y2(backend, DType::float32, shape);
    vecnorm::external::step(o, t, CountLayout::per_element, {{"obs", xb.cview(), y1.view(), mine.views()}});
    // stateless: in from one set of buffers, out to the other, alternating
    DeviceBuffer& in_loc = s % 2 == 0 ? loc : loc2;
    DeviceBuffer& in_var = s % 2 == 0 ? var : var2;
    DeviceBuffer& in_count = s % 2 == 0 ? count : count2;
    DeviceBuffer& out_loc = s % 2 == 0 ? loc2 : loc;
    DeviceBuffer& out_var = s % 2 == 0 ? var2 : var;
    DeviceBuffer& out_count = s % 2 == 0 ? count2 : count;
    vecnorm::stateless::step(o, t,
                             {{"obs", xb.cview(), y2.view(), {in_loc.cview(), in_var.cview(), in_count.cview()},
                               {out_loc.view(), out_var.view(), out_count.view()}}});
    EXPECT_TRUE(vntest::BitEqual("output", DType::float32, y2.bytes(), y1.bytes()));
    EXPECT_TRUE(vntest::BitEqual("loc", DType::float32, out_loc.bytes(), mine.loc.bytes()));
    EXPECT_TRUE(vntest::BitEqual("var", DType::float32, out_var.bytes(), mine.var.bytes()));
    EXPECT_EQ(out_count.values(), mine.count.values());
  }
  // Element 3 skipped one update: its count is one less than the others'.
  const auto c = mine.count.values();
  EXPECT_EQ(c[3], 4.0);
  EXPECT_EQ(c[0], 5.0);
}

INSTANTIATE_TEST_SUITE_P(All, ExternalPerElement,
                         ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                                            ::testing::Values(Estimator::torchrl, Estimator::stable)),
                         [](const ::testing::TestParamInfo<BackendParam>& info) {
                           return std::string(vntest::backend_name(std::get<0>(info.param))) + "_" +
                                  vntest::estimator_name(std::get<1>(info.param));
                         });

// ---------------------------------------------------------------- errors

/// Runs f and checks it throws vecnorm::Error of `code` whose message holds every one of `parts`.
template <class F>
::testing::AssertionResult Throws(F&& f, ErrorCode code, std::initializer_list<std::string> parts) {
  try {
    f();
  } catch (const vecnorm::Error& e) {
    if (e.code() != code)
      return ::testing::AssertionFailure() << "code " << vecnorm::to_string(e.code()) << ", expected "
                                           << vecnorm::to_string(code) << ": " << e.what();
    for (const auto& p : parts)
      if (std::string(e.what()).find(p) == std::string::npos)
        return ::testing::AssertionFailure() << "message lacks '" << p << "': " << e.what();
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "no exception";
}

/// One key "obs" of 4 x 2 float32 values, its statistics, and an output.
class ExternalErrors : public ::testing::TestWithParam<Backend> {
 protected:
  const Backend b = GetParam();
  vecnorm::Options o = vntest::options_for(b);
  const vecnorm::KeyTable t{Shape{4}, {{"obs", Shape{2}, DType::float32}}};
  const Shape shape{4, 2};
  OwnedStats st{b, DType::float32, shape, Shape{}, true};
  DeviceBuffer x = DeviceBuffer::from_values(b, DType::float32, shape, {1, 2, 3, 4, 5, 6, 7, 8});
  DeviceBuffer y = DeviceBuffer::from_values(b, DType::float32, shape, {-9, -9, -9, -9, -9, -9, -9, -9});
};

TEST_P(ExternalErrors, NameTheKeyAndChangeNothing) {
  auto step = [&](vecnorm::ExternalStats s, Op op = Op::update_and_normalize, CountLayout c = CountLayout::per_key) {
    return [this, s, op, c] { vecnorm::external::step(o, t, c, {{"obs", x.cview(), y.view(), s}}, op); };
  };
  // Normalizing statistics that were never updated.
  EXPECT_TRUE(Throws(step(st.views(), Op::normalize), ErrorCode::zero_count, {"key 'obs'", "count > 0, got 0"}));
  step(st.views())();
  const auto loc = st.loc.bytes(), var = st.var.bytes();
  const auto count = st.count.values();
  // Per-element statistics, one count per key, NonFinite::skip: skips are part of the statistics.
  vecnorm::ExternalStats no_skips = st.views();
  no_skips.skips = {};
  EXPECT_TRUE(Throws(step(no_skips), ErrorCode::invalid_argument, {"key 'obs'", "skips", "nonfinite = skip"}));
  // A count view of the wrong shape.
  DeviceBuffer two(b, DType::int64, Shape{2});
  vecnorm::ExternalStats bad_count = st.views();
  bad_count.count = two.view();
  EXPECT_TRUE(Throws(step(bad_count), ErrorCode::shape_mismatch, {"key 'obs'", "count", "expected [] or [1]", "[2]"}));
  // A loc of the wrong dtype.
  DeviceBuffer wide(b, DType::float64, shape);
  vecnorm::ExternalStats bad_loc = st.views();
  bad_loc.loc = wide.view();
  EXPECT_TRUE(Throws(step(bad_loc), ErrorCode::dtype_mismatch, {"key 'obs'", "loc", "expected float32, got float64"}));
  // loc and var in the same memory.
  vecnorm::ExternalStats same = st.views();
  same.var = same.loc;
  EXPECT_TRUE(Throws(step(same), ErrorCode::invalid_argument, {"key 'obs'", "overlap"}));
  // Missing statistics: required for external steps (updated in place), for
  // a normalize and a denormalize too.
  vecnorm::ExternalStats no_var = st.views();
  no_var.var = {};
  EXPECT_TRUE(Throws(step(no_var, Op::normalize), ErrorCode::shape_mismatch, {"key 'obs'", "statistics var"}));
  vecnorm::ExternalStats no_loc = st.views();
  no_loc.loc = {};
  EXPECT_TRUE(Throws([&] { vecnorm::external::denormalize(o, t, {{"obs", x.cview(), y.view(), no_loc}}); },
                     ErrorCode::shape_mismatch, {"key 'obs'", "statistics loc"}));
  // Pooled statistics have one count per key.
  vecnorm::Options pooled = o;
  pooled.reduce_batch_dims = true;
  EXPECT_TRUE(Throws([&] { vecnorm::external::step(pooled, t, CountLayout::per_element, {}); },
                     ErrorCode::invalid_option, {"reduce_batch_dims", "one count per element"}));
  // Nothing of the statistics changed.
  EXPECT_EQ(st.loc.bytes(), loc);
  EXPECT_EQ(st.var.bytes(), var);
  EXPECT_EQ(st.count.values(), count);
}

// external::check: the step's checks, the same errors, and nothing written.
TEST_P(ExternalErrors, CheckMakesTheStepsChecksAndWritesNothing) {
  auto check = [&](vecnorm::ExternalStats s, Op op = Op::update_and_normalize) {
    return [this, s, op] { vecnorm::external::check(o, t, CountLayout::per_key, {{"obs", x.cview(), y.view(), s}}, op); };
  };
  EXPECT_TRUE(Throws(check(st.views(), Op::normalize), ErrorCode::zero_count, {"key 'obs'", "count > 0, got 0"}));
  DeviceBuffer wide(b, DType::float64, shape);
  vecnorm::ExternalStats bad_loc = st.views();
  bad_loc.loc = wide.view();
  EXPECT_TRUE(Throws(check(bad_loc), ErrorCode::dtype_mismatch, {"key 'obs'", "loc", "expected float32, got float64"}));
  // NonFinite::error scans the input.
  auto nan_x = DeviceBuffer::from_values(b, DType::float32, shape, {1, 2, 3, std::nan(""), 5, 6, 7, 8});
  vecnorm::Options strict = o;
  strict.nonfinite = vecnorm::NonFinite::error;
  EXPECT_TRUE(Throws([&] { vecnorm::external::check(strict, t, CountLayout::per_key, {{"obs", nan_x.cview(), y.view(), st.views()}}); },
                     ErrorCode::nonfinite_input, {"key 'obs'", "batch row 1"}));
  // A call that would pass: no error, and nothing written (statistics, count, output).
  const auto loc = st.loc.bytes(), var = st.var.bytes();
  EXPECT_NO_THROW(check(st.views())());
  EXPECT_EQ(st.loc.bytes(), loc);
  EXPECT_EQ(st.var.bytes(), var);
  EXPECT_EQ(st.count.values(), std::vector<double>{0.0});
  EXPECT_EQ(y.values(), std::vector<double>(8, -9.0));
  // ... and the step itself then runs.
  vecnorm::external::step(o, t, CountLayout::per_key, {{"obs", x.cview(), y.view(), st.views()}});
  EXPECT_EQ(st.count.values(), std::vector<double>{1.0});
}

INSTANTIATE_TEST_SUITE_P(All, ExternalErrors, ::testing::ValuesIn(vntest::test_backends()),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return std::string(vntest::backend_name(info.param));
                         });

// ---------------------------------------------------------------- workspace

/// An allocator that counts its calls (host memory from operator new; device
/// memory through vecnorm::Buffer, which the emulated build also serves).
struct CountingAllocator {
  int allocations = 0, deallocations = 0;
  std::map<void*, std::unique_ptr<vecnorm::Buffer>> device;
  static void* allocate(void* ctx, std::size_t bytes, vecnorm::Device d, vecnorm::Stream) {
    auto* a = static_cast<CountingAllocator*>(ctx);
    ++a->allocations;
    if (d.kind == vecnorm::Device::Kind::cpu) return ::operator new(bytes, std::align_val_t{256});
    auto buf = std::make_unique<vecnorm::Buffer>(Backend::cuda, bytes);
    void* p = buf->data();
    a->device[p] = std::move(buf);
    return p;
  }
  static void deallocate(void* ctx, void* p, std::size_t, vecnorm::Device d, vecnorm::Stream) noexcept {
    auto* a = static_cast<CountingAllocator*>(ctx);
    ++a->deallocations;
    if (d.kind == vecnorm::Device::Kind::cpu)
      ::operator delete(p, std::align_val_t{256});
    else
      a->device.erase(p);
  }
  vecnorm::Allocator hook() { return {&allocate, &deallocate, this}; }
};

TEST_P(ExternalErrors, ReservedWorkspaceServesEveryCallWithoutAllocating) {
  const Backend b = GetParam();
  CountingAllocator counter;
  vecnorm::Options o = vntest::options_for(b);
  o.reduce_batch_dims = true;
  const vecnorm::KeyTable t{Shape{256}, {{"obs", Shape{40}, DType::float32}, {"reward", Shape{}, DType::float32}}};
  vecnorm::Workspace ws(counter.hook());
  const vecnorm::WorkspaceSize need = vecnorm::workspace_size(o, t, 512);
  ws.reserve(need, vntest::device_of(b));
  EXPECT_GT(need.host_bytes + need.device_bytes, 0u) << "a pooled step needs scratch";
  const int reserved = counter.allocations;
  EXPECT_EQ(ws.allocations(), reserved);
  std::vector<OwnedStats> stats;
  stats.emplace_back(b, DType::float32, Shape{40}, Shape{}, false);
  stats.emplace_back(b, DType::float32, Shape{}, Shape{}, false);
  std::mt19937_64 rng(5);
  for (std::int64_t rows : {512, 100, 1, 512}) {
    const auto obs = vntest::random_values(rng, DType::float32, rows, 40, vntest::random_distribution(rng, 40));
    const auto rew = vntest::random_values(rng, DType::float32, rows, 1, vntest::random_distribution(rng, 1));
    auto xo = DeviceBuffer::from_values(b, DType::float32, Shape{rows, 40}, obs);
    auto xr = DeviceBuffer::from_values(b, DType::float32, Shape{rows}, rew);
    DeviceBuffer yo(b, DType::float32, Shape{rows, 40}), yr(b, DType::float32, Shape{rows});
    vecnorm::external::step(o, t, CountLayout::per_key,
                            {{"obs", xo.cview(), yo.view(), stats[0].views()},
                             {"reward", xr.cview(), yr.view(), stats[1].views()}},
                            Op::update_and_normalize, {}, &ws);
  }
  EXPECT_EQ(counter.allocations, reserved) << "a call allocated past the reservation";
  EXPECT_EQ(ws.allocations(), reserved);
  EXPECT_EQ(stats[0].count.values(), std::vector<double>{512 + 100 + 1 + 512});
}

/// Refuses every allocation after the first `budget`.
struct FailingAllocator {
  int budget = 0;
  static void* allocate(void* ctx, std::size_t bytes, vecnorm::Device d, vecnorm::Stream) {
    auto* a = static_cast<FailingAllocator*>(ctx);
    if (a->budget-- <= 0 || d.kind != vecnorm::Device::Kind::cpu) return nullptr;
    return ::operator new(bytes, std::align_val_t{256});
  }
  static void deallocate(void*, void* p, std::size_t, vecnorm::Device, vecnorm::Stream) noexcept {
    ::operator delete(p, std::align_val_t{256});
  }
};

// The scratch of a call is taken, in one block, before anything is written:
// with an allocator that refuses every block the call changes no key; with
// one that serves a single block the whole call (a small key that needs
// little, then a big one that needs more) succeeds. (Taking it key by key,
// the small key was updated and the big one's growth then failed.)
TEST(ExternalScratch, AFailedAllocationChangesNothing) {
  FailingAllocator fail;
  vecnorm::Options o;
  o.reduce_batch_dims = true;
  const vecnorm::KeyTable t{Shape{4}, {{"small", Shape{2}, DType::float32}, {"big", Shape{500}, DType::float32}}};
  vecnorm::Workspace ws(vecnorm::Allocator{&FailingAllocator::allocate, &FailingAllocator::deallocate, &fail});
  OwnedStats small(Backend::cpu, DType::float32, Shape{2}, Shape{}, false);
  OwnedStats big(Backend::cpu, DType::float32, Shape{500}, Shape{}, false);
  auto xs = DeviceBuffer::from_values(Backend::cpu, DType::float32, Shape{4, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  std::vector<double> bigx(2000);
  for (std::size_t i = 0; i < bigx.size(); ++i) bigx[i] = static_cast<double>(i % 7);
  auto xb = DeviceBuffer::from_values(Backend::cpu, DType::float32, Shape{4, 500}, bigx);
  DeviceBuffer ys(Backend::cpu, DType::float32, Shape{4, 2}), yb(Backend::cpu, DType::float32, Shape{4, 500});
  EXPECT_TRUE(Throws(
      [&] {
        vecnorm::external::step(o, t, CountLayout::per_key,
                                {{"small", xs.cview(), ys.view(), small.views()}, {"big", xb.cview(), yb.view(), big.views()}},
                                Op::update_and_normalize, {}, &ws);
      },
      ErrorCode::invalid_argument, {"allocator returned no memory"}));
  EXPECT_EQ(small.count.values(), std::vector<double>{0.0}) << "the small key was updated before the failure";
  EXPECT_EQ(big.count.values(), std::vector<double>{0.0});
  EXPECT_EQ(small.loc.values(), std::vector<double>(2, 0.0));
  fail.budget = 1;  // one block: enough when the call takes all it needs at once
  vecnorm::external::step(o, t, CountLayout::per_key,
                          {{"small", xs.cview(), ys.view(), small.views()}, {"big", xb.cview(), yb.view(), big.views()}},
                          Op::update_and_normalize, {}, &ws);
  EXPECT_EQ(small.count.values(), std::vector<double>{4.0});
  EXPECT_EQ(big.count.values(), std::vector<double>{4.0});
}

}  // namespace
