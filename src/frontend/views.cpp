// src/frontend/views.cpp -- statistics the caller owns: the stateless step
// (statistics in and out, one count per element) and the external steps
// (statistics updated in place, either count layout). One store, ViewStore,
// checks and binds the views of both.
#include <string>
#include <vector>

#include "../errors.hpp"
#include "../state/schema.hpp"
#include "checks.hpp"
#include "pipeline.hpp"
#include "returns.hpp"
#include "vecnorm/external.hpp"
#include "vecnorm/stateless.hpp"

namespace vecnorm {

namespace detail {
namespace {

/// The statistics views of one key of a call, and how messages name them.
struct ViewArgs {
  ConstStatsView in;  ///< read (null data: zeros)
  StatsView out;      ///< written by updates; may alias `in`
  TensorView skips;   ///< external only (see ExternalStats)
  TensorView skipped;
  const char* in_names[3];   ///< loc, var, count of `in` in messages
  const char* out_names[3];  ///< and of `out`
  /// External statistics: loc, var and count must be given (updated in
  /// place, no zeros for missing ones); stateless `in` views may be null.
  bool required;
};

/// A key's counts on the host for the zero-count check of a normalize (one
/// copy, a synchronization, when they are on a device).
const std::int64_t* host_counts(const CallConfig& cfg, const void* counts, std::int64_t n, Stream stream) {
  const auto* c = static_cast<const std::int64_t*>(counts);
  if (cfg.device.kind != Device::Kind::cuda) return c;
  thread_local std::vector<std::int64_t> copy;
  copy.resize(static_cast<std::size_t>(n));
  cuda::copy(copy.data(), c, static_cast<std::size_t>(n) * sizeof(std::int64_t), stream, true);
  return copy.data();
}

/// Binds the caller's views of key s.key to `s`, after checking all of them.
void bind_views(const CallConfig& cfg, const KeyTable& table, const ViewArgs& a, Segment& s, Stream stream) {
  const KeySpec& spec = table.keys[static_cast<std::size_t>(s.key)];
  const std::string_view key = spec.name;
  const Shape shape = stats_shape(cfg.pooled, table, spec);
  const std::int64_t numel = shape.numel();
  const DType sd = s.stats_dtype;
  const bool per_element = cfg.counts == CountLayout::per_element;
  auto check_count = [&](const char* what, const ConstTensorView& v) {
    if (per_element)
      check_stats_view(key, what, v, DType::int64, shape, cfg.device);
    else
      check_scalar_view(key, what, v, cfg.device);
  };
  if (a.required || a.in.loc.data) check_stats_view(key, a.in_names[0], a.in.loc, sd, shape, cfg.device);
  if (a.required || a.in.var.data) check_stats_view(key, a.in_names[1], a.in.var, sd, shape, cfg.device);
  if (a.required || a.in.count.data) check_count(a.in_names[2], a.in.count);

  // Per-element skips (one count per key, per-element statistics): part of
  // the statistics when non-finite input is skipped.
  const bool element_stats = !cfg.pooled;
  if (per_element && (a.skips.data || a.skipped.data))
    fail(ErrorCode::invalid_argument,
         key_prefix(key) + "skips/skipped: expected none with one count per element (an element left out keeps "
                           "its count), got a view");
  if (cfg.pooled && a.skips.data)
    fail(ErrorCode::invalid_argument,
         key_prefix(key) + "skips: expected none with pooled statistics (whole rows are left out), got a view");
  // A row mask leaves elements out too (Segment::mask is set for updates only).
  const bool leaves_out = cfg.nonfinite == NonFinite::skip || s.mask != nullptr;
  if (!per_element && element_stats && leaves_out && (!a.skips.data || !a.skipped.data))
    fail(ErrorCode::invalid_argument,
         key_prefix(key) + "skips and skipped: expected views (int64 " + shape.str() +
             " and int64 []) with per-element statistics, one count per key and " +
             (cfg.nonfinite == NonFinite::skip ? "nonfinite = skip" : "a row mask") + ", got " +
             (a.skips.data ? "no skipped" : "no skips"));
  if (a.skips.data) check_stats_view(key, "statistics skips", a.skips, DType::int64, shape, cfg.device);
  if (a.skipped.data) check_scalar_view(key, "statistics skipped", a.skipped, cfg.device);

  if (!updates(cfg.work)) {
    // Normalizing needs every count > 0.
    if (numel > 0 && refuses_zero_count(cfg)) {
      if (a.in.count.data == nullptr)
        fail(ErrorCode::zero_count, key_prefix(key) + "cannot normalize: no statistics were given (count 0); update first");
      const std::int64_t n = per_element ? numel : 1;
      const std::int64_t* c = host_counts(cfg, a.in.count.data, n, stream);
      for (std::int64_t i = 0; i < n; ++i)
        if (c[i] <= 0) fail_zero_count(key, c[i], per_element ? i : -1);
    }
  } else {
    const StatsView& o = a.out;
    const ConstStatsView& i = a.in;
    check_stats_view(key, a.out_names[0], o.loc, sd, shape, cfg.device);
    check_stats_view(key, a.out_names[1], o.var, sd, shape, cfg.device);
    check_count(a.out_names[2], o.count);
    check_no_partial_overlap(key, "in.loc", i.loc.data, i.loc.nbytes(), "out.loc", o.loc.data, o.loc.nbytes());
    check_no_partial_overlap(key, "in.var", i.var.data, i.var.nbytes(), "out.var", o.var.data, o.var.nbytes());
    check_no_partial_overlap(key, "in.count", i.count.data, i.count.nbytes(), "out.count", o.count.data,
                             o.count.nbytes());
    const TensorView* outs[] = {&o.loc, &o.var, &o.count, &a.skips, &a.skipped};
    const char* names[] = {"out.loc", "out.var", "out.count", "skips", "skipped"};
    std::size_t bytes[5];  // each view's size once (the pairs below reuse them)
    for (int u = 0; u < 5; ++u) bytes[u] = outs[u]->nbytes();
    for (int u = 0; u < 5; ++u)
      for (int v = u + 1; v < 5; ++v)
        check_disjoint(key, names[u], outs[u]->data, bytes[u], names[v], outs[v]->data, bytes[v]);
    const std::size_t x_bytes = static_cast<std::size_t>(s.rows * s.feat) * dtype_size(s.x_dtype);
    const std::size_t y_bytes = static_cast<std::size_t>(s.rows * s.feat) * dtype_size(output_dtype(s.x_dtype));
    for (int u = 0; u < 5; ++u) {
      check_disjoint(key, "statistics out", outs[u]->data, bytes[u], "input", s.x, x_bytes);
      if (s.y != nullptr) check_disjoint(key, "statistics out", outs[u]->data, bytes[u], "output", s.y, y_bytes);
    }
    s.loc_out = o.loc.data;
    s.var_out = o.var.data;
    s.count_out = static_cast<std::int64_t*>(o.count.data);
  }
  s.loc_in = a.in.loc.data;
  s.var_in = a.in.var.data;
  s.count_in = static_cast<const std::int64_t*>(a.in.count.data);
  s.skips = static_cast<std::int64_t*>(a.skips.data);
  s.skipped = static_cast<std::int64_t*>(a.skipped.data);
}

/// The stateless and external items, as ViewArgs.
ViewArgs view_args(const StatelessItem& it) {
  return {it.in,
          it.out,
          {},
          {},
          {"statistics in.loc", "statistics in.var", "statistics in.count"},
          {"statistics out.loc", "statistics out.var", "statistics out.count"},
          false};
}
ViewArgs view_args(const ExternalItem& it) {
  const ExternalStats& st = it.stats;
  return {ConstStatsView{st.loc, st.var, st.count},
          StatsView{st.loc, st.var, st.count},
          st.skips,
          st.skipped,
          {"statistics loc", "statistics var", "statistics count"},
          {"statistics loc", "statistics var", "statistics count"},
          true};
}

/// Caller-owned statistics: the views passed with each item.
template <class Item>
class ViewStore final : public Store {
 public:
  ViewStore(std::span<const Item> items, Stream stream) : items_(items), stream_(stream) {}
  void bind(const CallConfig& cfg, const KeyTable& table, std::size_t item, Segment& s) override {
    bind_views(cfg, table, view_args(items_[item]), s, stream_);
  }

 private:
  std::span<const Item> items_;
  Stream stream_;
};

/// A call over caller-owned views; `check_only`: every check of the call
/// (options, table, keys, views, counts, NonFinite::error's scan), nothing run.
template <class Item>
void run_views(const Options& options, const KeyTable& table, CountLayout counts, Work work,
               std::span<const Item> items, Stream stream, Workspace* ws, bool check_only = false,
               bool check_counts = true) {
  options.validate();
  if (options.reduce_batch_dims && counts == CountLayout::per_element)
    fail(ErrorCode::invalid_option,
         "option reduce_batch_dims: expected false in stateless mode and with one count per element (pooled "
         "statistics are stateful, one count per key), got true");
  if (options.until > 0 && counts == CountLayout::per_element)
    fail(ErrorCode::invalid_option,
         "option until: expected 0 in stateless mode and with one count per element (the bound is on a key's "
         "one count), got " + std::to_string(options.until));
  table.validate();
  CallConfig cfg = make_config(options, resolve(options.backend), counts);
  cfg.work = work;
  cfg.check_counts = check_counts;
  ViewStore<Item> store(items, stream);
  Scratch& scratch = scratch_of(ws, options.allocator, stream);
  if (check_only) {
    PlanBuffers& buf = thread_buffers();
    plan_keys(cfg, table, items, buf);
    bind_keys(cfg, table, store, buf);
    check_finite(cfg, table, buf.segments, scratch, stream);
    return;
  }
  run_call(cfg, table, items, store, thread_buffers(), scratch, stream);
}

Work work_of(Op op) {
  switch (op) {
    case Op::update: return Work::update;
    case Op::normalize: return Work::normalize;
    default: return Work::update_and_normalize;
  }
}

}  // namespace

void normalize_after_update(const Options& options, const KeyTable& table, std::span<const ExternalItem> items,
                            Stream stream, Workspace* workspace, bool check_only) {
  run_views(options, table, CountLayout::per_key, Work::normalize, items, stream, workspace, check_only, false);
}

}  // namespace detail

namespace stateless {

void step(const Options& options, const KeyTable& table, std::span<const StatelessItem> items, Op op,
          Stream stream) {
  detail::run_views(options, table, CountLayout::per_element, detail::work_of(op), items, stream, nullptr);
}

}  // namespace stateless

namespace external {

void step(const Options& options, const KeyTable& table, CountLayout counts, std::span<const ExternalItem> items,
          Op op, Stream stream, Workspace* workspace) {
  detail::run_views(options, table, counts, detail::work_of(op), items, stream, workspace);
}

void check(const Options& options, const KeyTable& table, CountLayout counts, std::span<const ExternalItem> items,
           Op op, Stream stream, Workspace* workspace) {
  detail::run_views(options, table, counts, detail::work_of(op), items, stream, workspace, true);
}

void denormalize(const Options& options, const KeyTable& table, std::span<const ExternalItem> items, Stream stream,
                 Workspace* workspace) {
  detail::run_views(options, table, CountLayout::per_key, detail::Work::denormalize, items, stream, workspace);
}

}  // namespace external
}  // namespace vecnorm
