// src/state/schema.cpp -- the statistics-shape rule, the stable codes,
// State::validate and the compatibility checks (schema.hpp).
#include "schema.hpp"

#include <cstdio>
#include <cstdlib>

#include "../errors.hpp"
#include "rethrow.hpp"

namespace vecnorm {

namespace detail {

Shape stats_shape(bool pooled, const KeyTable& table, const KeySpec& key) {
  return pooled ? key.feature_shape : table.batch_shape.concat(key.feature_shape);
}

// ---------------------------------------------------------------- stable codes

namespace {

constexpr DType kDTypeOfCode[kDTypeCodes] = {DType::float32, DType::float64, DType::float16, DType::bfloat16,
                                             DType::int32,   DType::int64,   DType::uint8};

std::string code_text(std::uint32_t code) { return "code " + std::to_string(code); }

}  // namespace

std::uint32_t dtype_code(DType d) {
  for (std::uint32_t c = 0; c < kDTypeCodes; ++c)
    if (kDTypeOfCode[c] == d) return c;
  fail(ErrorCode::state_mismatch, "unknown dtype value " + std::to_string(static_cast<int>(d)));
}

DType dtype_of_code(std::uint32_t code) { return kDTypeOfCode[code]; }

std::uint32_t estimator_code(Estimator e) { return e == Estimator::stable ? 1u : 0u; }
Estimator estimator_of_code(std::uint32_t code) { return code == 1 ? Estimator::stable : Estimator::torchrl; }

std::uint32_t stats_dtype_code(std::optional<DType> stats_dtype, const KeyTable& table) {
  auto code = [](DType d) { return d == DType::float64 ? 1u : 0u; };
  if (stats_dtype) return code(*stats_dtype);
  if (table.keys.empty()) return 0;
  const DType first = stats_dtype_for(stats_dtype, table.keys.front().dtype);
  for (const KeySpec& k : table.keys)
    if (stats_dtype_for(stats_dtype, k.dtype) != first) return 2;
  return code(first);
}
std::optional<DType> stats_dtype_of_code(std::uint32_t code) {
  if (code == 2) return std::nullopt;
  return code == 1 ? DType::float64 : DType::float32;
}

std::uint32_t nonfinite_code(NonFinite n) {
  switch (n) {
    case NonFinite::propagate: return 0;
    case NonFinite::skip: return 1;
    case NonFinite::error: return 2;
  }
  fail(ErrorCode::state_mismatch, "unknown nonfinite value " + std::to_string(static_cast<int>(n)));
}

NonFinite nonfinite_of_code(std::uint32_t code) {
  return code == 0 ? NonFinite::propagate : code == 1 ? NonFinite::skip : NonFinite::error;
}

std::uint32_t scale_code(ScaleForm f) {
  switch (f) {
    case ScaleForm::clamp: return 0;
    case ScaleForm::sqrt_var_plus_eps: return 1;
    case ScaleForm::std_plus_eps: return 2;
  }
  fail(ErrorCode::state_mismatch, "unknown scale value " + std::to_string(static_cast<int>(f)));
}

ScaleForm scale_of_code(std::uint32_t code) {
  return code == 1 ? ScaleForm::sqrt_var_plus_eps : code == 2 ? ScaleForm::std_plus_eps : ScaleForm::clamp;
}

std::string scale_name(std::uint32_t code) { return code <= 2 ? to_string(scale_of_code(code)) : code_text(code); }

std::uint32_t reset_code(ReturnReset r) {
  return r == ReturnReset::after ? 0 : r == ReturnReset::before ? 1 : 2;
}
ReturnReset reset_of_code(std::uint32_t code) {
  return code == 0 ? ReturnReset::after : code == 1 ? ReturnReset::before : ReturnReset::never;
}

bool checked_numel(const Shape& s, std::int64_t& numel) {
  std::int64_t nonzero = 1;
  bool zero = false;
  for (std::int64_t d : s) {
    if (d < 0) return false;
    if (d == 0) {
      zero = true;
      continue;
    }
    if (__builtin_mul_overflow(nonzero, d, &nonzero)) return false;
  }
  numel = zero ? 0 : nonzero;
  return true;
}

bool returns_bytes(const KeyTable& table, const KeySpec& key, std::optional<DType> stats_dtype, std::uint64_t& bytes) {
  std::int64_t numel = 0;
  return table.batch_shape.ndim() + key.feature_shape.ndim() <= Shape::kMaxDims &&
         checked_numel(table.batch_shape.concat(key.feature_shape), numel) &&
         !__builtin_mul_overflow(static_cast<std::uint64_t>(numel),
                                 static_cast<std::uint64_t>(dtype_size(stats_dtype_for(stats_dtype, key.dtype))), &bytes);
}

std::uint32_t checkpoint_format_for(const State& state) {
  const Options& o = state.options;
  const Options d;
  if (o.max_scale != d.max_scale || o.until_strict != d.until_strict) return 8;
  if (stats_dtype_code(o.stats_dtype, state.table) == 2) return 7;
  if (state.returns) return 6;
  if (o.center != d.center) return 5;
  if (o.until != d.until) return 4;
  const bool v2 = o.scale == d.scale && o.clip == d.clip && o.prior_count == d.prior_count && o.unbiased == d.unbiased;
  return v2 ? 2 : 3;
}

std::string estimator_name(std::uint32_t code) {
  return code <= 1 ? to_string(estimator_of_code(code)) : code_text(code);
}
std::string flag_name(std::uint32_t code) {
  return code == 1 ? "true" : code == 0 ? "false" : std::to_string(code);
}
std::string stats_dtype_name(std::uint32_t code) {
  return code <= 1 ? to_string(stats_dtype_of_code(code)) : code == 2 ? "auto (each key's from its input)" : code_text(code);
}
std::string nonfinite_name(std::uint32_t code) {
  return code <= 2 ? to_string(nonfinite_of_code(code)) : code_text(code);
}

OptionCodes option_codes(const Options& o, const KeyTable& table) {
  return {estimator_code(o.estimator), o.reduce_batch_dims ? 1u : 0u, stats_dtype_code(o.stats_dtype, table),
          nonfinite_code(o.nonfinite), o.decay, o.eps, scale_code(o.scale), o.unbiased ? 1u : 0u, o.clip,
          o.prior_count, o.until, o.center ? 1u : 0u, o.max_scale, o.until_strict ? 1u : 0u};
}

std::string shortest(double v) {
  char b[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(b, sizeof b, "%.*g", precision, v);
    if (std::strtod(b, nullptr) == v) break;
  }
  return b;
}

// ---------------------------------------------------------------- compatibility

void fail_mismatch(const Roles& roles, const std::string& what, const std::string& expected, const std::string& got) {
  fail(ErrorCode::state_mismatch, roles.prefix + what + ": expected " + expected + " (" + std::string(roles.mine) +
                                      "), got " + got + " (" + std::string(roles.theirs) + ")");
}

void check_same_options(const Roles& roles, const OptionCodes& mine, const OptionCodes& theirs) {
  if (mine.estimator != theirs.estimator)
    fail_mismatch(roles, "estimator", estimator_name(mine.estimator), estimator_name(theirs.estimator));
  if (mine.reduce_batch_dims != theirs.reduce_batch_dims)
    fail_mismatch(roles, "reduce_batch_dims", flag_name(mine.reduce_batch_dims), flag_name(theirs.reduce_batch_dims));
  if (!roles.all_options) return;
  // Not !=: a NaN stored in a damaged segment never matches.
  if (!(mine.decay == theirs.decay)) fail_mismatch(roles, "decay", shortest(mine.decay), shortest(theirs.decay));
  if (!(mine.eps == theirs.eps)) fail_mismatch(roles, "eps", shortest(mine.eps), shortest(theirs.eps));
  if (mine.nonfinite != theirs.nonfinite)
    fail_mismatch(roles, "nonfinite", nonfinite_name(mine.nonfinite), nonfinite_name(theirs.nonfinite));
  if (mine.scale != theirs.scale) fail_mismatch(roles, "scale", scale_name(mine.scale), scale_name(theirs.scale));
  if (!(mine.clip == theirs.clip)) fail_mismatch(roles, "clip", shortest(mine.clip), shortest(theirs.clip));
  if (!(mine.prior_count == theirs.prior_count))
    fail_mismatch(roles, "prior_count", shortest(mine.prior_count), shortest(theirs.prior_count));
  if (mine.unbiased != theirs.unbiased)
    fail_mismatch(roles, "unbiased", flag_name(mine.unbiased), flag_name(theirs.unbiased));
  if (mine.until != theirs.until)
    fail_mismatch(roles, "until", std::to_string(mine.until), std::to_string(theirs.until));
  if (mine.center != theirs.center) fail_mismatch(roles, "center", flag_name(mine.center), flag_name(theirs.center));
  if (!(mine.max_scale == theirs.max_scale))
    fail_mismatch(roles, "max_scale", shortest(mine.max_scale), shortest(theirs.max_scale));
  if (mine.until_strict != theirs.until_strict)
    fail_mismatch(roles, "until_strict", flag_name(mine.until_strict), flag_name(theirs.until_strict));
}

void check_same_table(const Roles& roles, bool pooled, const KeyTable& mine, const KeyTable& theirs) {
  if (mine.keys.size() != theirs.keys.size())
    fail_mismatch(roles, "number of keys", std::to_string(mine.keys.size()), std::to_string(theirs.keys.size()));
  // Pooled statistics do not depend on the batch shape (it is informational there).
  if (!pooled && mine.batch_shape != theirs.batch_shape)
    fail_mismatch(roles, "batch shape", mine.batch_shape.str(), theirs.batch_shape.str());
  for (std::size_t k = 0; k < mine.keys.size(); ++k) {
    const KeySpec &a = mine.keys[k], &b = theirs.keys[k];
    if (a.name != b.name)
      fail_mismatch(roles, "key " + std::to_string(k) + " name", "'" + a.name + "'", "'" + b.name + "'");
    if (a.feature_shape != b.feature_shape)
      fail_mismatch(roles, key_prefix(a.name) + "feature shape", a.feature_shape.str(), b.feature_shape.str());
    if (a.dtype != b.dtype) fail_mismatch(roles, key_prefix(a.name) + "dtype", to_string(a.dtype), to_string(b.dtype));
  }
}

void check_same_stats_dtype(const Roles& roles, std::uint32_t mine, std::uint32_t theirs) {
  if (mine != theirs) fail_mismatch(roles, "stats_dtype", stats_dtype_name(mine), stats_dtype_name(theirs));
}

void check_compatible(const Roles& roles, const Options& mine, const KeyTable& mine_table, const State& theirs) {
  const OptionCodes a = option_codes(mine, mine_table), b = option_codes(theirs.options, theirs.table);
  check_same_options(roles, a, b);
  check_same_table(roles, mine.reduce_batch_dims, mine_table, theirs.table);
  check_same_stats_dtype(roles, a.stats_dtype, b.stats_dtype);
}

}  // namespace detail

// ---------------------------------------------------------------- State

void State::validate() const {
  options.validate();
  table.validate();
  if (keys.size() != table.keys.size())
    detail::fail(ErrorCode::state_mismatch, "state: expected statistics for " + std::to_string(table.keys.size()) +
                                                " keys, got " + std::to_string(keys.size()));
  for (std::size_t k = 0; k < keys.size(); ++k) {
    const KeySpec& spec = table.keys[k];
    const Shape expected = detail::stats_shape(options.reduce_batch_dims, table, spec);
    const KeyState& ks = keys[k];
    const std::string key = "state: " + detail::key_prefix(spec.name);
    if (ks.stats_shape != expected)
      detail::fail(ErrorCode::state_mismatch,
                   key + "statistics shape: expected " + expected.str() + ", got " + ks.stats_shape.str());
    const std::size_t bytes =
        static_cast<std::size_t>(expected.numel()) * dtype_size(stats_dtype_for(options.stats_dtype, spec.dtype));
    if (ks.loc.size() != bytes || ks.var.size() != bytes)
      detail::fail(ErrorCode::state_mismatch, key + "loc/var bytes: expected " + std::to_string(bytes) + ", got " +
                                                  std::to_string(ks.loc.size()) + "/" + std::to_string(ks.var.size()));
    if (ks.count < 0)
      detail::fail(ErrorCode::state_mismatch, key + "count: expected >= 0, got " + std::to_string(ks.count));
    if (ks.skipped < 0)
      detail::fail(ErrorCode::state_mismatch, key + "skipped: expected >= 0, got " + std::to_string(ks.skipped));
    if (ks.skips.empty()) {
      if (!options.reduce_batch_dims && ks.skipped != 0)
        detail::fail(ErrorCode::state_mismatch, key + "skips: expected " + std::to_string(expected.numel()) +
                                                    " values (skipped = " + std::to_string(ks.skipped) + "), got none");
      continue;
    }
    if (options.reduce_batch_dims)
      detail::fail(ErrorCode::state_mismatch, key + "skips: expected none (pooled statistics), got " +
                                                  std::to_string(ks.skips.size()) + " values");
    if (static_cast<std::int64_t>(ks.skips.size()) != expected.numel())
      detail::fail(ErrorCode::state_mismatch, key + "skips: expected " + std::to_string(expected.numel()) +
                                                  " values, got " + std::to_string(ks.skips.size()));
    std::int64_t sum = 0;
    for (std::size_t i = 0; i < ks.skips.size(); ++i) {
      if (ks.skips[i] < 0 || ks.skips[i] > ks.count)
        detail::fail(ErrorCode::state_mismatch, key + "skips[" + std::to_string(i) + "]: expected 0.." +
                                                    std::to_string(ks.count) + " (the count), got " +
                                                    std::to_string(ks.skips[i]));
      sum += ks.skips[i];
    }
    if (sum != ks.skipped)
      detail::fail(ErrorCode::state_mismatch, key + "skipped: expected the sum of skips, " + std::to_string(sum) +
                                                  ", got " + std::to_string(ks.skipped));
  }
  if (!returns) return;
  try {
    returns->options.validate();
  } catch (const Error& e) {
    detail::fail(ErrorCode::state_mismatch, "state: " + detail::bare(e));
  }
  if (returns->values.size() != keys.size())
    detail::fail(ErrorCode::state_mismatch, "state: expected returns for " + std::to_string(keys.size()) +
                                                " keys, got " + std::to_string(returns->values.size()));
  for (std::size_t k = 0; k < keys.size(); ++k) {
    const KeySpec& spec = table.keys[k];
    const std::string key = "state: " + detail::key_prefix(spec.name) + "returns ";
    std::uint64_t bytes = 0;
    if (!detail::returns_bytes(table, spec, options.stats_dtype, bytes))
      detail::fail(ErrorCode::state_mismatch, key + "shape " + table.batch_shape.concat(spec.feature_shape).str() +
                                                  ": too many elements");
    if (returns->values[k].size() != bytes)
      detail::fail(ErrorCode::state_mismatch, key + "bytes: expected " + std::to_string(bytes) + " (" +
                                                  table.batch_shape.concat(spec.feature_shape).str() + " of " +
                                                  to_string(stats_dtype_for(options.stats_dtype, spec.dtype)) +
                                                  "), got " +
                                                  std::to_string(returns->values[k].size()));
  }
}

}  // namespace vecnorm
