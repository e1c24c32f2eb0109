// src/cpu/isa.cpp -- the CPU backend's entry: picks the build of the loops for
// this CPU (AVX-512 where the CPU and OS have it, else AVX2, else baseline
// x86-64; the environment variable VECNORM_CPU_ISA=avx2 or =baseline caps the
// choice, read once; tests run the CPU suites under each) and sends each key of a plan to its loops.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "../backends.hpp"
#include "entries.hpp"
#include "pool.hpp"
#include "vecnorm/version.hpp"

namespace vecnorm::detail::cpu {

namespace {

/// The instruction sets of the builds of the loops, in increasing order.
enum class Isa : int { baseline = 0, avx2 = 1, avx512 = 2 };

/// The widest build this CPU (and its OS) runs, lowered to VECNORM_CPU_ISA
/// (baseline, avx2 or avx512) where that is set; read once.
Isa chosen_isa() noexcept {
#if defined(VECNORM_CPU_AVX2) && (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
  static const Isa isa = [] {
    Isa best = Isa::baseline;
    if (__builtin_cpu_supports("avx2")) best = Isa::avx2;
    if (best == Isa::avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
      best = Isa::avx512;
    Isa cap = Isa::avx512;
    if (const char* forced = std::getenv("VECNORM_CPU_ISA")) {
      if (std::strcmp(forced, "baseline") == 0) cap = Isa::baseline;
      if (std::strcmp(forced, "avx2") == 0) cap = Isa::avx2;
    }
    return std::min(best, cap);
  }();
  return isa;
#else
  return Isa::baseline;
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
/// AVX-512 for the per-element loops; the pooled loops and the maps stay AVX2
/// (measured: the pooled loops are slower with 512-bit vectors).
struct Avx512 {
  static void run_maps(const Plan& p, const Segment& s, Scratch& ws) { avx2::run_maps(p, s, ws); }
  static void run_pooled(const Plan& p, const Segment& s, Scratch& ws) { avx2::run_pooled(p, s, ws); }
  static void run_elementwise(const Plan& p, const Segment& s, Scratch& ws) { avx512::run_elementwise(p, s, ws); }
};
#endif

}  // namespace

namespace {
void run_isa(const Plan& plan, Scratch& ws) {
#if defined(VECNORM_CPU_AVX2)
  switch (chosen_isa()) {
    case Isa::avx512: return run_with<Avx512>(plan, ws);
    case Isa::avx2: return run_with<Avx2>(plan, ws);
    case Isa::baseline: break;
  }
#endif
  run_with<Baseline>(plan, ws);
}
}  // namespace

void run(const Plan& plan, Scratch& ws) {
  // The executor's scope only where there is one: a thread_local costs a
  // __tls_get_addr call in a shared library, measurable on a 1x17 step.
  if (plan.executor.custom()) {
    const ExecutorScope executor(plan.executor);
    return run_isa(plan, ws);
  }
  run_isa(plan, ws);
}

void returns(const ReturnPass& pass) {
#if defined(VECNORM_CPU_AVX2)
  if (chosen_isa() != Isa::baseline) return avx2::run_returns(pass);  // (AVX-512: the AVX2 build, as the pooled loops)
#endif
  baseline::run_returns(pass);
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
const char* cpu_isa() noexcept {
  switch (detail::cpu::chosen_isa()) {
    case detail::cpu::Isa::avx512: return "avx512";
    case detail::cpu::Isa::avx2: return "avx2";
    case detail::cpu::Isa::baseline: break;
  }
  return "baseline";
}
}  // namespace vecnorm
