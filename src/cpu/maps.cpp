// src/cpu/maps.cpp -- affine maps on the CPU: denormalize from statistics
// (the maps of vecnorm/core/maps.hpp computed into the workspace) and the
// fixed maps of an AffineNormalizer. Compiled once per instruction set
// (src/cpu/isa_begin.hpp).
#include "includes.hpp"
// clang-format off
#include "isa_begin.hpp"
#include "loops.hpp"
#include "map_loops.hpp"
// clang-format on

namespace vecnorm::detail::cpu::VECNORM_CPU_ISA {
namespace {

/// Calls f(Tag<X>{}) for the float dtypes (what a denormalized x can be).
template <class F>
void visit_output(DType d, F&& f) {
  switch (d) {
    case DType::float64: return f(Tag<double>{});
    case DType::float16: return f(Tag<half_t>{});
    case DType::bfloat16: return f(Tag<bf16_t>{});
    default: return f(Tag<float>{});
  }
}

/// Denormalize one key: the map (mu, scale) of its statistics, then y = x * scale + mu.
template <class Est, class X, class S>
void denormalize_segment(const Plan& p, const Segment& s, Scratch& ws) {
  using C = compute_t<X, S>;
  const std::int64_t numel = p.pooled ? s.feat : s.rows * s.feat;
  C* mu = static_cast<C*>(ws.host(2 * static_cast<std::size_t>(numel) * sizeof(C)));
  C* scale = mu + numel;
  const bool skips = !p.pooled && s.skips != nullptr && s.skipped != nullptr && *s.skipped != 0;
  const core::StoredStats<S> st{static_cast<const S*>(s.loc_in), static_cast<const S*>(s.var_in), *s.count_in,
                                skips ? s.skips : nullptr, numel, p.pooled};
  core::stats_maps<Est, S, C>(p.decay, p.rule, st, core::MapKind::denormalize, mu, scale);
  map_segment<X, C>(MapRun<C>{s.x, s.y, s.rows, s.feat, p.pooled, mu, scale}, core::MapKind::denormalize,
                    max_threads(p.threads));
}

}  // namespace

std::size_t maps_scratch(const Plan& plan, const Segment& s) {
  if (plan.work != Work::denormalize) return 0;
  const std::int64_t numel = plan.pooled ? s.feat : s.rows * s.feat;
  return 2 * static_cast<std::size_t>(numel) * dtype_size(compute_dtype(s.x_dtype, s.stats_dtype));
}

void run_maps(const Plan& plan, const Segment& s, Scratch& ws) {
  if (plan.work == Work::denormalize) {
    core::visit(plan.estimator, [&](auto est) {
      visit_output(s.x_dtype, [&](auto xt) {
        visit_float(s.stats_dtype, [&](auto st) {
          denormalize_segment<decltype(est), typename decltype(xt)::type, typename decltype(st)::type>(plan, s, ws);
        });
      });
    });
    return;
  }
  const core::MapKind dir = plan.work == Work::apply_map ? core::MapKind::normalize : core::MapKind::denormalize;
  visit_input(s.x_dtype, [&](auto xt) {
    using X = typename decltype(xt)::type;
    visit_float(s.map_dtype, [&](auto ct) {
      using C = typename decltype(ct)::type;
      map_segment<X, C>(MapRun<C>{s.x, s.y, s.rows, s.feat, plan.pooled, static_cast<const C*>(s.mu),
                                  static_cast<const C*>(s.p), static_cast<C>(plan.rule.clip)},
                        dir, max_threads(plan.threads));
    });
  });
}

}  // namespace vecnorm::detail::cpu::VECNORM_CPU_ISA

#include "isa_end.hpp"
