// test_simt_cuda_headers.cpp -- kernels that include CUDA toolkit headers after simt.hpp
// (cuda_fp16.h, cuda_bf16.h: host-compilable) keep the emulator's __shared__ and built-ins, and
// half types shuffle. Built only when the toolkit's include directory is known (CMakeLists.txt).
#include "simt.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <gtest/gtest.h>

#include <vector>

static_assert(SIMT_CUDA_VECTOR_TYPES == 1, "vector_types.h of the CUDA toolkit is used");

namespace {

__global__ void half_roundtrip(const float* in, float* out_half, float* out_bf16) {
  __shared__ float4 staging[32];  // CUDA vector type, emulator __shared__
  const unsigned lane = threadIdx.x;
  staging[lane] = make_float4(in[lane], 0.f, 0.f, 0.f);
  __syncwarp();
  const __half h = __float2half(staging[(lane + 1) % 32].x);
  const __half hs = __shfl_xor_sync(0xffffffffu, h, 1);  // class-type shuffle
  out_half[lane] = __half2float(hs);
  const __nv_bfloat16 b = __float2bfloat16(in[lane]);
  out_bf16[lane] = __bfloat162float(__shfl_down_sync(0xffffffffu, b, 1));
}

TEST(CudaHeaders, HalfAndBfloat16KernelsRunUnderTheEmulator) {
  std::vector<float> in(32), h(32), b(32);
  for (int i = 0; i < 32; ++i) in[i] = 0.5f * static_cast<float>(i);  // exact in half and bfloat16
  simt::launch(dim3(1), dim3(32), 0, half_roundtrip, in.data(), h.data(), b.data());
  for (int l = 0; l < 32; ++l) {
    EXPECT_EQ(h[l], in[((l ^ 1) + 1) % 32]) << l;
    EXPECT_EQ(b[l], in[l + 1 < 32 ? l + 1 : l]) << l;
  }
}

}  // namespace
