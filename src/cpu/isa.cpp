// src/cpu/isa.cpp -- the CPU backend's entry: picks the build of the loops for
// this CPU (AVX2 where the CPU and OS have it, baseline x86-64 otherwise; the
// environment variable VECNORM_CPU_ISA=baseline forces the latter, read once;
// tests run the suites under both) and sends each key of a plan to its loops.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "../backends.hpp"
#include "entries.hpp"
#include "vecnorm/version.hpp"

namespace vecnorm::detail::cpu {

namespace {

bool use_avx2() noexcept {
#if defined(VECNORM_CPU_AVX2) && (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
  static const bool yes = [] {
    const char* forced = std::getenv("VECNORM_CPU_ISA");
    if (forced != nullptr && std::strcmp(forced, "baseline") == 0) return false;
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return yes;
#else
  return false;
#endif
}

/// The keys of a plan through one build's loops.
template <class Isa>
void run_with(const Plan& plan, Scratch& ws) {
  for (const Segment& s : plan.segments) {
    if (uses_maps(plan.work) || plan.work == Work::denormalize)
      Isa::run_maps(plan, s, ws);
    else if (plan.pooled)
      Isa::run_pooled(plan, s, ws);
    else
      Isa::run_elementwise(plan, s, ws);
  }
}

struct Baseline {
  static void run_maps(const Plan& p, const Segment& s, Scratch& ws) { baseline::run_maps(p, s, ws); }
  static void run_pooled(const Plan& p, const Segment& s, Scratch& ws) { baseline::run_pooled(p, s, ws); }
  static void run_elementwise(const Plan& p, const Segment& s, Scratch& ws) { baseline::run_elementwise(p, s, ws); }
};
#if defined(VECNORM_CPU_AVX2)
struct Avx2 {
  static void run_maps(const Plan& p, const Segment& s, Scratch& ws) { avx2::run_maps(p, s, ws); }
  static void run_pooled(const Plan& p, const Segment& s, Scratch& ws) { avx2::run_pooled(p, s, ws); }
  static void run_elementwise(const Plan& p, const Segment& s, Scratch& ws) { avx2::run_elementwise(p, s, ws); }
};
#endif

}  // namespace

void run(const Plan& plan, Scratch& ws) {
#if defined(VECNORM_CPU_AVX2)
  if (use_avx2()) return run_with<Avx2>(plan, ws);
#endif
  run_with<Baseline>(plan, ws);
}

std::size_t scratch_bytes(const Plan& plan) {
  std::size_t bytes = 0;
  for (const Segment& s : plan.segments) {
    if (uses_maps(plan.work) || plan.work == Work::denormalize)
      bytes = std::max(bytes, baseline::maps_scratch(plan, s));
    else if (plan.pooled)
      bytes = std::max(bytes, baseline::pooled_scratch(plan, s));
  }
  return bytes;
}

}  // namespace vecnorm::detail::cpu

namespace vecnorm {
const char* cpu_isa() noexcept { return detail::cpu::use_avx2() ? "avx2" : "baseline"; }
}  // namespace vecnorm
