// tests/api/errors_test.cpp -- every user mistake throws vecnorm::Error with the
// right ErrorCode and a message naming the key, the expected and the actual value;
// a failing call changes nothing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <limits>

#include "support/check.hpp"
#include "support/device_buffer.hpp"
#include "support/dtypes.hpp"
#include "support/harness.hpp"

namespace {

using vecnorm::Backend;
using vecnorm::DType;
using vecnorm::ErrorCode;
using vecnorm::Shape;
using vntest::DeviceBuffer;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// One required fragment of a message: any of the alternatives, case-insensitive.
struct Fragment {
  std::vector<std::string> any_of;
  Fragment(const char* s) : any_of{s} {}  // NOLINT: implicit for brevity
  Fragment(std::string s) : any_of{std::move(s)} {}  // NOLINT
  Fragment(std::initializer_list<std::string> l) : any_of(l) {}
};

::testing::AssertionResult ThrowsError(const std::function<void()>& f, ErrorCode code,
                                       const std::vector<Fragment>& fragments) {
  try {
    f();
  } catch (const vecnorm::Error& e) {
    if (e.code() != code)
      return ::testing::AssertionFailure() << "expected Error(" << vecnorm::to_string(code) << "), got Error("
                                           << vecnorm::to_string(e.code()) << "): " << e.what();
    const std::string msg = lower(e.what());
    for (const auto& frag : fragments) {
      const bool found = std::any_of(frag.any_of.begin(), frag.any_of.end(),
                                     [&](const std::string& s) { return msg.find(lower(s)) != std::string::npos; });
      if (!found) {
        std::string alts;
        for (const auto& s : frag.any_of) alts += (alts.empty() ? "\"" : " or \"") + s + "\"";
        return ::testing::AssertionFailure() << "Error(" << vecnorm::to_string(code) << ") message lacks " << alts
                                             << ": \"" << e.what() << "\"";
      }
    }
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "expected vecnorm::Error(" << vecnorm::to_string(code)
                                         << "), got another exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "expected vecnorm::Error(" << vecnorm::to_string(code)
                                       << "), nothing was thrown";
}

vecnorm::Device wrong_device(Backend b) {
  return b == Backend::cuda ? vecnorm::Device::cpu() : vecnorm::Device::cuda(0);
}

class Errors : public ::testing::TestWithParam<Backend> {
 protected:
  Backend backend() const { return GetParam(); }
  vecnorm::Options opts() const { return vntest::options_for(backend()); }
  // obs: batch [4], feature [3], float32; reward: feature [], float32.
  vecnorm::KeyTable table() const {
    return vecnorm::KeyTable{Shape{4}, {{"obs", Shape{3}, DType::float32}, {"reward", Shape{}, DType::float32}}};
  }
  DeviceBuffer buf(DType t, Shape s, double fill = 1.0) const {
    return DeviceBuffer::from_values(backend(), t, s, std::vector<double>(s.numel(), fill));
  }
};

// ---------------------------------------------------------------- options

TEST_P(Errors, InvalidOptions) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  struct Bad {
    std::string what;
    std::function<void(vecnorm::Options&)> set;
    std::vector<Fragment> fragments;
  };
  const std::vector<Bad> bad = {
      {"decay 0", [](vecnorm::Options& o) { o.decay = 0.0; }, {"decay", "0"}},
      {"decay < 0", [](vecnorm::Options& o) { o.decay = -0.5; }, {"decay", "-0.5"}},
      {"decay > 1", [](vecnorm::Options& o) { o.decay = 1.5; }, {"decay", "1.5"}},
      {"decay NaN", [nan](vecnorm::Options& o) { o.decay = nan; }, {"decay", "nan"}},
      {"decay inf", [](vecnorm::Options& o) { o.decay = INFINITY; }, {"decay", "inf"}},
      {"eps 0", [](vecnorm::Options& o) { o.eps = 0.0; }, {"eps", "0"}},
      {"eps < 0", [](vecnorm::Options& o) { o.eps = -1.0; }, {"eps", "-1"}},
      {"eps NaN", [nan](vecnorm::Options& o) { o.eps = nan; }, {"eps", "nan"}},
      {"stats int32", [](vecnorm::Options& o) { o.stats_dtype = DType::int32; }, {"stats", "int32", "float64"}},
      {"stats float16", [](vecnorm::Options& o) { o.stats_dtype = DType::float16; }, {"stats", "float16", "float32"}},
      {"stats bfloat16", [](vecnorm::Options& o) { o.stats_dtype = DType::bfloat16; }, {"stats", "bfloat16"}},
  };
  for (const auto& b : bad) {
    vecnorm::Options o = opts();
    b.set(o);
    EXPECT_TRUE(ThrowsError([&] { o.validate(); }, ErrorCode::invalid_option, b.fragments)) << b.what << ": validate()";
    EXPECT_TRUE(ThrowsError([&] { vecnorm::VecNorm vn(o, table()); }, ErrorCode::invalid_option, b.fragments))
        << b.what << ": VecNorm(options, table)";
    EXPECT_TRUE(ThrowsError([&] { vecnorm::VecNorm vn(o); }, ErrorCode::invalid_option, b.fragments))
        << b.what << ": VecNorm(options)";
    auto x = buf(DType::float32, Shape{4, 3});
    auto y = buf(DType::float32, Shape{4, 3});
    vecnorm::StatelessItem item{"obs", x.cview(), y.view(), {}, {}};
    auto loc = buf(DType::float32, Shape{4, 3}, 0), var = buf(DType::float32, Shape{4, 3}, 0),
         count = buf(DType::int64, Shape{4, 3}, 0);
    item.in = {loc.cview(), var.cview(), count.cview()};
    item.out = {loc.view(), var.view(), count.view()};
    EXPECT_TRUE(ThrowsError([&] { vecnorm::stateless::step(o, table(), {item}); }, ErrorCode::invalid_option,
                            b.fragments))
        << b.what << ": stateless::step";
  }
  // Valid edge values are accepted.
  vecnorm::Options ok = opts();
  ok.decay = 1.0;
  ok.eps = 1e-30;
  EXPECT_NO_THROW(ok.validate());
  ok.decay = 1e-9;
  EXPECT_NO_THROW(vecnorm::VecNorm(ok, table()));
}

TEST_P(Errors, ReduceBatchDimsIsStatefulOnly) {
  vecnorm::Options o = opts();
  o.reduce_batch_dims = true;
  auto x = buf(DType::float32, Shape{4, 3});
  auto y = buf(DType::float32, Shape{4, 3});
  auto loc = buf(DType::float32, Shape{4, 3}, 0), var = buf(DType::float32, Shape{4, 3}, 0),
       count = buf(DType::int64, Shape{4, 3}, 0);
  vecnorm::StatelessItem item{"obs", x.cview(), y.view(), {loc.cview(), var.cview(), count.cview()},
                              {loc.view(), var.view(), count.view()}};
  EXPECT_TRUE(ThrowsError([&] { vecnorm::stateless::step(o, table(), {item}); }, ErrorCode::invalid_option,
                          {"reduce_batch_dims"}));
  EXPECT_EQ(count.values(), std::vector<double>(12, 0.0)) << "a rejected step wrote statistics";
}

// ---------------------------------------------------------------- key table

TEST_P(Errors, InvalidKeyTable) {
  const auto o = opts();
  EXPECT_TRUE(ThrowsError([&] { vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{4}, {}}); },
                          ErrorCode::invalid_key_table, {}))
      << "no keys";
  EXPECT_TRUE(ThrowsError([&] { vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{4}, {{"", Shape{3}, DType::float32}}}); },
                          ErrorCode::invalid_key_table, {}))
      << "empty name";
  EXPECT_TRUE(ThrowsError(
      [&] {
        vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{4}, {{"obs", Shape{3}, DType::float32},
                                                            {"obs", Shape{2}, DType::float32}}});
      },
      ErrorCode::invalid_key_table, {"obs"}))
      << "duplicate name";
  EXPECT_TRUE(ThrowsError([&] { (void)Shape{2, -1}; }, ErrorCode::invalid_argument, {"-1"}) ||
              ThrowsError([&] { (void)Shape{2, -1}; }, ErrorCode::invalid_key_table, {"-1"}))
      << "negative dim";
  EXPECT_THROW((void)(Shape{1, 1, 1, 1, 1, 1, 1, 1, 1}), vecnorm::Error) << "9 dims";
  EXPECT_EQ(table().find("reward"), 1);
  EXPECT_EQ(table().find("nope"), -1);
}

// ---------------------------------------------------------------- keys in a step

TEST_P(Errors, UnknownAndDuplicateKeys) {
  vecnorm::VecNorm vn(opts(), table());
  auto x = buf(DType::float32, Shape{4, 3});
  auto y = buf(DType::float32, Shape{4, 3});
  EXPECT_TRUE(ThrowsError([&] { vn.step({{"obz", x.cview(), y.view()}}); }, ErrorCode::unknown_key, {"obz"}));
  EXPECT_TRUE(ThrowsError([&] { vn.normalize({{"obz", x.cview(), y.view()}}); }, ErrorCode::unknown_key, {"obz"}));
  EXPECT_TRUE(ThrowsError([&] { (void)vn.loc("obz"); }, ErrorCode::unknown_key, {"obz"}));
  EXPECT_TRUE(ThrowsError([&] { (void)vn.count("obz"); }, ErrorCode::unknown_key, {"obz"}));
  EXPECT_TRUE(ThrowsError([&] { vn.step({{"obs", x.cview(), y.view()}, {"obs", x.cview(), y.view()}}); },
                          ErrorCode::duplicate_key, {"obs"}));
  EXPECT_EQ(vn.count("obs"), 0) << "a rejected step moved the count";
  auto loc = buf(DType::float32, Shape{4, 3}, 0), var = buf(DType::float32, Shape{4, 3}, 0),
       count = buf(DType::int64, Shape{4, 3}, 0);
  vecnorm::StatelessItem item{"obz", x.cview(), y.view(), {loc.cview(), var.cview(), count.cview()},
                              {loc.view(), var.view(), count.view()}};
  EXPECT_TRUE(ThrowsError([&] { vecnorm::stateless::step(opts(), table(), {item}); }, ErrorCode::unknown_key, {"obz"}));
  item.key = "obs";
  EXPECT_TRUE(ThrowsError([&] { vecnorm::stateless::step(opts(), table(), {item, item}); }, ErrorCode::duplicate_key,
                          {"obs"}));
  EXPECT_EQ(count.values(), std::vector<double>(12, 0.0)) << "a rejected stateless step wrote counts";
}

// ---------------------------------------------------------------- shapes

TEST_P(Errors, WrongShapes) {
  vecnorm::VecNorm vn(opts(), table());
  auto good_y = buf(DType::float32, Shape{4, 3});
  {  // feature shape
    auto x = buf(DType::float32, Shape{4, 2});
    auto y = buf(DType::float32, Shape{4, 2});
    EXPECT_TRUE(ThrowsError([&] { vn.step({{"obs", x.cview(), y.view()}}); }, ErrorCode::shape_mismatch,
                            {"obs", "[4, 3]", "[4, 2]"}));
  }
  {  // batch shape (per-element: fixed by the table)
    auto x = buf(DType::float32, Shape{5, 3});
    auto y = buf(DType::float32, Shape{5, 3});
    EXPECT_TRUE(ThrowsError([&] { vn.step({{"obs", x.cview(), y.view()}}); }, ErrorCode::shape_mismatch,
                            {"obs", "[4, 3]", "[5, 3]"}));
  }
  {  // missing batch dim
    auto x = buf(DType::float32, Shape{3});
    auto y = buf(DType::float32, Shape{3});
    EXPECT_TRUE(ThrowsError([&] { vn.update({{"obs", x.cview(), y.view()}}); }, ErrorCode::shape_mismatch,
                            {"obs", "[4, 3]", "[3]"}));
  }
  {  // y differs from x
    auto x = buf(DType::float32, Shape{4, 3});
    auto y = buf(DType::float32, Shape{3, 4});
    EXPECT_TRUE(ThrowsError([&] { vn.step({{"obs", x.cview(), y.view()}}); }, ErrorCode::shape_mismatch,
                            {"obs", "[4, 3]", "[3, 4]"}));
  }
  EXPECT_EQ(vn.count("obs"), 0);

  // pooled: any batch, but the feature must match and all keys share the batch
  vecnorm::Options po = opts();
  po.reduce_batch_dims = true;
  vecnorm::VecNorm pooled(po, table());
  {
    auto x = buf(DType::float32, Shape{5, 2});
    auto y = buf(DType::float32, Shape{5, 2});
    EXPECT_TRUE(ThrowsError([&] { pooled.step({{"obs", x.cview(), y.view()}}); }, ErrorCode::shape_mismatch,
                            {"obs", {"[3]", "[5, 3]"}, "[5, 2]"}));
  }
  {
    auto x = buf(DType::float32, Shape{5, 3});
    auto y = buf(DType::float32, Shape{5, 3});
    auto r = buf(DType::float32, Shape{6});
    auto ry = buf(DType::float32, Shape{6});
    EXPECT_TRUE(ThrowsError([&] { pooled.step({{"obs", x.cview(), y.view()}, {"reward", r.cview(), ry.view()}}); },
                            ErrorCode::shape_mismatch, {"reward", {"[5]", "[5, 3]"}, "[6]"}));
  }
  EXPECT_EQ(pooled.count("obs"), 0);

  // stateless: statistics of the wrong shape
  auto x = buf(DType::float32, Shape{4, 3});
  auto loc = buf(DType::float32, Shape{4, 2}, 0), var = buf(DType::float32, Shape{4, 3}, 0),
       count = buf(DType::int64, Shape{4, 3}, 0);
  vecnorm::StatelessItem item{"obs", x.cview(), good_y.view(), {loc.cview(), var.cview(), count.cview()},
                              {var.view(), var.view(), count.view()}};
  EXPECT_TRUE(ThrowsError([&] { vecnorm::stateless::step(opts(), table(), {item}); }, ErrorCode::shape_mismatch,
                          {"obs", "[4, 3]", "[4, 2]"}));
  item.in = {var.cview(), var.cview(), count.cview()};
  item.out = {loc.view(), var.view(), count.view()};
  EXPECT_TRUE(ThrowsError([&] { vecnorm::stateless::step(opts(), table(), {item}); }, ErrorCode::shape_mismatch,
                          {"obs", "[4, 3]", "[4, 2]"}));
  EXPECT_EQ(count.values(), std::vector<double>(12, 0.0));
}

// ---------------------------------------------------------------- dtypes

TEST_P(Errors, WrongDtypes) {
  vecnorm::KeyTable t{Shape{4},
                      {{"obs", Shape{3}, DType::float32}, {"count", Shape{}, DType::int32}, {"h", Shape{}, DType::float16}}};
  vecnorm::VecNorm vn(opts(), t);
  {
    auto x = buf(DType::float64, Shape{4, 3});
    auto y = buf(DType::float64, Shape{4, 3});
    EXPECT_TRUE(ThrowsError([&] { vn.step({{"obs", x.cview(), y.view()}}); }, ErrorCode::dtype_mismatch,
                            {"obs", "float32", "float64"}));
  }
  {
    auto x = buf(DType::float32, Shape{4, 3});
    auto y = buf(DType::int32, Shape{4, 3});
    EXPECT_TRUE(ThrowsError([&] { vn.step({{"obs", x.cview(), y.view()}}); }, ErrorCode::dtype_mismatch,
                            {"obs", "float32", "int32"}));
  }
  {  // integer inputs give float32 outputs
    auto x = buf(DType::int32, Shape{4});
    auto y = buf(DType::int32, Shape{4});
    EXPECT_TRUE(ThrowsError([&] { vn.step({{"count", x.cview(), y.view()}}); }, ErrorCode::dtype_mismatch,
                            {"count", "float32", "int32"}));
  }
  {  // half inputs give half outputs
    auto x = buf(DType::float16, Shape{4});
    auto y = buf(DType::float32, Shape{4});
    EXPECT_TRUE(ThrowsError([&] { vn.step({{"h", x.cview(), y.view()}}); }, ErrorCode::dtype_mismatch,
                            {"h", "float16", "float32"}));
  }
  EXPECT_EQ(vn.count("obs"), 0);
  EXPECT_EQ(vn.count("count"), 0);

  // stateless statistics: stats dtype and int64 counts
  auto x = buf(DType::float32, Shape{4, 3});
  auto y = buf(DType::float32, Shape{4, 3});
  auto loc32 = buf(DType::float32, Shape{4, 3}, 0), loc64 = buf(DType::float64, Shape{4, 3}, 0),
       var = buf(DType::float32, Shape{4, 3}, 0), count = buf(DType::int64, Shape{4, 3}, 0),
       count32 = buf(DType::float32, Shape{4, 3}, 0);
  vecnorm::StatelessItem item{"obs", x.cview(), y.view(), {loc64.cview(), var.cview(), count.cview()},
                              {loc32.view(), var.view(), count.view()}};
  EXPECT_TRUE(ThrowsError([&] { vecnorm::stateless::step(opts(), t, {item}); }, ErrorCode::dtype_mismatch,
                          {"obs", "float32", "float64"}));
  item.in = {loc32.cview(), var.cview(), count32.cview()};
  EXPECT_TRUE(ThrowsError([&] { vecnorm::stateless::step(opts(), t, {item}); }, ErrorCode::dtype_mismatch,
                          {"obs", "int64", "float32"}));
  EXPECT_EQ(count.values(), std::vector<double>(12, 0.0));
}

// ---------------------------------------------------------------- count 0

TEST_P(Errors, NormalizeWithCountZero) {
  vecnorm::VecNorm vn(opts(), table());
  auto x = buf(DType::float32, Shape{4, 3});
  auto y = buf(DType::float32, Shape{4, 3});
  EXPECT_TRUE(ThrowsError([&] { vn.normalize({{"obs", x.cview(), y.view()}}); }, ErrorCode::zero_count, {"obs"}));
  EXPECT_TRUE(ThrowsError([&] { vn.denormalize({{"obs", x.cview(), y.view()}}); }, ErrorCode::zero_count, {"obs"}));
  EXPECT_TRUE(ThrowsError([&] { (void)vn.scale("obs"); }, ErrorCode::zero_count, {"obs"}));
  EXPECT_TRUE(ThrowsError([&] { (void)vn.to_affine(); }, ErrorCode::zero_count, {{"obs", "reward"}}));
  // Frozen before the first step: a step only normalizes, with count 0.
  vn.freeze();
  EXPECT_TRUE(ThrowsError([&] { vn.step({{"obs", x.cview(), y.view()}}); }, ErrorCode::zero_count, {"obs"}));
  EXPECT_EQ(vn.count("obs"), 0);

  // stateless: zero counts given explicitly, or as missing statistics
  auto loc = buf(DType::float32, Shape{4, 3}, 0), var = buf(DType::float32, Shape{4, 3}, 0),
       count = buf(DType::int64, Shape{4, 3}, 0);
  vecnorm::StatelessItem item{"obs", x.cview(), y.view(), {loc.cview(), var.cview(), count.cview()},
                              {loc.view(), var.view(), count.view()}};
  EXPECT_TRUE(ThrowsError([&] { vecnorm::stateless::step(opts(), table(), {item}, vecnorm::Op::normalize); },
                          ErrorCode::zero_count, {"obs"}));
  vecnorm::StatelessItem missing{"obs", x.cview(), y.view(), {}, {loc.view(), var.view(), count.view()}};
  missing.in.loc = vecnorm::ConstTensorView(nullptr, DType::float32, Shape{4, 3}, vntest::device_of(backend()));
  missing.in.var = vecnorm::ConstTensorView(nullptr, DType::float32, Shape{4, 3}, vntest::device_of(backend()));
  missing.in.count = vecnorm::ConstTensorView(nullptr, DType::int64, Shape{4, 3}, vntest::device_of(backend()));
  EXPECT_TRUE(ThrowsError([&] { vecnorm::stateless::step(opts(), table(), {missing}, vecnorm::Op::normalize); },
                          ErrorCode::zero_count, {"obs"}));
  // One element with count 0 among counted ones: the message names the element (its index).
  count.set_bytes(vntest::encode(DType::int64, {1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1}));
  loc.set_bytes(vntest::encode(DType::float32, std::vector<double>(12, 0.5)));
  var.set_bytes(vntest::encode(DType::float32, std::vector<double>(12, 1.0)));
  y.fill(0xA5);
  const auto sentinel = y.bytes();
  EXPECT_TRUE(ThrowsError([&] { vecnorm::stateless::step(opts(), table(), {item}, vecnorm::Op::normalize); },
                          ErrorCode::zero_count, {"obs", {"7", "[2, 1]", "(2, 1)"}}));
  EXPECT_TRUE(vntest::BitEqual("y after a rejected normalize", DType::float32, sentinel, y.bytes()));
}

// ---------------------------------------------------------------- devices, null data

TEST_P(Errors, WrongDeviceAndNullData) {
  vecnorm::VecNorm vn(opts(), table());
  auto x = buf(DType::float32, Shape{4, 3});
  auto y = buf(DType::float32, Shape{4, 3});
  const vecnorm::Device bad = wrong_device(backend());
  const std::string good_name = vntest::device_of(backend()).str();
  vecnorm::ConstTensorView xv = x.cview();
  xv.device = bad;
  EXPECT_TRUE(ThrowsError([&] { vn.step({{"obs", xv, y.view()}}); }, ErrorCode::device_mismatch,
                          {"obs", bad.str(), good_name}));
  vecnorm::TensorView yv = y.view();
  yv.device = bad;
  EXPECT_TRUE(ThrowsError([&] { vn.step({{"obs", x.cview(), yv}}); }, ErrorCode::device_mismatch,
                          {"obs", bad.str(), good_name}));
  EXPECT_EQ(vn.count("obs"), 0);

  auto loc = buf(DType::float32, Shape{4, 3}, 0), var = buf(DType::float32, Shape{4, 3}, 0),
       count = buf(DType::int64, Shape{4, 3}, 0);
  vecnorm::StatelessItem item{"obs", x.cview(), y.view(), {loc.cview(), var.cview(), count.cview()},
                              {loc.view(), var.view(), count.view()}};
  item.out.count.device = bad;
  EXPECT_TRUE(ThrowsError([&] { vecnorm::stateless::step(opts(), table(), {item}); }, ErrorCode::device_mismatch,
                          {"obs", bad.str()}));

  vecnorm::ConstTensorView null_x(nullptr, DType::float32, Shape{4, 3}, vntest::device_of(backend()));
  EXPECT_TRUE(ThrowsError([&] { vn.step({{"obs", null_x, y.view()}}); }, ErrorCode::invalid_argument, {"obs"}));
  vecnorm::TensorView null_y{nullptr, DType::float32, Shape{4, 3}, vntest::device_of(backend())};
  EXPECT_TRUE(ThrowsError([&] { vn.step({{"obs", x.cview(), null_y}}); }, ErrorCode::invalid_argument, {"obs"}));
  EXPECT_EQ(vn.count("obs"), 0);
}

// ---------------------------------------------------------------- unconfigured

TEST_P(Errors, UnconfiguredNormalizer) {
  vecnorm::VecNorm vn(opts());
  EXPECT_FALSE(vn.configured());
  auto x = buf(DType::float32, Shape{4, 3});
  auto y = buf(DType::float32, Shape{4, 3});
  EXPECT_TRUE(ThrowsError([&] { vn.step({{"obs", x.cview(), y.view()}}); }, ErrorCode::not_configured, {}));
  EXPECT_TRUE(ThrowsError([&] { (void)vn.key_table(); }, ErrorCode::not_configured, {}));
}

// ---------------------------------------------------------------- validate before write

// A step whose second key is bad changes nothing, not even the first key.
TEST_P(Errors, RejectedStepChangesNothing) {
  for (bool pooled : {false, true}) {
    vecnorm::Options o = opts();
    o.reduce_batch_dims = pooled;
    vecnorm::VecNorm vn(o, table());
    auto x = buf(DType::float32, Shape{4, 3}, 2.0);
    auto y = buf(DType::float32, Shape{4, 3});
    auto r = buf(DType::float32, Shape{4});
    auto ry = buf(DType::float32, Shape{4});
    vn.step({{"obs", x.cview(), y.view()}, {"reward", r.cview(), ry.view()}});
    const auto before = vn.export_state();
    y.fill(0xA5);
    const auto sentinel = y.bytes();
    auto bad_r = buf(DType::float64, Shape{4});
    EXPECT_TRUE(ThrowsError([&] { vn.step({{"obs", x.cview(), y.view()}, {"reward", bad_r.cview(), ry.view()}}); },
                            ErrorCode::dtype_mismatch, {"reward"}));
    const auto after = vn.export_state();
    EXPECT_EQ(vn.count("obs"), pooled ? 4 : 1);
    EXPECT_EQ(before.keys[0].loc, after.keys[0].loc) << "the first key's loc moved";
    EXPECT_EQ(before.keys[0].var, after.keys[0].var) << "the first key's var moved";
    EXPECT_TRUE(vntest::BitEqual("the first key's y", DType::float32, sentinel, y.bytes()));
  }
  // stateless: the first item's out statistics are not written
  auto x = buf(DType::float32, Shape{4, 3});
  auto y = buf(DType::float32, Shape{4, 3});
  auto loc = buf(DType::float32, Shape{4, 3}, 0), var = buf(DType::float32, Shape{4, 3}, 0),
       count = buf(DType::int64, Shape{4, 3}, 0);
  auto r = buf(DType::float32, Shape{4});
  auto ry = buf(DType::float32, Shape{4});
  auto rloc = buf(DType::float32, Shape{4}, 0), rvar = buf(DType::float32, Shape{4}, 0),
       rcount = buf(DType::int64, Shape{5}, 0);
  vecnorm::StatelessItem a{"obs", x.cview(), y.view(), {loc.cview(), var.cview(), count.cview()},
                           {loc.view(), var.view(), count.view()}};
  vecnorm::StatelessItem b{"reward", r.cview(), ry.view(), {rloc.cview(), rvar.cview(), rcount.cview()},
                           {rloc.view(), rvar.view(), rcount.view()}};
  EXPECT_TRUE(ThrowsError([&] { vecnorm::stateless::step(opts(), table(), {a, b}); }, ErrorCode::shape_mismatch,
                          {"reward", "[4]", "[5]"}));
  EXPECT_EQ(count.values(), std::vector<double>(12, 0.0)) << "the first item's counts were written";
  EXPECT_EQ(loc.values(), std::vector<double>(12, 0.0)) << "the first item's loc was written";
}

INSTANTIATE_TEST_SUITE_P(All, Errors, ::testing::ValuesIn(vntest::test_backends()),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return std::string(vntest::backend_name(info.param));
                         });

}  // namespace
