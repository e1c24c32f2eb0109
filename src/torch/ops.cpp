// src/torch/ops.cpp -- vecnorm's operators in the PyTorch dispatcher.
//
// Registered as torch.ops.vecnorm.{step, normalize, denormalize, maps} for the
// CPU and CUDA dispatch keys (python/vecnorm/_ops.py adds their fake
// implementations, so that torch.compile traces them). Each is a thin adapter
// from ATen tensors to vecnorm::external: one call over a list of keys, the
// statistics mutated in place (declared `Tensor(a!)[]` in the schema, so that
// they can be a module's registered buffers), the kernels on torch's current
// CUDA stream, the scratch from torch's caching allocator, no host
// synchronization in a step. vecnorm::Error becomes a Python ValueError
// (TypeError for a dtype), with the library's message (key, expected, actual).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <tuple>
#include <new>
#include <string>
#include <vector>

#ifdef VECNORM_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "../frontend/readout.hpp"
#include "vecnorm/error.hpp"
#include "vecnorm/external.hpp"
#include "vecnorm/version.hpp"

namespace vecnorm::torch_ops {
namespace {

using at::Tensor;
using TensorList = std::vector<Tensor>;

[[noreturn]] void rethrow(const Error& e) {
  const std::string msg = e.what();  // "vecnorm: key ...: expected ..., got ..."
  switch (e.code()) {
    case ErrorCode::dtype_mismatch:
      C10_THROW_ERROR(TypeError, msg);
    case ErrorCode::backend_unavailable:
    case ErrorCode::cuda_error:
      C10_THROW_ERROR(Error, msg);
    default:
      C10_THROW_ERROR(ValueError, msg);
  }
}

DType dtype_of(const Tensor& t, const std::string& key, const char* what) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::float32;
    case at::kDouble: return DType::float64;
    case at::kHalf: return DType::float16;
    case at::kBFloat16: return DType::bfloat16;
    case at::kInt: return DType::int32;
    case at::kLong: return DType::int64;
    case at::kByte: return DType::uint8;
    default:
      C10_THROW_ERROR(TypeError, "vecnorm: key '" + key + "': " + what + " has dtype " +
                                     std::string(c10::toString(t.scalar_type())) +
                                     ", expected float32, float64, float16, bfloat16, int32, int64 or uint8");
  }
}

at::ScalarType scalar_type_of(DType d) {
  switch (d) {
    case DType::float32: return at::kFloat;
    case DType::float64: return at::kDouble;
    case DType::float16: return at::kHalf;
    case DType::bfloat16: return at::kBFloat16;
    case DType::int32: return at::kInt;
    case DType::int64: return at::kLong;
    case DType::uint8: return at::kByte;
  }
  return at::kFloat;
}

Device vn_device_of(const Tensor& t) {
  if (t.is_cuda()) return Device::cuda(t.get_device());
  return Device::cpu();
}

void check_dense(const Tensor& t, const std::string& key, const char* what) {
  if (!t.is_contiguous())
    C10_THROW_ERROR(ValueError, "vecnorm: key '" + key + "': " + what +
                                    " is not contiguous (vecnorm reads dense C-order tensors): call .contiguous()");
  if (t.dim() > Shape::kMaxDims)
    C10_THROW_ERROR(ValueError, "vecnorm: key '" + key + "': " + what + " has " + std::to_string(t.dim()) +
                                    " dims, at most " + std::to_string(Shape::kMaxDims) + " are supported");
}

Shape shape_of(const Tensor& t, int first = 0, int count = -1) {
  const int n = count < 0 ? static_cast<int>(t.dim()) - first : count;
  return Shape::from(t.sizes().data() + first, n);
}

TensorView view_of(const Tensor& t, const std::string& key, const char* what) {
  check_dense(t, key, what);
  return TensorView{t.data_ptr(), dtype_of(t, key, what), shape_of(t), vn_device_of(t)};
}

// skips / skipped: an undefined or empty tensor means "none".
TensorView optional_view_of(const Tensor& t, const std::string& key, const char* what) {
  if (!t.defined() || t.numel() == 0) return {};
  return view_of(t, key, what);
}

ConstTensorView const_view_of(const Tensor& t, const std::string& key, const char* what) {
  check_dense(t, key, what);
  return ConstTensorView{t.data_ptr(), dtype_of(t, key, what), shape_of(t), vn_device_of(t)};
}

Estimator estimator_of(const std::string& s) {
  if (s == "torchrl") return Estimator::torchrl;
  if (s == "stable") return Estimator::stable;
  C10_THROW_ERROR(ValueError, "vecnorm: estimator: expected 'torchrl' or 'stable', got '" + s + "'");
}

NonFinite nonfinite_of(const std::string& s) {
  if (s == "propagate") return NonFinite::propagate;
  if (s == "skip") return NonFinite::skip;
  if (s == "error") return NonFinite::error;
  C10_THROW_ERROR(ValueError, "vecnorm: nonfinite: expected 'propagate', 'skip' or 'error', got '" + s + "'");
}

// ---------------------------------------------------------------- scratch
// Scratch comes from torch: device blocks from its caching allocator on the
// call's stream (graph capture sees no cudaMalloc once warmed up), host
// blocks aligned from the C++ heap.
void* allocate(void*, std::size_t bytes, Device device, Stream stream) {
#ifdef VECNORM_TORCH_CUDA
  if (device.kind == Device::Kind::cuda) {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device.index));
    return c10::cuda::CUDACachingAllocator::raw_alloc_with_stream(bytes,
                                                                  static_cast<cudaStream_t>(stream.cuda_stream));
  }
#else
  (void)stream;
  if (device.kind == Device::Kind::cuda) return nullptr;
#endif
  return ::operator new(bytes, std::align_val_t{256}, std::nothrow);
}

void deallocate(void*, void* p, std::size_t, Device device, Stream) noexcept {
#ifdef VECNORM_TORCH_CUDA
  if (device.kind == Device::Kind::cuda) {
    c10::cuda::CUDACachingAllocator::raw_delete(p);
    return;
  }
#endif
  (void)device;
  ::operator delete(p, std::align_val_t{256});
}

// ---------------------------------------------------------------- one call
struct Call {
  Options options;
  KeyTable table;
  CountLayout counts = CountLayout::per_key;
  Stream stream;
  std::vector<ExternalItem> items;
  std::vector<Tensor> outputs;
  std::vector<Tensor> inputs;  ///< x made contiguous (the same tensor when it was)
};

// The options and key table of a call over `x` (one tensor per key) with
// statistics `loc` (stats shape: batch + feature per element, feature when
// pooled; batch_dims leading dims of the per-element statistics are batch).
void configure(Call& c, const TensorList& x, const TensorList& loc, const std::vector<std::string>& keys,
               int64_t batch_dims, bool reduce_batch_dims, double decay, double eps, const std::string& estimator,
               int64_t cpu_threads) {
  const std::size_t n = keys.size();
  if (x.size() != n || loc.size() != n)
    C10_THROW_ERROR(ValueError, "vecnorm: " + std::to_string(n) + " keys but " + std::to_string(x.size()) +
                                    " inputs and " + std::to_string(loc.size()) + " loc tensors");
  c.options.decay = decay;
  c.options.eps = eps;
  c.options.reduce_batch_dims = reduce_batch_dims;
  c.options.estimator = estimator_of(estimator);
  c.options.cpu_threads = static_cast<int>(cpu_threads > 0 ? cpu_threads : at::get_num_threads());
  c.options.allocator = Allocator{&allocate, &deallocate, nullptr};
  if (n == 0) return;
  c.options.stats_dtype = dtype_of(loc[0], keys[0], "loc");
  const Device dev = vn_device_of(x[0]);
  c.options.backend = dev.kind == Device::Kind::cuda ? Backend::cuda : Backend::cpu;
#ifdef VECNORM_TORCH_CUDA
  if (dev.kind == Device::Kind::cuda)
    c.stream.cuda_stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(dev.index)).stream();
#endif
  c.table.keys.reserve(n);
  for (std::size_t k = 0; k < n; ++k) {
    const int stats_dims = static_cast<int>(loc[k].dim());
    if (!reduce_batch_dims && (batch_dims < 0 || batch_dims > stats_dims))
      C10_THROW_ERROR(ValueError, "vecnorm: key '" + keys[k] + "': loc has " + std::to_string(stats_dims) +
                                      " dims, fewer than the " + std::to_string(batch_dims) + " batch dims");
    const int bd = reduce_batch_dims ? 0 : static_cast<int>(batch_dims);
    c.table.keys.push_back({keys[k], shape_of(loc[k], bd), dtype_of(x[k], keys[k], "x")});
  }
  if (reduce_batch_dims) {
    // Pooled: any batch, the same for every key (the library checks that).
    const int fd = static_cast<int>(loc[0].dim());
    const int bd = static_cast<int>(x[0].dim()) - fd;
    if (bd >= 0) c.table.batch_shape = shape_of(x[0], 0, bd);
  } else {
    c.table.batch_shape = shape_of(loc[0], 0, static_cast<int>(batch_dims));
  }
}

const Tensor& at_or_empty(const TensorList& l, std::size_t k) {
  static const Tensor none;
  return k < l.size() ? l[k] : none;
}

// Items over x (made contiguous where it is not) with outputs `y` given by the
// caller (step: the schema's mutated y) or allocated here (`allocate_y`: y
// has the dtype output_dtype(x), or x's own for a denormalize); none when
// `no_output`.
void build_items(Call& c, const TensorList& x, const TensorList& y, const TensorList& loc, const TensorList& var,
                 const TensorList& count, const TensorList& skips, const TensorList& skipped,
                 const std::vector<std::string>& keys, bool no_output, bool allocate_y, bool same_dtype_out) {
  const std::size_t n = keys.size();
  if (var.size() != n || count.size() != n || (!no_output && !allocate_y && y.size() != n))
    C10_THROW_ERROR(ValueError, "vecnorm: " + std::to_string(n) + " keys but " + std::to_string(var.size()) +
                                    " var, " + std::to_string(count.size()) + " count and " +
                                    std::to_string(y.size()) + " output tensors");
  c.items.resize(n);
  c.inputs.reserve(n);
  if (allocate_y) c.outputs.reserve(n);
  for (std::size_t k = 0; k < n; ++k) {
    ExternalItem& it = c.items[k];
    it.key = keys[k];
    c.inputs.push_back(x[k].contiguous());
    it.x = const_view_of(c.inputs.back(), keys[k], "x");
    if (!no_output) {
      if (allocate_y) {
        const at::ScalarType out = same_dtype_out ? x[k].scalar_type() : scalar_type_of(output_dtype(it.x.dtype));
        c.outputs.push_back(at::empty(x[k].sizes(), x[k].options().dtype(out)));
        it.y = view_of(c.outputs.back(), keys[k], "y");
      } else {
        it.y = view_of(y[k], keys[k], "y");
      }
    }
    it.stats.loc = view_of(loc[k], keys[k], "loc");
    it.stats.var = view_of(var[k], keys[k], "var");
    it.stats.count = view_of(count[k], keys[k], "count");
    it.stats.skips = optional_view_of(at_or_empty(skips, k), keys[k], "skips");
    it.stats.skipped = optional_view_of(at_or_empty(skipped, k), keys[k], "skipped");
  }
}

#ifdef VECNORM_TORCH_CUDA
struct DeviceScope {
  explicit DeviceScope(const Call& c)
      : guard(c.options.backend == Backend::cuda ? std::optional<c10::cuda::CUDAGuard>(std::in_place,
                                                                                        c.items[0].x.device.index)
                                                 : std::nullopt) {}
  std::optional<c10::cuda::CUDAGuard> guard;
};
#else
struct DeviceScope {
  explicit DeviceScope(const Call&) {}
};
#endif

// ---------------------------------------------------------------- operators

void step(const TensorList& x, const TensorList& y, const TensorList& loc, const TensorList& var, const TensorList& count,
                const TensorList& skips, const TensorList& skipped, const std::vector<std::string>& keys,
                int64_t batch_dims, bool reduce_batch_dims, double decay, double eps, const std::string& estimator,
                const std::string& nonfinite, bool per_element_counts, bool update_only, int64_t cpu_threads) {
  try {
    Call c;
    configure(c, x, loc, keys, batch_dims, reduce_batch_dims, decay, eps, estimator, cpu_threads);
    c.options.nonfinite = nonfinite_of(nonfinite);
    if (keys.empty()) return;
    build_items(c, x, y, loc, var, count, skips, skipped, keys, update_only, false, false);
    const DeviceScope scope(c);
    external::step(c.options, c.table, per_element_counts ? CountLayout::per_element : CountLayout::per_key,
                   std::span<const ExternalItem>(c.items), update_only ? Op::update : Op::update_and_normalize,
                   c.stream);
  } catch (const Error& e) {
    rethrow(e);
  }
}

TensorList normalize(const TensorList& x, const TensorList& loc, const TensorList& var, const TensorList& count,
                     const TensorList& skips, const TensorList& skipped, const std::vector<std::string>& keys, int64_t batch_dims,
                     bool reduce_batch_dims, double decay, double eps, const std::string& estimator,
                     bool per_element_counts, int64_t cpu_threads) {
  try {
    Call c;
    configure(c, x, loc, keys, batch_dims, reduce_batch_dims, decay, eps, estimator, cpu_threads);
    if (keys.empty()) return {};
    // The statistics are only read (Op::normalize writes none of them).
    build_items(c, x, {}, loc, var, count, skips, skipped, keys, false, true, false);
    const DeviceScope scope(c);
    external::step(c.options, c.table, per_element_counts ? CountLayout::per_element : CountLayout::per_key,
                   std::span<const ExternalItem>(c.items), Op::normalize, c.stream);
    return std::move(c.outputs);
  } catch (const Error& e) {
    rethrow(e);
  }
}

TensorList denormalize(const TensorList& x, const TensorList& loc, const TensorList& var, const TensorList& count,
                       const TensorList& skips, const TensorList& skipped, const std::vector<std::string>& keys, int64_t batch_dims,
                       bool reduce_batch_dims, double decay, double eps, const std::string& estimator,
                       const std::vector<int64_t>& key_dtypes, int64_t cpu_threads) {
  try {
    Call c;
    configure(c, x, loc, keys, batch_dims, reduce_batch_dims, decay, eps, estimator, cpu_threads);
    if (keys.empty()) return {};
    build_items(c, x, {}, loc, var, count, skips, skipped, keys, false, true, true);
    // The key's own dtype (x holds output_dtype(key dtype) values).
    for (std::size_t k = 0; k < keys.size() && k < key_dtypes.size(); ++k)
      if (key_dtypes[k] >= 0) c.table.keys[k].dtype = static_cast<DType>(key_dtypes[k]);
    const DeviceScope scope(c);
    external::denormalize(c.options, c.table, std::span<const ExternalItem>(c.items), c.stream);
    return std::move(c.outputs);
  } catch (const Error& e) {
    rethrow(e);
  }
}

// The read-out of one key on the host: (loc, scale) that a normalize applies,
// in the key's compute dtype (the core's own formula; src/frontend/readout.hpp).
std::tuple<Tensor, Tensor> maps(const Tensor& loc, const Tensor& var, int64_t count, const Tensor& skips,
                                const std::string& key, int64_t key_dtype, bool reduce_batch_dims, double decay,
                                double eps, const std::string& estimator, bool inverse_scale) {
  try {
    Options o;
    o.decay = decay;
    o.eps = eps;
    o.reduce_batch_dims = reduce_batch_dims;
    o.estimator = estimator_of(estimator);
    o.validate();
    const Tensor l = loc.contiguous().cpu(), v = var.contiguous().cpu();
    o.stats_dtype = dtype_of(l, key, "loc");
    if (v.scalar_type() != l.scalar_type() || v.sizes() != l.sizes())
      C10_THROW_ERROR(ValueError, "vecnorm: key '" + key + "': var must have loc's dtype and shape");
    Tensor s;
    if (skips.defined() && skips.numel() > 0) {
      s = skips.contiguous().cpu();
      if (s.scalar_type() != at::kLong || s.numel() != l.numel())
        C10_THROW_ERROR(ValueError, "vecnorm: key '" + key + "': skips must be int64 with loc's shape");
    }
    KeySpec spec{key, shape_of(l), static_cast<DType>(key_dtype)};
    detail::HostStats st{l.data_ptr(), v.data_ptr(), count, s.defined() ? s.data_ptr<int64_t>() : nullptr,
                         l.numel()};
    const detail::KeyMaps m = detail::key_maps(
        o, spec, st, inverse_scale ? core::MapKind::normalize : core::MapKind::denormalize);
    const at::ScalarType t = scalar_type_of(m.dtype);
    Tensor mu = at::empty(l.sizes(), l.options().dtype(t)), p = at::empty(l.sizes(), l.options().dtype(t));
    std::memcpy(mu.data_ptr(), m.mu.data(), m.bytes());
    std::memcpy(p.data_ptr(), m.p.data(), m.bytes());
    return {mu, p};
  } catch (const Error& e) {
    rethrow(e);
  }
}

// Construction-time checks of a module: Options::validate and
// KeyTable::validate (keys[k] has feature shape dims[sum(ndims[:k]) : +ndims[k]]).
void validate(const std::vector<std::string>& keys, const std::vector<int64_t>& ndims,
              const std::vector<int64_t>& dims, const std::vector<int64_t>& batch_shape, double decay, double eps,
              bool reduce_batch_dims, const std::string& estimator, const std::string& nonfinite,
              int64_t stats_dtype) {
  try {
    Options o;
    o.decay = decay;
    o.eps = eps;
    o.reduce_batch_dims = reduce_batch_dims;
    o.estimator = estimator_of(estimator);
    o.nonfinite = nonfinite_of(nonfinite);
    o.stats_dtype = static_cast<DType>(stats_dtype);
    o.validate();
    if (ndims.size() != keys.size())
      C10_THROW_ERROR(ValueError, "vecnorm: " + std::to_string(keys.size()) + " keys but " +
                                      std::to_string(ndims.size()) + " feature shapes");
    KeyTable t;
    t.batch_shape = Shape::from(batch_shape.data(), static_cast<int>(batch_shape.size()));
    std::size_t at = 0;
    for (std::size_t k = 0; k < keys.size(); ++k) {
      const auto nd = static_cast<std::size_t>(ndims[k]);
      if (at + nd > dims.size()) C10_THROW_ERROR(ValueError, "vecnorm: feature shapes: too few dims");
      t.keys.push_back({keys[k], Shape::from(dims.data() + at, static_cast<int>(nd)), DType::float32});
      at += nd;
    }
    t.validate();
  } catch (const Error& e) {
    rethrow(e);
  }
}

/// "0.1.0 (CUDA operators)" or "0.1.0 (CPU operators)".
std::string build_info() {
#ifdef VECNORM_TORCH_CUDA
  return std::string(vecnorm::version()) + " (CUDA operators)";
#else
  return std::string(vecnorm::version()) + " (CPU operators)";
#endif
}

}  // namespace
}  // namespace vecnorm::torch_ops

TORCH_LIBRARY(vecnorm, m) {
  m.def(
      "step(Tensor[] x, Tensor(a!)[] y, Tensor(b!)[] loc, Tensor(c!)[] var, Tensor(d!)[] count, "
      "Tensor(e!)[] skips, Tensor(f!)[] skipped, str[] keys, int batch_dims, bool reduce_batch_dims, float decay, "
      "float eps, str estimator, str nonfinite, bool per_element_counts, bool update_only, int cpu_threads) -> ()");
  m.def(
      "normalize(Tensor[] x, Tensor[] loc, Tensor[] var, Tensor[] count, Tensor[] skips, Tensor[] skipped, str[] keys, "
      "int batch_dims, bool reduce_batch_dims, float decay, float eps, str estimator, bool per_element_counts, "
      "int cpu_threads) -> Tensor[]");
  m.def(
      "denormalize(Tensor[] x, Tensor[] loc, Tensor[] var, Tensor[] count, Tensor[] skips, Tensor[] skipped, "
      "str[] keys, "
      "int batch_dims, bool reduce_batch_dims, float decay, float eps, str estimator, int[] key_dtypes, "
      "int cpu_threads) -> Tensor[]");
  m.def(
      "maps(Tensor loc, Tensor var, int count, Tensor skips, str key, int key_dtype, bool reduce_batch_dims, "
      "float decay, float eps, str estimator, bool inverse_scale) -> (Tensor, Tensor)");
  m.def(
      "validate(str[] keys, int[] ndims, int[] dims, int[] batch_shape, float decay, float eps, "
      "bool reduce_batch_dims, str estimator, str nonfinite, int stats_dtype) -> ()",
      &vecnorm::torch_ops::validate);
  m.def("build_info() -> str", &vecnorm::torch_ops::build_info);
}

TORCH_LIBRARY_IMPL(vecnorm, CPU, m) {
  m.impl("step", &vecnorm::torch_ops::step);
  m.impl("normalize", &vecnorm::torch_ops::normalize);
  m.impl("denormalize", &vecnorm::torch_ops::denormalize);
  m.impl("maps", &vecnorm::torch_ops::maps);
}

TORCH_LIBRARY_IMPL(vecnorm, CUDA, m) {
  m.impl("step", &vecnorm::torch_ops::step);
  m.impl("normalize", &vecnorm::torch_ops::normalize);
  m.impl("denormalize", &vecnorm::torch_ops::denormalize);
  m.impl("maps", &vecnorm::torch_ops::maps);
}
