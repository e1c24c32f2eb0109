// src/dispatch.cpp -- the one switch over backends.
#include <cmath>
#include <cstring>
#include <string>

#include "backends.hpp"
#include "errors.hpp"
#include "vecnorm/core/convert.hpp"
#include "vecnorm/version.hpp"

namespace vecnorm::detail {

Backend resolve(Backend requested) {
  switch (requested) {
    case Backend::cpu:
      return Backend::cpu;
    case Backend::cuda:
      if (!cuda_built())
        fail(ErrorCode::backend_unavailable,
             "backend cuda: this build of vecnorm has no CUDA backend (configure with a CUDA compiler and "
             "VECNORM_ENABLE_CUDA=ON); use backend cpu or auto");
      if (!cuda_available())
        fail(ErrorCode::backend_unavailable,
             "backend cuda: no usable CUDA device (the CUDA runtime reported none); use backend cpu or auto");
      return Backend::cuda;
    case Backend::automatic:
      return cuda_available() ? Backend::cuda : Backend::cpu;
  }
  fail(ErrorCode::invalid_option, "option backend: expected cpu, cuda or auto, got value " +
                                      std::to_string(static_cast<int>(requested)));
}

void dispatch(Backend backend, const Plan& plan, Workspace& ws, Stream stream) {
  switch (backend) {
    case Backend::cpu:
      cpu::run(plan, ws);
      return;
    case Backend::cuda:
      cuda::run(plan, ws, stream);
      return;
    case Backend::automatic:
      break;
  }
  fail(ErrorCode::invalid_argument, "internal: dispatch of an unresolved backend");
}

void dispatch(Backend backend, const AffinePlan& plan, Stream stream) {
  switch (backend) {
    case Backend::cpu:
      cpu::run(plan);
      return;
    case Backend::cuda:
      cuda::run(plan, stream);
      return;
    case Backend::automatic:
      break;
  }
  fail(ErrorCode::invalid_argument, "internal: dispatch of an unresolved backend");
}

// ---------------------------------------------------------------- NonFinite::error

namespace cpu {
namespace {
template <class X>
std::int64_t first_nonfinite_of(const X* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i)
    if (!core::is_finite(core::load<double>(x + i))) return i;
  return -1;
}
}  // namespace

std::int64_t first_nonfinite(const void* x, DType d, std::int64_t n, int /*threads*/) {
  switch (d) {
    case DType::float32: return first_nonfinite_of(static_cast<const float*>(x), n);
    case DType::float64: return first_nonfinite_of(static_cast<const double*>(x), n);
    case DType::float16: return first_nonfinite_of(static_cast<const core::half_t*>(x), n);
    case DType::bfloat16: return first_nonfinite_of(static_cast<const core::bf16_t*>(x), n);
    default: return -1;  // integers are always finite
  }
}
}  // namespace cpu

void require_finite(Backend backend, const KeyTable& table, std::span<const Segment> segments, int threads,
                    Workspace& ws, Stream stream) {
  for (const Segment& s : segments) {
    if (!is_floating(s.x_dtype)) continue;
    const std::int64_t n = s.rows * s.feat;
    const std::int64_t i = backend == Backend::cuda ? cuda::first_nonfinite(s.x, s.x_dtype, n, stream, ws)
                                                    : cpu::first_nonfinite(s.x, s.x_dtype, n, threads);
    if (i < 0) continue;
    // The value, for the message (one element; from the device when there).
    double v = 0.0;
    const std::size_t es = dtype_size(s.x_dtype);
    unsigned char raw[8] = {};
    const void* at = static_cast<const char*>(s.x) + static_cast<std::size_t>(i) * es;
    if (backend == Backend::cuda)
      cuda::copy(raw, at, es, stream, true);
    else
      std::memcpy(raw, at, es);
    switch (s.x_dtype) {
      case DType::float32: v = core::load<double>(reinterpret_cast<const float*>(raw)); break;
      case DType::float64: v = core::load<double>(reinterpret_cast<const double*>(raw)); break;
      case DType::float16: v = core::load<double>(reinterpret_cast<const core::half_t*>(raw)); break;
      default: v = core::load<double>(reinterpret_cast<const core::bf16_t*>(raw)); break;
    }
    const KeySpec& spec = table.keys[static_cast<std::size_t>(s.key)];
    const std::int64_t row = s.feat > 0 ? i / s.feat : 0;
    const std::int64_t f = s.feat > 0 ? i % s.feat : 0;
    std::string feature = "[";
    {
      // The feature index in the key's feature shape (C order).
      const Shape& fs = spec.feature_shape;
      std::int64_t idx[Shape::kMaxDims] = {};
      std::int64_t rest = f;
      for (int d = fs.ndim() - 1; d >= 0; --d) {
        idx[d] = fs[d] > 0 ? rest % fs[d] : 0;
        rest = fs[d] > 0 ? rest / fs[d] : 0;
      }
      for (int d = 0; d < fs.ndim(); ++d) feature += (d ? ", " : "") + std::to_string(idx[d]);
    }
    feature += "]";
    const std::string value = std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");
    fail(ErrorCode::nonfinite_input,
         key_prefix(spec.name) + "non-finite input (nonfinite = error): expected finite values, got " + value +
             " at batch row " + std::to_string(row) + ", feature index " + feature + " (flat element " +
             std::to_string(i) + "); nothing was updated");
  }
}

}  // namespace vecnorm::detail
