// tests/support/dtypes.hpp -- test-side encoding and decoding of every input dtype.
//
// Written independently of include/vecnorm/core/convert.hpp (the code under test):
// half and bfloat16 are decoded with ldexp from their fields and encoded by
// searching the sorted table of all finite values, so the conversions checked in
// tests/numerics/convert_test.cpp are compared against a second implementation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <vecnorm/tensor.hpp>

namespace vntest {

/// Exact value of an IEEE binary16 bit pattern (NaN for NaNs, +-inf for infinities).
double half_value(std::uint16_t bits);
/// Exact value of a bfloat16 bit pattern.
double bf16_value(std::uint16_t bits);
/// The binary16 pattern nearest to v (ties to the even pattern); overflow past
/// the rounding boundary 65520 gives infinity; NaN gives a quiet NaN.
std::uint16_t nearest_half(double v);
/// The bfloat16 pattern nearest to v, same rules (boundary 2^128 - 2^119).
std::uint16_t nearest_bf16(double v);

/// Distance between |v| and the next representable magnitude of `dtype`
/// (one unit in the last place), for float32/float64/float16/bfloat16.
double ulp(vecnorm::DType dtype, double v);

/// Encode values into the bytes of `dtype`. Floats round to nearest (even),
/// integers must already be integral and in range (checked: throws).
std::vector<std::byte> encode(vecnorm::DType dtype, const std::vector<double>& values);
/// Decode bytes of `dtype` into their exact values.
std::vector<double> decode(vecnorm::DType dtype, const std::vector<std::byte>& bytes);
/// The value the library must compute with for a stored element: integers go
/// through float32 first (semantics: "Integer inputs are converted to float
/// (float32) before anything"), floats are exact.
std::vector<double> computed_inputs(vecnorm::DType dtype, const std::vector<double>& stored);

/// All input dtypes, in the order of the enum.
const std::vector<vecnorm::DType>& all_input_dtypes();
/// "f32", "f64", "f16", "bf16", "i32", "i64", "u8": short names for test names.
std::string short_name(vecnorm::DType dtype);

}  // namespace vntest
