// src/state/binary_io.cpp -- the little-endian Writer and Reader, shapes and
// key specs (binary_io.hpp).
#include "binary_io.hpp"

#include <bit>

#include "../errors.hpp"
#include "schema.hpp"

namespace vecnorm::detail {

std::uint32_t load_u32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(p[i]) << (8 * i);
  return v;
}

std::uint64_t load_u64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return v;
}

// ---------------------------------------------------------------- Writer

void Writer::u32(std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

void Writer::u64(std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

void Writer::f64(double v) { u64(std::bit_cast<std::uint64_t>(v)); }

void Writer::bytes(const void* p, std::size_t n) {
  const auto* b = static_cast<const std::uint8_t*>(p);
  out_.insert(out_.end(), b, b + n);
}

void Writer::values(const std::vector<std::uint8_t>& v, std::size_t elem) {
  if constexpr (std::endian::native == std::endian::little) {
    bytes(v.data(), v.size());
  } else {
    for (std::size_t i = 0; i < v.size(); i += elem)
      for (std::size_t j = elem; j-- > 0;) out_.push_back(v[i + j]);
  }
}

void Writer::patch_u64(std::size_t at, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out_[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
}

// ---------------------------------------------------------------- Reader

void Reader::fail(const std::string& what) const { detail::fail(errors_.code, errors_.prefix + what); }

void Reader::need(std::size_t n, const std::string& what) const {
  if (end_ - pos_ < n)
    fail("truncated: expected " + std::to_string(n) + " bytes for " + what + " at offset " + std::to_string(pos_) +
         ", got " + std::to_string(end_ - pos_) + errors_.end_note);
}

std::uint32_t Reader::u32(const std::string& what) {
  need(4, what);
  const std::uint32_t v = load_u32(d_.data() + pos_);
  pos_ += 4;
  return v;
}

std::uint64_t Reader::u64(const std::string& what) {
  need(8, what);
  const std::uint64_t v = load_u64(d_.data() + pos_);
  pos_ += 8;
  return v;
}

double Reader::f64(const std::string& what) { return std::bit_cast<double>(u64(what)); }

std::span<const std::uint8_t> Reader::bytes(std::size_t n, const std::string& what) {
  need(n, what);
  auto s = d_.subspan(pos_, n);
  pos_ += n;
  return s;
}

std::vector<std::uint8_t> Reader::values(std::size_t n, std::size_t elem, const std::string& what) {
  auto s = bytes(n, what);
  std::vector<std::uint8_t> v(s.begin(), s.end());
  if constexpr (std::endian::native != std::endian::little) {
    for (std::size_t i = 0; i < v.size(); i += elem)
      for (std::size_t j = 0; j < elem / 2; ++j) std::swap(v[i + j], v[i + elem - 1 - j]);
  }
  return v;
}

// ---------------------------------------------------------------- records

void write_shape(Writer& w, const Shape& s) {
  w.u32(static_cast<std::uint32_t>(s.ndim()));
  for (std::int64_t d : s) w.i64(d);
}

Shape read_shape(Reader& r, const std::string& what) {
  const std::uint32_t ndim = r.u32(what + " ndim");
  if (ndim > static_cast<std::uint32_t>(Shape::kMaxDims))
    r.fail(what + " ndim: expected at most " + std::to_string(Shape::kMaxDims) + ", got " + std::to_string(ndim));
  std::int64_t dims[Shape::kMaxDims] = {};
  for (std::uint32_t i = 0; i < ndim; ++i) {
    dims[i] = r.i64(what + " dim " + std::to_string(i));
    if (dims[i] < 0) r.fail(what + " dim " + std::to_string(i) + ": expected >= 0, got " + std::to_string(dims[i]));
  }
  return Shape::from(dims, static_cast<int>(ndim));
}

void write_key_spec(Writer& w, const KeySpec& k) {
  w.u32(static_cast<std::uint32_t>(k.name.size()));
  w.bytes(k.name.data(), k.name.size());
  w.u32(dtype_code(k.dtype));
  write_shape(w, k.feature_shape);
}

KeySpec read_key_spec(Reader& r, std::uint32_t index, std::uint32_t max_name_bytes) {
  const std::string what = "key " + std::to_string(index);
  const std::uint32_t len = r.u32(what + " name length");
  if (len == 0 || len > max_name_bytes)
    r.fail(what + " name length: expected 1 to " + std::to_string(max_name_bytes) + ", got " + std::to_string(len));
  const auto name = r.bytes(len, what + " name");
  KeySpec spec;
  spec.name.assign(name.begin(), name.end());
  const std::string kw = "key '" + spec.name + "'";
  const std::uint32_t dt = r.u32(kw + " dtype");
  if (dt >= kDTypeCodes)
    r.fail(kw + " dtype: expected a code 0 to " + std::to_string(kDTypeCodes - 1) + ", got " + std::to_string(dt));
  spec.dtype = dtype_of_code(dt);
  spec.feature_shape = read_shape(r, kw + " feature shape");
  return spec;
}

}  // namespace vecnorm::detail
