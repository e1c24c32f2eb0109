// tests/cli/large_replay_check.cpp -- the large replay of issue 4's "done when",
// checked against the double-precision reference (not a ctest test: it moves
// gigabytes). Built on request:
//
//   cmake --build build --target vecnorm_cli_large_check
//   build/tests/cli/vecnorm_cli_large_check gen obs.npy 1000 4096 64
//   time build/apps/vecnorm replay --out out --json obs=obs.npy > stats.json
//   build/tests/cli/vecnorm_cli_large_check check obs.npy out/obs.npy stats.json
//
// `gen` writes a float32 [T, B, F] .npy of normal samples, feature f with its
// own mean (uniform in [-2, 2]) and standard deviation (log-uniform in
// [0.5, 2]). `check` replays the same file through vnref::StatefulKey
// (per-element statistics, torchrl estimator unless --estimator stable, decay
// 0.9999 unless --decay, eps 1e-4) in long double, and compares every output
// element and, given the --json output, every loc/scale. It prints the largest
// relative errors, |got - ref| / max(|ref|, 1) for outputs and loc (values
// near 0 have no meaningful relative error: features whose mean is near 0 have
// a loc near 0) and |got - ref| / |ref| for scale, and exits 1 when one exceeds
// --rtol (default 1e-5).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "reference.hpp"

namespace {

[[noreturn]] void die(const std::string& m) {
  std::fprintf(stderr, "large_replay_check: %s\n", m.c_str());
  std::exit(2);
}

std::string header_for(std::int64_t T, std::int64_t B, std::int64_t F) {
  std::string d = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(T) + ", " +
                  std::to_string(B) + ", " + std::to_string(F) + "), }";
  while ((10 + d.size() + 1) % 64) d += ' ';
  d += '\n';
  std::string h = "\x93NUMPY";
  h += '\x01';
  h += '\x00';
  h += static_cast<char>(d.size() & 0xff);
  h += static_cast<char>(d.size() >> 8);
  return h + d;
}

/// Opens a version 1 float32 [T, B, F] file written by `gen` or by vecnorm.
struct F32File {
  std::ifstream f;
  std::int64_t T = 0, B = 0, F = 0;
  explicit F32File(const std::string& path) : f(path, std::ios::binary) {
    if (!f) die("cannot open " + path);
    char pre[10];
    f.read(pre, 10);
    if (!f || std::memcmp(pre, "\x93NUMPY\x01\x00", 8) != 0) die(path + ": not a version 1 .npy");
    const std::size_t len = static_cast<unsigned char>(pre[8]) | static_cast<std::size_t>(static_cast<unsigned char>(pre[9])) << 8;
    std::string h(len, '\0');
    f.read(h.data(), static_cast<std::streamsize>(len));
    if (h.find("'<f4'") == std::string::npos) die(path + ": expected float32 data");
    const auto s = h.find("'shape': (");
    if (s == std::string::npos || std::sscanf(h.c_str() + s + 10, "%ld, %ld, %ld", &T, &B, &F) != 3)
      die(path + ": expected a 3-d shape");
  }
  void row(std::vector<float>& out) {
    out.resize(static_cast<std::size_t>(B * F));
    f.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(out.size() * 4));
    if (!f) die("short read");
  }
};

/// The numbers of the array after `"<field>": [` in the object of `key`.
std::vector<double> json_array(const std::string& text, const std::string& key, const std::string& field) {
  const auto k = text.find("\"" + key + "\":");
  if (k == std::string::npos) die("JSON: no key " + key);
  const auto f = text.find("\"" + field + "\": [", k);
  if (f == std::string::npos) die("JSON: no " + field);
  std::vector<double> v;
  const char* p = text.c_str() + text.find('[', f) + 1;
  while (*p && *p != ']') {
    char* end = nullptr;
    v.push_back(std::strtod(p, &end));
    if (end == p) die("JSON: bad number");
    p = end;
    while (*p == ',' || *p == ' ' || *p == '\n') ++p;
  }
  return v;
}

int gen(int argc, char** argv) {
  if (argc < 6) die("usage: gen FILE T B F [seed]");
  const std::int64_t T = std::atoll(argv[3]), B = std::atoll(argv[4]), F = std::atoll(argv[5]);
  std::mt19937_64 rng(argc > 6 ? std::strtoull(argv[6], nullptr, 10) : 4);
  std::uniform_real_distribution<double> mean(-2.0, 2.0), log_sd(std::log(0.5), std::log(2.0));
  std::vector<double> mu(static_cast<std::size_t>(F)), sd(static_cast<std::size_t>(F));
  for (std::int64_t f = 0; f < F; ++f) {
    mu[static_cast<std::size_t>(f)] = mean(rng);
    sd[static_cast<std::size_t>(f)] = std::exp(log_sd(rng));
  }
  std::ofstream out(argv[2], std::ios::binary);
  const std::string h = header_for(T, B, F);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  std::normal_distribution<float> z(0.0f, 1.0f);
  std::vector<float> row(static_cast<std::size_t>(B * F));
  for (std::int64_t t = 0; t < T; ++t) {
    for (std::size_t i = 0; i < row.size(); ++i)
      row[i] = static_cast<float>(mu[i % static_cast<std::size_t>(F)] + sd[i % static_cast<std::size_t>(F)] * z(rng));
    out.write(reinterpret_cast<const char*>(row.data()), static_cast<std::streamsize>(row.size() * 4));
  }
  if (!out) die("cannot write");
  return 0;
}

int check(int argc, char** argv) {
  if (argc < 4) die("usage: check INPUT OUTPUT [JSON] [--estimator torchrl|stable] [--decay D] [--rtol R]");
  vnref::Config cfg;  // decay 0.9999, eps 1e-4, torchrl
  double rtol = 1e-5;
  std::string json_path;
  for (int i = 4; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--estimator" && i + 1 < argc) cfg.estimator = std::string(argv[++i]) == "stable" ? vnref::Estimator::stable : vnref::Estimator::torchrl;
    else if (a == "--decay" && i + 1 < argc) cfg.decay = std::atof(argv[++i]);
    else if (a == "--rtol" && i + 1 < argc) rtol = std::atof(argv[++i]);
    else json_path = a;
  }
  F32File in(argv[2]), out(argv[3]);
  if (in.T != out.T || in.B != out.B || in.F != out.F) die("input and output shapes differ");
  const std::int64_t B = in.B, F = in.F;
  const unsigned nthreads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::int64_t> bounds;
  for (unsigned i = 0; i <= nthreads; ++i) bounds.push_back(B * i / nthreads);
  std::vector<vnref::StatefulKey> keys;
  for (unsigned i = 0; i < nthreads; ++i) keys.emplace_back(cfg, false, F, bounds[i + 1] - bounds[i]);
  struct Worst {
    double err = 0, ref = 0, got = 0, x = 0, mu = 0, scale = 0;
    std::int64_t t = -1;
    std::size_t at = 0;
  };
  std::vector<Worst> worst(nthreads);
  std::vector<float> x, y;
  for (std::int64_t t = 0; t < in.T; ++t) {
    in.row(x);
    out.row(y);
    std::vector<std::thread> pool;
    for (unsigned i = 0; i < nthreads; ++i)
      pool.emplace_back([&, i] {
        const std::size_t a = static_cast<std::size_t>(bounds[i] * F), b = static_cast<std::size_t>(bounds[i + 1] * F);
        const std::vector<double> xs(x.begin() + static_cast<std::ptrdiff_t>(a), x.begin() + static_cast<std::ptrdiff_t>(b));
        keys[i].update(xs, bounds[i + 1] - bounds[i]);
        const std::vector<double> ref = keys[i].normalize(xs, bounds[i + 1] - bounds[i]);
        bool changed = false;
        for (std::size_t j = 0; j < ref.size(); ++j) {
          const double e = std::fabs(y[a + j] - ref[j]) / std::max(std::fabs(ref[j]), 1.0);
          if (e > worst[i].err) {
            worst[i] = {e, ref[j], y[a + j], xs[j], 0, 0, t, a + j};
            changed = true;
          }
        }
        if (changed) {  // where the worst element stands (its read-out at this step)
          const vnref::Readout r = keys[i].readouts()[worst[i].at - a];
          worst[i].mu = r.mu;
          worst[i].scale = r.scale;
        }
      });
    for (auto& th : pool) th.join();
  }
  Worst w;
  for (const Worst& one : worst)
    if (one.err > w.err) w = one;
  const double wy = w.err;
  std::printf("outputs: %lld x %lld x %lld elements, max |y - ref| / max(|ref|, 1) = %.3g\n",
              static_cast<long long>(in.T), static_cast<long long>(B), static_cast<long long>(F), wy);
  if (w.t >= 0)
    std::printf("  worst at step %lld, element %zu: x %.9g, ref mu %.9g, ref scale %.9g, y ref %.9g, got %.9g\n",
                static_cast<long long>(w.t), w.at, w.x, w.mu, w.scale, w.ref, w.got);
  bool ok = wy <= rtol;
  if (!json_path.empty()) {
    std::ifstream jf(json_path);
    std::stringstream ss;
    ss << jf.rdbuf();
    const std::string text = ss.str();
    const std::vector<double> loc = json_array(text, "obs", "loc"), scale = json_array(text, "obs", "scale");
    if (loc.size() != static_cast<std::size_t>(B * F) || scale.size() != loc.size()) die("JSON: wrong number of values");
    double wl = 0, ws = 0, wl_plain = 0;
    for (unsigned i = 0; i < nthreads; ++i) {
      const auto rl = keys[i].loc(), rs = keys[i].scale();
      const std::size_t a = static_cast<std::size_t>(bounds[i] * F);
      for (std::size_t j = 0; j < rl.size(); ++j) {
        wl = std::max(wl, std::fabs(loc[a + j] - rl[j]) / std::max(std::fabs(rl[j]), 1.0));
        wl_plain = std::max(wl_plain, std::fabs(loc[a + j] - rl[j]) / std::fabs(rl[j]));
        ws = std::max(ws, std::fabs(scale[a + j] - rs[j]) / std::fabs(rs[j]));
      }
    }
    std::printf("JSON: max |loc - ref| / max(|ref|, 1) = %.3g (/ |ref|: %.3g), max |scale - ref| / |ref| = %.3g\n", wl,
                wl_plain, ws);
    ok = ok && wl <= rtol && ws <= rtol;
  }
  std::printf("%s (rtol %g)\n", ok ? "PASS" : "FAIL", rtol);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "gen") return gen(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "check") return check(argc, argv);
  die("usage: large_replay_check gen FILE T B F [seed] | check INPUT OUTPUT [JSON] [options]");
}
