// src/checkpoint.cpp -- checkpoint files: encode/decode (docs/state-format.md)
// and the crash-safe save (temp file, fsync, rename, fsync of the directory).
#include "vecnorm/checkpoint.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string_view>
#include <system_error>

#include "errors.hpp"

namespace vecnorm {

namespace {

// ---------------------------------------------------------------- format constants

constexpr std::array<std::uint8_t, 8> kMagic = {'V', 'N', 'R', 'M', 'C', 'K', 'P', 'T'};
constexpr std::size_t kFixedHeader = 24;    // magic, version, flags, file size
constexpr std::size_t kHeaderV1 = 60;       // ... + options, number of keys, batch ndim
constexpr std::size_t kHeaderV2 = 64;       // ... + nonfinite
constexpr std::size_t kChecksumBytes = 4;   // CRC-32C trailer
constexpr std::size_t kMinKeyRecord = 4 + 1 + 4 + 4;  // name length, >= 1 name byte, dtype, ndim
constexpr std::size_t kMinStatsRecordV1 = 8 + 8 + 8;  // count, loc length, var length
constexpr std::size_t kMinStatsRecordV2 = 8 + 8 + 8 + 8 + 8;  // count, skipped, loc/var/skips lengths
constexpr std::uint32_t kMaxNameBytes = 65535;

// Stable on-disk codes (independent of the C++ enums' values).
constexpr std::uint32_t kDTypeCodes = 7;
constexpr DType kDTypeOfCode[kDTypeCodes] = {DType::float32, DType::float64, DType::float16, DType::bfloat16,
                                             DType::int32,   DType::int64,   DType::uint8};

std::uint32_t dtype_code(DType d) {
  for (std::uint32_t c = 0; c < kDTypeCodes; ++c)
    if (kDTypeOfCode[c] == d) return c;
  detail::fail(ErrorCode::state_mismatch,
               "checkpoint: unknown dtype value " + std::to_string(static_cast<int>(d)));
}

std::uint32_t estimator_code(Estimator e) { return e == Estimator::stable ? 1u : 0u; }

std::uint32_t nonfinite_code(NonFinite n) {
  switch (n) {
    case NonFinite::propagate: return 0;
    case NonFinite::skip: return 1;
    case NonFinite::error: return 2;
  }
  detail::fail(ErrorCode::state_mismatch,
               "checkpoint: unknown nonfinite value " + std::to_string(static_cast<int>(n)));
}

/// What is wrong with key `ks`'s skips / skipped (format version 2 rules), or
/// "" when nothing is. `kw` names the key ("key 'obs'").
std::string skips_problem(const KeyState& ks, bool pooled, std::int64_t numel, const std::string& kw) {
  if (ks.skipped < 0) return kw + " skipped: expected >= 0, got " + std::to_string(ks.skipped);
  const std::size_t n = ks.skips.size();
  if (n == 0) {
    if (!pooled && ks.skipped != 0)
      return kw + " skipped: expected the sum of skips, 0 (no skips stored), got " + std::to_string(ks.skipped);
    return "";
  }
  if (pooled)
    return kw + " skips: expected none with pooled statistics (reduce_batch_dims = 1: whole rows are skipped), got " +
           std::to_string(n) + " values";
  if (static_cast<std::uint64_t>(n) != static_cast<std::uint64_t>(numel))
    return kw + " skips length: expected 0 or " + std::to_string(numel) + " values (one per element of " +
           ks.stats_shape.str() + "), got " + std::to_string(n);
  std::int64_t sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t v = ks.skips[i];
    if (v < 0 || v > ks.count)
      return kw + " skips[" + std::to_string(i) + "]: expected 0 to " + std::to_string(ks.count) +
             " (the count), got " + std::to_string(v);
    if (__builtin_add_overflow(sum, v, &sum))
      return kw + " skips: their sum overflows int64";
  }
  if (sum != ks.skipped)
    return kw + " skipped: expected the sum of skips, " + std::to_string(sum) + ", got " + std::to_string(ks.skipped);
  if (sum == 0)
    return kw + " skips: expected none when no element was skipped (skipped = 0), got " + std::to_string(n) +
           " values, all 0";
  return "";
}

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

/// Printable bytes as they are, others as \xNN.
std::string escaped(std::span<const std::uint8_t> b) {
  std::string s;
  for (std::uint8_t c : b) {
    if (c >= 0x20 && c < 0x7F && c != '\\' && c != '\'') {
      s += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      s += buf;
    }
  }
  return s;
}

[[noreturn]] void bad(const std::string& what) { detail::fail(ErrorCode::state_mismatch, "checkpoint: " + what); }

/// The message of `e` without its "vecnorm: " prefix.
std::string bare(const Error& e) {
  std::string_view m = e.what();
  constexpr std::string_view p = "vecnorm: ";
  if (m.substr(0, p.size()) == p) m.remove_prefix(p.size());
  return std::string(m);
}

[[noreturn]] void rethrow_prefixed(const Error& e, const std::string& prefix) {
  detail::fail(e.code(), prefix + bare(e));
}

// ---------------------------------------------------------------- CRC-32C

constexpr std::array<std::array<std::uint32_t, 256>, 8> make_crc_tables() {
  std::array<std::array<std::uint32_t, 256>, 8> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
    t[0][i] = c;
  }
  for (std::uint32_t i = 0; i < 256; ++i)
    for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFFu];
  return t;
}
constexpr auto kCrcTables = make_crc_tables();

// ---------------------------------------------------------------- shapes

/// numel of `s` when every partial product of its non-zero dims fits in
/// int64 (so Shape::numel cannot overflow); false otherwise.
bool checked_numel(const Shape& s, std::int64_t& numel) {
  std::int64_t nonzero = 1;
  bool zero = false;
  for (std::int64_t d : s) {
    if (d < 0) return false;
    if (d == 0) {
      zero = true;
      continue;
    }
    if (__builtin_mul_overflow(nonzero, d, &nonzero)) return false;
  }
  numel = zero ? 0 : nonzero;
  return true;
}

Shape stats_shape_of(const Options& o, const KeyTable& t, const KeySpec& k) {
  return o.reduce_batch_dims ? k.feature_shape : t.batch_shape.concat(k.feature_shape);
}

// ---------------------------------------------------------------- writer

class Writer {
 public:
  explicit Writer(std::size_t reserve) { out_.reserve(reserve); }
  void u32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  void u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
  void f64(double v) { u64(std::bit_cast<std::uint64_t>(v)); }
  void bytes(const void* p, std::size_t n) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  /// Raw values of `elem` bytes each, stored little-endian.
  void values(const std::vector<std::uint8_t>& v, std::size_t elem) {
    if constexpr (std::endian::native == std::endian::little) {
      bytes(v.data(), v.size());
    } else {
      for (std::size_t i = 0; i < v.size(); i += elem)
        for (std::size_t j = elem; j-- > 0;) out_.push_back(v[i + j]);
    }
  }
  void patch_u64(std::size_t at, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out_[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
  }
  std::size_t size() const { return out_.size(); }
  std::vector<std::uint8_t>& out() { return out_; }

 private:
  std::vector<std::uint8_t> out_;
};

// ---------------------------------------------------------------- reader

/// Bounds-checked little-endian reads of [pos, end): every read names what it reads.
class Reader {
 public:
  Reader(std::span<const std::uint8_t> d, std::size_t pos, std::size_t end) : d_(d), pos_(pos), end_(end) {}

  void need(std::size_t n, const std::string& what) const {
    if (end_ - pos_ < n)
      bad("truncated: expected " + std::to_string(n) + " bytes for " + what + " at offset " + std::to_string(pos_) +
          ", got " + std::to_string(end_ - pos_) + " (before the checksum)");
  }
  std::uint32_t u32(const std::string& what) {
    need(4, what);
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(d_[pos_ + i]) << (8 * i);
    pos_ += 4;
    return v;
  }
  std::uint64_t u64(const std::string& what) {
    need(8, what);
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(d_[pos_ + i]) << (8 * i);
    pos_ += 8;
    return v;
  }
  std::int64_t i64(const std::string& what) { return static_cast<std::int64_t>(u64(what)); }
  double f64(const std::string& what) { return std::bit_cast<double>(u64(what)); }
  std::span<const std::uint8_t> bytes(std::size_t n, const std::string& what) {
    need(n, what);
    auto s = d_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  std::vector<std::uint8_t> values(std::size_t n, std::size_t elem, const std::string& what) {
    auto s = bytes(n, what);
    std::vector<std::uint8_t> v(s.begin(), s.end());
    if constexpr (std::endian::native != std::endian::little) {
      for (std::size_t i = 0; i < v.size(); i += elem)
        for (std::size_t j = 0; j < elem / 2; ++j) std::swap(v[i + j], v[i + elem - 1 - j]);
    }
    return v;
  }
  std::size_t pos() const { return pos_; }
  std::size_t left() const { return end_ - pos_; }

 private:
  std::span<const std::uint8_t> d_;
  std::size_t pos_, end_;
};

std::uint32_t read_u32_at(std::span<const std::uint8_t> d, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(d[at + i]) << (8 * i);
  return v;
}
std::uint64_t read_u64_at(std::span<const std::uint8_t> d, std::size_t at) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(d[at + i]) << (8 * i);
  return v;
}

Shape read_shape(Reader& r, const std::string& what) {
  const std::uint32_t ndim = r.u32(what + " ndim");
  if (ndim > static_cast<std::uint32_t>(Shape::kMaxDims))
    bad(what + " ndim: expected at most " + std::to_string(Shape::kMaxDims) + ", got " + std::to_string(ndim));
  std::int64_t dims[Shape::kMaxDims] = {};
  for (std::uint32_t i = 0; i < ndim; ++i) {
    dims[i] = r.i64(what + " dim " + std::to_string(i));
    if (dims[i] < 0) bad(what + " dim " + std::to_string(i) + ": expected >= 0, got " + std::to_string(dims[i]));
  }
  return Shape::from(dims, static_cast<int>(ndim));
}

// ---------------------------------------------------------------- decode (versions 1 and 2)
//
// One parser for both versions: version 2 is version 1 with the nonfinite code
// after eps, and per key the skipped counter after count and the skips after
// var. Fields a version 1 file does not have get the values that reproduce the
// behaviour of the vecnorm that wrote it (docs/state-format.md, "Versioning and compatibility").

State decode_records(std::span<const std::uint8_t> d, std::uint32_t version) {
  const bool v2 = version >= 2;
  const std::size_t body_end = d.size() - kChecksumBytes;
  Reader r(d, kFixedHeader, body_end);
  State st;
  const std::uint32_t est = r.u32("estimator");
  if (est > 1) bad("estimator: expected 0 (torchrl) or 1 (stable), got " + std::to_string(est));
  st.options.estimator = est == 1 ? Estimator::stable : Estimator::torchrl;
  const std::uint32_t pooled = r.u32("reduce_batch_dims");
  if (pooled > 1) bad("reduce_batch_dims: expected 0 or 1, got " + std::to_string(pooled));
  st.options.reduce_batch_dims = pooled == 1;
  const std::uint32_t sd = r.u32("stats_dtype");
  if (sd != 0 && sd != 1) bad("stats_dtype: expected 0 (float32) or 1 (float64), got " + std::to_string(sd));
  st.options.stats_dtype = kDTypeOfCode[sd];
  const std::uint32_t nkeys = r.u32("number of keys");
  st.options.decay = r.f64("decay");
  st.options.eps = r.f64("eps");
  // Version 1 was written by a vecnorm without the option: non-finite input
  // entered its statistics.
  st.options.nonfinite = NonFinite::propagate;
  if (v2) {
    const std::uint32_t nf = r.u32("nonfinite");
    if (nf > 2) bad("nonfinite: expected 0 (propagate), 1 (skip) or 2 (error), got " + std::to_string(nf));
    st.options.nonfinite = nf == 0 ? NonFinite::propagate : nf == 1 ? NonFinite::skip : NonFinite::error;
  }
  st.table.batch_shape = read_shape(r, "batch shape");
  // Every key takes at least kMinKeyRecord + the smallest statistics record:
  // bound the count by what is left before allocating anything for it.
  const std::size_t min_key = kMinKeyRecord + (v2 ? kMinStatsRecordV2 : kMinStatsRecordV1);
  const std::size_t max_keys = r.left() / min_key;
  if (nkeys == 0 || nkeys > max_keys)
    bad("number of keys: expected 1 to " + std::to_string(max_keys) + " (what " + std::to_string(r.left()) +
        " bytes can hold), got " + std::to_string(nkeys));
  st.table.keys.reserve(nkeys);
  for (std::uint32_t k = 0; k < nkeys; ++k) {
    const std::string what = "key " + std::to_string(k);
    const std::uint32_t len = r.u32(what + " name length");
    if (len == 0 || len > kMaxNameBytes)
      bad(what + " name length: expected 1 to " + std::to_string(kMaxNameBytes) + ", got " + std::to_string(len));
    auto name = r.bytes(len, what + " name");
    KeySpec spec;
    spec.name.assign(name.begin(), name.end());
    const std::string kw = "key '" + spec.name + "'";
    const std::uint32_t dt = r.u32(kw + " dtype");
    if (dt >= kDTypeCodes)
      bad(kw + " dtype: expected a code 0 to " + std::to_string(kDTypeCodes - 1) + ", got " + std::to_string(dt));
    spec.dtype = kDTypeOfCode[dt];
    spec.feature_shape = read_shape(r, kw + " feature shape");
    if (st.table.batch_shape.ndim() + spec.feature_shape.ndim() > Shape::kMaxDims)
      bad(kw + ": batch " + st.table.batch_shape.str() + " + feature " + spec.feature_shape.str() +
          ": expected at most " + std::to_string(Shape::kMaxDims) + " dims");
    st.table.keys.push_back(std::move(spec));
  }
  const std::size_t elem = dtype_size(st.options.stats_dtype);
  st.keys.resize(nkeys);
  for (std::uint32_t k = 0; k < nkeys; ++k) {
    const KeySpec& spec = st.table.keys[k];
    const std::string kw = "key '" + spec.name + "'";
    KeyState& ks = st.keys[k];
    ks.stats_shape = stats_shape_of(st.options, st.table, spec);
    std::int64_t numel = 0;
    std::uint64_t expected = 0;
    if (!checked_numel(ks.stats_shape, numel) ||
        __builtin_mul_overflow(static_cast<std::uint64_t>(numel), static_cast<std::uint64_t>(elem), &expected))
      bad(kw + " statistics shape " + ks.stats_shape.str() + ": too many elements");
    ks.count = r.i64(kw + " count");
    if (ks.count < 0) bad(kw + " count: expected >= 0, got " + std::to_string(ks.count));
    if (v2) {
      ks.skipped = r.i64(kw + " skipped");
      if (ks.skipped < 0) bad(kw + " skipped: expected >= 0, got " + std::to_string(ks.skipped));
    }
    for (int which = 0; which < 2; ++which) {
      const std::string part = kw + (which == 0 ? " loc" : " var");
      const std::uint64_t n = r.u64(part + " length");
      if (n != expected)
        bad(part + " length: expected " + std::to_string(expected) + " bytes (" + ks.stats_shape.str() + " of " +
            to_string(st.options.stats_dtype) + "), got " + std::to_string(n));
      // n <= what is left is checked before any allocation.
      (which == 0 ? ks.loc : ks.var) = r.values(static_cast<std::size_t>(n), elem, part);
    }
    if (v2) {
      const std::uint64_t n = r.u64(kw + " skips length");
      if (n != 0 && st.options.reduce_batch_dims)
        bad(kw + " skips: expected none with pooled statistics (reduce_batch_dims = 1: whole rows are skipped), got " +
            std::to_string(n) + " values");
      if (n != 0 && n != static_cast<std::uint64_t>(numel))
        bad(kw + " skips length: expected 0 or " + std::to_string(numel) + " values (one per element of " +
            ks.stats_shape.str() + "), got " + std::to_string(n));
      // n == numel, and numel * 8 bytes must be left before the checksum (checked
      // before anything is allocated for them).
      std::uint64_t nbytes = 0;
      if (__builtin_mul_overflow(n, std::uint64_t{8}, &nbytes) || nbytes > r.left())
        bad("truncated: expected " + std::to_string(n) + " x 8 bytes for " + kw + " skips at offset " +
            std::to_string(r.pos()) + ", got " + std::to_string(r.left()) + " (before the checksum)");
      const auto raw = r.bytes(static_cast<std::size_t>(nbytes), kw + " skips");
      ks.skips.resize(static_cast<std::size_t>(n));
      for (std::size_t i = 0; i < ks.skips.size(); ++i)
        ks.skips[i] = static_cast<std::int64_t>(read_u64_at(raw, 8 * i));
      const std::string problem = skips_problem(ks, st.options.reduce_batch_dims, numel, kw);
      if (!problem.empty()) bad(problem);
    }
  }
  if (r.left() != 0)
    bad("expected the checksum at offset " + std::to_string(r.pos()) + ", got " + std::to_string(r.left()) +
        " more bytes before it");
  return st;
}

// ---------------------------------------------------------------- files

std::string errno_text(int e) { return std::system_category().message(e); }

[[noreturn]] void io_fail(const std::string& prefix, const std::string& what, int e) {
  detail::fail(ErrorCode::invalid_argument, prefix + what + ": " + errno_text(e));
}

std::string dir_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string random_suffix() {
  static std::atomic<std::uint64_t> counter{0};
  std::uint64_t r = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  r ^= counter.fetch_add(1) * 0x9E3779B97F4A7C15ull;
  try {
    std::random_device rd;
    r ^= (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  } catch (...) {  // no entropy source: time and counter still make it unique enough with O_EXCL
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(r));
  return buf;
}

std::vector<std::uint8_t> read_file(const std::string& path, const std::string& prefix) {
  int fd = -1;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) io_fail(prefix, "cannot open for reading", errno);
  struct stat sb {};
  if (::fstat(fd, &sb) != 0) {
    const int e = errno;
    ::close(fd);
    io_fail(prefix, "cannot stat", e);
  }
  if (!S_ISREG(sb.st_mode)) {
    ::close(fd);
    detail::fail(ErrorCode::invalid_argument, prefix + "expected a regular file, got " +
                                                  (S_ISDIR(sb.st_mode) ? "a directory" : "another kind of file"));
  }
  std::vector<std::uint8_t> out;
  out.reserve(static_cast<std::size_t>(sb.st_size));
  std::uint8_t buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      io_fail(prefix, "cannot read", e);
    }
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  ::close(fd);
  return out;
}

/// Writes `bytes` to `path` atomically and durably (see save_state).
void write_atomic(const std::string& path, const std::vector<std::uint8_t>& bytes, const std::string& prefix) {
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    tmp = path + ".tmp." + std::to_string(::getpid()) + "." + random_suffix();
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && (errno != EEXIST || attempt >= 8)) io_fail(prefix, "cannot create temporary file '" + tmp + "'", errno);
  }
  auto abandon = [&](const std::string& what, int e) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    io_fail(prefix, what + " (temporary file '" + tmp + "', removed)", e);
  };
  std::size_t off = 0;
  while (off < bytes.size()) {
    const std::size_t chunk = std::min<std::size_t>(bytes.size() - off, std::size_t{1} << 30);
    const ssize_t w = ::write(fd, bytes.data() + off, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      abandon("cannot write " + std::to_string(bytes.size()) + " bytes (wrote " + std::to_string(off) + ")", errno);
    }
    if (w == 0) abandon("cannot write: no progress", EIO);
    off += static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0) abandon("cannot fsync", errno);
  const int fd_closed = fd;
  fd = -1;
  if (::close(fd_closed) != 0) abandon("cannot close", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) abandon("cannot rename the temporary file over it", errno);
  // The new file is in place; make the rename itself durable.
  const std::string dir = dir_of(path);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) io_fail(prefix, "written, but cannot open its directory '" + dir + "' to fsync it", errno);
  if (::fsync(dfd) != 0 && errno != EINVAL && errno != ENOTSUP) {
    const int e = errno;
    ::close(dfd);
    io_fail(prefix, "written, but cannot fsync its directory '" + dir + "'", e);
  }
  ::close(dfd);
}

}  // namespace

// ================================================================ public

std::uint32_t crc32c(std::span<const std::uint8_t> bytes) noexcept {
  std::uint32_t c = 0xFFFFFFFFu;
  const std::uint8_t* p = bytes.data();
  std::size_t n = bytes.size();
  const auto& t = kCrcTables;
  while (n >= 8) {
    const std::uint32_t lo = c ^ (static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
                                  static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24);
    c = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^ t[3][p[4]] ^
        t[2][p[5]] ^ t[1][p[6]] ^ t[0][p[7]];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xFF];
  return c ^ 0xFFFFFFFFu;
}

std::vector<std::uint8_t> encode_state(const State& state) {
  // Element counts first (State::validate multiplies the dims without overflow checks).
  for (std::size_t k = 0; k < state.table.keys.size(); ++k) {
    const KeySpec& spec = state.table.keys[k];
    std::int64_t numel = 0;
    if (state.table.batch_shape.ndim() + spec.feature_shape.ndim() <= Shape::kMaxDims &&
        !checked_numel(stats_shape_of(state.options, state.table, spec), numel))
      detail::fail(ErrorCode::invalid_argument,
                   "encode_state: " + detail::key_prefix(spec.name) + "statistics shape: too many elements");
  }
  try {
    state.validate();
  } catch (const Error& e) {
    rethrow_prefixed(e, "encode_state: ");
  }
  // The skips rules of the format (State::validate may check less): never
  // write a file decode_state refuses.
  for (std::size_t k = 0; k < state.keys.size(); ++k) {
    std::int64_t numel = 0;
    checked_numel(state.keys[k].stats_shape, numel);
    const std::string problem = skips_problem(state.keys[k], state.options.reduce_batch_dims, numel,
                                              "key '" + state.table.keys[k].name + "'");
    if (!problem.empty()) detail::fail(ErrorCode::state_mismatch, "encode_state: " + problem);
  }
  std::size_t size = kHeaderV2 + 8 * static_cast<std::size_t>(state.table.batch_shape.ndim()) + kChecksumBytes;
  for (std::size_t k = 0; k < state.keys.size(); ++k) {
    const KeySpec& spec = state.table.keys[k];
    if (spec.name.size() > kMaxNameBytes)
      detail::fail(ErrorCode::invalid_argument, "encode_state: key '" + spec.name.substr(0, 64) +
                                                    "...': name of " + std::to_string(spec.name.size()) +
                                                    " bytes: expected at most " + std::to_string(kMaxNameBytes));
    std::int64_t numel = 0;
    if (!checked_numel(state.keys[k].stats_shape, numel))
      detail::fail(ErrorCode::invalid_argument, "encode_state: " + detail::key_prefix(spec.name) +
                                                    "statistics shape " + state.keys[k].stats_shape.str() +
                                                    ": too many elements");
    size += 12 + spec.name.size() + 8 * static_cast<std::size_t>(spec.feature_shape.ndim()) + kMinStatsRecordV2 +
            state.keys[k].loc.size() + state.keys[k].var.size() + 8 * state.keys[k].skips.size();
  }
  Writer w(size);
  w.bytes(kMagic.data(), kMagic.size());
  w.u32(kCheckpointFormatVersion);
  w.u32(0);  // flags
  const std::size_t size_at = w.size();
  w.u64(0);  // file size, patched below
  w.u32(estimator_code(state.options.estimator));
  w.u32(state.options.reduce_batch_dims ? 1 : 0);
  w.u32(state.options.stats_dtype == DType::float64 ? 1 : 0);
  w.u32(static_cast<std::uint32_t>(state.table.keys.size()));
  w.f64(state.options.decay);
  w.f64(state.options.eps);
  w.u32(nonfinite_code(state.options.nonfinite));
  w.u32(static_cast<std::uint32_t>(state.table.batch_shape.ndim()));
  for (std::int64_t d : state.table.batch_shape) w.i64(d);
  for (const KeySpec& spec : state.table.keys) {
    w.u32(static_cast<std::uint32_t>(spec.name.size()));
    w.bytes(spec.name.data(), spec.name.size());
    w.u32(dtype_code(spec.dtype));
    w.u32(static_cast<std::uint32_t>(spec.feature_shape.ndim()));
    for (std::int64_t d : spec.feature_shape) w.i64(d);
  }
  const std::size_t elem = dtype_size(state.options.stats_dtype);
  for (const KeyState& ks : state.keys) {
    w.i64(ks.count);
    w.i64(ks.skipped);
    w.u64(ks.loc.size());
    w.values(ks.loc, elem);
    w.u64(ks.var.size());
    w.values(ks.var, elem);
    w.u64(ks.skips.size());
    for (std::int64_t v : ks.skips) w.i64(v);
  }
  w.patch_u64(size_at, w.size() + kChecksumBytes);
  w.u32(crc32c(w.out()));
  return std::move(w.out());
}

State decode_state(std::span<const std::uint8_t> d) {
  const std::size_t n = d.size();
  // Magic: a prefix of it is a truncated file, anything else is not a checkpoint.
  const std::size_t m = std::min(n, kMagic.size());
  if (!std::equal(d.begin(), d.begin() + static_cast<std::ptrdiff_t>(m), kMagic.begin()))
    bad("bad magic: expected '" + escaped(kMagic) + "' (a vecnorm checkpoint), got '" +
        escaped(d.first(m)) + "'");
  if (n < 12)
    bad("truncated: expected at least 12 bytes for the magic and format version, got " + std::to_string(n));
  const std::uint32_t version = read_u32_at(d, 8);
  if (version < kCheckpointOldestVersion || version > kCheckpointFormatVersion)
    bad("unsupported format version: this reader reads versions " + std::to_string(kCheckpointOldestVersion) +
        " to " + std::to_string(kCheckpointFormatVersion) + ", the file has version " + std::to_string(version) +
        (version > kCheckpointFormatVersion ? " (written by a newer vecnorm?)" : ""));
  if (n < kFixedHeader)
    bad("truncated: expected at least " + std::to_string(kFixedHeader) + " bytes for the fixed header, got " +
        std::to_string(n));
  const std::uint64_t recorded = read_u64_at(d, 16);
  if (recorded != n)
    bad((recorded > n ? "truncated: expected " : "size mismatch: expected ") + std::to_string(recorded) +
        " bytes (the size recorded in the header), got " + std::to_string(n));
  const std::size_t header = version == 1 ? kHeaderV1 : kHeaderV2;
  if (n < header + kChecksumBytes)
    bad("truncated: expected at least " + std::to_string(header + kChecksumBytes) + " bytes for a version " +
        std::to_string(version) + " header and checksum, got " + std::to_string(n));
  const std::uint32_t stored = read_u32_at(d, n - kChecksumBytes);
  const std::uint32_t computed = crc32c(d.first(n - kChecksumBytes));
  if (stored != computed)
    bad("checksum mismatch: expected CRC-32C " + hex32(stored) + " (stored), got " + hex32(computed) +
        " (computed over bytes 0.." + std::to_string(n - kChecksumBytes) + ")");
  const std::uint32_t flags = read_u32_at(d, 12);
  if (flags != 0) bad("flags: expected 0 in format version " + std::to_string(version) + ", got " + hex32(flags));
  try {
    State st = decode_records(d, version);
    st.validate();
    return st;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::state_mismatch && bare(e).rfind("checkpoint: ", 0) == 0) throw;
    bad("invalid state: " + bare(e));
  }
}

void save_state(const VecNorm& vn, const std::string& path) {
  const std::string prefix = "save_state: '" + path + "': ";
  std::vector<std::uint8_t> bytes;
  try {
    bytes = encode_state(vn.export_state());
  } catch (const Error& e) {
    rethrow_prefixed(e, prefix);
  }
  write_atomic(path, bytes, prefix);
}

State read_state_file(const std::string& path) {
  const std::string prefix = "read_state_file: '" + path + "': ";
  const std::vector<std::uint8_t> bytes = read_file(path, prefix);
  try {
    return decode_state(bytes);
  } catch (const Error& e) {
    rethrow_prefixed(e, prefix);
  }
}

void load_state(VecNorm& vn, const std::string& path) {
  const std::string prefix = "load_state: '" + path + "': ";
  const std::vector<std::uint8_t> bytes = read_file(path, prefix);
  try {
    const State st = decode_state(bytes);
    vn.import_state(st);
  } catch (const Error& e) {
    rethrow_prefixed(e, prefix);
  }
}

}  // namespace vecnorm
