// tests/api/element_mask_test.cpp -- row masks on per-element statistics
// (KeyData::mask, ExternalItem::mask, StatelessItem::mask without
// reduce_batch_dims): the elements of a row whose mask byte is 0 keep their
// statistics and their count, as if the row had not arrived, and are still
// normalized, with their statistics as they are. With one count per key (a
// VecNorm, external per-key views) each such element adds one to its skips
// and to the key's health counter, so that its own count is the key's less
// its skips; with one count per element (stateless, external per-element
// counts) its count does not move.
//
// Against a naive per-element reference (tests/reference: one cell and one
// count per element, updated only where the row is kept and the value
// finite), on every backend (the CUDA kernel under the emulator, over several
// blocks), both estimators, every way of holding the statistics.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "reference.hpp"
#include "support/device_buffer.hpp"
#include "support/errors.hpp"
#include "support/harness.hpp"
#include "vecnorm/vecnorm.hpp"

namespace {

using vecnorm::Backend;
using vecnorm::CountLayout;
using vecnorm::DType;
using vecnorm::ErrorCode;
using vecnorm::Shape;
using vntest::DeviceBuffer;

constexpr std::int64_t kF = 3;

/// Where the statistics live.
enum class Holder { vecnorm, external_per_key, external_per_element, stateless };

const char* holder_name(Holder h) {
  switch (h) {
    case Holder::vecnorm: return "VecNorm";
    case Holder::external_per_key: return "ExternalPerKey";
    case Holder::external_per_element: return "ExternalPerElement";
    default: return "Stateless";
  }
}

/// Step t of a batch of m rows: about a third of the rows left out (every row
/// at step 3, none at step 5; at step 0 rows r % 3 == 0 of a small batch --
/// elements left out at count 0 -- and none of a large one: its first mask
/// comes at count 1, when no element has been left out before); left-out rows
/// hold NaN, inf and 1e30 at odd steps; at step 6 a kept row holds a NaN (a skip).
struct Step {
  std::vector<double> x, mask;
};
Step step_data(int t, std::int64_t m) {
  std::mt19937_64 rng(1000u + static_cast<unsigned>(t));
  std::normal_distribution<double> z(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const double loc[kF] = {1.0, -30.0, 500.0};
  const double sd[kF] = {2.0, 0.01, 50.0};
  Step s;
  bool nan_placed = false;
  for (std::int64_t r = 0; r < m; ++r) {
    const bool keep = t == 5 || (t == 0 ? (m > 100 || r % 3 != 0) : t != 3 && u(rng) > 0.35);
    s.mask.push_back(keep ? 1.0 : 0.0);
    for (std::int64_t f = 0; f < kF; ++f) {
      // Each element's own location, so that the elements' statistics differ.
      double v = static_cast<double>(static_cast<float>(loc[f] + static_cast<double>(r % 5) + sd[f] * z(rng)));
      if (!keep && t % 2 == 1) v = f == 0 ? std::nan("") : f == 1 ? std::numeric_limits<double>::infinity() : 1e30;
      if (keep && t == 6 && f == 2 && !nan_placed) {
        v = std::nan("");
        nan_placed = true;
      }
      s.x.push_back(v);
    }
  }
  return s;
}

/// The naive reference: one cell and one count per element.
struct ElementRef {
  vnref::Config cfg;
  std::vector<vnref::Cell> cells;
  std::vector<std::int64_t> n;
  std::int64_t left_out = 0;  ///< elements left out so far (masked rows, non-finite values)
  ElementRef(vnref::Config c, std::int64_t numel)
      : cfg(c), cells(static_cast<std::size_t>(numel)), n(static_cast<std::size_t>(numel), 0) {}
  void update(const Step& s) {
    for (std::size_t i = 0; i < cells.size(); ++i) {
      const bool kept = s.mask[i / kF] != 0 && std::isfinite(s.x[i]);
      if (!kept) {
        ++left_out;
        continue;
      }
      vnref::update_one(cfg, cells[i], n[i], s.x[i]);
      ++n[i];
    }
  }
  double normalize(std::size_t i, double x) const { return vnref::normalize(vnref::read(cfg, cells[i], n[i]), x); }
};

using Param = std::tuple<Backend, vnref::Estimator, Holder, std::int64_t /*rows*/>;
class ElementMasks : public ::testing::TestWithParam<Param> {
 protected:
  Backend backend() const { return std::get<0>(GetParam()); }
  vnref::Estimator estimator() const { return std::get<1>(GetParam()); }
  Holder holder() const { return std::get<2>(GetParam()); }
  std::int64_t rows() const { return std::get<3>(GetParam()); }
  vecnorm::Options opts() const {
    vecnorm::Options o = vntest::options_for(backend());
    o.stats_dtype = DType::float64;
    const bool stable = estimator() == vnref::Estimator::stable;
    o.estimator = stable ? vecnorm::Estimator::stable : vecnorm::Estimator::torchrl;
    o.decay = stable ? 1.0 : 0.95;
    return o;
  }
};

TEST_P(ElementMasks, LeftOutElementsKeepTheirStatisticsAndCountAndAreStillNormalized) {
  const vecnorm::Options o = opts();
  const std::int64_t m = rows(), numel = m * kF;
  const vecnorm::KeyTable table{Shape{m}, {{"obs", Shape{kF}, DType::float32}}};
  const Holder h = holder();
  std::optional<vecnorm::VecNorm> vn;
  if (h == Holder::vecnorm) vn.emplace(o, table);
  // The caller's statistics (every holder but VecNorm): loc, var, counts,
  // and with one count per key the skips and the health counter.
  const bool count_per_key = h == Holder::external_per_key;
  DeviceBuffer loc(backend(), DType::float64, Shape{m, kF}), var(backend(), DType::float64, Shape{m, kF});
  DeviceBuffer count(backend(), DType::int64, count_per_key ? Shape{} : Shape{m, kF});
  DeviceBuffer skips(backend(), DType::int64, Shape{m, kF}), skipped(backend(), DType::int64, Shape{});
  ElementRef ref({estimator(), o.decay, o.eps}, numel);
  for (int t = 0; t < 8; ++t) {
    const std::string at = std::string(holder_name(h)) + " step " + std::to_string(t);
    const Step s = step_data(t, m);
    ref.update(s);
    auto xb = DeviceBuffer::from_values(backend(), DType::float32, Shape{m, kF}, s.x);
    auto mb = DeviceBuffer::from_values(backend(), DType::uint8, Shape{m}, s.mask);
    DeviceBuffer yb(backend(), DType::float32, Shape{m, kF});
    switch (h) {
      case Holder::vecnorm: vn->step({{"obs", xb.cview(), yb.view(), mb.cview()}}); break;
      case Holder::stateless: {
        const vecnorm::StatsView st{loc.view(), var.view(), count.view()};
        vecnorm::stateless::step(o, table, {{"obs", xb.cview(), yb.view(), {st.loc, st.var, st.count}, st, mb.cview()}});
        break;
      }
      default: {
        vecnorm::ExternalStats st{loc.view(), var.view(), count.view(), {}, {}};
        if (count_per_key) {
          st.skips = skips.view();
          st.skipped = skipped.view();
        }
        vecnorm::external::step(o, table, count_per_key ? CountLayout::per_key : CountLayout::per_element,
                                {{"obs", xb.cview(), yb.view(), st, mb.cview()}});
      }
    }
    vecnorm::synchronize(o.backend);

    // The counts: each element's own, and how the holder keeps them.
    std::vector<double> element_counts;
    if (h == Holder::vecnorm) {
      for (const std::int64_t c : vn->element_counts("obs")) element_counts.push_back(static_cast<double>(c));
      const vecnorm::State st = vn->export_state();
      EXPECT_EQ(st.keys[0].count, t + 1) << at << ": the key's count moves once a step";
      EXPECT_EQ(st.keys[0].skipped, ref.left_out) << at << ": the health counter";
    } else if (count_per_key) {
      EXPECT_EQ(count.values(), std::vector<double>{static_cast<double>(t + 1)}) << at;
      EXPECT_EQ(skipped.values(), std::vector<double>{static_cast<double>(ref.left_out)}) << at;
      for (const double k : skips.values()) element_counts.push_back(static_cast<double>(t + 1) - k);
    } else {
      element_counts = count.values();
    }
    ASSERT_EQ(element_counts.size(), ref.n.size()) << at;
    for (std::size_t i = 0; i < ref.n.size(); ++i)
      ASSERT_EQ(element_counts[i], static_cast<double>(ref.n[i])) << at << " count of element " << i;

    // Every element's output, left-out ones included (with their statistics
    // as they are), but where the value is not finite or the element has no
    // sample yet.
    const std::vector<double> y = yb.values();
    for (std::size_t i = 0; i < y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || ref.n[i] == 0) continue;
      const double want = ref.normalize(i, s.x[i]);
      EXPECT_NEAR(y[i], want, 2e-6 * std::max(1.0, std::abs(want))) << at << " y[" << i << "] (row "
                                                                     << i / kF << " kept " << s.mask[i / kF] << ")";
    }
  }
  // Every element has had samples (step 5 kept every row): a frozen
  // normalize of the last batch, and the read-outs, with each element's count.
  const Step s = step_data(7, m);
  std::vector<double> finite = s.x;
  for (double& v : finite)
    if (!std::isfinite(v) || std::abs(v) > 1e20) v = 1.5;
  auto xb = DeviceBuffer::from_values(backend(), DType::float32, Shape{m, kF}, finite);
  DeviceBuffer yb(backend(), DType::float32, Shape{m, kF});
  if (h == Holder::vecnorm) {
    vn->normalize({{"obs", xb.cview(), yb.view()}});
    const std::vector<double> mean = vn->loc("obs"), scale = vn->scale("obs");
    for (std::size_t i = 0; i < ref.n.size(); ++i) {
      const vnref::Readout r = vnref::read(ref.cfg, ref.cells[i], ref.n[i]);
      EXPECT_NEAR(mean[i], r.mu, 1e-9 * (std::abs(r.mu) + r.scale)) << "mean[" << i << "]";
      EXPECT_NEAR(scale[i], r.scale, 1e-7 * r.scale) << "scale[" << i << "]";
    }
  } else {
    vecnorm::ExternalStats st{loc.view(), var.view(), count.view(), {}, {}};
    if (count_per_key) {
      st.skips = skips.view();
      st.skipped = skipped.view();
    }
    vecnorm::external::step(o, table, count_per_key ? CountLayout::per_key : CountLayout::per_element,
                            {{"obs", xb.cview(), yb.view(), st}}, vecnorm::Op::normalize);
  }
  const std::vector<double> y = yb.values();
  for (std::size_t i = 0; i < y.size(); ++i) {
    const double want = ref.normalize(i, finite[i]);
    EXPECT_NEAR(y[i], want, 2e-6 * std::max(1.0, std::abs(want))) << "normalize y[" << i << "]";
  }
}

INSTANTIATE_TEST_SUITE_P(
    All, ElementMasks,
    ::testing::Combine(::testing::ValuesIn(vntest::test_backends()),
                       ::testing::Values(vnref::Estimator::torchrl, vnref::Estimator::stable),
                       ::testing::Values(Holder::vecnorm, Holder::external_per_key, Holder::external_per_element,
                                         Holder::stateless),
                       ::testing::Values<std::int64_t>(7, 700)),
    [](const ::testing::TestParamInfo<Param>& info) {
      return std::string(vntest::backend_name(std::get<0>(info.param))) +
             (std::get<1>(info.param) == vnref::Estimator::stable ? "_stable_" : "_torchrl_") +
             holder_name(std::get<2>(info.param)) + "_rows" + std::to_string(std::get<3>(info.param));
    });

// The state keeps what a mask left out: a checkpoint round trip, then more
// masked steps, give the same bits as the normalizer that never stopped; a
// batch of two dims takes a mask of those two dims.
TEST(ElementMaskState, RoundTripAndTwoBatchDims) {
  for (const Backend backend : vntest::test_backends()) {
    vecnorm::Options o = vntest::options_for(backend);
    const vecnorm::KeyTable table{Shape{4, 5}, {{"obs", Shape{kF}, DType::float32}}};
    vecnorm::VecNorm a(o, table);
    std::optional<vecnorm::VecNorm> b;
    for (int t = 0; t < 6; ++t) {
      const Step s = step_data(t, 20);
      auto xb = DeviceBuffer::from_values(backend, DType::float32, Shape{4, 5, kF}, s.x);
      auto mb = DeviceBuffer::from_values(backend, DType::uint8, Shape{4, 5}, s.mask);
      DeviceBuffer ya(backend, DType::float32, Shape{4, 5, kF}), yb(backend, DType::float32, Shape{4, 5, kF});
      a.step({{"obs", xb.cview(), ya.view(), mb.cview()}});
      if (t == 2) {
        b.emplace(o);
        b->import_state(vecnorm::decode_state(vecnorm::encode_state(a.export_state())));
      }
      if (t <= 2) continue;
      b->step({{"obs", xb.cview(), yb.view(), mb.cview()}});
      const std::string at = std::string(vntest::backend_name(backend)) + " step " + std::to_string(t);
      EXPECT_EQ(ya.values().size(), yb.values().size());
      const std::vector<double> va = ya.values(), vb = yb.values();
      for (std::size_t i = 0; i < va.size(); ++i) {
        if (std::isfinite(va[i]) || std::isfinite(vb[i])) EXPECT_EQ(va[i], vb[i]) << at << " y[" << i << "]";
      }
      const vecnorm::State sa = a.export_state(), sb = b->export_state();
      EXPECT_EQ(sa.keys[0].loc, sb.keys[0].loc) << at;
      EXPECT_EQ(sa.keys[0].var, sb.keys[0].var) << at;
      EXPECT_EQ(sa.keys[0].skips, sb.keys[0].skips) << at;
      EXPECT_EQ(sa.keys[0].skipped, sb.keys[0].skipped) << at;
      EXPECT_FALSE(sa.keys[0].skips.empty()) << at << ": the left-out elements are in the state";
    }
  }
}

using vntest::message_of;

// External per-key views without skips cannot keep what a mask leaves out:
// refused by name, nothing changed, whatever the nonfinite mode.
TEST(ElementMaskChecks, PerKeyViewsNeedSkipsForAMask) {
  for (const vecnorm::NonFinite nf : {vecnorm::NonFinite::propagate, vecnorm::NonFinite::error}) {
    vecnorm::Options o;
    o.nonfinite = nf;
    const vecnorm::KeyTable table{Shape{4}, {{"obs", Shape{2}, DType::float32}}};
    std::vector<float> x(8, 1.0f), y(8), loc(8, 0.0f), var(8, 0.0f);
    std::int64_t count = 0;
    std::vector<std::uint8_t> mask = {1, 0, 1, 1};
    const vecnorm::ExternalStats st{{loc.data(), DType::float32, Shape{4, 2}},
                                    {var.data(), DType::float32, Shape{4, 2}},
                                    {&count, DType::int64, Shape{}},
                                    {},
                                    {}};
    o.stats_dtype = DType::float32;
    const std::string e = message_of(
        [&] {
          vecnorm::external::step(o, table, CountLayout::per_key,
                                  {{"obs", {x.data(), DType::float32, Shape{4, 2}}, {y.data(), DType::float32, Shape{4, 2}},
                                    st, {mask.data(), DType::uint8, Shape{4}}}});
        },
        ErrorCode::invalid_argument);
    EXPECT_NE(e.find("key 'obs': skips and skipped: expected views (int64 [4, 2] and int64 []) with per-element "
                     "statistics, one count per key and a row mask, got no skips"),
              std::string::npos)
        << e;
    EXPECT_EQ(count, 0) << "nothing ran";
    // Without a mask the views need none (but under nonfinite = skip).
    vecnorm::external::step(o, table, CountLayout::per_key,
                            {{"obs", {x.data(), DType::float32, Shape{4, 2}}, {y.data(), DType::float32, Shape{4, 2}}, st}});
    EXPECT_EQ(count, 1);
  }
}

}  // namespace
