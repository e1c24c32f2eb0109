// src/common.cpp -- small value types of the public API: shapes, names,
// option and key-table validation.
#include <cmath>
#include <sstream>
#include <string>

#include "errors.hpp"
#include "vecnorm/error.hpp"
#include "vecnorm/core/returns.hpp"
#include "vecnorm/options.hpp"
#include "vecnorm/tensor.hpp"
#include "vecnorm/version.hpp"

namespace vecnorm {

const char* to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_option: return "invalid_option";
    case ErrorCode::invalid_key_table: return "invalid_key_table";
    case ErrorCode::unknown_key: return "unknown_key";
    case ErrorCode::duplicate_key: return "duplicate_key";
    case ErrorCode::shape_mismatch: return "shape_mismatch";
    case ErrorCode::dtype_mismatch: return "dtype_mismatch";
    case ErrorCode::device_mismatch: return "device_mismatch";
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::zero_count: return "zero_count";
    case ErrorCode::state_mismatch: return "state_mismatch";
    case ErrorCode::not_configured: return "not_configured";
    case ErrorCode::backend_unavailable: return "backend_unavailable";
    case ErrorCode::cuda_error: return "cuda_error";
    case ErrorCode::nonfinite_input: return "nonfinite_input";
    case ErrorCode::collective_error: return "collective_error";
  }
  return "unknown";
}

const char* to_string(DType dtype) noexcept {
  switch (dtype) {
    case DType::float32: return "float32";
    case DType::float64: return "float64";
    case DType::float16: return "float16";
    case DType::bfloat16: return "bfloat16";
    case DType::int32: return "int32";
    case DType::int64: return "int64";
    case DType::uint8: return "uint8";
  }
  return "unknown";
}

std::size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::float32: return 4;
    case DType::float64: return 8;
    case DType::float16: return 2;
    case DType::bfloat16: return 2;
    case DType::int32: return 4;
    case DType::int64: return 8;
    case DType::uint8: return 1;
  }
  return 0;
}

const char* to_string(Estimator e) noexcept { return e == Estimator::stable ? "stable" : "torchrl"; }

const char* to_string(ScaleForm f) noexcept {
  switch (f) {
    case ScaleForm::clamp: return "clamp";
    case ScaleForm::sqrt_var_plus_eps: return "sqrt_var_plus_eps";
    case ScaleForm::std_plus_eps: return "std_plus_eps";
  }
  return "?";
}

const char* to_string(ReturnReset r) noexcept {
  switch (r) {
    case ReturnReset::after: return "after";
    case ReturnReset::before: return "before";
    case ReturnReset::never: return "never";
  }
  return "?";
}

const char* to_string(NonFinite n) noexcept {
  switch (n) {
    case NonFinite::propagate: return "propagate";
    case NonFinite::skip: return "skip";
    case NonFinite::error: return "error";
  }
  return "?";
}

const char* to_string(Backend b) noexcept {
  switch (b) {
    case Backend::cpu: return "cpu";
    case Backend::cuda: return "cuda";
    case Backend::automatic: return "auto";
  }
  return "unknown";
}

const char* to_string(std::optional<DType> stats_dtype) noexcept {
  return stats_dtype ? to_string(*stats_dtype) : "auto";
}

#define VECNORM_STRINGIFY2(x) #x
#define VECNORM_STRINGIFY(x) VECNORM_STRINGIFY2(x)
const char* version() noexcept {
  return VECNORM_STRINGIFY(VECNORM_VERSION_MAJOR) "." VECNORM_STRINGIFY(VECNORM_VERSION_MINOR) "." VECNORM_STRINGIFY(
      VECNORM_VERSION_PATCH);
}

// ---------------------------------------------------------------- Shape

Shape::Shape(std::initializer_list<std::int64_t> dims) { *this = from(dims.begin(), static_cast<int>(dims.size())); }

Shape Shape::from(const std::int64_t* dims, int ndim) {
  if (ndim < 0 || ndim > kMaxDims)
    detail::fail(ErrorCode::invalid_argument, "shape: expected at most " + std::to_string(kMaxDims) +
                                                  " dims, got " + std::to_string(ndim));
  Shape s;
  for (int i = 0; i < ndim; ++i) {
    if (dims[i] < 0)
      detail::fail(ErrorCode::invalid_argument,
                   "shape: expected dims >= 0, got " + std::to_string(dims[i]) + " at dim " + std::to_string(i));
    s.dims_[i] = dims[i];
  }
  s.ndim_ = ndim;
  return s;
}

std::int64_t Shape::numel() const noexcept {
  std::int64_t n = 1;
  for (int i = 0; i < ndim_; ++i) n *= dims_[i];
  return n;
}

Shape Shape::concat(const Shape& tail) const {
  if (ndim_ + tail.ndim_ > kMaxDims)
    detail::fail(ErrorCode::invalid_argument, "shape: " + str() + " + " + tail.str() + " has more than " +
                                                  std::to_string(kMaxDims) + " dims");
  Shape s = *this;
  for (int i = 0; i < tail.ndim_; ++i) s.dims_[ndim_ + i] = tail.dims_[i];
  s.ndim_ = ndim_ + tail.ndim_;
  return s;
}

Shape Shape::slice(int first, int count) const {
  Shape s;
  for (int i = 0; i < count && first + i < ndim_; ++i) s.dims_[s.ndim_++] = dims_[first + i];
  return s;
}

bool Shape::ends_with(const Shape& tail) const noexcept {
  if (tail.ndim_ > ndim_) return false;
  for (int i = 0; i < tail.ndim_; ++i)
    if (dims_[ndim_ - tail.ndim_ + i] != tail.dims_[i]) return false;
  return true;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < ndim_; ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[i]);
  }
  return s + "]";
}

bool operator==(const Shape& a, const Shape& b) noexcept {
  if (a.ndim_ != b.ndim_) return false;
  for (int i = 0; i < a.ndim_; ++i)
    if (a.dims_[i] != b.dims_[i]) return false;
  return true;
}

std::string Device::str() const { return kind == Kind::cpu ? "cpu" : "cuda:" + std::to_string(index); }

// ---------------------------------------------------------------- Options

namespace detail {
std::string num(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}
}  // namespace detail

namespace {
using detail::num;
}  // namespace

void Options::validate() const {
  if (!(decay > 0.0 && decay <= 1.0))
    detail::fail(ErrorCode::invalid_option, "option decay: expected 0 < decay <= 1, got " + num(decay));
  if (!(eps > 0.0) || !std::isfinite(eps))
    detail::fail(ErrorCode::invalid_option, "option eps: expected a finite eps > 0, got " + num(eps));
  if (scale != ScaleForm::clamp && scale != ScaleForm::sqrt_var_plus_eps && scale != ScaleForm::std_plus_eps)
    detail::fail(ErrorCode::invalid_option,
                 "option scale: expected clamp, sqrt_var_plus_eps or std_plus_eps, got value " +
                     std::to_string(static_cast<int>(scale)));
  if (!(max_scale > 0.0))
    detail::fail(ErrorCode::invalid_option,
                 "option max_scale: expected max_scale > 0 (inf: no bound), got " + num(max_scale));
  if (!(clip > 0.0))
    detail::fail(ErrorCode::invalid_option, "option clip: expected clip > 0 (inf: no bound), got " + num(clip));
  if (!(prior_count >= 0.0) || !std::isfinite(prior_count))
    detail::fail(ErrorCode::invalid_option,
                 "option prior_count: expected a finite prior_count >= 0, got " + num(prior_count));
  if (prior_count > 0.0 && estimator != Estimator::stable)
    detail::fail(ErrorCode::invalid_option,
                 "option prior_count: expected 0 with estimator torchrl (a prior needs estimator stable), got " +
                     num(prior_count));
  if (until < 0)
    detail::fail(ErrorCode::invalid_option,
                 "option until: expected until >= 0 (0: no bound), got " + std::to_string(until));
  if (until_strict && until == 0)
    detail::fail(ErrorCode::invalid_option,
                 "option until_strict: expected false without until (until = 0: no bound), got true");
  if (stats_dtype && *stats_dtype != DType::float32 && *stats_dtype != DType::float64)
    detail::fail(ErrorCode::invalid_option,
                 std::string("option stats_dtype: expected float32, float64 or none (each key's from its input), got ") +
                     to_string(*stats_dtype));
  if (estimator != Estimator::torchrl && estimator != Estimator::stable)
    detail::fail(ErrorCode::invalid_option, "option estimator: expected torchrl or stable, got value " +
                                                std::to_string(static_cast<int>(estimator)));
  if (backend != Backend::cpu && backend != Backend::cuda && backend != Backend::automatic)
    detail::fail(ErrorCode::invalid_option, "option backend: expected cpu, cuda or auto, got value " +
                                                std::to_string(static_cast<int>(backend)));
  if (nonfinite != NonFinite::propagate && nonfinite != NonFinite::skip && nonfinite != NonFinite::error)
    detail::fail(ErrorCode::invalid_option, "option nonfinite: expected propagate, skip or error, got value " +
                                                std::to_string(static_cast<int>(nonfinite)));
  if (cpu_threads < 0)
    detail::fail(ErrorCode::invalid_option,
                 "option cpu_threads: expected >= 0 (0 = default), got " + std::to_string(cpu_threads));
}

// ---------------------------------------------------------------- KeyTable

int KeyTable::find(std::string_view name) const noexcept {
  for (std::size_t i = 0; i < keys.size(); ++i)
    if (keys[i].name == name) return static_cast<int>(i);
  return -1;
}

void KeyTable::validate() const {
  if (keys.empty()) detail::fail(ErrorCode::invalid_key_table, "key table: expected at least one key, got none");
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const KeySpec& k = keys[i];
    const std::string& n = k.name;
    if (n.empty() || n.front() == '/' || n.back() == '/' || n.find("//") != std::string::npos)
      detail::fail(ErrorCode::invalid_key_table,
                   "key table: key " + std::to_string(i) + ": expected a non-empty name of '/'-separated parts, got '" +
                       n + "'");
    for (std::size_t j = 0; j < i; ++j)
      if (keys[j].name == n)
        detail::fail(ErrorCode::invalid_key_table,
                     "key table: key '" + n + "' appears twice (at " + std::to_string(j) + " and " +
                         std::to_string(i) + ")");
    if (batch_shape.ndim() + k.feature_shape.ndim() > Shape::kMaxDims)
      detail::fail(ErrorCode::invalid_key_table, "key table: key '" + n + "': batch " + batch_shape.str() +
                                                     " + feature " + k.feature_shape.str() + " exceeds " +
                                                     std::to_string(Shape::kMaxDims) + " dims");
    switch (k.dtype) {
      case DType::float32: case DType::float64: case DType::float16: case DType::bfloat16:
      case DType::int32: case DType::int64: case DType::uint8:
        break;
      default:
        detail::fail(ErrorCode::invalid_key_table, "key table: key '" + n + "': unknown dtype value " +
                                                       std::to_string(static_cast<int>(k.dtype)));
    }
  }
}

bool operator==(const KeyTable& a, const KeyTable& b) noexcept {
  if (a.batch_shape != b.batch_shape || a.keys.size() != b.keys.size()) return false;
  for (std::size_t i = 0; i < a.keys.size(); ++i) {
    const KeySpec &x = a.keys[i], &y = b.keys[i];
    if (x.name != y.name || x.feature_shape != y.feature_shape || x.dtype != y.dtype) return false;
  }
  return true;
}

}  // namespace vecnorm
