// tests/core/isa_test.cpp -- the CPU backend's instruction-set dispatch
// (src/cpu/isa.cpp): VECNORM_CPU_ISA=baseline / =avx2 cap the build (ctest runs
// the core suite's CPU cases once more each way: core.baseline_isa,
// core.avx2_isa), and no build is chosen on a CPU without its instructions.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include <vecnorm/vecnorm.hpp>

namespace {

TEST(CpuIsa, FollowsTheEnvironmentAndTheCpu) {
  const std::string isa = vecnorm::cpu_isa();
  EXPECT_TRUE(isa == "baseline" || isa == "avx2" || isa == "avx512") << isa;
  const char* forced = std::getenv("VECNORM_CPU_ISA");
  if (forced != nullptr && std::string(forced) == "baseline") {
    EXPECT_EQ(isa, "baseline");
  }
  if (forced != nullptr && std::string(forced) == "avx2") {
    EXPECT_NE(isa, "avx512");
  }
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
  if (!__builtin_cpu_supports("avx2")) {
    EXPECT_EQ(isa, "baseline");
  }
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw")) {
    EXPECT_NE(isa, "avx512");
  }
  if (forced == nullptr && __builtin_cpu_supports("avx2")) {
    EXPECT_NE(isa, "baseline");  // the widest build is chosen
  }
#endif
  std::printf("cpu_isa: %s\n", isa.c_str());
}

}  // namespace
