// tests/reference/reference.cpp -- see reference.hpp. Every formula is quoted
// from shared/spec/semantics.md and evaluated in long double.
#include "reference.hpp"

#include <cmath>
#include <string>

namespace vnref {
namespace {

bool cumulative(const Config& c) { return !(c.decay < 1.0); }

// stable's share of m new samples when n were seen before:
//   d < 1: (1 - d^m) / (1 - d^(n+m));  d = 1: m / (n + m).
long double stable_share(const Config& c, std::int64_t n, std::int64_t m) {
  if (cumulative(c)) return static_cast<long double>(m) / static_cast<long double>(n + m);
  return one_minus_pow(c.decay, static_cast<long double>(m)) / one_minus_pow(c.decay, static_cast<long double>(n + m));
}

void update_magnitudes(Cell& cell, long double share, long double mean_abs, long double mean_sq) {
  cell.mag_abs += share * (mean_abs - cell.mag_abs);
  cell.mag_sq += share * (mean_sq - cell.mag_sq);
}

}  // namespace

long double one_minus_pow(double decay, long double n) {
  if (!(decay < 1.0)) return 0.0L;
  // 1 - d^n = -expm1(n ln d); ln d = log1p(d - 1) with d - 1 exact in long double.
  return -std::expm1(n * std::log1p(static_cast<long double>(decay) - 1.0L));
}

void update_one(const Config& c, Cell& cell, std::int64_t n_before, double x_in) {
  const long double x = x_in;
  const std::int64_t count = n_before + 1;
  if (c.estimator == Estimator::torchrl) {
    // count += 1; w = (d < 1) ? 1 - d : 1 / count; loc += w (x - loc); var += w (x^2 - var)
    const long double w = cumulative(c) ? 1.0L / static_cast<long double>(count) : 1.0L - static_cast<long double>(c.decay);
    cell.loc += w * (x - cell.loc);
    cell.var += w * (x * x - cell.var);
  } else {
    // a = (d < 1) ? (1 - d) / (1 - d^(n+1)) : 1 / (n+1); delta = x - mu; mu += a delta; v = (1 - a)(v + a delta^2)
    const long double a = stable_share(c, n_before, 1);
    const long double delta = x - cell.loc;
    cell.loc += a * delta;
    cell.var = (1.0L - a) * (cell.var + a * delta * delta);
  }
  update_magnitudes(cell, stable_share(c, n_before, 1), std::fabs(x), x * x);
}

void update_batch(const Config& c, Cell& cell, std::int64_t n_before, const std::vector<double>& xs) {
  const std::int64_t m = static_cast<std::int64_t>(xs.size());
  if (m == 0) return;
  // Two passes: the mean, then the moments around it.
  long double sum = 0, sum_abs = 0, sum_sq = 0;
  for (double x : xs) {
    sum += x;
    sum_abs += std::fabs(static_cast<long double>(x));
    sum_sq += static_cast<long double>(x) * x;
  }
  const long double mean = sum / m;
  long double dev2 = 0;
  for (double x : xs) dev2 += (x - mean) * (x - mean);
  const long double s2 = dev2 / m;            // population variance of the batch
  const long double mean_sq = sum_sq / m;     // mean of x^2
  if (c.estimator == Estimator::torchrl) {
    // count += m; w = (d < 1) ? 1 - d^m : m / count; loc += w (mean - loc); var += w (mean(x^2) - var)
    const long double w = cumulative(c) ? static_cast<long double>(m) / static_cast<long double>(n_before + m)
                                        : one_minus_pow(c.decay, static_cast<long double>(m));
    cell.loc += w * (mean - cell.loc);
    cell.var += w * (mean_sq - cell.var);
  } else {
    // a = (d < 1) ? (1 - d^m) / (1 - d^(n+m)) : m / (n+m); delta = mean - mu;
    // mu += a delta; v = (1 - a) v + a s2 + a (1 - a) delta^2
    const long double a = stable_share(c, n_before, m);
    const long double delta = mean - cell.loc;
    cell.loc += a * delta;
    cell.var = (1.0L - a) * cell.var + a * s2 + a * (1.0L - a) * delta * delta;
  }
  update_magnitudes(cell, stable_share(c, n_before, m), sum_abs / m, mean_sq);
}

Readout read(const Config& c, const Cell& cell, std::int64_t count) {
  if (count <= 0) throw std::domain_error("vnref::read: count is " + std::to_string(count));
  long double mu, v, bc = 1.0L;
  if (c.estimator == Estimator::torchrl) {
    // bc = (d < 1) ? 1 - d^count : 1; mu = loc / bc; v = (var - loc^2) / bc
    if (!cumulative(c)) bc = one_minus_pow(c.decay, static_cast<long double>(count));
    mu = cell.loc / bc;
    v = (cell.var - cell.loc * cell.loc) / bc;
  } else {
    mu = cell.loc;
    v = cell.var;
  }
  // scale = max(sqrt(max(v, 0)), eps)
  long double scale = std::sqrt(v > 0 ? v : 0.0L);
  if (scale < c.eps) scale = c.eps;
  Readout r;
  r.mu = static_cast<double>(mu);
  r.v = static_cast<double>(v);
  r.scale = static_cast<double>(scale);
  r.bc = static_cast<double>(bc);
  r.mag_abs = static_cast<double>(cell.mag_abs);
  r.mag_sq = static_cast<double>(cell.mag_sq);
  return r;
}

double normalize(const Readout& r, double x) {
  return static_cast<double>((static_cast<long double>(x) - r.mu) / r.scale);
}

double denormalize(const Readout& r, double y) {
  return static_cast<double>(static_cast<long double>(y) * r.scale + r.mu);
}

// ---------------------------------------------------------------- stateful

StatefulKey::StatefulKey(Config c, bool pooled, std::int64_t feature_numel, std::int64_t batch_numel)
    : config_(c), pooled_(pooled), feature_numel_(feature_numel) {
  cells_.resize(static_cast<std::size_t>(pooled ? feature_numel : feature_numel * batch_numel));
}

void StatefulKey::update(const std::vector<double>& x, std::int64_t m) {
  if (static_cast<std::int64_t>(x.size()) != m * feature_numel_)
    throw std::invalid_argument("vnref::StatefulKey::update: size does not match m * F");
  if (pooled_) {
    if (m == 0) return;  // no samples: count += 0 and nothing to average
    for (std::int64_t f = 0; f < feature_numel_; ++f) {
      std::vector<double> column(static_cast<std::size_t>(m));
      for (std::int64_t b = 0; b < m; ++b) column[b] = x[b * feature_numel_ + f];
      update_batch(config_, cells_[f], count_, column);
    }
    count_ += m;
  } else {
    if (x.size() != cells_.size()) throw std::invalid_argument("vnref::StatefulKey::update: batch size changed");
    for (std::size_t i = 0; i < x.size(); ++i) update_one(config_, cells_[i], count_, x[i]);
    count_ += 1;  // one step, even when the batch is empty
  }
}

std::vector<Readout> StatefulKey::readouts() const {
  std::vector<Readout> r;
  r.reserve(cells_.size());
  for (const Cell& cell : cells_) r.push_back(read(config_, cell, count_));
  return r;
}

std::vector<double> StatefulKey::normalize(const std::vector<double>& x, std::int64_t m) const {
  if (count_ == 0) throw std::domain_error("vnref::StatefulKey::normalize: count is 0");
  const std::vector<Readout> r = readouts();
  std::vector<double> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    y[i] = vnref::normalize(r[pooled_ ? i % static_cast<std::size_t>(feature_numel_) : i], x[i]);
  (void)m;
  return y;
}

std::vector<double> StatefulKey::denormalize(const std::vector<double>& y, std::int64_t m) const {
  const std::vector<Readout> r = readouts();
  std::vector<double> x(y.size());
  for (std::size_t i = 0; i < y.size(); ++i)
    x[i] = vnref::denormalize(r[pooled_ ? i % static_cast<std::size_t>(feature_numel_) : i], y[i]);
  (void)m;
  return x;
}

std::vector<double> StatefulKey::loc() const {
  std::vector<double> out;
  for (const Readout& r : readouts()) out.push_back(r.mu);
  return out;
}

std::vector<double> StatefulKey::scale() const {
  std::vector<double> out;
  for (const Readout& r : readouts()) out.push_back(r.scale);
  return out;
}

// ---------------------------------------------------------------- stateless

StatelessStats StatelessStats::zeros(std::int64_t numel) {
  StatelessStats s;
  s.cells.resize(static_cast<std::size_t>(numel));
  s.count.assign(static_cast<std::size_t>(numel), 0);
  return s;
}

StatelessStats StatelessStats::from_stored(const Config& c, const std::vector<double>& loc,
                                           const std::vector<double>& var, const std::vector<std::int64_t>& count) {
  StatelessStats s = zeros(static_cast<std::int64_t>(loc.size()));
  for (std::size_t i = 0; i < loc.size(); ++i) {
    Cell& cell = s.cells[i];
    cell.loc = loc[i];
    cell.var = var[i];
    s.count[i] = count[i];
    // Magnitudes of the unseen history, estimated from the statistics themselves.
    long double mean_sq;
    if (c.estimator == Estimator::torchrl) {
      const long double bc = (c.decay < 1.0 && count[i] > 0) ? one_minus_pow(c.decay, count[i]) : 1.0L;
      mean_sq = std::fabs(cell.var) / bc + cell.loc * cell.loc / (bc * bc);
    } else {
      mean_sq = std::fabs(cell.var) + cell.loc * cell.loc;
    }
    cell.mag_sq = mean_sq;
    cell.mag_abs = std::sqrt(mean_sq);
  }
  return s;
}

void stateless_update(const Config& c, StatelessStats& s, const std::vector<double>& x) {
  if (x.size() != s.cells.size()) throw std::invalid_argument("vnref::stateless_update: size mismatch");
  for (std::size_t i = 0; i < x.size(); ++i) {
    update_one(c, s.cells[i], s.count[i], x[i]);
    s.count[i] += 1;
  }
}

std::vector<Readout> stateless_readouts(const Config& c, const StatelessStats& s) {
  std::vector<Readout> r;
  r.reserve(s.cells.size());
  for (std::size_t i = 0; i < s.cells.size(); ++i) r.push_back(read(c, s.cells[i], s.count[i]));
  return r;
}

std::vector<double> stateless_normalize(const Config& c, const StatelessStats& s, const std::vector<double>& x) {
  const std::vector<Readout> r = stateless_readouts(c, s);
  std::vector<double> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = vnref::normalize(r[i], x[i]);
  return y;
}

void mean_std(const std::vector<double>& xs, double& mean, double& std_dev) {
  long double sum = 0;
  for (double x : xs) sum += x;
  const long double m = xs.empty() ? 0.0L : sum / xs.size();
  long double dev2 = 0;
  for (double x : xs) dev2 += (x - m) * (x - m);
  mean = static_cast<double>(m);
  std_dev = xs.empty() ? 0.0 : static_cast<double>(std::sqrt(dev2 / xs.size()));
}

}  // namespace vnref
