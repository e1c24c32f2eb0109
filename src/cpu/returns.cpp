// src/cpu/returns.cpp -- a reward scaler's passes on the CPU: one loop over
// the (few) reward elements, the core's formulas (vecnorm/core/returns.hpp).
// A loop file (src/cpu/isa_begin.hpp): built for baseline x86-64 and for AVX2
// (4096 rewards: the passes take about half the time at 8 lanes); isa.cpp
// picks one.
#include <cstdint>

#include "../backends.hpp"
#include "entries.hpp"
#include "isa_begin.hpp"

namespace vecnorm::detail::cpu::VECNORM_CPU_ISA {

namespace {

/// One pass over one reward per environment (feat 1, the usual case): a flat
/// loop the compiler vectorizes. HasDone / HasMask: the dones are read (given,
/// and the rule reads them) / a row mask is given; the pointers are then
/// non-null, which lets the loads be unconditional. The buffers never overlap
/// (check_returns).
template <class T, bool HasDone, bool HasMask>
void flat_pass(const ReturnPass& p, const core::ReturnRule<T> rule) {  // (by value: it aliases no store)
  T* __restrict st = static_cast<T*>(p.state);
  T* __restrict en = static_cast<T*>(p.entered);
  const T* __restrict x = static_cast<const T*>(p.reward);
  const std::uint8_t* __restrict done = HasDone ? p.done : nullptr;
  const std::uint8_t* __restrict mask = HasMask ? p.mask : nullptr;
  if (HasDone && done == nullptr) __builtin_unreachable();
  if (HasMask && mask == nullptr) __builtin_unreachable();
  const std::int64_t n = p.rows;
  if (p.kept)
    for (std::int64_t i = 0; i < n; ++i)
      st[i] = core::return_kept(st[i], en[i], core::return_done_row(done, i, rule), core::return_active_row(mask, i),
                                rule);
  else
    for (std::int64_t i = 0; i < n; ++i)
      en[i] = core::return_entered(st[i], x[i], core::return_done_row(done, i, rule),
                                   core::return_active_row(mask, i), rule);
}

template <class T>
void returns_of(const ReturnPass& p) {
  T* state = static_cast<T*>(p.state);
  T* entered = static_cast<T*>(p.entered);
  const core::ReturnRule<T> rule{static_cast<T>(p.gamma), p.reset, p.hold};
  if (p.feat == 1) {
    const bool dones = p.done != nullptr && p.reset != ReturnReset::never;
    if (dones && p.mask != nullptr) return flat_pass<T, true, true>(p, rule);
    if (dones) return flat_pass<T, true, false>(p, rule);
    if (p.mask != nullptr) return flat_pass<T, false, true>(p, rule);
    return flat_pass<T, false, false>(p, rule);
  }
  const T* r = static_cast<const T*>(p.reward);
  // Row by row: an environment's done and mask byte once, then its features.
  for (std::int64_t row = 0; row < p.rows; ++row) {
    const bool done = core::return_done_row(p.done, row, rule);
    const bool active = core::return_active_row(p.mask, row);
    const std::int64_t i0 = row * p.feat, i1 = i0 + p.feat;
    if (p.kept)
      for (std::int64_t i = i0; i < i1; ++i) state[i] = core::return_kept(state[i], entered[i], done, active, rule);
    else
      for (std::int64_t i = i0; i < i1; ++i) entered[i] = core::return_entered(state[i], r[i], done, active, rule);
  }
}
}  // namespace

void run_returns(const ReturnPass& p) {
  if (p.dtype == DType::float64)
    returns_of<double>(p);
  else
    returns_of<float>(p);
}

}  // namespace vecnorm::detail::cpu::VECNORM_CPU_ISA

#include "isa_end.hpp"
