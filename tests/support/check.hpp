// tests/support/check.hpp -- comparison helpers (AssertionResult) and the
// rounding tolerances used against the reference.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <vecnorm/tensor.hpp>

#include "../reference/reference.hpp"

namespace vntest {

/// |actual[i] - expected[i]| <= tol[i] for every i. NaN matches only NaN, an
/// infinity only the same infinity. On failure the message names `what`, how
/// many elements are off, and the first bad index with expected, actual, the
/// difference and the tolerance.
::testing::AssertionResult AllClose(const std::string& what, const std::vector<double>& expected,
                                    const std::vector<double>& actual, const std::vector<double>& tol);
::testing::AssertionResult AllClose(const std::string& what, const std::vector<double>& expected,
                                    const std::vector<double>& actual, double tol);
/// Exact equality of values (same rules for NaN).
::testing::AssertionResult AllEqual(const std::string& what, const std::vector<double>& expected,
                                    const std::vector<double>& actual);
::testing::AssertionResult AllEqual(const std::string& what, const std::vector<std::int64_t>& expected,
                                    const std::vector<std::int64_t>& actual);
/// Bit-for-bit equality of two buffers of `dtype` (the first differing element
/// is printed as a value and as its bytes).
::testing::AssertionResult BitEqual(const std::string& what, vecnorm::DType dtype,
                                    const std::vector<std::byte>& expected, const std::vector<std::byte>& actual);
/// No NaN (and no infinity) anywhere.
::testing::AssertionResult AllFinite(const std::string& what, const std::vector<double>& values);

// ---------------------------------------------------------------- tolerances
//
// The library computes in float or double and stores the statistics in the
// stats dtype; the reference is exact (long double). The error model:
//   rtol = u * 16 * (steps + 4), u = 2^-24 for float32 statistics (float32
//   storage or compute: ~1e-5 after a few steps) and 2^-53 for float64 ones
//   (~1e-14), grows with the number of steps because rounding errors of the
//   stored statistics accumulate (linearly in the worst case at decay 1);
//   mu is off by at most rtol * (E|x| + |mu|);
//   v  is off by at most rtol * (E[x^2] + mu^2)   (what var - loc^2 cancels);
// and the tolerances of scale and y follow by interval arithmetic through
// scale = max(sqrt(max(v, 0)), eps) and y = (x - mu) / scale, plus half an
// output ulp for the final rounding to the output dtype (and, for float16 /
// bfloat16 outputs, half a float32 ulp: they are rounded from a float32).

double unit_roundoff(vecnorm::DType stats_dtype);
double rtol_for(vecnorm::DType stats_dtype, int steps);
double mu_tolerance(const vnref::Readout& r, double rtol);
double scale_tolerance(const vnref::Readout& r, double rtol, double eps);
double y_tolerance(const vnref::Readout& r, double x, double rtol, double eps, vecnorm::DType out_dtype);

/// Tolerances of a whole output: readouts are per statistics element; when
/// pooled, element i uses readout i % feature_numel.
std::vector<double> y_tolerances(const std::vector<vnref::Readout>& r, bool pooled, std::int64_t feature_numel,
                                 const std::vector<double>& x, double rtol, double eps, vecnorm::DType out_dtype);
std::vector<double> mu_tolerances(const std::vector<vnref::Readout>& r, double rtol);
std::vector<double> scale_tolerances(const std::vector<vnref::Readout>& r, double rtol, double eps);

}  // namespace vntest

namespace vntest {
/// Tolerances of statistics as stored (stateless out views): torchrl's raw
/// moments are bc times the bias-corrected ones, stable stores mu and v.
std::vector<double> stored_loc_tolerances(const std::vector<vnref::Readout>& r, double rtol);
std::vector<double> stored_var_tolerances(const std::vector<vnref::Readout>& r, double rtol);
}  // namespace vntest

namespace vntest {
/// The bytes of a State's loc/var vector, for BitEqual.
std::vector<std::byte> as_bytes(const std::vector<std::uint8_t>& v);
}  // namespace vntest
