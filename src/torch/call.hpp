// src/torch/call.hpp -- one call of vecnorm from PyTorch: ATen tensors as
// vecnorm views, the options and key table of a call, scratch from torch's
// allocators, library errors as Python exceptions. Shared by the dispatcher
// operators (ops.cpp) and the eager fast path (eager.cpp).
#pragma once

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <cstring>
#include <new>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#ifdef VECNORM_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "vecnorm/collective.hpp"
#include "vecnorm/error.hpp"
#include "vecnorm/external.hpp"

namespace vecnorm::torch_ops {

/// The collective over torch.distributed process group `group` (its
/// registered name; src/torch/group.cpp).
std::shared_ptr<Collective> torch_collective(const std::string& group);

using at::Tensor;
using TensorList = std::vector<Tensor>;

[[noreturn]] inline void rethrow(const Error& e) {
  const std::string msg = e.what();  // "vecnorm: key ...: expected ..., got ..."
  switch (e.code()) {
    case ErrorCode::dtype_mismatch:
      C10_THROW_ERROR(TypeError, msg);
    case ErrorCode::backend_unavailable:
    case ErrorCode::cuda_error:
    case ErrorCode::collective_error:
      C10_THROW_ERROR(Error, msg);
    default:
      C10_THROW_ERROR(ValueError, msg);
  }
}

inline DType dtype_of(const Tensor& t, const std::string& key, const char* what) {
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

inline at::ScalarType scalar_type_of(DType d) {
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

inline Device vn_device_of(const Tensor& t) {
  if (t.is_cuda()) return Device::cuda(t.get_device());
  return Device::cpu();
}

inline void check_dense(const Tensor& t, const std::string& key, const char* what) {
  if (!t.is_contiguous())
    C10_THROW_ERROR(ValueError, "vecnorm: key '" + key + "': " + what +
                                    " is not contiguous (vecnorm reads dense C-order tensors): call .contiguous()");
  if (t.dim() > Shape::kMaxDims)
    C10_THROW_ERROR(ValueError, "vecnorm: key '" + key + "': " + what + " has " + std::to_string(t.dim()) +
                                    " dims, at most " + std::to_string(Shape::kMaxDims) + " are supported");
}

inline Shape shape_of(const Tensor& t, int first = 0, int count = -1) {
  const int n = count < 0 ? static_cast<int>(t.dim()) - first : count;
  return Shape::from(t.sizes().data() + first, n);
}

inline TensorView view_of(const Tensor& t, const std::string& key, const char* what) {
  check_dense(t, key, what);
  return TensorView{t.data_ptr(), dtype_of(t, key, what), shape_of(t), vn_device_of(t)};
}

// skips / skipped: an undefined or empty tensor means "none".
inline TensorView optional_view_of(const Tensor& t, const std::string& key, const char* what) {
  if (!t.defined() || t.numel() == 0) return {};
  return view_of(t, key, what);
}

inline ConstTensorView const_view_of(const Tensor& t, const std::string& key, const char* what) {
  check_dense(t, key, what);
  return ConstTensorView{t.data_ptr(), dtype_of(t, key, what), shape_of(t), vn_device_of(t)};
}

// ---------------------------------------------------------------- scratch
// Scratch comes from torch: device blocks from its caching allocator on the
// call's stream (graph capture sees no cudaMalloc once warmed up), host
// blocks aligned from the C++ heap.
inline void* allocate(void*, std::size_t bytes, Device device, Stream stream) {
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

inline void deallocate(void*, void* p, std::size_t, Device device, Stream) noexcept {
#ifdef VECNORM_TORCH_CUDA
  if (device.kind == Device::Kind::cuda) {
    c10::cuda::CUDACachingAllocator::raw_delete(p);
    return;
  }
#endif
  (void)device;
  ::operator delete(p, std::align_val_t{256});
}

// ---------------------------------------------------------------- threads
// A CPU call runs on torch's intra-op pool (at::parallel_for), not on
// vecnorm's own: torch's OpenMP threads spin for milliseconds after each of
// its operators, and a second pool beside them competed for the same cores
// (a 4096x48 step took 84 instead of 50 us on 2 cores right after a compiled
// torch function). Inside a parallel region of torch's, at::parallel_for
// runs the members one after the other on the caller.
inline void torch_executor_run(void*, int team, void (*body)(void*, int) noexcept, void* arg) noexcept {
  try {
    at::parallel_for(0, team, 1, [&](int64_t begin, int64_t end) {
      for (int64_t m = begin; m < end; ++m) body(arg, static_cast<int>(m));
    });
  } catch (...) {
    // (never, body does not throw) run_chunks runs what is left on the caller.
  }
}

// ---------------------------------------------------------------- one call
// The operators take few arguments, because the Python side of a dispatcher
// call costs per argument (python/vecnorm/_ops.py names them):
//   stats   per key, five tensors: loc, var, count, skips, skipped (skips and
//           skipped empty where unused)
//   config  batch_dims, reduce_batch_dims, estimator (0 torchrl, 1 stable),
//           nonfinite (0 propagate, 1 skip, 2 error), per_element_counts,
//           cpu_threads (0: torch's intra-op threads, N: vecnorm's pool), scale (0 clamp,
//           1 sqrt_var_plus_eps, 2 std_plus_eps), unbiased, then clip and
//           prior_count as the bits of their doubles (an int[] carries them
//           without another argument), then until (0: no bound), center (0/1),
//           max_scale (the bits of its double) and until_strict (0/1)
inline constexpr std::size_t kStatsPerKey = 5;
enum ConfigField : std::size_t {
  kBatchDims,
  kReduce,
  kEstimator,
  kNonFinite,
  kPerElement,
  kThreads,
  kScale,
  kUnbiased,
  kClipBits,
  kPriorBits,
  kUntil,
  kCenter,
  kMaxScaleBits,
  kUntilStrict,
  kConfigSize
};

/// The options of config (above) and decay/eps: the one decoding of the
/// operators' calling convention (steps, read-outs and construction checks).
inline void apply_config(Options& o, at::IntArrayRef config, double decay, double eps) {
  if (config.size() != kConfigSize)
    C10_THROW_ERROR(ValueError, "vecnorm: config: expected " + std::to_string(kConfigSize) + " values, got " +
                                    std::to_string(config.size()));
  auto bits = [](int64_t v) {
    double d;
    std::memcpy(&d, &v, sizeof d);
    return d;
  };
  o.decay = decay;
  o.eps = eps;
  o.reduce_batch_dims = config[kReduce] != 0;
  o.estimator = config[kEstimator] == 1 ? Estimator::stable : Estimator::torchrl;
  o.nonfinite = config[kNonFinite] == 0 ? NonFinite::propagate
                : config[kNonFinite] == 2 ? NonFinite::error
                                          : NonFinite::skip;
  o.scale = static_cast<ScaleForm>(config[kScale]);
  o.unbiased = config[kUnbiased] != 0;
  o.clip = bits(config[kClipBits]);
  o.prior_count = bits(config[kPriorBits]);
  o.until = config[kUntil];
  o.center = config[kCenter] != 0;
  o.max_scale = bits(config[kMaxScaleBits]);
  o.until_strict = config[kUntilStrict] != 0;
}

struct Call {
  Options options;
  KeyTable table;
  CountLayout counts = CountLayout::per_key;
  Stream stream;
  int device_index = 0;  ///< the CUDA device of the call
  std::vector<ExternalItem> items;
  std::vector<Tensor> outputs;
  std::vector<Tensor> inputs;  ///< the x that were not contiguous, made so
  Tensor mask;                 ///< a bool or strided row mask made a contiguous uint8 (else undefined)
};

/// This thread's Call, its containers kept between calls (no allocation in a
/// steady state); the tensors it refers to are released when the scope ends.
class CallScope {
 public:
  CallScope() : c_(slot()) {
    c_.options = Options{};
    c_.table.batch_shape = Shape{};
    c_.table.keys.clear();
    c_.counts = CountLayout::per_key;
    c_.stream = Stream{};
    c_.items.clear();
  }
  ~CallScope() {
    c_.inputs.clear();
    c_.outputs.clear();
    c_.mask.reset();
    // The collective holds its process group: kept past the call, a group
    // the program destroyed would live on until this thread's exit (and be
    // torn down then, after gloo's own statics: std::terminate).
    c_.options.collective.reset();
  }
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;
  Call& operator*() noexcept { return c_; }

 private:
  static Call& slot() {
    thread_local Call c;
    return c;
  }
  Call& c_;
};

inline const char* const kStatNames[kStatsPerKey] = {"loc", "var", "count", "skips", "skipped"};

// The options and key table of a call over `x` (one tensor per key) with
// `stats` (loc: batch + feature per element, feature when pooled). With a
// process group (`group` not empty: a distributed pooled update), keys holds
// every key of the normalizer, those of the call (x) first: the table is all
// of them, in name order, the same on every rank.
inline void configure(Call& c, at::TensorList x, at::TensorList stats, const std::vector<std::string>& keys,
               at::IntArrayRef config, double decay, double eps, const std::string& group = {}) {
  const std::size_t n = keys.size();
  apply_config(c.options, config, decay, eps);
  if ((group.empty() ? x.size() != n : x.size() > n) || stats.size() != kStatsPerKey * n)
    C10_THROW_ERROR(ValueError, "vecnorm: " + std::to_string(n) + " keys but " + std::to_string(x.size()) +
                                    " inputs and " + std::to_string(stats.size()) + " statistics tensors (" +
                                    std::to_string(kStatsPerKey) + " per key)");
  const bool reduce = config[kReduce] != 0;
  const int64_t batch_dims = config[kBatchDims];
  // cpu_threads 0: torch's intra-op threads (torch.get_num_threads()) run the
  // call; N > 0: vecnorm's own pool, N threads.
  c.options.cpu_threads = static_cast<int>(config[kThreads] > 0 ? config[kThreads] : at::get_num_threads());
  if (config[kThreads] <= 0) c.options.cpu_executor = CpuExecutor{&torch_executor_run, nullptr};
  c.options.allocator = Allocator{&allocate, &deallocate, nullptr};
  c.counts = config[kPerElement] != 0 ? CountLayout::per_element : CountLayout::per_key;
  if (!group.empty()) c.options.collective = torch_collective(group);
  if (n == 0) return;
  const Tensor& loc0 = stats[0];
  c.options.stats_dtype = dtype_of(loc0, keys[0], "loc");
  const Device dev = vn_device_of(x.empty() ? loc0 : x[0]);
  c.options.backend = dev.kind == Device::Kind::cuda ? Backend::cuda : Backend::cpu;
  c.device_index = dev.index;
#ifdef VECNORM_TORCH_CUDA
  if (dev.kind == Device::Kind::cuda)
    c.stream.cuda_stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(dev.index)).stream();
#endif
  c.table.keys.reserve(n);
  for (std::size_t k = 0; k < n; ++k) {
    const Tensor& loc = stats[kStatsPerKey * k];
    const int stats_dims = static_cast<int>(loc.dim());
    if (!reduce && (batch_dims < 0 || batch_dims > stats_dims))
      C10_THROW_ERROR(ValueError, "vecnorm: key '" + keys[k] + "': loc has " + std::to_string(stats_dims) +
                                      " dims, fewer than the " + std::to_string(batch_dims) + " batch dims");
    const int bd = reduce ? 0 : static_cast<int>(batch_dims);
    // A key the call does not have (distributed): the statistics' dtype stands in for its own.
    c.table.keys.push_back({keys[k], shape_of(loc, bd), k < x.size() ? dtype_of(x[k], keys[k], "x") : dtype_of(loc, keys[k], "loc")});
  }
  if (!group.empty())
    std::sort(c.table.keys.begin(), c.table.keys.end(), [](const KeySpec& a, const KeySpec& b) { return a.name < b.name; });
  if (reduce && !x.empty()) {
    // Pooled: any batch, the same for every key (the library checks that).
    const int bd = static_cast<int>(x[0].dim()) - static_cast<int>(loc0.dim());
    if (bd >= 0) c.table.batch_shape = shape_of(x[0], 0, bd);
  } else {
    c.table.batch_shape = shape_of(loc0, 0, static_cast<int>(batch_dims));
  }
}

// Items over x (made contiguous where it is not) with outputs `y` given by the
// caller (step: the schema's mutated y) or allocated here (`allocate_y`: y
// has the dtype output_dtype(x), or x's own for a denormalize); none when
// `no_output`.
inline void build_items(Call& c, at::TensorList x, at::TensorList y, at::TensorList stats,
                 const std::vector<std::string>& keys, bool no_output, bool allocate_y, bool same_dtype_out) {
  const std::size_t n = x.size();  // (a distributed call's keys go on past the call's)
  if (!no_output && !allocate_y && y.size() != n)
    C10_THROW_ERROR(ValueError, "vecnorm: " + std::to_string(n) + " keys but " + std::to_string(y.size()) +
                                    " output tensors");
  c.items.resize(n);
  c.inputs.reserve(n);
  if (allocate_y) c.outputs.reserve(n);
  for (std::size_t k = 0; k < n; ++k) {
    ExternalItem& it = c.items[k];
    it.key = keys[k];
    // A contiguous x as it is (copying the tensor costs reference counting).
    if (!x[k].is_contiguous()) c.inputs.push_back(x[k].contiguous());
    it.x = const_view_of(x[k].is_contiguous() ? x[k] : c.inputs.back(), keys[k], "x");
    if (!no_output) {
      if (allocate_y) {
        const at::ScalarType out = same_dtype_out ? x[k].scalar_type() : scalar_type_of(output_dtype(it.x.dtype));
        // On the CPU straight from the allocator (at::empty's dispatch costs
        // about 0.3 us, more than a small step).
        c.outputs.push_back(x[k].is_cpu() ? Tensor(at::detail::empty_cpu(x[k].sizes(), out))
                                          : at::empty(x[k].sizes(), x[k].options().dtype(out)));
        it.y = view_of(c.outputs.back(), keys[k], "y");
      } else {
        it.y = view_of(y[k], keys[k], "y");
      }
    }
    const Tensor* st = stats.data() + kStatsPerKey * k;
    it.stats.loc = view_of(st[0], keys[k], kStatNames[0]);
    it.stats.var = view_of(st[1], keys[k], kStatNames[1]);
    it.stats.count = view_of(st[2], keys[k], kStatNames[2]);
    it.stats.skips = optional_view_of(st[3], keys[k], kStatNames[3]);
    it.stats.skipped = optional_view_of(st[4], keys[k], kStatNames[4]);
  }
}

#ifdef VECNORM_TORCH_CUDA
struct DeviceScope {
  explicit DeviceScope(const Call& c)
      : guard(c.options.backend == Backend::cuda ? std::optional<c10::cuda::CUDAGuard>(std::in_place,
                                                                                        c.device_index)
                                                 : std::nullopt) {}
  std::optional<c10::cuda::CUDAGuard> guard;
};
#else
struct DeviceScope {
  explicit DeviceScope(const Call&) {}
};
#endif

/// What one call does.
enum class What { step, update, normalize, denormalize };

/// A step's row mask (Python: a bool or uint8 tensor of the batch shape,
/// False/0 = the row is left out of the update; or int32 row weights, pooled
/// statistics only) on every key of the call; the library checks it per key
/// (shape, dtype, device; per-element statistics with one count per key: the
/// skips views it needs).
inline void apply_mask(Call& c, const Tensor& mask, const std::vector<std::string>& keys) {
  if (!mask.defined() || c.items.empty()) return;
  const bool is_bool = mask.scalar_type() == at::kBool;
  if (!is_bool && mask.scalar_type() != at::kByte && mask.scalar_type() != at::kInt)
    C10_THROW_ERROR(TypeError, "vecnorm: key '" + keys[0] + "': mask has dtype " +
                                   std::string(c10::toString(mask.scalar_type())) +
                                   ", expected bool or uint8 (a row mask) or int32 (row weights)");
  // A bool is one byte of 0 or 1: the same bytes as the uint8 the library
  // reads. A contiguous uint8 mask is read as it is (no handle copied).
  if (is_bool || !mask.is_contiguous()) c.mask = (is_bool ? mask.view(at::kByte) : mask).contiguous();
  const Tensor& m = c.mask.defined() ? c.mask : mask;
  for (std::size_t k = 0; k < c.items.size(); ++k) c.items[k].mask = const_view_of(m, keys[k], "mask");
}

/// The whole call on `c` (a CallScope's): configure, build the items (outputs
/// `y` when given, else allocated into c.outputs; none for an update), then
/// the library's step. `key_dtypes` (denormalize): each key's own dtype code,
/// -1 for x's; `mask` (steps and updates): the row mask of every key.
inline void run(Call& c, at::TensorList x, at::TensorList y, at::TensorList stats,
                const std::vector<std::string>& keys, at::IntArrayRef config, double decay, double eps, What what,
                at::IntArrayRef key_dtypes = {}, const std::string& group = {}, const Tensor& mask = {}) {
  configure(c, x, stats, keys, config, decay, eps, group);
  if (keys.empty()) return;
  const bool update = what == What::update;
  build_items(c, x, y, stats, keys, update, !update && y.empty(), what == What::denormalize);
  if (what == What::step || what == What::update) apply_mask(c, mask, keys);
  for (std::size_t k = 0; k < keys.size() && k < key_dtypes.size(); ++k)
    if (key_dtypes[k] >= 0) c.table.keys[k].dtype = static_cast<DType>(key_dtypes[k]);
  if (c.items.empty() && group.empty()) return;
  const DeviceScope scope(c);
  auto call = [&](std::span<const ExternalItem> items) {
    switch (what) {
      case What::step: external::step(c.options, c.table, c.counts, items, Op::update_and_normalize, c.stream); break;
      case What::update: external::step(c.options, c.table, c.counts, items, Op::update, c.stream); break;
      case What::normalize: external::step(c.options, c.table, c.counts, items, Op::normalize, c.stream); break;
      case What::denormalize: external::denormalize(c.options, c.table, items, c.stream); break;
    }
  };
  // Keys whose statistics have different dtypes. Where each key's is the one
  // the library gives it (Options::stats_dtype none: float64 for a float64
  // input, float32 for the others; a module's statistics with stats_dtype=None)
  // this is one library call, across ranks too. Otherwise one library call
  // per statistics dtype, in the order of the first key of each, after every
  // one of them has passed its checks (a step changes all keys or none).
  const at::ScalarType t0 = stats[0].scalar_type();
  std::size_t k_mixed = 0;
  for (std::size_t k = 1; k < keys.size() && k_mixed == 0; ++k)
    if (stats[kStatsPerKey * k].scalar_type() != t0) k_mixed = k;
  if (k_mixed == 0) return call(c.items);
  bool by_rule = true;
  for (std::size_t k = 0; k < keys.size() && by_rule; ++k)
    for (const KeySpec& spec : c.table.keys)  // (sorted by name in a distributed call)
      if (spec.name == keys[k])
        by_rule = dtype_of(stats[kStatsPerKey * k], keys[k], "loc") == stats_dtype_for(std::nullopt, spec.dtype);
  if (by_rule) {
    c.options.stats_dtype = std::nullopt;
    return call(c.items);
  }
  if (!group.empty())  // an exchange each would let one pass and the next fail
    C10_THROW_ERROR(ValueError, "vecnorm: key '" + keys[k_mixed] + "': statistics dtype " +
                                    to_string(dtype_of(stats[kStatsPerKey * k_mixed], keys[k_mixed], "loc")) +
                                    ": expected " + to_string(dtype_of(stats[0], keys[0], "loc")) + " (key '" +
                                    keys[0] + "'s): statistics pooled across ranks have one dtype, or each key's "
                                    "own (float64 for a float64 input, float32 for the others)");
  // Pooled keys of one call share the batch shape: a check the library makes
  // within one call, made here across the calls.
  if (c.options.reduce_batch_dims)
    for (std::size_t i = 1; i < c.items.size(); ++i) {
      const auto batch_of = [&](std::size_t j) {
        const Shape& s = c.items[j].x.shape;
        return s.slice(0, std::max(0, s.ndim() - static_cast<int>(stats[kStatsPerKey * j].dim())));
      };
      if (batch_of(i) != batch_of(0))
        C10_THROW_ERROR(ValueError, "vecnorm: key '" + keys[i] + "': batch shape: expected " + batch_of(0).str() +
                                        " (the batch shape of key '" + keys[0] + "' in this call), got " +
                                        batch_of(i).str());
    }
  std::vector<std::vector<ExternalItem>> groups;
  std::vector<DType> dtypes;
  for (std::size_t i = 0; i < c.items.size(); ++i) {
    const DType d = dtype_of(stats[kStatsPerKey * i], keys[i], "loc");
    const auto at = std::find(dtypes.begin(), dtypes.end(), d);
    if (at == dtypes.end()) {
      dtypes.push_back(d);
      groups.emplace_back();
    }
    groups[static_cast<std::size_t>(std::find(dtypes.begin(), dtypes.end(), d) - dtypes.begin())].push_back(c.items[i]);
  }
  const Op op = what == What::update ? Op::update : Op::update_and_normalize;
  if (what == What::step || what == What::update)
    for (std::size_t g = 0; g < groups.size(); ++g) {
      c.options.stats_dtype = dtypes[g];
      external::check(c.options, c.table, c.counts, groups[g], op, c.stream);
    }
  for (std::size_t g = 0; g < groups.size(); ++g) {
    c.options.stats_dtype = dtypes[g];
    call(groups[g]);
  }
}

}  // namespace vecnorm::torch_ops
