// apps/npy.cpp -- see npy.hpp. The format: numpy.lib.format's documentation
// (NEP 1): magic "\x93NUMPY", major and minor version bytes, a little-endian
// header length (u16 in version 1, u32 in versions 2 and 3), then the header:
// a Python dict literal padded with spaces and ended by '\n'.
#include "npy.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>

#include "cli.hpp"

namespace vncli {
namespace {

constexpr std::uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

[[noreturn]] void bad(std::string_view name, const std::string& what) {
  throw InputError(std::string(name) + ": " + what);
}

std::string errno_text(int err) { return std::strerror(err); }

/// Printable form of some raw bytes: "'PK\x03\x04'".
std::string show_bytes(const std::uint8_t* p, std::size_t n) {
  std::string s = "'";
  for (std::size_t i = 0; i < n; ++i) {
    if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\'' && p[i] != '\\') {
      s += static_cast<char>(p[i]);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", p[i]);
      s += buf;
    }
  }
  return s + "'";
}

// ---------------------------------------------------------------- the header dict

/// A value of the header dict.
struct Value {
  enum class Kind { string, boolean, tuple, list, other } kind = Kind::other;
  std::string text;                  ///< string
  bool flag = false;                 ///< boolean
  std::vector<std::int64_t> ints;    ///< tuple of ints
};

/// Recursive-descent parser of the Python literal subset .npy headers use.
class DictParser {
 public:
  DictParser(std::string_view name, std::string_view text) : name_(name), s_(text) {}

  /// Parses "{key: value, ...}" and trailing whitespace; returns the entries in order.
  std::vector<std::pair<std::string, Value>> parse() {
    std::vector<std::pair<std::string, Value>> entries;
    skip_ws();
    expect('{', "the header dict to start with '{'");
    for (;;) {
      skip_ws();
      if (peek() == '}') {
        ++i_;
        break;
      }
      if (peek() != '\'' && peek() != '"') fail("a quoted key");
      std::string key = parse_string();
      skip_ws();
      expect(':', "':' after key '" + key + "'");
      skip_ws();
      Value v = parse_value(key);
      entries.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() == '}') {
        ++i_;
        break;
      }
      fail("',' or '}'");
    }
    skip_ws();
    if (i_ != s_.size()) fail("only padding after the header dict");
    return entries;
  }

 private:
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r')) ++i_;
  }
  [[noreturn]] void fail(const std::string& expected) const {
    std::string got;
    if (i_ >= s_.size()) {
      got = "the end of the header";
    } else {
      got = std::string(s_.substr(i_, 12));
      for (char& c : got)
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
      got = "'" + got + (s_.size() - i_ > 12 ? "...'" : "'");
    }
    bad(name_, "malformed header: expected " + expected + " at offset " + std::to_string(i_) + ", got " + got);
  }
  void expect(char c, const std::string& what) {
    if (peek() != c) fail(what);
    ++i_;
  }
  std::string parse_string() {
    const char quote = s_[i_++];
    std::string out;
    while (i_ < s_.size() && s_[i_] != quote) {
      if (s_[i_] == '\\') {
        if (i_ + 1 >= s_.size()) break;
        ++i_;
      }
      out += s_[i_++];
    }
    if (i_ >= s_.size()) fail(std::string("a closing ") + quote);
    ++i_;
    return out;
  }
  bool starts_with(std::string_view word) const { return s_.substr(i_, word.size()) == word; }
  Value parse_value(const std::string& key) {
    Value v;
    const char c = peek();
    if (c == '\'' || c == '"') {
      v.kind = Value::Kind::string;
      v.text = parse_string();
    } else if (starts_with("True")) {
      v.kind = Value::Kind::boolean;
      v.flag = true;
      i_ += 4;
    } else if (starts_with("False")) {
      v.kind = Value::Kind::boolean;
      i_ += 5;
    } else if (c == '(') {
      v.kind = Value::Kind::tuple;
      ++i_;
      parse_ints(v.ints, ')', key);
    } else if (c == '[') {
      // Only a structured dtype's descr is a list; skip it, balanced.
      v.kind = Value::Kind::list;
      int depth = 0;
      do {
        if (peek() == '[' || peek() == '(') ++depth;
        if (peek() == ']' || peek() == ')') --depth;
        if (peek() == '\'' || peek() == '"') {
          parse_string();
          continue;
        }
        if (i_ >= s_.size()) fail("a closing ']'");
        ++i_;
      } while (depth > 0);
    } else {
      fail("a value for '" + key + "' (a string, True, False or a tuple)");
    }
    return v;
  }
  void parse_ints(std::vector<std::int64_t>& out, char close, const std::string& key) {
    skip_ws();
    if (peek() == close) {
      ++i_;
      return;
    }
    for (;;) {
      skip_ws();
      if (peek() < '0' || peek() > '9') fail("a non-negative integer in '" + key + "'");
      std::int64_t v = 0;
      while (peek() >= '0' && peek() <= '9') {
        const int d = peek() - '0';
        if (v > (std::numeric_limits<std::int64_t>::max() - d) / 10) fail("an integer that fits in 64 bits");
        v = v * 10 + d;
        ++i_;
      }
      if (peek() == 'L') ++i_;  // Python 2 long literals
      out.push_back(v);
      skip_ws();
      if (peek() == ',') {
        ++i_;
        skip_ws();
        if (peek() == close) {
          ++i_;
          return;
        }
        continue;
      }
      if (peek() == close) {
        if (out.size() == 1 && close == ')') fail("',' after the only dim of a 1-tuple");
        ++i_;
        return;
      }
      fail(std::string("',' or '") + close + "'");
    }
  }

  std::string_view name_;
  std::string_view s_;
  std::size_t i_ = 0;
};

const char* kSupported = "float16 '<f2', float32 '<f4', float64 '<f8', int32 '<i4', int64 '<i8' or uint8 '|u1'";

vecnorm::DType dtype_from_descr(std::string_view name, const std::string& d) {
  if (d.size() < 2) bad(name, "unsupported dtype '" + d + "'; expected " + kSupported);
  const char order = d[0];
  const std::string type = d.substr(1);
  if (type == "O" || type.rfind("O", 0) == 0)
    bad(name, "object dtype ('" + d + "') is not supported: the file holds pickled Python objects, not numbers; expected " +
                  kSupported);
  std::optional<vecnorm::DType> dt;
  if (type == "f2") dt = vecnorm::DType::float16;
  else if (type == "f4") dt = vecnorm::DType::float32;
  else if (type == "f8") dt = vecnorm::DType::float64;
  else if (type == "i4") dt = vecnorm::DType::int32;
  else if (type == "i8") dt = vecnorm::DType::int64;
  else if (type == "u1") dt = vecnorm::DType::uint8;
  if (order != '<' && order != '>' && order != '|' && order != '=')
    bad(name, "unsupported dtype '" + d + "': expected a byte order '<', '>', '|' or '=' first");
  if (!dt) bad(name, "unsupported dtype '" + d + "'; expected " + kSupported);
  const bool one_byte = *dt == vecnorm::DType::uint8;
  if (order == '>' && !one_byte)
    bad(name, "big-endian data ('" + d + "') is not supported; expected little-endian '<" + type +
                  "' (numpy: a.astype(a.dtype.newbyteorder('<')))");
  if (order == '|' && !one_byte)
    bad(name, "dtype '" + d + "' has no byte order; expected '<" + type + "'");
  return *dt;
}

}  // namespace

const char* npy_descr(vecnorm::DType dtype) {
  switch (dtype) {
    case vecnorm::DType::float16: return "<f2";
    case vecnorm::DType::float32: return "<f4";
    case vecnorm::DType::float64: return "<f8";
    case vecnorm::DType::int32: return "<i4";
    case vecnorm::DType::int64: return "<i8";
    case vecnorm::DType::uint8: return "|u1";
    case vecnorm::DType::bfloat16: break;
  }
  throw InputError(std::string(".npy has no dtype for ") + vecnorm::to_string(dtype));
}

NpyHeader parse_npy(std::string_view name, const std::uint8_t* b, std::size_t available, std::uint64_t file_size) {
  NpyHeader h;
  const std::size_t magic_len = available < 6 ? available : 6;
  if (std::memcmp(b, kMagic, magic_len) != 0 || file_size == 0)
    bad(name, "not a .npy file: the magic string is " + show_bytes(b, magic_len) + ", expected '\\x93NUMPY'");
  if (file_size < 10)
    bad(name, "truncated header: the file has " + std::to_string(file_size) +
                  " bytes, fewer than the 10 of a .npy preamble");
  const int major = b[6], minor = b[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    bad(name, "unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                  "; expected 1.0, 2.0 or 3.0");
  h.major_version = major;
  const std::size_t pre = major == 1 ? 10 : 12;
  if (file_size < pre)
    bad(name, "truncated header: the file has " + std::to_string(file_size) + " bytes, fewer than the " +
                  std::to_string(pre) + " of a version " + std::to_string(major) + " preamble");
  std::uint64_t header_len = major == 1 ? (std::uint64_t{b[8]} | std::uint64_t{b[9]} << 8)
                                        : (std::uint64_t{b[8]} | std::uint64_t{b[9]} << 8 |
                                           std::uint64_t{b[10]} << 16 | std::uint64_t{b[11]} << 24);
  h.data_offset = pre + header_len;
  if (h.data_offset > file_size)
    bad(name, "truncated header: the header says " + std::to_string(header_len) + " header bytes, the file has " +
                  std::to_string(file_size - pre) + " after the preamble");
  if (h.data_offset > available)
    bad(name, "internal: header of " + std::to_string(header_len) + " bytes was not read whole");
  const std::string_view text(reinterpret_cast<const char*>(b + pre), header_len);

  const auto entries = DictParser(name, text).parse();
  const Value *descr = nullptr, *fortran = nullptr, *shape = nullptr;
  for (const auto& [key, value] : entries) {
    const Value** slot = key == "descr" ? &descr : key == "fortran_order" ? &fortran : key == "shape" ? &shape : nullptr;
    if (slot == nullptr)
      bad(name, "malformed header: unexpected key '" + key + "' (expected 'descr', 'fortran_order' and 'shape')");
    if (*slot != nullptr) bad(name, "malformed header: key '" + key + "' appears twice");
    *slot = &value;
  }
  if (descr == nullptr) bad(name, "malformed header: no 'descr' (the dtype)");
  if (fortran == nullptr) bad(name, "malformed header: no 'fortran_order'");
  if (shape == nullptr) bad(name, "malformed header: no 'shape'");
  if (descr->kind == Value::Kind::list)
    bad(name, std::string("structured dtypes (a list of fields in 'descr') are not supported; expected ") + kSupported);
  if (descr->kind != Value::Kind::string) bad(name, "malformed header: 'descr' is not a string");
  if (fortran->kind != Value::Kind::boolean) bad(name, "malformed header: 'fortran_order' is not True or False");
  if (shape->kind != Value::Kind::tuple) bad(name, "malformed header: 'shape' is not a tuple of integers");
  h.dtype = dtype_from_descr(name, descr->text);
  if (fortran->flag)
    bad(name, "Fortran-order data (fortran_order: True) is not supported; expected C order "
              "(numpy: np.save(path, np.ascontiguousarray(a)))");
  h.shape = shape->ints;

  std::uint64_t numel = 1;
  for (const std::int64_t d : h.shape) {
    const auto ud = static_cast<std::uint64_t>(d);
    if (ud != 0 && numel > std::numeric_limits<std::uint64_t>::max() / 16 / ud)
      bad(name, "shape " + dims_str(h.shape) + " is too large");
    numel *= ud;
  }
  h.data_bytes = numel * vecnorm::dtype_size(h.dtype);
  const std::uint64_t have = file_size - h.data_offset;
  if (have < h.data_bytes)
    bad(name, "truncated data: shape " + dims_str(h.shape) + " of " + vecnorm::to_string(h.dtype) + " needs " +
                  std::to_string(h.data_bytes) + " data bytes, the file has " + std::to_string(have));
  if (have > h.data_bytes)
    bad(name, std::to_string(have - h.data_bytes) + " unexpected bytes after the data (shape " + dims_str(h.shape) +
                  " of " + vecnorm::to_string(h.dtype) + " needs " + std::to_string(h.data_bytes) + ")");
  return h;
}

// ---------------------------------------------------------------- reader

NpyReader::NpyReader(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) bad(path, "cannot open: " + errno_text(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    bad(path, "cannot stat: " + errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    bad(path, "not a regular file");
  }
  const auto file_size = static_cast<std::uint64_t>(st.st_size);
  try {
    // Preamble first, then exactly the header it announces (up to 4 GiB in v2/v3).
    std::vector<std::uint8_t> buf(12);
    std::size_t got = 0;
    auto read_upto = [&](std::size_t want) {
      if (buf.size() < want) buf.resize(want);
      while (got < want) {
        const ssize_t n = ::pread(fd_, buf.data() + got, want - got, static_cast<off_t>(got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) bad(path, "cannot read: " + errno_text(errno));
        if (n == 0) break;
        got += static_cast<std::size_t>(n);
      }
    };
    read_upto(12);
    std::uint64_t want = 0;
    if (got >= 10 && std::memcmp(buf.data(), kMagic, 6) == 0) {
      const bool v1 = buf[6] == 1;
      want = v1 ? 10 + (std::uint64_t{buf[8]} | std::uint64_t{buf[9]} << 8)
                : (got >= 12 ? 12 + (std::uint64_t{buf[8]} | std::uint64_t{buf[9]} << 8 |
                                     std::uint64_t{buf[10]} << 16 | std::uint64_t{buf[11]} << 24)
                             : 0);
      if (want > file_size) want = 0;  // parse_npy reports the truncation
    }
    if (want > got) read_upto(static_cast<std::size_t>(want));
    header_ = parse_npy(path, buf.data(), got, file_size);
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

NpyReader::~NpyReader() {
  if (fd_ >= 0) ::close(fd_);
}

NpyReader::NpyReader(NpyReader&& other) noexcept
    : path_(std::move(other.path_)), fd_(other.fd_), header_(std::move(other.header_)) {
  other.fd_ = -1;
}

void NpyReader::read(std::uint64_t offset, void* dst, std::size_t bytes) const {
  auto* p = static_cast<std::uint8_t*>(dst);
  std::uint64_t pos = header_.data_offset + offset;
  while (bytes > 0) {
    const ssize_t n = ::pread(fd_, p, bytes, static_cast<off_t>(pos));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) bad(path_, "cannot read: " + errno_text(errno));
    if (n == 0)
      bad(path_, "truncated data: the file ended at byte " + std::to_string(pos) + " while being read (did it change?)");
    p += n;
    pos += static_cast<std::uint64_t>(n);
    bytes -= static_cast<std::size_t>(n);
  }
}

// ---------------------------------------------------------------- writer

std::string npy_header_bytes(vecnorm::DType dtype, const std::vector<std::int64_t>& shape) {
  std::string dict = "{'descr': '";
  dict += npy_descr(dtype);
  dict += "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) dict += ", ";
    dict += std::to_string(shape[i]);
  }
  if (shape.size() == 1) dict += ",";
  dict += "), }";
  // Pad with spaces so that preamble + dict + '\n' is a multiple of 64 bytes.
  const std::size_t total = (10 + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - 10 - dict.size() - 1, ' ');
  dict += '\n';
  const std::size_t len = dict.size();
  std::string out;
  out.append(reinterpret_cast<const char*>(kMagic), 6);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(len & 0xff);
  out += static_cast<char>((len >> 8) & 0xff);
  return out + dict;
}

NpyWriter::NpyWriter(std::string path, vecnorm::DType dtype, const std::vector<std::int64_t>& shape)
    : path_(std::move(path)) {
  temp_ = path_ + ".tmp." + std::to_string(::getpid());
  const std::string header = npy_header_bytes(dtype, shape);
  std::uint64_t numel = 1;
  for (const std::int64_t d : shape) numel *= static_cast<std::uint64_t>(d);
  expected_ = numel * vecnorm::dtype_size(dtype);
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd_ < 0) bad(temp_, "cannot create: " + errno_text(errno));
  try {
    write(header.data(), header.size());
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(temp_.c_str());
    throw;
  }
  written_ = 0;  // count data bytes only
}

NpyWriter::~NpyWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_.c_str());
}

void NpyWriter::write(const void* data, std::size_t bytes) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  written_ += bytes;
  while (bytes > 0) {
    const ssize_t n = ::write(fd_, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) bad(temp_, "cannot write: " + errno_text(errno));
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
}

void NpyWriter::finish() {
  if (written_ != expected_)
    bad(temp_, "internal: wrote " + std::to_string(written_) + " data bytes, expected " + std::to_string(expected_));
  if (::fsync(fd_) != 0) bad(temp_, "cannot flush to disk: " + errno_text(errno));
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) bad(temp_, "cannot close: " + errno_text(errno));
}

void NpyWriter::commit() {
  if (fd_ >= 0) finish();
  if (::rename(temp_.c_str(), path_.c_str()) != 0)
    bad(path_, "cannot rename " + temp_ + " to it: " + errno_text(errno));
  committed_ = true;
}

void sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace vncli
