// src/normalizer.cpp -- the stateful VecNorm and the AffineNormalizer.
//
// VecNorm owns one flat statistics buffer for all keys (loc and var of each key
// at 64-byte aligned offsets) and one count per key, both in the memory of its
// backend (host or device). Each call validates its arguments into a Plan of
// Segments pointing into that buffer and dispatches it: the same Plan/dispatch
// path that vecnorm::stateless::step takes, with the counts laid out per key
// instead of per element.
//
// The host keeps a shadow of the counts for validation only (is a key's count
// still 0?), so steps never read device memory. Read-outs (loc, scale, count,
// to_affine, export_state) copy what they need to the host.
#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "backends.hpp"
#include "errors.hpp"
#include "params.hpp"
#include "state/schema.hpp"
#include "validate.hpp"
#include "vecnorm/buffer.hpp"
#include "vecnorm/core/numerics.hpp"
#include "vecnorm/normalizer.hpp"

namespace vecnorm {

namespace {

constexpr std::size_t kAlign = 64;

std::size_t round_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

/// The affine map of one key, on the host, in the key's compute type.
struct KeyParams {
  DType dtype = DType::float32;  ///< float32 or float64
  std::size_t numel = 0;
  std::vector<double> mu, p;     ///< raw storage of numel values of `dtype`
  std::size_t bytes() const { return numel * dtype_size(dtype); }
};

/// The values of a KeyParams array as doubles.
std::vector<double> widen(const KeyParams& kp, const std::vector<double>& raw) {
  std::vector<double> out(kp.numel);
  if (kp.dtype == DType::float64) {
    std::copy(raw.begin(), raw.begin() + static_cast<std::ptrdiff_t>(kp.numel), out.begin());
  } else {
    const float* f = reinterpret_cast<const float*>(raw.data());
    for (std::size_t i = 0; i < kp.numel; ++i) out[i] = static_cast<double>(f[i]);
  }
  return out;
}

}  // namespace

// ============================================================== VecNorm::Impl

struct VecNorm::Impl {
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
  Buffer skips;                          // per-element mode: int64 per stats element, backend memory
  std::vector<std::size_t> skips_offset; // bytes into skips, per key
  Buffer health;                         // one int64 per key, backend memory
  std::vector<std::int64_t> counts_shadow;  // host copy for validation (see top)

  mutable std::mutex mutex;
  mutable std::vector<detail::Segment> segments;
  mutable std::vector<int> call_keys;
  mutable detail::Workspace workspace;

  explicit Impl(Options o) : options(o) {
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
    return static_cast<std::size_t>(stats_shape[static_cast<std::size_t>(k)].numel()) * dtype_size(options.stats_dtype);
  }
  void* loc(int k) { return static_cast<char*>(storage.data()) + loc_offset[static_cast<std::size_t>(k)]; }
  void* var(int k) { return static_cast<char*>(storage.data()) + var_offset[static_cast<std::size_t>(k)]; }
  const void* loc(int k) const {
    return static_cast<const char*>(storage.data()) + loc_offset[static_cast<std::size_t>(k)];
  }
  const void* var(int k) const {
    return static_cast<const char*>(storage.data()) + var_offset[static_cast<std::size_t>(k)];
  }
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
      const std::size_t b = static_cast<std::size_t>(shapes[k].numel()) * dtype_size(options.stats_dtype);
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
    segments.reserve(nk);
    call_keys.reserve(nk);
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

  void require_count(int k) const {
    if (counts_shadow[static_cast<std::size_t>(k)] <= 0)
      detail::fail(ErrorCode::zero_count,
                   detail::key_prefix(table.keys[static_cast<std::size_t>(k)].name) +
                       "cannot normalize: expected count > 0, got 0 (statistics never updated; step or update first)");
  }

  /// Validates `batch` for `op` and fills `segments`, pointing into the
  /// statistics. `invert`: x holds normalized values (denormalize). Pooled calls
  /// must carry one batch shape for all keys.
  void plan(std::span<const KeyData> batch, Op op, bool invert) {
    require_configured();
    segments.clear();
    detail::KeyPlanner planner(table, options.reduce_batch_dims, detail::backend_device(backend), call_keys);
    for (const KeyData& item : batch) {
      detail::Segment s = planner.next(item, op, invert);
      const int k = s.key;
      if (op == Op::normalize) require_count(k);
      s.loc_in = loc(k);
      s.var_in = var(k);
      s.count_in = count_ptr(k);
      s.skips = skips_ptr(k);
      s.skipped = health_ptr(k);
      if (op != Op::normalize) {
        s.loc_out = loc(k);
        s.var_out = var(k);
        s.count_out = count_ptr(k);
      }
      segments.push_back(s);
    }
  }

  void run(Op op, bool invert, Stream stream) {
    if (op != Op::normalize && options.nonfinite == NonFinite::error)
      detail::require_finite(backend, table, segments, options.cpu_threads, workspace, stream);
    const detail::Plan p = detail::stateful_plan(options, op, invert, segments);
    detail::dispatch(backend, p, workspace, stream);
    if (op != Op::normalize)
      for (const detail::Segment& s : segments) {
        // Host memory: the count itself. Device memory: an upper bound (pooled
        // skips may add fewer rows), read without waiting for the device.
        const std::size_t k = static_cast<std::size_t>(s.key);
        if (backend == Backend::cpu)
          counts_shadow[k] = *s.count_out;
        else
          counts_shadow[k] += options.reduce_batch_dims ? s.rows : 1;
      }
  }

  std::int64_t read_health(int k) const {
    std::int64_t c = 0;
    health.copy_to_host(&c, sizeof c, static_cast<std::size_t>(k) * sizeof c);
    return c;
  }

  /// Key k's per-element skips on the host; empty when pooled or none ever skipped.
  std::vector<std::int64_t> read_skips(int k) const {
    if (options.reduce_batch_dims || read_health(k) == 0) return {};
    std::vector<std::int64_t> v(static_cast<std::size_t>(stats_shape[static_cast<std::size_t>(k)].numel()));
    skips.copy_to_host(v.data(), v.size() * sizeof(std::int64_t), skips_offset[static_cast<std::size_t>(k)]);
    return v;
  }

  // ---------------------------------------------------------- read-outs (host)

  std::int64_t read_count(int k) const {
    std::int64_t c = 0;
    counts.copy_to_host(&c, sizeof c, static_cast<std::size_t>(k) * sizeof c);
    return c;
  }

  /// Key k's loc and var bytes on the host.
  void read_stats(int k, std::vector<std::uint8_t>& l, std::vector<std::uint8_t>& v) const {
    const std::size_t n = stats_bytes(k);
    l.resize(n);
    v.resize(n);
    storage.copy_to_host(l.data(), n, loc_offset[static_cast<std::size_t>(k)]);
    storage.copy_to_host(v.data(), n, var_offset[static_cast<std::size_t>(k)]);
  }

  /// The affine map of key k in its compute type, computed on the host with the
  /// backends' arithmetic (detail::host_params).
  void params(int k, bool want_scale, KeyParams& out) const {
    const std::int64_t count = read_count(k);
    const KeySpec& spec = table.keys[static_cast<std::size_t>(k)];
    if (count <= 0)
      detail::fail(ErrorCode::zero_count, detail::key_prefix(spec.name) + "cannot normalize: expected count > 0, got " +
                                              std::to_string(count));
    std::vector<std::uint8_t> lb, vb;
    read_stats(k, lb, vb);
    const std::vector<std::int64_t> sk = read_skips(k);
    out.dtype = detail::compute_dtype(spec.dtype, options.stats_dtype);
    const std::int64_t numel = stats_shape[static_cast<std::size_t>(k)].numel();
    out.numel = static_cast<std::size_t>(numel);
    out.mu.assign(static_cast<std::size_t>(numel), 0.0);  // double storage holds numel of either type
    out.p.assign(static_cast<std::size_t>(numel), 0.0);
    const core::Decay decay = core::make_decay(options.decay);
    auto go = [&](auto s_tag, auto c_tag) {
      using S = decltype(s_tag);
      using C = decltype(c_tag);
      const S* l = reinterpret_cast<const S*>(lb.data());
      const S* v = reinterpret_cast<const S*>(vb.data());
      C* mu = reinterpret_cast<C*>(out.mu.data());
      C* p = reinterpret_cast<C*>(out.p.data());
      if (options.estimator == Estimator::stable)
        detail::host_params<S, C, true>(decay, options.eps, options.reduce_batch_dims, l, v, count, numel, want_scale, mu, p,
                                        sk.empty() ? nullptr : sk.data());
      else
        detail::host_params<S, C, false>(decay, options.eps, options.reduce_batch_dims, l, v, count, numel, want_scale, mu,
                                         p, sk.empty() ? nullptr : sk.data());
    };
    if (options.stats_dtype == DType::float64)
      go(double{}, double{});
    else if (out.dtype == DType::float64)
      go(float{}, double{});
    else
      go(float{}, float{});
  }

  std::vector<double> readout(std::string_view key, bool want_scale) const {
    const int k = key_index(key);
    KeyParams kp;
    params(k, true, kp);
    return widen(kp, want_scale ? kp.p : kp.mu);
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
  const Op op = impl_->frozen ? Op::normalize : Op::update_and_normalize;
  impl_->plan(batch, op, false);
  impl_->run(op, false, stream);
}

void VecNorm::update(std::span<const KeyData> batch, Stream stream) {
  std::lock_guard lock(impl_->mutex);
  impl_->plan(batch, Op::update, false);
  if (impl_->frozen) return;
  impl_->run(Op::update, false, stream);
}

void VecNorm::normalize(std::span<const KeyData> batch, Stream stream) const {
  std::lock_guard lock(impl_->mutex);
  Impl& im = const_cast<Impl&>(*impl_);  // scratch only: the statistics are read, not written
  im.plan(batch, Op::normalize, false);
  im.run(Op::normalize, false, stream);
}

void VecNorm::denormalize(std::span<const KeyData> batch, Stream stream) const {
  std::lock_guard lock(impl_->mutex);
  Impl& im = const_cast<Impl&>(*impl_);
  im.plan(batch, Op::normalize, true);
  im.run(Op::normalize, true, stream);
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

// ============================================================== AffineNormalizer

struct AffineNormalizer::Impl {
  KeyTable table;
  bool pooled = false;
  Backend backend = Backend::cpu;
  int threads = 0;
  std::vector<Shape> stats_shape;
  std::vector<KeyParams> apply_host;   // mu, 1/scale (host copies, for read-outs)
  std::vector<KeyParams> invert_host;  // mu, scale
  std::vector<Buffer> apply_mu, apply_p, invert_mu, invert_p;  // the same, in backend memory
  mutable std::vector<detail::AffineSegment> segments;
  mutable std::vector<int> call_keys;

  void run(std::span<const KeyData> batch, Stream stream, detail::AffineDirection dir) const {
    segments.clear();
    call_keys.clear();
    const Device device = detail::backend_device(backend);
    const auto rule = pooled ? detail::BatchRule::any : detail::BatchRule::exact;
    const bool apply = dir == detail::AffineDirection::apply;
    for (const KeyData& item : batch) {
      const int k = detail::find_key(table, item.key);
      detail::check_unique(item.key, k, call_keys.data(), static_cast<int>(call_keys.size()));
      call_keys.push_back(k);
      const KeySpec& spec = table.keys[static_cast<std::size_t>(k)];
      const DType xd = apply ? spec.dtype : output_dtype(spec.dtype);
      const detail::IoShape io = detail::check_io(table, k, xd, item.x, &item.y, rule, device);
      const std::size_t ki = static_cast<std::size_t>(k);
      detail::AffineSegment a;
      a.key = k;
      a.x = item.x.data;
      a.x_dtype = xd;
      a.y = item.y.data;
      a.rows = io.rows;
      a.feat = io.feat;
      a.broadcast = pooled;
      a.param_dtype = apply_host[ki].dtype;
      a.mu = (apply ? apply_mu : invert_mu)[ki].data();
      a.p = (apply ? apply_p : invert_p)[ki].data();
      segments.push_back(a);
    }
    detail::AffinePlan plan;
    plan.direction = dir;
    plan.threads = threads;
    plan.segments = segments;
    detail::dispatch(backend, plan, stream);
  }
};

AffineNormalizer VecNorm::to_affine() const {
  std::lock_guard lock(impl_->mutex);
  const Impl& im = *impl_;
  im.require_configured();
  auto a = std::make_unique<AffineNormalizer::Impl>();
  a->table = im.table;
  a->pooled = im.options.reduce_batch_dims;
  a->backend = im.backend;
  a->threads = im.options.cpu_threads;
  a->stats_shape = im.stats_shape;
  const std::size_t nk = im.table.keys.size();
  a->apply_host.resize(nk);
  a->invert_host.resize(nk);
  auto upload = [&](const std::vector<double>& host, std::size_t bytes) {
    Buffer b(im.backend, bytes);
    b.copy_from_host(host.data(), bytes);
    return b;
  };
  for (std::size_t k = 0; k < nk; ++k) {
    im.params(static_cast<int>(k), false, a->apply_host[k]);
    im.params(static_cast<int>(k), true, a->invert_host[k]);
    const std::size_t bytes = a->apply_host[k].bytes();
    a->apply_mu.push_back(upload(a->apply_host[k].mu, bytes));
    a->apply_p.push_back(upload(a->apply_host[k].p, bytes));
    a->invert_mu.push_back(upload(a->invert_host[k].mu, bytes));
    a->invert_p.push_back(upload(a->invert_host[k].p, bytes));
  }
  a->segments.reserve(nk);
  a->call_keys.reserve(nk);
  return AffineNormalizer(std::move(a));
}

AffineNormalizer::AffineNormalizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AffineNormalizer::~AffineNormalizer() = default;
AffineNormalizer::AffineNormalizer(AffineNormalizer&&) noexcept = default;
AffineNormalizer& AffineNormalizer::operator=(AffineNormalizer&&) noexcept = default;

void AffineNormalizer::apply(std::span<const KeyData> batch, Stream stream) const {
  impl_->run(batch, stream, detail::AffineDirection::apply);
}

void AffineNormalizer::invert(std::span<const KeyData> batch, Stream stream) const {
  impl_->run(batch, stream, detail::AffineDirection::invert);
}

std::vector<double> AffineNormalizer::loc(std::string_view key) const {
  const std::size_t k = static_cast<std::size_t>(detail::find_key(impl_->table, key));
  return widen(impl_->invert_host[k], impl_->invert_host[k].mu);
}

std::vector<double> AffineNormalizer::scale(std::string_view key) const {
  const std::size_t k = static_cast<std::size_t>(detail::find_key(impl_->table, key));
  return widen(impl_->invert_host[k], impl_->invert_host[k].p);
}

Shape AffineNormalizer::stats_shape(std::string_view key) const {
  return impl_->stats_shape[static_cast<std::size_t>(detail::find_key(impl_->table, key))];
}

const KeyTable& AffineNormalizer::key_table() const noexcept { return impl_->table; }

}  // namespace vecnorm
