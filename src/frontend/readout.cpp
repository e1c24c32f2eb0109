// src/frontend/readout.cpp -- see readout.hpp.
#include "readout.hpp"

#include <algorithm>

#include "../plan.hpp"
#include "checks.hpp"
#include "vecnorm/core/estimator.hpp"

namespace vecnorm::detail {

std::vector<double> KeyMaps::widened(bool of_p) const {
  const std::vector<double>& raw = of_p ? p : mu;
  std::vector<double> out(numel);
  if (dtype == DType::float64) {
    std::copy(raw.begin(), raw.begin() + static_cast<std::ptrdiff_t>(numel), out.begin());
  } else {
    const float* f = reinterpret_cast<const float*>(raw.data());
    for (std::size_t i = 0; i < numel; ++i) out[i] = static_cast<double>(f[i]);
  }
  return out;
}

KeyMaps key_maps(const Options& options, const KeySpec& spec, const HostStats& st, core::MapKind kind) {
  // (With a prior, count 0 reads out the prior's map: refuses_zero_count.)
  if (st.count <= 0 && !(options.prior_count > 0.0)) fail_zero_count(spec.name, st.count);
  KeyMaps out;
  const DType sd = stats_dtype_for(options.stats_dtype, spec.dtype);
  out.dtype = compute_dtype(spec.dtype, sd);
  out.numel = static_cast<std::size_t>(st.numel);
  out.mu.assign(out.numel, 0.0);  // double slots hold numel values of either type
  out.p.assign(out.numel, 0.0);
  const core::Decay decay = core::make_decay(options.decay, options.prior_count, options.unbiased);
  const core::ScaleRule<double> rule = core::make_scale_rule(options.scale, options.eps, options.clip, options.center,
                                                                  options.max_scale);
  auto go = [&](auto s_tag, auto c_tag) {
    using S = decltype(s_tag);
    using C = decltype(c_tag);
    const core::StoredStats<S> stored{static_cast<const S*>(st.loc), static_cast<const S*>(st.var), st.count,
                                      st.skips, st.numel, options.reduce_batch_dims};
    core::visit(options.estimator, [&](auto est) {
      core::stats_maps<decltype(est), S, C>(decay, rule, stored, kind, reinterpret_cast<C*>(out.mu.data()),
                                            reinterpret_cast<C*>(out.p.data()));
    });
  };
  if (sd == DType::float64)
    go(double{}, double{});
  else if (out.dtype == DType::float64)
    go(float{}, double{});
  else
    go(float{}, float{});
  return out;
}

}  // namespace vecnorm::detail
