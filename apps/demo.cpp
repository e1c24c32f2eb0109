// apps/demo.cpp -- `vecnorm demo`, the main job: a batch of synthetic
// environments stepped through vecnorm. Observation features have very different means and scales;
// the reward is absent on reset steps. Every so often it prints per-key
// loc/scale and the mean/std of the normalized output (which approach 0/1),
// then the normalizer's steps per second. On a terminal a progress bar runs on
// stderr between those lines; otherwise only the lines are printed.
//
//   vecnorm demo [--envs 4096] [--features 24] [--steps 3000] [--decay 0.99]
//                [--estimator stable|torchrl] [--pooled] [--backend cpu|cuda|auto]
//
// The demo uses the stable estimator by default: some of its features have
// |mean| / std = 1e5, where the torchrl estimator in float32 loses the
// variance to cancellation (docs/numerics.md). Run it with --estimator torchrl
// to see that happen.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <vecnorm/vecnorm.hpp>

#include "cli.hpp"
#include "commands.hpp"

namespace vncli {
namespace {

struct Args {
  std::int64_t envs = 4096;
  std::int64_t features = 24;
  std::int64_t steps = 3000;
  std::int64_t reset_every = 250;
  double decay = 0.99;
  vecnorm::Estimator estimator = vecnorm::Estimator::stable;
  vecnorm::Backend backend = vecnorm::Backend::automatic;
  bool pooled = false;
};

constexpr const char* kHelp =
    "usage: vecnorm demo [--envs N] [--features F] [--steps S] [--decay D]\n"
    "                    [--estimator torchrl|stable] [--pooled] [--backend cpu|cuda|auto]\n"
    "\n"
    "Steps N synthetic environments (F observation features whose means span 1e-2..1e3\n"
    "and scales 1e-3..1e2, plus a reward absent on reset steps) through vecnorm, prints\n"
    "per-key loc/scale and how close the normalized output is to mean 0 / std 1, then\n"
    "the normalizer's steps per second.\n"
    "\n"
    "options:\n"
    "  --envs N          environments (default 4096)\n"
    "  --features F      observation features (default 24)\n"
    "  --steps S         steps (default 3000)\n"
    "  --decay D         EMA decay (default 0.99)\n"
    "  --estimator NAME  stable (default: float32 torchrl loses the variance of features\n"
    "                    with |mean|/std = 1e5 to cancellation) or torchrl\n"
    "  --pooled          pooled statistics (reduce_batch_dims)\n"
    "  --backend B       cpu, cuda or auto (default auto: cuda when usable)\n"
    "  -h, --help        this help\n";

Args parse(int argc, char** argv, int first, bool& help) {
  Args a;
  const std::vector<OptionSpec> specs = {
      {"--help", false, [&](const std::string&) { help = true; }},
      {"--envs", true, [&](const std::string& v) { a.envs = parse_int(v, "--envs", 1); }},
      {"--features", true, [&](const std::string& v) { a.features = parse_int(v, "--features", 1); }},
      {"--steps", true, [&](const std::string& v) { a.steps = parse_int(v, "--steps", 1); }},
      {"--decay", true, [&](const std::string& v) { a.decay = parse_double(v, "--decay"); }},
      {"--pooled", false, [&](const std::string&) { a.pooled = true; }},
      {"--estimator", true, [&](const std::string& v) { a.estimator = parse_estimator(v, "--estimator"); }},
      {"--backend", true, [&](const std::string& v) { a.backend = parse_backend(v, "--backend"); }},
  };
  const auto positional = parse_options(argc, argv, first, "demo", specs);
  if (!positional.empty())
    throw UsageError("demo: unexpected argument '" + positional.front() + "' (see 'vecnorm demo --help')");
  return a;
}

/// xoshiro-style generator + Box-Muller: fast, reproducible normal samples.
struct Rng {
  std::uint64_t s;
  explicit Rng(std::uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  std::uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  void normals(float* out, std::int64_t n) {
    for (std::int64_t i = 0; i + 1 < n; i += 2) {
      const double r = std::sqrt(-2.0 * std::log(uniform())), t = 6.283185307179586 * uniform();
      out[i] = static_cast<float>(r * std::cos(t));
      out[i + 1] = static_cast<float>(r * std::sin(t));
    }
    if (n % 2) out[n - 1] = static_cast<float>(std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform()));
  }
};

/// Mean and std over everything, and the worst per-feature |mean| and |std - 1|.
struct Summary {
  double worst_mean = 0, worst_std_dev = 0;
};
Summary summarize(const std::vector<float>& y, std::int64_t rows, std::int64_t feat) {
  Summary s;
  for (std::int64_t f = 0; f < feat; ++f) {
    double m = 0, q = 0;
    for (std::int64_t r = 0; r < rows; ++r) m += y[static_cast<std::size_t>(r * feat + f)];
    m /= static_cast<double>(rows);
    for (std::int64_t r = 0; r < rows; ++r) {
      const double d = y[static_cast<std::size_t>(r * feat + f)] - m;
      q += d * d;
    }
    const double sd = std::sqrt(q / static_cast<double>(rows));
    s.worst_mean = std::max(s.worst_mean, std::fabs(m));
    s.worst_std_dev = std::max(s.worst_std_dev, std::fabs(sd - 1.0));
  }
  return s;
}

}  // namespace

int run_demo(int argc, char** argv, int first) {
  bool help = false;
  const Args a = parse(argc, argv, first, help);
  if (help) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  {
    vecnorm::Options opt;
    opt.decay = a.decay;
    opt.estimator = a.estimator;
    opt.reduce_batch_dims = a.pooled;
    opt.backend = a.backend;
    vecnorm::KeyTable table;
    table.batch_shape = {a.envs};
    table.keys = {{"observation", {a.features}, vecnorm::DType::float32},
                  {"reward", {}, vecnorm::DType::float32}};
    vecnorm::VecNorm vn(opt, table);
    std::printf("vecnorm %s demo: %lld envs x %lld features + reward, %lld steps, decay %g, %s estimator, %s, "
                "backend %s\n",
                vecnorm::version(), static_cast<long long>(a.envs), static_cast<long long>(a.features),
                static_cast<long long>(a.steps), a.decay, vecnorm::to_string(a.estimator),
                a.pooled ? "pooled statistics" : "per-env statistics", vecnorm::to_string(vn.backend()));

    // Feature f: mean spans 1e-2 .. 1e3 with alternating signs, scale 1e-3 .. 1e2.
    std::vector<double> mean(static_cast<std::size_t>(a.features)), sd(static_cast<std::size_t>(a.features));
    for (std::int64_t f = 0; f < a.features; ++f) {
      mean[static_cast<std::size_t>(f)] = (f % 2 ? -1.0 : 1.0) * std::pow(10.0, static_cast<double>(f % 6) - 2.0);
      sd[static_cast<std::size_t>(f)] = std::pow(10.0, static_cast<double>((f * 5) % 6) - 3.0);
    }
    const std::size_t n_obs = static_cast<std::size_t>(a.envs * a.features);
    std::vector<float> obs(n_obs), obs_y(n_obs), rew(static_cast<std::size_t>(a.envs)),
        rew_y(static_cast<std::size_t>(a.envs));
    vecnorm::Buffer obs_dev(vn.backend(), n_obs * 4), obs_y_dev(vn.backend(), n_obs * 4),
        rew_dev(vn.backend(), rew.size() * 4), rew_y_dev(vn.backend(), rew.size() * 4);
    Rng rng(42);
    double seconds = 0;
    const std::int64_t report_every = std::max<std::int64_t>(1, a.steps / 6);
    std::int64_t absent = 0;
    Progress progress("vecnorm demo", a.steps, is_terminal(2));
    for (std::int64_t t = 0; t < a.steps; ++t) {
      rng.normals(obs.data(), static_cast<std::int64_t>(n_obs));
      for (std::int64_t r = 0; r < a.envs; ++r)
        for (std::int64_t f = 0; f < a.features; ++f) {
          float& v = obs[static_cast<std::size_t>(r * a.features + f)];
          v = static_cast<float>(mean[static_cast<std::size_t>(f)] + sd[static_cast<std::size_t>(f)] * v);
        }
      rng.normals(rew.data(), a.envs);
      for (float& v : rew) v = 0.5f + 2.0f * v;
      const bool reset = t % a.reset_every == 0;  // the reward is absent on reset steps
      const vecnorm::Shape os{a.envs, a.features}, rs{a.envs};
      // The data live where the backend works: host memory, or device memory
      // filled from the host (the copy is the simulator's job, not timed).
      obs_dev.copy_from_host(obs.data(), n_obs * 4);
      rew_dev.copy_from_host(rew.data(), rew.size() * 4);
      const vecnorm::KeyData obs_io{"observation", obs_dev.view(vecnorm::DType::float32, os),
                                    obs_y_dev.view(vecnorm::DType::float32, os)};
      const vecnorm::KeyData rew_io{"reward", rew_dev.view(vecnorm::DType::float32, rs),
                                    rew_y_dev.view(vecnorm::DType::float32, rs)};
      const auto t0 = std::chrono::steady_clock::now();
      if (reset) {
        vn.step({obs_io});
        ++absent;
      } else {
        vn.step({obs_io, rew_io});
      }
      vecnorm::synchronize(vn.backend());
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if ((t + 1) % report_every == 0 || t + 1 == a.steps) {
        progress.clear();
        obs_y_dev.copy_to_host(obs_y.data(), n_obs * 4);
        rew_y_dev.copy_to_host(rew_y.data(), rew_y.size() * 4);
        const Summary so = summarize(obs_y, a.envs, a.features);
        const auto loc = vn.loc("observation"), scale = vn.scale("observation");
        std::printf("step %6lld/%lld  observation: loc[0..2] = %9.4g %9.4g %9.4g  scale[0..2] = %9.4g %9.4g %9.4g\n",
                    static_cast<long long>(t + 1), static_cast<long long>(a.steps), loc[0], loc[1 % loc.size()],
                    loc[2 % loc.size()], scale[0], scale[1 % scale.size()], scale[2 % scale.size()]);
        std::printf("              normalized observation: worst |mean| %.3f, worst |std - 1| %.3f over %lld features\n",
                    so.worst_mean, so.worst_std_dev, static_cast<long long>(a.features));
        if (vn.count("reward") > 0) {
          const Summary sr = summarize(rew_y, a.envs, 1);
          std::printf("              reward: count %lld (absent on %lld reset steps), normalized |mean| %.3f, |std - 1| %.3f\n",
                      static_cast<long long>(vn.count("reward")), static_cast<long long>(absent), sr.worst_mean,
                      sr.worst_std_dev);
        }
        std::fflush(stdout);
      }
      progress.update(t + 1);
    }
    progress.clear();
    std::printf("%lld steps in %.3f s of normalizer time: %.0f steps/s (%.2f us/step, %.2f GB/s of observations)\n",
                static_cast<long long>(a.steps), seconds, static_cast<double>(a.steps) / seconds,
                1e6 * seconds / static_cast<double>(a.steps),
                static_cast<double>(a.steps) * static_cast<double>(n_obs) * 4.0 / seconds / 1e9);
  }
  return kExitOk;
}

}  // namespace vncli
