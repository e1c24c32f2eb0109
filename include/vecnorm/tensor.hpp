// vecnorm/tensor.hpp -- dtypes, shapes, devices and non-owning tensor views.
//
// Views never own memory and never allocate: building one per step costs
// nothing. Data is dense, C order (row-major), no strides.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

namespace vecnorm {

/// Element types accepted as inputs. Statistics are float32 or float64.
enum class DType : std::uint8_t { float32, float64, float16, bfloat16, int32, int64, uint8 };

const char* to_string(DType dtype) noexcept;  ///< "float32", "bfloat16", ...
std::size_t dtype_size(DType dtype) noexcept;  ///< bytes per element
constexpr bool is_floating(DType d) noexcept {
  return d == DType::float32 || d == DType::float64 || d == DType::float16 || d == DType::bfloat16;
}
/// The dtype a normalized output has: floats keep theirs, integers become float32.
constexpr DType output_dtype(DType input) noexcept { return is_floating(input) ? input : DType::float32; }

/// A shape of at most kMaxDims dims, stored inline (no allocation).
class Shape {
 public:
  static constexpr int kMaxDims = 8;

  constexpr Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims);  // throws Error if > kMaxDims or negative
  static Shape from(const std::int64_t* dims, int ndim);  // same checks

  constexpr int ndim() const noexcept { return ndim_; }
  constexpr std::int64_t operator[](int i) const noexcept { return dims_[i]; }
  constexpr const std::int64_t* begin() const noexcept { return dims_; }
  constexpr const std::int64_t* end() const noexcept { return dims_ + ndim_; }
  /// Product of the dims (1 for the empty shape).
  std::int64_t numel() const noexcept;
  /// This shape followed by `tail`.
  Shape concat(const Shape& tail) const;
  /// Dims [first, first+count).
  Shape slice(int first, int count) const;
  /// True when the last tail.ndim() dims equal `tail`.
  bool ends_with(const Shape& tail) const noexcept;
  /// "[4096, 36]"
  std::string str() const;

  friend bool operator==(const Shape& a, const Shape& b) noexcept;
  friend bool operator!=(const Shape& a, const Shape& b) noexcept { return !(a == b); }

 private:
  std::int64_t dims_[kMaxDims] = {};
  int ndim_ = 0;
};

/// Where a view's memory lives.
struct Device {
  enum class Kind : std::uint8_t { cpu, cuda };
  Kind kind = Kind::cpu;
  int index = 0;  ///< CUDA ordinal; 0 for the CPU

  static constexpr Device cpu() noexcept { return {Kind::cpu, 0}; }
  static constexpr Device cuda(int ordinal = 0) noexcept { return {Kind::cuda, ordinal}; }
  std::string str() const;  ///< "cpu", "cuda:0"
  friend constexpr bool operator==(Device a, Device b) noexcept {
    return a.kind == b.kind && (a.kind == Kind::cpu || a.index == b.index);
  }
};

/// The CUDA stream a device call is ordered on (a cudaStream_t; null = the
/// default stream). The CPU backend ignores it.
struct Stream {
  void* cuda_stream = nullptr;
};

/// A mutable, non-owning, dense C-order view.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::float32;
  Shape shape;
  Device device = Device::cpu();

  std::int64_t numel() const noexcept { return shape.numel(); }
  std::size_t nbytes() const noexcept { return static_cast<std::size_t>(numel()) * dtype_size(dtype); }
  bool empty_view() const noexcept { return data == nullptr && shape.ndim() == 0; }
};

/// A read-only, non-owning, dense C-order view.
struct ConstTensorView {
  const void* data = nullptr;
  DType dtype = DType::float32;
  Shape shape;
  Device device = Device::cpu();

  ConstTensorView() = default;
  ConstTensorView(const void* d, DType t, Shape s, Device dev = Device::cpu())
      : data(d), dtype(t), shape(s), device(dev) {}
  ConstTensorView(const TensorView& v)  // NOLINT: implicit, like T* -> const T*
      : data(v.data), dtype(v.dtype), shape(v.shape), device(v.device) {}

  std::int64_t numel() const noexcept { return shape.numel(); }
  std::size_t nbytes() const noexcept { return static_cast<std::size_t>(numel()) * dtype_size(dtype); }
  bool empty_view() const noexcept { return data == nullptr && shape.ndim() == 0; }
};

namespace detail {
template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::float32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::float64; };
template <> struct dtype_of<std::int32_t> { static constexpr DType value = DType::int32; };
template <> struct dtype_of<std::int64_t> { static constexpr DType value = DType::int64; };
template <> struct dtype_of<std::uint8_t> { static constexpr DType value = DType::uint8; };
}  // namespace detail

/// View of a host array of float, double, int32, int64 or uint8: a TensorView
/// for T*, a ConstTensorView for const T*.
template <class T>
auto view(T* data, Shape shape) {
  constexpr DType dt = detail::dtype_of<std::remove_cv_t<T>>::value;
  if constexpr (std::is_const_v<T>) {
    return ConstTensorView{data, dt, shape, Device::cpu()};
  } else {
    return TensorView{data, dt, shape, Device::cpu()};
  }
}
/// View of 16-bit data (float16 or bfloat16 bit patterns) on the host.
inline TensorView view16(std::uint16_t* data, DType dtype, Shape shape) {
  return TensorView{data, dtype, shape, Device::cpu()};
}
inline ConstTensorView view16(const std::uint16_t* data, DType dtype, Shape shape) {
  return ConstTensorView{data, dtype, shape, Device::cpu()};
}

}  // namespace vecnorm
