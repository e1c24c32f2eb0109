// tests/core/isa_test.cpp -- the CPU backend's instruction-set dispatch
// (src/cpu/cpu_dispatch.cpp): VECNORM_CPU_ISA=baseline forces the baseline
// build (ctest runs the core suite once more that way: core.baseline_isa), and
// AVX2 is never chosen on a CPU without it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include <vecnorm/vecnorm.hpp>

namespace {

TEST(CpuIsa, FollowsTheEnvironmentAndTheCpu) {
  const std::string isa = vecnorm::cpu_isa();
  EXPECT_TRUE(isa == "baseline" || isa == "avx2") << isa;
  const char* forced = std::getenv("VECNORM_CPU_ISA");
  if (forced != nullptr && std::string(forced) == "baseline") {
    EXPECT_EQ(isa, "baseline");
  }
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
  if (!__builtin_cpu_supports("avx2")) {
    EXPECT_EQ(isa, "baseline");
  }
#endif
  std::printf("cpu_isa: %s\n", isa.c_str());
}

}  // namespace
