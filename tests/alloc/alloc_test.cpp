// tests/alloc/alloc_test.cpp -- steady-state CPU calls allocate nothing.
//
// This executable replaces the global operator new/delete with counting
// versions (C++ allocations: std::vector, std::string, ...). After warm-up
// calls have grown the workspaces, every further call of each kind -- steps in
// every mode, update, normalize, denormalize, an affine apply, a stateless step,
// large calls that run on several threads and small ones -- must make zero
// allocations. (malloc calls inside OpenMP's runtime are not counted here.)
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <random>
#include <vector>

#include <vecnorm/vecnorm.hpp>

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  const std::size_t al = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(al, (n + al - 1) / al * al)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

using vecnorm::DType;
using vecnorm::Estimator;
using vecnorm::Shape;

/// Allocations made by f().
template <class F>
long allocations_of(F&& f) {
  g_allocations = 0;
  g_counting = true;
  f();
  g_counting = false;
  return g_allocations.load();
}

struct Keys {
  std::int64_t batch, feat;
  std::vector<float> obs, yobs, rew, yrew;
  Keys(std::int64_t b, std::int64_t f) : batch(b), feat(f) {
    std::mt19937 gen(5);
    std::normal_distribution<float> nd(1.f, 2.f);
    obs.resize(static_cast<std::size_t>(b * f));
    rew.resize(static_cast<std::size_t>(b));
    for (auto& v : obs) v = nd(gen);
    for (auto& v : rew) v = nd(gen);
    yobs.resize(obs.size());
    yrew.resize(rew.size());
  }
  vecnorm::KeyTable table() const {
    vecnorm::KeyTable t;
    t.batch_shape = Shape{batch};
    t.keys = {{"observation", Shape{feat}, DType::float32}, {"reward", Shape{}, DType::float32}};
    return t;
  }
  std::vector<vecnorm::KeyData> data() {
    return {{"observation", vecnorm::view(static_cast<const float*>(obs.data()), Shape{batch, feat}),
             vecnorm::view(yobs.data(), Shape{batch, feat})},
            {"reward", vecnorm::view(static_cast<const float*>(rew.data()), Shape{batch}), vecnorm::view(yrew.data(), Shape{batch})}};
  }
};

class Alloc : public ::testing::TestWithParam<std::tuple<bool, Estimator, std::int64_t>> {};

TEST_P(Alloc, SteadyStateCallsAllocateNothing) {
  const auto& [pooled, est, batch] = GetParam();
  Keys k(batch, 37);
  vecnorm::Options o;
  o.backend = vecnorm::Backend::cpu;
  o.estimator = est;
  o.reduce_batch_dims = pooled;
  vecnorm::VecNorm vn(o, k.table());
  const std::vector<vecnorm::KeyData> d = k.data();
  const std::span<const vecnorm::KeyData> all(d), obs_only(d.data(), 1);
  for (int i = 0; i < 2; ++i) {  // warm-up: workspaces grow here
    vn.step(all);
    vn.step(obs_only);
    vn.update(all);
    vn.normalize(all);
  }
  EXPECT_EQ(allocations_of([&] { for (int i = 0; i < 5; ++i) vn.step(all); }), 0) << "step";
  EXPECT_EQ(allocations_of([&] { vn.step(obs_only); }), 0) << "step with a key absent";
  EXPECT_EQ(allocations_of([&] { vn.update(all); }), 0) << "update";
  EXPECT_EQ(allocations_of([&] { vn.normalize(all); }), 0) << "normalize";

  // denormalize: y (normalized) back to x-space, into separate buffers.
  std::vector<float> back_obs(k.obs.size()), back_rew(k.rew.size());
  const vecnorm::KeyData inv[2] = {
      {"observation", vecnorm::view(static_cast<const float*>(k.yobs.data()), Shape{batch, 37}),
       vecnorm::view(back_obs.data(), Shape{batch, 37})},
      {"reward", vecnorm::view(static_cast<const float*>(k.yrew.data()), Shape{batch}), vecnorm::view(back_rew.data(), Shape{batch})}};
  vn.denormalize(inv);
  EXPECT_EQ(allocations_of([&] { vn.denormalize(inv); }), 0) << "denormalize";

  const vecnorm::AffineNormalizer affine = vn.to_affine();
  affine.apply(all);
  EXPECT_EQ(allocations_of([&] { affine.apply(all); }), 0) << "affine apply";

  vn.freeze();
  vn.step(all);
  EXPECT_EQ(allocations_of([&] { vn.step(all); }), 0) << "frozen step";
}

INSTANTIATE_TEST_SUITE_P(All, Alloc,
                         ::testing::Combine(::testing::Bool(), ::testing::Values(Estimator::torchrl, Estimator::stable),
                                            // 1 env, and enough envs for the multi-threaded path
                                            ::testing::Values<std::int64_t>(1, 4096)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param) ? "pooled_" : "per_element_") +
                                  vecnorm::to_string(std::get<1>(info.param)) + "_b" +
                                  std::to_string(std::get<2>(info.param));
                         });

TEST(AllocStateless, SteadyStateStepsAllocateNothing) {
  const std::int64_t B = 4096, F = 37;
  vecnorm::KeyTable t;
  t.batch_shape = Shape{B};
  t.keys = {{"observation", Shape{F}, DType::float32}};
  vecnorm::Options o;
  o.backend = vecnorm::Backend::cpu;
  std::vector<float> x(static_cast<std::size_t>(B * F), 1.5f), y(x.size()), loc(x.size()), var(x.size());
  std::vector<std::int64_t> count(x.size(), 0);
  const Shape s{B, F};
  const vecnorm::StatelessItem item{"observation",
                                     vecnorm::view(static_cast<const float*>(x.data()), s),
                                     vecnorm::view(y.data(), s),
                                     {vecnorm::view(static_cast<const float*>(loc.data()), s),
                                      vecnorm::view(static_cast<const float*>(var.data()), s),
                                      vecnorm::view(static_cast<const std::int64_t*>(count.data()), s)},
                                     {vecnorm::view(loc.data(), s), vecnorm::view(var.data(), s), vecnorm::view(count.data(), s)}};
  vecnorm::stateless::step(o, t, {item});
  vecnorm::stateless::step(o, t, {item});
  EXPECT_EQ(allocations_of([&] { vecnorm::stateless::step(o, t, {item}); }), 0);
  EXPECT_EQ(allocations_of([&] { vecnorm::stateless::step(o, t, {item}, vecnorm::Op::normalize); }), 0);
}

// The counter itself works (a test that could not fail would prove nothing).
TEST(AllocCounter, CountsAllocations) {
  EXPECT_GE(allocations_of([] { std::vector<int> v(100); (void)v; }), 1);
}

}  // namespace
