// src/shared.cpp -- SharedVecNorm: statistics in a named POSIX shared-memory
// segment, stepped by several processes (docs/shared.md).
//
// The segment holds a header (identity, options, offsets, the published
// sequence number, a robust process-shared mutex), the key table, two
// "views" and, for every key, two slots of loc/var/count/skipped (and skips
// in per-element mode). A view says which slot of
// each key is current; the published sequence number `seq` says which view is
// current (seq & 1). A call that changes statistics:
//
//   1. validates everything into a Plan (the same helpers VecNorm uses) and,
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
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>

#include "backends.hpp"
#include "errors.hpp"
#include "frontend/checks.hpp"
#include "frontend/pipeline.hpp"
#include "frontend/readout.hpp"
#include "vecnorm/core/numerics.hpp"
#include "vecnorm/workspace.hpp"

namespace vecnorm {

namespace {

// ---------------------------------------------------------------- the segment header

/// "VNRMSHRD" read as a native 64-bit word (the segment is never moved between machines).
constexpr std::uint64_t kMagic = [] {
  const char m[8] = {'V', 'N', 'R', 'M', 'S', 'H', 'R', 'D'};
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(static_cast<unsigned char>(m[i])) << (8 * i);
  return v;
}();
constexpr std::size_t kAlign = 64;
constexpr std::size_t kMaxName = 255;  // NAME_MAX of a file in /dev/shm, the '/' included
constexpr auto kInitWait = std::chrono::seconds(2);

/// Offset 0 of the segment. Native layout: the segment is shared by processes
/// of one machine and one build (header_bytes and mutex_bytes catch others).
struct Header {
  std::uint64_t magic;              // 0: kMagic, stored last by the creator (release)
  std::uint32_t layout_version;     // 8
  std::uint32_t header_bytes;       // 12: sizeof(Header)
  std::uint64_t total_bytes;        // 16: size of the segment
  std::uint32_t mutex_bytes;        // 24: sizeof(pthread_mutex_t)
  std::uint32_t num_keys;           // 28
  std::uint32_t estimator;          // 32: 0 torchrl, 1 stable
  std::uint32_t reduce_batch_dims;  // 36: 0 or 1
  std::uint32_t stats_dtype;        // 40: 0 float32, 1 float64
  std::uint32_t nonfinite;          // 44: 0 propagate, 1 skip, 2 error
  double decay;                     // 48
  double eps;                       // 56
  std::uint64_t table_offset;       // 64: the key table (encode_table)
  std::uint64_t table_bytes;        // 72
  std::uint64_t views_offset;       // 80: 2 views of num_keys bytes (slot of each key)
  std::uint64_t counts_offset;      // 88: int64 count[num_keys][2]
  std::uint64_t stats_offset;       // 96: first loc slot
  std::uint64_t seq;                // 104: published sequence number (atomic); view = seq & 1
  std::uint64_t owner_deaths;       // 112: recoveries from a dead lock owner (atomic)
  std::uint64_t skipped_offset;     // 120: int64 skipped[num_keys][2] (health counters)
  std::uint64_t dirty_offset;       // 128: uint8 dirty[num_keys][2] (skips may be non-zero)
  std::uint64_t skips_offset;       // 136: first skips array (= total_bytes when there are none)
  pthread_mutex_t mutex;            // 144: PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST
};
static_assert(std::is_standard_layout_v<Header> && std::is_trivially_copyable_v<Header>);
static_assert(offsetof(Header, seq) == 104 && offsetof(Header, skips_offset) == 136 &&
              offsetof(Header, mutex) == 144);
static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free,
              "publication needs a lock-free (address-free) 64-bit atomic");
static_assert(offsetof(Header, seq) % std::atomic_ref<std::uint64_t>::required_alignment == 0);

std::atomic_ref<std::uint64_t> word(std::uint64_t& w) { return std::atomic_ref<std::uint64_t>(w); }

std::size_t round_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// ---------------------------------------------------------------- messages

std::string seg_prefix(const std::string& name) { return "shared segment '" + name + "': "; }

[[noreturn]] void fail_sys(const std::string& name, const std::string& what, int err) {
  detail::fail(ErrorCode::invalid_argument, seg_prefix(name) + what + ": " + std::strerror(err));
}

/// The shortest decimal that reads back as exactly `v`.
std::string num(double v) {
  char b[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(b, sizeof b, "%.*g", precision, v);
    if (std::strtod(b, nullptr) == v) break;
  }
  return b;
}

std::string hex64(std::uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%016llX", static_cast<unsigned long long>(v));
  return b;
}

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

// ---------------------------------------------------------------- the key table in the segment
//
// u32 batch ndim, i64 dims; u32 number of keys; per key: u32 name length, name
// bytes, u32 dtype (the DType value), u32 feature ndim, i64 dims. Native endian.

void put32(std::vector<std::uint8_t>& b, std::uint32_t v) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
  b.insert(b.end(), p, p + 4);
}
void put64(std::vector<std::uint8_t>& b, std::int64_t v) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
  b.insert(b.end(), p, p + 8);
}
void put_shape(std::vector<std::uint8_t>& b, const Shape& s) {
  put32(b, static_cast<std::uint32_t>(s.ndim()));
  for (std::int64_t d : s) put64(b, d);
}

std::vector<std::uint8_t> encode_table(const KeyTable& t) {
  std::vector<std::uint8_t> b;
  put_shape(b, t.batch_shape);
  put32(b, static_cast<std::uint32_t>(t.keys.size()));
  for (const KeySpec& k : t.keys) {
    put32(b, static_cast<std::uint32_t>(k.name.size()));
    b.insert(b.end(), k.name.begin(), k.name.end());
    put32(b, static_cast<std::uint32_t>(k.dtype));
    put_shape(b, k.feature_shape);
  }
  return b;
}

/// Bounds-checked reader of a table someone else wrote (it may be garbage).
class TableReader {
 public:
  TableReader(const std::uint8_t* p, std::size_t n, const std::string& name) : p_(p), n_(n), name_(name) {}
  std::uint32_t u32(const char* what) {
    std::uint32_t v;
    std::memcpy(&v, take(4, what), 4);
    return v;
  }
  std::int64_t i64(const char* what) {
    std::int64_t v;
    std::memcpy(&v, take(8, what), 8);
    return v;
  }
  Shape shape(const char* what) {
    const std::uint32_t nd = u32(what);
    if (nd > static_cast<std::uint32_t>(Shape::kMaxDims)) bad(std::string(what) + " ndim " + std::to_string(nd));
    std::int64_t d[Shape::kMaxDims] = {};
    for (std::uint32_t i = 0; i < nd; ++i) {
      d[i] = i64(what);
      if (d[i] < 0) bad(std::string(what) + " dim " + std::to_string(d[i]));
    }
    return Shape::from(d, static_cast<int>(nd));
  }
  std::string str(std::size_t n, const char* what) {
    const auto* s = take(n, what);
    return std::string(reinterpret_cast<const char*>(s), n);
  }
  std::size_t left() const { return n_ - pos_; }
  [[noreturn]] void bad(const std::string& what) const {
    detail::fail(ErrorCode::state_mismatch, seg_prefix(name_) + "corrupt key table in the segment: " + what);
  }

 private:
  const std::uint8_t* take(std::size_t n, const char* what) {
    if (n_ - pos_ < n) bad(std::string("truncated at ") + what);
    const std::uint8_t* r = p_ + pos_;
    pos_ += n;
    return r;
  }
  const std::uint8_t* p_;
  std::size_t n_, pos_ = 0;
  const std::string& name_;
};

KeyTable decode_table(const std::uint8_t* p, std::size_t n, const std::string& name) {
  TableReader r(p, n, name);
  KeyTable t;
  t.batch_shape = r.shape("batch shape");
  const std::uint32_t nk = r.u32("number of keys");
  if (nk > r.left() / 12) r.bad("number of keys " + std::to_string(nk));  // 12: the smallest key record
  for (std::uint32_t k = 0; k < nk; ++k) {
    KeySpec s;
    const std::uint32_t len = r.u32("name length");
    if (len > r.left()) r.bad("name length " + std::to_string(len));
    s.name = r.str(len, "name");
    const std::uint32_t dt = r.u32("dtype");
    if (dt > static_cast<std::uint32_t>(DType::uint8)) r.bad("dtype " + std::to_string(dt));
    s.dtype = static_cast<DType>(dt);
    s.feature_shape = r.shape("feature shape");
    t.keys.push_back(std::move(s));
  }
  if (r.left() != 0) r.bad(std::to_string(r.left()) + " bytes after the last key");
  return t;
}

// ---------------------------------------------------------------- layout

struct Layout {
  std::vector<Shape> stats_shape;     // per key
  std::vector<std::size_t> stats_bytes;
  std::vector<std::size_t> loc[2], var[2];  // per slot, per key: byte offsets
  /// Per-element skips arrays (per-element statistics): per slot, per key,
  /// byte offsets of numel int64.
  bool has_skips = false;
  std::vector<std::size_t> skips_bytes;     // per key (0 without arrays)
  std::vector<std::size_t> skips[2];
  std::size_t table_offset = 0, table_bytes = 0, views_offset = 0, counts_offset = 0, skipped_offset = 0,
              dirty_offset = 0, stats_offset = 0, skips_offset = 0, total = 0;
};

Layout layout_of(const Options& o, const KeyTable& t, std::size_t table_bytes) {
  Layout L;
  const std::size_t nk = t.keys.size();
  L.table_offset = round_up(sizeof(Header));
  L.table_bytes = table_bytes;
  L.views_offset = round_up(L.table_offset + table_bytes);
  L.counts_offset = round_up(L.views_offset + 2 * nk);
  L.skipped_offset = round_up(L.counts_offset + 2 * nk * sizeof(std::int64_t));
  L.dirty_offset = round_up(L.skipped_offset + 2 * nk * sizeof(std::int64_t));
  L.stats_offset = round_up(L.dirty_offset + 2 * nk);
  L.has_skips = !o.reduce_batch_dims;  // as VecNorm: whatever nonfinite (a state with skips may be imported)
  std::size_t at = L.stats_offset;
  for (int s = 0; s < 2; ++s) {
    L.loc[s].resize(nk);
    L.var[s].resize(nk);
    L.skips[s].assign(nk, 0);
  }
  for (std::size_t k = 0; k < nk; ++k) {
    const Shape& f = t.keys[k].feature_shape;
    L.stats_shape.push_back(o.reduce_batch_dims ? f : t.batch_shape.concat(f));
    const std::size_t b = static_cast<std::size_t>(L.stats_shape.back().numel()) * dtype_size(o.stats_dtype);
    L.stats_bytes.push_back(b);
    for (int s = 0; s < 2; ++s) {
      L.loc[s][k] = at;
      at += round_up(b);
      L.var[s][k] = at;
      at += round_up(b);
    }
  }
  L.skips_offset = at;
  L.skips_bytes.assign(nk, 0);
  if (L.has_skips) {
    for (std::size_t k = 0; k < nk; ++k) {
      L.skips_bytes[k] = static_cast<std::size_t>(L.stats_shape[k].numel()) * sizeof(std::int64_t);
      for (int s = 0; s < 2; ++s) {
        L.skips[s][k] = at;
        at += round_up(L.skips_bytes[k]);
      }
    }
  }
  L.total = at;
  return L;
}

std::uint32_t estimator_code(Estimator e) { return e == Estimator::stable ? 1u : 0u; }
std::uint32_t stats_code(DType d) { return d == DType::float64 ? 1u : 0u; }
std::uint32_t nonfinite_code(NonFinite n) {
  return n == NonFinite::propagate ? 0u : n == NonFinite::skip ? 1u : 2u;
}
std::string nonfinite_name(std::uint32_t code) {
  return code == 0 ? "propagate" : code == 1 ? "skip" : code == 2 ? "error" : "code " + std::to_string(code);
}

/// Compares the caller's key table with the segment's, as VecNorm::import_state does.
void compare_tables(const std::string& name, const char* who, bool pooled, const KeyTable& mine,
                    const KeyTable& theirs, const char* their_role) {
  auto mismatch = [&](const std::string& what, const std::string& expected, const std::string& got) {
    detail::fail(ErrorCode::state_mismatch, seg_prefix(name) + who + ": " + what + ": expected " + expected +
                                                " (the caller's), got " + got + " (" + their_role + ")");
  };
  if (mine.keys.size() != theirs.keys.size())
    mismatch("number of keys", std::to_string(mine.keys.size()), std::to_string(theirs.keys.size()));
  if (!pooled && mine.batch_shape != theirs.batch_shape)
    mismatch("batch shape", mine.batch_shape.str(), theirs.batch_shape.str());
  for (std::size_t k = 0; k < mine.keys.size(); ++k) {
    const KeySpec &a = mine.keys[k], &b = theirs.keys[k];
    if (a.name != b.name) mismatch("key " + std::to_string(k) + " name", "'" + a.name + "'", "'" + b.name + "'");
    if (a.feature_shape != b.feature_shape)
      mismatch(detail::key_prefix(a.name) + "feature shape", a.feature_shape.str(), b.feature_shape.str());
    if (a.dtype != b.dtype) mismatch(detail::key_prefix(a.name) + "dtype", to_string(a.dtype), to_string(b.dtype));
  }
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

  // ---- the segment's lock (RAII; recovers from a dead owner)

  class Lock {
   public:
    explicit Lock(const Impl& im) : im_(im) {
      int rc = pthread_mutex_lock(&im_.hdr->mutex);
      if (rc == EOWNERDEAD) {
        // A process died holding the lock. Everything it may have written is in
        // the unpublished view and slots, which the next writer overwrites
        // whole: the published statistics are intact, nothing to repair.
        word(im_.hdr->owner_deaths).fetch_add(1, std::memory_order_relaxed);
        rc = pthread_mutex_consistent(&im_.hdr->mutex);
        if (rc != 0) {
          pthread_mutex_unlock(&im_.hdr->mutex);
          fail_sys(im_.name, "lock: pthread_mutex_consistent after a dead owner", rc);
        }
      } else if (rc == ENOTRECOVERABLE) {
        detail::fail(ErrorCode::invalid_argument,
                     seg_prefix(im_.name) +
                         "lock: not recoverable (a process released it after its owner died without marking it "
                         "consistent; not something vecnorm does). The published statistics are intact but the "
                         "segment cannot be locked any more: unlink it and create it again");
      } else if (rc != 0) {
        fail_sys(im_.name, "lock", rc);
      }
    }
    ~Lock() { pthread_mutex_unlock(&im_.hdr->mutex); }
    Lock(const Lock&) = delete;
    Lock& operator=(const Lock&) = delete;

   private:
    const Impl& im_;
  };

  /// The call configuration and buffers (after options and table are set).
  void init_call_state() {
    config = detail::make_config(options, Backend::cpu, CountLayout::per_key);
    buffers.segments.reserve(table.keys.size());
    buffers.keys.reserve(table.keys.size());
    out_slot.reserve(table.keys.size());
    workspace.reserve(workspace_size(options, table, table.batch_shape.numel()));
  }

  /// The published sequence number (call with the lock held, or for a glance).
  std::uint64_t seq() const { return word(hdr->seq).load(std::memory_order_acquire); }
  /// The current slot of key k under the current view (lock held).
  int current_slot(int k) const { return view(seq() & 1)[k] & 1; }

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
  const std::vector<std::uint8_t> tb = encode_table(table);
  Layout L = layout_of(options, table, tb.size());

  Fd fd;
  fd.fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd.fd < 0) {
    const int err = errno;
    if (err == EEXIST)
      detail::fail(ErrorCode::invalid_argument,
                   seg_prefix(name) + "create: already exists (attach to it, or unlink it first if it is stale)");
    fail_sys(name, "create: shm_open", err);
  }
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
  h->layout_version = kSharedLayoutVersion;
  h->header_bytes = sizeof(Header);
  h->total_bytes = L.total;
  h->mutex_bytes = sizeof(pthread_mutex_t);
  h->num_keys = static_cast<std::uint32_t>(table.keys.size());
  h->estimator = estimator_code(options.estimator);
  h->reduce_batch_dims = options.reduce_batch_dims ? 1u : 0u;
  h->stats_dtype = stats_code(options.stats_dtype);
  h->nonfinite = nonfinite_code(options.nonfinite);
  h->decay = options.decay;
  h->eps = options.eps;
  h->table_offset = L.table_offset;
  h->table_bytes = L.table_bytes;
  h->views_offset = L.views_offset;
  h->counts_offset = L.counts_offset;
  h->stats_offset = L.stats_offset;
  h->skipped_offset = L.skipped_offset;
  h->dirty_offset = L.dirty_offset;
  h->skips_offset = L.skips_offset;
  std::memcpy(static_cast<char*>(m.base) + L.table_offset, tb.data(), tb.size());

  pthread_mutexattr_t attr;
  int rc = pthread_mutexattr_init(&attr);
  if (rc == 0) rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  if (rc == 0) rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  if (rc == 0) rc = pthread_mutex_init(&h->mutex, &attr);
  pthread_mutexattr_destroy(&attr);
  if (rc != 0) fail_sys(name, "create: a robust process-shared mutex", rc);

  word(h->magic).store(kMagic, std::memory_order_release);  // attachers may look now

  auto impl = std::make_unique<Impl>();
  impl->name = name;
  impl->options = options;
  impl->table = std::move(table);
  impl->layout = std::move(L);
  impl->bytes = m.bytes;
  impl->base = m.release();
  impl->hdr = h;
  impl->init_call_state();
  undo.armed = false;
  return SharedVecNorm(std::move(impl));
}

SharedVecNorm SharedVecNorm::attach(std::string name_in, Options options, KeyTable table) {
  const std::string name = normalize_name(name_in);
  options = check_options(name, options);
  table.validate();

  Fd fd;
  fd.fd = ::shm_open(name.c_str(), O_RDWR, 0);
  if (fd.fd < 0) {
    const int err = errno;
    if (err == ENOENT)
      detail::fail(ErrorCode::invalid_argument,
                   seg_prefix(name) + "attach: does not exist (create it first with SharedVecNorm::create)");
    fail_sys(name, "attach: shm_open", err);
  }

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
      if (magic == kMagic) break;
      if (magic != 0) {
        char got[9] = {};
        std::memcpy(got, &magic, 8);
        for (char& c : got)
          if (c != 0 && (c < 0x20 || c > 0x7E)) c = '?';
        detail::fail(ErrorCode::state_mismatch, seg_prefix(name) + "attach: bad magic: expected 'VNRMSHRD' (" +
                                                    hex64(kMagic) + "), got '" + got + "' (" + hex64(magic) +
                                                    "): not a vecnorm shared segment");
      }
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
  auto mismatch = [&](const std::string& what, const std::string& expected, const std::string& got) {
    detail::fail(ErrorCode::state_mismatch, seg_prefix(name) + "attach: " + what + ": expected " + expected +
                                                " (the caller's), got " + got + " (the segment's)");
  };
  // Identity and build first: nothing else can be read before these hold.
  if (h->layout_version != kSharedLayoutVersion)
    mismatch("layout version", std::to_string(kSharedLayoutVersion) + " (this build)",
             std::to_string(h->layout_version));
  if (h->header_bytes != sizeof(Header))
    mismatch("header size (another build?)", std::to_string(sizeof(Header)), std::to_string(h->header_bytes));
  if (h->mutex_bytes != sizeof(pthread_mutex_t))
    mismatch("mutex size (another build or C library?)", std::to_string(sizeof(pthread_mutex_t)),
             std::to_string(h->mutex_bytes));
  if (h->total_bytes != size)
    mismatch("size of the segment (truncated?)", std::to_string(h->total_bytes) + " bytes (in its header)",
             std::to_string(size) + " bytes");
  // The options that shape the statistics.
  if (h->estimator != estimator_code(options.estimator))
    mismatch("estimator", to_string(options.estimator),
             h->estimator == 1 ? "stable" : h->estimator == 0 ? "torchrl" : "code " + std::to_string(h->estimator));
  if (h->reduce_batch_dims != (options.reduce_batch_dims ? 1u : 0u))
    mismatch("reduce_batch_dims", options.reduce_batch_dims ? "true" : "false",
             h->reduce_batch_dims == 1 ? "true" : h->reduce_batch_dims == 0 ? "false" : std::to_string(h->reduce_batch_dims));
  if (h->stats_dtype != stats_code(options.stats_dtype))
    mismatch("stats_dtype", to_string(options.stats_dtype),
             h->stats_dtype == 1 ? "float64" : h->stats_dtype == 0 ? "float32" : "code " + std::to_string(h->stats_dtype));
  if (!(h->decay == options.decay)) mismatch("decay", num(options.decay), num(h->decay));
  if (!(h->eps == options.eps)) mismatch("eps", num(options.eps), num(h->eps));
  if (h->nonfinite != nonfinite_code(options.nonfinite))
    mismatch("nonfinite", to_string(options.nonfinite), nonfinite_name(h->nonfinite));
  // The key table.
  if (h->table_offset > size || h->table_bytes > size - h->table_offset)
    mismatch("key table bounds", "inside the segment's " + std::to_string(size) + " bytes",
             "offset " + std::to_string(h->table_offset) + " + " + std::to_string(h->table_bytes) + " bytes");
  const KeyTable theirs = decode_table(static_cast<const std::uint8_t*>(m.base) + h->table_offset,
                                       static_cast<std::size_t>(h->table_bytes), name);
  compare_tables(name, "attach", options.reduce_batch_dims, table, theirs, "the segment's");
  // Everything that shapes the layout matches: it must be ours, offset for offset.
  const Layout L = layout_of(options, theirs, static_cast<std::size_t>(h->table_bytes));
  if (h->num_keys != theirs.keys.size() || L.table_offset != h->table_offset || L.views_offset != h->views_offset ||
      L.counts_offset != h->counts_offset || L.skipped_offset != h->skipped_offset ||
      L.dirty_offset != h->dirty_offset || L.stats_offset != h->stats_offset || L.skips_offset != h->skips_offset ||
      L.total != h->total_bytes)
    mismatch("layout", "views/counts/skipped/dirty/stats/skips at " + std::to_string(L.views_offset) + "/" +
                           std::to_string(L.counts_offset) + "/" + std::to_string(L.skipped_offset) + "/" +
                           std::to_string(L.dirty_offset) + "/" + std::to_string(L.stats_offset) + "/" +
                           std::to_string(L.skips_offset) + ", " + std::to_string(L.total) + " bytes",
             std::to_string(h->views_offset) + "/" + std::to_string(h->counts_offset) + "/" +
                 std::to_string(h->skipped_offset) + "/" + std::to_string(h->dirty_offset) + "/" +
                 std::to_string(h->stats_offset) + "/" + std::to_string(h->skips_offset) + ", " +
                 std::to_string(h->total_bytes) + " bytes");

  auto impl = std::make_unique<Impl>();
  impl->name = name;
  impl->options = options;
  impl->table = std::move(table);
  impl->layout = L;  // from the segment's table: in pooled mode its batch shape may differ (unused)
  impl->bytes = m.bytes;
  impl->hdr = static_cast<Header*>(m.base);
  impl->base = m.release();
  impl->init_call_state();
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
  auto mismatch = [&](const std::string& what, const std::string& expected, const std::string& got) {
    detail::fail(ErrorCode::state_mismatch, seg_prefix(im.name) + "import_state: " + what + ": expected " + expected +
                                                " (the segment's), got " + got + " (the state's)");
  };
  if (im.options.estimator != state.options.estimator)
    mismatch("estimator", to_string(im.options.estimator), to_string(state.options.estimator));
  if (im.options.reduce_batch_dims != state.options.reduce_batch_dims)
    mismatch("reduce_batch_dims", im.options.reduce_batch_dims ? "true" : "false",
             state.options.reduce_batch_dims ? "true" : "false");
  if (im.options.stats_dtype != state.options.stats_dtype)
    mismatch("stats_dtype", to_string(im.options.stats_dtype), to_string(state.options.stats_dtype));
  compare_tables(im.name, "import_state", im.options.reduce_batch_dims, im.table, state.table, "the state's");
  for (std::size_t k = 0; k < state.keys.size(); ++k) {
    const KeyState& ks = state.keys[k];
    if (ks.skips.empty()) continue;
    const std::string key = detail::key_prefix(state.table.keys[k].name);
    if (!im.layout.has_skips)
      detail::fail(ErrorCode::state_mismatch, seg_prefix(im.name) + "import_state: " + key +
                                                  "skips: expected none (pooled statistics), got " +
                                                  std::to_string(ks.skips.size()) + " values (the state's)");
    if (ks.skips.size() * sizeof(std::int64_t) != im.layout.skips_bytes[k])
      detail::fail(ErrorCode::state_mismatch, seg_prefix(im.name) + "import_state: " + key + "skips: expected 0 or " +
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
