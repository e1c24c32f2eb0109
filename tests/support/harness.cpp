// tests/support/harness.cpp -- see harness.hpp.
#include "harness.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <sstream>

#include "check.hpp"
#include "data.hpp"
#include "device_buffer.hpp"
#include "dtypes.hpp"

namespace vntest {

const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::per_element: return "per_element";
    case Mode::pooled: return "pooled";
    case Mode::stateless: return "stateless";
  }
  return "?";
}

const char* estimator_name(vecnorm::Estimator e) { return e == vecnorm::Estimator::stable ? "stable" : "torchrl"; }

std::string param_name(const std::tuple<vecnorm::Backend, Mode, vecnorm::Estimator>& p) {
  return std::string(backend_name(std::get<0>(p))) + "_" + mode_name(std::get<1>(p)) + "_" +
         estimator_name(std::get<2>(p));
}

vnref::Estimator to_ref(vecnorm::Estimator e) {
  return e == vecnorm::Estimator::stable ? vnref::Estimator::stable : vnref::Estimator::torchrl;
}

std::string decay_name(double decay) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", decay);
  return buf;
}

std::string Case::name() const {
  std::ostringstream os;
  os << backend_name(backend) << "/" << mode_name(mode) << "/" << estimator_name(estimator) << "/d=" << decay_name(decay)
     << "/in=" << short_name(input) << "/stats=" << short_name(stats) << "/batch=" << batch.str()
     << "/feature=" << feature.str() << "/seed=" << seed;
  return os.str();
}

vecnorm::Options Case::options() const {
  vecnorm::Options o = options_for(backend);
  o.decay = decay;
  o.eps = eps;
  o.estimator = estimator;
  o.stats_dtype = stats;
  o.reduce_batch_dims = mode == Mode::pooled;
  return o;
}

vnref::Config Case::ref_config() const { return vnref::Config{to_ref(estimator), decay, eps}; }

vecnorm::KeyTable Case::table(const std::string& key) const {
  vecnorm::KeyTable t;
  t.batch_shape = batch;
  t.keys.push_back(vecnorm::KeySpec{key, feature, input});
  return t;
}

std::uint64_t data_seed(const Case& c) {
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::uint64_t v) { h = (h ^ v) * 1099511628211ull; };
  mix(c.seed);
  mix(static_cast<std::uint64_t>(c.mode));
  mix(static_cast<std::uint64_t>(c.estimator));
  mix(static_cast<std::uint64_t>(c.input));
  mix(static_cast<std::uint64_t>(c.stats));
  mix(static_cast<std::uint64_t>(c.decay * 1e6));
  for (auto d : c.batch) mix(static_cast<std::uint64_t>(d) + 17);
  for (auto d : c.feature) mix(static_cast<std::uint64_t>(d) + 31);
  return h;
}

namespace {

using vecnorm::DType;

// EXPECT_TRUE that also tells the caller whether it held.
bool expect(const ::testing::AssertionResult& r) {
  EXPECT_TRUE(r);
  return static_cast<bool>(r);
}

struct Stepper {
  const Case& c;
  std::mt19937_64 rng;
  FeatureDistribution dist;
  std::int64_t m, F;
  vecnorm::Shape shape;
  DType out;

  explicit Stepper(const Case& cs)
      : c(cs), rng(data_seed(cs)), m(cs.batch.numel()), F(cs.feature.numel()), shape(cs.batch.concat(cs.feature)),
        out(vecnorm::output_dtype(cs.input)) {
    dist = random_distribution(rng, F > 0 ? F : 1);
  }
  std::vector<double> stored() { return random_values(rng, c.input, m, F, dist); }
};

// ---------------------------------------------------------------- stateful

void run_stateful(const Case& c) {
  const bool pooled = c.mode == Mode::pooled;
  Stepper s(c);
  vecnorm::VecNorm vn(c.options(), c.table());
  vnref::StatefulKey ref(c.ref_config(), pooled, s.F, s.m);
  const vecnorm::Shape stats_shape = pooled ? c.feature : s.shape;

  auto check_readouts = [&](const std::string& where, int steps) -> bool {
    bool ok = true;
    if (vn.count("obs") != ref.count()) {
      ADD_FAILURE() << where << ": count(obs) expected " << ref.count() << ", actual " << vn.count("obs");
      ok = false;
    }
    if (vn.stats_shape("obs") != stats_shape) {
      ADD_FAILURE() << where << ": stats_shape(obs) expected " << stats_shape.str() << ", actual "
                    << vn.stats_shape("obs").str();
      ok = false;
    }
    if (ref.count() == 0) return ok;
    const double rtol = rtol_for(c.stats, steps);
    const auto r = ref.readouts();
    ok &= expect(AllClose(where + ": loc(obs)", ref.loc(), vn.loc("obs"), mu_tolerances(r, rtol)));
    ok &= expect(AllClose(where + ": scale(obs)", ref.scale(), vn.scale("obs"), scale_tolerances(r, rtol, c.eps)));
    return ok;
  };

  int steps = 0;
  for (int t = 1; t <= c.steps; ++t) {
    const std::string where = c.name() + " step " + std::to_string(t);
    const auto stored = s.stored();
    const auto x = computed_inputs(c.input, stored);
    auto xb = DeviceBuffer::from_values(c.backend, c.input, s.shape, stored);
    DeviceBuffer yb(c.backend, s.out, s.shape);
    vn.step({{"obs", xb.cview(), yb.view()}});
    ref.update(x, s.m);
    ++steps;
    const double rtol = rtol_for(c.stats, steps);
    bool ok = expect(AllClose(where + ": y", ref.normalize(x, s.m), yb.values(),
                              y_tolerances(ref.readouts(), pooled, s.F, x, rtol, c.eps, s.out)));
    ok &= check_readouts(where, steps);
    if (!ok) return;
  }

  // Update only: statistics move, y is not written.
  {
    const std::string where = c.name() + " update-only";
    const auto stored = s.stored();
    const auto x = computed_inputs(c.input, stored);
    auto xb = DeviceBuffer::from_values(c.backend, c.input, s.shape, stored);
    DeviceBuffer yb(c.backend, s.out, s.shape);
    yb.fill(0xA5);
    const auto sentinel = yb.bytes();
    vn.update({{"obs", xb.cview(), yb.view()}});
    ref.update(x, s.m);
    ++steps;
    bool ok = expect(BitEqual(where + ": y must not be written", s.out, sentinel, yb.bytes()));
    ok &= check_readouts(where, steps);
    if (!ok) return;
  }
  // Normalize only: nothing moves.
  {
    const std::string where = c.name() + " normalize-only";
    const auto stored = s.stored();
    const auto x = computed_inputs(c.input, stored);
    auto xb = DeviceBuffer::from_values(c.backend, c.input, s.shape, stored);
    DeviceBuffer yb(c.backend, s.out, s.shape);
    vn.normalize({{"obs", xb.cview(), yb.view()}});
    const double rtol = rtol_for(c.stats, steps);
    EXPECT_TRUE(AllClose(where + ": y", ref.normalize(x, s.m), yb.values(),
                         y_tolerances(ref.readouts(), pooled, s.F, x, rtol, c.eps, s.out)));
    check_readouts(where, steps);
  }
}

// ---------------------------------------------------------------- stateless

struct StatsBuffers {
  DeviceBuffer loc, var, count;
  StatsBuffers(vecnorm::Backend b, DType stats, vecnorm::Shape shape)
      : loc(b, stats, shape), var(b, stats, shape), count(b, DType::int64, shape) {}
  vecnorm::ConstStatsView in() const { return {loc.cview(), var.cview(), count.cview()}; }
  vecnorm::StatsView out() { return {loc.view(), var.view(), count.view()}; }
  std::vector<std::int64_t> counts() const {
    std::vector<std::int64_t> out;
    for (double v : count.values()) out.push_back(static_cast<std::int64_t>(v));
    return out;
  }
};

void run_stateless(const Case& c) {
  Stepper s(c);
  const vecnorm::Options opts = c.options();
  const vecnorm::KeyTable table = c.table();
  const vnref::Config cfg = c.ref_config();
  vnref::StatelessStats ref = vnref::StatelessStats::zeros(s.shape.numel());
  StatsBuffers a(c.backend, c.stats, s.shape), b(c.backend, c.stats, s.shape);
  StatsBuffers* current = nullptr;  // where the statistics are now (null: nowhere yet, read as zeros)

  auto check_stats = [&](const std::string& where, const StatsBuffers& got, int steps) -> bool {
    const double rtol = rtol_for(c.stats, steps);
    std::vector<double> exp_loc, exp_var;
    for (const auto& cell : ref.cells) {
      exp_loc.push_back(static_cast<double>(cell.loc));
      exp_var.push_back(static_cast<double>(cell.var));
    }
    bool ok = expect(AllEqual(where + ": out.count", ref.count, got.counts()));
    const auto r = vnref::stateless_readouts(cfg, ref);
    ok &= expect(AllClose(where + ": out.loc", exp_loc, got.loc.values(), stored_loc_tolerances(r, rtol)));
    ok &= expect(AllClose(where + ": out.var", exp_var, got.var.values(), stored_var_tolerances(r, rtol)));
    return ok;
  };

  int steps = 0;
  for (int t = 1; t <= c.steps + 1; ++t) {
    const bool update_only = t == c.steps + 1;
    const std::string where = c.name() + (update_only ? std::string(" update-only") : " step " + std::to_string(t));
    const auto stored = s.stored();
    const auto x = computed_inputs(c.input, stored);
    auto xb = DeviceBuffer::from_values(c.backend, c.input, s.shape, stored);
    DeviceBuffer yb(c.backend, s.out, s.shape);
    yb.fill(0xA5);
    const auto sentinel = yb.bytes();
    // Alternate between separate in/out buffers and in-place (aliased) updates.
    StatsBuffers* target = (current == nullptr) ? &a : (t % 2 == 0 ? current : (current == &a ? &b : &a));
    vecnorm::ConstStatsView in = current ? current->in() : vecnorm::ConstStatsView{};
    if (!current) {
      // "Missing statistics start as zeros": null views of the right dtypes.
      in.loc = vecnorm::ConstTensorView(nullptr, c.stats, s.shape, device_of(c.backend));
      in.var = vecnorm::ConstTensorView(nullptr, c.stats, s.shape, device_of(c.backend));
      in.count = vecnorm::ConstTensorView(nullptr, DType::int64, s.shape, device_of(c.backend));
    }
    vecnorm::StatelessItem item{"obs", xb.cview(), yb.view(), in, target->out()};
    vecnorm::stateless::step(opts, table, {item},
                             update_only ? vecnorm::Op::update : vecnorm::Op::update_and_normalize);
    vnref::stateless_update(cfg, ref, x);
    ++steps;
    current = target;
    bool ok;
    if (update_only) {
      ok = expect(BitEqual(where + ": y must not be written", s.out, sentinel, yb.bytes()));
    } else {
      const double rtol = rtol_for(c.stats, steps);
      ok = expect(AllClose(where + ": y", vnref::stateless_normalize(cfg, ref, x), yb.values(),
                           y_tolerances(vnref::stateless_readouts(cfg, ref), false, s.F, x, rtol, c.eps, s.out)));
    }
    ok &= check_stats(where, *current, steps);
    if (!ok) return;
  }
  // Normalize only: out is not written, the statistics in do not change.
  {
    const std::string where = c.name() + " normalize-only";
    const auto stored = s.stored();
    const auto x = computed_inputs(c.input, stored);
    auto xb = DeviceBuffer::from_values(c.backend, c.input, s.shape, stored);
    DeviceBuffer yb(c.backend, s.out, s.shape);
    StatsBuffers& other = current == &a ? b : a;
    other.loc.fill(0x5A);
    other.var.fill(0x5A);
    other.count.fill(0x5A);
    const auto before_loc = current->loc.bytes(), sent_loc = other.loc.bytes();
    vecnorm::StatelessItem item{"obs", xb.cview(), yb.view(), current->in(), other.out()};
    vecnorm::stateless::step(opts, table, {item}, vecnorm::Op::normalize);
    const double rtol = rtol_for(c.stats, steps);
    EXPECT_TRUE(AllClose(where + ": y", vnref::stateless_normalize(cfg, ref, x), yb.values(),
                         y_tolerances(vnref::stateless_readouts(cfg, ref), false, s.F, x, rtol, c.eps, s.out)));
    EXPECT_TRUE(BitEqual(where + ": in.loc must not change", c.stats, before_loc, current->loc.bytes()));
    EXPECT_TRUE(BitEqual(where + ": out.loc must not be written", c.stats, sent_loc, other.loc.bytes()));
  }
}

}  // namespace

void run_case(const Case& c) {
  if (c.mode == Mode::stateless) run_stateless(c);
  else run_stateful(c);
}

}  // namespace vntest

namespace vntest {

std::vector<std::byte> call_one(Call call, vecnorm::VecNorm* vn, const vecnorm::AffineNormalizer* affine,
                                vecnorm::Backend backend, std::string_view key, vecnorm::DType in,
                                vecnorm::Shape shape, const std::vector<double>& x_values) {
  auto xb = DeviceBuffer::from_values(backend, in, shape, x_values);
  DeviceBuffer yb(backend, vecnorm::output_dtype(in), shape);
  const vecnorm::KeyData kd{key, xb.cview(), yb.view()};
  switch (call) {
    case Call::step: vn->step({kd}); break;
    case Call::update: vn->update({kd}); break;
    case Call::normalize: vn->normalize({kd}); break;
    case Call::denormalize: vn->denormalize({kd}); break;
    case Call::affine_apply: affine->apply({kd}); break;
    case Call::affine_invert: affine->invert(std::span<const vecnorm::KeyData>(&kd, 1)); break;
  }
  return yb.bytes();
}

}  // namespace vntest
