// src/frontend/pipeline.cpp -- see pipeline.hpp.
#include "pipeline.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "../errors.hpp"
#include "checks.hpp"
#include "vecnorm/core/convert.hpp"

namespace vecnorm::detail {

CallConfig make_config(const Options& o, Backend backend, CountLayout counts) {
  CallConfig c;
  c.estimator = o.estimator;
  c.pooled = o.reduce_batch_dims;
  c.counts = counts;
  c.stats_dtype = o.stats_dtype;
  c.decay = core::make_decay(o.decay, o.prior_count, o.unbiased, o.until, o.until_strict);
  c.rule = core::make_scale_rule(o.scale, o.eps, o.clip, o.center, o.max_scale);
  c.threads = o.cpu_threads;
  c.executor = o.cpu_executor;
  c.nonfinite = o.nonfinite;
  c.backend = backend;
  c.device = backend_device(backend);
  c.group = o.reduce_batch_dims ? o.collective.get() : nullptr;
  return c;
}

PlanBuffers& thread_buffers() {
  thread_local PlanBuffers buffers;
  return buffers;
}

Scratch& scratch_of(Workspace* ws, const Allocator& allocator, Stream stream) {
  if (ws != nullptr) return ws->scratch();
  struct Own {
    Stream stream;
    Allocator allocator;
    std::unique_ptr<Workspace> ws;
  };
  thread_local std::vector<Own> own;  // a handful: one per stream and allocator this thread used
  for (Own& o : own)
    if (o.stream.cuda_stream == stream.cuda_stream && o.allocator.allocate == allocator.allocate &&
        o.allocator.deallocate == allocator.deallocate && o.allocator.context == allocator.context)
      return o.ws->scratch();
  own.push_back({stream, allocator, std::make_unique<Workspace>(allocator)});
  return own.back().ws->scratch();
}

void reserve_scratch(const CallConfig& cfg, const Plan& plan, Scratch& ws, Stream stream) {
  const WorkspaceSize need = scratch_size(cfg.backend, plan);
  if (need.host_bytes > 0) ws.host(need.host_bytes);
  if (need.device_bytes > 0) ws.device(need.device_bytes, cfg.device, stream);
}

void reserve_scratch(const CallConfig& cfg, std::span<const Segment> segments, Scratch& ws, Stream stream) {
  reserve_scratch(cfg, make_plan(cfg, segments), ws, stream);
}

void plan_key(const CallConfig& cfg, const KeyTable& table, const CallItem& item, PlanBuffers& buf) {
  const int k = find_key(table, item.key);
  check_unique(item.key, k, buf.keys.data(), static_cast<int>(buf.keys.size()));
  const KeySpec& spec = table.keys[static_cast<std::size_t>(k)];
  const DType xd = inverts(cfg.work) ? output_dtype(spec.dtype) : spec.dtype;
  const bool out = writes_output(cfg.work);
  const IoShape io =
      check_io(table, k, xd, *item.x, out ? item.y : nullptr, cfg.pooled ? BatchRule::any : BatchRule::exact, cfg.device);
  if (cfg.pooled) {
    if (buf.keys.empty())
      buf.batch = io.batch;
    else if (io.batch != buf.batch)
      fail(ErrorCode::shape_mismatch,
           key_prefix(spec.name) + "batch shape: expected " + buf.batch.str() + " (the batch shape of key '" +
               table.keys[static_cast<std::size_t>(buf.keys.front())].name + "' in this call), got " + io.batch.str());
  }
  // A row mask, read by updates only: pooled statistics leave its rows out of
  // the batch; per-element statistics the elements of its rows (each keeps
  // its count: one more skip with one count per key). Pooled statistics also
  // take int32 row weights (a row of weight w counts w times: brax's weights).
  const std::uint8_t* mask = nullptr;
  bool weighted = false;
  if (item.mask != nullptr && !(item.mask->data == nullptr && item.mask->shape.ndim() == 0) && updates(cfg.work)) {
    weighted = item.mask->dtype == DType::int32;
    if (weighted && !cfg.pooled)
      fail(ErrorCode::invalid_argument,
           key_prefix(spec.name) + "mask: int32 row weights need pooled statistics (reduce_batch_dims); per-element "
                                   "statistics take a uint8 row mask (0: left out)");
    check_stats_view(spec.name, "mask", *item.mask, weighted ? DType::int32 : DType::uint8, io.batch, cfg.device);
    mask = static_cast<const std::uint8_t*>(item.mask->data);
  }
  buf.keys.push_back(k);
  // Designated: each member written once (assigning those of a
  // value-initialized Segment had GCC zero it first with a `rep stos`).
  buf.segments.push_back(Segment{.key = k,
                                 .x_dtype = xd,
                                 .stats_dtype = stats_dtype_for(cfg.stats_dtype, spec.dtype),
                                 .weighted = weighted,
                                 .x = item.x->data,
                                 .y = out ? item.y->data : nullptr,
                                 .rows = io.rows,
                                 .feat = io.feat,
                                 .mask = mask});
}

void bind_keys(const CallConfig& cfg, const KeyTable& table, Store& store, PlanBuffers& buf) {
  for (std::size_t i = 0; i < buf.segments.size(); ++i) store.bind(cfg, table, i, buf.segments[i]);
}

Plan make_plan(const CallConfig& cfg, std::span<const Segment> segments) {
  // Every member initialized once (designated): assigning the members of a
  // default-constructed Plan had GCC zero the whole object first with a
  // `rep stos`, a fifth of the library's side of a 1x17 step.
  return Plan{.work = cfg.work,
              .estimator = cfg.estimator,
              .pooled = cfg.pooled,
              .counts = cfg.counts,
              .decay = cfg.decay,
              .rule = cfg.rule,
              .threads = cfg.threads,
              .executor = cfg.executor,
              .nonfinite = cfg.nonfinite == NonFinite::propagate ? NonFinite::propagate : NonFinite::skip,
              .segments = segments};
}

namespace {
/// The value of element i of x (dtype d) on `backend`'s device, for a message.
double value_at(Backend backend, const void* x, DType d, std::int64_t i, Stream stream) {
  const std::size_t es = dtype_size(d);
  unsigned char raw[8] = {};
  const void* at = static_cast<const char*>(x) + static_cast<std::size_t>(i) * es;
  if (backend == Backend::cuda)
    cuda::copy(raw, at, es, stream, true);
  else
    std::memcpy(raw, at, es);
  switch (d) {
    case DType::float32: return core::load<double>(reinterpret_cast<const float*>(raw));
    case DType::float64: return core::load<double>(reinterpret_cast<const double*>(raw));
    case DType::float16: return core::load<double>(reinterpret_cast<const core::half_t*>(raw));
    default: return core::load<double>(reinterpret_cast<const core::bf16_t*>(raw));
  }
}

/// "[i, j]": flat feature index f in `shape` (C order).
std::string index_in(const Shape& shape, std::int64_t f) {
  std::int64_t idx[Shape::kMaxDims] = {};
  for (int d = shape.ndim() - 1; d >= 0; --d) {
    idx[d] = shape[d] > 0 ? f % shape[d] : 0;
    f = shape[d] > 0 ? f / shape[d] : 0;
  }
  std::string out = "[";
  for (int d = 0; d < shape.ndim(); ++d) out += (d ? ", " : "") + std::to_string(idx[d]);
  return out + "]";
}
}  // namespace

void check_finite(const CallConfig& cfg, const KeyTable& table, std::span<const Segment> segments, Scratch& ws,
                  Stream stream) {
  if (!updates(cfg.work) || cfg.nonfinite != NonFinite::error) return;
  for (const Segment& s : segments) {
    if (!is_floating(s.x_dtype)) continue;
    // (Weighted rows: every row is scanned, those of weight 0 too.)
    const std::int64_t i =
        first_nonfinite(cfg.backend, s.x, s.x_dtype, s.rows, s.feat, s.weighted ? nullptr : s.mask, stream, ws);
    if (i < 0) continue;
    const double v = value_at(cfg.backend, s.x, s.x_dtype, i, stream);
    const KeySpec& spec = table.keys[static_cast<std::size_t>(s.key)];
    const std::int64_t row = s.feat > 0 ? i / s.feat : 0;
    const std::int64_t f = s.feat > 0 ? i % s.feat : 0;
    const std::string value = std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");
    fail(ErrorCode::nonfinite_input,
         key_prefix(spec.name) + "non-finite input (nonfinite = error): expected finite values, got " + value +
             " at batch row " + std::to_string(row) + ", feature index " + index_in(spec.feature_shape, f) +
             " (flat element " + std::to_string(i) + "); nothing was updated");
  }
}

}  // namespace vecnorm::detail

namespace vecnorm {

namespace detail {

WorkspaceSize scratch_bound(const Options& options, const KeyTable& table, std::int64_t max_batch_rows,
                            bool denormalize) {
  const Backend backend = resolve(options.backend);
  CallConfig cfg = make_config(options, backend, CountLayout::per_key);
  // Every key at its largest in one call: a bound on any call of any subset.
  const std::int64_t rows =
      options.reduce_batch_dims ? std::max<std::int64_t>(max_batch_rows, 0) : table.batch_shape.numel();
  std::vector<Segment> segments(table.keys.size());
  WorkspaceSize size;
  for (const Work work : {Work::update_and_normalize, Work::normalize, Work::denormalize}) {
    if (work == Work::denormalize && !denormalize) continue;
    cfg.work = work;
    for (std::size_t k = 0; k < segments.size(); ++k) {
      Segment& s = segments[k];
      s.key = static_cast<int>(k);
      s.x_dtype = inverts(work) ? output_dtype(table.keys[k].dtype) : table.keys[k].dtype;
      s.stats_dtype = stats_dtype_for(options.stats_dtype, table.keys[k].dtype);
      s.rows = rows;
      s.feat = table.keys[k].feature_shape.numel();
    }
    const WorkspaceSize w = scratch_size(backend, make_plan(cfg, segments));
    size.host_bytes = std::max(size.host_bytes, w.host_bytes);
    size.device_bytes = std::max(size.device_bytes, w.device_bytes);
  }
  return size;
}

}  // namespace detail

WorkspaceSize workspace_size(const Options& options, const KeyTable& table, std::int64_t max_batch_rows) {
  options.validate();
  table.validate();
  return detail::scratch_bound(options, table, max_batch_rows, true);
}

}  // namespace vecnorm
