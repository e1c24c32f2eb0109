// src/cpu/cpu_dispatch.cpp -- picks the build of the CPU backend for this CPU:
// AVX2 where the CPU (and OS) has it, baseline x86-64 otherwise. The
// environment variable VECNORM_CPU_ISA=baseline|avx2 forces one (read once;
// tests run the suites under both).
#include <cstdlib>
#include <cstring>

#include "../backends.hpp"
#include "vecnorm/version.hpp"

namespace vecnorm::detail::cpu {

namespace baseline {
void run(const Plan& plan, Workspace& ws);
void run(const AffinePlan& plan);
}  // namespace baseline
#if defined(VECNORM_CPU_AVX2)
namespace avx2 {
void run(const Plan& plan, Workspace& ws);
void run(const AffinePlan& plan);
}  // namespace avx2
#endif

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

}  // namespace

void run(const Plan& plan, Workspace& ws) {
#if defined(VECNORM_CPU_AVX2)
  if (use_avx2()) return avx2::run(plan, ws);
#endif
  baseline::run(plan, ws);
}

void run(const AffinePlan& plan) {
#if defined(VECNORM_CPU_AVX2)
  if (use_avx2()) return avx2::run(plan);
#endif
  baseline::run(plan);
}

}  // namespace vecnorm::detail::cpu

namespace vecnorm {
const char* cpu_isa() noexcept { return detail::cpu::use_avx2() ? "avx2" : "baseline"; }
}  // namespace vecnorm
