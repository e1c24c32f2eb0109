// src/shared/shared_vecnorm.cpp -- SharedVecNorm: statistics in a named POSIX
// shared-memory segment, stepped by several processes (docs/shared.md). What
// the segment holds and where is layout.hpp's; its lock is robust_mutex.hpp's.
//
// The segment holds a header (identity, options, offsets, the published
// sequence number, a robust process-shared mutex), the key table, two
// "views" and, for every key, two slots of loc/var/count/skipped (and skips
// in per-element mode). A view says which slot of
// each key is current; the published sequence number `seq` says which view is
// current (seq & 1). A call that changes statistics:
//
//   1. validates everything through the call pipeline (src/frontend) and,
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

#include <cstring>
#include <mutex>

#include "../state/schema.hpp"
#include "handle.hpp"

namespace vecnorm {

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
  // Its options are the segment's; its key table is the one this handle was
  // created or attached with, the caller's (pooled: the batch shape may differ).
  const std::string prefix = seg_prefix(im.name) + "import_state: ";
  const detail::OptionCodes mine = detail::option_codes(im.options, im.table),
                            theirs = detail::option_codes(state.options, state.table);
  detail::check_same_options({prefix, "the segment's", "the state's"}, mine, theirs);
  detail::check_same_table({prefix, "the caller's", "the state's"}, im.options.reduce_batch_dims, im.table,
                           state.table);
  detail::check_same_stats_dtype({prefix, "the segment's", "the state's"}, mine.stats_dtype, theirs.stats_dtype);
  for (std::size_t k = 0; k < state.keys.size(); ++k) {
    const KeyState& ks = state.keys[k];
    if (ks.skips.empty()) continue;
    const std::string key = detail::key_prefix(state.table.keys[k].name);
    if (!im.layout.has_skips)
      detail::fail(ErrorCode::state_mismatch, prefix + key + "skips: expected none (pooled statistics), got " +
                                                  std::to_string(ks.skips.size()) + " values (the state's)");
    if (ks.skips.size() * sizeof(std::int64_t) != im.layout.skips_bytes[k])
      detail::fail(ErrorCode::state_mismatch, prefix + key + "skips: expected 0 or " +
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
