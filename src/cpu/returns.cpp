// src/cpu/returns.cpp -- a reward scaler's passes on the CPU: one loop over
// the (few) reward elements, the core's formulas (vecnorm/core/returns.hpp).
#include <cstdint>

#include "../backends.hpp"

namespace vecnorm::detail::cpu {

namespace {
template <class T>
void returns_of(const ReturnPass& p) {
  T* state = static_cast<T*>(p.state);
  T* entered = static_cast<T*>(p.entered);
  const core::ReturnRule<T> rule{static_cast<T>(p.gamma), p.reset};
  const std::int64_t n = p.rows * p.feat;
  if (p.kept) {
    for (std::int64_t i = 0; i < n; ++i)
      state[i] = core::return_kept(state[i], entered[i], core::return_done(p.done, i, p.feat, rule),
                                   core::return_active(p.mask, i, p.feat), rule);
    return;
  }
  const T* r = static_cast<const T*>(p.reward);
  for (std::int64_t i = 0; i < n; ++i)
    entered[i] = core::return_entered(state[i], r[i], core::return_done(p.done, i, p.feat, rule),
                                      core::return_active(p.mask, i, p.feat), rule);
}
}  // namespace

void returns(const ReturnPass& p) {
  if (p.dtype == DType::float64)
    returns_of<double>(p);
  else
    returns_of<float>(p);
}

}  // namespace vecnorm::detail::cpu
