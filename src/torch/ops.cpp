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
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include <optional>

#include "../frontend/readout.hpp"
#include "../state/schema.hpp"
#include "call.hpp"
#include "vecnorm/reward.hpp"
#include "vecnorm/version.hpp"

namespace vecnorm::torch_ops {
namespace {

// ---------------------------------------------------------------- operators

// A training step (or an update only): y and the statistics written in place;
// `mask`: a bool/uint8 row mask of the batch shape, rows with False/0 left out
// of the update (their outputs still produced; per-element statistics keep
// their elements' statistics and counts, in `skips`).
void step(at::TensorList x, at::TensorList y, at::TensorList stats, const std::vector<std::string>& keys,
          at::IntArrayRef config, double decay, double eps, bool update_only, const std::optional<Tensor>& mask) {
  try {
    CallScope scope;
    run(*scope, x, update_only ? at::TensorList{} : y, stats, keys, config, decay, eps,
        update_only ? What::update : What::step, {}, {}, mask.value_or(Tensor()));
  } catch (const Error& e) {
    rethrow(e);
  }
}

// A distributed pooled step (or update) over the torch.distributed process
// group registered as `group`: keys holds every key of the normalizer, the
// call's (x, y) first, so that every rank sends the same message layout
// (vecnorm/collective.hpp).
void step_group(at::TensorList x, at::TensorList y, at::TensorList stats, const std::vector<std::string>& keys,
                at::IntArrayRef config, double decay, double eps, bool update_only, const std::string& group,
                const std::optional<Tensor>& mask) {
  // The gather waits for the other ranks: other Python threads run meanwhile
  // (as during torch.distributed's own collectives). Nothing here touches a
  // Python object.
  std::optional<pybind11::gil_scoped_release> no_gil;
  if (Py_IsInitialized() && PyGILState_Check()) no_gil.emplace();
  try {
    CallScope scope;
    run(*scope, x, update_only ? at::TensorList{} : y, stats, keys, config, decay, eps,
        update_only ? What::update : What::step, {}, group, mask.value_or(Tensor()));
  } catch (const Error& e) {
    rethrow(e);
  }
}

// The operators that return their outputs, allocated here (step_alloc serves
// eager calls: torch.compile traces `step`, whose outputs are arguments).
TensorList returning(What what, at::TensorList x, at::TensorList stats, const std::vector<std::string>& keys,
                     at::IntArrayRef config, double decay, double eps, at::IntArrayRef key_dtypes = {},
                     const Tensor& mask = {}) {
  try {
    CallScope scope;
    run(*scope, x, {}, stats, keys, config, decay, eps, what, key_dtypes, {}, mask);
    return (*scope).outputs;  // copies the handles: the scope keeps its capacity
  } catch (const Error& e) {
    rethrow(e);
  }
}

TensorList step_alloc(at::TensorList x, at::TensorList stats, const std::vector<std::string>& keys,
                      at::IntArrayRef config, double decay, double eps, const std::optional<Tensor>& mask) {
  return returning(What::step, x, stats, keys, config, decay, eps, {}, mask.value_or(Tensor()));
}

// Op::normalize reads the statistics and writes none of them.
TensorList normalize(at::TensorList x, at::TensorList stats, const std::vector<std::string>& keys,
                     at::IntArrayRef config, double decay, double eps) {
  return returning(What::normalize, x, stats, keys, config, decay, eps);
}

TensorList denormalize(at::TensorList x, at::TensorList stats, const std::vector<std::string>& keys,
                       at::IntArrayRef config, double decay, double eps, at::IntArrayRef key_dtypes) {
  return returning(What::denormalize, x, stats, keys, config, decay, eps, key_dtypes);
}

// Reward scaling by the discounted return over a module's buffers
// (vecnorm/reward.hpp, external::reward_step): `returns` (read and written)
// and `entered` (scratch) have the reward's shape and the statistics' dtype,
// as the reward has; `done` and `mask` (bool or uint8) its batch shape;
// `reset` a ReturnReset (0 after, 1 before, 2 never); `update` false: the
// statistics are frozen (the returns still advance, but for the rows the mask
// leaves out: theirs hold; `hold_frozen`: they hold but for the zeroing at
// dones, SB3's eval mode). No synchronization.
// `group`: the statistics pooled over the returns of every rank of that
// torch.distributed process group (as step_group's; each rank keeps its own
// environments' returns).
void reward_step(const Tensor& reward, const Tensor& y, const Tensor& returns, const Tensor& entered,
                 at::TensorList stats, const std::string& key, at::IntArrayRef config, double decay, double eps,
                 double gamma, int64_t reset, bool update, const std::optional<Tensor>& done,
                 const std::optional<Tensor>& mask, const std::optional<std::string>& group, bool hold_frozen) {
  const std::string group_name = group.value_or(std::string());
  std::optional<pybind11::gil_scoped_release> no_gil;  // as in step_group: the exchange waits for the ranks
  if (!group_name.empty() && Py_IsInitialized() && PyGILState_Check()) no_gil.emplace();
  try {
    CallScope scope;
    Call& c = *scope;
    const std::vector<std::string> keys{key};
    configure(c, {reward}, stats, keys, config, decay, eps, group_name);
    if (reset < 0 || reset > 2)
      C10_THROW_ERROR(ValueError, "vecnorm: reset: expected 0 (after), 1 (before) or 2 (never), got " +
                                      std::to_string(reset));
    // bool flags are the bytes of 0/1 the library reads as uint8.
    auto bytes = [](const std::optional<Tensor>& t) {
      if (!t.has_value() || !t->defined()) return Tensor();
      const Tensor u = t->scalar_type() == at::kBool ? t->view(at::kByte) : *t;
      return u.contiguous();
    };
    const Tensor d = bytes(done), m = bytes(mask), r = reward.contiguous();
    ExternalRewardItem item;
    item.key = key;
    item.reward = const_view_of(r, key, "reward");
    item.out = view_of(y, key, "y");
    if (d.defined()) item.done = const_view_of(d, key, "done");
    if (m.defined()) item.mask = const_view_of(m, key, "mask");
    item.returns = view_of(returns, key, "returns");
    item.entered = view_of(entered, key, "entered");
    item.stats.loc = view_of(stats[0], key, kStatNames[0]);
    item.stats.var = view_of(stats[1], key, kStatNames[1]);
    item.stats.count = view_of(stats[2], key, kStatNames[2]);
    item.stats.skips = optional_view_of(stats[3], key, kStatNames[3]);
    item.stats.skipped = optional_view_of(stats[4], key, kStatNames[4]);
    const DeviceScope device(c);
    const ReturnOptions ro{gamma, detail::reset_of_code(static_cast<std::uint32_t>(reset)), hold_frozen};
    external::reward_step(c.options, ro, c.table, {&item, 1}, c.stream, nullptr, update);
  } catch (const Error& e) {
    rethrow(e);
  }
}

// The options a read-out or a construction check gives the library to validate.
Options options_of(double decay, double eps, at::IntArrayRef config) {
  Options o;
  apply_config(o, config, decay, eps);
  return o;
}

// The read-out of one key on the host: (loc, scale) that a normalize applies,
// in the key's compute dtype (the core's own formula; src/frontend/readout.hpp).
std::tuple<Tensor, Tensor> maps(const Tensor& loc, const Tensor& var, int64_t count, const Tensor& skips,
                                const std::string& key, int64_t key_dtype, double decay, double eps,
                                at::IntArrayRef config, bool inverse_scale) {
  try {
    Options o = options_of(decay, eps, config);
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
              const std::vector<int64_t>& config, int64_t stats_dtype) {
  try {
    Options o = options_of(decay, eps, config);
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
      "step(Tensor[] x, Tensor(a!)[] y, Tensor(b!)[] stats, str[] keys, int[] config, float decay, float eps, "
      "bool update_only, Tensor? mask=None) -> ()");
  m.def(
      "step_group(Tensor[] x, Tensor(a!)[] y, Tensor(b!)[] stats, str[] keys, int[] config, float decay, "
      "float eps, bool update_only, str group, Tensor? mask=None) -> ()");
  m.def(
      "step_alloc(Tensor[] x, Tensor(a!)[] stats, str[] keys, int[] config, float decay, float eps, "
      "Tensor? mask=None) -> Tensor[]");
  m.def("normalize(Tensor[] x, Tensor[] stats, str[] keys, int[] config, float decay, float eps) -> Tensor[]");
  m.def(
      "denormalize(Tensor[] x, Tensor[] stats, str[] keys, int[] config, float decay, float eps, int[] key_dtypes) "
      "-> Tensor[]");
  m.def(
      "maps(Tensor loc, Tensor var, int count, Tensor skips, str key, int key_dtype, float decay, float eps, "
      "int[] config, bool inverse_scale) -> (Tensor, Tensor)");
  m.def(
      "validate(str[] keys, int[] ndims, int[] dims, int[] batch_shape, float decay, float eps, int[] config, "
      "int stats_dtype) -> ()",
      &vecnorm::torch_ops::validate);
  m.def(
      "reward_step(Tensor reward, Tensor(a!) y, Tensor(b!) returns, Tensor(c!) entered, Tensor(d!)[] stats, str key, "
      "int[] config, float decay, float eps, float gamma, int reset, bool update, Tensor? done=None, "
      "Tensor? mask=None, str? group=None, bool hold_frozen=False) -> ()");
  m.def("build_info() -> str", &vecnorm::torch_ops::build_info);
}

namespace {
// The same kernels serve both dispatch keys: they branch on the tensors' device.
void register_kernels(torch::Library& m) {
  m.impl("step", &vecnorm::torch_ops::step);
  m.impl("step_group", &vecnorm::torch_ops::step_group);
  m.impl("step_alloc", &vecnorm::torch_ops::step_alloc);
  m.impl("normalize", &vecnorm::torch_ops::normalize);
  m.impl("denormalize", &vecnorm::torch_ops::denormalize);
  m.impl("maps", &vecnorm::torch_ops::maps);
  m.impl("reward_step", &vecnorm::torch_ops::reward_step);
}
}  // namespace

TORCH_LIBRARY_IMPL(vecnorm, CPU, m) { register_kernels(m); }
TORCH_LIBRARY_IMPL(vecnorm, CUDA, m) { register_kernels(m); }
