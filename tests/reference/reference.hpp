// tests/reference/reference.hpp -- the test oracle: a naive, high-precision
// re-statement of shared/spec/semantics.md.
//
// Independent of include/vecnorm/core (the code under test): every formula is
// written here again, straight from the spec, in long double, for clarity and
// not for speed. Inputs are doubles already converted per the dtype rules
// (integers -> float32 -> double, half/bfloat16 -> their exact value).
//
// Layout: a key's data is batch-major: element (b, f) of a batch of m samples
// with F features is at b * F + f.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <vector>

namespace vnref {

enum class Estimator { torchrl, stable };

struct Config {
  Estimator estimator = Estimator::torchrl;
  double decay = 0.9999;  ///< in (0, 1]; 1 = cumulative
  double eps = 1e-4;
};

/// The statistics of one element (per-element / stateless) or of one feature
/// (pooled), exactly as the estimator stores them:
///   torchrl: loc = EMA of x, var = EMA of x^2 (raw, not bias-corrected);
///   stable:  loc = weighted mean mu, var = weighted population variance v.
struct Cell {
  long double loc = 0;
  long double var = 0;
  /// Bias-corrected weighted means of |x| and x^2 with the same weights: data
  /// magnitudes used only to size rounding tolerances (no estimator uses them).
  long double mag_abs = 0;
  long double mag_sq = 0;
};

/// What normalize uses after `count` samples, in double.
struct Readout {
  double mu = 0;       ///< bias-corrected mean
  double v = 0;        ///< variance before the clamp (torchrl: (var - loc^2) / bc; stable: v)
  double scale = 0;    ///< max(sqrt(max(v, 0)), eps)
  double bc = 1;       ///< torchrl's bias correction 1 - d^count (1 when d = 1 and for stable)
  double mag_abs = 0;  ///< see Cell
  double mag_sq = 0;
};

/// The total EMA weight 1 - d^n (long double, n >= 0).
long double one_minus_pow(double decay, long double n);

/// Per-element update of one cell whose count is `n_before` (the step adds one sample).
void update_one(const Config& c, Cell& cell, std::int64_t n_before, double x);
/// Pooled update of one cell with a batch xs (m = xs.size() > 0 samples).
void update_batch(const Config& c, Cell& cell, std::int64_t n_before, const std::vector<double>& xs);
/// Read-out after `count` (> 0) samples; throws std::domain_error when count == 0.
Readout read(const Config& c, const Cell& cell, std::int64_t count);
/// y = (x - mu) / scale.
double normalize(const Readout& r, double x);
/// x = y * scale + mu.
double denormalize(const Readout& r, double y);

/// Stateful statistics of one key.
///   per-element: one cell per batch x feature element, count += 1 per step;
///   pooled:      one cell per feature, count += m per step (a step with m = 0
///                changes nothing).
class StatefulKey {
 public:
  /// per-element: batch_numel is the fixed batch size (stats = batch_numel * feature_numel).
  /// pooled: batch_numel is ignored (every step brings its own m).
  StatefulKey(Config c, bool pooled, std::int64_t feature_numel, std::int64_t batch_numel = 1);

  /// x holds m * feature_numel values (batch-major).
  void update(const std::vector<double>& x, std::int64_t m);
  std::vector<double> normalize(const std::vector<double>& x, std::int64_t m) const;
  std::vector<double> denormalize(const std::vector<double>& y, std::int64_t m) const;

  std::vector<Readout> readouts() const;  ///< one per statistics element
  std::vector<double> loc() const;        ///< mu per statistics element
  std::vector<double> scale() const;
  std::int64_t count() const { return count_; }
  std::int64_t stats_numel() const { return static_cast<std::int64_t>(cells_.size()); }
  bool pooled() const { return pooled_; }
  const Config& config() const { return config_; }
  const std::vector<Cell>& cells() const { return cells_; }

 private:
  Config config_;
  bool pooled_;
  std::int64_t feature_numel_;
  std::int64_t count_ = 0;
  std::vector<Cell> cells_;
};

/// Stateless statistics: one cell and one count per element.
struct StatelessStats {
  std::vector<Cell> cells;
  std::vector<std::int64_t> count;

  static StatelessStats zeros(std::int64_t numel);
  /// Statistics given by a caller as stored values (loc/var as stored by the
  /// estimator, one count per element). Magnitudes are estimated from them.
  static StatelessStats from_stored(const Config& c, const std::vector<double>& loc, const std::vector<double>& var,
                                    const std::vector<std::int64_t>& count);
};

/// count += 1 and the per-element update, for every element.
void stateless_update(const Config& c, StatelessStats& s, const std::vector<double>& x);
/// Normalize with per-element counts; throws std::domain_error where a count is 0.
std::vector<double> stateless_normalize(const Config& c, const StatelessStats& s, const std::vector<double>& x);
std::vector<Readout> stateless_readouts(const Config& c, const StatelessStats& s);

/// Exact mean and population standard deviation of xs (two-pass, long double).
void mean_std(const std::vector<double>& xs, double& mean, double& std_dev);

}  // namespace vnref
