// tests/shared/shared_test.cpp -- statistics shared by processes (docs/shared.md).
//
// Expected values come from a plain VecNorm fed the same data (bit for bit),
// from the long-double reference (tests/reference), or from exact sums: the
// data are half-integers, so sums of values and of squares are exact and, at
// decay 1, the statistics of any set of steps are known exactly whatever the
// order in which processes applied them.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <limits>
#include <new>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "reference.hpp"
#include "vecnorm/vecnorm.hpp"

namespace {

using vecnorm::DType;
using vecnorm::Error;
using vecnorm::ErrorCode;
using vecnorm::Estimator;
using vecnorm::KeyData;
using vecnorm::KeyTable;
using vecnorm::Options;
using vecnorm::Shape;
using vecnorm::SharedVecNorm;
using vecnorm::State;
using vecnorm::VecNorm;

// ---------------------------------------------------------------- helpers

/// A segment name unique to this process and call.
std::string unique_name(const std::string& tag) {
  static std::atomic<int> counter{0};
  return "/vecnorm-test-" + std::to_string(::getpid()) + "-" + tag + "-" + std::to_string(counter++);
}

/// Removes the segment at the end of a test, whatever happened.
struct Unlinker {
  std::string name;
  ~Unlinker() {
    try {
      SharedVecNorm::unlink(name);
    } catch (const Error&) {
    }
  }
};

std::uint64_t mix(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// A half-integer in [-15, 15] + 2 f: exact in float and double, and so are its square and sums.
double hval(std::uint64_t a, std::uint64_t b, std::uint64_t c, std::int64_t f) {
  const int h = static_cast<int>(mix(mix(mix(a) ^ b) ^ c) % 61) - 30;
  return 0.5 * h + 2.0 * static_cast<double>(f);
}

/// A host tensor of float32 or float64.
struct Buf {
  DType dtype = DType::float64;
  Shape shape;
  std::vector<double> storage;  // holds numel values of either dtype (double is the larger)

  Buf() = default;
  Buf(DType d, Shape s) : dtype(d), shape(s), storage(static_cast<std::size_t>(s.numel()), 0.0) {}
  std::int64_t numel() const { return shape.numel(); }
  void set(std::int64_t i, double v) {
    if (dtype == DType::float32)
      reinterpret_cast<float*>(storage.data())[i] = static_cast<float>(v);
    else
      storage[static_cast<std::size_t>(i)] = v;
  }
  double get(std::int64_t i) const {
    return dtype == DType::float32 ? static_cast<double>(reinterpret_cast<const float*>(storage.data())[i])
                                   : storage[static_cast<std::size_t>(i)];
  }
  std::vector<double> values() const {
    std::vector<double> v(static_cast<std::size_t>(numel()));
    for (std::int64_t i = 0; i < numel(); ++i) v[static_cast<std::size_t>(i)] = get(i);
    return v;
  }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * vecnorm::dtype_size(dtype); }
  bool same_bytes(const Buf& o) const {
    return nbytes() == o.nbytes() && std::memcmp(storage.data(), o.storage.data(), nbytes()) == 0;
  }
  vecnorm::ConstTensorView cview() const { return {storage.data(), dtype, shape}; }
  vecnorm::TensorView view() { return {storage.data(), dtype, shape, vecnorm::Device::cpu()}; }
};

/// Exact sums of a set of steps: per feature (pooled) or per element (per-element).
struct Exact {
  std::vector<long double> s1, s2;
  long double n = 0;  // samples per statistics element
  explicit Exact(std::size_t numel = 0) : s1(numel, 0), s2(numel, 0) {}
  void add(const Buf& x, bool pooled, long double times = 1) {
    const std::int64_t stats = static_cast<std::int64_t>(s1.size());
    const std::int64_t rows = x.numel() / stats;
    for (std::int64_t i = 0; i < x.numel(); ++i) {
      const long double v = x.get(i);
      const std::size_t k = static_cast<std::size_t>(pooled ? i % stats : i);
      s1[k] += times * v;
      s2[k] += times * v * v;
    }
    n += times * (pooled ? rows : 1);
  }
  void add(const Exact& o, long double times) {
    for (std::size_t k = 0; k < s1.size(); ++k) {
      s1[k] += times * o.s1[k];
      s2[k] += times * o.s2[k];
    }
    n += times * o.n;
  }
};

/// The read-outs of `vn` against the exact mean and population variance of
/// the data summed in `e` (decay 1, so there is no bias correction). `rtol`
/// scales the tolerances by the data's magnitude (mu) and its square (v).
template <class N>
::testing::AssertionResult MatchesExact(const N& vn, const std::string& key, const Exact& e, double rtol,
                                        double mag) {
  const std::vector<double> loc = vn.loc(key), scale = vn.scale(key);
  if (loc.size() != e.s1.size())
    return ::testing::AssertionFailure() << key << ": " << loc.size() << " statistics, expected " << e.s1.size();
  const double eps = vn.options().eps;
  for (std::size_t k = 0; k < loc.size(); ++k) {
    const long double mean = e.s1[k] / e.n;
    const long double var = e.s2[k] / e.n - mean * mean;
    const double tol_mu = rtol * mag, tol_v = rtol * mag * mag;
    if (!(std::fabs(loc[k] - static_cast<double>(mean)) <= tol_mu))
      return ::testing::AssertionFailure() << key << " loc[" << k << "]: expected " << static_cast<double>(mean)
                                           << " (exact), got " << loc[k] << ", tolerance " << tol_mu;
    const double v = scale[k] * scale[k];
    const bool ok = scale[k] == eps ? static_cast<double>(var) <= eps * eps + tol_v
                                    : std::fabs(v - static_cast<double>(var)) <= tol_v;
    if (!ok)
      return ::testing::AssertionFailure() << key << " scale[" << k << "]^2: expected " << static_cast<double>(var)
                                           << " (exact variance), got " << v << ", tolerance " << tol_v;
  }
  return ::testing::AssertionSuccess();
}

/// Relative rounding tolerance after `steps` steps (the error model of tests/support/check.hpp).
double rtol_for(DType stats, int steps) {
  const double u = stats == DType::float64 ? std::ldexp(1.0, -53) : std::ldexp(1.0, -24);
  return u * 16.0 * (steps + 4);
}

/// Waits for `pid` up to `seconds`; kills it and returns -1 on timeout, else the wait status.
int wait_for(pid_t pid, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid) return st;
    if (r < 0) return -2;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

std::string describe(int status) {
  if (status == -1) return "timed out (stuck?)";
  if (status < 0) return "waitpid failed";
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

/// Runs `body` in the child and leaves with _exit: 0 on success, 3 on an
/// exception (printed), never returning into the test framework.
template <class F>
[[noreturn]] void child_main(F&& body) {
  int code = 0;
  try {
    code = body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child %d: %s\n", static_cast<int>(::getpid()), e.what());
    code = 3;
  }
  std::fflush(stderr);
  ::_exit(code);
}

template <class F>
pid_t spawn(F&& body) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid == 0) child_main(body);
  return pid;
}

Options shared_options(Estimator est, bool pooled, DType stats, double decay) {
  Options o;
  o.estimator = est;
  o.reduce_batch_dims = pooled;
  o.stats_dtype = stats;
  o.decay = decay;
  o.eps = 1e-4;
  o.cpu_threads = 1;  // children of fork() never start OpenMP threads
  return o;
}

std::string param_name(Estimator est, bool pooled, DType stats) {
  return std::string(vecnorm::to_string(est)) + (pooled ? "_pooled_" : "_per_element_") + vecnorm::to_string(stats);
}

// ================================================================ 1. one process: create / attach round trip

using RoundTripParam = std::tuple<Estimator, bool, DType>;
class SharedRoundTrip : public ::testing::TestWithParam<RoundTripParam> {};

TEST_P(SharedRoundTrip, EqualsPlainVecNormAndReference) {
  const Estimator est = std::get<0>(GetParam());  // (plain variables: lambdas capture them)
  const bool pooled = std::get<1>(GetParam());
  const DType stats = std::get<2>(GetParam());
  const std::int64_t B = 8, F = 3;
  Options o = shared_options(est, pooled, stats, 0.9);
  const KeyTable table{Shape{B}, {{"obs", Shape{F}, DType::float32}, {"agents/reward", Shape{}, DType::float64}}};
  const std::string name = unique_name("roundtrip");
  Unlinker cleanup{name};
  SharedVecNorm a = SharedVecNorm::create(name, o, table);
  SharedVecNorm b = SharedVecNorm::attach(name.substr(1), o, table);  // the leading '/' is optional
  EXPECT_EQ(b.name(), name);
  VecNorm plain(o, table);
  vnref::StatefulKey ref_obs({est == Estimator::stable ? vnref::Estimator::stable : vnref::Estimator::torchrl, 0.9, 1e-4},
                             pooled, F, B);
  vnref::StatefulKey ref_rew({est == Estimator::stable ? vnref::Estimator::stable : vnref::Estimator::torchrl, 0.9, 1e-4},
                             pooled, 1, B);

  const int kSteps = 60;
  Buf x(DType::float32, Shape{B, F}), r(DType::float64, Shape{B});
  Buf ys(DType::float32, Shape{B, F}), yp(DType::float32, Shape{B, F});
  Buf rys(DType::float64, Shape{B}), ryp(DType::float64, Shape{B});
  for (int t = 0; t < kSteps; ++t) {
    for (std::int64_t i = 0; i < B * F; ++i) x.set(i, hval(1, static_cast<std::uint64_t>(t), static_cast<std::uint64_t>(i), i % F));
    for (std::int64_t i = 0; i < B; ++i) r.set(i, hval(2, static_cast<std::uint64_t>(t), static_cast<std::uint64_t>(i), 0));
    SharedVecNorm& h = t % 2 ? a : b;  // alternate handles: they share one set of statistics
    const bool with_reward = t % 7 != 3;
    if (with_reward) {
      h.step({{"obs", x.cview(), ys.view()}, {"agents/reward", r.cview(), rys.view()}});
      plain.step({{"obs", x.cview(), yp.view()}, {"agents/reward", r.cview(), ryp.view()}});
      ASSERT_TRUE(rys.same_bytes(ryp)) << "reward output differs at step " << t;
      ref_rew.update(r.values(), B);
    } else {
      h.step({{"obs", x.cview(), ys.view()}});
      plain.step({{"obs", x.cview(), yp.view()}});
    }
    ASSERT_TRUE(ys.same_bytes(yp)) << "obs output differs at step " << t;
    ref_obs.update(x.values(), B);
  }
  EXPECT_EQ(a.generation(), static_cast<std::uint64_t>(kSteps));
  EXPECT_EQ(a.recovered_owner_deaths(), 0u);

  // Read-outs: bit-equal to the plain VecNorm from either handle, close to the reference.
  for (const char* key : {"obs", "agents/reward"}) {
    EXPECT_EQ(a.count(key), plain.count(key)) << key;
    EXPECT_EQ(b.count(key), plain.count(key)) << key;
    EXPECT_EQ(a.loc(key), plain.loc(key)) << key;
    EXPECT_EQ(b.scale(key), plain.scale(key)) << key;
    EXPECT_EQ(a.stats_shape(key), plain.stats_shape(key)) << key;
  }
  const double rtol = rtol_for(stats, kSteps) * 4;  // inputs up to 19.5 in magnitude
  const auto ref_close = [&](const std::vector<double>& got, const std::vector<double>& want, const char* what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    for (std::size_t i = 0; i < got.size(); ++i)
      EXPECT_NEAR(got[i], want[i], rtol * 20 * 20) << what << "[" << i << "]";
  };
  ref_close(a.loc("obs"), ref_obs.loc(), "obs loc vs reference");
  ref_close(a.scale("obs"), ref_obs.scale(), "obs scale vs reference");
  ref_close(a.loc("agents/reward"), ref_rew.loc(), "reward loc vs reference");
  ref_close(a.scale("agents/reward"), ref_rew.scale(), "reward scale vs reference");
  EXPECT_EQ(a.count("obs"), ref_obs.count());
  EXPECT_EQ(a.count("agents/reward"), ref_rew.count());

  // export_state: the plain VecNorm's state, bit for bit; it imports into a VecNorm.
  const State sa = a.export_state(), sp = plain.export_state();
  ASSERT_EQ(sa.keys.size(), sp.keys.size());
  for (std::size_t k = 0; k < sa.keys.size(); ++k) {
    EXPECT_EQ(sa.keys[k].loc, sp.keys[k].loc);
    EXPECT_EQ(sa.keys[k].var, sp.keys[k].var);
    EXPECT_EQ(sa.keys[k].count, sp.keys[k].count);
    EXPECT_EQ(sa.keys[k].stats_shape, sp.keys[k].stats_shape);
  }
  EXPECT_EQ(vecnorm::encode_state(sa), vecnorm::encode_state(sp));
  VecNorm fresh;
  fresh.import_state(sa);
  EXPECT_EQ(fresh.loc("obs"), plain.loc("obs"));

  // normalize, denormalize, to_affine: as the plain VecNorm.
  a.normalize({{"obs", x.cview(), ys.view()}});
  plain.normalize({{"obs", x.cview(), yp.view()}});
  EXPECT_TRUE(ys.same_bytes(yp));
  b.denormalize({{"obs", ys.cview(), x.view()}});
  Buf xp(DType::float32, Shape{B, F});
  plain.denormalize({{"obs", yp.cview(), xp.view()}});
  EXPECT_TRUE(x.same_bytes(xp));
  a.to_affine().apply({{"obs", x.cview(), ys.view()}});
  plain.to_affine().apply({{"obs", x.cview(), yp.view()}});
  EXPECT_TRUE(ys.same_bytes(yp));
  EXPECT_EQ(a.generation(), static_cast<std::uint64_t>(kSteps));  // none of those publishes

  // freeze is local to a handle: a frozen b normalizes, a still updates.
  b.freeze();
  EXPECT_TRUE(b.is_frozen());
  EXPECT_FALSE(a.is_frozen());
  VecNorm frozen = plain.frozen_copy();
  b.step({{"obs", x.cview(), ys.view()}});
  frozen.step({{"obs", x.cview(), yp.view()}});
  EXPECT_TRUE(ys.same_bytes(yp));
  b.update({{"obs", x.cview(), {}}});
  EXPECT_EQ(a.generation(), static_cast<std::uint64_t>(kSteps));
  EXPECT_EQ(b.count("obs"), plain.count("obs"));
  a.step({{"obs", x.cview(), ys.view()}});
  plain.step({{"obs", x.cview(), yp.view()}});
  EXPECT_TRUE(ys.same_bytes(yp));
  EXPECT_EQ(b.count("obs"), plain.count("obs"));
  EXPECT_EQ(a.generation(), static_cast<std::uint64_t>(kSteps + 1));
  b.unfreeze();
  b.update({{"obs", x.cview(), {}}});
  plain.update({{"obs", x.cview(), {}}});
  EXPECT_EQ(a.loc("obs"), plain.loc("obs"));

  // import_state: one publication that replaces every key, seen by every handle.
  VecNorm other(o, table);
  for (int t = 0; t < 3; ++t) {
    for (std::int64_t i = 0; i < B * F; ++i) x.set(i, 100.0 + hval(9, static_cast<std::uint64_t>(t), static_cast<std::uint64_t>(i), 0));
    other.step({{"obs", x.cview(), yp.view()}, {"agents/reward", r.cview(), ryp.view()}});
  }
  const std::uint64_t g = a.generation();
  a.import_state(other.export_state());
  EXPECT_EQ(a.generation(), g + 1);
  EXPECT_EQ(b.loc("obs"), other.loc("obs"));
  EXPECT_EQ(b.scale("agents/reward"), other.scale("agents/reward"));
  EXPECT_EQ(b.count("obs"), 3 * (pooled ? B : 1));
  EXPECT_EQ(vecnorm::encode_state(b.export_state()), vecnorm::encode_state(other.export_state()));
}

INSTANTIATE_TEST_SUITE_P(All, SharedRoundTrip,
                         ::testing::Combine(::testing::Values(Estimator::torchrl, Estimator::stable),
                                            ::testing::Bool(), ::testing::Values(DType::float32, DType::float64)),
                         [](const auto& info) {
                           return param_name(std::get<0>(info.param), std::get<1>(info.param),
                                             std::get<2>(info.param));
                         });

// ================================================================ 2. forked workers stepping concurrently

using ConcurrencyParam = std::tuple<Estimator, bool, DType>;
class SharedWorkers : public ::testing::TestWithParam<ConcurrencyParam> {};

constexpr int kWorkers = 4;
constexpr int kWorkerSteps = 200;
constexpr std::int64_t kRows = 16, kFeat = 3;

/// Worker w's data at step s (the input dtype is the stats dtype).
Buf worker_obs(DType dt, int w, int s) {
  Buf x(dt, Shape{kRows, kFeat});
  for (std::int64_t i = 0; i < x.numel(); ++i)
    x.set(i, hval(static_cast<std::uint64_t>(w) + 10, static_cast<std::uint64_t>(s), static_cast<std::uint64_t>(i), i % kFeat));
  return x;
}
Buf worker_reward(DType dt, int w, int s) {
  Buf r(dt, Shape{kRows});
  for (std::int64_t i = 0; i < r.numel(); ++i)
    r.set(i, hval(static_cast<std::uint64_t>(w) + 50, static_cast<std::uint64_t>(s), static_cast<std::uint64_t>(i), 0));
  return r;
}

TEST_P(SharedWorkers, ForkedWorkersStepAtomically) {
  const Estimator est = std::get<0>(GetParam());  // (plain variables: lambdas capture them)
  const bool pooled = std::get<1>(GetParam());
  const DType stats = std::get<2>(GetParam());
  const Options o = shared_options(est, pooled, stats, 1.0);
  const KeyTable table{Shape{kRows}, {{"obs", Shape{kFeat}, stats}, {"reward", Shape{}, stats}}};
  const std::string name = unique_name("workers");
  Unlinker cleanup{name};
  SharedVecNorm vn = SharedVecNorm::create(name, o, table);

  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  std::vector<pid_t> pids;
  for (int w = 0; w < kWorkers; ++w) {
    pids.push_back(spawn([&, w]() -> int {
      ::close(go[1]);
      SharedVecNorm mine = SharedVecNorm::attach(name, o, table);
      char c;
      if (::read(go[0], &c, 1) != 0) return 4;  // EOF: everybody starts together
      Buf y(stats, Shape{kRows, kFeat}), ry(stats, Shape{kRows});
      for (int s = 0; s < kWorkerSteps; ++s) {
        const Buf x = worker_obs(stats, w, s);
        if (w % 2 == 1) {
          const Buf r = worker_reward(stats, w, s);
          mine.step({{"obs", x.cview(), y.view()}, {"reward", r.cview(), ry.view()}});
        } else {
          mine.step({{"obs", x.cview(), y.view()}});
        }
        for (double v : y.values())
          if (!std::isfinite(v)) return 5;
        if (s % 50 == 0) (void)mine.scale("obs");  // readers interleave with writers
      }
      return 0;
    }));
  }
  ::close(go[0]);
  ::close(go[1]);  // go
  for (pid_t pid : pids) {
    const int st = wait_for(pid, 240);
    EXPECT_TRUE(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0) << "worker " << pid << ": " << describe(st);
  }

  const std::int64_t per = pooled ? kRows : 1;
  EXPECT_EQ(vn.count("obs"), kWorkers * kWorkerSteps * per);
  EXPECT_EQ(vn.count("reward"), (kWorkers / 2) * kWorkerSteps * per);
  EXPECT_EQ(vn.generation(), static_cast<std::uint64_t>(kWorkers * kWorkerSteps));
  EXPECT_EQ(vn.recovered_owner_deaths(), 0u);

  Exact obs(static_cast<std::size_t>(pooled ? kFeat : kRows * kFeat));
  Exact rew(static_cast<std::size_t>(pooled ? 1 : kRows));
  for (int w = 0; w < kWorkers; ++w)
    for (int s = 0; s < kWorkerSteps; ++s) {
      obs.add(worker_obs(stats, w, s), pooled);
      if (w % 2 == 1) rew.add(worker_reward(stats, w, s), pooled);
    }
  const double rtol = rtol_for(stats, kWorkers * kWorkerSteps);
  EXPECT_TRUE(MatchesExact(vn, "obs", obs, rtol, 20.0));
  EXPECT_TRUE(MatchesExact(vn, "reward", rew, rtol, 20.0));
}

INSTANTIATE_TEST_SUITE_P(All, SharedWorkers,
                         ::testing::Combine(::testing::Values(Estimator::torchrl, Estimator::stable),
                                            ::testing::Bool(), ::testing::Values(DType::float32, DType::float64)),
                         [](const auto& info) {
                           return param_name(std::get<0>(info.param), std::get<1>(info.param),
                                             std::get<2>(info.param));
                         });

// Threads of one process, some sharing a handle, some with their own: the
// segment's mutex serializes them too (and ThreadSanitizer sees it).
TEST(SharedThreads, HandlesInOneProcess) {
  const Options o = shared_options(Estimator::stable, true, DType::float64, 1.0);
  const KeyTable table{Shape{kRows}, {{"obs", Shape{kFeat}, DType::float64}, {"reward", Shape{}, DType::float64}}};
  const std::string name = unique_name("threads");
  Unlinker cleanup{name};
  SharedVecNorm a = SharedVecNorm::create(name, o, table);
  SharedVecNorm b = SharedVecNorm::attach(name, o, table);
  SharedVecNorm c = SharedVecNorm::attach(name, o, table);
  SharedVecNorm* handle[kWorkers] = {&a, &a, &b, &c};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWorkers; ++w)
    threads.emplace_back([&, w] {
      try {
        Buf y(DType::float64, Shape{kRows, kFeat}), ry(DType::float64, Shape{kRows});
        for (int s = 0; s < kWorkerSteps; ++s) {
          const Buf x = worker_obs(DType::float64, w, s);
          if (w % 2 == 1) {
            const Buf r = worker_reward(DType::float64, w, s);
            handle[w]->step({{"obs", x.cview(), y.view()}, {"reward", r.cview(), ry.view()}});
          } else {
            handle[w]->step({{"obs", x.cview(), y.view()}});
          }
          if (s % 40 == 0) (void)handle[w]->export_state();
        }
      } catch (const std::exception& e) {
        ++failures;
        std::fprintf(stderr, "thread %d: %s\n", w, e.what());
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(c.count("obs"), kWorkers * kWorkerSteps * kRows);
  EXPECT_EQ(c.count("reward"), (kWorkers / 2) * kWorkerSteps * kRows);
  Exact obs(kFeat), rew(1);
  for (int w = 0; w < kWorkers; ++w)
    for (int s = 0; s < kWorkerSteps; ++s) {
      obs.add(worker_obs(DType::float64, w, s), true);
      if (w % 2 == 1) rew.add(worker_reward(DType::float64, w, s), true);
    }
  EXPECT_TRUE(MatchesExact(b, "obs", obs, rtol_for(DType::float64, kWorkers * kWorkerSteps), 20.0));
  EXPECT_TRUE(MatchesExact(a, "reward", rew, rtol_for(DType::float64, kWorkers * kWorkerSteps), 20.0));
}

// ================================================================ 3. workers killed with SIGKILL mid-step

/// Kill statistics over the whole run, printed at the end of each kill test.
struct KillTally {
  int kills = 0;             // SIGKILLs delivered to a stepping worker
  std::uint64_t in_lock = 0; // of those, how many found holding the lock (recovered by the next locker)
  std::uint64_t steps = 0;   // steps the killed workers completed
};
KillTally g_total;

/// Prints the kills of the whole run (when several kill tests ran in this process).
class KillSummary : public ::testing::Environment {
 public:
  void TearDown() override {
    if (g_total.kills > 0)
      std::cout << "[ shared   ] this run: survived " << g_total.kills << " SIGKILLs of stepping workers, "
                << g_total.in_lock << " of them while the worker held the lock" << std::endl;
  }
};
[[maybe_unused]] ::testing::Environment* const kKillSummary = ::testing::AddGlobalTestEnvironment(new KillSummary);

using KillParam = std::tuple<Estimator, bool>;
class SharedKill : public ::testing::TestWithParam<KillParam> {};

// One victim at a time steps in a tight loop (almost all of its time inside
// the lock); it is killed at a random moment. The data of the g-th published
// step is batch[g % P], so after every kill the exact statistics of exactly
// `generation` steps are known: they must be what the segment holds.
TEST_P(SharedKill, KilledWorkerNeverTearsStatistics) {
  const Estimator est = std::get<0>(GetParam());
  const bool pooled = std::get<1>(GetParam());
  const int kRounds = 100;
  constexpr int P = 5;
  const std::int64_t rows = pooled ? 1024 : 64, feat = 4;
  const Options o = shared_options(est, pooled, DType::float64, 1.0);
  const KeyTable table{Shape{rows}, {{"obs", Shape{feat}, DType::float64}}};
  const std::string name = unique_name("kill");
  Unlinker cleanup{name};
  SharedVecNorm vn = SharedVecNorm::create(name, o, table);

  const std::size_t stats_numel = static_cast<std::size_t>(pooled ? feat : rows * feat);
  std::vector<Buf> batch;
  std::vector<Exact> batch_sums;
  for (int j = 0; j < P; ++j) {
    Buf x(DType::float64, Shape{rows, feat});
    for (std::int64_t i = 0; i < x.numel(); ++i)
      x.set(i, hval(77, static_cast<std::uint64_t>(j), static_cast<std::uint64_t>(i), i % feat) + 0.5 * j);
    Exact e(stats_numel);
    e.add(x, pooled);
    batch.push_back(std::move(x));
    batch_sums.push_back(std::move(e));
  }
  auto exact_of = [&](std::uint64_t g) {
    Exact e(stats_numel);
    for (int j = 0; j < P; ++j)
      e.add(batch_sums[static_cast<std::size_t>(j)],
            static_cast<long double>(g / P + (static_cast<std::uint64_t>(j) < g % P ? 1 : 0)));
    return e;
  };

  std::mt19937_64 rng(12345 + static_cast<unsigned>(est) * 7 + (pooled ? 1 : 0));
  std::uniform_int_distribution<int> delay_us(0, 3000);
  KillTally tally;
  for (int round = 0; round < kRounds; ++round) {
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const std::uint64_t g0 = vn.generation();
    const pid_t pid = spawn([&]() -> int {
      ::close(ready[0]);
      SharedVecNorm mine = SharedVecNorm::attach(name, o, table);
      Buf y(DType::float64, Shape{rows, feat});
      if (::write(ready[1], "r", 1) != 1) return 4;
      for (;;) {
        const std::uint64_t g = mine.generation();  // the only writer: g is this step's index
        mine.step({{"obs", batch[g % P].cview(), y.view()}});
      }
    });
    ASSERT_GT(pid, 0);
    ::close(ready[1]);
    char c = 0;
    const ssize_t got = ::read(ready[0], &c, 1);
    ::close(ready[0]);
    if (got != 1) {
      const int st = wait_for(pid, 10);
      FAIL() << "round " << round << ": the worker died before stepping: " << describe(st);
    }
    const int d = round % 10 == 0 ? 0 : delay_us(rng);
    std::this_thread::sleep_for(std::chrono::microseconds(d));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int st = 0;
    ASSERT_EQ(::waitpid(pid, &st, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "round " << round << ": " << describe(st);
    ++tally.kills;

    // The statistics must be exactly those of `generation` whole steps.
    const std::uint64_t deaths = vn.recovered_owner_deaths();
    const State s = vn.export_state();  // takes the lock: recovers it if the worker held it
    tally.in_lock += vn.recovered_owner_deaths() - deaths;
    const std::uint64_t g = vn.generation();
    tally.steps += g - g0;
    ASSERT_EQ(s.keys[0].count, static_cast<std::int64_t>(g) * (pooled ? rows : 1)) << "round " << round;
    if (g > 0) {  // (a worker killed before its first step leaves count 0: nothing to read out)
      ASSERT_TRUE(MatchesExact(vn, "obs", exact_of(g), rtol_for(DType::float64, static_cast<int>(g)), 20.0))
          << "round " << round << ", generation " << g;
    }
    // The survivor (this process) keeps stepping.
    if (round % 5 == 4) {
      Buf y(DType::float64, Shape{rows, feat});
      vn.step({{"obs", batch[g % P].cview(), y.view()}});
      ASSERT_EQ(vn.generation(), g + 1);
    }
  }
  const std::uint64_t g = vn.generation();
  EXPECT_EQ(vn.count("obs"), static_cast<std::int64_t>(g) * (pooled ? rows : 1));
  EXPECT_TRUE(MatchesExact(vn, "obs", exact_of(g), rtol_for(DType::float64, static_cast<int>(g)), 20.0));
  std::cout << "[ shared   ] " << param_name(est, pooled, DType::float64) << ": survived " << tally.kills
            << " SIGKILLs, " << tally.in_lock << " of them while the worker held the lock; " << tally.steps
            << " steps completed by killed workers, " << g << " published" << std::endl;
  // The victims spend nearly all their time inside the lock: some kills must land there.
  EXPECT_GT(tally.in_lock, 0u);
  g_total.kills += tally.kills;
  g_total.in_lock += tally.in_lock;
  g_total.steps += tally.steps;
}

INSTANTIATE_TEST_SUITE_P(All, SharedKill,
                         ::testing::Combine(::testing::Values(Estimator::torchrl, Estimator::stable),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return param_name(std::get<0>(info.param), std::get<1>(info.param), DType::float64);
                         });

// Workers that are never killed step their own known data while victims,
// stepping a constant batch, are killed one after another. The survivors must
// finish (no lock left held), and the statistics must be exactly those of all
// the survivors' steps plus `generation - survivors' steps` victim steps.
TEST(SharedKillBeside, OthersKeepRunningWithConsistentStatistics) {
  constexpr int kSurvivors = 3;
  const int kSurvivorSteps = 300;
  const int kMinKills = 100;  // kills spread over the survivors' steps
  const std::int64_t rows = 256, feat = 4;
  const Options o = shared_options(Estimator::stable, true, DType::float64, 1.0);
  const KeyTable table{Shape{rows}, {{"obs", Shape{feat}, DType::float64}}};
  const std::string name = unique_name("beside");
  Unlinker cleanup{name};
  SharedVecNorm vn = SharedVecNorm::create(name, o, table);

  auto survivor_data = [&](int w, int s) {
    Buf x(DType::float64, Shape{rows, feat});
    for (std::int64_t i = 0; i < x.numel(); ++i)
      x.set(i, hval(static_cast<std::uint64_t>(w) + 300, static_cast<std::uint64_t>(s), static_cast<std::uint64_t>(i), i % feat));
    return x;
  };
  Buf victim_data(DType::float64, Shape{rows, feat});
  for (std::int64_t i = 0; i < victim_data.numel(); ++i) victim_data.set(i, 7.0 + hval(999, 0, static_cast<std::uint64_t>(i), 0));

  // Kills so far, in memory shared with the survivors: survivor step s waits
  // for s * kMinKills / kSurvivorSteps kills, so that the kills are spread
  // over the survivors' work however fast either side runs.
  void* shared_word = ::mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(shared_word, MAP_FAILED);
  auto* kills_seen = new (shared_word) std::atomic<int>(0);
  static_assert(std::atomic<int>::is_always_lock_free);

  std::vector<pid_t> survivors;
  for (int w = 0; w < kSurvivors; ++w)
    survivors.push_back(spawn([&, w]() -> int {
      SharedVecNorm mine = SharedVecNorm::attach(name, o, table);
      Buf y(DType::float64, Shape{rows, feat});
      for (int s = 0; s < kSurvivorSteps; ++s) {
        while (kills_seen->load() < s * kMinKills / kSurvivorSteps)
          std::this_thread::sleep_for(std::chrono::microseconds(50));
        const Buf x = survivor_data(w, s);
        mine.step({{"obs", x.cview(), y.view()}});
        for (double v : y.values())
          if (!std::isfinite(v)) return 5;
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
      return 0;
    }));

  std::mt19937_64 rng(777);
  std::uniform_int_distribution<int> delay_us(0, 2000);
  KillTally tally;
  std::vector<int> survivor_status(kSurvivors, -3);  // -3: not reaped yet
  struct Reaper {  // a failed assertion below must not leave survivors waiting forever
    const std::vector<pid_t>& pids;
    const std::vector<int>& status;
    ~Reaper() {
      for (std::size_t i = 0; i < pids.size(); ++i)
        if (status[i] == -3 && ::kill(pids[i], SIGKILL) == 0) ::waitpid(pids[i], nullptr, 0);
    }
  } reaper{survivors, survivor_status};
  int alive = kSurvivors;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(200);
  while (alive > 0 && std::chrono::steady_clock::now() < deadline) {
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t pid = spawn([&]() -> int {
      ::close(ready[0]);
      SharedVecNorm mine = SharedVecNorm::attach(name, o, table);
      Buf y(DType::float64, Shape{rows, feat});
      if (::write(ready[1], "r", 1) != 1) return 4;
      for (;;) mine.step({{"obs", victim_data.cview(), y.view()}});
    });
    ASSERT_GT(pid, 0);
    ::close(ready[1]);
    char c = 0;
    const ssize_t got = ::read(ready[0], &c, 1);
    ::close(ready[0]);
    ASSERT_EQ(got, 1) << "victim died before stepping: " << describe(wait_for(pid, 10));
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(rng)));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int st = 0;
    ASSERT_EQ(::waitpid(pid, &st, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << describe(st);
    ++tally.kills;
    kills_seen->fetch_add(1);
    for (int w = 0; w < kSurvivors; ++w) {
      if (survivor_status[static_cast<std::size_t>(w)] != -3) continue;
      int sst = 0;
      if (::waitpid(survivors[static_cast<std::size_t>(w)], &sst, WNOHANG) == survivors[static_cast<std::size_t>(w)]) {
        survivor_status[static_cast<std::size_t>(w)] = sst;
        --alive;
      }
    }
  }
  for (int w = 0; w < kSurvivors; ++w) {
    if (survivor_status[static_cast<std::size_t>(w)] == -3)
      survivor_status[static_cast<std::size_t>(w)] = wait_for(survivors[static_cast<std::size_t>(w)], 30);
    const int st = survivor_status[static_cast<std::size_t>(w)];
    EXPECT_TRUE(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0) << "survivor " << w << ": " << describe(st);
  }

  const State s = vn.export_state();  // recovers the lock if the last victim held it
  const std::uint64_t g = vn.generation();
  tally.in_lock = vn.recovered_owner_deaths();  // every recovery in this segment was a victim's
  ASSERT_GE(g, static_cast<std::uint64_t>(kSurvivors * kSurvivorSteps));
  const std::uint64_t victim_steps = g - kSurvivors * kSurvivorSteps;
  tally.steps = victim_steps;
  EXPECT_EQ(s.keys[0].count, static_cast<std::int64_t>(g) * rows);
  Exact e(static_cast<std::size_t>(feat));
  for (int w = 0; w < kSurvivors; ++w)
    for (int st = 0; st < kSurvivorSteps; ++st) e.add(survivor_data(w, st), true);
  e.add(victim_data, true, static_cast<long double>(victim_steps));
  EXPECT_TRUE(MatchesExact(vn, "obs", e, rtol_for(DType::float64, static_cast<int>(g)), 20.0));
  std::cout << "[ shared   ] beside " << kSurvivors << " workers: survived " << tally.kills << " SIGKILLs, "
            << tally.in_lock << " of them while the victim held the lock; " << victim_steps
            << " victim steps and " << kSurvivors * kSurvivorSteps << " survivor steps published" << std::endl;
  EXPECT_GE(tally.kills, kMinKills);
  ::munmap(shared_word, sizeof(std::atomic<int>));
  g_total.kills += tally.kills;
  g_total.in_lock += tally.in_lock;
  g_total.steps += tally.steps;
}

// ================================================================ 4. errors

Options basic_options() { return shared_options(Estimator::torchrl, false, DType::float32, 0.99); }
KeyTable basic_table() {
  return KeyTable{Shape{4}, {{"obs", Shape{2}, DType::float32}, {"reward", Shape{}, DType::float32}}};
}

/// Runs f, expects Error(code) whose message contains every string of `parts`.
template <class F>
::testing::AssertionResult Throws(F&& f, ErrorCode code, std::initializer_list<std::string> parts) {
  try {
    f();
  } catch (const Error& e) {
    if (e.code() != code)
      return ::testing::AssertionFailure() << "code " << vecnorm::to_string(e.code()) << ", expected "
                                           << vecnorm::to_string(code) << ": " << e.what();
    for (const std::string& p : parts)
      if (std::string(e.what()).find(p) == std::string::npos)
        return ::testing::AssertionFailure() << "message lacks '" << p << "': " << e.what();
    return ::testing::AssertionSuccess() << e.what();
  }
  return ::testing::AssertionFailure() << "no Error thrown";
}

TEST(SharedErrors, AttachWithMismatchNamesTheField) {
  const std::string name = unique_name("mismatch");
  Unlinker cleanup{name};
  const Options o = basic_options();
  const KeyTable t = basic_table();
  SharedVecNorm vn = SharedVecNorm::create(name, o, t);
  auto attach = [&](const Options& oo, const KeyTable& tt) { return [&, oo, tt] { (void)SharedVecNorm::attach(name, oo, tt); }; };
  const ErrorCode sm = ErrorCode::state_mismatch;

  Options e = o;
  e.estimator = Estimator::stable;
  EXPECT_TRUE(Throws(attach(e, t), sm, {name, "estimator", "expected stable", "got torchrl"}));
  e = o;
  e.stats_dtype = DType::float64;
  EXPECT_TRUE(Throws(attach(e, t), sm, {"stats_dtype", "expected float64", "got float32"}));
  e = o;
  e.decay = 0.9;
  EXPECT_TRUE(Throws(attach(e, t), sm, {"decay", "expected 0.9 (the caller's), got 0.99 (the segment's)"}));
  e = o;
  e.eps = 1e-3;
  EXPECT_TRUE(Throws(attach(e, t), sm, {"eps", "expected 0.001"}));
  e = o;
  e.reduce_batch_dims = true;
  EXPECT_TRUE(Throws(attach(e, t), sm, {"reduce_batch_dims", "expected true", "got false"}));
  e = o;  // the segment was created with the default, skip
  e.nonfinite = vecnorm::NonFinite::propagate;
  EXPECT_TRUE(Throws(attach(e, t), sm, {"nonfinite", "expected propagate (the caller's), got skip (the segment's)"}));
  e.nonfinite = vecnorm::NonFinite::error;
  EXPECT_TRUE(Throws(attach(e, t), sm, {"nonfinite", "expected error (the caller's), got skip (the segment's)"}));

  KeyTable k = t;
  k.keys[1].name = "rew";
  EXPECT_TRUE(Throws(attach(o, k), sm, {"key 1 name", "expected 'rew'", "got 'reward'"}));
  k = t;
  k.keys[0].feature_shape = Shape{3};
  EXPECT_TRUE(Throws(attach(o, k), sm, {"key 'obs'", "feature shape", "expected [3]", "got [2]"}));
  k = t;
  k.keys[0].dtype = DType::float64;
  EXPECT_TRUE(Throws(attach(o, k), sm, {"key 'obs'", "dtype", "expected float64", "got float32"}));
  k = t;
  k.keys.pop_back();
  EXPECT_TRUE(Throws(attach(o, k), sm, {"number of keys", "expected 1", "got 2"}));
  k = t;
  k.batch_shape = Shape{5};
  EXPECT_TRUE(Throws(attach(o, k), sm, {"batch shape", "expected [5]", "got [4]"}));

  // A matching attach still works, and the failed ones changed nothing.
  SharedVecNorm ok = SharedVecNorm::attach(name, o, t);
  EXPECT_EQ(ok.generation(), 0u);
  // Pooled: the batch shape is informational (as in VecNorm::import_state).
  const std::string pname = unique_name("pooled");
  Unlinker pcleanup{pname};
  Options po = o;
  po.reduce_batch_dims = true;
  SharedVecNorm p = SharedVecNorm::create(pname, po, t);
  k = t;
  k.batch_shape = Shape{7, 3};
  SharedVecNorm p2 = SharedVecNorm::attach(pname, po, k);
  EXPECT_EQ(p2.stats_shape("obs"), Shape{2});
}

TEST(SharedErrors, MissingExistingGarbageAndBadNames) {
  const Options o = basic_options();
  const KeyTable t = basic_table();
  const std::string name = unique_name("errors");
  EXPECT_TRUE(Throws([&] { (void)SharedVecNorm::attach(name, o, t); }, ErrorCode::invalid_argument,
                     {name, "does not exist"}));
  EXPECT_TRUE(Throws([&] { SharedVecNorm::unlink(name); }, ErrorCode::invalid_argument, {name, "does not exist"}));
  {
    Unlinker cleanup{name};
    SharedVecNorm vn = SharedVecNorm::create(name, o, t);
    EXPECT_TRUE(Throws([&] { (void)SharedVecNorm::create(name, o, t); }, ErrorCode::invalid_argument,
                       {name, "already exists"}));
  }
  // Removed by the Unlinker: it no longer exists.
  EXPECT_TRUE(Throws([&] { (void)SharedVecNorm::attach(name, o, t); }, ErrorCode::invalid_argument,
                     {"does not exist"}));

  // A segment that is not vecnorm's.
  const std::string garbage = unique_name("garbage");
  {
    const int fd = ::shm_open(garbage.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    std::vector<unsigned char> junk(4096, 0xAB);
    std::memcpy(junk.data(), "NOTVECNM", 8);
    ASSERT_EQ(::write(fd, junk.data(), junk.size()), static_cast<ssize_t>(junk.size()));
    ::close(fd);
  }
  Unlinker gcleanup{garbage};
  EXPECT_TRUE(Throws([&] { (void)SharedVecNorm::attach(garbage, o, t); }, ErrorCode::state_mismatch,
                     {garbage, "bad magic", "VNRMSHRD", "NOTVECNM"}));
  // One that is too small to be anything, or all zeros (a creator that died
  // before finishing): not initialized, after a short wait.
  const std::string zeros = unique_name("zeros");
  {
    const int fd = ::shm_open(zeros.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 4096), 0);
    ::close(fd);
  }
  Unlinker zcleanup{zeros};
  EXPECT_TRUE(Throws([&] { (void)SharedVecNorm::attach(zeros, o, t); }, ErrorCode::state_mismatch,
                     {zeros, "not initialized", "unlink it"}));

  // Names.
  for (const char* bad : {"", "/", "/a/b", "a/b"})
    EXPECT_TRUE(Throws([&] { (void)SharedVecNorm::create(bad, o, t); }, ErrorCode::invalid_argument,
                       {"shared segment name"}))
        << "'" << bad << "'";
  EXPECT_TRUE(Throws([&] { (void)SharedVecNorm::create("/" + std::string(300, 'x'), o, t); },
                     ErrorCode::invalid_argument, {"shared segment name"}));
  // CUDA: the statistics are host memory.
  Options c = o;
  c.backend = vecnorm::Backend::cuda;
  EXPECT_TRUE(Throws([&] { (void)SharedVecNorm::create(unique_name("cuda"), c, t); }, ErrorCode::invalid_option,
                     {"backend", "expected cpu or auto", "got cuda"}));
  // Invalid options and tables are the usual errors.
  Options bad = o;
  bad.decay = 1.5;
  EXPECT_TRUE(Throws([&] { (void)SharedVecNorm::create(unique_name("opt"), bad, t); }, ErrorCode::invalid_option,
                     {"decay"}));
}

TEST(SharedErrors, TruncatedSegment) {
  const Options o = basic_options();
  const KeyTable t = basic_table();
  const std::string name = unique_name("truncated");
  Unlinker cleanup{name};
  (void)SharedVecNorm::create(name, o, t);  // the handle is gone at once: the segment stays
  {
    const int fd = ::shm_open(name.c_str(), O_RDWR, 0);
    ASSERT_GE(fd, 0);
    struct stat st {};
    ASSERT_EQ(::fstat(fd, &st), 0);
    ASSERT_EQ(::ftruncate(fd, st.st_size - 64), 0);
    ::close(fd);
  }
  EXPECT_TRUE(Throws([&] { (void)SharedVecNorm::attach(name, o, t); }, ErrorCode::state_mismatch,
                     {name, "size of the segment"}));
}

TEST(SharedErrors, FailedCallsChangeNothingAndReleaseTheLock) {
  const Options o = basic_options();
  const KeyTable t = basic_table();
  const std::string name = unique_name("failed");
  Unlinker cleanup{name};
  SharedVecNorm vn = SharedVecNorm::create(name, o, t);
  SharedVecNorm other = SharedVecNorm::attach(name, o, t);
  std::vector<float> x(8, 1.0f), y(8), r(4, 2.0f), ry(4);
  auto xv = vecnorm::view<const float>(x.data(), {4, 2});
  auto yv = vecnorm::view(y.data(), {4, 2});
  auto rv = vecnorm::view<const float>(r.data(), {4});
  auto ryv = vecnorm::view(ry.data(), {4});
  // Count 0: normalizing is an error naming the key.
  EXPECT_TRUE(Throws([&] { vn.normalize({{"obs", xv, yv}}); }, ErrorCode::zero_count, {"key 'obs'", "count > 0"}));
  EXPECT_TRUE(Throws([&] { (void)vn.loc("obs"); }, ErrorCode::zero_count, {"obs"}));
  vn.step({{"obs", xv, yv}, {"reward", rv, ryv}});
  const State before = vn.export_state();
  const std::uint64_t g = vn.generation();
  // A bad key, a duplicate, a bad shape after a good key: nothing is published.
  EXPECT_TRUE(Throws([&] { vn.step({{"obs", xv, yv}, {"nope", rv, ryv}}); }, ErrorCode::unknown_key, {"nope"}));
  EXPECT_TRUE(Throws([&] { other.step({{"obs", xv, yv}, {"obs", xv, yv}}); }, ErrorCode::duplicate_key, {"obs"}));
  auto bad = vecnorm::view<const float>(x.data(), {2, 4});
  EXPECT_TRUE(Throws([&] { vn.update({{"reward", rv, {}}, {"obs", bad, {}}}); }, ErrorCode::shape_mismatch,
                     {"key 'obs'", "expected [4, 2]"}));
  EXPECT_TRUE(Throws([&] { (void)vn.count("nope"); }, ErrorCode::unknown_key, {"nope"}));
  EXPECT_EQ(vn.generation(), g);
  const State after = other.export_state();
  for (std::size_t k = 0; k < before.keys.size(); ++k) {
    EXPECT_EQ(before.keys[k].loc, after.keys[k].loc);
    EXPECT_EQ(before.keys[k].var, after.keys[k].var);
    EXPECT_EQ(before.keys[k].count, after.keys[k].count);
  }
  // import_state with a mismatched state: an error, nothing changes.
  Options so = o;
  so.estimator = Estimator::stable;
  VecNorm wrong(so, t);
  wrong.step({{"obs", xv, yv}});
  EXPECT_TRUE(Throws([&] { vn.import_state(wrong.export_state()); }, ErrorCode::state_mismatch,
                     {"import_state", "estimator", "expected torchrl", "got stable"}));
  EXPECT_EQ(vn.generation(), g);
  // The lock was released every time: another handle steps.
  other.step({{"obs", xv, yv}});
  EXPECT_EQ(vn.generation(), g + 1);
  EXPECT_EQ(vn.count("obs"), 2);
  EXPECT_EQ(vn.count("reward"), 1);
  // An empty call publishes nothing.
  vn.step(std::span<const KeyData>{});
  EXPECT_EQ(vn.generation(), g + 1);
}

// ================================================================ 5. non-finite input (Options::nonfinite)

const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

/// 0: finite; 1, 2, 3: NaN, +inf, -inf. One in `one_in` is non-finite.
int bad_kind(std::uint64_t salt, std::uint64_t t, std::uint64_t i, std::uint64_t one_in) {
  const std::uint64_t h = mix(mix(mix(salt) ^ t) ^ i);
  if (h % one_in != 0) return 0;
  return 1 + static_cast<int>((h / one_in) % 3);
}
double bad_value(int kind) { return kind == 1 ? kNaN : kind == 2 ? kInf : -kInf; }

/// Step t of a key with `rows` x `feat` elements: half-integers, some of them
/// non-finite. Per-element: each element independently (1 in 5). Pooled: some
/// rows (1 in 4; never row 0, so a step keeps at least one row) get one or two
/// non-finite elements. Step 0 is all finite. `scalar`: shape [rows] (feat 1).
Buf data_with_bad(DType dt, std::uint64_t salt, int t, std::int64_t rows, std::int64_t feat, bool pooled,
                  bool scalar = false) {
  Buf x(dt, scalar ? Shape{rows} : Shape{rows, feat});
  const auto ut = static_cast<std::uint64_t>(t);
  for (std::int64_t i = 0; i < rows * feat; ++i) x.set(i, hval(salt, ut, static_cast<std::uint64_t>(i), i % feat));
  if (t == 0) return x;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (!pooled) {
      for (std::int64_t f = 0; f < feat; ++f) {
        const int k = bad_kind(salt, ut, static_cast<std::uint64_t>(r * feat + f), 5);
        if (k) x.set(r * feat + f, bad_value(k));
      }
    } else if (r > 0) {
      const int k = bad_kind(salt + 1, ut, static_cast<std::uint64_t>(r), 4);
      if (!k) continue;
      const std::uint64_t h = mix(salt ^ ut ^ static_cast<std::uint64_t>(r) * 977);
      x.set(r * feat + static_cast<std::int64_t>(h % static_cast<std::uint64_t>(feat)), bad_value(k));
      if (h % 7 == 0) x.set(r * feat + static_cast<std::int64_t>((h / 7) % static_cast<std::uint64_t>(feat)), kNaN);
    }
  }
  return x;
}

/// Statistics a skip normalizer keeps, counted independently: per statistics
/// element the sums and the number of values that entered, and the units left
/// out (elements per-element, rows pooled).
struct Tally {
  std::vector<long double> s1, s2;
  std::vector<std::int64_t> n;
  std::int64_t count = 0;    // the key's count: updates (per-element) or rows that entered (pooled)
  std::int64_t skipped = 0;
  explicit Tally(std::size_t numel = 0) : s1(numel, 0), s2(numel, 0), n(numel, 0) {}
  void add(const Buf& x, bool pooled) {
    const std::int64_t stats = static_cast<std::int64_t>(s1.size());
    const std::int64_t rows = pooled ? x.numel() / stats : 1;
    if (!pooled) ++count;
    for (std::int64_t r = 0; r < rows; ++r) {
      bool row_ok = true;
      for (std::int64_t f = 0; f < stats; ++f) row_ok = row_ok && std::isfinite(x.get(r * stats + f));
      if (pooled && !row_ok) {
        ++skipped;
        continue;
      }
      if (pooled) ++count;
      for (std::int64_t f = 0; f < stats; ++f) {
        const double v = x.get(r * stats + f);
        if (!std::isfinite(v)) {
          ++skipped;
          continue;
        }
        const auto k = static_cast<std::size_t>(f);
        s1[k] += v;
        s2[k] += static_cast<long double>(v) * v;
        ++n[k];
      }
    }
  }
  void add(const Tally& o, std::int64_t times) {
    for (std::size_t k = 0; k < s1.size(); ++k) {
      s1[k] += times * o.s1[k];
      s2[k] += times * o.s2[k];
      n[k] += times * o.n[k];
    }
    count += times * o.count;
    skipped += times * o.skipped;
  }
  /// What element_counts() must say.
  std::vector<std::int64_t> element_counts(bool pooled) const {
    return pooled ? std::vector<std::int64_t>{count} : n;
  }
};

/// loc/scale of `vn` against the exact mean and population variance of the
/// finite data in `t` (decay 1), element by element with their own counts.
template <class N>
::testing::AssertionResult MatchesTally(const N& vn, const std::string& key, const Tally& t, double rtol, double mag) {
  const std::vector<double> loc = vn.loc(key), scale = vn.scale(key);
  if (loc.size() != t.s1.size())
    return ::testing::AssertionFailure() << key << ": " << loc.size() << " statistics, expected " << t.s1.size();
  for (std::size_t k = 0; k < loc.size(); ++k) {
    const long double mean = t.s1[k] / t.n[k];
    const long double var = t.s2[k] / t.n[k] - mean * mean;
    if (!(std::fabs(loc[k] - static_cast<double>(mean)) <= rtol * mag))
      return ::testing::AssertionFailure() << key << " loc[" << k << "]: expected " << static_cast<double>(mean)
                                           << " (exact, " << t.n[k] << " values), got " << loc[k];
    const double v = scale[k] * scale[k];
    if (!(std::fabs(v - static_cast<double>(var)) <= rtol * mag * mag || scale[k] == vn.options().eps))
      return ::testing::AssertionFailure() << key << " scale[" << k << "]^2: expected " << static_cast<double>(var)
                                           << " (exact, " << t.n[k] << " values), got " << v;
  }
  return ::testing::AssertionSuccess();
}

using NonFiniteParam = std::tuple<Estimator, bool, DType>;
class SharedNonFinite : public ::testing::TestWithParam<NonFiniteParam> {};

// Two handles of a skip segment and a plain skip VecNorm, fed the same data
// with NaN and infinities in some elements (per-element) or rows (pooled):
// the same outputs, statistics, element counts and skipped counters, bit for
// bit, and the counts the test tallies itself. Pooled: also what a plain
// VecNorm computes from the data with the bad rows removed.
TEST_P(SharedNonFinite, SkipEqualsPlainVecNorm) {
  const Estimator est = std::get<0>(GetParam());
  const bool pooled = std::get<1>(GetParam());
  const DType stats = std::get<2>(GetParam());
  const std::int64_t B = 8, F = 3;
  const Options o = shared_options(est, pooled, stats, 0.9);
  ASSERT_EQ(o.nonfinite, vecnorm::NonFinite::skip);  // the default
  const KeyTable table{Shape{B}, {{"obs", Shape{F}, DType::float32}, {"agents/reward", Shape{}, DType::float64}}};
  const std::string name = unique_name("skip");
  Unlinker cleanup{name};
  SharedVecNorm a = SharedVecNorm::create(name, o, table);
  SharedVecNorm b = SharedVecNorm::attach(name, o, table);
  VecNorm plain(o, table), compact(o, table);
  Tally t_obs(static_cast<std::size_t>(pooled ? F : B * F)), t_rew(static_cast<std::size_t>(pooled ? 1 : B));

  const int kSteps = 40;
  for (int t = 0; t < kSteps; ++t) {
    const Buf x = data_with_bad(DType::float32, 11, t, B, F, pooled);
    const Buf r = data_with_bad(DType::float64, 12, t, B, 1, pooled, true);
    Buf ys(DType::float32, Shape{B, F}), yp(DType::float32, Shape{B, F});
    Buf rys(DType::float64, Shape{B}), ryp(DType::float64, Shape{B});
    SharedVecNorm& h = t % 2 ? a : b;
    h.step({{"obs", x.cview(), ys.view()}, {"agents/reward", r.cview(), rys.view()}});
    plain.step({{"obs", x.cview(), yp.view()}, {"agents/reward", r.cview(), ryp.view()}});
    ASSERT_TRUE(ys.same_bytes(yp)) << "obs output differs at step " << t;
    ASSERT_TRUE(rys.same_bytes(ryp)) << "reward output differs at step " << t;
    t_obs.add(x, pooled);
    t_rew.add(r, pooled);
    if (pooled) {  // the same rows without the bad ones, one key per call (their row counts differ)
      for (const auto& [key, in, feat] : {std::tuple<const char*, const Buf*, std::int64_t>{"obs", &x, F},
                                          std::tuple<const char*, const Buf*, std::int64_t>{"agents/reward", &r, 1}}) {
        std::vector<std::int64_t> good;
        for (std::int64_t row = 0; row < B; ++row) {
          bool ok = true;
          for (std::int64_t f = 0; f < feat; ++f) ok = ok && std::isfinite(in->get(row * feat + f));
          if (ok) good.push_back(row);
        }
        const auto m = static_cast<std::int64_t>(good.size());
        Buf c(in->dtype, feat == 1 && in->shape.ndim() == 1 ? Shape{m} : Shape{m, feat});
        for (std::int64_t j = 0; j < m; ++j)
          for (std::int64_t f = 0; f < feat; ++f) c.set(j * feat + f, in->get(good[static_cast<std::size_t>(j)] * feat + f));
        Buf cy(vecnorm::output_dtype(in->dtype), c.shape);
        compact.step({{key, c.cview(), cy.view()}});
      }
    }
  }
  EXPECT_EQ(a.generation(), static_cast<std::uint64_t>(kSteps));
  for (const auto& [key, tally] : {std::pair<const char*, const Tally*>{"obs", &t_obs},
                                   std::pair<const char*, const Tally*>{"agents/reward", &t_rew}}) {
    EXPECT_GT(tally->skipped, 0) << key;
    EXPECT_EQ(a.count(key), tally->count) << key;
    EXPECT_EQ(b.count(key), plain.count(key)) << key;
    EXPECT_EQ(a.skipped(key), tally->skipped) << key;
    EXPECT_EQ(b.skipped(key), plain.skipped(key)) << key;
    EXPECT_EQ(a.element_counts(key), tally->element_counts(pooled)) << key;
    EXPECT_EQ(b.element_counts(key), plain.element_counts(key)) << key;
    EXPECT_EQ(a.loc(key), plain.loc(key)) << key;
    EXPECT_EQ(b.scale(key), plain.scale(key)) << key;
    if (pooled) {
      EXPECT_EQ(compact.count(key), tally->count) << key;
      EXPECT_EQ(compact.skipped(key), 0) << key;
      const auto la = a.loc(key), lc = compact.loc(key), sa = a.scale(key), sc = compact.scale(key);
      const double tol = rtol_for(stats, kSteps) * 4 * 20 * 20;
      for (std::size_t i = 0; i < la.size(); ++i) {
        EXPECT_NEAR(la[i], lc[i], tol) << key << " loc[" << i << "] vs the data without the bad rows";
        EXPECT_NEAR(sa[i], sc[i], tol) << key << " scale[" << i << "] vs the data without the bad rows";
      }
    }
  }
  // export_state carries skips and skipped: the plain VecNorm's state, bit for bit.
  const State sa = a.export_state(), sp = plain.export_state();
  for (std::size_t k = 0; k < sa.keys.size(); ++k) {
    EXPECT_EQ(sa.keys[k].skipped, sp.keys[k].skipped);
    EXPECT_EQ(sa.keys[k].skips, sp.keys[k].skips);
    EXPECT_EQ(sa.keys[k].skips.empty(), pooled);
  }
  EXPECT_EQ(vecnorm::encode_state(sa), vecnorm::encode_state(sp));
  // ... and import_state carries them into another segment and into a VecNorm.
  const std::string name2 = unique_name("skip-import");
  Unlinker cleanup2{name2};
  SharedVecNorm c = SharedVecNorm::create(name2, o, table);
  c.import_state(sa);
  VecNorm fresh;
  fresh.import_state(sa);
  for (const char* key : {"obs", "agents/reward"}) {
    EXPECT_EQ(c.element_counts(key), plain.element_counts(key)) << key;
    EXPECT_EQ(c.skipped(key), plain.skipped(key)) << key;
    EXPECT_EQ(fresh.element_counts(key), plain.element_counts(key)) << key;
    EXPECT_EQ(c.loc(key), plain.loc(key)) << key;
  }
  // The imported segment keeps evolving like the plain VecNorm.
  const Buf x = data_with_bad(DType::float32, 11, 1000, B, F, pooled);
  Buf ys(DType::float32, Shape{B, F}), yp(DType::float32, Shape{B, F});
  c.step({{"obs", x.cview(), ys.view()}});
  plain.step({{"obs", x.cview(), yp.view()}});
  EXPECT_TRUE(ys.same_bytes(yp));
  EXPECT_EQ(c.element_counts("obs"), plain.element_counts("obs"));
  EXPECT_EQ(c.skipped("obs"), plain.skipped("obs"));
}

INSTANTIATE_TEST_SUITE_P(All, SharedNonFinite,
                         ::testing::Combine(::testing::Values(Estimator::torchrl, Estimator::stable),
                                            ::testing::Bool(), ::testing::Values(DType::float32, DType::float64)),
                         [](const auto& info) {
                           return param_name(std::get<0>(info.param), std::get<1>(info.param),
                                             std::get<2>(info.param));
                         });

// Decay 1: the statistics are the exact mean and population variance of the
// finite values (per-element: of each element's own values; pooled: of the
// rows without a non-finite value), tallied by the test.
TEST(SharedNonFiniteExact, SkippedValuesNeverEnterTheStatistics) {
  for (const Estimator est : {Estimator::torchrl, Estimator::stable})
    for (const bool pooled : {false, true}) {
      const std::int64_t B = 16, F = 4;
      const Options o = shared_options(est, pooled, DType::float64, 1.0);
      const KeyTable table{Shape{B}, {{"obs", Shape{F}, DType::float64}}};
      const std::string name = unique_name("exact-skip");
      Unlinker cleanup{name};
      SharedVecNorm vn = SharedVecNorm::create(name, o, table);
      Tally tally(static_cast<std::size_t>(pooled ? F : B * F));
      const int kSteps = 50;
      for (int t = 0; t < kSteps; ++t) {
        const Buf x = data_with_bad(DType::float64, 21, t, B, F, pooled);
        vn.update({{"obs", x.cview(), {}}});
        tally.add(x, pooled);
      }
      const std::string what = param_name(est, pooled, DType::float64);
      EXPECT_EQ(vn.count("obs"), tally.count) << what;
      EXPECT_EQ(vn.skipped("obs"), tally.skipped) << what;
      EXPECT_EQ(vn.element_counts("obs"), tally.element_counts(pooled)) << what;
      EXPECT_TRUE(MatchesTally(vn, "obs", tally, rtol_for(DType::float64, kSteps), 20.0)) << what;
    }
}

// NonFinite::error: an update holding a non-finite value is refused, naming the
// key, before anything is written or published; normalize-only calls are not scanned.
TEST(SharedNonFiniteError, UpdatesWithNonFiniteInputAreRefused) {
  Options o = basic_options();
  o.nonfinite = vecnorm::NonFinite::error;
  const KeyTable t = basic_table();
  const std::string name = unique_name("nferror");
  Unlinker cleanup{name};
  SharedVecNorm vn = SharedVecNorm::create(name, o, t);
  SharedVecNorm other = SharedVecNorm::attach(name, o, t);
  std::vector<float> x(8, 1.0f), y(8), r(4, 2.0f), ry(4);
  for (int i = 0; i < 8; ++i) x[static_cast<std::size_t>(i)] = 0.5f * static_cast<float>(i);
  auto xv = vecnorm::view<const float>(x.data(), {4, 2});
  auto yv = vecnorm::view(y.data(), {4, 2});
  auto rv = vecnorm::view<const float>(r.data(), {4});
  auto ryv = vecnorm::view(ry.data(), {4});
  vn.step({{"obs", xv, yv}, {"reward", rv, ryv}});
  const State before = vn.export_state();
  const std::uint64_t g = vn.generation();
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    std::vector<float> xb = x;
    xb[5] = bad;  // batch element 2, feature 1
    auto xbv = vecnorm::view<const float>(xb.data(), {4, 2});
    EXPECT_TRUE(Throws([&] { vn.step({{"reward", rv, ryv}, {"obs", xbv, yv}}); }, ErrorCode::nonfinite_input,
                       {"obs"}));
    EXPECT_TRUE(Throws([&] { other.update({{"obs", xbv, {}}}); }, ErrorCode::nonfinite_input, {"obs"}));
    // Not an update: normalized like any value.
    vn.normalize({{"obs", xbv, yv}});
  }
  EXPECT_EQ(vn.generation(), g);
  const State after = other.export_state();
  for (std::size_t k = 0; k < before.keys.size(); ++k) {
    EXPECT_EQ(before.keys[k].loc, after.keys[k].loc);
    EXPECT_EQ(before.keys[k].var, after.keys[k].var);
    EXPECT_EQ(before.keys[k].count, after.keys[k].count);
    EXPECT_EQ(after.keys[k].skipped, 0);
    EXPECT_TRUE(after.keys[k].skips.empty());
  }
  // A frozen handle only normalizes: nothing to refuse.
  other.freeze();
  std::vector<float> xb = x;
  xb[0] = std::numeric_limits<float>::quiet_NaN();
  other.step({{"obs", vecnorm::view<const float>(xb.data(), {4, 2}), yv}});
  // The lock was never left held: both handles step on.
  vn.step({{"obs", xv, yv}});
  EXPECT_EQ(other.count("obs"), 2);
  EXPECT_EQ(vn.generation(), g + 1);
}

// NonFinite::propagate: the reference behaviour, as a plain propagate VecNorm,
// also after importing a state with skips (from a skip run).
TEST(SharedNonFinitePropagate, EqualsPlainVecNormAlsoWithImportedSkips) {
  Options o = basic_options();
  o.nonfinite = vecnorm::NonFinite::propagate;
  const KeyTable t = basic_table();
  const std::string name = unique_name("propagate");
  Unlinker cleanup{name};
  SharedVecNorm vn = SharedVecNorm::create(name, o, t);
  VecNorm plain(o, t);
  for (int s = 0; s < 3; ++s) {
    const Buf x = data_with_bad(DType::float32, 31, s, 4, 2, false);
    Buf ys(DType::float32, Shape{4, 2}), yp(DType::float32, Shape{4, 2});
    vn.step({{"obs", x.cview(), ys.view()}});
    plain.step({{"obs", x.cview(), yp.view()}});
    EXPECT_TRUE(ys.same_bytes(yp)) << "step " << s;
  }
  EXPECT_EQ(vecnorm::encode_state(vn.export_state()), vecnorm::encode_state(plain.export_state()));
  EXPECT_EQ(vn.skipped("obs"), 0);
  EXPECT_EQ(vn.element_counts("obs"), std::vector<std::int64_t>(8, 3));
  // The non-finite values entered the statistics: wherever the input had one,
  // loc or scale is not finite.
  std::size_t bad_inputs = 0;
  const std::vector<double> loc = vn.loc("obs"), scale = vn.scale("obs");
  for (std::int64_t i = 0; i < 8; ++i) {
    bool bad = false;
    for (int s = 0; s < 3; ++s) bad = bad || !std::isfinite(data_with_bad(DType::float32, 31, s, 4, 2, false).get(i));
    bad_inputs += bad;
    const auto ui = static_cast<std::size_t>(i);
    EXPECT_EQ(bad, !std::isfinite(loc[ui]) || !std::isfinite(scale[ui])) << "element " << i;
  }
  EXPECT_GT(bad_inputs, 0u);

  Options so = o;
  so.nonfinite = vecnorm::NonFinite::skip;
  VecNorm skipper(so, t);
  for (int s = 0; s < 3; ++s) {
    const Buf x = data_with_bad(DType::float32, 31, s, 4, 2, false);
    skipper.update({{"obs", x.cview(), {}}});
  }
  const State with_skips = skipper.export_state();
  ASSERT_FALSE(with_skips.keys[0].skips.empty());
  vn.import_state(with_skips);
  plain.import_state(with_skips);
  EXPECT_EQ(vn.element_counts("obs"), skipper.element_counts("obs"));
  EXPECT_EQ(vn.skipped("obs"), skipper.skipped("obs"));
  for (int s = 3; s < 6; ++s) {  // finite and non-finite values now enter, counted per element as before
    const Buf x = data_with_bad(DType::float32, 31, s, 4, 2, false);
    Buf ys(DType::float32, Shape{4, 2}), yp(DType::float32, Shape{4, 2});
    vn.step({{"obs", x.cview(), ys.view()}});
    plain.step({{"obs", x.cview(), yp.view()}});
    EXPECT_TRUE(ys.same_bytes(yp)) << "step " << s;
  }
  EXPECT_EQ(vn.element_counts("obs"), plain.element_counts("obs"));
  EXPECT_EQ(vn.skipped("obs"), skipper.skipped("obs"));
  EXPECT_EQ(vecnorm::encode_state(vn.export_state()), vecnorm::encode_state(plain.export_state()));
}

/// The segment's memory, mapped by the test and read with the offsets of
/// docs/shared.md ("Segment layout"), to play a writer that was killed.
struct SegmentPeek {
  void* base = nullptr;
  std::size_t size = 0;
  explicit SegmentPeek(const std::string& name) {
    const int fd = ::shm_open(name.c_str(), O_RDWR, 0);
    if (fd < 0) throw std::runtime_error("shm_open " + name);
    struct stat st {};
    ::fstat(fd, &st);
    size = static_cast<std::size_t>(st.st_size);
    base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (base == MAP_FAILED) throw std::runtime_error("mmap " + name);
  }
  ~SegmentPeek() { ::munmap(base, size); }
  char* at(std::uint64_t off) const { return static_cast<char*>(base) + off; }
  std::uint64_t u64(std::uint64_t off) const {
    std::uint64_t v;
    std::memcpy(&v, at(off), 8);
    return v;
  }
  std::uint32_t num_keys() const {
    std::uint32_t v;
    std::memcpy(&v, at(28), 4);
    return v;
  }
  /// The published slot of key k (view seq & 1).
  int current(int k) const { return static_cast<unsigned char>(*at(u64(80) + (u64(104) & 1) * num_keys() + k)) & 1; }
  std::int64_t* skipped(int k, int slot) const { return reinterpret_cast<std::int64_t*>(at(u64(120))) + 2 * k + slot; }
  unsigned char* dirty(int k, int slot) const {
    return reinterpret_cast<unsigned char*>(at(u64(128))) + 2 * k + slot;
  }
  /// Key 0's skips in `slot` (numel values; each array padded to 64 bytes).
  std::int64_t* skips0(int slot, std::size_t numel) const {
    const std::size_t padded = (numel * 8 + 63) / 64 * 64;
    return reinterpret_cast<std::int64_t*>(at(u64(136) + slot * padded));
  }
};

// What a writer killed in the middle of a step leaves in the unpublished slot
// (its dirty flag set, then skips copied or counted, the counter changed) must
// never reach the statistics: not when the published counter is 0 (the slot is
// zeroed), not when it is not (the slot is overwritten by the copy), not after
// an import_state that drops the skips.
TEST(SharedNonFiniteStale, AKilledWritersUnpublishedSkipsNeverLeak) {
  const std::int64_t B = 4, F = 3;
  const std::size_t numel = static_cast<std::size_t>(B * F);
  const Options o = shared_options(Estimator::stable, false, DType::float64, 1.0);
  const KeyTable table{Shape{B}, {{"obs", Shape{F}, DType::float64}}};
  const std::string name = unique_name("stale");
  Unlinker cleanup{name};
  SharedVecNorm vn = SharedVecNorm::create(name, o, table);
  SegmentPeek peek(name);
  auto finite = [&](int t) {
    Buf x(DType::float64, Shape{B, F});
    for (std::int64_t i = 0; i < x.numel(); ++i) x.set(i, hval(41, static_cast<std::uint64_t>(t), static_cast<std::uint64_t>(i), i % F));
    return x;
  };
  auto stale = [&](std::int64_t base) {  // garbage in the unpublished slot, as a killed writer leaves it
    const int out = 1 - peek.current(0);
    *peek.dirty(0, out) = 1;
    for (std::size_t i = 0; i < numel; ++i) peek.skips0(out, numel)[i] = base + static_cast<std::int64_t>(i);
    *peek.skipped(0, out) = base * 7;
  };
  Tally tally(numel);
  auto step = [&](const Buf& x) {
    Buf y(DType::float64, Shape{B, F});
    vn.step({{"obs", x.cview(), y.view()}});
    tally.add(x, false);
  };

  step(finite(0));
  stale(1000);
  step(finite(1));  // published counter 0: the slot is zeroed before the step
  EXPECT_EQ(vn.skipped("obs"), 0);
  EXPECT_EQ(vn.element_counts("obs"), std::vector<std::int64_t>(numel, 2));
  const int cur = peek.current(0);
  for (std::size_t i = 0; i < numel; ++i) ASSERT_EQ(peek.skips0(cur, numel)[i], 0) << "published skips[" << i << "]";
  EXPECT_EQ(*peek.dirty(0, cur), 0) << "a slot that skipped nothing is clean again";
  // A skip now counts from 0, not from the garbage.
  Buf x = finite(2);
  x.set(5, kNaN);
  step(x);
  std::vector<std::int64_t> want(numel, 3);
  want[5] = 2;
  EXPECT_EQ(vn.element_counts("obs"), want);
  EXPECT_EQ(vn.skipped("obs"), 1);

  stale(5000);
  step(finite(3));  // published counter 1: the published skips are copied over the garbage
  for (auto& w : want) ++w;
  EXPECT_EQ(vn.element_counts("obs"), want);
  EXPECT_EQ(vn.skipped("obs"), 1);
  x = finite(4);
  x.set(7, kInf);
  stale(9000);
  step(x);
  for (auto& w : want) ++w;
  --want[7];
  EXPECT_EQ(vn.element_counts("obs"), want);
  EXPECT_EQ(vn.skipped("obs"), 2);
  EXPECT_EQ(tally.element_counts(false), want);
  EXPECT_TRUE(MatchesTally(vn, "obs", tally, rtol_for(DType::float64, 8), 20.0));

  // import_state of a state without skips: both slots held non-zero skips
  // (the published ones, and the garbage); neither may come back.
  VecNorm clean(o, table);
  Tally ctally(numel);
  for (int t = 0; t < 3; ++t) {
    const Buf c = finite(10 + t);
    clean.update({{"obs", c.cview(), {}}});
    ctally.add(c, false);
  }
  stale(123);
  vn.import_state(clean.export_state());
  EXPECT_EQ(vn.skipped("obs"), 0);
  EXPECT_EQ(vn.element_counts("obs"), std::vector<std::int64_t>(numel, 3));
  for (int t = 0; t < 2; ++t) {  // both slots get written again
    const Buf c = finite(20 + t);
    Buf y(DType::float64, Shape{B, F});
    vn.step({{"obs", c.cview(), y.view()}});
    ctally.add(c, false);
  }
  EXPECT_EQ(vn.element_counts("obs"), std::vector<std::int64_t>(numel, 5));
  x = finite(30);
  x.set(2, -kInf);
  Buf y(DType::float64, Shape{B, F});
  vn.step({{"obs", x.cview(), y.view()}});
  ctally.add(x, false);
  EXPECT_EQ(vn.element_counts("obs"), ctally.element_counts(false));
  EXPECT_EQ(vn.skipped("obs"), 1);
  EXPECT_TRUE(MatchesTally(vn, "obs", ctally, rtol_for(DType::float64, 8), 20.0));
}

// Workers stepping data with non-finite values are killed at random moments:
// after every kill, the counts, element counts, skipped counter and statistics
// are exactly those of `generation` whole steps.
TEST(SharedNonFiniteKill, KilledWorkersNeverTearTheSkips) {
  for (const bool pooled : {false, true}) {
    const int kRounds = 30;
    constexpr int P = 3;
    const std::int64_t rows = pooled ? 512 : 64, feat = 4;
    const Options o = shared_options(Estimator::stable, pooled, DType::float64, 1.0);
    const KeyTable table{Shape{rows}, {{"obs", Shape{feat}, DType::float64}}};
    const std::string name = unique_name("killskip");
    Unlinker cleanup{name};
    SharedVecNorm vn = SharedVecNorm::create(name, o, table);
    const std::size_t stats_numel = static_cast<std::size_t>(pooled ? feat : rows * feat);
    std::vector<Buf> batch;
    std::vector<Tally> batch_tally;
    for (int j = 0; j < P; ++j) {
      batch.push_back(data_with_bad(DType::float64, 51, j + 1, rows, feat, pooled));  // j + 1: never the clean step 0
      Tally t(stats_numel);
      t.add(batch.back(), pooled);
      batch_tally.push_back(t);
    }
    auto tally_of = [&](std::uint64_t g) {
      Tally t(stats_numel);
      for (int j = 0; j < P; ++j)
        t.add(batch_tally[static_cast<std::size_t>(j)],
              static_cast<std::int64_t>(g / P + (static_cast<std::uint64_t>(j) < g % P ? 1 : 0)));
      return t;
    };
    // Step 0 is clean (per-element: every element then has a count).
    const Buf clean = data_with_bad(DType::float64, 51, 0, rows, feat, pooled);
    Tally base(stats_numel);
    base.add(clean, pooled);
    {
      Buf y(DType::float64, Shape{rows, feat});
      vn.step({{"obs", clean.cview(), y.view()}});
    }
    std::mt19937_64 rng(777 + (pooled ? 1 : 0));
    std::uniform_int_distribution<int> delay_us(0, 3000);
    KillTally tally;
    for (int round = 0; round < kRounds; ++round) {
      int ready[2];
      ASSERT_EQ(::pipe(ready), 0);
      const pid_t pid = spawn([&]() -> int {
        ::close(ready[0]);
        SharedVecNorm mine = SharedVecNorm::attach(name, o, table);
        Buf y(DType::float64, Shape{rows, feat});
        if (::write(ready[1], "r", 1) != 1) return 4;
        for (;;) {
          const std::uint64_t g = mine.generation() - 1;  // the only writer; step 0 was the clean one
          mine.step({{"obs", batch[g % P].cview(), y.view()}});
        }
      });
      ASSERT_GT(pid, 0);
      ::close(ready[1]);
      char c = 0;
      const ssize_t got = ::read(ready[0], &c, 1);
      ::close(ready[0]);
      if (got != 1) {
        const int st = wait_for(pid, 10);
        FAIL() << "round " << round << ": the worker died before stepping: " << describe(st);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(round % 10 == 0 ? 0 : delay_us(rng)));
      ASSERT_EQ(::kill(pid, SIGKILL), 0);
      int st = 0;
      ASSERT_EQ(::waitpid(pid, &st, 0), pid);
      ++tally.kills;
      const std::uint64_t deaths = vn.recovered_owner_deaths();
      const std::int64_t skipped = vn.skipped("obs");  // takes the lock: recovers it if the worker held it
      tally.in_lock += vn.recovered_owner_deaths() - deaths;
      const std::uint64_t g = vn.generation() - 1;
      Tally want = tally_of(g);
      want.add(base, 1);
      ASSERT_EQ(skipped, want.skipped) << "round " << round << ", generation " << g;
      ASSERT_EQ(vn.count("obs"), want.count) << "round " << round;
      ASSERT_EQ(vn.element_counts("obs"), want.element_counts(pooled)) << "round " << round;
      ASSERT_TRUE(MatchesTally(vn, "obs", want, rtol_for(DType::float64, static_cast<int>(g) + 1), 20.0))
          << "round " << round << ", generation " << g;
    }
    std::cout << "[ shared   ] skips, " << (pooled ? "pooled" : "per-element") << ": survived " << tally.kills
              << " SIGKILLs, " << tally.in_lock << " of them while the worker held the lock; " << vn.generation() - 1
              << " steps published, skipped " << vn.skipped("obs") << std::endl;
    EXPECT_GT(tally.in_lock, 0u);
    g_total.kills += tally.kills;
    g_total.in_lock += tally.in_lock;
  }
}

// ---------------------------------------------------------------- until

// Options::until on a segment: a step writes the other slot, so a stopped key
// copies its statistics there (the copy a plain VecNorm, updated in place,
// never makes): the same bits as a VecNorm, step by step; the header keeps the
// bound, and an attach with another one is refused naming it.
TEST(SharedUntil, StopsAsAVecNormDoesAndAttachNamesADifferentBound) {
  for (const bool pooled : {false, true}) {
    Options o;
    o.reduce_batch_dims = pooled;
    o.until = pooled ? 10 : 3;  // pooled: 4 rows a step, merged at 0, 4, 8; per element: 3 steps
    const KeyTable table{Shape{4}, {{"obs", Shape{2}, DType::float32}}};
    const std::string name = unique_name(pooled ? "until-pooled" : "until");
    Unlinker unlink{name};
    SharedVecNorm shared = SharedVecNorm::create(name, o, table);
    VecNorm plain(o, table);
    for (int t = 0; t < 6; ++t) {
      std::vector<float> x(8), y1(8), y2(8);
      for (int i = 0; i < 8; ++i) x[static_cast<std::size_t>(i)] = static_cast<float>(i * (t + 1)) + 0.25f * t;
      const vecnorm::ConstTensorView xv(x.data(), DType::float32, Shape{4, 2});
      shared.step({{"obs", xv, vecnorm::TensorView{y1.data(), DType::float32, Shape{4, 2}}}});
      plain.step({{"obs", xv, vecnorm::TensorView{y2.data(), DType::float32, Shape{4, 2}}}});
      const State a = shared.export_state(), b = plain.export_state();
      EXPECT_EQ(a.keys[0].count, b.keys[0].count) << "step " << t;
      EXPECT_EQ(a.keys[0].loc, b.keys[0].loc) << "step " << t;
      EXPECT_EQ(a.keys[0].var, b.keys[0].var) << "step " << t;
      EXPECT_EQ(y1, y2) << "step " << t;
    }
    EXPECT_EQ(plain.export_state().keys[0].count, pooled ? 12 : 3);
    EXPECT_EQ(shared.export_state().options.until, o.until);
    Options other = o;
    other.until = 0;
    try {
      (void)SharedVecNorm::attach(name, other, table);
      ADD_FAILURE() << "attach with another until succeeded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::state_mismatch);
      EXPECT_NE(std::string(e.what()).find("until: expected 0"), std::string::npos) << e.what();
    }
  }
}

// Options::center on a segment: the header keeps it, the outputs are a
// VecNorm's, and an attach that centres is refused naming it.
// With a prior (Options::prior_count), a segment never updated normalizes with
// the prior's map, as a VecNorm does: x / sqrt(1 + eps) with SB3's options.
TEST(SharedPrior, BeforeTheFirstUpdateNormalizesWithThePrior) {
  Options o;
  o.reduce_batch_dims = true;
  o.estimator = vecnorm::Estimator::stable;
  o.decay = 1.0;
  o.prior_count = 1e-4;
  o.scale = vecnorm::ScaleForm::sqrt_var_plus_eps;
  o.eps = 1e-8;
  const KeyTable table{Shape{4}, {{"obs", Shape{2}, DType::float32}}};
  const std::string name = unique_name("prior");
  Unlinker unlink{name};
  SharedVecNorm shared = SharedVecNorm::create(name, o, table);
  VecNorm plain(o, table);
  std::vector<float> x = {1.0f, -2.0f, 3.5f, 0.25f, -8.0f, 100.0f, 0.0f, 7.0f}, y1(8), y2(8);
  const vecnorm::ConstTensorView xv(x.data(), DType::float32, Shape{4, 2});
  shared.normalize({{"obs", xv, vecnorm::TensorView{y1.data(), DType::float32, Shape{4, 2}}}});
  plain.normalize({{"obs", xv, vecnorm::TensorView{y2.data(), DType::float32, Shape{4, 2}}}});
  EXPECT_EQ(y1, y2);
  for (std::size_t i = 0; i < x.size(); ++i)
    EXPECT_NEAR(y1[i], static_cast<double>(x[i]) / std::sqrt(1.0 + 1e-8), 1e-6 * std::abs(x[i])) << i;
  EXPECT_EQ(shared.loc("obs"), std::vector<double>(2, 0.0));
  EXPECT_EQ(shared.count("obs"), 0);
}

TEST(SharedCenter, KeepsTheUncentredMapAndAttachNamesADifferentOne) {
  Options o;
  o.reduce_batch_dims = true;
  o.center = false;
  o.estimator = vecnorm::Estimator::stable;  // (torchrl's early variance is about E[x^2]: VecNormV2's)
  o.decay = 1.0;
  const KeyTable table{Shape{4}, {{"obs", Shape{2}, DType::float32}}};
  const std::string name = unique_name("center");
  Unlinker unlink{name};
  SharedVecNorm shared = SharedVecNorm::create(name, o, table);
  VecNorm plain(o, table);
  std::vector<std::vector<double>> seen(2);  // every value so far, per feature
  for (int t = 0; t < 3; ++t) {
    std::vector<float> x(8), y1(8), y2(8);
    for (int i = 0; i < 8; ++i) x[static_cast<std::size_t>(i)] = 50.0f + static_cast<float>(i * (t + 1));
    for (int i = 0; i < 8; ++i) seen[static_cast<std::size_t>(i % 2)].push_back(x[static_cast<std::size_t>(i)]);
    const vecnorm::ConstTensorView xv(x.data(), DType::float32, Shape{4, 2});
    shared.step({{"obs", xv, vecnorm::TensorView{y1.data(), DType::float32, Shape{4, 2}}}});
    plain.step({{"obs", xv, vecnorm::TensorView{y2.data(), DType::float32, Shape{4, 2}}}});
    EXPECT_EQ(y1, y2) << "step " << t;
    // The closed form: x / max(std, eps), the population std of every value so far.
    for (int i = 0; i < 8; ++i) {
      const std::vector<double>& v = seen[static_cast<std::size_t>(i % 2)];
      double mean = 0.0, var = 0.0;
      for (double e : v) mean += e / static_cast<double>(v.size());
      for (double e : v) var += (e - mean) * (e - mean) / static_cast<double>(v.size());
      const double want = x[static_cast<std::size_t>(i)] / std::max(std::sqrt(var), 1e-4);
      EXPECT_NEAR(y1[static_cast<std::size_t>(i)], want, 2e-6 * want) << "step " << t << " [" << i << "]";
    }
  }
  EXPECT_EQ(shared.loc("obs"), std::vector<double>(2, 0.0));
  EXPECT_FALSE(shared.export_state().options.center);
  Options other = o;
  other.center = true;
  try {
    (void)SharedVecNorm::attach(name, other, table);
    ADD_FAILURE() << "attach with another center succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::state_mismatch);
    EXPECT_NE(std::string(e.what()).find("center: expected true"), std::string::npos) << e.what();
  }
}

}  // namespace

namespace {

// brax's bounds in a segment: the scale at most max_scale, and a batch that
// would take the count past until left out (until_strict); attach names either
// option when it differs.
TEST(SharedBraxOptions, KeepTheBoundsAndAttachNamesADifferentOne) {
  Options o;
  o.reduce_batch_dims = true;
  o.estimator = vecnorm::Estimator::stable;
  o.decay = 1.0;
  o.max_scale = 2.0;
  o.until = 10;
  o.until_strict = true;
  const KeyTable table{Shape{4}, {{"obs", Shape{}, DType::float32}}};
  const std::string name = unique_name("brax");
  Unlinker unlink{name};
  SharedVecNorm shared = SharedVecNorm::create(name, o, table);
  const std::vector<float> x = {3.0f, 5.0f, 6.0f, 10.0f};  // mean 6, std 2.55
  std::vector<float> y(4);
  for (int t = 0; t < 3; ++t) {
    shared.step({{"obs", vecnorm::ConstTensorView(x.data(), DType::float32, Shape{4}),
                  vecnorm::TensorView{y.data(), DType::float32, Shape{4}}}});
    for (int i = 0; i < 4; ++i)
      EXPECT_NEAR(y[static_cast<std::size_t>(i)], (x[static_cast<std::size_t>(i)] - 6.0) / 2.0, 1e-6) << "step " << t;
  }
  EXPECT_EQ(shared.count("obs"), 8) << "4, 8, then 12 > 10: left out";
  for (const bool strict_differs : {false, true}) {
    Options other = o;
    if (strict_differs)
      other.until_strict = false;
    else
      other.max_scale = 3.0;
    try {
      (void)SharedVecNorm::attach(name, other, table);
      ADD_FAILURE() << "attach with another " << (strict_differs ? "until_strict" : "max_scale") << " succeeded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::state_mismatch);
      // (The caller's value is the expected one: check_same_options.)
      EXPECT_NE(std::string(e.what()).find(strict_differs ? "until_strict: expected false" : "max_scale: expected 3"),
                std::string::npos)
          << e.what();
    }
  }
}

}  // namespace
