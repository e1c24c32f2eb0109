// src/frontend/reward.cpp -- vecnorm/reward.hpp: the returns as state of
// their own (one Buffer per key on the statistics' backend), a VecNorm of
// pooled, uncentred statistics over them. A step: the entered pass (the
// returns the update takes, into a second buffer), the statistics' update,
// the normalize of the rewards, then the kept pass (the returns' state for the
// next step): a refused update or normalize leaves the returns as they were.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "../backends.hpp"
#include "../errors.hpp"
#include "../state/rethrow.hpp"
#include "../state/schema.hpp"
#include "checks.hpp"
#include "returns.hpp"
#include "vecnorm/buffer.hpp"
#include "vecnorm/reward.hpp"

namespace vecnorm {

using detail::num;

void ReturnOptions::validate() const {
  if (!(gamma >= 0.0 && gamma <= 1.0))
    detail::fail(ErrorCode::invalid_option, "return option gamma: expected 0 <= gamma <= 1, got " + num(gamma));
  if (reset != ReturnReset::after && reset != ReturnReset::before && reset != ReturnReset::never)
    detail::fail(ErrorCode::invalid_option, "return option reset: expected after, before or never, got value " +
                                                std::to_string(static_cast<int>(reset)));
}

namespace {
/// The statistics' options, checked for a reward scaler (before the VecNorm is made).
Options checked(Options o, const ReturnOptions& r, const KeyTable& table) {
  r.validate();
  o.validate();
  if (!o.reduce_batch_dims)
    detail::fail(ErrorCode::invalid_option,
                 "RewardScaler: option reduce_batch_dims: expected true (the returns of all environments are "
                 "pooled into one statistic per reward feature), got false");
  if (o.estimator != Estimator::stable)
    detail::fail(ErrorCode::invalid_option,
                 "RewardScaler: option estimator: expected stable (the returns' running variance, with a prior: "
                 "SB3's and Gymnasium's), got " + std::string(to_string(o.estimator)));
  if (!(o.prior_count > 0.0))
    detail::fail(ErrorCode::invalid_option,
                 "RewardScaler: option prior_count: expected > 0 (before the first update the scale is the "
                 "prior's: SB3 and Gymnasium start at count 1e-4), got " + num(o.prior_count));
  if (o.center)
    detail::fail(ErrorCode::invalid_option,
                 "RewardScaler: option center: expected false (a reward is divided by its return's scale, not "
                 "centred), got true");
  table.validate();
  for (const KeySpec& k : table.keys)
    if (k.dtype != stats_dtype_for(o.stats_dtype, k.dtype))
      detail::fail(ErrorCode::invalid_key_table, "RewardScaler: " + detail::key_prefix(k.name) + "dtype: expected " +
                                                     to_string(stats_dtype_for(o.stats_dtype, k.dtype)) +
                                                     " (the statistics' dtype: the returns have it), got " +
                                                     to_string(k.dtype));
  return o;
}
}  // namespace

struct RewardScaler::Impl {
  VecNorm stats;
  ReturnOptions returns;
  KeyTable table;
  Backend backend;
  Device device;
  std::vector<Shape> shapes;                 // batch + feature, per key
  std::vector<Buffer> state, entered;        // per key: the returns, and a step's entered returns
  mutable std::mutex mutex;                  // a step, a reset, a read-out: one at a time

  Impl(Options o, ReturnOptions r, KeyTable t)
      : stats(checked(o, r, t), t), returns(r), table(std::move(t)), backend(stats.backend()),
        device(detail::backend_device(backend)) {
    for (const KeySpec& k : table.keys) {
      const Shape s = table.batch_shape.concat(k.feature_shape);
      const std::size_t bytes = static_cast<std::size_t>(s.numel()) * dtype_size(k.dtype);
      shapes.push_back(s);
      state.emplace_back(backend, bytes);
      entered.emplace_back(backend, bytes);
    }
  }
};

RewardScaler::RewardScaler(Options statistics, ReturnOptions returns, KeyTable table)
    : impl_(std::make_unique<Impl>(statistics, returns, std::move(table))) {}
RewardScaler::~RewardScaler() = default;
RewardScaler::RewardScaler(RewardScaler&&) noexcept = default;
RewardScaler& RewardScaler::operator=(RewardScaler&&) noexcept = default;

void RewardScaler::step(std::span<const RewardData> batch, Stream stream) {
  Impl& im = *impl_;
  std::lock_guard lock(im.mutex);
  // Every argument first: nothing runs on bad input.
  std::vector<int> keys;
  std::vector<detail::ReturnViews> views;
  std::vector<KeyData> update, normalize;
  for (const RewardData& it : batch) {
    const int k = detail::find_key(im.table, it.key);
    detail::check_unique(it.key, k, keys.data(), static_cast<int>(keys.size()));
    keys.push_back(k);
    const std::size_t i = static_cast<std::size_t>(k);
    const detail::IoShape io = detail::check_io(im.table, k, im.table.keys[i].dtype, it.reward,
                                                it.out.empty_view() ? nullptr : &it.out, detail::BatchRule::exact,
                                                im.device);
    const DType d = im.table.keys[i].dtype;
    views.push_back({it.key, im.state[i].view(d, im.shapes[i]), im.entered[i].view(d, im.shapes[i]), it.reward,
                     it.out, it.done, it.mask, io.batch});
    detail::check_returns(views.back(), im.device);
    update.push_back({it.key, views.back().entered, TensorView{}, it.mask});
    if (!it.out.empty_view()) normalize.push_back({it.key, it.reward, it.out});
  }
  if (batch.empty()) return;
  detail::check_returns_apart(views);
  detail::normalize_after_update(im.stats, normalize, stream, true);
  detail::reward_phases(
      im.backend, im.returns, views, im.stats.is_frozen(), stream, [&] { im.stats.update(update, stream); },
      [&] {
        if (!normalize.empty()) detail::normalize_after_update(im.stats, normalize, stream, false);
      });
}

void RewardScaler::reset_returns(Stream stream) {
  std::lock_guard lock(impl_->mutex);
  for (Buffer& b : impl_->state) b.zero(stream);
}

namespace {
/// Copies between the host and a backend's memory (waits for `stream`).
void host_copy(Backend backend, void* dst, const void* src, std::size_t bytes, Stream stream) {
  if (backend == Backend::cuda)
    detail::cuda::copy(dst, src, bytes, stream, true);
  else if (bytes > 0)
    std::memcpy(dst, src, bytes);
}
}  // namespace

std::vector<double> RewardScaler::returns(std::string_view key, Stream stream) const {
  const Impl& im = *impl_;
  std::lock_guard lock(im.mutex);
  const std::size_t k = static_cast<std::size_t>(detail::find_key(im.table, key));
  const std::size_t n = static_cast<std::size_t>(im.shapes[k].numel());
  std::vector<double> out(n);
  if (im.table.keys[k].dtype == DType::float64) {
    host_copy(im.backend, out.data(), im.state[k].data(), n * sizeof(double), stream);
  } else {
    std::vector<float> f(n);
    host_copy(im.backend, f.data(), im.state[k].data(), n * sizeof(float), stream);
    std::copy(f.begin(), f.end(), out.begin());
  }
  return out;
}

void RewardScaler::set_returns(std::string_view key, std::span<const double> values, Stream stream) {
  Impl& im = *impl_;
  std::lock_guard lock(im.mutex);
  const std::size_t k = static_cast<std::size_t>(detail::find_key(im.table, key));
  const Shape& s = im.shapes[k];
  if (static_cast<std::int64_t>(values.size()) != s.numel())
    detail::fail(ErrorCode::invalid_argument, "RewardScaler::set_returns: " + detail::key_prefix(key) +
                                                  "expected " + std::to_string(s.numel()) + " values (returns of shape " +
                                                  s.str() + "), got " + std::to_string(values.size()));
  if (im.table.keys[k].dtype == DType::float64) {
    host_copy(im.backend, im.state[k].data(), values.data(), values.size() * sizeof(double), stream);
  } else {
    const std::vector<float> f(values.begin(), values.end());
    host_copy(im.backend, im.state[k].data(), f.data(), f.size() * sizeof(float), stream);
  }
}

State RewardScaler::export_state(Stream stream) const {
  const Impl& im = *impl_;
  std::lock_guard lock(im.mutex);
  // The steps queued on `stream` first: the statistics are read on another
  // stream (VecNorm::export_state), and must be those of the returns' step.
  if (im.backend == Backend::cuda) detail::cuda::synchronize(stream);
  State st = im.stats.export_state();
  ReturnsState& rs = st.returns.emplace();
  rs.options = im.returns;
  for (std::size_t k = 0; k < im.state.size(); ++k) {
    rs.values.emplace_back(im.state[k].size());
    host_copy(im.backend, rs.values.back().data(), im.state[k].data(), im.state[k].size(), stream);
  }
  return st;
}

void RewardScaler::import_state(const State& state, Stream stream) {
  Impl& im = *impl_;
  std::lock_guard lock(im.mutex);
  const std::string prefix = "RewardScaler::import_state: ";
  if (!state.returns)
    detail::fail(ErrorCode::state_mismatch, prefix + "expected a state with returns (a RewardScaler's: "
                                                     "checkpoint format 6 or 7), got a normalizer's statistics only");
  try {
    state.validate();
  } catch (const Error& e) {
    detail::fail(ErrorCode::state_mismatch, prefix + detail::bare(e));
  }
  // What the statistics' import checks, in this scaler's words; and the
  // batch shape, which the returns need (pooled statistics do not).
  const detail::Roles roles{prefix, "this RewardScaler's", "the state's"};
  detail::check_compatible(roles, im.stats.options(), im.table, state);
  detail::check_same_table(roles, false, im.table, state.table);
  // The returns go to the scratch buffers first (a step's entered returns,
  // unused between steps), after the steps queued on `stream`; then the
  // statistics; then the buffers swap: a failure anywhere leaves the scaler
  // as it was.
  if (im.backend == Backend::cuda) detail::cuda::synchronize(stream);
  for (std::size_t k = 0; k < im.state.size(); ++k)
    host_copy(im.backend, im.entered[k].data(), state.returns->values[k].data(), im.entered[k].size(), stream);
  im.stats.import_state(state);
  std::swap(im.state, im.entered);
  const bool hold_frozen = im.returns.hold_frozen;  // not part of a State: this scaler's own
  im.returns = state.returns->options;
  im.returns.hold_frozen = hold_frozen;
}

VecNorm& RewardScaler::statistics() noexcept { return impl_->stats; }
const VecNorm& RewardScaler::statistics() const noexcept { return impl_->stats; }
const ReturnOptions& RewardScaler::return_options() const noexcept { return impl_->returns; }
const KeyTable& RewardScaler::table() const noexcept { return impl_->table; }

namespace detail {

namespace {
/// A buffer of a key's reward step, for the overlap checks: `written` by the
/// step; by the returns' passes (`passes`: the returns, the entered returns)
/// or read by the kept pass after the output is written (`kept_reads`: the
/// dones and the mask). Empty views are left out. (On every step: no
/// allocation; a message's names are built only when a check fails.)
struct StepBuffer {
  const char* name;
  const void* data;
  std::size_t bytes;
  bool written, passes, kept_reads;
};
struct StepBuffers {
  std::array<StepBuffer, 6> at;
  std::size_t n = 0;
  const StepBuffer* begin() const { return at.data(); }
  const StepBuffer* end() const { return at.data() + n; }
};
StepBuffers step_buffers(const ReturnViews& v) {
  StepBuffers out;
  auto add = [&](const char* name, const void* data, std::size_t bytes, bool written, bool passes, bool kept_reads) {
    if (data != nullptr && bytes > 0) out.at[out.n++] = {name, data, bytes, written, passes, kept_reads};
  };
  add("returns", v.state.data, v.state.nbytes(), true, true, false);
  add("entered returns", v.entered.data, v.entered.nbytes(), true, true, false);
  add("reward", v.reward.data, v.reward.nbytes(), false, false, false);
  add("output", v.out.data, v.out.empty_view() ? 0 : v.out.nbytes(), true, false, false);
  add("done", v.done.data, v.done.nbytes(), false, false, true);
  add("mask", v.mask.data, v.mask.nbytes(), false, false, true);
  return out;
}
}  // namespace

void check_returns(const ReturnViews& v, Device device) {
  const DType d = v.reward.dtype;
  if (d != DType::float32 && d != DType::float64)
    fail(ErrorCode::dtype_mismatch, key_prefix(v.key) + "reward dtype: expected float32 or float64 (the "
                                                         "statistics' dtype, which the returns have), got " +
                                        to_string(d));
  check_stats_view(v.key, "returns", v.state, d, v.reward.shape, device);
  check_stats_view(v.key, "entered returns", v.entered, d, v.reward.shape, device);
  if (!v.done.empty_view()) check_stats_view(v.key, "done", v.done, DType::uint8, v.batch, device);
  // Read by the passes even when the statistics are frozen (no update checks it then).
  if (!v.mask.empty_view()) check_stats_view(v.key, "mask", v.mask, DType::uint8, v.batch, device);
  // What the passes write (the returns, the entered returns) overlaps nothing
  // else of the step, and the output (written before the kept pass reads the
  // dones and the mask) neither of those.
  const StepBuffers b = step_buffers(v);
  for (const StepBuffer& w : b)
    for (const StepBuffer& o : b)
      if (&w != &o && w.written && (o.written ? &w < &o : w.passes || o.kept_reads))
        check_disjoint(v.key, w.name, w.data, w.bytes, o.name, o.data, o.bytes);
}

void check_returns_apart(std::span<const ReturnViews> views) {
  // Across keys: what one key's step writes overlaps nothing of another's.
  for (std::size_t i = 0; i < views.size(); ++i)
    for (std::size_t j = 0; j < views.size(); ++j) {
      if (i == j) continue;
      const StepBuffers mine = step_buffers(views[i]), theirs = step_buffers(views[j]);
      for (const StepBuffer& w : mine)
        if (w.written)
          for (const StepBuffer& o : theirs)
            if (overlaps(w.data, w.bytes, o.data, o.bytes))
              check_disjoint(views[i].key, w.name, w.data, w.bytes,
                             ("key '" + std::string(views[j].key) + "' " + o.name).c_str(), o.data, o.bytes);
    }
}

void run_returns(Backend backend, const ReturnOptions& options, const ReturnViews& v, bool kept, bool hold,
                 Stream stream) {
  const std::int64_t rows = v.batch.numel();
  returns(backend,
          {v.state.data, v.entered.data, v.reward.data,
           v.done.empty_view() ? nullptr : static_cast<const std::uint8_t*>(v.done.data),
           v.mask.empty_view() ? nullptr : static_cast<const std::uint8_t*>(v.mask.data), rows,
           rows > 0 ? v.reward.numel() / rows : 0, v.reward.dtype, options.gamma, options.reset, kept, hold},
          stream);
}

}  // namespace detail

namespace external {

void reward_step(const Options& statistics, const ReturnOptions& returns, const KeyTable& table,
                 std::span<const ExternalRewardItem> items, Stream stream, Workspace* workspace, bool update) {
  const Options o = checked(statistics, returns, table);
  const Backend backend = detail::resolve(o.backend);
  const Device device = detail::backend_device(backend);
  std::vector<detail::ReturnViews> views;
  std::vector<ExternalItem> updates, normalize;
  std::vector<int> keys;
  for (const ExternalRewardItem& it : items) {
    const int k = detail::find_key(table, it.key);
    detail::check_unique(it.key, k, keys.data(), static_cast<int>(keys.size()));
    keys.push_back(k);
    const detail::IoShape io = detail::check_io(table, k, table.keys[static_cast<std::size_t>(k)].dtype, it.reward,
                                                it.out.empty_view() ? nullptr : &it.out, detail::BatchRule::any,
                                                device);
    views.push_back({it.key, it.returns, it.entered, it.reward, it.out, it.done, it.mask, io.batch});
    detail::check_returns(views.back(), device);
    updates.push_back({it.key, it.entered, TensorView{}, it.stats, it.mask});
    if (!it.out.empty_view()) normalize.push_back({it.key, it.reward, it.out, it.stats});
  }
  if (items.empty()) return;
  detail::check_returns_apart(views);
  detail::normalize_after_update(o, table, normalize, stream, workspace, true);
  detail::reward_phases(
      backend, returns, views, !update, stream,
      [&] {
        if (update) step(o, table, CountLayout::per_key, updates, Op::update, stream, workspace);
      },
      [&] { detail::normalize_after_update(o, table, normalize, stream, workspace, false); });
}

}  // namespace external

}  // namespace vecnorm
