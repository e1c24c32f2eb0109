// tests/support/dtypes.cpp -- see dtypes.hpp. Deliberately naive: clarity over speed.
#include "dtypes.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace vntest {
namespace {

template <class T>
void put(std::vector<std::byte>& out, std::size_t i, T v) {
  std::memcpy(out.data() + i * sizeof(T), &v, sizeof(T));
}
template <class T>
T get(const std::vector<std::byte>& in, std::size_t i) {
  T v;
  std::memcpy(&v, in.data() + i * sizeof(T), sizeof(T));
  return v;
}

// Nearest pattern among the positive finite patterns [0, max_pattern], whose
// values increase with the pattern. `overflow` is the magnitude from which the
// result is infinity (the midpoint between the largest finite value and the
// next power of two, which rounds to infinity on a tie because inf's
// significand is even).
std::uint16_t nearest_pattern(double v, double (*value)(std::uint16_t), std::uint16_t max_pattern,
                              double overflow, std::uint16_t inf_pattern, std::uint16_t nan_pattern,
                              std::uint16_t sign_bit) {
  const std::uint16_t sign = std::signbit(v) ? sign_bit : 0;
  if (std::isnan(v)) return static_cast<std::uint16_t>(sign | nan_pattern);
  const double a = std::fabs(v);
  if (a >= overflow) return static_cast<std::uint16_t>(sign | inf_pattern);
  // Largest pattern whose value is <= a.
  std::uint32_t lo = 0, hi = max_pattern;
  while (lo < hi) {
    const std::uint32_t mid = (lo + hi + 1) / 2;
    if (value(static_cast<std::uint16_t>(mid)) <= a) lo = mid; else hi = mid - 1;
  }
  std::uint32_t best = lo;
  if (lo < max_pattern) {
    // Both differences are exact (Sterbenz: the neighbours are within a factor 2 of a).
    const double below = a - value(static_cast<std::uint16_t>(lo));
    const double above = value(static_cast<std::uint16_t>(lo + 1)) - a;
    if (above < below || (above == below && (lo & 1u) != 0)) best = lo + 1;
  }
  return static_cast<std::uint16_t>(sign | best);
}

}  // namespace

double half_value(std::uint16_t bits) {
  const bool negative = (bits & 0x8000u) != 0;
  const int exponent = (bits >> 10) & 0x1f;
  const int mantissa = bits & 0x3ff;
  double magnitude;
  if (exponent == 0x1f) {
    magnitude = mantissa == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<double>(mantissa), -24);  // subnormal: m * 2^-14 * 2^-10
  } else {
    magnitude = std::ldexp(static_cast<double>(1024 + mantissa), exponent - 25);  // (1 + m/1024) 2^(e-15)
  }
  return negative ? -magnitude : magnitude;
}

double bf16_value(std::uint16_t bits) {
  const bool negative = (bits & 0x8000u) != 0;
  const int exponent = (bits >> 7) & 0xff;
  const int mantissa = bits & 0x7f;
  double magnitude;
  if (exponent == 0xff) {
    magnitude = mantissa == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<double>(mantissa), -133);  // m * 2^-126 * 2^-7
  } else {
    magnitude = std::ldexp(static_cast<double>(128 + mantissa), exponent - 134);  // (1 + m/128) 2^(e-127)
  }
  return negative ? -magnitude : magnitude;
}

std::uint16_t nearest_half(double v) {
  return nearest_pattern(v, &half_value, 0x7bff, 65520.0, 0x7c00, 0x7e00, 0x8000);
}

std::uint16_t nearest_bf16(double v) {
  return nearest_pattern(v, &bf16_value, 0x7f7f, std::ldexp(1.0, 128) - std::ldexp(1.0, 119), 0x7f80, 0x7fc0,
                         0x8000);
}

double ulp(vecnorm::DType dtype, double v) {
  int precision = 0, min_exponent = 0;  // significand bits; exponent of the smallest ulp
  switch (dtype) {
    case vecnorm::DType::float32: precision = 24; min_exponent = -149; break;
    case vecnorm::DType::float64: precision = 53; min_exponent = -1074; break;
    case vecnorm::DType::float16: precision = 11; min_exponent = -24; break;
    case vecnorm::DType::bfloat16: precision = 8; min_exponent = -133; break;
    default: return 0.0;  // integers are not outputs
  }
  const double a = std::fabs(v);
  if (!std::isfinite(a)) return std::numeric_limits<double>::infinity();
  if (a == 0.0) return std::ldexp(1.0, min_exponent);
  int e = 0;
  std::frexp(a, &e);  // a = f 2^e, f in [0.5, 1)
  const int ulp_exponent = e - precision;
  return std::ldexp(1.0, ulp_exponent < min_exponent ? min_exponent : ulp_exponent);
}

std::vector<std::byte> encode(vecnorm::DType dtype, const std::vector<double>& values) {
  std::vector<std::byte> out(values.size() * vecnorm::dtype_size(dtype));
  auto integral = [](double v, double lo, double hi) {
    if (!(v == std::floor(v) && v >= lo && v <= hi))
      throw std::invalid_argument("encode: " + std::to_string(v) + " is not an integer in range");
  };
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    switch (dtype) {
      case vecnorm::DType::float32: put<float>(out, i, static_cast<float>(v)); break;
      case vecnorm::DType::float64: put<double>(out, i, v); break;
      case vecnorm::DType::float16: put<std::uint16_t>(out, i, nearest_half(v)); break;
      case vecnorm::DType::bfloat16: put<std::uint16_t>(out, i, nearest_bf16(v)); break;
      case vecnorm::DType::int32:
        integral(v, -2147483648.0, 2147483647.0);
        put<std::int32_t>(out, i, static_cast<std::int32_t>(v));
        break;
      case vecnorm::DType::int64:
        integral(v, -9223372036854775808.0, 9223372036854774784.0);
        put<std::int64_t>(out, i, static_cast<std::int64_t>(v));
        break;
      case vecnorm::DType::uint8:
        integral(v, 0.0, 255.0);
        put<std::uint8_t>(out, i, static_cast<std::uint8_t>(v));
        break;
    }
  }
  return out;
}

std::vector<double> decode(vecnorm::DType dtype, const std::vector<std::byte>& bytes) {
  const std::size_t n = bytes.size() / vecnorm::dtype_size(dtype);
  std::vector<double> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    switch (dtype) {
      case vecnorm::DType::float32: out[i] = get<float>(bytes, i); break;
      case vecnorm::DType::float64: out[i] = get<double>(bytes, i); break;
      case vecnorm::DType::float16: out[i] = half_value(get<std::uint16_t>(bytes, i)); break;
      case vecnorm::DType::bfloat16: out[i] = bf16_value(get<std::uint16_t>(bytes, i)); break;
      case vecnorm::DType::int32: out[i] = static_cast<double>(get<std::int32_t>(bytes, i)); break;
      case vecnorm::DType::int64: out[i] = static_cast<double>(get<std::int64_t>(bytes, i)); break;
      case vecnorm::DType::uint8: out[i] = static_cast<double>(get<std::uint8_t>(bytes, i)); break;
    }
  }
  return out;
}

std::vector<double> computed_inputs(vecnorm::DType dtype, const std::vector<double>& stored) {
  if (vecnorm::is_floating(dtype)) return stored;
  std::vector<double> out(stored.size());
  for (std::size_t i = 0; i < stored.size(); ++i) out[i] = static_cast<double>(static_cast<float>(stored[i]));
  return out;
}

const std::vector<vecnorm::DType>& all_input_dtypes() {
  static const std::vector<vecnorm::DType> all = {
      vecnorm::DType::float32, vecnorm::DType::float64, vecnorm::DType::float16, vecnorm::DType::bfloat16,
      vecnorm::DType::int32,   vecnorm::DType::int64,   vecnorm::DType::uint8};
  return all;
}

std::string short_name(vecnorm::DType dtype) {
  switch (dtype) {
    case vecnorm::DType::float32: return "f32";
    case vecnorm::DType::float64: return "f64";
    case vecnorm::DType::float16: return "f16";
    case vecnorm::DType::bfloat16: return "bf16";
    case vecnorm::DType::int32: return "i32";
    case vecnorm::DType::int64: return "i64";
    case vecnorm::DType::uint8: return "u8";
  }
  return "?";
}

}  // namespace vntest
