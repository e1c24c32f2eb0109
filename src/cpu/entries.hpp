// src/cpu/entries.hpp -- the entry points of the CPU loop files, once per
// instruction set (src/cpu/isa_begin.hpp); src/cpu/isa.cpp calls one set.
#pragma once

#include <cstddef>

#include "../backends.hpp"
#include "../plan.hpp"
#include "../workspace.hpp"

namespace vecnorm::detail::cpu {

#define VECNORM_CPU_ENTRIES                                                                \
  /* Per-element statistics: step / update / normalize of one segment. */                 \
  void run_elementwise(const Plan& plan, const Segment& s, Scratch& ws);                   \
  /* Pooled statistics: step / update / normalize of one segment. */                      \
  void run_pooled(const Plan& plan, const Segment& s, Scratch& ws);                         \
  /* Maps: denormalize from statistics, or fixed maps (apply / invert) of one segment. */ \
  void run_maps(const Plan& plan, const Segment& s, Scratch& ws);                           \
  /* The host scratch bytes run_pooled / run_maps take for segment s. */                  \
  std::size_t pooled_scratch(const Plan& plan, const Segment& s);                          \
  std::size_t maps_scratch(const Plan& plan, const Segment& s);                            \
  /* A reward scaler's pass (src/cpu/returns.cpp). */                                     \
  void run_returns(const ReturnPass& pass);

namespace baseline {
VECNORM_CPU_ENTRIES
}
namespace avx2 {
VECNORM_CPU_ENTRIES
}
namespace avx512 {  // the per-element loops only (CMakeLists.txt)
void run_elementwise(const Plan& plan, const Segment& s, Scratch& ws);
}
#undef VECNORM_CPU_ENTRIES

}  // namespace vecnorm::detail::cpu
