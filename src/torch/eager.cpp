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

#include <climits>
#include <string>

#include "call.hpp"

namespace py = pybind11;

namespace vecnorm::torch_ops {
namespace {

enum class Mode : int { step = 0, update = 1, normalize = 2 };

/// Steps over at least this many input elements release the GIL.
constexpr std::int64_t kReleaseGilElements = 1 << 14;

/// The keys a call found, per thread (containers kept between calls). The
/// tensors are borrowed from their Python objects, which `refs` keeps alive
/// until the call returns (the GIL may be released meanwhile): copying a
/// tensor that has a Python object increments and decrements that object's
/// reference count under the GIL (torch's PyObject preservation), ~40 ns each.
struct Gathered {
  std::vector<at::Tensor> xs, stats, mask;  ///< borrowed (MaybeOwnedTraits<Tensor>::createBorrow); mask: 0 or 1
  std::vector<PyObject*> refs;        ///< strong references to their Python objects
  std::vector<std::string> names;
  std::vector<std::size_t> present;
  void borrow(std::vector<at::Tensor>& to, PyObject* t) {
    refs.reserve(refs.size() + 1);
    to.push_back(c10::MaybeOwnedTraits<at::Tensor>::createBorrow(THPVariable_Unpack(t)));
    Py_INCREF(t);
    refs.push_back(t);
  }
};
class GatheredScope {
 public:
  GatheredScope() : g_(slot()) { clear(); }
  ~GatheredScope() { clear(); }
  Gathered& get() noexcept { return g_; }

 private:
  void clear() {
    for (at::Tensor& t : g_.xs) c10::MaybeOwnedTraits<at::Tensor>::destroyBorrow(t);
    for (at::Tensor& t : g_.stats) c10::MaybeOwnedTraits<at::Tensor>::destroyBorrow(t);
    for (at::Tensor& t : g_.mask) c10::MaybeOwnedTraits<at::Tensor>::destroyBorrow(t);
    g_.xs.clear();
    g_.stats.clear();
    g_.mask.clear();
    for (PyObject* o : g_.refs) Py_DECREF(o);
    g_.refs.clear();
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
  py::dict call(py::dict batch, int mode, double decay, double eps, PyObject* mask = nullptr) {
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
      g.borrow(xs, x);
      present.push_back(k);
      for (std::size_t s = 0; s < kStatsPerKey; ++s) {
        PyObject* t = PyDict_GetItemWithError(buffers_.ptr(), stat_names_[kStatsPerKey * k + s].ptr());
        if (t == nullptr || !THPVariable_Check(t)) {
          if (PyErr_Occurred()) throw py::error_already_set();
          throw py::value_error("vecnorm: key '" + names_[k] + "': the module has no buffer '" +
                                py::cast<std::string>(stat_names_[kStatsPerKey * k + s]) + "'");
        }
        g.borrow(stats, t);
      }
    }
    if (static_cast<std::size_t>(PyDict_Size(batch.ptr())) != present.size()) unknown_key(batch);
    // The row mask (None: none), borrowed as the inputs are.
    if (mask != nullptr && mask != Py_None) {
      if (!THPVariable_Check(mask))
        throw py::type_error("vecnorm: mask: expected a Tensor or None, got " + std::string(Py_TYPE(mask)->tp_name));
      g.borrow(g.mask, mask);
    }
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
        run(*call, xs, {}, stats, call_names, config_, decay, eps, what, {}, {},
            g.mask.empty() ? at::Tensor() : g.mask[0]);
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

/// Bound.call(batch, mode, decay, eps, mask=None) as a METH_FASTCALL method: pybind11's
/// dispatcher (function records, argument loaders, keyword matching) costs
/// more than the parsing here. The conversions are pybind11's: batch a dict,
/// mode an int (or an object with __index__), decay and eps anything
/// float() takes; errors are translated as its dispatcher does.
PyObject* bound_call(PyObject* self, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  static const char* const kNames[5] = {"batch", "mode", "decay", "eps", "mask"};
  try {
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject* a[5] = {nullptr, nullptr, nullptr, nullptr, nullptr};
    if (nargs > 5)
      throw py::type_error("Bound.call(): expected 4 or 5 arguments (batch, mode, decay, eps[, mask]), got " +
                           std::to_string(nargs));
    for (Py_ssize_t i = 0; i < nargs; ++i) a[i] = args[i];
    const Py_ssize_t nkw = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t j = 0; j < nkw; ++j) {
      PyObject* name = PyTuple_GET_ITEM(kwnames, j);
      int i = 0;
      while (i < 5 && PyUnicode_CompareWithASCIIString(name, kNames[i]) != 0) ++i;
      if (i == 5 || a[i] != nullptr)
        throw py::type_error("Bound.call(): " + std::string(i == 5 ? "unexpected" : "repeated") + " argument '" +
                             py::cast<std::string>(py::handle(name)) + "'");
      a[i] = args[nargs + j];
    }
    for (int i = 0; i < 4; ++i)  // (mask may be left out)
      if (a[i] == nullptr) throw py::type_error("Bound.call(): missing argument '" + std::string(kNames[i]) + "'");
    if (!PyDict_Check(a[0]))
      throw py::type_error("Bound.call(): batch: expected a dict, got " + std::string(Py_TYPE(a[0])->tp_name));
    if (PyFloat_Check(a[1]))
      throw py::type_error("Bound.call(): mode: expected an int, got float");
    const long mode = PyLong_AsLong(a[1]);
    if (mode == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (mode < INT_MIN || mode > INT_MAX) throw py::type_error("Bound.call(): mode: out of range");
    const double decay = PyFloat_AsDouble(a[2]);
    if (decay == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    const double eps = PyFloat_AsDouble(a[3]);
    if (eps == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    Bound& bound = py::cast<Bound&>(py::handle(self));
    return bound.call(py::reinterpret_borrow<py::dict>(a[0]), static_cast<int>(mode), decay, eps, a[4])
        .release()
        .ptr();
  } catch (py::error_already_set& e) {
    e.restore();
    return nullptr;
#ifdef __GLIBCXX__
  } catch (abi::__forced_unwind&) {
    throw;
#endif
  } catch (...) {
    py::detail::try_translate_exceptions();
    return nullptr;
  }
}

}  // namespace
}  // namespace vecnorm::torch_ops

// Importing vecnorm._C also registers the operators (ops.cpp, static init).
PYBIND11_MODULE(_C, m) {
  m.doc() = "vecnorm's PyTorch operators (torch.ops.vecnorm) and the eager fast path of vecnorm.torch.VecNorm";
  py::class_<vecnorm::torch_ops::Bound> bound(m, "Bound");
  bound.def(py::init<py::dict, py::list, std::vector<std::string>, std::vector<int64_t>>(), py::arg("buffers"),
            py::arg("keys"), py::arg("names"), py::arg("config"));
  // call(batch, mode, decay, eps): a plain method descriptor (see bound_call).
  static PyMethodDef call_def = {
      "call",
      reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&vecnorm::torch_ops::bound_call)),
      METH_FASTCALL | METH_KEYWORDS,
      "call(batch: dict, mode: int, decay: float, eps: float, mask: Tensor | None = None) -> dict: a step (mode 0), "
      "update (1) or normalize (2) of the keys present in batch, the rows where mask is False left out of the "
      "update; returns the normalized keys (empty for an update)"};
  PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(bound.ptr()), &call_def);
  if (descr == nullptr) throw py::error_already_set();
  bound.attr("call") = py::reinterpret_steal<py::object>(descr);
}
