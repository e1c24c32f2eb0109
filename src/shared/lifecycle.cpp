// src/shared/lifecycle.cpp -- SharedVecNorm::create, attach and unlink: the
// segment's name, creation (sized, reserved, header and key table written,
// the magic stored last), attaching (waiting for a creator still at work, then
// checking identity, options, key table and layout) and removal.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <utility>

#include "../state/schema.hpp"
#include "vecnorm/collective.hpp"
#include "handle.hpp"

namespace vecnorm {

namespace {

using detail::shm::fail_sys;

constexpr std::size_t kMaxName = 255;  // NAME_MAX of a file in /dev/shm, the '/' included
constexpr auto kInitWait = std::chrono::seconds(2);

std::string normalize_name(std::string_view name) {
  std::string n(name);
  if (n.empty() || n[0] != '/') n.insert(n.begin(), '/');
  if (n.size() < 2 || n.size() > kMaxName || n.find('/', 1) != std::string::npos ||
      n.find('\0') != std::string::npos || n == "/." || n == "/..")
    detail::fail(ErrorCode::invalid_argument,
                 "shared segment name: expected '/' followed by 1 to " + std::to_string(kMaxName - 1) +
                     " characters other than '/' and NUL (e.g. '/vecnorm-run42'), got '" + std::string(name) + "'");
  return n;
}

/// Options a shared normalizer accepts: valid, on the CPU (automatic means cpu).
Options check_options(const std::string& name, Options o) {
  o.validate();
  if (o.backend == Backend::cuda)
    detail::fail(ErrorCode::invalid_option,
                 seg_prefix(name) + "option backend: expected cpu or auto (shared statistics live in host shared "
                                    "memory and are stepped by the CPU backend), got cuda");
  if (o.collective != nullptr && o.reduce_batch_dims)
    detail::fail(ErrorCode::invalid_option,
                 seg_prefix(name) + "option collective: expected none (the processes that share a segment already "
                                    "share its statistics; give the collective to a VecNorm), got collective '" +
                     o.collective->name() + "'");
  o.backend = Backend::cpu;
  return o;
}

/// shm_open of segment `name` for `op` ("create", "attach"). The errno the
/// situation of the caller explains (`usual`: EEXIST, ENOENT) is told as `why`.
int open_segment(const std::string& name, int flags, const char* op, int usual, const char* why) {
  const int fd = ::shm_open(name.c_str(), flags, 0600);  // the mode only matters with O_CREAT
  if (fd < 0) {
    const int err = errno;
    if (err == usual) detail::fail(ErrorCode::invalid_argument, seg_prefix(name) + op + ": " + why);
    fail_sys(name, std::string(op) + ": shm_open", err);
  }
  return fd;
}

/// Closes a descriptor on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

/// Unmaps on scope exit unless released.
struct Map {
  void* base = nullptr;
  std::size_t bytes = 0;
  ~Map() {
    if (base != nullptr) ::munmap(base, bytes);
  }
  void* release() { return std::exchange(base, nullptr); }
};

}  // namespace

// ============================================================== create / attach / unlink

SharedVecNorm SharedVecNorm::create(std::string name_in, Options options, KeyTable table) {
  const std::string name = normalize_name(name_in);
  options = check_options(name, options);
  table.validate();
  const std::vector<std::uint8_t> tb = detail::shm::encode_table(table);
  Layout L = detail::shm::layout_of(options, table, tb.size());

  Fd fd{open_segment(name, O_RDWR | O_CREAT | O_EXCL, "create", EEXIST,
                     "already exists (attach to it, or unlink it first if it is stale)")};
  // From here on, a failure removes the half-made segment.
  struct Undo {
    const std::string& name;
    bool armed = true;
    ~Undo() {
      if (armed) ::shm_unlink(name.c_str());
    }
  } undo{name};

  if (::ftruncate(fd.fd, static_cast<off_t>(L.total)) != 0)
    fail_sys(name, "create: ftruncate to " + std::to_string(L.total) + " bytes", errno);
  // Reserve the memory now: on a full /dev/shm this fails here instead of
  // raising SIGBUS at a later write into the mapping.
  if (const int rc = ::posix_fallocate(fd.fd, 0, static_cast<off_t>(L.total)); rc != 0)
    fail_sys(name, "create: reserving " + std::to_string(L.total) + " bytes (is /dev/shm large enough?)", rc);
  Map m;
  m.bytes = L.total;
  m.base = ::mmap(nullptr, L.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd.fd, 0);
  if (m.base == MAP_FAILED) {
    m.base = nullptr;
    fail_sys(name, "create: mmap", errno);
  }

  // The memory is zero (ftruncate): views select slot 0, counts and stats are 0.
  auto* h = static_cast<Header*>(m.base);
  detail::shm::write_header(*h, options, table, L);
  std::memcpy(static_cast<char*>(m.base) + L.table_offset, tb.data(), tb.size());
  detail::shm::init_robust_mutex(h->mutex, name);

  word(h->magic).store(detail::shm::kMagic, std::memory_order_release);  // attachers may look now

  auto impl = Impl::adopt(name, options, std::move(table), std::move(L), m.base, m.bytes);
  m.release();
  undo.armed = false;
  return SharedVecNorm(std::move(impl));
}

SharedVecNorm SharedVecNorm::attach(std::string name_in, Options options, KeyTable table) {
  const std::string name = normalize_name(name_in);
  options = check_options(name, options);
  table.validate();

  Fd fd{open_segment(name, O_RDWR, "attach", ENOENT, "does not exist (create it first with SharedVecNorm::create)")};

  // Map it once it is initialized (its creator stores the magic last).
  Map m;
  const auto deadline = std::chrono::steady_clock::now() + kInitWait;
  std::uint64_t size = 0;
  for (;;) {
    struct stat st {};
    if (::fstat(fd.fd, &st) != 0) fail_sys(name, "attach: fstat", errno);
    size = static_cast<std::uint64_t>(st.st_size);
    if (size >= sizeof(Header)) {
      m.bytes = static_cast<std::size_t>(size);
      m.base = ::mmap(nullptr, m.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.fd, 0);
      if (m.base == MAP_FAILED) {
        m.base = nullptr;
        fail_sys(name, "attach: mmap", errno);
      }
      const std::uint64_t magic = word(static_cast<Header*>(m.base)->magic).load(std::memory_order_acquire);
      if (magic == detail::shm::kMagic) break;
      if (magic != 0) detail::shm::fail_bad_magic(name, magic);
      ::munmap(m.release(), m.bytes);
    }
    if (std::chrono::steady_clock::now() >= deadline)
      detail::fail(ErrorCode::state_mismatch,
                   seg_prefix(name) + "attach: not initialized after " + std::to_string(kInitWait.count()) +
                       " s (size " + std::to_string(size) + " bytes, no magic): its creator died or is stuck in "
                       "create; unlink it and create it again");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  const Header* h = static_cast<const Header*>(m.base);
  const detail::Roles roles{seg_prefix(name) + "attach: ", "the caller's", "the segment's", true};
  // Identity and build first: nothing else can be read before these hold.
  detail::shm::check_identity(*h, size, roles);
  // The options that shape the statistics, then the key table.
  const detail::OptionCodes mine = detail::option_codes(options, table), stored = detail::shm::option_codes_of(*h);
  detail::check_same_options(roles, mine, stored);
  const KeyTable theirs = detail::shm::read_table(*h, m.base, size, name, roles);
  detail::check_same_table(roles, options.reduce_batch_dims, table, theirs);
  detail::check_same_stats_dtype(roles, mine.stats_dtype, stored.stats_dtype);
  // Everything that shapes the layout matches: it must be ours, offset for offset.
  Layout L = detail::shm::layout_of(options, theirs, static_cast<std::size_t>(h->table_bytes));
  detail::shm::check_layout(*h, L, theirs.keys.size(), roles);

  // The layout is from the segment's table: in pooled mode its batch shape may differ (unused).
  auto impl = Impl::adopt(name, options, std::move(table), std::move(L), m.base, m.bytes);
  m.release();
  return SharedVecNorm(std::move(impl));
}

void SharedVecNorm::unlink(std::string_view name_in) {
  const std::string name = normalize_name(name_in);
  if (::shm_unlink(name.c_str()) != 0) {
    const int err = errno;
    if (err == ENOENT) detail::fail(ErrorCode::invalid_argument, seg_prefix(name) + "unlink: does not exist");
    fail_sys(name, "unlink", err);
  }
}

}  // namespace vecnorm
