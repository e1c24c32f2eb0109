// tests/support/data.hpp -- random test data, exactly representable in its dtype.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include <vecnorm/tensor.hpp>

namespace vntest {

/// Per-feature mean and standard deviation (in "float units"; integer dtypes
/// scale them, see random_values).
struct FeatureDistribution {
  std::vector<double> mean;
  std::vector<double> stddev;
};

/// Means uniform in [-mean_range, mean_range], stddevs log-uniform in
/// [stddev_lo, stddev_hi].
FeatureDistribution random_distribution(std::mt19937_64& rng, std::int64_t features, double mean_range = 5.0,
                                        double stddev_lo = 0.3, double stddev_hi = 3.0);

/// m * F values (batch-major, feature f at i % F), normal per feature, rounded
/// to values that `dtype` stores exactly:
///   floats: rounded to the dtype;  int32: x 100;  int64: x 1e7 (so that values
///   pass 2^24 and the float32 conversion rounds);  uint8: 128 + 20 x, clamped.
std::vector<double> random_values(std::mt19937_64& rng, vecnorm::DType dtype, std::int64_t m, std::int64_t features,
                                  const FeatureDistribution& dist);

/// Step t of a stream of batches: random_values (float32) of m rows from a
/// generator seeded by (seed, t) alone, so that a step's batch does not depend
/// on what ran before it.
std::vector<double> step_values(const FeatureDistribution& dist, unsigned seed, int t, std::int64_t m);

/// Integers uniform in [lo, hi] (exact in every dtype whose range holds them).
std::vector<double> random_integers(std::mt19937_64& rng, std::int64_t n, int lo, int hi);

}  // namespace vntest
