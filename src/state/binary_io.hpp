// src/state/binary_io.hpp -- little-endian bytes of checkpoint files and of a
// shared segment's key table: a Writer, a bounds-checked Reader, and the
// records both formats share (a shape, a key spec).
//
//   shape:    u32 ndim, ndim x i64 dims
//   key spec: u32 name length, name bytes, u32 dtype code (schema.hpp), shape
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "vecnorm/error.hpp"
#include "vecnorm/options.hpp"

namespace vecnorm::detail {

/// The little-endian values at `p` (any alignment).
std::uint32_t load_u32(const std::uint8_t* p);
std::uint64_t load_u64(const std::uint8_t* p);

/// Appends little-endian values to a byte vector.
class Writer {
 public:
  explicit Writer(std::size_t reserve = 0) { out_.reserve(reserve); }
  void u32(std::uint32_t v);
  void u64(std::uint64_t v);
  void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
  void f64(double v);
  void bytes(const void* p, std::size_t n);
  /// Raw values of `elem` bytes each (host order), stored little-endian.
  void values(const std::vector<std::uint8_t>& v, std::size_t elem);
  /// Overwrites the 8 bytes at `at` (a size known only at the end).
  void patch_u64(std::size_t at, std::uint64_t v);
  std::size_t size() const { return out_.size(); }
  std::vector<std::uint8_t>& out() { return out_; }

 private:
  std::vector<std::uint8_t> out_;
};

/// How a Reader reports malformed input: Error(code, prefix + what), and
/// `end_note` after the bytes left in a truncation message (what ends the range).
struct ReadErrors {
  ErrorCode code = ErrorCode::state_mismatch;
  std::string prefix;    ///< "checkpoint: ", "shared segment '/x': corrupt key table in the segment: "
  std::string end_note;  ///< " (before the checksum)", or ""
};

/// Bounds-checked little-endian reads of [pos, end) of bytes someone else
/// wrote (they may be garbage): every read names what it reads, and no read
/// allocates more than the bytes left.
class Reader {
 public:
  Reader(std::span<const std::uint8_t> d, std::size_t pos, std::size_t end, ReadErrors errors)
      : d_(d), pos_(pos), end_(end), errors_(std::move(errors)) {}

  [[noreturn]] void fail(const std::string& what) const;
  /// Fails unless `n` more bytes are left ("truncated: expected n bytes for <what> at offset ...").
  void need(std::size_t n, const std::string& what) const;
  std::uint32_t u32(const std::string& what);
  std::uint64_t u64(const std::string& what);
  std::int64_t i64(const std::string& what) { return static_cast<std::int64_t>(u64(what)); }
  double f64(const std::string& what);
  std::span<const std::uint8_t> bytes(std::size_t n, const std::string& what);
  /// `n` bytes of little-endian values of `elem` bytes each, in host order.
  std::vector<std::uint8_t> values(std::size_t n, std::size_t elem, const std::string& what);
  std::size_t pos() const { return pos_; }
  std::size_t left() const { return end_ - pos_; }

 private:
  std::span<const std::uint8_t> d_;
  std::size_t pos_, end_;
  ReadErrors errors_;
};

/// The fewest bytes a key spec takes: name length, 1 name byte, dtype, ndim.
inline constexpr std::size_t kMinKeySpecBytes = 4 + 1 + 4 + 4;

void write_shape(Writer& w, const Shape& s);
/// At most Shape::kMaxDims dims, each >= 0; `what` names it ("batch shape").
Shape read_shape(Reader& r, const std::string& what);

void write_key_spec(Writer& w, const KeySpec& k);
/// Key `index` of a table: a name of 1 to `max_name_bytes` bytes, a known
/// dtype code, a shape. Messages name it "key <index>", then "key '<name>'".
KeySpec read_key_spec(Reader& r, std::uint32_t index, std::uint32_t max_name_bytes);

}  // namespace vecnorm::detail
