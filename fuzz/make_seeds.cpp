// fuzz/make_seeds.cpp -- writes a few valid checkpoints (the fuzzing corpus seeds).
//   make_seeds <dir>
#include <algorithm>
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

/// Writes `bytes` to `path`; false (and a message) when it cannot.
static bool write_seed(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) std::fprintf(stderr, "cannot write %s\n", path.c_str());
  return static_cast<bool>(f);
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
        if (!write_seed(dir + "/seed-" + std::to_string(n++) + ".vnrm", bytes)) return 1;
      }
  // Version 2 bookkeeping of NonFinite::skip: a per-element state with skips
  // (element i of key k skipped (i + k) % 3 of its updates, at most count) and
  // a pooled one with skipped row counts. Set by hand: valid states whatever
  // the statistics.
  for (int pooled = 0; pooled < 2; ++pooled) {
    Options o;
    o.reduce_batch_dims = pooled != 0;
    o.nonfinite = NonFinite::skip;
    KeyTable t{Shape{2}, {{"obs", Shape{3}, DType::float32}, {"reward", Shape{}, DType::float32}}};
    VecNorm vn(o, t);
    train(vn, 4, static_cast<std::uint64_t>(n));
    State st = vn.export_state();
    for (std::size_t k = 0; k < st.keys.size(); ++k) {
      KeyState& ks = st.keys[k];
      ks.skips.clear();
      ks.skipped = 0;
      if (pooled) {
        ks.skipped = static_cast<std::int64_t>(2 + k);
        continue;
      }
      ks.skips.resize(static_cast<std::size_t>(ks.stats_shape.numel()));
      for (std::size_t i = 0; i < ks.skips.size(); ++i) {
        ks.skips[i] = std::min<std::int64_t>(static_cast<std::int64_t>((i + k) % 3), ks.count);
        ks.skipped += ks.skips[i];
      }
    }
    if (!write_seed(dir + "/seed-" + std::to_string(n++) + "-skips.vnrm", encode_state(st))) return 1;
  }
  // Version 6: a reward scaler's state (pooled, uncentred statistics with a
  // prior) with the returns of its environments, set by hand.
  {
    Options o;
    o.estimator = Estimator::stable;
    o.decay = 1.0;
    o.prior_count = 1e-4;
    o.reduce_batch_dims = true;
    o.center = false;
    KeyTable t{Shape{3}, {{"reward", Shape{}, DType::float32}, {"cost", Shape{2}, DType::float32}}};
    VecNorm vn(o, t);
    train(vn, 3, static_cast<std::uint64_t>(n));
    State st = vn.export_state();
    ReturnsState& r = st.returns.emplace();
    r.options.gamma = 0.99;
    r.options.reset = ReturnReset::before;
    for (const KeySpec& k : t.keys) {
      std::vector<float> R(static_cast<std::size_t>(t.batch_shape.concat(k.feature_shape).numel()));
      for (std::size_t i = 0; i < R.size(); ++i) R[i] = 0.5f * static_cast<float>(i) - 1.0f;
      const auto* p = reinterpret_cast<const std::uint8_t*>(R.data());
      r.values.emplace_back(p, p + R.size() * sizeof(float));
    }
    if (!write_seed(dir + "/seed-" + std::to_string(n++) + "-returns.vnrm", encode_state(st))) return 1;
  }
  // Version 7: keys of both statistics dtypes (Options::stats_dtype none: a
  // float64 key's statistics are float64), the second key's set by hand.
  {
    Options o;
    o.decay = 0.9;
    KeyTable t{Shape{2}, {{"obs", Shape{3}, DType::float32}}};
    VecNorm vn(o, t);
    train(vn, 2, static_cast<std::uint64_t>(n));
    State st = vn.export_state();
    st.table.keys.push_back({"pos", Shape{2}, DType::float64});
    vecnorm::KeyState ks;
    ks.stats_shape = Shape{2, 2};
    ks.count = 2;
    const double loc[4] = {0.1, -0.2, 3.0, 4.5}, var[4] = {1.0, 2.0, 0.5, 0.25};
    const auto* l = reinterpret_cast<const std::uint8_t*>(loc);
    const auto* v = reinterpret_cast<const std::uint8_t*>(var);
    ks.loc.assign(l, l + sizeof loc);
    ks.var.assign(v, v + sizeof var);
    st.keys.push_back(ks);
    if (!write_seed(dir + "/seed-" + std::to_string(n++) + "-stats-dtypes.vnrm", encode_state(st))) return 1;
  }
  // Version 8: brax's bounds (max_scale, until with until_strict), pooled.
  {
    Options o;
    o.estimator = Estimator::stable;
    o.decay = 1.0;
    o.reduce_batch_dims = true;
    o.max_scale = 1e6;
    o.until = 100;
    o.until_strict = true;
    KeyTable t{Shape{4}, {{"obs", Shape{3}, DType::float32}}};
    VecNorm vn(o, t);
    train(vn, 2, static_cast<std::uint64_t>(n));
    if (!write_seed(dir + "/seed-" + std::to_string(n++) + "-brax.vnrm", encode_state(vn.export_state()))) return 1;
  }
  // A version 1 file (the reader still reads them): docs/state-format.md's
  // example without the version 2 fields, byte for byte.
  {
    std::vector<std::uint8_t> b;
    auto u32 = [&](std::uint32_t v) {
      for (int i = 0; i < 4; ++i) b.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    };
    auto u64 = [&](std::uint64_t v) {
      for (int i = 0; i < 8; ++i) b.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    };
    for (char c : std::string("VNRMCKPT")) b.push_back(static_cast<std::uint8_t>(c));
    u32(1), u32(0), u64(125);                                          // version 1, flags, size
    u32(1), u32(0), u32(0), u32(1);                                    // stable, per-element, float32, 1 key
    u64(0x3FE0000000000000ull), u64(0x3FD0000000000000ull);            // decay 0.5, eps 0.25
    u32(1), u64(2);                                                    // batch shape [2]
    u32(1), b.push_back('r'), u32(3), u32(0);                          // "r", bfloat16, feature []
    u64(7);                                                            // count
    u64(8), u32(0x3FC00000u), u32(0xC0000000u);                        // loc 1.5f, -2.0f
    u64(8), u32(0x3E800000u), u32(0x40800000u);                        // var 0.25f, 4.0f
    u32(crc32c(b));
    if (!write_seed(dir + "/seed-" + std::to_string(n++) + "-v1.vnrm", b)) return 1;
  }
  std::printf("wrote %d seeds to %s\n", n, dir.c_str());
  return 0;
}
