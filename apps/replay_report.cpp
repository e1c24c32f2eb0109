// apps/replay_report.cpp -- see replay_report.hpp.
#include "replay_report.hpp"

#include <cstdio>

#include "cli.hpp"

namespace vncli::replay {
namespace {

Result result_of(const vecnorm::VecNorm& vn, const std::string& key) {
  Result r;
  r.key = key;
  r.shape = vn.stats_shape(key);
  r.count = vn.count(key);
  // Read-outs exist once updated, or from the start with a prior (its map).
  r.updated = *r.count > 0 || vn.options().prior_count > 0.0;
  if (r.updated) {
    r.loc = vn.loc(key);
    r.scale = vn.scale(key);
  }
  return r;
}

}  // namespace

std::vector<Result> results_of(const vecnorm::VecNorm& vn, const Inputs& inputs, bool stateless) {
  std::vector<Result> results;
  for (const auto& in : inputs) {
    Result r = result_of(vn, in->spec.key);
    if (stateless) {  // each element's own (a --mask or a non-finite value leaves some behind)
      r.counts = vn.element_counts(in->spec.key);
      r.count.reset();
    }
    results.push_back(std::move(r));
  }
  return results;
}

std::string results_json(const std::vector<Result>& results, bool stateless) {
  std::string out = "{";
  for (std::size_t k = 0; k < results.size(); ++k) {
    const Result& r = results[k];
    out += k ? ",\n " : "\n ";
    json_string(out, r.key);
    out += ": {\"shape\": ";
    json_shape(out, r.shape);
    out += ", \"count\": ";
    if (stateless) {
      json_ints(out, r.counts);
    } else {
      json_int(out, *r.count);
    }
    out += ", \"loc\": ";
    if (r.updated) json_numbers(out, r.loc);
    else out += "null";
    out += ", \"scale\": ";
    if (r.updated) json_numbers(out, r.scale);
    else out += "null";
    out += "}";
  }
  out += "\n}\n";
  return out;
}

void print_summary(const Args& a, const vecnorm::Options& opt, const vecnorm::ReturnOptions* returns,
                   const Inputs& inputs, const std::vector<Result>& results, std::int64_t T, double seconds) {
  std::printf("vecnorm replay: %lld steps of %zu key%s in %.2f s (backend %s, %s estimator, decay %s, eps %s, %s)\n",
              static_cast<long long>(T), inputs.size(), inputs.size() == 1 ? "" : "s", seconds,
              vecnorm::to_string(opt.backend), vecnorm::to_string(opt.estimator), shortest(opt.decay).c_str(),
              shortest(opt.eps).c_str(),
              a.stateless             ? "stateless"
              : opt.reduce_batch_dims ? "pooled statistics"
                                      : "per-element statistics");
  if (returns != nullptr)
    std::printf("  rewards scaled by the std of their discounted return: gamma %s, reset %s%s\n",
                shortest(returns->gamma).c_str(), vecnorm::to_string(returns->reset),
                returns->hold_frozen ? ", frozen returns hold" : "");
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const Input& in = *inputs[k];
    std::printf("  %s: %s %s, steps %lld..%lld, count %lld%s%s\n", in.spec.key.c_str(), dims_str(in.file_shape).c_str(),
                vecnorm::to_string(in.in_dtype), static_cast<long long>(in.spec.first),
                static_cast<long long>(T - 1), static_cast<long long>(results[k].final_count()),
                in.writer ? " -> " : "", in.writer ? in.writer->path().c_str() : "");
  }
  if (!a.save_state.empty()) std::printf("  state saved to %s\n", a.save_state.c_str());
}

}  // namespace vncli::replay
