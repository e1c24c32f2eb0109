// vecnorm/dlpack.hpp -- zero-copy views of DLPack tensors (PyTorch, JAX, CuPy...).
//
// Needs <dlpack/dlpack.h> (Debian libdlpack-dev). Header-only.
#pragma once

#include <dlpack/dlpack.h>

#include <string>

#include "vecnorm/error.hpp"
#include "vecnorm/tensor.hpp"

namespace vecnorm {

namespace detail {
[[noreturn]] inline void dlpack_fail(const std::string& what) {
  throw Error(ErrorCode::invalid_argument, "from_dlpack: " + what);
}

inline DType dlpack_dtype(const DLDataType& t) {
  if (t.lanes != 1) dlpack_fail("expected lanes 1, got " + std::to_string(t.lanes));
  switch (t.code) {
    case kDLFloat:
      if (t.bits == 32) return DType::float32;
      if (t.bits == 64) return DType::float64;
      if (t.bits == 16) return DType::float16;
      break;
    case kDLBfloat:
      if (t.bits == 16) return DType::bfloat16;
      break;
    case kDLInt:
      if (t.bits == 32) return DType::int32;
      if (t.bits == 64) return DType::int64;
      break;
    case kDLUInt:
      if (t.bits == 8) return DType::uint8;
      break;
    default:
      break;
  }
  dlpack_fail("unsupported dtype (code " + std::to_string(t.code) + ", " + std::to_string(t.bits) +
              " bits); expected float16/32/64, bfloat16, int32, int64 or uint8");
}
}  // namespace detail

/// A view of `t` without copying. The tensor must be dense in C order (null
/// strides, or strides equal to the compact row-major ones; size-1 dims may
/// carry any stride) and live on the CPU, in CUDA host memory or on a CUDA
/// device. Throws Error(invalid_argument) otherwise.
inline TensorView from_dlpack(const DLTensor& t) {
  if (t.ndim < 0 || t.ndim > Shape::kMaxDims)
    detail::dlpack_fail("expected at most " + std::to_string(Shape::kMaxDims) + " dims, got " +
                        std::to_string(t.ndim));
  const DType dtype = detail::dlpack_dtype(t.dtype);
  const Shape shape = Shape::from(t.shape, t.ndim);
  if (t.strides != nullptr) {
    std::int64_t expected = 1;
    for (int i = t.ndim - 1; i >= 0; --i) {
      if (t.shape[i] != 1 && t.strides[i] != expected)
        detail::dlpack_fail("expected a dense C-order tensor; dim " + std::to_string(i) + " has stride " +
                            std::to_string(t.strides[i]) + ", expected " + std::to_string(expected));
      expected *= t.shape[i];
    }
  }
  Device device;
  switch (t.device.device_type) {
    case kDLCPU:
    case kDLCUDAHost:
      device = Device::cpu();
      break;
    case kDLCUDA:
    case kDLCUDAManaged:
      device = Device::cuda(t.device.device_id);
      break;
    default:
      detail::dlpack_fail("unsupported device type " + std::to_string(t.device.device_type) +
                          "; expected CPU, CUDA host, CUDA or CUDA managed memory");
  }
  void* data = static_cast<char*>(t.data) + t.byte_offset;
  return TensorView{data, dtype, shape, device};
}

}  // namespace vecnorm
