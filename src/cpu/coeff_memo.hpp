// src/cpu/coeff_memo.hpp -- count-dependent coefficients through the
// workspace's memo (CoeffMemo, src/workspace.hpp), for the pooled and the
// per-element loops. Included after src/cpu/loops.hpp.
#pragma once

namespace vecnorm::detail::cpu::VECNORM_CPU_ISA {
namespace {

/// The count-dependent coefficients of a call, through the workspace's memo:
/// the same core function of the same arguments (the same bits), an expm1 or
/// two fewer each hit. In a step of k keys of one count, 1 update in k misses;
/// a pooled step's shift of the next step is always a hit (remember_shift).
enum MemoKind : int { kMemoShift = 0, kMemoUpdate = 1, kMemoNormalize = 2 };

template <class Est>
core::Coeffs<double> memo_coeffs(CoeffMemo& memo, MemoKind kind, const core::Decay& d, std::int64_t n,
                                 std::int64_t m) {
  const int tag = 2 * kind + static_cast<int>(Est::kind);
  if (const core::Coeffs<double>* hit = memo.find(tag, d, n, m)) return *hit;
  const core::Coeffs<double> c = kind == kMemoShift    ? core::PooledOps<Est>::shift_coeffs(d, n)
                                 : kind == kMemoUpdate ? core::update_coeffs<Est, double>(d, n, m)
                                                       : core::normalize_coeffs<Est, double>(d, n);
  memo.put(tag, d, n, m, c);
  return c;
}

/// torchrl: the update to `count` computed the normalization's coefficients
/// at `count` (`after`), which are shift_coeffs(count): remembered for the
/// next call's shift (stable's are constants, not worth a memo entry).
template <class Est>
void remember_shift(CoeffMemo& memo, const core::Decay& d, std::int64_t count, const core::Coeffs<double>& after) {
  if constexpr (Est::kind == Estimator::torchrl) {
    constexpr int tag = 2 * kMemoShift + static_cast<int>(Est::kind);
    if (memo.find(tag, d, count, 0) == nullptr) memo.put(tag, d, count, 0, after);
  }
}

}  // namespace
}  // namespace vecnorm::detail::cpu::VECNORM_CPU_ISA
