// src/stateless.cpp -- vecnorm::stateless::step: validate, then run one Plan.
#include "vecnorm/stateless.hpp"

#include <string>
#include <vector>

#include "backends.hpp"
#include "errors.hpp"
#include "validate.hpp"

namespace vecnorm::stateless {

namespace {
// Scratch reused by the calls of one thread: steady-state steps do not allocate.
thread_local std::vector<detail::Segment> t_segments;
thread_local std::vector<int> t_keys;
thread_local detail::Workspace t_workspace;

thread_local std::vector<std::int64_t> t_counts;

/// Normalize-only needs every count > 0. Counts in device memory are copied to
/// the host for this check (one synchronization, normalize-only calls only;
/// steps that update never need it: their counts are >= 1 after the update).
void check_zero_counts(std::string_view key, const ConstTensorView& count, std::int64_t numel, Device device,
                       Stream stream) {
  if (numel == 0) return;
  if (count.data == nullptr)
    detail::fail(ErrorCode::zero_count, detail::key_prefix(key) +
                                            "cannot normalize: no statistics were given (count 0); update first");
  const auto* c = static_cast<const std::int64_t*>(count.data);
  if (device.kind == Device::Kind::cuda) {
    t_counts.resize(static_cast<std::size_t>(numel));
    detail::cuda::copy(t_counts.data(), c, static_cast<std::size_t>(numel) * sizeof(std::int64_t), stream, true);
    c = t_counts.data();
  }
  for (std::int64_t i = 0; i < numel; ++i)
    if (c[i] <= 0)
      detail::fail(ErrorCode::zero_count, detail::key_prefix(key) + "cannot normalize: expected count > 0, got " +
                                              std::to_string(c[i]) + " at element " + std::to_string(i) +
                                              " (statistics never updated)");
}
}  // namespace

void step(const Options& options, const KeyTable& table, std::span<const StatelessItem> items, Op op,
          Stream stream) {
  options.validate();
  if (options.reduce_batch_dims)
    detail::fail(ErrorCode::invalid_option,
                 "option reduce_batch_dims: expected false in stateless mode (pooling is stateful only), got true");
  table.validate();
  const Backend backend = detail::resolve(options.backend);
  const Device device = detail::backend_device(backend);
  const DType sd = options.stats_dtype;

  t_segments.clear();
  t_keys.clear();
  for (const StatelessItem& it : items) {
    const int k = detail::find_key(table, it.key);
    detail::check_unique(it.key, k, t_keys.data(), static_cast<int>(t_keys.size()));
    t_keys.push_back(k);
    const KeySpec& spec = table.keys[static_cast<std::size_t>(k)];
    const std::string_view key = spec.name;
    const detail::IoShape io = detail::check_io(table, k, spec.dtype, it.x, op == Op::update ? nullptr : &it.y,
                                                detail::BatchRule::exact, device);
    const Shape shape = table.batch_shape.concat(spec.feature_shape);
    const std::int64_t numel = shape.numel();
    if (it.in.loc.data) detail::check_stats_view(key, "statistics in.loc", it.in.loc, sd, shape, device);
    if (it.in.var.data) detail::check_stats_view(key, "statistics in.var", it.in.var, sd, shape, device);
    if (it.in.count.data)
      detail::check_stats_view(key, "statistics in.count", it.in.count, DType::int64, shape, device);
    if (op == Op::normalize) {
      check_zero_counts(key, it.in.count, numel, device, stream);
    } else {
      detail::check_stats_view(key, "statistics out.loc", it.out.loc, sd, shape, device);
      detail::check_stats_view(key, "statistics out.var", it.out.var, sd, shape, device);
      detail::check_stats_view(key, "statistics out.count", it.out.count, DType::int64, shape, device);
      const StatsView& o = it.out;
      const ConstStatsView& i = it.in;
      detail::check_no_partial_overlap(key, "in.loc", i.loc.data, i.loc.nbytes(), "out.loc", o.loc.data, o.loc.nbytes());
      detail::check_no_partial_overlap(key, "in.var", i.var.data, i.var.nbytes(), "out.var", o.var.data, o.var.nbytes());
      detail::check_no_partial_overlap(key, "in.count", i.count.data, i.count.nbytes(), "out.count", o.count.data,
                                       o.count.nbytes());
      detail::check_disjoint(key, "out.loc", o.loc.data, o.loc.nbytes(), "out.var", o.var.data, o.var.nbytes());
      detail::check_disjoint(key, "out.loc", o.loc.data, o.loc.nbytes(), "out.count", o.count.data, o.count.nbytes());
      detail::check_disjoint(key, "out.var", o.var.data, o.var.nbytes(), "out.count", o.count.data, o.count.nbytes());
      const TensorView* outs[] = {&o.loc, &o.var, &o.count};
      for (const TensorView* v : outs) {
        detail::check_disjoint(key, "statistics out", v->data, v->nbytes(), "input", it.x.data, it.x.nbytes());
        if (op != Op::update)
          detail::check_disjoint(key, "statistics out", v->data, v->nbytes(), "output", it.y.data, it.y.nbytes());
      }
    }
    detail::Segment s;
    s.key = k;
    s.x = it.x.data;
    s.x_dtype = spec.dtype;
    s.y = op == Op::update ? nullptr : it.y.data;
    s.rows = io.rows;
    s.feat = io.feat;
    s.loc_in = it.in.loc.data;
    s.var_in = it.in.var.data;
    s.count_in = static_cast<const std::int64_t*>(it.in.count.data);
    if (op != Op::normalize) {
      s.loc_out = it.out.loc.data;
      s.var_out = it.out.var.data;
      s.count_out = static_cast<std::int64_t*>(it.out.count.data);
    }
    t_segments.push_back(s);
  }

  detail::Plan plan;
  plan.op = op;
  plan.estimator = options.estimator;
  plan.pooled = false;
  plan.counts = detail::CountLayout::per_element;
  plan.stats_dtype = sd;
  plan.decay = core::make_decay(options.decay);
  plan.eps = options.eps;
  plan.threads = options.cpu_threads;
  plan.nonfinite = options.nonfinite == NonFinite::propagate ? NonFinite::propagate : NonFinite::skip;
  plan.segments = t_segments;
  if (op != Op::normalize && options.nonfinite == NonFinite::error)
    detail::require_finite(backend, table, t_segments, options.cpu_threads, t_workspace, stream);
  detail::dispatch(backend, plan, t_workspace, stream);
}

}  // namespace vecnorm::stateless
