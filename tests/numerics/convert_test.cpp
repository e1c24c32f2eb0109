// tests/numerics/convert_test.cpp -- the half / bfloat16 conversions of
// vecnorm/core/convert.hpp against the independent codecs of tests/support:
// exhaustive over all 65536 patterns, every rounding tie, and random floats.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include <vecnorm/core/convert.hpp>

#include "support/dtypes.hpp"

namespace {

namespace core = vecnorm::core;

float bits_to_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
bool half_is_nan(std::uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }
bool bf16_is_nan(std::uint16_t b) { return (b & 0x7f80u) == 0x7f80u && (b & 0x7fu) != 0; }

std::string hex(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%04x", v);
  return buf;
}

// -------------------------------------------------------------- exhaustive

TEST(HalfConversion, EveryPatternDecodesExactlyAndRoundTrips) {
  int bad_decode = 0, bad_round_trip = 0;
  for (std::uint32_t u = 0; u <= 0xffffu; ++u) {
    const auto h = static_cast<std::uint16_t>(u);
    const float f = core::half_to_float(h);
    const double expected = vntest::half_value(h);
    if (std::isnan(expected)) {
      if (!std::isnan(f) && bad_decode++ < 5) ADD_FAILURE() << hex(u) << ": expected NaN, got " << f;
      const std::uint16_t back = core::float_to_half(f);
      if (!half_is_nan(back) && bad_round_trip++ < 5)
        ADD_FAILURE() << hex(u) << " (NaN) -> float -> half gave " << hex(back) << ", not a NaN";
      if ((back & 0x8000u) != (h & 0x8000u) && bad_round_trip++ < 5)
        ADD_FAILURE() << hex(u) << " (NaN) lost its sign: " << hex(back);
      continue;
    }
    if ((static_cast<double>(f) != expected || std::signbit(f) != std::signbit(expected)) && bad_decode++ < 5)
      ADD_FAILURE() << hex(u) << ": half_to_float expected " << expected << ", got " << f;
    const std::uint16_t back = core::float_to_half(f);
    if (back != h && bad_round_trip++ < 5)
      ADD_FAILURE() << hex(u) << " -> " << f << " -> half gave " << hex(back);
  }
  EXPECT_EQ(bad_decode, 0);
  EXPECT_EQ(bad_round_trip, 0);
}

TEST(Bf16Conversion, EveryPatternDecodesExactlyAndRoundTrips) {
  int bad_decode = 0, bad_round_trip = 0;
  for (std::uint32_t u = 0; u <= 0xffffu; ++u) {
    const auto b = static_cast<std::uint16_t>(u);
    const float f = core::bf16_to_float(b);
    const double expected = vntest::bf16_value(b);
    if (std::isnan(expected)) {
      if (!std::isnan(f) && bad_decode++ < 5) ADD_FAILURE() << hex(u) << ": expected NaN, got " << f;
      const std::uint16_t back = core::float_to_bf16(f);
      if ((!bf16_is_nan(back) || (back & 0x8000u) != (b & 0x8000u)) && bad_round_trip++ < 5)
        ADD_FAILURE() << hex(u) << " (NaN) -> float -> bf16 gave " << hex(back);
      continue;
    }
    if ((static_cast<double>(f) != expected || std::signbit(f) != std::signbit(expected)) && bad_decode++ < 5)
      ADD_FAILURE() << hex(u) << ": bf16_to_float expected " << expected << ", got " << f;
    const std::uint16_t back = core::float_to_bf16(f);
    if (back != b && bad_round_trip++ < 5) ADD_FAILURE() << hex(u) << " -> " << f << " -> bf16 gave " << hex(back);
  }
  EXPECT_EQ(bad_decode, 0);
  EXPECT_EQ(bad_round_trip, 0);
}

// -------------------------------------------------------------- ties

// Every midpoint between two neighbouring finite values (exact in float: 12 and
// 9 significant bits) rounds to the even pattern; one float ulp either side
// rounds to the nearer value. Both signs; the top midpoint rounds to infinity.
template <class ToFloat, class FromFloat>
int check_ties(std::uint16_t max_finite, std::uint16_t inf, ToFloat to_float, FromFloat from_float, const char* name) {
  int bad = 0;
  for (std::uint32_t h = 0; h <= max_finite; ++h) {
    for (std::uint16_t sign : {std::uint16_t{0}, std::uint16_t{0x8000}}) {
      const auto lo = static_cast<std::uint16_t>(h | sign);
      const auto hi = static_cast<std::uint16_t>((h == max_finite ? inf : h + 1) | sign);
      const double lo_v = static_cast<double>(to_float(lo));
      // The value past the largest finite one is 2^(emax+1) (what "inf" would be with an unbounded exponent).
      const double hi_v = h == max_finite ? 2.0 * std::ldexp(1.0, std::ilogb(lo_v)) * (sign ? -1.0 : 1.0)
                                          : static_cast<double>(to_float(hi));
      const double mid_d = (lo_v + hi_v) / 2;
      const float mid = static_cast<float>(mid_d);
      if (static_cast<double>(mid) != mid_d) {
        if (bad++ < 5) ADD_FAILURE() << name << ": midpoint of " << hex(lo) << " not exact in float (test bug)";
        continue;
      }
      const std::uint16_t even = (lo & 1u) == 0 ? lo : hi;
      const std::uint16_t got = from_float(mid);
      if (got != even && bad++ < 5)
        ADD_FAILURE() << name << ": tie " << mid << " between " << hex(lo) << " and " << hex(hi) << " gave "
                      << hex(got) << ", expected the even " << hex(even);
      const float toward_lo = std::nextafter(mid, static_cast<float>(lo_v));
      const float toward_hi = std::nextafter(mid, static_cast<float>(hi_v));
      if (from_float(toward_lo) != lo && bad++ < 5)
        ADD_FAILURE() << name << ": " << toward_lo << " (just below the tie) gave " << hex(from_float(toward_lo))
                      << ", expected " << hex(lo);
      if (from_float(toward_hi) != hi && bad++ < 5)
        ADD_FAILURE() << name << ": " << toward_hi << " (just above the tie) gave " << hex(from_float(toward_hi))
                      << ", expected " << hex(hi);
    }
  }
  return bad;
}

TEST(HalfConversion, TiesRoundToEven) {
  EXPECT_EQ(check_ties(0x7bff, 0x7c00, core::half_to_float, core::float_to_half, "half"), 0);
  // The named boundaries.
  EXPECT_EQ(core::float_to_half(65504.0f), 0x7bff);
  EXPECT_EQ(core::float_to_half(std::nextafter(65520.0f, 0.0f)), 0x7bff);
  EXPECT_EQ(core::float_to_half(65520.0f), 0x7c00);
  EXPECT_EQ(core::float_to_half(-65520.0f), 0xfc00);
  EXPECT_EQ(core::float_to_half(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(core::float_to_half(std::ldexp(1.0f, -25)), 0x0000);  // tie between 0 and the smallest subnormal
  EXPECT_EQ(core::float_to_half(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(core::float_to_half(3.0f * std::ldexp(1.0f, -25)), 0x0002);  // tie between 1 and 2 subnormal units
  EXPECT_EQ(core::float_to_half(-0.0f), 0x8000);
  EXPECT_EQ(core::float_to_half(1e-30f), 0x0000);
}

TEST(Bf16Conversion, TiesRoundToEven) {
  EXPECT_EQ(check_ties(0x7f7f, 0x7f80, core::bf16_to_float, core::float_to_bf16, "bf16"), 0);
  EXPECT_EQ(core::float_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // past the last midpoint
  EXPECT_EQ(core::float_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(core::float_to_bf16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

// -------------------------------------------------------------- random floats

TEST(HalfConversion, RandomFloatsRoundToNearest) {
  std::mt19937_64 rng(12345);
  int bad_half = 0, bad_bf16 = 0;
  for (int i = 0; i < (1 << 20); ++i) {
    // Random bit patterns cover every exponent; a third are drawn near the half range.
    std::uint32_t u = static_cast<std::uint32_t>(rng());
    if (i % 3 == 0) u = (u & 0x807fffffu) | ((100u + static_cast<std::uint32_t>(rng() % 50)) << 23);
    const float f = bits_to_float(u);
    const std::uint16_t h = core::float_to_half(f);
    const std::uint16_t b = core::float_to_bf16(f);
    if (std::isnan(f)) {
      if (!half_is_nan(h) && bad_half++ < 5) ADD_FAILURE() << "NaN " << hex(u) << " -> half " << hex(h);
      if (!bf16_is_nan(b) && bad_bf16++ < 5) ADD_FAILURE() << "NaN " << hex(u) << " -> bf16 " << hex(b);
      continue;
    }
    const std::uint16_t eh = vntest::nearest_half(f);
    const std::uint16_t eb = vntest::nearest_bf16(f);
    if (h != eh && bad_half++ < 5)
      ADD_FAILURE() << "float " << f << " (" << hex(u) << ") -> half " << hex(h) << ", expected " << hex(eh);
    if (b != eb && bad_bf16++ < 5)
      ADD_FAILURE() << "float " << f << " (" << hex(u) << ") -> bf16 " << hex(b) << ", expected " << hex(eb);
  }
  EXPECT_EQ(bad_half, 0);
  EXPECT_EQ(bad_bf16, 0);
}

// The load/store helpers use these conversions (and integers go through float).
TEST(Convert, LoadAndStore) {
  const core::half_t h{0x3c00};  // 1.0
  EXPECT_EQ(core::load<float>(&h), 1.0f);
  const core::bf16_t b{0xc040};  // -3.0
  EXPECT_EQ(core::load<double>(&b), -3.0);
  const std::int64_t big = (std::int64_t{1} << 24) + 1;
  EXPECT_EQ(core::load<double>(&big), 16777216.0) << "int64 must go through float32";
  const std::int32_t i32 = (1 << 24) + 1;
  EXPECT_EQ(core::load<double>(&i32), 16777216.0) << "int32 must go through float32";
  core::half_t out{0};
  core::store<double>(&out, 0.1);
  EXPECT_EQ(out.bits, vntest::nearest_half(static_cast<float>(0.1)));
  core::bf16_t outb{0};
  core::store<float>(&outb, -2.5f);
  EXPECT_EQ(outb.bits, vntest::nearest_bf16(-2.5));
}

}  // namespace
