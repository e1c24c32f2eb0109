// tests/support/data.cpp -- see data.hpp.
#include "data.hpp"

#include <algorithm>
#include <cmath>

#include "dtypes.hpp"

namespace vntest {

FeatureDistribution random_distribution(std::mt19937_64& rng, std::int64_t features, double mean_range,
                                        double stddev_lo, double stddev_hi) {
  FeatureDistribution d;
  std::uniform_real_distribution<double> mean(-mean_range, mean_range);
  std::uniform_real_distribution<double> log_sd(std::log(stddev_lo), std::log(stddev_hi));
  for (std::int64_t f = 0; f < features; ++f) {
    d.mean.push_back(mean(rng));
    d.stddev.push_back(std::exp(log_sd(rng)));
  }
  return d;
}

std::vector<double> random_values(std::mt19937_64& rng, vecnorm::DType dtype, std::int64_t m, std::int64_t features,
                                  const FeatureDistribution& dist) {
  std::normal_distribution<double> z(0.0, 1.0);
  std::vector<double> out(static_cast<std::size_t>(m * features));
  for (std::size_t i = 0; i < out.size(); ++i) {
    const std::size_t f = i % static_cast<std::size_t>(features);
    const double v = dist.mean[f] + dist.stddev[f] * z(rng);
    switch (dtype) {
      case vecnorm::DType::int32: out[i] = std::round(v * 100.0); break;
      case vecnorm::DType::int64: out[i] = std::round(v * 1e7); break;
      case vecnorm::DType::uint8: out[i] = std::clamp(std::round(128.0 + 20.0 * v), 0.0, 255.0); break;
      default: out[i] = v; break;
    }
  }
  // Round floats to what the dtype stores.
  if (vecnorm::is_floating(dtype)) out = decode(dtype, encode(dtype, out));
  return out;
}

std::vector<double> step_values(const FeatureDistribution& dist, unsigned seed, int t, std::int64_t m) {
  std::mt19937_64 rng(seed * 1000u + static_cast<unsigned>(t));
  return random_values(rng, vecnorm::DType::float32, m, static_cast<std::int64_t>(dist.mean.size()), dist);
}

std::vector<double> random_integers(std::mt19937_64& rng, std::int64_t n, int lo, int hi) {
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<double> out(static_cast<std::size_t>(n));
  for (double& v : out) v = d(rng);
  return out;
}

}  // namespace vntest
