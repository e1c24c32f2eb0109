// src/normalizer.cpp -- the stateful VecNorm and the AffineNormalizer.
//
// VecNorm owns one flat statistics buffer for all keys (loc and var of each key
// at 64-byte aligned offsets) and one count per key. Each call validates its
// arguments into a Plan of Segments pointing into that buffer and dispatches it:
// the same Plan/dispatch path that vecnorm::stateless::step takes, with the
// counts laid out per key instead of per element.
#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "backends.hpp"
#include "errors.hpp"
#include "validate.hpp"
#include "vecnorm/core/numerics.hpp"
#include "vecnorm/normalizer.hpp"

namespace vecnorm {

namespace {

constexpr std::size_t kAlign = 64;

std::size_t round_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

/// Per-key parameters of an affine map, stored in the key's compute type.
struct KeyParams {
  DType dtype = DType::float32;     ///< float32 or float64
  std::vector<double> mu, p;        ///< raw storage: numel values of `dtype`
};

/// Computes, for key statistics (loc, var, count), the map normalize uses:
/// p = 1/scale (want_scale false) or p = scale (want_scale true), in the compute
/// type C, with exactly the arithmetic of the backends (core::element_affine /
/// core::element_loc_scale on the stored values).
template <class S, class C, bool Stable>
void key_params(const core::Decay& decay, double eps, bool pooled, const S* loc, const S* var, std::int64_t count,
                std::int64_t numel, bool want_scale, C* mu, C* p) {
  if (pooled) {
    // Pooled parameters are computed in double (as the pooled step does), then rounded to C.
    const auto c = core::normalize_coeffs<double, Stable>(decay, count);
    for (std::int64_t i = 0; i < numel; ++i) {
      if (want_scale) {
        double m, s;
        core::element_loc_scale<double, Stable>(static_cast<double>(loc[i]), static_cast<double>(var[i]), c, eps, m, s);
        mu[i] = static_cast<C>(m);
        p[i] = static_cast<C>(s);
      } else {
        const auto a = core::element_affine<double, Stable>(static_cast<double>(loc[i]), static_cast<double>(var[i]), c, eps);
        mu[i] = static_cast<C>(a.mu);
        p[i] = static_cast<C>(a.r);
      }
    }
    return;
  }
  const auto c = core::normalize_coeffs<C, Stable>(decay, count);
  const C e = static_cast<C>(eps);
  for (std::int64_t i = 0; i < numel; ++i) {
    if (want_scale) {
      core::element_loc_scale<C, Stable>(static_cast<C>(loc[i]), static_cast<C>(var[i]), c, e, mu[i], p[i]);
    } else {
      const auto a = core::element_affine<C, Stable>(static_cast<C>(loc[i]), static_cast<C>(var[i]), c, e);
      mu[i] = a.mu;
      p[i] = a.r;
    }
  }
}

/// The values of a KeyParams array as doubles.
std::vector<double> widen(const KeyParams& kp, const std::vector<double>& raw, std::size_t n) {
  std::vector<double> out(n);
  if (kp.dtype == DType::float64) {
    std::copy(raw.begin(), raw.begin() + static_cast<long>(n), out.begin());
  } else {
    const float* f = reinterpret_cast<const float*>(raw.data());
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<double>(f[i]);
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
  std::vector<double> storage;           // all loc/var, 8-byte aligned; offsets 64-byte aligned
  std::vector<std::int64_t> counts;      // per key

  mutable std::mutex mutex;
  mutable std::vector<detail::Segment> segments;
  mutable std::vector<detail::AffineSegment> affine_segments;
  mutable std::vector<int> call_keys;
  mutable std::vector<KeyParams> scratch_params;
  mutable detail::Workspace workspace;

  explicit Impl(Options o) : options(o) {
    options.validate();
    backend = detail::resolve(options.backend);
  }

  Impl(const Impl& other)
      : options(other.options),
        backend(other.backend),
        configured(other.configured),
        frozen(other.frozen),
        table(other.table),
        stats_shape(other.stats_shape),
        loc_offset(other.loc_offset),
        var_offset(other.var_offset),
        storage(other.storage),
        counts(other.counts) {}

  std::size_t stats_bytes(int k) const {
    return static_cast<std::size_t>(stats_shape[static_cast<std::size_t>(k)].numel()) * dtype_size(options.stats_dtype);
  }
  void* loc(int k) { return reinterpret_cast<char*>(storage.data()) + loc_offset[static_cast<std::size_t>(k)]; }
  void* var(int k) { return reinterpret_cast<char*>(storage.data()) + var_offset[static_cast<std::size_t>(k)]; }
  const void* loc(int k) const {
    return reinterpret_cast<const char*>(storage.data()) + loc_offset[static_cast<std::size_t>(k)];
  }
  const void* var(int k) const {
    return reinterpret_cast<const char*>(storage.data()) + var_offset[static_cast<std::size_t>(k)];
  }

  void configure(KeyTable t) {
    t.validate();
    const std::size_t nk = t.keys.size();
    std::vector<Shape> shapes(nk);
    std::vector<std::size_t> lo(nk), vo(nk);
    std::size_t bytes = 0;
    for (std::size_t k = 0; k < nk; ++k) {
      const Shape& f = t.keys[k].feature_shape;
      shapes[k] = options.reduce_batch_dims ? f : t.batch_shape.concat(f);
      const std::size_t b = static_cast<std::size_t>(shapes[k].numel()) * dtype_size(options.stats_dtype);
      lo[k] = bytes;
      bytes += round_up(b);
      vo[k] = bytes;
      bytes += round_up(b);
    }
    storage.assign(bytes / sizeof(double), 0.0);
    table = std::move(t);
    stats_shape = std::move(shapes);
    loc_offset = std::move(lo);
    var_offset = std::move(vo);
    counts.assign(nk, 0);
    configured = true;
    segments.reserve(nk);
    affine_segments.reserve(nk);
    call_keys.reserve(nk);
    scratch_params.resize(nk);
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

  detail::BatchRule batch_rule() const {
    return options.reduce_batch_dims ? detail::BatchRule::any : detail::BatchRule::exact;
  }

  void require_count(int k) const {
    if (counts[static_cast<std::size_t>(k)] <= 0)
      detail::fail(ErrorCode::zero_count,
                   detail::key_prefix(table.keys[static_cast<std::size_t>(k)].name) +
                       "cannot normalize: expected count > 0, got 0 (statistics never updated; step or update first)");
  }

  /// Validates `batch` for `op` and fills `segments`. Pooled calls must carry
  /// one batch shape for all keys.
  void plan_segments(std::span<const KeyData> batch, Op op, DType (*x_dtype_of)(DType)) const {
    require_configured();
    segments.clear();
    call_keys.clear();
    const Device device = detail::backend_device(backend);
    Shape pooled_batch;
    for (const KeyData& item : batch) {
      const int k = detail::find_key(table, item.key);
      detail::check_unique(item.key, k, call_keys.data(), static_cast<int>(call_keys.size()));
      call_keys.push_back(k);
      const KeySpec& spec = table.keys[static_cast<std::size_t>(k)];
      const DType xd = x_dtype_of(spec.dtype);
      const detail::IoShape io =
          detail::check_io(table, k, xd, item.x, op == Op::update ? nullptr : &item.y, batch_rule(), device);
      if (options.reduce_batch_dims) {
        if (segments.empty())
          pooled_batch = io.batch;
        else if (io.batch != pooled_batch)
          detail::fail(ErrorCode::shape_mismatch,
                       detail::key_prefix(spec.name) + "batch shape: expected " + pooled_batch.str() +
                           " (the batch shape of key '" + table.keys[static_cast<std::size_t>(segments.front().key)].name +
                           "' in this call), got " + io.batch.str());
      }
      if (op == Op::normalize) require_count(k);
      detail::Segment s;
      s.key = k;
      s.x = item.x.data;
      s.x_dtype = xd;
      s.y = op == Op::update ? nullptr : item.y.data;
      s.rows = io.rows;
      s.feat = io.feat;
      segments.push_back(s);
    }
  }

  void run(Op op) {
    for (detail::Segment& s : segments) {
      s.loc_in = loc(s.key);
      s.var_in = var(s.key);
      s.count_in = &counts[static_cast<std::size_t>(s.key)];
      if (op != Op::normalize) {
        s.loc_out = loc(s.key);
        s.var_out = var(s.key);
        s.count_out = &counts[static_cast<std::size_t>(s.key)];
      }
    }
    run_plan(op);
  }

  void run_plan(Op op) const {
    detail::Plan plan;
    plan.op = op;
    plan.estimator = options.estimator;
    plan.pooled = options.reduce_batch_dims;
    plan.counts = detail::CountLayout::per_key;
    plan.stats_dtype = options.stats_dtype;
    plan.decay = core::make_decay(options.decay);
    plan.eps = options.eps;
    plan.threads = options.cpu_threads;
    plan.segments = segments;
    detail::dispatch(backend, plan, workspace, Stream{});
  }

  /// The affine parameters of key k in its compute type (see key_params).
  void params(int k, bool want_scale, KeyParams& out) const {
    require_count(k);
    const KeySpec& spec = table.keys[static_cast<std::size_t>(k)];
    out.dtype = detail::compute_dtype(spec.dtype, options.stats_dtype);
    const std::int64_t numel = stats_shape[static_cast<std::size_t>(k)].numel();
    out.mu.resize(static_cast<std::size_t>(numel));  // double storage holds numel of either type
    out.p.resize(static_cast<std::size_t>(numel));
    const core::Decay decay = core::make_decay(options.decay);
    const bool pooled = options.reduce_batch_dims;
    const std::int64_t count = counts[static_cast<std::size_t>(k)];
    auto go = [&](auto s_tag, auto c_tag) {
      using S = decltype(s_tag);
      using C = decltype(c_tag);
      const S* l = static_cast<const S*>(loc(k));
      const S* v = static_cast<const S*>(var(k));
      C* mu = reinterpret_cast<C*>(out.mu.data());
      C* p = reinterpret_cast<C*>(out.p.data());
      if (options.estimator == Estimator::stable)
        key_params<S, C, true>(decay, options.eps, pooled, l, v, count, numel, want_scale, mu, p);
      else
        key_params<S, C, false>(decay, options.eps, pooled, l, v, count, numel, want_scale, mu, p);
    };
    const bool s64 = options.stats_dtype == DType::float64;
    const bool c64 = out.dtype == DType::float64;
    if (s64)
      go(double{}, double{});
    else if (c64)
      go(float{}, double{});
    else
      go(float{}, float{});
  }

  std::vector<double> readout(std::string_view key, bool want_scale) const {
    const int k = key_index(key);
    KeyParams kp;
    params(k, true, kp);
    const std::size_t n = static_cast<std::size_t>(stats_shape[static_cast<std::size_t>(k)].numel());
    return widen(kp, want_scale ? kp.p : kp.mu, n);
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

namespace {
DType same_dtype(DType d) { return d; }
}  // namespace

void VecNorm::step(std::span<const KeyData> batch, Stream stream) {
  (void)stream;
  std::lock_guard lock(impl_->mutex);
  const Op op = impl_->frozen ? Op::normalize : Op::update_and_normalize;
  impl_->plan_segments(batch, op, same_dtype);
  impl_->run(op);
}

void VecNorm::update(std::span<const KeyData> batch, Stream stream) {
  (void)stream;
  std::lock_guard lock(impl_->mutex);
  impl_->plan_segments(batch, Op::update, same_dtype);
  if (impl_->frozen) return;
  impl_->run(Op::update);
}

void VecNorm::normalize(std::span<const KeyData> batch, Stream stream) const {
  (void)stream;
  std::lock_guard lock(impl_->mutex);
  impl_->plan_segments(batch, Op::normalize, same_dtype);
  const_cast<Impl&>(*impl_).run(Op::normalize);  // reads the statistics only
}

void VecNorm::denormalize(std::span<const KeyData> batch, Stream stream) const {
  std::lock_guard lock(impl_->mutex);
  Impl& im = const_cast<Impl&>(*impl_);
  // x holds normalized values: its dtype is output_dtype of the key's dtype.
  im.plan_segments(batch, Op::normalize, [](DType d) { return output_dtype(d); });
  im.affine_segments.clear();
  for (const detail::Segment& s : im.segments) {
    KeyParams& kp = im.scratch_params[static_cast<std::size_t>(s.key)];
    im.params(s.key, true, kp);
    detail::AffineSegment a;
    a.key = s.key;
    a.x = s.x;
    a.x_dtype = s.x_dtype;
    a.y = s.y;
    a.rows = s.rows;
    a.feat = s.feat;
    a.broadcast = im.options.reduce_batch_dims;
    a.param_dtype = kp.dtype;
    a.mu = kp.mu.data();
    a.p = kp.p.data();
    im.affine_segments.push_back(a);
  }
  detail::AffinePlan plan;
  plan.direction = detail::AffineDirection::invert;
  plan.threads = im.options.cpu_threads;
  plan.segments = im.affine_segments;
  detail::dispatch(im.backend, plan, stream);
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
  auto copy = std::make_unique<Impl>(*impl_);
  copy->segments.reserve(copy->table.keys.size());
  copy->affine_segments.reserve(copy->table.keys.size());
  copy->call_keys.reserve(copy->table.keys.size());
  copy->scratch_params.resize(copy->table.keys.size());
  return VecNorm(std::move(copy));
}

VecNorm VecNorm::frozen_copy() const {
  VecNorm copy = clone();
  copy.impl_->frozen = true;
  return copy;
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
  return impl_->counts[static_cast<std::size_t>(impl_->key_index(key))];
}

const Options& VecNorm::options() const noexcept { return impl_->options; }

const KeyTable& VecNorm::key_table() const {
  impl_->require_configured();
  return impl_->table;
}

bool VecNorm::configured() const noexcept { return impl_->configured; }
Backend VecNorm::backend() const noexcept { return impl_->backend; }

// ---------------------------------------------------------------- state

void State::validate() const {
  options.validate();
  table.validate();
  if (keys.size() != table.keys.size())
    detail::fail(ErrorCode::state_mismatch, "state: expected statistics for " + std::to_string(table.keys.size()) +
                                                " keys, got " + std::to_string(keys.size()));
  for (std::size_t k = 0; k < keys.size(); ++k) {
    const KeySpec& spec = table.keys[k];
    const Shape expected =
        options.reduce_batch_dims ? spec.feature_shape : table.batch_shape.concat(spec.feature_shape);
    const KeyState& ks = keys[k];
    if (ks.stats_shape != expected)
      detail::fail(ErrorCode::state_mismatch, "state: " + detail::key_prefix(spec.name) + "statistics shape: expected " +
                                                  expected.str() + ", got " + ks.stats_shape.str());
    const std::size_t bytes = static_cast<std::size_t>(expected.numel()) * dtype_size(options.stats_dtype);
    if (ks.loc.size() != bytes || ks.var.size() != bytes)
      detail::fail(ErrorCode::state_mismatch, "state: " + detail::key_prefix(spec.name) + "loc/var bytes: expected " +
                                                  std::to_string(bytes) + ", got " + std::to_string(ks.loc.size()) +
                                                  "/" + std::to_string(ks.var.size()));
    if (ks.count < 0)
      detail::fail(ErrorCode::state_mismatch, "state: " + detail::key_prefix(spec.name) +
                                                  "count: expected >= 0, got " + std::to_string(ks.count));
  }
}

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
    const int ki = static_cast<int>(k);
    ks.stats_shape = im.stats_shape[k];
    const std::size_t n = im.stats_bytes(ki);
    const auto* l = static_cast<const std::uint8_t*>(im.loc(ki));
    const auto* v = static_cast<const std::uint8_t*>(im.var(ki));
    ks.loc.assign(l, l + n);
    ks.var.assign(v, v + n);
    ks.count = im.counts[k];
  }
  return st;
}

void VecNorm::import_state(const State& state) {
  state.validate();
  std::lock_guard lock(impl_->mutex);
  Impl& im = *impl_;
  if (im.configured) {
    auto mismatch = [](const std::string& what, const std::string& expected, const std::string& got) {
      detail::fail(ErrorCode::state_mismatch,
                   "import_state: " + what + ": expected " + expected + " (this VecNorm's), got " + got + " (the state's)");
    };
    if (im.options.estimator != state.options.estimator)
      mismatch("estimator", to_string(im.options.estimator), to_string(state.options.estimator));
    if (im.options.reduce_batch_dims != state.options.reduce_batch_dims)
      mismatch("reduce_batch_dims", im.options.reduce_batch_dims ? "true" : "false",
               state.options.reduce_batch_dims ? "true" : "false");
    if (im.options.stats_dtype != state.options.stats_dtype)
      mismatch("stats_dtype", to_string(im.options.stats_dtype), to_string(state.options.stats_dtype));
    if (im.table.keys.size() != state.table.keys.size())
      mismatch("number of keys", std::to_string(im.table.keys.size()), std::to_string(state.table.keys.size()));
    if (!im.options.reduce_batch_dims && im.table.batch_shape != state.table.batch_shape)
      mismatch("batch shape", im.table.batch_shape.str(), state.table.batch_shape.str());
    for (std::size_t k = 0; k < im.table.keys.size(); ++k) {
      const KeySpec &a = im.table.keys[k], &b = state.table.keys[k];
      if (a.name != b.name) mismatch("key " + std::to_string(k) + " name", "'" + a.name + "'", "'" + b.name + "'");
      if (a.feature_shape != b.feature_shape)
        mismatch(detail::key_prefix(a.name) + "feature shape", a.feature_shape.str(), b.feature_shape.str());
      if (a.dtype != b.dtype) mismatch(detail::key_prefix(a.name) + "dtype", to_string(a.dtype), to_string(b.dtype));
    }
  } else {
    // Adopt the state whole: its statistics-shaping options and key table.
    Options o = im.options;
    o.estimator = state.options.estimator;
    o.decay = state.options.decay;
    o.eps = state.options.eps;
    o.reduce_batch_dims = state.options.reduce_batch_dims;
    o.stats_dtype = state.options.stats_dtype;
    o.validate();
    im.options = o;
    im.configure(state.table);  // cannot fail: state.validate() checked the table
  }
  for (std::size_t k = 0; k < state.keys.size(); ++k) {
    const KeyState& ks = state.keys[k];
    std::memcpy(im.loc(static_cast<int>(k)), ks.loc.data(), ks.loc.size());
    std::memcpy(im.var(static_cast<int>(k)), ks.var.data(), ks.var.size());
    im.counts[k] = ks.count;
  }
}

// ============================================================== AffineNormalizer

struct AffineNormalizer::Impl {
  KeyTable table;
  bool pooled = false;
  Backend backend = Backend::cpu;
  int threads = 0;
  std::vector<Shape> stats_shape;
  std::vector<KeyParams> apply_params;   // mu, 1/scale
  std::vector<KeyParams> invert_params;  // mu, scale
  mutable std::vector<detail::AffineSegment> segments;
  mutable std::vector<int> call_keys;

  void run(std::span<const KeyData> batch, Stream stream, detail::AffineDirection dir) const {
    segments.clear();
    call_keys.clear();
    const Device device = detail::backend_device(backend);
    const auto rule = pooled ? detail::BatchRule::any : detail::BatchRule::exact;
    for (const KeyData& item : batch) {
      const int k = detail::find_key(table, item.key);
      detail::check_unique(item.key, k, call_keys.data(), static_cast<int>(call_keys.size()));
      call_keys.push_back(k);
      const KeySpec& spec = table.keys[static_cast<std::size_t>(k)];
      const DType xd = dir == detail::AffineDirection::apply ? spec.dtype : output_dtype(spec.dtype);
      const detail::IoShape io = detail::check_io(table, k, xd, item.x, &item.y, rule, device);
      const KeyParams& kp = (dir == detail::AffineDirection::apply ? apply_params : invert_params)[static_cast<std::size_t>(k)];
      detail::AffineSegment a;
      a.key = k;
      a.x = item.x.data;
      a.x_dtype = xd;
      a.y = item.y.data;
      a.rows = io.rows;
      a.feat = io.feat;
      a.broadcast = pooled;
      a.param_dtype = kp.dtype;
      a.mu = kp.mu.data();
      a.p = kp.p.data();
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
  a->apply_params.resize(nk);
  a->invert_params.resize(nk);
  for (std::size_t k = 0; k < nk; ++k) {
    im.params(static_cast<int>(k), false, a->apply_params[k]);
    im.params(static_cast<int>(k), true, a->invert_params[k]);
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
  const int k = detail::find_key(impl_->table, key);
  const KeyParams& kp = impl_->invert_params[static_cast<std::size_t>(k)];
  return widen(kp, kp.mu, static_cast<std::size_t>(impl_->stats_shape[static_cast<std::size_t>(k)].numel()));
}

std::vector<double> AffineNormalizer::scale(std::string_view key) const {
  const int k = detail::find_key(impl_->table, key);
  const KeyParams& kp = impl_->invert_params[static_cast<std::size_t>(k)];
  return widen(kp, kp.p, static_cast<std::size_t>(impl_->stats_shape[static_cast<std::size_t>(k)].numel()));
}

Shape AffineNormalizer::stats_shape(std::string_view key) const {
  return impl_->stats_shape[static_cast<std::size_t>(detail::find_key(impl_->table, key))];
}

const KeyTable& AffineNormalizer::key_table() const noexcept { return impl_->table; }

}  // namespace vecnorm
