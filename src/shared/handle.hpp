// src/shared/handle.hpp -- the inside of a SharedVecNorm handle: where the
// segment is mapped, pointers into its slots, and the call pipeline that reads
// one slot, writes the other and publishes (see shared_vecnorm.cpp for the
// protocol). Used by shared_vecnorm.cpp (the members) and lifecycle.cpp
// (create, attach).
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../backends.hpp"
#include "../errors.hpp"
#include "../frontend/checks.hpp"
#include "../frontend/pipeline.hpp"
#include "../frontend/readout.hpp"
#include "layout.hpp"
#include "robust_mutex.hpp"
#include "vecnorm/shared.hpp"
#include "vecnorm/workspace.hpp"

namespace vecnorm {

using detail::shm::Header;
using detail::shm::Layout;
using detail::shm::seg_prefix;
using detail::shm::word;

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

  /// The handle of segment `name`, checked and mapped at `base` (`bytes`, which
  /// it unmaps when destroyed): the end of create and attach.
  static std::unique_ptr<Impl> adopt(std::string name, const Options& options, KeyTable table, Layout layout,
                                     void* base, std::size_t bytes) {
    auto impl = std::make_unique<Impl>();
    impl->name = std::move(name);
    impl->options = options;
    impl->table = std::move(table);
    impl->layout = std::move(layout);
    impl->bytes = bytes;
    impl->hdr = static_cast<Header*>(base);
    impl->base = base;
    impl->config = detail::make_config(impl->options, Backend::cpu, CountLayout::per_key);
    impl->buffers.segments.reserve(impl->table.keys.size());
    impl->buffers.keys.reserve(impl->table.keys.size());
    impl->out_slot.reserve(impl->table.keys.size());
    impl->workspace.reserve(detail::scratch_bound(impl->options, impl->table, impl->table.batch_shape.numel(), false));
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
      if (!update && detail::refuses_zero_count(cfg) && *im_.count_ptr(k, in) <= 0)
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
    detail::reserve_scratch(cfg, buffers.segments, workspace.scratch(), Stream{});
    Lock lock(*this);
    bind(cfg);
    run(cfg);
  }

  /// A call that only reads the statistics (local mutex held).
  void normalize_call(std::span<const KeyData> batch, detail::Work work) const {
    const detail::CallConfig cfg = config_for(work);
    Lock lock(*this);
    detail::plan_keys(cfg, table, batch, buffers);
    detail::reserve_scratch(cfg, buffers.segments, workspace.scratch(), Stream{});
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

}  // namespace vecnorm
