// src/validate.cpp -- see validate.hpp.
#include "validate.hpp"

#include <string>

#include "backends.hpp"
#include "errors.hpp"

namespace vecnorm::detail {

Device backend_device(Backend resolved) {
  return resolved == Backend::cuda ? Device::cuda(cuda::current_device()) : Device::cpu();
}

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

namespace {
bool overlaps(const void* a, std::size_t na, const void* b, std::size_t nb) {
  if (na == 0 || nb == 0 || a == nullptr || b == nullptr) return false;
  const auto* pa = static_cast<const unsigned char*>(a);
  const auto* pb = static_cast<const unsigned char*>(b);
  return pa < pb + nb && pb < pa + na;
}

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

Segment KeyPlanner::next(const KeyData& item, Op op, bool invert) {
  const int k = find_key(table_, item.key);
  check_unique(item.key, k, call_keys_.data(), static_cast<int>(call_keys_.size()));
  const KeySpec& spec = table_.keys[static_cast<std::size_t>(k)];
  const DType xd = invert ? output_dtype(spec.dtype) : spec.dtype;
  const IoShape io = check_io(table_, k, xd, item.x, op == Op::update ? nullptr : &item.y,
                              pooled_ ? BatchRule::any : BatchRule::exact, device_);
  if (pooled_) {
    if (call_keys_.empty())
      pooled_batch_ = io.batch;
    else if (io.batch != pooled_batch_)
      fail(ErrorCode::shape_mismatch, key_prefix(spec.name) + "batch shape: expected " + pooled_batch_.str() +
                                          " (the batch shape of key '" +
                                          table_.keys[static_cast<std::size_t>(call_keys_.front())].name +
                                          "' in this call), got " + io.batch.str());
  }
  call_keys_.push_back(k);
  Segment s;
  s.key = k;
  s.x = item.x.data;
  s.x_dtype = xd;
  s.y = op == Op::update ? nullptr : item.y.data;
  s.rows = io.rows;
  s.feat = io.feat;
  return s;
}

}  // namespace vecnorm::detail
