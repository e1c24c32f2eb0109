// tests/support/check.cpp -- see check.hpp.
#include "check.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>

#include "dtypes.hpp"

namespace vntest {
namespace {

bool same_special(double e, double a) {
  if (std::isnan(e) || std::isnan(a)) return std::isnan(e) && std::isnan(a);
  if (std::isinf(e) || std::isinf(a)) return e == a;
  return false;
}
bool special(double v) { return std::isnan(v) || std::isinf(v); }

std::string g17(double v) {
  std::ostringstream os;
  os << std::setprecision(17) << v;
  return os.str();
}

}  // namespace

::testing::AssertionResult AllClose(const std::string& what, const std::vector<double>& expected,
                                    const std::vector<double>& actual, const std::vector<double>& tol) {
  if (expected.size() != actual.size() || expected.size() != tol.size())
    return ::testing::AssertionFailure() << what << ": sizes differ: expected " << expected.size()
                                         << " elements, actual " << actual.size() << " (tolerances " << tol.size()
                                         << ")";
  std::size_t bad = 0, first = 0;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const double e = expected[i], a = actual[i];
    bool ok;
    if (special(e) || special(a)) ok = same_special(e, a);
    else ok = std::fabs(a - e) <= tol[i];
    if (!ok && bad++ == 0) first = i;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  const double e = expected[first], a = actual[first];
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << expected.size()
                                       << " elements off; first at index " << first << ": expected " << g17(e)
                                       << ", actual " << g17(a) << ", |diff| " << g17(std::fabs(a - e))
                                       << " > tolerance " << g17(tol[first]);
}

::testing::AssertionResult AllClose(const std::string& what, const std::vector<double>& expected,
                                    const std::vector<double>& actual, double tol) {
  return AllClose(what, expected, actual, std::vector<double>(expected.size(), tol));
}

::testing::AssertionResult AllEqual(const std::string& what, const std::vector<double>& expected,
                                    const std::vector<double>& actual) {
  return AllClose(what, expected, actual, 0.0);
}

::testing::AssertionResult AllEqual(const std::string& what, const std::vector<std::int64_t>& expected,
                                    const std::vector<std::int64_t>& actual) {
  if (expected.size() != actual.size())
    return ::testing::AssertionFailure() << what << ": sizes differ: expected " << expected.size() << ", actual "
                                         << actual.size();
  for (std::size_t i = 0; i < expected.size(); ++i)
    if (expected[i] != actual[i])
      return ::testing::AssertionFailure() << what << ": first difference at index " << i << ": expected "
                                           << expected[i] << ", actual " << actual[i];
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult BitEqual(const std::string& what, vecnorm::DType dtype,
                                    const std::vector<std::byte>& expected, const std::vector<std::byte>& actual) {
  if (expected.size() != actual.size())
    return ::testing::AssertionFailure() << what << ": sizes differ: expected " << expected.size()
                                         << " bytes, actual " << actual.size();
  const std::size_t size = vecnorm::dtype_size(dtype);
  std::size_t bad = 0, first = 0;
  for (std::size_t i = 0; i < expected.size() / size; ++i)
    if (std::memcmp(expected.data() + i * size, actual.data() + i * size, size) != 0 && bad++ == 0) first = i;
  if (bad == 0) return ::testing::AssertionSuccess();
  auto element = [&](const std::vector<std::byte>& b) {
    std::vector<std::byte> one(b.begin() + static_cast<std::ptrdiff_t>(first * size),
                               b.begin() + static_cast<std::ptrdiff_t>((first + 1) * size));
    std::ostringstream os;
    os << g17(decode(dtype, one)[0]) << " (bytes";
    for (std::byte x : one) os << ' ' << std::hex << std::setw(2) << std::setfill('0') << static_cast<int>(x);
    os << ")";
    return os.str();
  };
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << expected.size() / size
                                       << " elements differ in their bits; first at index " << first << ": expected "
                                       << element(expected) << ", actual " << element(actual);
}

::testing::AssertionResult AllFinite(const std::string& what, const std::vector<double>& values) {
  for (std::size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      return ::testing::AssertionFailure() << what << ": index " << i << " is " << values[i]
                                           << " (expected a finite value)";
  return ::testing::AssertionSuccess();
}

double unit_roundoff(vecnorm::DType stats_dtype) {
  return stats_dtype == vecnorm::DType::float64 ? std::ldexp(1.0, -53) : std::ldexp(1.0, -24);
}

double rtol_for(vecnorm::DType stats_dtype, int steps) { return unit_roundoff(stats_dtype) * 16.0 * (steps + 4); }

double mu_tolerance(const vnref::Readout& r, double rtol) { return rtol * (r.mag_abs + std::fabs(r.mu)); }

namespace {
void scale_interval(const vnref::Readout& r, double rtol, double eps, double& lo, double& hi) {
  const double dv = rtol * (r.mag_sq + r.mu * r.mu);
  hi = std::max(std::sqrt(std::max(r.v + dv, 0.0)), eps) * (1.0 + rtol);
  lo = std::max(std::sqrt(std::max(r.v - dv, 0.0)), eps) * (1.0 - rtol);
}
}  // namespace

double scale_tolerance(const vnref::Readout& r, double rtol, double eps) {
  double lo, hi;
  scale_interval(r, rtol, eps, lo, hi);
  return std::max(hi - r.scale, r.scale - lo);
}

double y_tolerance(const vnref::Readout& r, double x, double rtol, double eps, vecnorm::DType out_dtype) {
  double s_lo, s_hi;
  scale_interval(r, rtol, eps, s_lo, s_hi);
  const double num = std::fabs(x - r.mu);
  const double dm = mu_tolerance(r, rtol) + rtol * std::fabs(x);
  const double y = num / r.scale;
  const double hi = (num + dm) / s_lo;
  const double lo = std::max(num - dm, 0.0) / s_hi;
  double tol = std::max(hi - y, y - lo) + rtol * y;
  // 16-bit outputs are rounded from float32 (convert.hpp stores float -> half),
  // so a double result is rounded twice: up to half a float32 ulp more.
  if (out_dtype == vecnorm::DType::float16 || out_dtype == vecnorm::DType::bfloat16)
    tol += 0.5 * ulp(vecnorm::DType::float32, y + tol);
  return tol + 0.5 * ulp(out_dtype, y + tol);
}

std::vector<double> y_tolerances(const std::vector<vnref::Readout>& r, bool pooled, std::int64_t feature_numel,
                                 const std::vector<double>& x, double rtol, double eps, vecnorm::DType out_dtype) {
  std::vector<double> tol(x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    tol[i] = y_tolerance(r[pooled ? i % static_cast<std::size_t>(feature_numel) : i], x[i], rtol, eps, out_dtype);
  return tol;
}

std::vector<double> mu_tolerances(const std::vector<vnref::Readout>& r, double rtol) {
  std::vector<double> tol;
  for (const auto& one : r) tol.push_back(mu_tolerance(one, rtol));
  return tol;
}

std::vector<double> scale_tolerances(const std::vector<vnref::Readout>& r, double rtol, double eps) {
  std::vector<double> tol;
  for (const auto& one : r) tol.push_back(scale_tolerance(one, rtol, eps));
  return tol;
}

}  // namespace vntest

namespace vntest {
std::vector<double> stored_loc_tolerances(const std::vector<vnref::Readout>& r, double rtol) {
  std::vector<double> tol;
  for (const auto& one : r) tol.push_back(rtol * one.bc * (one.mag_abs + std::fabs(one.mu)));
  return tol;
}
std::vector<double> stored_var_tolerances(const std::vector<vnref::Readout>& r, double rtol) {
  std::vector<double> tol;
  for (const auto& one : r) tol.push_back(rtol * one.bc * (one.mag_sq + one.mu * one.mu));
  return tol;
}
}  // namespace vntest

namespace vntest {
std::vector<std::byte> as_bytes(const std::vector<std::uint8_t>& v) {
  std::vector<std::byte> out(v.size());
  if (!v.empty()) std::memcpy(out.data(), v.data(), v.size());
  return out;
}
}  // namespace vntest
