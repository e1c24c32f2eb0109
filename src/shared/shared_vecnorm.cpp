// src/shared/shared_vecnorm.cpp -- SharedVecNorm: statistics in a named POSIX
// shared-memory segment, stepped by several processes (docs/shared.md). What
// the segment holds and where is layout.hpp's; its lock is robust_mutex.hpp's.
//
// The segment holds a header (identity, options, offsets, the published
// sequence number, a robust process-shared mutex), the key table, two
// "views" and, for every key, two slots of loc/var/count/skipped (and skips
// in per-element mode). A view says which slot of
// each key is current; the published sequence number `seq` says which view is
// current (seq & 1). A call that changes statistics:
//
//   1. validates everything through the call pipeline (src/frontend) and,
//      for NonFinite::error, scans the inputs, before taking the mutex;
//   2. holding the mutex, for every key of the call, reads the current slot
//      and writes the other one (the CPU backend supports statistics out !=
//      in), after bringing that slot's skipped counter and skips, which the
//      backend increments in place, up to the current ones (carry_skips);
//   3. writes the other view: the current view with those keys flipped;
//   4. publishes with one aligned 8-byte store, seq + 1 (release).
//
// Nothing a call writes before step 4 is ever read: a process killed before
// the store leaves the previous statistics published, one killed after it the
// new ones. The next locker gets EOWNERDEAD, marks the mutex consistent and
// goes on; there is nothing to repair (a dirty flag per slot tells the next
// writer of a slot whether stale skips may be left in it).
#include "vecnorm/shared.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <thread>
#include <utility>

#include "../backends.hpp"
#include "../errors.hpp"
#include "../frontend/checks.hpp"
#include "../frontend/pipeline.hpp"
#include "../frontend/readout.hpp"
#include "layout.hpp"
#include "robust_mutex.hpp"
#include "vecnorm/core/numerics.hpp"
#include "vecnorm/workspace.hpp"

namespace vecnorm {

namespace {

using detail::shm::fail_sys;
using detail::shm::Header;
using detail::shm::Layout;
using detail::shm::seg_prefix;
using detail::shm::word;

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

// ============================================================== SharedVecNorm::Impl

struct SharedVecNorm::Impl {
  std::string name;
  Options options;
  KeyTable table;
  Layout layout;
  void* base = nullptr;
  std::size_t bytes = 0;
  Header* hdr = nullptr;

  mutable std::mutex local;  // the scratch below and `frozen`; taken before the segment's mutex
  bool frozen = false;
  detail::CallConfig config;  // of every call (work set per call)
  mutable detail::PlanBuffers buffers;
  mutable std::vector<std::uint8_t> out_slot;  // per segment: the slot the call writes
  mutable Workspace workspace;

  ~Impl() {
    if (base != nullptr) ::munmap(base, bytes);
  }

  /// The handle of segment `name`, checked and mapped by `m` (which it takes
  /// over): the end of create and attach.
  static std::unique_ptr<Impl> adopt(std::string name, const Options& options, KeyTable table, Layout layout, Map& m) {
    auto impl = std::make_unique<Impl>();
    impl->name = std::move(name);
    impl->options = options;
    impl->table = std::move(table);
    impl->layout = std::move(layout);
    impl->bytes = m.bytes;
    impl->hdr = static_cast<Header*>(m.base);
    impl->base = m.release();
    impl->config = detail::make_config(impl->options, Backend::cpu, CountLayout::per_key);
    impl->buffers.segments.reserve(impl->table.keys.size());
    impl->buffers.keys.reserve(impl->table.keys.size());
    impl->out_slot.reserve(impl->table.keys.size());
    impl->workspace.reserve(workspace_size(impl->options, impl->table, impl->table.batch_shape.numel()));
    return impl;
  }

  char* at(std::size_t off) const { return static_cast<char*>(base) + off; }
  std::uint8_t* view(std::uint64_t v) const {
    return reinterpret_cast<std::uint8_t*>(at(layout.views_offset + v * table.keys.size()));
  }
  std::int64_t* count_ptr(int k, int slot) const {
    return reinterpret_cast<std::int64_t*>(at(layout.counts_offset)) + 2 * k + slot;
  }
  void* loc(int k, int slot) const { return at(layout.loc[slot][static_cast<std::size_t>(k)]); }
  void* var(int k, int slot) const { return at(layout.var[slot][static_cast<std::size_t>(k)]); }
  std::int64_t* skipped_ptr(int k, int slot) const {
    return reinterpret_cast<std::int64_t*>(at(layout.skipped_offset)) + 2 * k + slot;
  }
  std::uint8_t* dirty_ptr(int k, int slot) const {
    return reinterpret_cast<std::uint8_t*>(at(layout.dirty_offset)) + 2 * k + slot;
  }
  /// Key k's per-element skips in `slot`; null without skips arrays.
  std::int64_t* skips_ptr(int k, int slot) const {
    if (!layout.has_skips) return nullptr;
    return reinterpret_cast<std::int64_t*>(at(layout.skips[slot][static_cast<std::size_t>(k)]));
  }

  /// The segment's lock (robust_mutex.hpp), taken after `local`.
  struct Lock : detail::shm::RobustLock {
    explicit Lock(const Impl& im) : RobustLock(im.hdr->mutex, im.hdr->owner_deaths, im.name) {}
  };

  /// The published sequence number (call with the lock held, or for a glance).
  std::uint64_t seq() const { return word(hdr->seq).load(std::memory_order_acquire); }
  /// The current slot of key k under the current view (lock held).
  int current_slot(int k) const { return view(seq() & 1)[k] & 1; }

  // ---- the call pipeline (src/frontend/pipeline.hpp): plan -> check_finite
  // -> (lock) -> bind (SlotStore) -> run -> publish, driven by update_call and
  // normalize_call below.

  /// The store of a call (lock held): in = the current slot of each key,
  /// out = the other slot (updating calls). Writes nothing shared.
  class SlotStore final : public detail::Store {
   public:
    explicit SlotStore(const Impl& im) : im_(im) {}
    void bind(const detail::CallConfig& cfg, const KeyTable&, std::size_t, detail::Segment& s) override {
      const int k = s.key;
      const int in = im_.current_slot(k);
      const int out = 1 - in;
      const bool update = detail::updates(cfg.work);
      if (!update && *im_.count_ptr(k, in) <= 0)
        detail::fail_zero_count(im_.table.keys[static_cast<std::size_t>(k)].name, *im_.count_ptr(k, in), -1,
                                seg_prefix(im_.name));
      s.loc_in = im_.loc(k, in);
      s.var_in = im_.var(k, in);
      s.count_in = im_.count_ptr(k, in);
      const int bk = update ? out : in;  // where skips / skipped are read (and counted)
      s.skips = im_.skips_ptr(k, bk);
      s.skipped = im_.skipped_ptr(k, bk);
      if (update) {
        s.loc_out = im_.loc(k, out);
        s.var_out = im_.var(k, out);
        s.count_out = im_.count_ptr(k, out);
      }
      im_.out_slot.push_back(static_cast<std::uint8_t>(out));
    }

   private:
    const Impl& im_;
  };

  detail::CallConfig config_for(detail::Work work) const {
    detail::CallConfig cfg = config;
    cfg.work = work;
    return cfg;
  }

  /// Binds the planned segments (lock held).
  void bind(const detail::CallConfig& cfg) const {
    out_slot.clear();
    SlotStore store(*this);
    detail::bind_keys(cfg, table, store, buffers);
  }

  /// Before key k's unpublished slot `out` is written (lock held): its skipped
  /// counter and skips become the published slot `in`'s, because the backend
  /// counts into them in place. The skips array is copied only when the
  /// published counter is non-zero; otherwise the published skips are all 0
  /// and `out`'s are made so too, which costs a memset only when its dirty flag
  /// says a writer may have left non-zero values there (a step killed before it
  /// published, or skips that were since replaced).
  void carry_skips(int k, int in, int out) const {
    const std::int64_t published = *skipped_ptr(k, in);
    *skipped_ptr(k, out) = published;
    if (!layout.has_skips) return;
    const std::size_t bytes = layout.skips_bytes[static_cast<std::size_t>(k)];
    std::uint8_t* dirty = dirty_ptr(k, out);
    if (published == 0 && *dirty != 0) std::memset(skips_ptr(k, out), 0, bytes);
    // From here on the slot may hold non-zero skips (the copy, the backend's
    // increments): the flag is stored before any of them (a process killed in
    // between leaves it set).
    *dirty = 1;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (published != 0) std::memcpy(skips_ptr(k, out), skips_ptr(k, in), bytes);
  }

  /// After a completed dispatch (lock held): a slot whose counter is still 0
  /// had all-zero skips and none was added, so it is clean again.
  void settle_skips(int k, int out) const {
    if (!layout.has_skips || *skipped_ptr(k, out) != 0) return;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    *dirty_ptr(k, out) = 0;
  }

  /// Runs the planned and bound call (lock held); a call that writes is published.
  void run(const detail::CallConfig& cfg) const {
    const std::vector<detail::Segment>& segments = buffers.segments;
    if (segments.empty()) return;  // nothing to compute, nothing to publish
    const detail::Plan p = detail::make_plan(cfg, segments);
    if (!detail::updates(cfg.work)) {
      detail::dispatch(Backend::cpu, p, workspace.scratch(), Stream{});
      return;
    }
    const std::uint64_t s = seq();
    const std::uint8_t* cur = view(s & 1);
    std::uint8_t* next = view((s + 1) & 1);
    std::memcpy(next, cur, table.keys.size());
    for (std::size_t i = 0; i < segments.size(); ++i) {
      next[segments[i].key] = out_slot[i];
      carry_skips(segments[i].key, 1 - out_slot[i], out_slot[i]);
    }
    detail::dispatch(Backend::cpu, p, workspace.scratch(), Stream{});
    for (std::size_t i = 0; i < segments.size(); ++i) settle_skips(segments[i].key, out_slot[i]);
    publish(s);
  }

  /// A call that updates (local mutex held): validated and, for
  /// NonFinite::error, scanned before the segment's lock (nothing shared is
  /// read or written); then locked, bound, run and published.
  void update_call(std::span<const KeyData> batch, detail::Work work) const {
    const detail::CallConfig cfg = config_for(work);
    detail::plan_keys(cfg, table, batch, buffers);
    detail::check_finite(cfg, table, buffers.segments, workspace.scratch(), Stream{});
    Lock lock(*this);
    bind(cfg);
    run(cfg);
  }

  /// A call that only reads the statistics (local mutex held).
  void normalize_call(std::span<const KeyData> batch, detail::Work work) const {
    const detail::CallConfig cfg = config_for(work);
    Lock lock(*this);
    detail::plan_keys(cfg, table, batch, buffers);
    bind(cfg);
    run(cfg);
  }

  /// The one store that makes the written view and slots current.
  void publish(std::uint64_t s) const { word(hdr->seq).store(s + 1, std::memory_order_release); }

  /// A snapshot of the published statistics (lock held).
  State snapshot() const {
    State st;
    st.options = options;
    st.table = table;
    st.keys.resize(table.keys.size());
    for (std::size_t k = 0; k < st.keys.size(); ++k) {
      const int ki = static_cast<int>(k);
      const int slot = current_slot(ki);
      KeyState& ks = st.keys[k];
      ks.stats_shape = layout.stats_shape[k];
      const auto* l = reinterpret_cast<const std::uint8_t*>(loc(ki, slot));
      const auto* v = reinterpret_cast<const std::uint8_t*>(var(ki, slot));
      ks.loc.assign(l, l + layout.stats_bytes[k]);
      ks.var.assign(v, v + layout.stats_bytes[k]);
      ks.count = *count_ptr(ki, slot);
      ks.skipped = *skipped_ptr(ki, slot);
      if (layout.has_skips && ks.skipped != 0) {
        const std::int64_t* sk = skips_ptr(ki, slot);
        ks.skips.assign(sk, sk + layout.skips_bytes[k] / sizeof(std::int64_t));
      }
    }
    return st;
  }

  /// The published statistics of key k as HostStats (lock held: the
  /// pointers are into the segment).
  detail::HostStats host_stats(int k) const {
    const int slot = current_slot(k);
    const bool skips = layout.has_skips && *skipped_ptr(k, slot) != 0;
    return {loc(k, slot), var(k, slot), *count_ptr(k, slot), skips ? skips_ptr(k, slot) : nullptr,
            layout.stats_shape[static_cast<std::size_t>(k)].numel()};
  }

  /// loc (of_scale false) or scale of key `key`, from the published statistics.
  std::vector<double> readout(std::string_view key, bool of_scale) const {
    const int k = detail::find_key(table, key);
    std::lock_guard guard(local);
    Lock lock(*this);
    return detail::key_maps(options, table.keys[static_cast<std::size_t>(k)], host_stats(k), core::MapKind::denormalize)
        .widened(of_scale);
  }
};

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
  detail::shm::write_header(*h, options, L, table.keys.size());
  std::memcpy(static_cast<char*>(m.base) + L.table_offset, tb.data(), tb.size());
  detail::shm::init_robust_mutex(h->mutex, name);

  word(h->magic).store(detail::shm::kMagic, std::memory_order_release);  // attachers may look now

  auto impl = Impl::adopt(name, options, std::move(table), std::move(L), m);
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
  detail::check_same_options(roles, detail::option_codes(options), detail::shm::option_codes_of(*h));
  const KeyTable theirs = detail::shm::read_table(*h, m.base, size, name, roles);
  detail::check_same_table(roles, options.reduce_batch_dims, table, theirs);
  // Everything that shapes the layout matches: it must be ours, offset for offset.
  Layout L = detail::shm::layout_of(options, theirs, static_cast<std::size_t>(h->table_bytes));
  detail::shm::check_layout(*h, L, theirs.keys.size(), roles);

  // The layout is from the segment's table: in pooled mode its batch shape may differ (unused).
  return SharedVecNorm(Impl::adopt(name, options, std::move(table), std::move(L), m));
}

void SharedVecNorm::unlink(std::string_view name_in) {
  const std::string name = normalize_name(name_in);
  if (::shm_unlink(name.c_str()) != 0) {
    const int err = errno;
    if (err == ENOENT) detail::fail(ErrorCode::invalid_argument, seg_prefix(name) + "unlink: does not exist");
    fail_sys(name, "unlink", err);
  }
}

// ============================================================== members

SharedVecNorm::SharedVecNorm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SharedVecNorm::~SharedVecNorm() = default;
SharedVecNorm::SharedVecNorm(SharedVecNorm&&) noexcept = default;
SharedVecNorm& SharedVecNorm::operator=(SharedVecNorm&&) noexcept = default;

void SharedVecNorm::step(std::span<const KeyData> batch) {
  std::lock_guard guard(impl_->local);
  if (impl_->frozen) {
    impl_->normalize_call(batch, detail::Work::normalize);
    return;
  }
  impl_->update_call(batch, detail::Work::update_and_normalize);
}

void SharedVecNorm::update(std::span<const KeyData> batch) {
  std::lock_guard guard(impl_->local);
  if (impl_->frozen) {
    detail::plan_keys(impl_->config_for(detail::Work::update), impl_->table, batch, impl_->buffers);  // validated only
    return;
  }
  impl_->update_call(batch, detail::Work::update);
}

void SharedVecNorm::normalize(std::span<const KeyData> batch) const {
  std::lock_guard guard(impl_->local);
  impl_->normalize_call(batch, detail::Work::normalize);
}

void SharedVecNorm::denormalize(std::span<const KeyData> batch) const {
  std::lock_guard guard(impl_->local);
  impl_->normalize_call(batch, detail::Work::denormalize);
}

void SharedVecNorm::freeze() {
  std::lock_guard guard(impl_->local);
  impl_->frozen = true;
}
void SharedVecNorm::unfreeze() {
  std::lock_guard guard(impl_->local);
  impl_->frozen = false;
}
bool SharedVecNorm::is_frozen() const {
  std::lock_guard guard(impl_->local);
  return impl_->frozen;
}

std::vector<double> SharedVecNorm::loc(std::string_view key) const { return impl_->readout(key, false); }

std::vector<double> SharedVecNorm::scale(std::string_view key) const { return impl_->readout(key, true); }

Shape SharedVecNorm::stats_shape(std::string_view key) const {
  return impl_->layout.stats_shape[static_cast<std::size_t>(detail::find_key(impl_->table, key))];
}

std::int64_t SharedVecNorm::count(std::string_view key) const {
  const int k = detail::find_key(impl_->table, key);
  std::lock_guard guard(impl_->local);
  Impl::Lock lock(*impl_);
  return *impl_->count_ptr(k, impl_->current_slot(k));
}

std::vector<std::int64_t> SharedVecNorm::element_counts(std::string_view key) const {
  const int k = detail::find_key(impl_->table, key);
  const Impl& im = *impl_;
  std::lock_guard guard(im.local);
  Impl::Lock lock(im);
  const int slot = im.current_slot(k);
  const std::int64_t count = *im.count_ptr(k, slot);
  if (im.options.reduce_batch_dims) return {count};
  std::vector<std::int64_t> out(static_cast<std::size_t>(im.layout.stats_shape[static_cast<std::size_t>(k)].numel()),
                                count);
  if (im.layout.has_skips && *im.skipped_ptr(k, slot) != 0) {
    const std::int64_t* sk = im.skips_ptr(k, slot);
    for (std::size_t i = 0; i < out.size(); ++i) out[i] -= sk[i];
  }
  return out;
}

std::int64_t SharedVecNorm::skipped(std::string_view key) const {
  const int k = detail::find_key(impl_->table, key);
  std::lock_guard guard(impl_->local);
  Impl::Lock lock(*impl_);
  return *impl_->skipped_ptr(k, impl_->current_slot(k));
}

AffineNormalizer SharedVecNorm::to_affine() const {
  const Impl& im = *impl_;
  std::lock_guard guard(im.local);
  Impl::Lock lock(im);
  std::vector<detail::HostStats> stats(im.table.keys.size());
  for (std::size_t k = 0; k < stats.size(); ++k) stats[k] = im.host_stats(static_cast<int>(k));
  return detail::make_affine(im.options, Backend::cpu, im.table, im.layout.stats_shape, stats);
}

State SharedVecNorm::export_state() const {
  std::lock_guard guard(impl_->local);
  Impl::Lock lock(*impl_);
  return impl_->snapshot();
}

void SharedVecNorm::import_state(const State& state) {
  state.validate();
  Impl& im = *impl_;
  // Its options are the segment's; its key table is the one this handle was
  // created or attached with, the caller's (pooled: the batch shape may differ).
  const std::string prefix = seg_prefix(im.name) + "import_state: ";
  detail::check_same_options({prefix, "the segment's", "the state's"}, detail::option_codes(im.options),
                             detail::option_codes(state.options));
  detail::check_same_table({prefix, "the caller's", "the state's"}, im.options.reduce_batch_dims, im.table,
                           state.table);
  for (std::size_t k = 0; k < state.keys.size(); ++k) {
    const KeyState& ks = state.keys[k];
    if (ks.skips.empty()) continue;
    const std::string key = detail::key_prefix(state.table.keys[k].name);
    if (!im.layout.has_skips)
      detail::fail(ErrorCode::state_mismatch, prefix + key + "skips: expected none (pooled statistics), got " +
                                                  std::to_string(ks.skips.size()) + " values (the state's)");
    if (ks.skips.size() * sizeof(std::int64_t) != im.layout.skips_bytes[k])
      detail::fail(ErrorCode::state_mismatch, prefix + key + "skips: expected 0 or " +
                                                  std::to_string(im.layout.skips_bytes[k] / sizeof(std::int64_t)) +
                                                  " values, got " + std::to_string(ks.skips.size()));
  }

  std::lock_guard guard(im.local);
  Impl::Lock lock(im);
  const std::uint64_t s = im.seq();
  const std::uint8_t* cur = im.view(s & 1);
  std::uint8_t* next = im.view((s + 1) & 1);
  for (std::size_t k = 0; k < state.keys.size(); ++k) {
    const int ki = static_cast<int>(k);
    const int out = 1 - (cur[k] & 1);
    const KeyState& ks = state.keys[k];
    std::memcpy(im.loc(ki, out), ks.loc.data(), ks.loc.size());
    std::memcpy(im.var(ki, out), ks.var.data(), ks.var.size());
    *im.count_ptr(ki, out) = ks.count;
    *im.skipped_ptr(ki, out) = ks.skipped;
    if (im.layout.has_skips) {
      std::uint8_t* dirty = im.dirty_ptr(ki, out);
      if (!ks.skips.empty()) {
        *dirty = 1;  // before the values (see carry_skips)
        std::atomic_thread_fence(std::memory_order_seq_cst);
        std::memcpy(im.skips_ptr(ki, out), ks.skips.data(), ks.skips.size() * sizeof(std::int64_t));
      } else if (*dirty != 0) {
        std::memset(im.skips_ptr(ki, out), 0, im.layout.skips_bytes[k]);
        std::atomic_thread_fence(std::memory_order_seq_cst);
        *dirty = 0;
      }
    }
    next[k] = static_cast<std::uint8_t>(out);
  }
  im.publish(s);
}

std::uint64_t SharedVecNorm::generation() const noexcept { return impl_->seq(); }

std::uint64_t SharedVecNorm::recovered_owner_deaths() const noexcept {
  return word(impl_->hdr->owner_deaths).load(std::memory_order_relaxed);
}

const std::string& SharedVecNorm::name() const noexcept { return impl_->name; }
const Options& SharedVecNorm::options() const noexcept { return impl_->options; }
const KeyTable& SharedVecNorm::key_table() const noexcept { return impl_->table; }

}  // namespace vecnorm
