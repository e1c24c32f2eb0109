// tests/gpu/graph_test.cpp -- real-GPU tests: CUDA-graph capture and replay of
// steps, and the launch count per step read from the captured graph. They
// skip, with the reason, where no CUDA device is usable (every machine of this
// project's CI). The backend-parametrized suites cover the rest on a device.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <vecnorm/vecnorm.hpp>

namespace {

using vecnorm::Backend;
using vecnorm::Buffer;
using vecnorm::DType;

#define SKIP_WITHOUT_GPU()                                                                             \
  do {                                                                                                 \
    if (!vecnorm::cuda_available()) GTEST_SKIP() << "no usable CUDA device (the CUDA runtime reports none)"; \
  } while (0)

#define CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call

struct Case {
  bool pooled;
  vecnorm::Estimator estimator;
  int keys;
};

std::string name(const Case& c) {
  return std::string(c.pooled ? "pooled" : "per_element") + "_" + vecnorm::to_string(c.estimator) + "_" +
         std::to_string(c.keys) + "keys";
}

/// Data of key k at step t (deterministic, different per element).
std::vector<float> data(int k, int t, std::int64_t n) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    v[static_cast<std::size_t>(i)] = static_cast<float>(10.0 * k + std::sin(0.1 * i + 0.7 * t + k) * (1 + i % 7));
  return v;
}

class GraphTest : public ::testing::TestWithParam<Case> {};

// Captures one step of a warmed-up VecNorm in a graph: the graph holds exactly
// the expected kernel launches (1 per-element, 2 pooled, per group of 16 keys),
// capture succeeds (no synchronization, no allocation inside a step), and five
// replays give the same statistics and outputs as five more eager steps on a
// CPU VecNorm fed the same data.
TEST_P(GraphTest, CaptureReplayMatchesEagerSteps) {
  SKIP_WITHOUT_GPU();
  const Case c = GetParam();
  const std::int64_t B = 512, F = 33;
  vecnorm::Options o;
  o.decay = 0.95;
  o.reduce_batch_dims = c.pooled;
  o.estimator = c.estimator;
  vecnorm::KeyTable table;
  table.batch_shape = {B};
  for (int k = 0; k < c.keys; ++k) table.keys.push_back({"key" + std::to_string(k), {F}, DType::float32});
  vecnorm::Options og = o, oc = o;
  og.backend = Backend::cuda;
  oc.backend = Backend::cpu;
  vecnorm::VecNorm gpu(og, table), cpu(oc, table);

  std::vector<Buffer> x, y;
  std::vector<std::vector<float>> hx(static_cast<std::size_t>(c.keys)), hy(static_cast<std::size_t>(c.keys));
  for (int k = 0; k < c.keys; ++k) {
    x.emplace_back(Backend::cuda, B * F * 4);
    y.emplace_back(Backend::cuda, B * F * 4);
    hy[static_cast<std::size_t>(k)].resize(static_cast<std::size_t>(B * F));
  }
  std::vector<vecnorm::KeyData> gpu_batch, cpu_batch;
  for (int k = 0; k < c.keys; ++k) {
    const std::string& key = table.keys[static_cast<std::size_t>(k)].name;
    gpu_batch.push_back({key, x[static_cast<std::size_t>(k)].view(DType::float32, {B, F}),
                         y[static_cast<std::size_t>(k)].view(DType::float32, {B, F})});
  }
  auto load = [&](int t) {
    cpu_batch.clear();
    for (int k = 0; k < c.keys; ++k) {
      const auto ks = static_cast<std::size_t>(k);
      hx[ks] = data(k, t, B * F);
      x[ks].copy_from_host(hx[ks].data(), hx[ks].size() * 4);
      cpu_batch.push_back({table.keys[ks].name, vecnorm::view<const float>(hx[ks].data(), {B, F}),
                           vecnorm::view(hy[ks].data(), {B, F})});
    }
  };

  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const vecnorm::Stream vs{stream};
  load(0);  // warm-up: allocates the scratch
  gpu.step(gpu_batch, vs);
  cpu.step(cpu_batch);
  CUDA_OK(cudaStreamSynchronize(stream));

  cudaGraph_t graph;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  gpu.step(gpu_batch, vs);
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  std::size_t nodes = 0;
  CUDA_OK(cudaGraphGetNodes(graph, nullptr, &nodes));
  const std::size_t groups = static_cast<std::size_t>((c.keys + 15) / 16);
  EXPECT_EQ(nodes, (c.pooled ? 2u : 1u) * groups) << "kernel launches per step";
  cudaGraphExec_t exec;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));

  for (int t = 1; t <= 5; ++t) {
    load(t);  // same device buffers: the graph reads the new data
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    cpu.step(cpu_batch);
    for (int k = 0; k < c.keys; ++k) {
      const auto ks = static_cast<std::size_t>(k);
      std::vector<float> got(static_cast<std::size_t>(B * F));
      y[ks].copy_to_host(got.data(), got.size() * 4);
      for (std::size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], hy[ks][i], 2e-5 * (1 + std::fabs(hy[ks][i])))
            << name(c) << " step " << t << " key " << k << " element " << i;
    }
  }
  for (int k = 0; k < c.keys; ++k) {
    const std::string& key = table.keys[static_cast<std::size_t>(k)].name;
    EXPECT_EQ(gpu.count(key), cpu.count(key)) << key;
    const auto lg = gpu.loc(key), lc = cpu.loc(key);
    for (std::size_t i = 0; i < lg.size(); ++i) ASSERT_NEAR(lg[i], lc[i], 1e-5 * (1 + std::fabs(lc[i]))) << key << " " << i;
  }
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
  CUDA_OK(cudaStreamDestroy(stream));
}

INSTANTIATE_TEST_SUITE_P(Gpu, GraphTest,
                         ::testing::Values(Case{false, vecnorm::Estimator::torchrl, 3},
                                           Case{false, vecnorm::Estimator::stable, 3},
                                           Case{true, vecnorm::Estimator::torchrl, 3},
                                           Case{true, vecnorm::Estimator::stable, 3},
                                           Case{false, vecnorm::Estimator::torchrl, 20},
                                           Case{true, vecnorm::Estimator::stable, 20}),
                         [](const auto& info) { return name(info.param); });

}  // namespace
