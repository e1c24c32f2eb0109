// src/torch/eager.cpp -- the eager fast path of vecnorm.torch.VecNorm.
//
// A dispatcher call from Python costs about 4 us plus 1.8 us per key here
// (every argument is parsed against the schema and boxed), ten times the
// library's own step at small batches. Outside torch.compile the module calls
// Bound.call() instead: one Python call with the batch dict, the keys looked
// up in C++, the module's buffers read from its _buffers dict at every call
// (so .to(), load_state_dict and buffer reassignment need no invalidation),
// the GIL released while the step runs, and the same library call as the
// operators (call.hpp). Under torch.compile the module calls the operators.
#include <torch/csrc/autograd/python_variable.h>
#include <torch/python.h>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "call.hpp"

namespace py = pybind11;

namespace vecnorm::torch_ops {
namespace {

enum class Mode : int { step = 0, update = 1, normalize = 2 };

/// Steps over at least this many input elements release the GIL.
constexpr std::int64_t kReleaseGilElements = 1 << 14;

/// The keys a call found, per thread (containers kept between calls); the
/// tensors are released when the call returns.
struct Gathered {
  std::vector<at::Tensor> xs, stats;
  std::vector<std::string> names;
  std::vector<std::size_t> present;
};
class GatheredScope {
 public:
  GatheredScope() : g_(slot()) { clear(); }
  ~GatheredScope() { clear(); }
  Gathered& get() noexcept { return g_; }

 private:
  void clear() {
    g_.xs.clear();
    g_.stats.clear();
    g_.names.clear();
    g_.present.clear();
  }
  static Gathered& slot() {
    thread_local Gathered g;
    return g;
  }
  Gathered& g_;
};

/// One module's keys and buffer names, bound once.
class Bound {
 public:
  Bound(py::dict buffers, py::list keys, std::vector<std::string> names, std::vector<int64_t> config)
      : buffers_(std::move(buffers)), names_(std::move(names)), config_(std::move(config)) {
    for (py::handle k : keys) keys_.push_back(py::reinterpret_borrow<py::object>(k));
    if (keys_.size() != names_.size()) throw py::value_error("vecnorm: Bound: keys and names differ in length");
    for (const std::string& n : names_)
      for (const char* s : kStatNames) stat_names_.push_back(py::str(n + "_" + s));
  }

  /// A step, update or normalize of the keys present in `batch` (a dict);
  /// returns the dict of normalized keys (empty for an update).
  py::dict call(py::dict batch, int mode, double decay, double eps) {
    const std::size_t n = keys_.size();
    GatheredScope gathered;
    Gathered& g = gathered.get();
    std::vector<at::Tensor>& xs = g.xs;
    std::vector<at::Tensor>& stats = g.stats;
    std::vector<std::string>& names = g.names;
    std::vector<std::size_t>& present = g.present;
    for (std::size_t k = 0; k < n; ++k) {
      PyObject* x = PyDict_GetItemWithError(batch.ptr(), keys_[k].ptr());
      if (x == nullptr) {
        if (PyErr_Occurred()) throw py::error_already_set();
        continue;
      }
      if (!THPVariable_Check(x))
        throw py::type_error("vecnorm: key '" + names_[k] + "': expected a Tensor, got " +
                             std::string(Py_TYPE(x)->tp_name));
      xs.push_back(THPVariable_Unpack(x));
      present.push_back(k);
      for (std::size_t s = 0; s < kStatsPerKey; ++s) {
        PyObject* t = PyDict_GetItemWithError(buffers_.ptr(), stat_names_[kStatsPerKey * k + s].ptr());
        if (t == nullptr || !THPVariable_Check(t)) {
          if (PyErr_Occurred()) throw py::error_already_set();
          throw py::value_error("vecnorm: key '" + names_[k] + "': the module has no buffer '" +
                                py::cast<std::string>(stat_names_[kStatsPerKey * k + s]) + "'");
        }
        stats.push_back(THPVariable_Unpack(t));
      }
    }
    if (static_cast<std::size_t>(PyDict_Size(batch.ptr())) != present.size()) unknown_key(batch);
    // The names of the keys present (all of them, usually: the bound list as it is).
    const bool all = present.size() == n;
    if (!all)
      for (std::size_t k : present) names.push_back(names_[k]);
    const std::vector<std::string>& call_names = all ? names_ : names;
    py::dict out;
    if (present.empty()) return out;
    CallScope call;
    std::string error;
    int kind = 0;  // 0 none, 1 ValueError, 2 TypeError, 3 RuntimeError
    {
      // Other Python threads run during a large step; a small one (1x17:
      // 0.2 us) keeps the GIL, whose release and reacquisition cost more.
      std::int64_t elements = 0;
      for (const at::Tensor& x : xs) elements += x.numel();
      std::optional<py::gil_scoped_release> no_gil;
      if (elements >= kReleaseGilElements || xs[0].is_cuda()) no_gil.emplace();
      try {
        const What what = static_cast<Mode>(mode) == Mode::step     ? What::step
                          : static_cast<Mode>(mode) == Mode::update ? What::update
                                                                    : What::normalize;
        run(*call, xs, {}, stats, call_names, config_, decay, eps, what);
      } catch (const Error& e) {
        error = e.what();
        kind = e.code() == ErrorCode::dtype_mismatch                                           ? 2
               : e.code() == ErrorCode::cuda_error || e.code() == ErrorCode::backend_unavailable ? 3
                                                                                                  : 1;
      } catch (const c10::ValueError& e) {
        error = e.what_without_backtrace(), kind = 1;
      } catch (const c10::TypeError& e) {
        error = e.what_without_backtrace(), kind = 2;
      } catch (const std::exception& e) {
        error = e.what(), kind = 3;
      }
    }
    if (kind == 1) throw py::value_error(error);
    if (kind == 2) throw py::type_error(error);
    if (kind == 3) throw std::runtime_error(error);
    std::vector<at::Tensor>& ys = (*call).outputs;
    for (std::size_t i = 0; i < ys.size(); ++i)
      out[keys_[present[i]]] = py::reinterpret_steal<py::object>(THPVariable_Wrap(std::move(ys[i])));
    return out;
  }

 private:
  [[noreturn]] void unknown_key(const py::dict& batch) const {
    for (auto item : batch) {
      bool known = false;
      for (const py::object& k : keys_) known = known || k.equal(item.first);
      if (!known) throw py::value_error("vecnorm: unknown key '" + py::cast<std::string>(py::str(item.first)) + "'");
    }
    throw py::value_error("vecnorm: unknown key in the batch");
  }

  py::dict buffers_;
  std::vector<py::object> keys_;
  std::vector<std::string> names_;
  std::vector<py::str> stat_names_;
  std::vector<int64_t> config_;
};

}  // namespace
}  // namespace vecnorm::torch_ops

// Importing vecnorm._C also registers the operators (ops.cpp, static init).
PYBIND11_MODULE(_C, m) {
  m.doc() = "vecnorm's PyTorch operators (torch.ops.vecnorm) and the eager fast path of vecnorm.torch.VecNorm";
  py::class_<vecnorm::torch_ops::Bound>(m, "Bound")
      .def(py::init<py::dict, py::list, std::vector<std::string>, std::vector<int64_t>>(), py::arg("buffers"),
           py::arg("keys"), py::arg("names"), py::arg("config"))
      .def("call", &vecnorm::torch_ops::Bound::call, py::arg("batch"), py::arg("mode"), py::arg("decay"),
           py::arg("eps"));
}
