// apps/inspect.cpp -- `vecnorm inspect FILE`: what a checkpoint file holds.
//
// The file is read and fully validated by vecnorm::read_state_file, loaded
// into an unconfigured VecNorm (which adopts it), and the read-outs (loc and
// scale as normalize uses them) are printed per key: as a table, or as JSON.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include <vecnorm/vecnorm.hpp>

#include "cli.hpp"
#include "commands.hpp"

namespace vncli {
namespace {

constexpr const char* kHelp =
    "usage: vecnorm inspect [--json] [--all] FILE\n"
    "\n"
    "Prints what a vecnorm state file (vecnorm::save_state, vecnorm replay --save-state)\n"
    "holds: the options that shape the statistics, the keys with their dtypes and shapes,\n"
    "their counts, and the loc/scale that normalize uses, per feature; for a reward\n"
    "scaler's file (vecnorm::save_state(RewardScaler)), also its returns' gamma and reset.\n"
    "\n"
    "options:\n"
    "  --json       one JSON object on stdout: options, \"returns\" (null or gamma and\n"
    "               reset), and per key its dtype, feature shape, statistics shape, count\n"
    "               and every loc/scale (C order)\n"
    "  --all        list every statistics element (default for per-element statistics:\n"
    "               per feature, the min/mean/max over the batch)\n"
    "  -h, --help   this help\n";

/// "[i, j]" of flat index `i` in `shape`.
std::string index_str(std::int64_t i, const vecnorm::Shape& shape) {
  std::vector<std::int64_t> idx(static_cast<std::size_t>(shape.ndim()));
  for (int d = shape.ndim() - 1; d >= 0; --d) {
    const std::int64_t n = shape[d];
    idx[static_cast<std::size_t>(d)] = n > 0 ? i % n : 0;
    i = n > 0 ? i / n : 0;
  }
  return dims_str(idx);
}

void print_table(const vecnorm::VecNorm& vn, const vecnorm::KeySpec& spec, bool all) {
  const vecnorm::Shape stats = vn.stats_shape(spec.name);
  const std::int64_t count = vn.count(spec.name);
  const std::int64_t skipped = vn.skipped(spec.name);
  std::printf("\nkey '%s': %s, feature %s, statistics %s of %s, count %lld", spec.name.c_str(),
              vecnorm::to_string(spec.dtype), spec.feature_shape.str().c_str(), stats.str().c_str(),
              vecnorm::to_string(vecnorm::stats_dtype_for(vn.options().stats_dtype, spec.dtype)),
              static_cast<long long>(count));
  if (skipped > 0)  // (per element: masked-out rows' elements too)
    std::printf(vn.options().reduce_batch_dims ? ", %lld rows with non-finite values skipped"
                                               : ", %lld element updates left out (non-finite values or masked rows)",
                static_cast<long long>(skipped));
  std::printf("\n");
  if (count == 0 && !(vn.options().prior_count > 0.0)) {  // (with a prior: its map)
    std::printf("  never updated: no loc/scale yet\n");
    return;
  }
  const std::vector<double> loc = vn.loc(spec.name), scale = vn.scale(spec.name);
  const std::int64_t feat = spec.feature_shape.numel();
  const std::int64_t groups = feat > 0 ? stats.numel() / feat : 0;  // batch elements sharing a feature
  if (stats.numel() == 0) {
    std::printf("  no elements\n");
    return;
  }
  if (all || groups <= 1) {
    std::printf("  %-16s %14s %14s\n", groups <= 1 ? "feature" : "element", "loc", "scale");
    for (std::int64_t i = 0; i < stats.numel(); ++i) {
      const auto u = static_cast<std::size_t>(i);
      std::printf("  %-16s %14.7g %14.7g\n", index_str(i, groups <= 1 ? spec.feature_shape : stats).c_str(), loc[u],
                  scale[u]);
    }
    return;
  }
  std::printf("  per feature over %lld batch elements:\n", static_cast<long long>(groups));
  std::printf("  %-12s %13s %13s %13s %13s %13s %13s\n", "feature", "loc min", "loc mean", "loc max", "scale min",
              "scale mean", "scale max");
  for (std::int64_t f = 0; f < feat; ++f) {
    double lmin = loc[static_cast<std::size_t>(f)], lmax = lmin, lsum = 0;
    double smin = scale[static_cast<std::size_t>(f)], smax = smin, ssum = 0;
    for (std::int64_t g = 0; g < groups; ++g) {
      const auto u = static_cast<std::size_t>(g * feat + f);
      lmin = std::min(lmin, loc[u]);
      lmax = std::max(lmax, loc[u]);
      lsum += loc[u];
      smin = std::min(smin, scale[u]);
      smax = std::max(smax, scale[u]);
      ssum += scale[u];
    }
    const auto n = static_cast<double>(groups);
    std::printf("  %-12s %13.6g %13.6g %13.6g %13.6g %13.6g %13.6g\n", index_str(f, spec.feature_shape).c_str(), lmin,
                lsum / n, lmax, smin, ssum / n, smax);
  }
}

std::string state_json(const std::string& path, const vecnorm::VecNorm& vn,
                       const std::optional<vecnorm::ReturnsState>& returns) {
  const vecnorm::Options& o = vn.options();
  const vecnorm::KeyTable& table = vn.key_table();
  std::string out = "{\"file\": ";
  json_string(out, path);
  out += ", \"estimator\": ";
  json_string(out, vecnorm::to_string(o.estimator));
  out += ", \"decay\": ";
  json_number(out, o.decay);
  out += ", \"eps\": ";
  json_number(out, o.eps);
  out += ", \"reduce_batch_dims\": ";
  out += o.reduce_batch_dims ? "true" : "false";
  out += ", \"stats_dtype\": ";
  json_string(out, vecnorm::to_string(o.stats_dtype));
  out += ", \"nonfinite\": ";
  json_string(out, vecnorm::to_string(o.nonfinite));
  out += ", \"scale\": ";
  json_string(out, vecnorm::to_string(o.scale));
  out += ", \"clip\": ";
  if (std::isfinite(o.clip))
    json_number(out, o.clip);
  else
    out += "null";
  out += ", \"prior_count\": ";
  json_number(out, o.prior_count);
  out += ", \"unbiased\": ";
  out += o.unbiased ? "true" : "false";
  out += ", \"until\": ";
  out += std::to_string(o.until);
  out += ", \"until_strict\": ";
  out += o.until_strict ? "true" : "false";
  out += ", \"center\": ";
  out += o.center ? "true" : "false";
  out += ", \"max_scale\": ";
  if (std::isfinite(o.max_scale))
    json_number(out, o.max_scale);
  else
    out += "null";
  out += ", \"returns\": ";
  if (returns) {
    out += "{\"gamma\": ";
    json_number(out, returns->options.gamma);
    out += ", \"reset\": ";
    json_string(out, vecnorm::to_string(returns->options.reset));
    out += "}";
  } else {
    out += "null";
  }
  out += ", \"batch_shape\": ";
  json_shape(out, table.batch_shape);
  out += ",\n \"keys\": {";
  for (std::size_t k = 0; k < table.keys.size(); ++k) {
    const vecnorm::KeySpec& spec = table.keys[k];
    const std::int64_t count = vn.count(spec.name);
    out += k ? ",\n  " : "\n  ";
    json_string(out, spec.name);
    out += ": {\"dtype\": ";
    json_string(out, vecnorm::to_string(spec.dtype));
    out += ", \"feature_shape\": ";
    json_shape(out, spec.feature_shape);
    out += ", \"shape\": ";
    json_shape(out, vn.stats_shape(spec.name));
    out += ", \"stats_dtype\": ";
    json_string(out, vecnorm::to_string(vecnorm::stats_dtype_for(o.stats_dtype, spec.dtype)));
    out += ", \"count\": ";
    json_int(out, count);
    out += ", \"skipped\": ";
    json_int(out, vn.skipped(spec.name));
    const bool maps = count > 0 || o.prior_count > 0.0;  // (with a prior: its map at count 0)
    out += ", \"loc\": ";
    if (maps) json_numbers(out, vn.loc(spec.name));
    else out += "null";
    out += ", \"scale\": ";
    if (maps) json_numbers(out, vn.scale(spec.name));
    else out += "null";
    out += "}";
  }
  out += "\n }\n}\n";
  return out;
}

}  // namespace

int run_inspect(int argc, char** argv, int first) {
  bool json = false, all = false, help = false;
  const std::vector<OptionSpec> specs = {
      {"--help", false, [&](const std::string&) { help = true; }},
      {"--json", false, [&](const std::string&) { json = true; }},
      {"--all", false, [&](const std::string&) { all = true; }},
  };
  const auto positional = parse_options(argc, argv, first, "inspect", specs);
  if (help) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  if (positional.size() != 1)
    throw UsageError("inspect: expected one state FILE, got " + std::to_string(positional.size()) +
                     " arguments (see 'vecnorm inspect --help')");
  const std::string& path = positional.front();

  vecnorm::VecNorm vn;  // unconfigured: adopts the state whole (a RewardScaler's: its statistics)
  std::optional<vecnorm::ReturnsState> returns;
  try {
    vecnorm::State state = vecnorm::read_state_file(path);
    vn.import_state(state);
    returns = std::move(state.returns);
  } catch (const vecnorm::Error& e) {
    throw InputError(library_message(e));
  }

  if (json) {
    const std::string out = state_json(path, vn, returns);
    std::fwrite(out.data(), 1, out.size(), stdout);
  } else {
    const vecnorm::Options& o = vn.options();
    const vecnorm::KeyTable& table = vn.key_table();
    std::printf("vecnorm state %s\n", path.c_str());
    std::printf("  estimator     %s\n", vecnorm::to_string(o.estimator));
    std::printf("  decay         %s\n", shortest(o.decay).c_str());
    std::printf("  eps           %s\n", shortest(o.eps).c_str());
    if (o.reduce_batch_dims) std::printf("  statistics    pooled over the batch dims (one per feature)\n");
    else std::printf("  statistics    per element of batch %s\n", table.batch_shape.str().c_str());
    std::printf("  stats dtype   %s\n", o.stats_dtype ? vecnorm::to_string(*o.stats_dtype)
                                                      : "auto (float64 for float64 inputs, float32 for the others)");
    std::printf("  nonfinite     %s\n", vecnorm::to_string(o.nonfinite));
    std::printf("  scale         %s\n", vecnorm::to_string(o.scale));
    if (std::isfinite(o.max_scale)) std::printf("  max scale     %s\n", shortest(o.max_scale).c_str());
    if (std::isfinite(o.clip)) std::printf("  clip          %s\n", shortest(o.clip).c_str());
    if (o.prior_count > 0) std::printf("  prior count   %s\n", shortest(o.prior_count).c_str());
    if (o.unbiased) std::printf("  batch var     unbiased (m - 1)\n");
    if (o.until > 0)
      std::printf("  until         %lld samples%s\n", static_cast<long long>(o.until),
                  o.until_strict ? " (strict: no batch takes the count past it)" : "");
    if (!o.center) std::printf("  center        no (y = x / scale)\n");
    if (returns)
      std::printf("  returns       a reward scaler's: gamma %s, reset %s, one per environment of batch %s\n",
                  shortest(returns->options.gamma).c_str(), vecnorm::to_string(returns->options.reset),
                  table.batch_shape.str().c_str());
    std::printf("  keys          %zu\n", table.keys.size());
    for (const auto& spec : table.keys) print_table(vn, spec, all);
  }
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) throw InputError("cannot write to stdout");
  return kExitOk;
}

}  // namespace vncli
