// src/frontend/pipeline.hpp -- the one call pipeline of vecnorm.
//
// Every entry point (VecNorm, SharedVecNorm, AffineNormalizer, the stateless
// and external steps) is a thin adapter that says what the call does (a
// CallConfig) and where the statistics of its keys live (a Store), then:
//
//   plan_keys()   validates the keys once: known, not repeated, x and y dtypes,
//                 shapes, devices and overlaps, one batch shape when pooled;
//                 fills one Segment per key (no statistics yet);
//   bind_keys()   the store points each Segment at its statistics (or fixed
//                 maps), checking whatever it was given (views, counts);
//   check_finite() NonFinite::error: scans the inputs of an update;
//   dispatch()    the one switch over backends (src/dispatch.cpp).
//
// run_call() does them in order, with reserve_scratch() before the dispatch;
// SharedVecNorm runs them apart (it binds under the segment's lock, after the
// scan). Nothing is written before the last check has passed and the scratch
// is in hand, so a call that fails changes nothing.
#pragma once

#include <cstdint>
#include <exception>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "../backends.hpp"
#include "../plan.hpp"
#include "../workspace.hpp"
#include "vecnorm/collective.hpp"
#include "vecnorm/external.hpp"
#include "vecnorm/normalizer.hpp"
#include "vecnorm/options.hpp"
#include "vecnorm/stateless.hpp"

namespace vecnorm::detail {

/// What a call does, with which options, on which backend: everything but its keys.
struct CallConfig {
  Work work = Work::update_and_normalize;
  Estimator estimator = Estimator::torchrl;
  bool pooled = false;
  CountLayout counts = CountLayout::per_key;
  std::optional<DType> stats_dtype;  ///< Options::stats_dtype: each segment has its key's (stats_dtype_for)
  core::Decay decay;
  core::ScaleRule<double> rule;
  int threads = 0;
  CpuExecutor executor;
  NonFinite nonfinite = NonFinite::skip;
  Backend backend = Backend::cpu;  ///< resolved
  Device device;                   ///< where the views of the call must live
  /// Pooled updates merge the batches of every rank of this group
  /// (Options::collective; null: this process alone).
  Collective* group = nullptr;
  /// A normalize checks that every count is > 0 (on a device: one copy to the
  /// host, a synchronization). false: the caller's own update came first in
  /// the same call (external::reward_step); a key it left at count 0 (every
  /// row masked out) normalizes with its statistics as stored.
  bool check_counts = true;
};

/// Whether a normalize refuses statistics of count 0 (Error(zero_count)):
/// unless the caller's update came first (check_counts false) or the
/// statistics have a prior (Options::prior_count > 0: at count 0 they stand
/// for the prior, mean 0 and variance 1, and normalize with its map, as SB3,
/// rl_games, skrl, brax and rsl_rl normalize with their initial state).
inline bool refuses_zero_count(const CallConfig& cfg) { return cfg.check_counts && !(cfg.decay.prior > 0.0); }

/// The configuration of calls with `options` (validated by the caller) on the
/// resolved `backend`, statistics counted as `counts`; work: update_and_normalize.
CallConfig make_config(const Options& options, Backend backend, CountLayout counts);

/// Where the statistics of a call's keys live.
class Store {
 public:
  /// Points `s` (item `item` of the call; s.key is its key) at its statistics
  /// or maps, after checking what the store holds or was given for it.
  virtual void bind(const CallConfig& cfg, const KeyTable& table, std::size_t item, Segment& s) = 0;

 protected:
  ~Store() = default;
};

/// The segments of a call under construction (kept between calls: no
/// allocation in steady state). One per normalizer, or per thread.
struct PlanBuffers {
  std::vector<Segment> segments;
  std::vector<int> keys;
  Shape batch;  ///< pooled: the batch shape of the call's first key
  // A distributed update (src/frontend/exchange.cpp): its moments plan and
  // this rank's message as built on the host.
  std::vector<Segment> moments;
  std::vector<double> message;
};
/// This thread's buffers, for entry points that hold none of their own.
PlanBuffers& thread_buffers();
/// `ws`'s scratch; when null (entry points given none), this thread's for
/// `stream` and `allocator`: calls on different streams never share scratch
/// (their kernels may run at once), and the allocator is the caller's.
Scratch& scratch_of(Workspace* ws, const Allocator& allocator = {}, Stream stream = {});

/// One key of a call as an entry point received it.
struct CallItem {
  std::string_view key;
  const ConstTensorView* x;
  const TensorView* y;
  const ConstTensorView* mask;  ///< null: the item has none
};
inline CallItem call_item(const KeyData& d) { return {d.key, &d.x, &d.y, &d.mask}; }
inline CallItem call_item(const StatelessItem& d) { return {d.key, &d.x, &d.y, &d.mask}; }
inline CallItem call_item(const ExternalItem& d) { return {d.key, &d.x, &d.y, &d.mask}; }

/// Validates one key of a call into a new segment of `buf`.
void plan_key(const CallConfig& cfg, const KeyTable& table, const CallItem& item, PlanBuffers& buf);

/// Validates the keys of a call into `buf` (cleared first).
template <class Item>
void plan_keys(const CallConfig& cfg, const KeyTable& table, std::span<const Item> items, PlanBuffers& buf) {
  buf.segments.clear();
  buf.keys.clear();
  for (const Item& item : items) plan_key(cfg, table, call_item(item), buf);
}

/// The store binds every planned segment.
void bind_keys(const CallConfig& cfg, const KeyTable& table, Store& store, PlanBuffers& buf);

/// The plan the backends run.
Plan make_plan(const CallConfig& cfg, std::span<const Segment> segments);

/// The most scratch a call of `options` over any keys of `table` with up to
/// `max_batch_rows` rows (pooled) takes; `denormalize`: denormalize calls too
/// (their maps of per-element statistics are as large as the statistics).
WorkspaceSize scratch_bound(const Options& options, const KeyTable& table, std::int64_t max_batch_rows,
                            bool denormalize);

/// Takes the scratch a plan needs from `ws` before anything is written, so
/// that a call that cannot get it fails changing nothing (the backends then
/// find it there and allocate nothing).
void reserve_scratch(const CallConfig& cfg, std::span<const Segment> segments, Scratch& ws, Stream stream);
/// The same for a plan already made (of cfg).
void reserve_scratch(const CallConfig& cfg, const Plan& plan, Scratch& ws, Stream stream);

/// NonFinite::error, for a call that updates: the first non-finite input
/// value throws Error(nonfinite_input) naming the key and the element (batch
/// row and feature index). On the CUDA backend the scan waits for `stream`.
void check_finite(const CallConfig& cfg, const KeyTable& table, std::span<const Segment> segments, Scratch& ws,
                  Stream stream);

/// A distributed pooled update (cfg.group), after this rank planned, bound and
/// checked its keys into `buf` (`local`: the error that stopped it, or null):
/// its batch moments (Work::moments), the all-gather of every rank's message
/// (sent even when this rank failed, marked so: the others then fail too
/// instead of waiting), the checks of what the ranks sent, then the update
/// from the merged moments (src/frontend/exchange.cpp, vecnorm/collective.hpp).
void exchange_and_dispatch(const CallConfig& cfg, const KeyTable& table, PlanBuffers& buf, Scratch& ws, Stream stream,
                           std::exception_ptr local);

/// The whole pipeline: plan, bind, check, dispatch.
template <class Item>
void run_call(const CallConfig& cfg, const KeyTable& table, std::span<const Item> items, Store& store,
              PlanBuffers& buf, Scratch& ws, Stream stream) {
  if (cfg.group != nullptr && updates(cfg.work)) {
    std::exception_ptr local;
    try {
      plan_keys(cfg, table, items, buf);
      bind_keys(cfg, table, store, buf);
      check_finite(cfg, table, buf.segments, ws, stream);
    } catch (...) {
      local = std::current_exception();
    }
    exchange_and_dispatch(cfg, table, buf, ws, stream, local);
    return;
  }
  plan_keys(cfg, table, items, buf);
  bind_keys(cfg, table, store, buf);
  check_finite(cfg, table, buf.segments, ws, stream);
  const Plan plan = make_plan(cfg, buf.segments);
  reserve_scratch(cfg, plan, ws, stream);
  dispatch(cfg.backend, plan, ws, stream);
}

}  // namespace vecnorm::detail
