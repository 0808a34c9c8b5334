// Argument validation shared by the CPU bindings (bind_cpu.cpp for the vanilla RNN, bind_gated.cpp for LSTM
// and GRU): arrays taken with a checked dtype and shape (messages name the argument and the expected shape
// in the letters T N D H L, e.g. "weight_hh_l0 must have shape (4H, H) = (400, 100), got (100, 100)"),
// weights and gradient lists unpacked into the kernels' structs. Not used by the kernels themselves.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <vector>

#include "cpu/pool.h"
#include "rnnfast/params.h"

namespace rnnfast {
namespace bind {

namespace py = pybind11;

// Kernel calls hold this shared (with the GIL released); set_blas_num_threads holds it exclusively, so a
// call runs with one thread count from start to end.
inline std::shared_mutex& threads_mutex() {
  static std::shared_mutex m;
  return m;
}
constexpr int kMaxThreads = 1024;  // set_blas_num_threads refuses more

struct Dim {
  std::string name;
  int64_t value;
};

inline std::string shape_str(const std::vector<Dim>& dims) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < dims.size(); ++i) s << (i ? ", " : "") << dims[i].name;
  s << ") = (";
  for (size_t i = 0; i < dims.size(); ++i) s << (i ? ", " : "") << dims[i].value;
  s << ")";
  return s.str();
}

inline std::string got_shape(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i) << (a.ndim() == 1 ? "," : "");
  s << ")";
  return s.str();
}

inline std::string type_name(const py::handle& o) {
  return py::str(py::type::of(o).attr("__name__")).cast<std::string>();
}

inline bool native_order(const py::array& a) {
  const char b = a.dtype().byteorder();
  const uint16_t one = 1;
  const bool little = *reinterpret_cast<const uint8_t*>(&one) == 1;
  return b == '=' || b == '|' || b == (little ? '<' : '>');
}

// `a` as a C-contiguous array in native byte order, copied (and byte-swapped) where it is not one already.
// A copy that cannot be allocated raises MemoryError naming the argument (py::array::ensure would return a
// null array and swallow the error).
inline py::array c_native(const std::string& name, py::array a) {
  const bool native = native_order(a);
  if (native && (a.flags() & py::array::c_style)) return a;
  py::object dt = native ? py::object(a.dtype()) : a.dtype().attr("newbyteorder")("=");
  try {
    return py::module_::import("numpy").attr("ascontiguousarray")(a, dt).cast<py::array>();
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_MemoryError)) throw;
    const std::string msg = "not enough memory for a C-contiguous native-order copy of " + name + " (" +
                            std::to_string(a.nbytes()) + " bytes): pass it C-contiguous";
    PyErr_SetString(PyExc_MemoryError, msg.c_str());
    throw py::error_already_set();
  }
}

// The argument as a C-contiguous native-order array of dtype `dt` (float32 or float64, as x) and shape `dims`;
// copies non-contiguous or byte-swapped input.
inline py::array take(const std::string& name, const py::handle& obj, const py::dtype& dt,
                      const std::vector<Dim>& dims) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(name + " must be a numpy array of shape " + shape_str(dims) + ", got " + type_name(obj));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (a.dtype().kind() != dt.kind() || a.itemsize() != dt.itemsize())
    throw py::type_error(name + " must have dtype " + py::str(dt).cast<std::string>() + " (the dtype of x), got " +
                         py::str(a.dtype()).cast<std::string>());
  bool ok = a.ndim() == py::ssize_t(dims.size());
  for (size_t i = 0; ok && i < dims.size(); ++i) ok = a.shape(py::ssize_t(i)) == dims[i].value;
  if (!ok) throw py::value_error(name + " must have shape " + shape_str(dims) + ", got " + got_shape(a));
  a = c_native(name, a);
  // The kernels load whole elements: an array at an address that is not a multiple of its itemsize (a view
  // into a bytes buffer) is copied to aligned storage first.
  if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_)) a = a.attr("copy")();
  return a;
}

// Like take, for an output that is accumulated into: it must already be contiguous, native and writeable.
inline py::array take_grad(const std::string& name, const py::handle& obj, const py::dtype& dt,
                           const std::vector<Dim>& dims) {
  py::array a = take(name, obj, dt, dims);
  if (!a.is(obj)) {
    const py::array o = py::reinterpret_borrow<py::array>(obj);
    if (!native_order(o))
      throw py::value_error(name + " must have native byte order (gradients accumulate into it in place), got " +
                            py::str(o.dtype()).cast<std::string>());
    throw py::value_error(name + " must be C-contiguous and aligned (gradients accumulate into it in place)");
  }
  if (!a.writeable()) throw py::value_error(name + " must be writeable (gradients accumulate into it in place)");
  return a;
}

// x (T, N, D) float32/float64, C-contiguous in native byte order (copied where it is not).
inline py::array take_x(const py::handle& x_obj, const char* name = "x") {
  if (!py::isinstance<py::array>(x_obj))
    throw py::type_error(std::string(name) + " must be a numpy array of shape (T, N, D), got " + type_name(x_obj));
  py::array x = py::reinterpret_borrow<py::array>(x_obj);
  if (x.dtype().kind() != 'f' || (x.itemsize() != 4 && x.itemsize() != 8))
    throw py::type_error(std::string(name) + " must have dtype float32 or float64, got " +
                         py::str(x.dtype()).cast<std::string>());
  if (x.ndim() != 3)
    throw py::value_error(std::string(name) + " must have shape (T, N, D), got " + got_shape(x) + " (rank " +
                          std::to_string(x.ndim()) + ")");
  return c_native(name, x);
}

// A Python list or tuple (weights, grads), else TypeError naming the argument.
inline py::sequence take_list(const char* name, const py::object& o, const char* what) {
  if (!py::isinstance<py::list>(o) && !py::isinstance<py::tuple>(o))
    throw py::type_error(std::string(name) + " must be a list of L tuples " + what + ", got " + type_name(o));
  return o.cast<py::sequence>();
}

// True/False (Python or NumPy bool), else TypeError naming the argument.
inline bool take_bool(const char* name, const py::object& o) {
  if (py::isinstance<py::bool_>(o)) return o.cast<bool>();
  const std::string t = type_name(o);
  if ((t == "bool_" || t == "bool") && py::hasattr(o, "dtype")) return PyObject_IsTrue(o.ptr()) == 1;  // numpy.bool_
  throw py::type_error(std::string(name) + " must be True or False, got " + t);
}

// Ctrl-C in a long forward: calls with more than check_interval() multiply-adds run as a series of
// (layer, time-chunk) kernel calls of about that many each, with the GIL taken between them to run Python's
// signal handlers (a KeyboardInterrupt then ends the call). Shorter calls are one kernel call as before.
inline int64_t& check_interval() {
  static int64_t v = int64_t(1) << 28;
  return v;
}

// Steps per chunk for G-gate layers of input size D (first) / H (the others), or 0: run as one call.
inline int64_t chunk_steps(int64_t Tn, int64_t N, int64_t D, int64_t H, int64_t L, int G) {
  const double per_step = double(N) * double(G) * double(H) * double(std::max(D, H) + H);
  if (per_step * double(Tn) * double(L) <= double(check_interval())) return 0;
  return std::max<int64_t>(1, int64_t(double(check_interval()) / std::max(per_step, 1.0)));
}

// Called with the GIL released: runs pending signal handlers; an exception they raise ends the call.
inline void check_signals() {
  py::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

inline void check_fits_blas(const char* what, int64_t v) {
  if (v > int64_t(INT_MAX))
    throw py::value_error(std::string(what) + " = " + std::to_string(v) + " exceeds the supported maximum " +
                          std::to_string(INT_MAX) + " (BLAS leading dimensions are 32-bit)");
}

template <typename T>
inline const T* ptr(const py::object& a) {
  return a.is_none() ? nullptr : static_cast<const T*>(a.cast<py::array>().data());
}

// "4H", "3H" or "H": the name of the (gate-stacked) dimension.
inline std::string gh_name(int G) { return G == 1 ? std::string("H") : std::to_string(G) + "H"; }

// H from weights[0][1] = weight_hh_l0, which must be (G*H, H).
inline int64_t hidden_size(const py::sequence& weights, int G) {
  if (py::len(weights) == 0)
    throw py::value_error("weights must be a non-empty list of L tuples (W_ih, W_hh, b_ih, b_hh)");
  py::object w0 = weights[0];
  if (!py::isinstance<py::sequence>(w0) || py::len(w0) != 4)
    throw py::value_error("weights[0] must be a tuple (W_ih, W_hh, b_ih, b_hh)");
  py::object whh = w0.cast<py::sequence>()[1];
  const std::string want = "(" + gh_name(G) + ", H)";
  if (!py::isinstance<py::array>(whh)) throw py::type_error("weight_hh_l0 must be a numpy array of shape " + want);
  py::array a = py::reinterpret_borrow<py::array>(whh);
  if (a.ndim() != 2 || a.shape(1) < 1 || a.shape(0) != G * a.shape(1))
    throw py::value_error("weight_hh_l0 must have shape " + want + " with H >= 1, got " + got_shape(a));
  return a.shape(1);
}

template <typename T>
struct Weights {
  std::vector<py::array> keep;
  std::vector<LayerWeights<T>> layers;
  bool bias = true;
};

// identity: layer 0's W_ih may be None, meaning the identity (x is already x W_ih^T: D must be G*H). The
// one-hot layers pass it with rows of W_ih^T gathered as x; nothing is computed or accumulated for it.
template <typename T>
inline Weights<T> take_weights(const py::sequence& weights, int64_t D, int64_t H, int G, const py::dtype& dt,
                               bool identity = false) {
  Weights<T> w;
  const int64_t L = int64_t(py::len(weights));
  const std::string gn = gh_name(G);
  w.layers.resize(size_t(L));
  for (int64_t k = 0; k < L; ++k) {
    py::object item = weights[size_t(k)];
    if (!py::isinstance<py::sequence>(item) || py::len(item) != 4)
      throw py::value_error("weights[" + std::to_string(k) + "] must be a tuple (W_ih, W_hh, b_ih, b_hh)");
    py::sequence t = item.cast<py::sequence>();
    const std::string ks = std::to_string(k);
    if (identity && k == 0 && t[0].is_none()) {
      if (D != G * H)
        throw py::value_error("weight_ih_l0 = None (the identity: x is the input projection) needs D = " + gn + " = " +
                              std::to_string(G * H) + ", got D = " + std::to_string(D));
    } else {
      py::array W_ih = take("weight_ih_l" + ks, t[0], dt, {{gn, G * H}, {k == 0 ? "D" : "H", k == 0 ? D : H}});
      w.layers[size_t(k)].W_ih = static_cast<const T*>(W_ih.data());
      w.keep.push_back(W_ih);
    }
    py::array W_hh = take("weight_hh_l" + ks, t[1], dt, {{gn, G * H}, {"H", H}});
    w.layers[size_t(k)].W_hh = static_cast<const T*>(W_hh.data());
    w.keep.push_back(W_hh);
    const bool has_bi = !t[2].is_none(), has_bh = !t[3].is_none();
    if (has_bi != has_bh)
      throw py::value_error("bias_ih_l" + ks + " and bias_hh_l" + ks + " must both be given or both be None");
    if (k == 0) w.bias = has_bi;
    else if (has_bi != w.bias) throw py::value_error("all layers must have biases, or none (layer " + ks + ")");
    if (has_bi) {
      py::array b_ih = take("bias_ih_l" + ks, t[2], dt, {{gn, G * H}});
      py::array b_hh = take("bias_hh_l" + ks, t[3], dt, {{gn, G * H}});
      w.layers[size_t(k)].b_ih = static_cast<const T*>(b_ih.data());
      w.layers[size_t(k)].b_hh = static_cast<const T*>(b_hh.data());
      w.keep.push_back(b_ih);
      w.keep.push_back(b_hh);
    }
  }
  return w;
}

template <typename T>
inline std::vector<LayerGrads<T>> take_grads(const py::sequence& grads, const Weights<T>& w, int64_t D, int64_t H,
                                             int G, const py::dtype& dt, std::vector<py::array>& keep) {
  const int64_t L = int64_t(w.layers.size());
  const std::string gn = gh_name(G);
  if (int64_t(py::len(grads)) != L)
    throw py::value_error("grads must be a list of L = " + std::to_string(L) + " tuples (dW_ih, dW_hh, db_ih, db_hh)");
  std::vector<LayerGrads<T>> g(static_cast<size_t>(L));
  for (int64_t k = 0; k < L; ++k) {
    py::object item = grads[size_t(k)];
    if (!py::isinstance<py::sequence>(item) || py::len(item) != 4)
      throw py::value_error("grads[" + std::to_string(k) + "] must be a tuple (dW_ih, dW_hh, db_ih, db_hh)");
    py::sequence t = item.cast<py::sequence>();
    const std::string ks = std::to_string(k);
    if (w.layers[size_t(k)].W_ih) {
      py::array a = take_grad("dW_ih_l" + ks, t[0], dt, {{gn, G * H}, {k == 0 ? "D" : "H", k == 0 ? D : H}});
      g[size_t(k)].dW_ih = static_cast<T*>(a.mutable_data());
      keep.push_back(a);
    } else if (!t[0].is_none()) {
      throw py::value_error("dW_ih_l0 must be None (weight_ih_l0 is None: the identity has no gradient)");
    }
    py::array b = take_grad("dW_hh_l" + ks, t[1], dt, {{gn, G * H}, {"H", H}});
    g[size_t(k)].dW_hh = static_cast<T*>(b.mutable_data());
    keep.push_back(b);
    if (w.bias) {
      if (t[2].is_none() || t[3].is_none())
        throw py::value_error("db_ih_l" + ks + " and db_hh_l" + ks + " must be given (the layer has biases)");
      py::array bi = take_grad("db_ih_l" + ks, t[2], dt, {{gn, G * H}});
      py::array bh = take_grad("db_hh_l" + ks, t[3], dt, {{gn, G * H}});
      g[size_t(k)].db_ih = static_cast<T*>(bi.mutable_data());
      g[size_t(k)].db_hh = static_cast<T*>(bh.mutable_data());
      keep.push_back(bi);
      keep.push_back(bh);
    }
  }
  return g;
}

// A new C-contiguous array whose memory comes from rnnfast's block cache (csrc/cpu/pool.h) and goes back
// to it when the array is freed; uninitialised.
template <typename T>
inline py::array_t<T> pooled(const std::vector<py::ssize_t>& shape) {
  size_t n = 1;
  for (py::ssize_t d : shape) n *= size_t(d);
  void* p = pool::acquire(n * sizeof(T));
  py::capsule owner(p, [](void* q) { pool::release(q); });
  return py::array_t<T>(shape, static_cast<T*>(p), owner);
}

// The same for a float32 or float64 dtype given at run time.
inline py::array pooled(const py::dtype& dt, const std::vector<py::ssize_t>& shape) {
  if (dt.itemsize() == 4) return pooled<float>(shape);
  return pooled<double>(shape);
}

template <typename T>
inline py::array_t<T> zeros(std::vector<py::ssize_t> shape) {
  py::array_t<T> a = pooled<T>(shape);
  std::fill(a.mutable_data(), a.mutable_data() + a.size(), T(0));
  return a;
}

}  // namespace bind
}  // namespace rnnfast
