// tests/nccl/nccl_collective_test.cpp -- vecnorm::NcclCollective on a
// one-rank communicator (ncclCommInitAll of device 0): all_gather of device
// buffers, the argument checks, and a CUDA pooled VecNorm step with the
// collective against one without. Every test but the null-communicator check
// skips, with the reason, where no CUDA device is usable.
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <nccl.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <vecnorm/nccl.hpp>
#include <vecnorm/vecnorm.hpp>

namespace {

using vecnorm::Backend;
using vecnorm::Buffer;
using vecnorm::Device;
using vecnorm::DType;
using vecnorm::ErrorCode;
using vecnorm::Shape;

#define CUDA_OK(call)                                                         \
  do {                                                                        \
    const cudaError_t rc_ = (call);                                           \
    ASSERT_EQ(rc_, cudaSuccess) << #call << ": " << cudaGetErrorString(rc_); \
  } while (0)

// Why no test can run here, or "" when a device is usable.
std::string no_gpu_reason() {
  int n = 0;
  const cudaError_t rc = cudaGetDeviceCount(&n);
  if (rc != cudaSuccess) return std::string("no usable CUDA device: cudaGetDeviceCount: ") + cudaGetErrorString(rc);
  if (n == 0) return "no CUDA device (cudaGetDeviceCount = 0)";
  if (!vecnorm::cuda_available()) return "the vecnorm library reports no usable CUDA device";
  return "";
}

class Nccl : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = no_gpu_reason();
    if (!why.empty()) GTEST_SKIP() << why;
    int dev = 0;
    const ncclResult_t rc = ncclCommInitAll(&comm_, 1, &dev);
    ASSERT_EQ(rc, ncclSuccess) << "ncclCommInitAll(1 device): " << ncclGetErrorString(rc);
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
  }
  void TearDown() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    if (comm_ != nullptr) ncclCommDestroy(comm_);
  }
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

TEST(NcclNoDevice, NullCommunicatorIsRejected) {
  try {
    vecnorm::NcclCollective c(nullptr);
    ADD_FAILURE() << "a null communicator was accepted";
  } catch (const vecnorm::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
  }
}

TEST_F(Nccl, RankSizeNameDevice) {
  auto c = vecnorm::nccl_collective(comm_);
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->size(), 1);
  EXPECT_EQ(c->name(), "nccl");
  auto* n = dynamic_cast<vecnorm::NcclCollective*>(c.get());
  ASSERT_NE(n, nullptr);
  EXPECT_EQ(n->device(), 0);
  EXPECT_EQ(n->communicator(), comm_);
}

TEST_F(Nccl, AllGatherDeviceBuffers) {
  vecnorm::NcclCollective c(comm_);
  for (std::size_t bytes : {std::size_t{1}, std::size_t{24}, std::size_t{1} << 20}) {
    std::vector<std::uint8_t> host(bytes), back(bytes + 8, 0);
    for (std::size_t i = 0; i < bytes; ++i) host[i] = static_cast<std::uint8_t>(i * 7 + 3);
    void* send = nullptr;
    void* recv = nullptr;
    CUDA_OK(cudaMalloc(&send, bytes));
    CUDA_OK(cudaMalloc(&recv, bytes + 8));
    CUDA_OK(cudaMemset(recv, 0xA5, bytes + 8));
    CUDA_OK(cudaMemcpy(send, host.data(), bytes, cudaMemcpyHostToDevice));
    EXPECT_NO_THROW(c.all_gather(send, recv, bytes, Device::cuda(0), vecnorm::Stream{stream_})) << bytes;
    CUDA_OK(cudaStreamSynchronize(stream_));
    CUDA_OK(cudaMemcpy(back.data(), recv, bytes + 8, cudaMemcpyDeviceToHost));
    EXPECT_EQ(std::memcmp(back.data(), host.data(), bytes), 0) << bytes << " bytes";
    for (std::size_t i = bytes; i < bytes + 8; ++i) EXPECT_EQ(back[i], 0xA5) << "wrote past the end";
    cudaFree(send);
    cudaFree(recv);
  }
  EXPECT_NO_THROW(c.all_gather(nullptr, nullptr, 0, Device::cuda(0), vecnorm::Stream{stream_}));
}

TEST_F(Nccl, HostAndForeignDeviceBuffersAreRejected) {
  vecnorm::NcclCollective c(comm_);
  std::uint8_t s[8] = {}, r[8] = {};
  try {
    c.all_gather(s, r, 8, Device::cpu(), {});
    ADD_FAILURE() << "host buffers were accepted";
  } catch (const vecnorm::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("MPI"), std::string::npos) << e.what();
  }
  try {
    c.all_gather(s, r, 8, Device::cuda(1), {});
    ADD_FAILURE() << "buffers of another device were accepted";
  } catch (const vecnorm::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
  }
}

std::vector<float> data(int key, int step, std::int64_t n) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    v[static_cast<std::size_t>(i)] =
        static_cast<float>(2.0 + key + std::sin(0.1 * static_cast<double>(i) + 0.7 * step + key) * (1 + i % 7));
  return v;
}

double max_rel(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double s = std::max(std::fabs(a[i]), std::fabs(b[i]));
    if (s > 0) m = std::max(m, std::fabs(a[i] - b[i]) / s);
  }
  return a.size() == b.size() ? m : INFINITY;
}

// A pooled CUDA step with the (one-rank) collective equals one without.
TEST_F(Nccl, PooledCudaStepWithTheCollectiveEqualsOneWithout) {
  for (vecnorm::Estimator est : {vecnorm::Estimator::torchrl, vecnorm::Estimator::stable}) {
    vecnorm::Options o;
    o.backend = Backend::cuda;
    o.reduce_batch_dims = true;
    o.decay = 0.99;
    o.estimator = est;
    vecnorm::Options oc = o;
    oc.collective = vecnorm::nccl_collective(comm_);
    const std::int64_t B = 64, F = 5;
    const vecnorm::KeyTable table{Shape{B}, {{"obs", Shape{F}, DType::float32}, {"reward", Shape{}, DType::float32}}};
    vecnorm::VecNorm with(oc, table), without(o, table);
    Buffer x(Backend::cuda, B * F * 4), y1(Backend::cuda, B * F * 4), y2(Backend::cuda, B * F * 4);
    Buffer r(Backend::cuda, B * 4), ry1(Backend::cuda, B * 4), ry2(Backend::cuda, B * 4);
    double worst = 0;
    bool same_bits = true;
    for (int step = 0; step < 10; ++step) {
      const auto hx = data(0, step, B * F);
      const auto hr = data(1, step, B);
      x.copy_from_host(hx.data(), hx.size() * 4);
      r.copy_from_host(hr.data(), hr.size() * 4);
      vecnorm::Stream s{stream_};
      EXPECT_NO_THROW(with.step({{"obs", x.view(DType::float32, {B, F}), y1.view(DType::float32, {B, F})},
                                 {"reward", r.view(DType::float32, {B}), ry1.view(DType::float32, {B})}},
                                s));
      without.step({{"obs", x.view(DType::float32, {B, F}), y2.view(DType::float32, {B, F})},
                    {"reward", r.view(DType::float32, {B}), ry2.view(DType::float32, {B})}},
                   s);
      vecnorm::synchronize(Backend::cuda, s);
      std::vector<float> a(static_cast<std::size_t>(B * F)), b(a.size());
      y1.copy_to_host(a.data(), a.size() * 4);
      y2.copy_to_host(b.data(), b.size() * 4);
      same_bits = same_bits && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
      worst = std::max(worst, max_rel(std::vector<double>(a.begin(), a.end()), std::vector<double>(b.begin(), b.end())));
    }
    EXPECT_EQ(with.count("obs"), 10 * B);
    for (const char* key : {"obs", "reward"}) {
      worst = std::max(worst, max_rel(with.loc(key), without.loc(key)));
      worst = std::max(worst, max_rel(with.scale(key), without.scale(key)));
    }
    EXPECT_LE(worst, 1e-5) << vecnorm::to_string(est);
    std::printf("[ max diff ] %s: with vs without the collective: %.3g (outputs bit-equal: %s)\n",
                vecnorm::to_string(est), worst, same_bits ? "yes" : "no");
  }
}

}  // namespace
