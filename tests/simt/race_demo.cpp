// race_demo.cpp -- planted data races for the ThreadSanitizer build (simt_race_demo <mode>):
//   block  missing __syncthreads between a shared-memory write and another warp's read
//   warp   missing __syncwarp between a shared-memory write and another lane's read
//   grid   blocks update one global counter without atomics (needs SIMT_WORKERS >= 2)
//   none   the corrected versions of the three kernels: TSan must stay silent
// The CTest tests registered for VECNORM_SANITIZER=thread pass only if TSan reports a data race
// for block, warp and grid, and none for none. Without TSan this program just runs the kernels.
#include "simt.hpp"

#include <cstdio>
#include <cstring>
#include <vector>

namespace {

template <bool kSync>
__global__ void shared_exchange_between_warps(const int* in, int* out) {
  __shared__ int s[64];
  s[threadIdx.x] = in[threadIdx.x];
  if (kSync) __syncthreads();
  out[threadIdx.x] = s[63 - threadIdx.x];  // written by the other warp
}

template <bool kSync>
__global__ void shared_exchange_within_warp(const int* in, int* out) {
  __shared__ int s[32];
  s[threadIdx.x] = in[threadIdx.x];
  if (kSync) __syncwarp();
  out[threadIdx.x] = s[threadIdx.x ^ 1u];  // written by the neighbouring lane
}

template <bool kAtomic>
__global__ void count_blocks(int* counter) {
  if (threadIdx.x == 0) {
    if (kAtomic)
      atomicAdd(counter, 1);
    else
      *counter += 1;
  }
}

template <bool kCorrect>
int run(const char* mode) {
  std::vector<int> in(64), out(64, 0);
  for (int i = 0; i < 64; ++i) in[i] = i * i;
  int counter = 0;
  const bool all = std::strcmp(mode, "none") == 0;
  if (all || std::strcmp(mode, "block") == 0) simt::launch(dim3(1), dim3(64), 0, shared_exchange_between_warps<kCorrect>, in.data(), out.data());
  if (all || std::strcmp(mode, "warp") == 0) simt::launch(dim3(1), dim3(32), 0, shared_exchange_within_warp<kCorrect>, in.data(), out.data());
  if (all || std::strcmp(mode, "grid") == 0) simt::launch(dim3(8), dim3(32), 0, count_blocks<kCorrect>, &counter);
  std::printf("simt_race_demo %s: out[0]=%d counter=%d (workers %u)\n", mode, out[0], counter, simt::get_config().workers);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "";
  if (std::strcmp(mode, "none") == 0) return run<true>(mode);
  if (std::strcmp(mode, "block") == 0 || std::strcmp(mode, "warp") == 0 || std::strcmp(mode, "grid") == 0) return run<false>(mode);
  std::fprintf(stderr, "usage: simt_race_demo block|warp|grid|none\n");
  return 2;
}
