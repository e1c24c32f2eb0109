// tests/api/dlpack_test.cpp -- from_dlpack on hand-built DLTensors.
#include <gtest/gtest.h>

#include <dlpack/dlpack.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include <vecnorm/dlpack.hpp>

#include "support/check.hpp"
#include "support/device_buffer.hpp"
#include "support/dtypes.hpp"
#include "support/harness.hpp"

namespace {

using vecnorm::DType;
using vecnorm::ErrorCode;
using vecnorm::Shape;

DLTensor make(void* data, std::vector<std::int64_t>& shape, std::int64_t* strides, DLDataType dt,
              DLDevice dev = {kDLCPU, 0}, std::uint64_t byte_offset = 0) {
  DLTensor t{};
  t.data = data;
  t.device = dev;
  t.ndim = static_cast<std::int32_t>(shape.size());
  t.dtype = dt;
  t.shape = shape.data();
  t.strides = strides;
  t.byte_offset = byte_offset;
  return t;
}

void expect_invalid(const DLTensor& t, const std::string& fragment, const std::string& what) {
  try {
    (void)vecnorm::from_dlpack(t);
    ADD_FAILURE() << what << ": from_dlpack must throw Error(invalid_argument)";
  } catch (const vecnorm::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << what << ": " << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos)
        << what << ": message should contain \"" << fragment << "\": " << e.what();
  }
}

TEST(DLPack, EveryDtype) {
  struct Case {
    DLDataType dl;
    DType expected;
  };
  const std::vector<Case> cases = {
      {{kDLFloat, 32, 1}, DType::float32}, {{kDLFloat, 64, 1}, DType::float64}, {{kDLFloat, 16, 1}, DType::float16},
      {{kDLBfloat, 16, 1}, DType::bfloat16}, {{kDLInt, 32, 1}, DType::int32},   {{kDLInt, 64, 1}, DType::int64},
      {{kDLUInt, 8, 1}, DType::uint8},
  };
  std::vector<std::byte> storage(64);
  for (const auto& c : cases) {
    std::vector<std::int64_t> shape = {2, 3};
    const auto v = vecnorm::from_dlpack(make(storage.data(), shape, nullptr, c.dl));
    EXPECT_EQ(v.dtype, c.expected) << vecnorm::to_string(c.expected);
    EXPECT_EQ(v.shape, (Shape{2, 3}));
    EXPECT_EQ(v.data, storage.data());
    EXPECT_EQ(v.device, vecnorm::Device::cpu());
  }
  std::vector<std::int64_t> shape = {4};
  for (DLDataType bad : {DLDataType{kDLFloat, 8, 1}, DLDataType{kDLInt, 8, 1}, DLDataType{kDLInt, 16, 1},
                         DLDataType{kDLUInt, 32, 1}, DLDataType{kDLComplex, 64, 1}, DLDataType{kDLBfloat, 32, 1}})
    expect_invalid(make(storage.data(), shape, nullptr, bad), "dtype",
                   "code " + std::to_string(bad.code) + " bits " + std::to_string(bad.bits));
  expect_invalid(make(storage.data(), shape, nullptr, DLDataType{kDLFloat, 32, 4}), "lanes", "4 lanes");
}

TEST(DLPack, ByteOffsetShiftsTheData) {
  std::vector<float> storage(16);
  std::vector<std::int64_t> shape = {3};
  const auto v = vecnorm::from_dlpack(make(storage.data(), shape, nullptr, {kDLFloat, 32, 1}, {kDLCPU, 0}, 8));
  EXPECT_EQ(v.data, static_cast<void*>(storage.data() + 2));
}

TEST(DLPack, Strides) {
  std::vector<double> storage(64);
  {  // compact strides are accepted
    std::vector<std::int64_t> shape = {2, 3, 4};
    std::vector<std::int64_t> strides = {12, 4, 1};
    const auto v = vecnorm::from_dlpack(make(storage.data(), shape, strides.data(), {kDLFloat, 64, 1}));
    EXPECT_EQ(v.shape, (Shape{2, 3, 4}));
  }
  {  // size-1 dims may carry any stride
    std::vector<std::int64_t> shape = {2, 1, 4};
    std::vector<std::int64_t> strides = {4, 99, 1};
    EXPECT_NO_THROW((void)vecnorm::from_dlpack(make(storage.data(), shape, strides.data(), {kDLFloat, 64, 1})));
  }
  {  // transposed
    std::vector<std::int64_t> shape = {3, 4};
    std::vector<std::int64_t> strides = {1, 3};
    expect_invalid(make(storage.data(), shape, strides.data(), {kDLFloat, 64, 1}), "stride", "transposed");
  }
  {  // padded rows
    std::vector<std::int64_t> shape = {3, 4};
    std::vector<std::int64_t> strides = {5, 1};
    expect_invalid(make(storage.data(), shape, strides.data(), {kDLFloat, 64, 1}), "stride", "padded rows");
  }
  {  // every other element
    std::vector<std::int64_t> shape = {8};
    std::vector<std::int64_t> strides = {2};
    expect_invalid(make(storage.data(), shape, strides.data(), {kDLFloat, 64, 1}), "stride", "step 2");
  }
  {  // a scalar (0 dims)
    std::vector<std::int64_t> shape = {};
    const auto v = vecnorm::from_dlpack(make(storage.data(), shape, nullptr, {kDLFloat, 64, 1}));
    EXPECT_EQ(v.shape.ndim(), 0);
    EXPECT_EQ(v.numel(), 1);
  }
  {  // too many dims
    std::vector<std::int64_t> shape(9, 1);
    expect_invalid(make(storage.data(), shape, nullptr, {kDLFloat, 64, 1}), "dims", "9 dims");
  }
}

TEST(DLPack, Devices) {
  std::vector<float> storage(8);
  std::vector<std::int64_t> shape = {8};
  const DLDataType f32{kDLFloat, 32, 1};
  EXPECT_EQ(vecnorm::from_dlpack(make(storage.data(), shape, nullptr, f32, {kDLCPU, 0})).device, vecnorm::Device::cpu());
  EXPECT_EQ(vecnorm::from_dlpack(make(storage.data(), shape, nullptr, f32, {kDLCUDAHost, 0})).device,
            vecnorm::Device::cpu());
  const auto cuda1 = vecnorm::from_dlpack(make(storage.data(), shape, nullptr, f32, {kDLCUDA, 1})).device;
  EXPECT_EQ(cuda1.kind, vecnorm::Device::Kind::cuda);
  EXPECT_EQ(cuda1.index, 1);
  EXPECT_EQ(cuda1.str(), "cuda:1");
  EXPECT_EQ(vecnorm::from_dlpack(make(storage.data(), shape, nullptr, f32, {kDLCUDAManaged, 0})).device,
            vecnorm::Device::cuda(0));
  expect_invalid(make(storage.data(), shape, nullptr, f32, {kDLOpenCL, 0}), "device", "OpenCL");
  expect_invalid(make(storage.data(), shape, nullptr, f32, {kDLROCM, 0}), "device", "ROCm");
}

// A view from DLPack steps a normalizer like any other view.
TEST(DLPack, ViewsFeedANormalizer) {
  std::vector<float> x = {1, 2, 3, 4, 5, 6};
  std::vector<float> y(6, -1.0f);
  std::vector<std::int64_t> shape = {3, 2};
  const DLDataType f32{kDLFloat, 32, 1};
  vecnorm::Options o;
  o.estimator = vecnorm::Estimator::stable;
  o.decay = 1.0;
  o.reduce_batch_dims = true;
  vecnorm::VecNorm vn(o, vecnorm::KeyTable{Shape{3}, {{"obs", Shape{2}, DType::float32}}});
  vn.step({{"obs", vecnorm::from_dlpack(make(x.data(), shape, nullptr, f32)),
            vecnorm::from_dlpack(make(y.data(), shape, nullptr, f32))}});
  // Pooled, decay 1, one batch: mu = column means (3, 4), scale = population std sqrt(8/3).
  EXPECT_TRUE(vntest::AllEqual("loc", {3.0, 4.0}, vn.loc("obs")));
  const double sd = std::sqrt(8.0 / 3.0);
  EXPECT_TRUE(vntest::AllClose("scale", {sd, sd}, vn.scale("obs"), 1e-6 * sd));
  std::vector<double> expected, actual;
  for (int i = 0; i < 6; ++i) {
    expected.push_back((x[i] - (i % 2 == 0 ? 3.0 : 4.0)) / sd);
    actual.push_back(y[i]);
  }
  EXPECT_TRUE(vntest::AllClose("y", expected, actual, 1e-6));
}

}  // namespace
