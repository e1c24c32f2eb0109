// src/cpu/scan.cpp -- NonFinite::error on the CPU: the first non-finite input.
#include <cstdint>

#include "../backends.hpp"
#include "vecnorm/core/convert.hpp"
#include "vecnorm/core/math.hpp"

namespace vecnorm::detail::cpu {

namespace {
template <class X>
std::int64_t first_nonfinite_of(const X* x, std::int64_t rows, std::int64_t feat, const std::uint8_t* mask) {
  if (mask == nullptr) {
    const std::int64_t n = rows * feat;
    for (std::int64_t i = 0; i < n; ++i)
      if (!core::is_finite(core::load<double>(x + i))) return i;
    return -1;
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    if (mask[r] == 0) continue;  // a row the update leaves out
    for (std::int64_t i = r * feat; i < (r + 1) * feat; ++i)
      if (!core::is_finite(core::load<double>(x + i))) return i;
  }
  return -1;
}
}  // namespace

std::int64_t first_nonfinite(const void* x, DType d, std::int64_t rows, std::int64_t feat, const std::uint8_t* mask) {
  switch (d) {
    case DType::float32: return first_nonfinite_of(static_cast<const float*>(x), rows, feat, mask);
    case DType::float64: return first_nonfinite_of(static_cast<const double*>(x), rows, feat, mask);
    case DType::float16: return first_nonfinite_of(static_cast<const core::half_t*>(x), rows, feat, mask);
    case DType::bfloat16: return first_nonfinite_of(static_cast<const core::bf16_t*>(x), rows, feat, mask);
    default: return -1;  // integers are always finite
  }
}

}  // namespace vecnorm::detail::cpu
