// nvcc_check.cu -- compiles the emulator's test kernels (test_kernels.cuh, unchanged) with nvcc:
// the source the emulator runs in the tests is real CUDA. Compiled by the CTest test
// simt.test_kernels_nvcc when the CUDA toolkit is found; never linked or run.
#include "test_kernels.cuh"

using namespace simt_test;

void launch_every_test_kernel() {
  record_geometry<<<1, 32>>>(nullptr);
  shuffle_modes<int><<<1, 64>>>(nullptr, nullptr, 1u, 32, nullptr, nullptr, nullptr, nullptr);
  shuffle_modes<unsigned><<<1, 64>>>(nullptr, nullptr, 1u, 16, nullptr, nullptr, nullptr, nullptr);
  shuffle_modes<long long><<<1, 64>>>(nullptr, nullptr, 1u, 8, nullptr, nullptr, nullptr, nullptr);
  shuffle_modes<unsigned long long><<<1, 64>>>(nullptr, nullptr, 1u, 4, nullptr, nullptr, nullptr, nullptr);
  shuffle_modes<float><<<1, 64>>>(nullptr, nullptr, 1u, 2, nullptr, nullptr, nullptr, nullptr);
  shuffle_modes<double><<<1, 64>>>(nullptr, nullptr, 1u, 1, nullptr, nullptr, nullptr, nullptr);
  shuffle_partial_masks<<<1, 96>>>(nullptr, nullptr);
  shuffle_from_outside_mask<float><<<1, 32>>>(nullptr, nullptr);
  shuffle_from_outside_mask<int><<<1, 32>>>(nullptr, nullptr);
  votes<<<1, 128>>>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr);
  match_reduce<<<1, 64>>>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr);
  active_masks<<<1, 64>>>(nullptr, nullptr, nullptr);
  syncwarp_exchange<<<1, 64>>>(nullptr, nullptr, nullptr, nullptr);
  syncwarp_partial_warp<<<1, 48>>>(nullptr);
  barrier_votes<<<5, 96>>>(nullptr, nullptr, nullptr, nullptr);
  block_sums<256><<<4, 256>>>(nullptr, 0, nullptr);
  block_scan<<<4, 256>>>(nullptr, nullptr);
  static_shared<<<24, 128>>>(nullptr, nullptr);
  dynamic_shared<<<9, 64, 268>>>(nullptr, nullptr, nullptr, nullptr);
  atomics_contention<<<96, 128>>>(nullptr);
  sum_last_block_merges<256><<<29, 256>>>(nullptr, 0, nullptr, nullptr, nullptr, nullptr);
  exited_lanes_sum<<<1, 64>>>(nullptr, 20, nullptr, nullptr);
  missing_barrier<<<1, 64>>>(1, nullptr);
  column_moments_tile<8><<<dim3(2, 8), dim3(32, 8)>>>(nullptr, 0, 0, 0, nullptr, nullptr);
  column_moments_block<256><<<dim3(64, 8), 256>>>(nullptr, 0, 0, 0, nullptr, nullptr);
  empty_kernel<<<4, 64>>>();
}
