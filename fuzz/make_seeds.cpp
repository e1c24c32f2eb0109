// fuzz/make_seeds.cpp -- writes a few valid checkpoints (the fuzzing corpus seeds).
//   make_seeds <dir>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "vecnorm/checkpoint.hpp"
#include "vecnorm/normalizer.hpp"

using namespace vecnorm;

static void train(VecNorm& vn, int steps, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(1.0f, 2.0f);
  const KeyTable& t = vn.key_table();
  for (int s = 0; s < steps; ++s) {
    std::vector<std::vector<float>> xs, ys;
    std::vector<KeyData> batch;
    xs.reserve(t.keys.size());
    ys.reserve(t.keys.size());
    for (const KeySpec& k : t.keys) {
      const Shape shape = t.batch_shape.concat(k.feature_shape);
      xs.emplace_back(static_cast<std::size_t>(shape.numel()));
      for (float& v : xs.back()) v = nd(rng);
      ys.emplace_back(xs.back().size());
      batch.push_back({k.name, view(static_cast<const float*>(xs.back().data()), shape), view(ys.back().data(), shape)});
    }
    vn.step(batch);
  }
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <dir>\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  int n = 0;
  for (int est = 0; est < 2; ++est)
    for (int pooled = 0; pooled < 2; ++pooled)
      for (int f64 = 0; f64 < 2; ++f64) {
        Options o;
        o.estimator = est ? Estimator::stable : Estimator::torchrl;
        o.reduce_batch_dims = pooled != 0;
        o.stats_dtype = f64 ? DType::float64 : DType::float32;
        o.decay = 0.99;
        KeyTable t{Shape{2}, {{"obs", Shape{3}, DType::float32}, {"agents/observation", Shape{2, 2}, DType::float32},
                              {"reward", Shape{}, DType::float32}}};
        if (n % 3 == 1) t = KeyTable{Shape{}, {{"r", Shape{}, DType::float32}}};
        VecNorm vn(o, t);
        train(vn, 1 + n % 3, static_cast<std::uint64_t>(n));
        const std::vector<std::uint8_t> bytes = encode_state(vn.export_state());
        const std::string path = dir + "/seed-" + std::to_string(n++) + ".vnrm";
        std::ofstream f(path, std::ios::binary);
        f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        if (!f) {
          std::fprintf(stderr, "cannot write %s\n", path.c_str());
          return 1;
        }
      }
  std::printf("wrote %d seeds to %s\n", n, dir.c_str());
  return 0;
}
