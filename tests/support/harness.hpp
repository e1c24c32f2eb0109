// tests/support/harness.hpp -- one "case" of the core suites: a normalizer
// configuration, shapes, a seed, run for some steps against the reference.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include <vecnorm/vecnorm.hpp>

#include "../reference/reference.hpp"

// How gtest prints the parameters of failing tests ("cpu", "torchrl", "float16"
// instead of raw bytes). Found by argument-dependent lookup, hence in vecnorm.
namespace vecnorm {
inline void PrintTo(Backend b, std::ostream* os) { *os << to_string(b); }
inline void PrintTo(Estimator e, std::ostream* os) { *os << to_string(e); }
inline void PrintTo(DType d, std::ostream* os) { *os << to_string(d); }
}  // namespace vecnorm

namespace vntest {

enum class Mode { per_element, pooled, stateless };
const char* mode_name(Mode mode);
const char* estimator_name(vecnorm::Estimator e);
vnref::Estimator to_ref(vecnorm::Estimator e);
std::string decay_name(double decay);  ///< "1", "0.9", "0.9999"
inline void PrintTo(Mode m, std::ostream* os) { *os << mode_name(m); }
/// A test parameter's name: "cpu_per_element_torchrl".
std::string param_name(const std::tuple<vecnorm::Backend, Mode, vecnorm::Estimator>& p);

struct Case {
  vecnorm::Backend backend = vecnorm::Backend::cpu;
  Mode mode = Mode::per_element;
  vecnorm::Estimator estimator = vecnorm::Estimator::torchrl;
  double decay = 0.9999;
  vecnorm::DType input = vecnorm::DType::float32;
  vecnorm::DType stats = vecnorm::DType::float32;
  vecnorm::Shape batch;
  vecnorm::Shape feature;
  std::uint64_t seed = 1;
  int steps = 6;
  double eps = 1e-4;

  std::string name() const;
  vecnorm::Options options() const;
  vnref::Config ref_config() const;
  vecnorm::KeyTable table(const std::string& key = "obs") const;
};

/// Runs `c.steps` update-and-normalize steps of random data, then one
/// update-only and one normalize-only call, comparing after every call the
/// outputs, the read-outs (stateful: loc, scale, count, stats_shape) or the
/// written statistics (stateless: loc, var, count) with the reference.
/// Reports failures with EXPECT_* (naming the case, the step and the first bad
/// index) and stops the case at the first failing call.
void run_case(const Case& c);

/// Mixes a case's fields into a seed for its data.
std::uint64_t data_seed(const Case& c);

}  // namespace vntest

namespace vntest {

enum class Call { step, update, normalize, denormalize, affine_apply, affine_invert };

/// One call for a single key whose input has dtype `in` and shape `shape`,
/// with x holding `x_values` (exact in `in`); returns the output's bytes
/// (dtype output_dtype(in)). vn or affine is used according to `call`.
std::vector<std::byte> call_one(Call call, vecnorm::VecNorm* vn, const vecnorm::AffineNormalizer* affine,
                                vecnorm::Backend backend, std::string_view key, vecnorm::DType in,
                                vecnorm::Shape shape, const std::vector<double>& x_values);
inline std::vector<std::byte> call_one(Call call, vecnorm::VecNorm& vn, vecnorm::Backend backend, std::string_view key,
                                       vecnorm::DType in, vecnorm::Shape shape, const std::vector<double>& x_values) {
  return call_one(call, &vn, nullptr, backend, key, in, shape, x_values);
}

}  // namespace vntest
