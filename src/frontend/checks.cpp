// src/frontend/checks.cpp -- see checks.hpp.
#include "checks.hpp"

#include <string>

#include "../errors.hpp"

namespace vecnorm::detail {

int find_key(const KeyTable& table, std::string_view key) {
  const int k = table.find(key);
  if (k < 0) {
    std::string known;
    for (const auto& spec : table.keys) known += (known.empty() ? "'" : ", '") + spec.name + "'";
    fail(ErrorCode::unknown_key, key_prefix(key) + "unknown key; expected one of " + known);
  }
  return k;
}

void check_unique(std::string_view key, int index, const int* previous, int count) {
  for (int j = 0; j < count; ++j)
    if (previous[j] == index)
      fail(ErrorCode::duplicate_key, key_prefix(key) + "appears more than once in one call; expected each key at most once");
}

bool overlaps(const void* a, std::size_t na, const void* b, std::size_t nb) {
  if (na == 0 || nb == 0 || a == nullptr || b == nullptr) return false;
  const auto* pa = static_cast<const unsigned char*>(a);
  const auto* pb = static_cast<const unsigned char*>(b);
  return pa < pb + nb && pb < pa + na;
}

namespace {

void check_device(std::string_view key, const char* what, Device actual, Device expected) {
  if (!(actual == expected))
    fail(ErrorCode::device_mismatch, key_prefix(key) + what + ": expected device " + expected.str() + ", got " +
                                         actual.str());
}

void check_data(std::string_view key, const char* what, const void* data, std::int64_t numel) {
  if (data == nullptr && numel > 0)
    fail(ErrorCode::invalid_argument, key_prefix(key) + what + ": expected data for " + std::to_string(numel) +
                                          " elements, got a null pointer");
}
}  // namespace

void check_no_partial_overlap(std::string_view key, const char* what_a, const void* a, std::size_t na,
                              const char* what_b, const void* b, std::size_t nb) {
  if (overlaps(a, na, b, nb) && !(a == b && na == nb))
    fail(ErrorCode::invalid_argument, key_prefix(key) + what_a + " and " + what_b +
                                          " overlap partially; expected the same buffer (in place) or disjoint buffers");
}

void check_disjoint(std::string_view key, const char* what_a, const void* a, std::size_t na, const char* what_b,
                    const void* b, std::size_t nb) {
  if (overlaps(a, na, b, nb))
    fail(ErrorCode::invalid_argument,
         key_prefix(key) + what_a + " and " + what_b + " overlap; expected disjoint buffers");
}

IoShape check_io(const KeyTable& table, int k, DType x_dtype, const ConstTensorView& x, const TensorView* y,
                 BatchRule rule, Device device) {
  const KeySpec& spec = table.keys[static_cast<std::size_t>(k)];
  const std::string_view key = spec.name;
  if (x.dtype != x_dtype)
    fail(ErrorCode::dtype_mismatch, key_prefix(key) + "input dtype: expected " + to_string(x_dtype) + ", got " +
                                        to_string(x.dtype));
  if (!x.shape.ends_with(spec.feature_shape)) {
    const std::string expected = rule == BatchRule::exact ? table.batch_shape.concat(spec.feature_shape).str()
                                                          : "[*batch, " + spec.feature_shape.str().substr(1);
    fail(ErrorCode::shape_mismatch, key_prefix(key) + "input shape: expected " + expected + " (batch + feature " +
                                        spec.feature_shape.str() + "), got " + x.shape.str());
  }
  IoShape io;
  io.batch = x.shape.slice(0, x.shape.ndim() - spec.feature_shape.ndim());
  if (rule == BatchRule::exact && io.batch != table.batch_shape)
    fail(ErrorCode::shape_mismatch, key_prefix(key) + "input shape: expected " +
                                        table.batch_shape.concat(spec.feature_shape).str() + " (batch " +
                                        table.batch_shape.str() + "), got " + x.shape.str() + " (batch " +
                                        io.batch.str() + ")");
  io.rows = io.batch.numel();
  io.feat = spec.feature_shape.numel();
  check_device(key, "input", x.device, device);
  check_data(key, "input", x.data, x.numel());
  if (y != nullptr) {
    const DType y_dtype = output_dtype(x_dtype);
    if (y->dtype != y_dtype)
      fail(ErrorCode::dtype_mismatch, key_prefix(key) + "output dtype: expected " + to_string(y_dtype) + ", got " +
                                          to_string(y->dtype));
    if (y->shape != x.shape)
      fail(ErrorCode::shape_mismatch, key_prefix(key) + "output shape: expected " + x.shape.str() +
                                          " (the input's), got " + y->shape.str());
    check_device(key, "output", y->device, device);
    check_data(key, "output", y->data, y->numel());
    // In place is fine when elements line up one to one (same element size).
    const bool same_size = dtype_size(x.dtype) == dtype_size(y->dtype);
    if (same_size)
      check_no_partial_overlap(key, "input", x.data, x.nbytes(), "output", y->data, y->nbytes());
    else
      check_disjoint(key, "input", x.data, x.nbytes(), "output", y->data, y->nbytes());
  }
  return io;
}

void check_stats_view(std::string_view key, const char* what, const ConstTensorView& v, DType dtype,
                      const Shape& shape, Device device) {
  if (v.dtype != dtype)
    fail(ErrorCode::dtype_mismatch, key_prefix(key) + what + " dtype: expected " + to_string(dtype) + ", got " +
                                        to_string(v.dtype));
  if (v.shape != shape)
    fail(ErrorCode::shape_mismatch, key_prefix(key) + what + " shape: expected " + shape.str() + ", got " +
                                        v.shape.str());
  check_device(key, what, v.device, device);
  check_data(key, what, v.data, v.numel());
}

void check_scalar_view(std::string_view key, const char* what, const ConstTensorView& v, Device device) {
  if (v.dtype != DType::int64)
    fail(ErrorCode::dtype_mismatch,
         key_prefix(key) + what + " dtype: expected int64, got " + to_string(v.dtype));
  if (v.shape.numel() != 1 || v.shape.ndim() > 1)
    fail(ErrorCode::shape_mismatch, key_prefix(key) + what + " shape: expected [] or [1] (one value per key), got " +
                                        v.shape.str());
  check_device(key, what, v.device, device);
  check_data(key, what, v.data, 1);
}

void fail_zero_count(std::string_view key, std::int64_t count, std::int64_t element, std::string_view context) {
  if (element < 0)
    fail(ErrorCode::zero_count, std::string(context) + key_prefix(key) + "cannot normalize: expected count > 0, got " + std::to_string(count) +
                                    " (statistics never updated; step or update first)");
  fail(ErrorCode::zero_count, key_prefix(key) + "cannot normalize: expected count > 0, got " + std::to_string(count) +
                                  " at element " + std::to_string(element) + " (statistics never updated)");
}

}  // namespace vecnorm::detail
