// vecnorm/core/exp_log.hpp -- the transcendental functions of the numeric
// core, written with +, -, *, / and bit operations only.
//
// The weights and bias corrections need e^x - 1 and ln x. The C library's and
// CUDA's device math library round differently in the last bits, so a host
// step and a device step would differ; these give the same bits on the CPU,
// under the SIMT emulator and on a GPU, provided no multiply-add is contracted
// (the library builds with -ffp-contract=off and nvcc --fmad=false;
// scripts/check-ptxas.sh checks the PTX). Both are within about one ulp of
// the exact value (tests/numerics/exp_log_test.cpp measures it against long
// double). Derivations: docs/numerics.md, "Transcendental functions".
#pragma once

#include <cstdint>
#include <limits>

#include "vecnorm/core/hd.hpp"

namespace vecnorm::core {

namespace exp_log_detail {

VECNORM_HD std::uint64_t bits_of(double d) { return bit_cast<std::uint64_t>(d); }
VECNORM_HD double double_of(std::uint64_t u) { return bit_cast<double>(u); }

/// 2^k for k in [-1022, 1023], exactly.
VECNORM_HD double pow2(int k) { return double_of(static_cast<std::uint64_t>(k + 1023) << 52); }

constexpr double kInf = std::numeric_limits<double>::infinity();
/// ln 2 split in two: kLn2Hi keeps 32 significant bits, so k * kLn2Hi is exact
/// for |k| < 2^21; kLn2Lo is the rest (the double nearest ln 2 - kLn2Hi).
constexpr double kLn2Hi = 0.6931471803691238;
constexpr double kLn2Lo = 1.9082149292705877e-10;
constexpr double kInvLn2 = 1.4426950408889634;
constexpr double kSqrt2 = 1.4142135623730951;

}  // namespace exp_log_detail

/// e^x - 1. x = k ln2 + r, |r| <= ln2 / 2, with r = rh + rl carried in two
/// parts (rh = x - k ln2_hi exactly, rl = -k ln2_lo, |rl| < 2^-22);
/// e^rh - 1 - rh by its Taylor series to rh^13/13! (the remainder is below
/// 2^-56 of the result);
/// then 2^k (1 + (e^r - 1)) - 1 with the large parts added without error
/// (two-sum) and the small ones after, so that the result rounds about once
/// (within one ulp, where plain Horner and one reconstruction lost two
/// ulps to cancellation near x = ln2 / 2).
VECNORM_HD double expm1(double x) {
  using namespace exp_log_detail;
  if (!(x == x)) return x;  // NaN
  if (x > 709.782712893384) return kInf;  // past ln(DBL_MAX)
  if (x < -38.0) return -1.0;             // e^x below half an ulp of 1
  if ((x < 0.0 ? -x : x) < 0x1p-54) return x;  // x + x^2/2 rounds to x (keeps -0)
  const int k = static_cast<int>(x * kInvLn2 + (x < 0.0 ? -0.5 : 0.5));
  const double kd = static_cast<double>(k);
  const double rh = x - kd * kLn2Hi;  // exact: k ln2_hi has 43 bits and is near x
  const double rl = -(kd * kLn2Lo);
  // q = 1/2! + rh/3! + ... + rh^11/13! by Estrin's scheme (pairs, then
  // powers rh^2, rh^4): a third of Horner's dependent steps.
  const double r2 = rh * rh;
  const double p0 = 0.5 + rh * 0.16666666666666666;                   // 1/2!, 1/3!
  const double p1 = 0.041666666666666664 + rh * 0.008333333333333333;  // 1/4!, 1/5!
  const double p2 = 0.001388888888888889 + rh * 0.0001984126984126984;
  const double p3 = 2.48015873015873e-05 + rh * 2.7557319223985893e-06;
  const double p4 = 2.755731922398589e-07 + rh * 2.505210838544172e-08;
  const double p5 = 2.08767569878681e-09 + rh * 1.6059043836821613e-10;  // 1/12!, 1/13!
  const double r4 = r2 * r2;
  const double q = (p0 + r2 * p1) + r4 * ((p2 + r2 * p3) + r4 * (p4 + r2 * p5));
  const double ch = r2 * q;  // e^rh - 1 - rh
  // e^r - 1 = e^rh e^rl - 1 = rh + lo, lo = ch + (e^rl - 1) e^rh; |rl| < 2^-22,
  // so e^rl - 1 = rl + rl^2/2 to far below an ulp (rl^2 is not negligible).
  const double el = rl + 0.5 * (rl * rl);
  const double lo = ch + el * (1.0 + rh + ch);
  if (k == 0) return rh + lo;
  if (k == 1024) return 2.0 * (pow2(1023) * (1.0 + (rh + lo)));  // x near ln(DBL_MAX): the -1 is negligible
  const double t = pow2(k);
  if (k < -53) return t * (1.0 + (rh + lo)) - 1.0;  // within an ulp of -1
  // 2^k (1 + rh + lo) - 1 = a + t rh + small, with a = t - 1 (exact for k <= 52)
  // or a = t (k > 52: the -1 joins the small part); a + t rh by two-sum
  // (s + err == a + b exactly), the small parts added to its error.
  const double a = k > 52 ? t : t - 1.0;
  const double small = k > 52 ? t * lo - 1.0 : t * lo;
  const double b = t * rh;
  const double s = a + b;
  const double bv = s - a;
  const double err = (a - (s - bv)) + (b - bv);
  return s + (err + small);
}

/// ln x. x = 2^e m with m in [1/sqrt2, sqrt2), f = m - 1 (exact), and
/// ln(1 + f) = 2 atanh(s) with s = f / (2 + f), R the series 2 s^2/3 + 2 s^4/5
/// + ... to s^20/21 (|s| <= 0.172: the rest is below 2^-55). With h = f^2/2,
/// 2 s = f - s f = f - h + s h, so ln(1 + f) = f - (h - s (h + R)): f and
/// e ln2_hi, the large parts, are exact and added last, each once (adding
/// ln(1 + f) rounded first lost 1.3 ulps for e = +-1, where they cancel).
VECNORM_HD double log(double x) {
  using namespace exp_log_detail;
  if (!(x > 0.0)) return x == 0.0 ? -kInf : x < 0.0 ? std::numeric_limits<double>::quiet_NaN() : x;  // NaN stays
  if (x == kInf) return x;
  int e = 0;
  std::uint64_t b = bits_of(x);
  if ((b >> 52) == 0) {  // subnormal: scale into the normal range
    x *= 0x1p54;
    e = -54;
    b = bits_of(x);
  }
  e += static_cast<int>(b >> 52) - 1023;
  double m = double_of((b & 0x000fffffffffffffull) | 0x3ff0000000000000ull);  // [1, 2)
  if (m > kSqrt2) {
    m *= 0.5;
    ++e;
  }
  const double f = m - 1.0;
  const double s = f / (2.0 + f);
  const double z = s * s;
  double R = 0.09523809523809523;  // 2/21
  R = 0.10526315789473684 + z * R;  // 2/19
  R = 0.11764705882352941 + z * R;
  R = 0.13333333333333333 + z * R;
  R = 0.15384615384615385 + z * R;
  R = 0.18181818181818182 + z * R;
  R = 0.2222222222222222 + z * R;
  R = 0.2857142857142857 + z * R;
  R = 0.4 + z * R;
  R = 0.6666666666666666 + z * R;  // 2/3
  R = z * R;
  const double h = 0.5 * (f * f);
  const double ed = static_cast<double>(e);
  return ed * kLn2Hi + (f - (h - (s * (h + R) + ed * kLn2Lo)));
}

}  // namespace vecnorm::core
