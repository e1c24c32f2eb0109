// test_simt_errors.cpp -- kernels that break CUDA's rules: the emulator must stop them with a
// message naming the rule and the call site (death tests), kernel exceptions must come out of
// simt::launch, and invalid launch configurations must be rejected. The suite runs in forward,
// reverse and shuffled order (CMakeLists.txt), so every death test is checked in each order.
#include "simt.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr unsigned kFull = 0xffffffffu;

/// Regex for "at <this file>:<line>:" in an emulator message.
std::string at_line(int line) { return "test_simt_errors\\.cpp:" + std::to_string(line) + ":"; }

class EmulatorDeath : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

// ---- Barriers -----------------------------------------------------------------------------------
constexpr int kLineBarrierA = __LINE__ + 3;
__global__ void divergent_barrier() {
  if (threadIdx.x < 16)
    __syncthreads();
  else
    __syncthreads();
}

TEST_F(EmulatorDeath, DivergentBarrierAborts) {
  EXPECT_DEATH(simt::launch(dim3(1), dim3(64), 0, divergent_barrier),
               "divergent barrier: .*wait in __syncthreads at [^ ]*test_simt_errors\\.cpp:(" + std::to_string(kLineBarrierA) + "|" +
                   std::to_string(kLineBarrierA + 2) + "):");
}

constexpr int kLineBarrierAfterExit = __LINE__ + 3;
__global__ void barrier_after_exit() {
  if (threadIdx.x >= 40) return;
  __syncthreads();
}

TEST_F(EmulatorDeath, BarrierAfterSomeThreadsExitedAborts) {
  // Strict rule (see README): exited threads never count as arrived at __syncthreads.
  EXPECT_DEATH(simt::launch(dim3(2), dim3(64), 0, barrier_after_exit), "exited.*" + at_line(kLineBarrierAfterExit));
}

constexpr int kLineBarrierVsShuffle = __LINE__ + 4;
__global__ void barrier_while_warp_waits_in_shuffle(int* out) {
  int v = static_cast<int>(threadIdx.x);
  if (threadIdx.x == 0)
    __syncthreads();
  else
    v = __shfl_sync(kFull, v, 0);
  out[threadIdx.x] = v;
}

TEST_F(EmulatorDeath, BarrierAndShuffleInDivergentBranchesAbort) {
  std::vector<int> out(32);
  EXPECT_DEATH(simt::launch(dim3(1), dim3(32), 0, barrier_while_warp_waits_in_shuffle, out.data()),
               "divergent warp-synchronous call.*(" + at_line(kLineBarrierVsShuffle) + "|" + at_line(kLineBarrierVsShuffle + 2) + ")");
}

// ---- Warp-synchronous calls ---------------------------------------------------------------------
constexpr int kLineShflDivergent = __LINE__ + 3;
__global__ void full_mask_shuffle_in_divergent_branch(float* out) {
  float v = static_cast<float>(threadIdx.x);
  if (threadIdx.x < 16) v += __shfl_down_sync(kFull, v, 8);
  out[threadIdx.x] = v;
}

TEST_F(EmulatorDeath, FullMaskShuffleInDivergentBranchAborts) {
  // Forward order: lane 16 exits while lanes 0-15 wait for it; reverse: lanes 0-15 arrive with a
  // mask naming lanes that already exited. Either way the shuffle's line is named.
  std::vector<float> out(32);
  EXPECT_DEATH(simt::launch(dim3(1), dim3(32), 0, full_mask_shuffle_in_divergent_branch, out.data()),
               "__shfl_down_sync.*exited.*" + at_line(kLineShflDivergent) + "|exited.*__shfl_down_sync.*" + at_line(kLineShflDivergent));
}

constexpr int kLineNamesExited = __LINE__ + 4;
__global__ void shuffle_names_exited_lanes(int* out) {
  const unsigned lane = threadIdx.x % 32;
  if (lane >= 30) return;
  out[threadIdx.x] = __shfl_sync(kFull, static_cast<int>(lane), 0);
}

TEST_F(EmulatorDeath, ShuffleMaskNamingExitedLanesAborts) {
  std::vector<int> out(64);
  EXPECT_DEATH(simt::launch(dim3(1), dim3(64), 0, shuffle_names_exited_lanes, out.data()), "exited.*" + at_line(kLineNamesExited));
}

constexpr int kLineNotInMask = __LINE__ + 2;
__global__ void mask_without_calling_lane(int* out) {
  out[threadIdx.x] = __shfl_sync(0x1u, static_cast<int>(threadIdx.x), 0);
}

TEST_F(EmulatorDeath, MaskWithoutTheCallingLaneAborts) {
  std::vector<int> out(32);
  EXPECT_DEATH(simt::launch(dim3(1), dim3(32), 0, mask_without_calling_lane, out.data()),
               "does not name the calling lane.*" + at_line(kLineNotInMask));
}

constexpr int kLineMissingLanes = __LINE__ + 2;
__global__ void full_mask_in_partial_warp(int* out) {
  out[threadIdx.x] = __shfl_xor_sync(kFull, static_cast<int>(threadIdx.x), 1);
}

TEST_F(EmulatorDeath, MaskNamingLanesThatDoNotExistAborts) {
  std::vector<int> out(48);
  EXPECT_DEATH(simt::launch(dim3(1), dim3(48), 0, full_mask_in_partial_warp, out.data()),
               "lanes 16-31, which do not exist.*" + at_line(kLineMissingLanes));
}

constexpr int kLineWidth = __LINE__ + 2;
__global__ void bad_width(int* out) {
  out[threadIdx.x] = __shfl_xor_sync(kFull, static_cast<int>(threadIdx.x), 1, 12);
}

TEST_F(EmulatorDeath, WidthNotAPowerOfTwoAborts) {
  std::vector<int> out(32);
  EXPECT_DEATH(simt::launch(dim3(1), dim3(32), 0, bad_width, out.data()), "width 12 is not a power of 2.*" + at_line(kLineWidth));
}

constexpr int kLineSites = __LINE__ + 5;
__global__ void same_mask_different_call_sites(int* out) {
  const unsigned lane = threadIdx.x % 32;
  int v;
  if (lane & 1u)
    v = __shfl_sync(kFull, static_cast<int>(lane), 0);
  else
    v = __shfl_sync(kFull, static_cast<int>(lane), 0);
  out[threadIdx.x] = v;
}

TEST_F(EmulatorDeath, SameMaskAtDifferentCallSitesAborts) {
  std::vector<int> out(32);
  EXPECT_DEATH(simt::launch(dim3(1), dim3(32), 0, same_mask_different_call_sites, out.data()),
               "divergent warp-synchronous call.*(" + at_line(kLineSites) + "|" + at_line(kLineSites + 2) + ")");
}

__global__ void overlapping_masks(int* out) {
  const unsigned lane = threadIdx.x % 32;
  const unsigned mask = lane < 16 ? 0x0001ffffu : 0xffff0000u;  // lane 16 is named by both calls
  out[threadIdx.x] = __shfl_xor_sync(mask, static_cast<int>(lane), 1);
}

TEST_F(EmulatorDeath, OverlappingMasksThatCannotCompleteAbort) {
  // Overlapping masks of different calls are legal while they can complete. Here lanes 16-31
  // complete their call and exit, so lane 16 never reaches the call of lanes 0-15. Forward order
  // reports the exit of lane 16, reverse order the arrival of lanes 0-15 naming exited lane 16.
  std::vector<int> out(32);
  EXPECT_DEATH(simt::launch(dim3(1), dim3(32), 0, overlapping_masks, out.data()), "exited.*__shfl_xor_sync|__shfl_xor_sync.*exited");
}

__global__ void cyclic_warp_wait(int* out) {
  const unsigned lane = threadIdx.x % 32;
  int v = static_cast<int>(lane);
  if (lane == 0)
    v = __shfl_sync(0x3u, v, 1);  // waits for lane 1
  else if (lane == 1)
    v = __shfl_sync(0x6u, v, 2);  // waits for lane 2
  else if (lane == 2)
    v = __shfl_sync(0x5u, v, 0);  // waits for lane 0
  out[threadIdx.x] = v;
}

TEST_F(EmulatorDeath, DeadlockIsDetected) {
  // No single call is wrong on its own; together no thread can proceed.
  std::vector<int> out(32);
  EXPECT_DEATH(simt::launch(dim3(1), dim3(32), 0, cyclic_warp_wait, out.data()),
               "deadlock: no thread of the block can proceed.*linear ids 0. wait in __shfl_sync.*linear ids 1. wait in "
               "__shfl_sync.*linear ids 2. wait in __shfl_sync");
}

constexpr int kLineTrap = __LINE__ + 2;
__global__ void traps(int* out) {
  if (threadIdx.x == 3 && blockIdx.x == 1) __trap();
  out[threadIdx.x] = 1;
}

TEST_F(EmulatorDeath, TrapAbortsNamingTheThread) {
  std::vector<int> out(32);
  EXPECT_DEATH(simt::launch(dim3(2), dim3(32), 0, traps, out.data()),
               "__trap\\(\\) called.*" + at_line(kLineTrap) + ".*block \\(1,0,0\\) thread \\(3,0,0\\)");
}

__global__ void launches_from_device() { simt::launch(dim3(1), dim3(1), 0, [] {}); }

TEST_F(EmulatorDeath, LaunchFromDeviceCodeAborts) {
  EXPECT_DEATH(simt::launch(dim3(1), dim3(1), 0, launches_from_device), "dynamic parallelism is not supported");
}

TEST_F(EmulatorDeath, DeviceFunctionOutsideAKernelAborts) {
  EXPECT_DEATH(__syncthreads(), "__syncthreads called outside a kernel");
  EXPECT_DEATH(__shfl_sync(kFull, 1, 0), "__shfl_sync called outside a kernel");
}

TEST_F(EmulatorDeath, InvalidEnvironmentAborts) {
  EXPECT_DEATH(
      {
        setenv("SIMT_WORKERS", "two", 1);
        simt::detail::config_from_environment();
      },
      "SIMT_WORKERS='two' is not an integer");
}

// ---- AddressSanitizer builds: shared memory overflows are found ---------------------------------
#if SIMT_ASAN
__global__ void static_shared_overflow(int* out) {
  __shared__ int s[32];  // a plain static under ASan (SIMT_SINGLE_WORKER): it has redzones
  s[threadIdx.x] = 1;    // 33 threads: thread 32 writes past the end
  out[threadIdx.x] = s[threadIdx.x] + 1;
}

TEST_F(EmulatorDeath, AsanFindsAStaticSharedOverflow) {
  // ASan's report, or UBSan's if it is on too (it checks the index first).
  std::vector<int> out(33);
  EXPECT_DEATH(simt::launch(dim3(1), dim3(33), 0, static_shared_overflow, out.data()),
               "AddressSanitizer: global-buffer-overflow|runtime error: .*(out of bounds|insufficient space)");
}

__global__ void dynamic_shared_overflow(int* out) {
  SIMT_DYNAMIC_SHARED(int, s);
  s[threadIdx.x] = 1;  // 32 ints of dynamic shared memory, 33 threads
  out[threadIdx.x] = s[0];
}

TEST_F(EmulatorDeath, AsanFindsADynamicSharedOverflow) {
  std::vector<int> out(33);
  EXPECT_DEATH(simt::launch(dim3(1), dim3(33), 32 * sizeof(int), dynamic_shared_overflow, out.data()),
               "AddressSanitizer: heap-buffer-overflow");
}
#endif

// ---- Exceptions ---------------------------------------------------------------------------------
__global__ void throws_in_one_thread(int bad_block, int bad_thread, int* arrived) {
  atomicAdd(arrived, 1);
  if (static_cast<int>(blockIdx.x) == bad_block && static_cast<int>(threadIdx.x) == bad_thread)
    throw std::runtime_error("kernel failure in block " + std::to_string(bad_block));
  __syncthreads();  // the other threads of the block wait here when the thread throws
}

__global__ void adds_one(int* counter) { atomicAdd(counter, 1); }

TEST(Exceptions, AKernelExceptionPropagatesOutOfLaunch) {
  for (unsigned workers : {1u, 2u, 3u}) {
    simt::Config c = simt::get_config();
    c.workers = workers;
    simt::ScopedConfig scope(c);
    for (int bad_thread : {0, 17, 63}) {
      int arrived = 0;
      try {
        simt::launch(dim3(8), dim3(64), 0, throws_in_one_thread, 5, bad_thread, &arrived);
        ADD_FAILURE() << "no exception";
      } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "kernel failure in block 5");
      }
      EXPECT_GT(arrived, 0);
      EXPECT_LE(arrived, 8 * 64);
      // The emulator is usable afterwards (stacks of abandoned threads are reused).
      int counter = 0;
      simt::launch(dim3(8), dim3(64), 0, adds_one, &counter);
      EXPECT_EQ(counter, 8 * 64);
    }
  }
}

TEST(Exceptions, ExceptionsOfLambdaKernelsPropagateToo) {
  struct Custom {
    int code;
  };
  try {
    simt::launch(dim3(3), dim3(32), 0, [](int code) {
      if (blockIdx.x == 2 && threadIdx.x == 31) throw Custom{code};
    }, 42);
    ADD_FAILURE() << "no exception";
  } catch (const Custom& e) {
    EXPECT_EQ(e.code, 42);
  }
}

// ---- Launch configuration -----------------------------------------------------------------------
TEST(LaunchConfiguration, InvalidConfigurationsThrowLaunchError) {
  auto k = [] {};
  EXPECT_THROW(simt::launch(dim3(0), dim3(32), 0, k), simt::launch_error);
  EXPECT_THROW(simt::launch(dim3(1), dim3(0), 0, k), simt::launch_error);
  EXPECT_THROW(simt::launch(dim3(1), dim3(2048), 0, k), simt::launch_error);
  EXPECT_THROW(simt::launch(dim3(1), dim3(32, 32, 2), 0, k), simt::launch_error);
  EXPECT_THROW(simt::launch(dim3(1), dim3(1, 1, 65), 0, k), simt::launch_error);
  EXPECT_THROW(simt::launch(dim3(1, 65536), dim3(32), 0, k), simt::launch_error);
  EXPECT_THROW(simt::launch(dim3(1), dim3(32), 300 * 1024, k), simt::launch_error);
#if !SIMT_TSAN  // 1024 TSan fibers would slow down every later synchronization of the process
  EXPECT_NO_THROW(simt::launch(dim3(1), dim3(1024), 0, k));
#endif
  EXPECT_NO_THROW(simt::launch(dim3(1), dim3(32), 100 * 1024, k));
}

TEST(LaunchConfiguration, ArgumentsArePassedByValueToEveryThread) {
  struct Params {
    int base;
    int* out;
  };
  std::vector<int> out(2 * 96);
  simt::launch(dim3(2), dim3(96), 0, [](Params p, int scale) {
    const int g = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
    p.base += g;  // each thread has its own copy
    p.out[g] = p.base * scale;
  }, Params{1000, out.data()}, 2);
  for (int g = 0; g < 2 * 96; ++g) EXPECT_EQ(out[g], (1000 + g) * 2) << g;
}

}  // namespace
