// bench/cases.hpp -- the shapes every benchmark of vecnorm runs (issue 5,
// ../shared/guides/performance.md), shared by the CPU and GPU benchmarks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <vecnorm/vecnorm.hpp>

namespace vecnorm::bench {

/// One observation shape [B, F]; every case also steps a reward key of shape [B].
struct Shape2 {
  std::int64_t batch;
  std::int64_t feat;
  const char* label;  ///< where the shape comes from
};

/// Isaac-style GPU workloads and tiny CPU-simulator cases.
inline const std::vector<Shape2>& shapes() {
  static const std::vector<Shape2> s = {
      {1, 17, "cpu-sim"},          {16, 17, "cpu-sim"},
      {4096, 36, "Ant"},           {4096, 48, "Isaac locomotion (Python peers)"},
      {4096, 64, "eager-target"},
      {4096, 87, "Humanoid"},      {4096, 235, "ANYmal rough"},
      {8192, 157, "Shadow Hand"},  {65536, 256, "large"},
  };
  return s;
}

inline const char* dtype_name(DType d) { return d == DType::bfloat16 ? "bf16" : "f32"; }

/// A case's name: "<mode>/<estimator>/<dtype>/<B>x<F>", parsed by scripts/bench.py.
inline std::string case_name(bool pooled, Estimator e, DType d, const Shape2& s) {
  return std::string(pooled ? "pooled" : "elementwise") + "/" + to_string(e) + "/" + dtype_name(d) + "/" +
         std::to_string(s.batch) + "x" + std::to_string(s.feat);
}

/// Bytes a step must move at the least (the floor of the design):
/// per-element: x and y, loc and var in and out (float32 statistics);
/// pooled: x twice (reduce, then normalize) and y once (statistics are tiny).
inline double floor_bytes(bool pooled, DType d, const Shape2& s) {
  const double n = static_cast<double>(s.batch) * static_cast<double>(s.feat + 1);  // obs + reward
  const double xb = static_cast<double>(dtype_size(d));
  return pooled ? n * 3 * xb : n * (2 * xb + 4 * 4.0);
}

/// Bytes of one copy of the step's inputs (x in, same bytes out).
inline double copy_bytes(DType d, const Shape2& s) {
  return 2.0 * static_cast<double>(s.batch) * static_cast<double>(s.feat + 1) * static_cast<double>(dtype_size(d));
}

}  // namespace vecnorm::bench
