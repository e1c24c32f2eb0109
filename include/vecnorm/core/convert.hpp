// vecnorm/core/convert.hpp -- element conversions shared by every backend.
//
// float16 and bfloat16 are handled as 16-bit patterns (std::uint16_t) so that
// the same code runs on the host, under the SIMT emulator and on the device.
// Rounding from float is to nearest, ties to even; NaN stays NaN; values past
// the largest finite half round to infinity, as IEEE 754 requires.
#pragma once

#include <cstdint>
#include <type_traits>

#include "vecnorm/core/hd.hpp"

namespace vecnorm::core {

VECNORM_HD std::uint32_t float_bits(float f) { return bit_cast<std::uint32_t>(f); }
VECNORM_HD float bits_float(std::uint32_t u) { return bit_cast<float>(u); }

/// IEEE binary16 -> float (exact).
VECNORM_HD float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t mant = h & 0x3ffu;
  if (exp == 0x1fu) return bits_float(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  if (exp != 0) return bits_float(sign | ((exp + (127 - 15)) << 23) | (mant << 13));
  // zero or subnormal: mant * 2^-24, exact in float
  const float mag = static_cast<float>(mant) * 5.9604644775390625e-8f;
  return sign ? -mag : mag;
}

/// float -> IEEE binary16, round to nearest even.
VECNORM_HD std::uint16_t float_to_half(float f) {
  std::uint32_t u = float_bits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((u >> 13) & 0x3ffu));  // NaN
  if (u >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520: rounds to inf
  if (u < 0x38800000u) {  // below 2^-14: subnormal half (or zero)
    // mag * 2^24 is exact; adding 2^23 makes the FPU round it to an integer (nearest even).
    const float scaled = bits_float(u) * 16777216.0f + 8388608.0f;
    return static_cast<std::uint16_t>(sign | (float_bits(scaled) - 0x4b000000u));
  }
  const std::uint32_t odd = (u >> 13) & 1u;
  u += (static_cast<std::uint32_t>(15 - 127) << 23) + 0xfffu + odd;  // rebias, round half to even
  return static_cast<std::uint16_t>(sign | (u >> 13));
}

/// bfloat16 -> float (exact).
VECNORM_HD float bf16_to_float(std::uint16_t b) { return bits_float(static_cast<std::uint32_t>(b) << 16); }

/// float -> bfloat16, round to nearest even.
VECNORM_HD std::uint16_t float_to_bf16(float f) {
  const std::uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/// Storage types of the input dtypes: float16/bfloat16 are distinct tag types
/// wrapping their bit pattern so that load/store overloads can tell them apart.
struct half_t { std::uint16_t bits; };
struct bf16_t { std::uint16_t bits; };

/// The storage type of the normalized output of input storage type X: floats
/// keep theirs, integers give float.
template <class X>
using output_t = std::conditional_t<std::is_same_v<X, double> || std::is_same_v<X, half_t> ||
                                        std::is_same_v<X, bf16_t>,
                                    X, float>;

/// The compute type of input storage type X with statistics of type S: double
/// when either is double, float otherwise (docs/numerics.md).
template <class X, class S>
using compute_t = std::conditional_t<std::is_same_v<X, double> || std::is_same_v<S, double>, double, float>;

/// Load one element as the compute type C.
template <class C> VECNORM_HD C load(const float* p) { return static_cast<C>(*p); }
template <class C> VECNORM_HD C load(const double* p) { return static_cast<C>(*p); }
template <class C> VECNORM_HD C load(const half_t* p) { return static_cast<C>(half_to_float(p->bits)); }
template <class C> VECNORM_HD C load(const bf16_t* p) { return static_cast<C>(bf16_to_float(p->bits)); }
template <class C> VECNORM_HD C load(const std::int32_t* p) { return static_cast<C>(static_cast<float>(*p)); }
template <class C> VECNORM_HD C load(const std::int64_t* p) { return static_cast<C>(static_cast<float>(*p)); }
template <class C> VECNORM_HD C load(const std::uint8_t* p) { return static_cast<C>(static_cast<float>(*p)); }

/// Store a compute-type value into an output element.
template <class C> VECNORM_HD void store(float* p, C v) { *p = static_cast<float>(v); }
template <class C> VECNORM_HD void store(double* p, C v) { *p = static_cast<double>(v); }
template <class C> VECNORM_HD void store(half_t* p, C v) { p->bits = float_to_half(static_cast<float>(v)); }
template <class C> VECNORM_HD void store(bf16_t* p, C v) { p->bits = float_to_bf16(static_cast<float>(v)); }

}  // namespace vecnorm::core
