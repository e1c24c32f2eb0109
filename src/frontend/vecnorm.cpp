// src/frontend/vecnorm.cpp -- VecNorm: statistics in buffers it owns, stepped
// through the call pipeline with a store that binds each key to them.
//
// One flat statistics buffer for all keys (loc and var of each key at 64-byte
// aligned offsets), one count per key, per-element skips and a health counter
// per key, all in the memory of its backend (host or device). The host keeps
// a shadow of the counts for validation only (is a key's count still 0?), so
// steps never read device memory. Read-outs (loc, scale, count, to_affine,
// export_state) copy what they need to the host.
#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "../backends.hpp"
#include "../errors.hpp"
#include "../state/schema.hpp"
#include "checks.hpp"
#include "pipeline.hpp"
#include "readout.hpp"
#include "vecnorm/buffer.hpp"
#include "vecnorm/normalizer.hpp"
#include "vecnorm/workspace.hpp"

namespace vecnorm {

namespace {
constexpr std::size_t kAlign = 64;
std::size_t round_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

}  // namespace

struct VecNorm::Impl final : detail::Store {
  Options options;
  Backend backend = Backend::cpu;
  bool configured = false;
  bool frozen = false;
  KeyTable table;
  std::vector<Shape> stats_shape;        // per key
  std::vector<std::size_t> loc_offset;   // bytes into storage
  std::vector<std::size_t> var_offset;
  Buffer storage;                        // all loc/var, backend memory
  Buffer counts;                         // one int64 per key, backend memory
  // NonFinite::skip (docs/numerics.md): per-element mode keeps, per statistics
  // element, the updates it left out (an element's count is the key's less
  // them); every mode counts the units left out per key (health).
  Buffer skips;                          // per-element mode: int64 per stats element
  std::vector<std::size_t> skips_offset; // bytes into skips, per key
  Buffer health;                         // one int64 per key
  std::vector<std::int64_t> counts_shadow;  // host copy for validation (see top)

  detail::CallConfig config;  // of every call (work set per call)
  mutable std::mutex mutex;   // held by every member for its whole duration
  detail::PlanBuffers buffers;
  Workspace workspace;

  explicit Impl(Options o) : options(o), workspace(o.allocator) {
    options.validate();
    backend = detail::resolve(options.backend);
  }

  /// A deep copy (clone): new buffers with the same contents.
  std::unique_ptr<Impl> copy() const {
    auto c = std::make_unique<Impl>(options);
    c->backend = backend;
    c->frozen = frozen;
    if (!configured) return c;
    c->configure(table);
    c->storage.copy_from(storage);
    c->counts.copy_from(counts);
    c->counts_shadow = counts_shadow;
    if (skips.size() > 0) c->skips.copy_from(skips);
    c->health.copy_from(health);
    if (backend == Backend::cuda) detail::cuda::synchronize(Stream{});
    return c;
  }

  std::size_t stats_bytes(int k) const {
    const std::size_t i = static_cast<std::size_t>(k);
    return static_cast<std::size_t>(stats_shape[i].numel()) *
           dtype_size(stats_dtype_for(options.stats_dtype, table.keys[i].dtype));
  }
  void* loc(int k) { return static_cast<char*>(storage.data()) + loc_offset[static_cast<std::size_t>(k)]; }
  void* var(int k) { return static_cast<char*>(storage.data()) + var_offset[static_cast<std::size_t>(k)]; }
  std::int64_t* count_ptr(int k) { return static_cast<std::int64_t*>(counts.data()) + k; }
  std::int64_t* health_ptr(int k) { return static_cast<std::int64_t*>(health.data()) + k; }
  std::int64_t* skips_ptr(int k) {
    if (options.reduce_batch_dims) return nullptr;
    return reinterpret_cast<std::int64_t*>(static_cast<char*>(skips.data()) + skips_offset[static_cast<std::size_t>(k)]);
  }

  void configure(KeyTable t) {
    t.validate();
    const std::size_t nk = t.keys.size();
    std::vector<Shape> shapes(nk);
    std::vector<std::size_t> lo(nk), vo(nk), so(nk);
    std::size_t bytes = 0, skip_bytes = 0;
    for (std::size_t k = 0; k < nk; ++k) {
      shapes[k] = detail::stats_shape(options.reduce_batch_dims, t, t.keys[k]);
      const std::size_t b =
          static_cast<std::size_t>(shapes[k].numel()) * dtype_size(stats_dtype_for(options.stats_dtype, t.keys[k].dtype));
      lo[k] = bytes;
      bytes += round_up(b);
      vo[k] = bytes;
      bytes += round_up(b);
      so[k] = skip_bytes;
      if (!options.reduce_batch_dims) skip_bytes += round_up(static_cast<std::size_t>(shapes[k].numel()) * 8);
    }
    storage = Buffer(backend, bytes);
    counts = Buffer(backend, nk * sizeof(std::int64_t));
    counts_shadow.assign(nk, 0);
    skips = Buffer(backend, skip_bytes);
    health = Buffer(backend, nk * sizeof(std::int64_t));
    skips_offset = std::move(so);
    table = std::move(t);
    stats_shape = std::move(shapes);
    loc_offset = std::move(lo);
    var_offset = std::move(vo);
    configured = true;
    config = detail::make_config(options, backend, CountLayout::per_key);
    buffers.segments.reserve(nk);
    buffers.keys.reserve(nk);
    // Per-element shapes are fixed: the scratch of steps, updates and
    // normalizes is reserved now (pooled: for batches of the table's batch
    // shape; VecNorm::reserve for more). Not a denormalize's: its maps of
    // per-element statistics are as large as the statistics (reserve() or the
    // first denormalize takes them).
    workspace.reserve(detail::scratch_bound(options, table, table.batch_shape.numel(), false),
                      detail::backend_device(backend));
  }

  void reserve(std::int64_t max_rows) {
    workspace.reserve(workspace_size(options, table, max_rows), detail::backend_device(backend));
  }

  void require_configured() const {
    if (!configured)
      detail::fail(ErrorCode::not_configured,
                   "this VecNorm has no key table yet: construct it with one or import_state() first");
  }

  int key_index(std::string_view key) const {
    require_configured();
    return detail::find_key(table, key);
  }

  /// The store: every key bound to this normalizer's own statistics.
  void bind(const detail::CallConfig& cfg, const KeyTable&, std::size_t, detail::Segment& s) override {
    const int k = s.key;
    if (!detail::updates(cfg.work) && detail::refuses_zero_count(cfg) && counts_shadow[static_cast<std::size_t>(k)] <= 0)
      detail::fail_zero_count(table.keys[static_cast<std::size_t>(k)].name, 0);
    s.loc_in = loc(k);
    s.var_in = var(k);
    s.count_in = count_ptr(k);
    s.skips = skips_ptr(k);
    s.skipped = health_ptr(k);
    if (detail::updates(cfg.work)) {
      s.loc_out = loc(k);
      s.var_out = var(k);
      s.count_out = count_ptr(k);
    }
  }

  /// One call of `work` over `batch`; `validate_only`: checked, nothing run.
  void call(std::span<const KeyData> batch, detail::Work work, Stream stream, bool validate_only = false,
            bool check_counts = true) {
    require_configured();
    detail::CallConfig cfg = config;
    cfg.work = work;
    cfg.check_counts = check_counts;
    if (validate_only) {
      detail::plan_keys(cfg, table, batch, buffers);
      detail::bind_keys(cfg, table, *this, buffers);
      return;
    }
    detail::run_call(cfg, table, batch, *this, buffers, workspace.scratch(), stream);
    if (!detail::updates(work)) return;
    for (const detail::Segment& s : buffers.segments) {
      // Host memory: the count itself. Device memory: an upper bound (pooled
      // skips may add fewer rows), read without waiting for the device.
      const std::size_t k = static_cast<std::size_t>(s.key);
      if (backend == Backend::cpu)
        counts_shadow[k] = *s.count_out;
      else
        counts_shadow[k] += options.reduce_batch_dims ? s.rows : 1;
    }
  }

  // ---------------------------------------------------------- read-outs (host)

  std::int64_t read_int(const Buffer& b, std::size_t index) const {
    std::int64_t c = 0;
    b.copy_to_host(&c, sizeof c, index * sizeof c);
    return c;
  }
  std::int64_t read_count(int k) const { return read_int(counts, static_cast<std::size_t>(k)); }
  std::int64_t read_health(int k) const { return read_int(health, static_cast<std::size_t>(k)); }

  /// Key k's per-element skips on the host; empty when pooled or none ever skipped.
  std::vector<std::int64_t> read_skips(int k) const {
    if (options.reduce_batch_dims || read_health(k) == 0) return {};
    std::vector<std::int64_t> v(static_cast<std::size_t>(stats_shape[static_cast<std::size_t>(k)].numel()));
    skips.copy_to_host(v.data(), v.size() * sizeof(std::int64_t), skips_offset[static_cast<std::size_t>(k)]);
    return v;
  }

  /// Key k's loc and var bytes on the host.
  void read_stats(int k, std::vector<std::uint8_t>& l, std::vector<std::uint8_t>& v) const {
    const std::size_t n = stats_bytes(k);
    l.resize(n);
    v.resize(n);
    storage.copy_to_host(l.data(), n, loc_offset[static_cast<std::size_t>(k)]);
    storage.copy_to_host(v.data(), n, var_offset[static_cast<std::size_t>(k)]);
  }

  /// Key k on the host: its statistics bytes (kept alive by `keep`) as HostStats.
  struct HostCopy {
    std::vector<std::uint8_t> loc, var;
    std::vector<std::int64_t> skips;
  };
  detail::HostStats host_stats(int k, HostCopy& keep) const {
    read_stats(k, keep.loc, keep.var);
    keep.skips = read_skips(k);
    return {keep.loc.data(), keep.var.data(), read_count(k), keep.skips.empty() ? nullptr : keep.skips.data(),
            stats_shape[static_cast<std::size_t>(k)].numel()};
  }

  std::vector<double> readout(std::string_view key, bool want_scale) const {
    const int k = key_index(key);
    HostCopy keep;
    const detail::HostStats st = host_stats(k, keep);
    return detail::key_maps(options, table.keys[static_cast<std::size_t>(k)], st, core::MapKind::denormalize)
        .widened(want_scale);
  }
};

// ============================================================== VecNorm

VecNorm::VecNorm(Options options) : impl_(std::make_unique<Impl>(options)) {}

VecNorm::VecNorm(Options options, KeyTable table) : impl_(std::make_unique<Impl>(options)) {
  impl_->configure(std::move(table));
}

VecNorm::VecNorm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
VecNorm::~VecNorm() = default;
VecNorm::VecNorm(VecNorm&&) noexcept = default;
VecNorm& VecNorm::operator=(VecNorm&&) noexcept = default;

void VecNorm::step(std::span<const KeyData> batch, Stream stream) {
  std::lock_guard lock(impl_->mutex);
  impl_->call(batch, impl_->frozen ? detail::Work::normalize : detail::Work::update_and_normalize, stream);
}

void VecNorm::update(std::span<const KeyData> batch, Stream stream) {
  std::lock_guard lock(impl_->mutex);
  impl_->call(batch, detail::Work::update, stream, impl_->frozen);
}

void VecNorm::normalize(std::span<const KeyData> batch, Stream stream) const {
  std::lock_guard lock(impl_->mutex);
  impl_->call(batch, detail::Work::normalize, stream);  // scratch only: the statistics are read, not written
}

void detail::normalize_after_update(const VecNorm& vn, std::span<const KeyData> batch, Stream stream,
                                    bool check_only) {
  std::lock_guard lock(vn.impl_->mutex);
  vn.impl_->call(batch, detail::Work::normalize, stream, check_only, false);
}

void VecNorm::denormalize(std::span<const KeyData> batch, Stream stream) const {
  std::lock_guard lock(impl_->mutex);
  impl_->call(batch, detail::Work::denormalize, stream);
}

void VecNorm::reserve(std::int64_t max_batch_rows) {
  std::lock_guard lock(impl_->mutex);
  impl_->require_configured();
  impl_->reserve(max_batch_rows);
}

void VecNorm::freeze() {
  std::lock_guard lock(impl_->mutex);
  impl_->frozen = true;
}
void VecNorm::unfreeze() {
  std::lock_guard lock(impl_->mutex);
  impl_->frozen = false;
}
bool VecNorm::is_frozen() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->frozen;
}

VecNorm VecNorm::clone() const {
  std::lock_guard lock(impl_->mutex);
  return VecNorm(impl_->copy());
}

VecNorm VecNorm::frozen_copy() const {
  std::lock_guard lock(impl_->mutex);
  auto c = impl_->copy();
  c->frozen = true;
  return VecNorm(std::move(c));
}

std::vector<double> VecNorm::loc(std::string_view key) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->readout(key, false);
}

std::vector<double> VecNorm::scale(std::string_view key) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->readout(key, true);
}

Shape VecNorm::stats_shape(std::string_view key) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->stats_shape[static_cast<std::size_t>(impl_->key_index(key))];
}

std::int64_t VecNorm::count(std::string_view key) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->read_count(impl_->key_index(key));
}

std::vector<std::int64_t> VecNorm::element_counts(std::string_view key) const {
  std::lock_guard lock(impl_->mutex);
  const Impl& im = *impl_;
  const int k = im.key_index(key);
  const std::int64_t c = im.read_count(k);
  if (im.options.reduce_batch_dims) return {c};
  std::vector<std::int64_t> out(static_cast<std::size_t>(im.stats_shape[static_cast<std::size_t>(k)].numel()), c);
  const std::vector<std::int64_t> sk = im.read_skips(k);
  for (std::size_t i = 0; i < sk.size(); ++i) out[i] -= sk[i];
  return out;
}

std::int64_t VecNorm::skipped(std::string_view key) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->read_health(impl_->key_index(key));
}

AffineNormalizer VecNorm::to_affine() const {
  std::lock_guard lock(impl_->mutex);
  const Impl& im = *impl_;
  im.require_configured();
  const std::size_t nk = im.table.keys.size();
  std::vector<Impl::HostCopy> keep(nk);
  std::vector<detail::HostStats> stats(nk);
  for (std::size_t k = 0; k < nk; ++k) stats[k] = im.host_stats(static_cast<int>(k), keep[k]);
  return detail::make_affine(im.options, im.backend, im.table, im.stats_shape, stats);
}

const Options& VecNorm::options() const noexcept { return impl_->options; }

const KeyTable& VecNorm::key_table() const {
  impl_->require_configured();
  return impl_->table;
}

bool VecNorm::configured() const noexcept { return impl_->configured; }
Backend VecNorm::backend() const noexcept { return impl_->backend; }

// ---------------------------------------------------------------- state

State VecNorm::export_state() const {
  std::lock_guard lock(impl_->mutex);
  const Impl& im = *impl_;
  im.require_configured();
  State st;
  st.options = im.options;
  st.table = im.table;
  st.keys.resize(im.table.keys.size());
  for (std::size_t k = 0; k < st.keys.size(); ++k) {
    KeyState& ks = st.keys[k];
    ks.stats_shape = im.stats_shape[k];
    im.read_stats(static_cast<int>(k), ks.loc, ks.var);
    ks.count = im.read_count(static_cast<int>(k));
    ks.skips = im.read_skips(static_cast<int>(k));
    ks.skipped = im.read_health(static_cast<int>(k));
  }
  return st;
}

void VecNorm::import_state(const State& state) {
  state.validate();
  std::lock_guard lock(impl_->mutex);
  Impl& im = *impl_;
  if (im.configured) {
    detail::check_compatible({"import_state: ", "this VecNorm's", "the state's"}, im.options, im.table, state);
  } else {
    // Adopt the state whole: its statistics-shaping options and key table.
    Options o = im.options;
    o.estimator = state.options.estimator;
    o.decay = state.options.decay;
    o.eps = state.options.eps;
    o.scale = state.options.scale;
    o.clip = state.options.clip;
    o.prior_count = state.options.prior_count;
    o.unbiased = state.options.unbiased;
    o.until = state.options.until;
    o.until_strict = state.options.until_strict;
    o.max_scale = state.options.max_scale;
    o.center = state.options.center;
    o.reduce_batch_dims = state.options.reduce_batch_dims;
    o.stats_dtype = state.options.stats_dtype;
    o.nonfinite = state.options.nonfinite;
    o.validate();
    im.options = o;
    im.configure(state.table);  // cannot fail on the table: state.validate() checked it
  }
  std::vector<std::int64_t> c(state.keys.size()), h(state.keys.size());
  if (im.skips.size() > 0) im.skips.zero();
  for (std::size_t k = 0; k < state.keys.size(); ++k) {
    const KeyState& ks = state.keys[k];
    im.storage.copy_from_host(ks.loc.data(), ks.loc.size(), im.loc_offset[k]);
    im.storage.copy_from_host(ks.var.data(), ks.var.size(), im.var_offset[k]);
    c[k] = ks.count;
    h[k] = ks.skipped;
    if (!ks.skips.empty())
      im.skips.copy_from_host(ks.skips.data(), ks.skips.size() * sizeof(std::int64_t), im.skips_offset[k]);
  }
  im.counts.copy_from_host(c.data(), c.size() * sizeof(std::int64_t));
  im.health.copy_from_host(h.data(), h.size() * sizeof(std::int64_t));
  im.counts_shadow = c;
}

}  // namespace vecnorm
