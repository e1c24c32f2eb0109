// tests/emulated/launch_test.cpp -- launches per step and what a step must not
// do (allocate, copy, synchronize), counted by the emulated CUDA runtime while
// the real host code of the CUDA backend runs. The GPU twin of this test reads
// the launch count from a captured CUDA graph (tests/gpu/graph_test.cpp).
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include <vecnorm/vecnorm.hpp>

#include "cuda_runtime_emu.hpp"

namespace {

using vecnorm::Backend;
using vecnorm::Buffer;
using vecnorm::DType;

struct Snapshot {
  long launches, mallocs, frees, copies, syncs;
};
Snapshot now() {
  const auto& c = vecnorm_emu::counters;
  return {c.launches.load(), c.mallocs.load(), c.frees.load(), c.copies.load(), c.syncs.load()};
}

struct Keys {
  vecnorm::KeyTable table;
  std::vector<Buffer> x, y;
  std::vector<vecnorm::KeyData> batch;
  Keys(int keys, std::int64_t B, std::int64_t F) {
    table.batch_shape = {B};
    for (int k = 0; k < keys; ++k) table.keys.push_back({"key" + std::to_string(k), {F}, DType::float32});
    for (int k = 0; k < keys; ++k) {
      x.emplace_back(Backend::cuda, B * F * 4);
      y.emplace_back(Backend::cuda, B * F * 4);
    }
    for (int k = 0; k < keys; ++k) {
      const auto ks = static_cast<std::size_t>(k);
      std::vector<float> h(static_cast<std::size_t>(B * F));
      for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<float>((i * 7 + ks) % 13);
      x[ks].copy_from_host(h.data(), h.size() * 4);
      batch.push_back({table.keys[ks].name, x[ks].view(DType::float32, {B, F}), y[ks].view(DType::float32, {B, F})});
    }
  }
};

/// Runs `call` once to warm up, then again, and returns the counts of the second run.
template <class F>
Snapshot counted(F&& call) {
  call();
  const Snapshot a = now();
  call();
  const Snapshot b = now();
  return {b.launches - a.launches, b.mallocs - a.mallocs, b.frees - a.frees, b.copies - a.copies, b.syncs - a.syncs};
}

void expect_step_counts(const Snapshot& s, long launches, const std::string& what) {
  EXPECT_EQ(s.launches, launches) << what << ": kernel launches";
  EXPECT_EQ(s.mallocs, 0) << what << ": allocations";
  EXPECT_EQ(s.frees, 0) << what << ": frees";
  EXPECT_EQ(s.copies, 0) << what << ": host<->device copies";
  EXPECT_EQ(s.syncs, 0) << what << ": host synchronizations";
}

class Launches : public ::testing::TestWithParam<vecnorm::Estimator> {};

TEST_P(Launches, PerStepForAnyNumberOfKeys) {
  ASSERT_TRUE(vecnorm::cuda_available()) << "the emulated build always has a device";
  for (int keys : {1, 3, 16, 17, 40}) {
    const long groups = (keys + 15) / 16;
    for (bool pooled : {false, true}) {
      Keys s(keys, 300, 5);
      vecnorm::Options o;
      o.backend = Backend::cuda;
      o.estimator = GetParam();
      o.reduce_batch_dims = pooled;
      vecnorm::VecNorm vn(o, s.table);
      const std::string what = std::to_string(keys) + " keys, " + (pooled ? "pooled" : "per-element");
      expect_step_counts(counted([&] { vn.step(s.batch); }), (pooled ? 2 : 1) * groups, what + " step");
      expect_step_counts(counted([&] { vn.update(s.batch); }), groups, what + " update");
      expect_step_counts(counted([&] { vn.normalize(s.batch); }), (pooled ? 2 : 1) * groups, what + " normalize");
      vn.freeze();
      expect_step_counts(counted([&] { vn.step(s.batch); }), (pooled ? 2 : 1) * groups, what + " frozen step");
      const vecnorm::AffineNormalizer affine = vn.to_affine();
      expect_step_counts(counted([&] { affine.apply(s.batch); }), groups, what + " affine apply");
    }
  }
}

// Keys of both statistics dtypes (stats_dtype none: float64 for a float64
// input) in the order float32, float64, float32: one group per dtype, so two
// launches a per-element step (four pooled), not one per run.
TEST_P(Launches, OneGroupPerStatisticsDType) {
  const std::int64_t B = 64, F = 3;
  vecnorm::KeyTable table{{B}, {{"a", {F}, DType::float32}, {"b", {F}, DType::float64}, {"c", {F}, DType::float32}}};
  std::vector<Buffer> x, y;
  std::vector<vecnorm::KeyData> batch;
  for (const auto& k : table.keys) {
    const std::size_t bytes = static_cast<std::size_t>(B * F) * vecnorm::dtype_size(k.dtype);
    x.emplace_back(Backend::cuda, bytes);
    y.emplace_back(Backend::cuda, bytes);
    std::vector<unsigned char> zeros(bytes, 0);
    x.back().copy_from_host(zeros.data(), bytes);
  }
  for (std::size_t k = 0; k < table.keys.size(); ++k)
    batch.push_back({table.keys[k].name, std::as_const(x[k]).view(table.keys[k].dtype, {B, F}),
                     y[k].view(table.keys[k].dtype, {B, F})});
  for (bool pooled : {false, true}) {
    vecnorm::Options o;
    o.backend = Backend::cuda;
    o.estimator = GetParam();
    o.reduce_batch_dims = pooled;
    vecnorm::VecNorm vn(o, table);
    expect_step_counts(counted([&] { vn.step(batch); }), pooled ? 4 : 2,
                       std::string(pooled ? "pooled" : "per-element") + " step of float32, float64, float32 keys");
  }
}

TEST_P(Launches, StatelessStepIsOneLaunch) {
  const std::int64_t B = 64, F = 3;
  Keys s(2, B, F);
  vecnorm::Options o;
  o.backend = Backend::cuda;
  o.estimator = GetParam();
  std::vector<Buffer> stats;
  for (int k = 0; k < 2; ++k)
    for (int part = 0; part < 3; ++part) stats.emplace_back(Backend::cuda, B * F * 8);
  std::vector<vecnorm::StatelessItem> items;
  for (std::size_t k = 0; k < 2; ++k) {
    Buffer& loc = stats[3 * k];
    Buffer& var = stats[3 * k + 1];
    Buffer& cnt = stats[3 * k + 2];
    const vecnorm::StatsView sv{loc.view(DType::float32, {B, F}), var.view(DType::float32, {B, F}),
                                cnt.view(DType::int64, {B, F})};
    items.push_back({s.batch[k].key, s.batch[k].x, s.batch[k].y, {sv.loc, sv.var, sv.count}, sv});
  }
  expect_step_counts(counted([&] { vecnorm::stateless::step(o, s.table, items); }), 1, "stateless step");
}

// Scratch is reserved up front: steps, updates and normalizes of per-element
// statistics at configuration (their shapes are fixed), pooled ones and every
// denormalize with VecNorm::reserve.
// The first calls then allocate nothing either (a CUDA graph could capture
// them); calls past the reservation take memory through Options::allocator.
TEST_P(Launches, FirstCallsAllocateNothingOnceReserved) {
  for (bool pooled : {false, true}) {
    Keys s(3, 300, 5);
    vecnorm::Options o;
    o.backend = Backend::cuda;
    o.estimator = GetParam();
    o.reduce_batch_dims = pooled;
    vecnorm::VecNorm vn(o, s.table);
    if (pooled) vn.reserve(300);
    const std::string what = pooled ? "pooled" : "per-element";
    Snapshot a = now();
    vn.step(s.batch);
    vn.update(s.batch);
    vn.normalize(s.batch);
    Snapshot b = now();
    EXPECT_EQ(b.mallocs - a.mallocs, 0) << what << ": allocations in the first calls";
    EXPECT_EQ(b.frees - a.frees, 0) << what << ": frees in the first calls";
    // A denormalize's maps (as large as per-element statistics) are reserved
    // by reserve(), not at configuration.
    if (!pooled) vn.reserve(300);
    a = now();
    vn.denormalize(s.batch);
    b = now();
    EXPECT_EQ(b.mallocs - a.mallocs, 0) << what << ": allocations in a denormalize after reserve()";
  }
}

/// A bump allocator over one block allocated before the calls: what a
/// framework's caching allocator looks like to vecnorm.
struct Pool {
  Buffer block{Backend::cuda, 1 << 20};
  std::size_t used = 0;
  int allocations = 0, deallocations = 0;
  static void* allocate(void* ctx, std::size_t bytes, vecnorm::Device device, vecnorm::Stream) {
    auto* p = static_cast<Pool*>(ctx);
    if (device.kind != vecnorm::Device::Kind::cuda || p->used + bytes > p->block.size()) return nullptr;
    void* out = static_cast<char*>(p->block.data()) + p->used;
    p->used += (bytes + 255) / 256 * 256;
    ++p->allocations;
    return out;
  }
  static void deallocate(void* ctx, void*, std::size_t, vecnorm::Device, vecnorm::Stream) noexcept {
    ++static_cast<Pool*>(ctx)->deallocations;
  }
};

TEST_P(Launches, ScratchPastTheReservationComesFromTheAllocator) {
  Pool pool;
  Keys s(3, 4000, 5);
  vecnorm::Options o;
  o.backend = Backend::cuda;
  o.estimator = GetParam();
  o.reduce_batch_dims = true;
  o.allocator = {&Pool::allocate, &Pool::deallocate, &pool};
  vecnorm::KeyTable small = s.table;
  small.batch_shape = {8};  // reserved for batches of 8 rows: a step of 4000 needs more
  vecnorm::VecNorm vn(o, small);
  const int reserved = pool.allocations;
  const Snapshot a = now();
  vn.step(s.batch);
  vn.step(s.batch);
  const Snapshot b = now();
  EXPECT_EQ(b.mallocs - a.mallocs, 0) << "cudaMalloc in a step (the allocator should serve it)";
  EXPECT_EQ(pool.allocations - reserved, 1) << "one growth through the allocator, then none";
  EXPECT_EQ(pool.deallocations, 1) << "the reserved block given back on growth";
}

TEST_P(Launches, ExternalStepIsOneLaunch) {
  const std::int64_t B = 64, F = 3;
  Keys s(2, B, F);
  vecnorm::Options o;
  o.backend = Backend::cuda;
  o.estimator = GetParam();
  o.nonfinite = vecnorm::NonFinite::propagate;  // no skips needed
  std::vector<Buffer> stats;
  std::vector<vecnorm::ExternalItem> items;
  for (std::size_t k = 0; k < 2; ++k) {
    stats.emplace_back(Backend::cuda, B * F * 4);
    stats.emplace_back(Backend::cuda, B * F * 4);
    stats.emplace_back(Backend::cuda, 8);
  }
  for (std::size_t k = 0; k < 2; ++k)
    items.push_back({s.batch[k].key, s.batch[k].x, s.batch[k].y,
                     {stats[3 * k].view(DType::float32, {B, F}), stats[3 * k + 1].view(DType::float32, {B, F}),
                      stats[3 * k + 2].view(DType::int64, {}), {}, {}}});
  vecnorm::Workspace ws;
  ws.reserve(vecnorm::workspace_size(o, s.table), vecnorm::Device::cuda(0));
  expect_step_counts(counted([&] {
                       vecnorm::external::step(o, s.table, vecnorm::CountLayout::per_key, items,
                                               vecnorm::Op::update_and_normalize, {}, &ws);
                     }),
                     1, "external step");
}

INSTANTIATE_TEST_SUITE_P(Emulated, Launches,
                         ::testing::Values(vecnorm::Estimator::torchrl, vecnorm::Estimator::stable),
                         [](const auto& info) { return std::string(vecnorm::to_string(info.param)); });

}  // namespace
