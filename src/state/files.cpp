// src/state/files.cpp -- checkpoint files on disk: the crash-safe save
// (temporary file, fsync, rename, fsync of the directory) and reading a file
// back; the bytes themselves are checkpoint.cpp's.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <random>
#include <system_error>

#include "rethrow.hpp"
#include "vecnorm/checkpoint.hpp"

namespace vecnorm {

namespace {

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

/// save_state of a VecNorm or a RewardScaler: their export_state, encoded,
/// written atomically.
template <class Holder>
void save_state_of(const Holder& holder, const std::string& path) {
  const std::string prefix = "save_state: '" + path + "': ";
  std::vector<std::uint8_t> bytes;
  try {
    bytes = encode_state(holder.export_state());
  } catch (const Error& e) {
    detail::rethrow_prefixed(e, prefix);
  }
  write_atomic(path, bytes, prefix);
}

/// load_state into a VecNorm or a RewardScaler: decoded, then imported.
template <class Holder>
void load_state_into(Holder& holder, const std::string& path) {
  const std::string prefix = "load_state: '" + path + "': ";
  const std::vector<std::uint8_t> bytes = read_file(path, prefix);
  try {
    const State st = decode_state(bytes);
    holder.import_state(st);
  } catch (const Error& e) {
    detail::rethrow_prefixed(e, prefix);
  }
}

}  // namespace

void save_state(const VecNorm& vn, const std::string& path) { save_state_of(vn, path); }
void save_state(const RewardScaler& rs, const std::string& path) { save_state_of(rs, path); }

State read_state_file(const std::string& path) {
  const std::string prefix = "read_state_file: '" + path + "': ";
  const std::vector<std::uint8_t> bytes = read_file(path, prefix);
  try {
    return decode_state(bytes);
  } catch (const Error& e) {
    detail::rethrow_prefixed(e, prefix);
  }
}

void load_state(VecNorm& vn, const std::string& path) { load_state_into(vn, path); }
void load_state(RewardScaler& rs, const std::string& path) { load_state_into(rs, path); }

}  // namespace vecnorm
