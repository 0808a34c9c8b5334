// pybind11 bindings of the CPU kernels (rnnfast._C): all argument validation, dtype dispatch, output
// allocation and GIL release live here. Not a public API: rnnfast.functional calls it through
// rnnfast._cpu_backend. Error messages name the argument and the expected shape in the letters T N D H L.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "bindings/validate.h"
#include "cblas.h"
#include "cpu/blas.h"
#include "cpu/rnn_cpu.h"

namespace py = pybind11;
using namespace rnnfast;
using namespace rnnfast::bind;

#ifndef RNNFAST_VERSION
#define RNNFAST_VERSION "dev"
#endif

namespace {

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

Act parse_act(const py::object& o) {
  if (!py::isinstance<py::str>(o)) throw py::type_error("nonlinearity must be 'tanh' or 'relu', got " + type_name(o));
  const std::string s = o.cast<std::string>();
  if (s == "tanh") return Act::Tanh;
  if (s == "relu") return Act::Relu;
  throw py::value_error("nonlinearity must be 'tanh' or 'relu', got '" + s + "'");
}

template <typename T>
py::array_t<T> empty(std::vector<py::ssize_t> shape) {
  return pooled<T>(shape);
}

// The stack as (layer, time chunk) kernel calls of Tc steps with a signal check between them: layer k
// reads x or layer k-1's states and carries its state across chunks (the kernel's own layout: the cache
// when there is one, else ping-pong buffers with the top layer landing in out). Same result as one call.
template <typename T>
void forward_chunked(const RnnForwardParams<T>& p, int64_t Tc) {
  const int64_t Tn = p.T_, N = p.N, H = p.H, L = p.L, NH = N * H, TNH = Tn * NH;
  std::vector<T> buf[2], carry(static_cast<size_t>(NH));
  if (!p.hs && L > 1) buf[0].resize(size_t(TNH));
  if (!p.hs && L > 2) buf[1].resize(size_t(TNH));
  const T* prevY = nullptr;
  for (int64_t k = 0; k < L; ++k) {
    const int64_t Dk = k == 0 ? p.D : H;
    T* Y = p.hs ? p.hs + k * TNH : (k == L - 1 ? p.out : buf[k % 2].data());
    const T* X = k == 0 ? p.x : prevY;
    for (int64_t t0 = 0; t0 < Tn; t0 += Tc) {
      RnnForwardParams<T> q;
      q.T_ = std::min(Tc, Tn - t0);
      q.N = N;
      q.D = Dk;
      q.H = H;
      q.L = 1;
      q.act = p.act;
      q.layers = p.layers + k;
      q.x = X + t0 * N * Dk;
      q.h0 = t0 == 0 ? (p.h0 ? p.h0 + k * NH : nullptr) : carry.data();
      q.c = k == 0 ? p.c : nullptr;
      q.out = Y + t0 * NH;       // one layer, no cache: the kernel writes the states straight to out
      q.h_n = p.h_n + k * NH;
      cpu::rnn_forward<T>(q);
      std::copy(q.h_n, q.h_n + NH, carry.begin());
      check_signals();
    }
    prevY = Y;
  }
  if (p.hs && TNH > 0) std::copy(p.hs + (L - 1) * TNH, p.hs + L * TNH, p.out);
}

template <typename T>
py::tuple forward_impl(py::array x, const py::object& h0_obj, const py::sequence& weights, const py::object& c_obj,
                       Act act, bool need_cache) {
  const py::dtype dt = x.dtype();
  const int64_t Tn = x.shape(0), N = x.shape(1), D = x.shape(2);
  const int64_t H = hidden_size(weights, 1), L = int64_t(py::len(weights));
  check_fits_blas("D", D);
  check_fits_blas("H", H);
  check_fits_blas("N", N);
  Weights<T> w = take_weights<T>(weights, D, H, 1, dt, true);
  py::object h0 = py::none(), c = py::none();
  if (!h0_obj.is_none()) h0 = take("h0", h0_obj, dt, {{"L", L}, {"N", N}, {"H", H}});
  if (!c_obj.is_none()) c = take("c", c_obj, dt, {{"N", N}, {"H", H}});

  auto out = empty<T>({Tn, N, H});
  auto h_n = empty<T>({L, N, H});
  py::object hs = py::none(), scratch = py::none();
  if (need_cache) hs = empty<T>({L, Tn, N, H});
  else if (L > 1) scratch = empty<T>({Tn, N, H});

  RnnForwardParams<T> p;
  p.T_ = Tn;
  p.N = N;
  p.D = D;
  p.H = H;
  p.L = L;
  p.act = act;
  p.layers = w.layers.data();
  p.x = static_cast<const T*>(x.data());
  p.h0 = h0.is_none() ? nullptr : static_cast<const T*>(h0.cast<py::array>().data());
  p.c = c.is_none() ? nullptr : static_cast<const T*>(c.cast<py::array>().data());
  p.out = out.mutable_data();
  p.h_n = h_n.mutable_data();
  p.hs = hs.is_none() ? nullptr : static_cast<T*>(hs.cast<py::array>().mutable_data());
  p.scratch = scratch.is_none() ? nullptr : static_cast<T*>(scratch.cast<py::array>().mutable_data());
  {
    py::gil_scoped_release nogil;
    std::shared_lock<std::shared_mutex> lock(threads_mutex());
    const int64_t Tc = chunk_steps(Tn, N, D, H, L, 1);
    if (Tc > 0) forward_chunked<T>(p, Tc);
    else cpu::rnn_forward<T>(p);
  }
  if (!need_cache) return py::make_tuple(out, h_n, py::none());
  if (h0.is_none()) {
    auto z = empty<T>({L, N, H});
    std::fill(z.mutable_data(), z.mutable_data() + L * N * H, T(0));
    h0 = z;
  }
  return py::make_tuple(out, h_n, py::make_tuple(x, h0, hs, c));
}

py::tuple rnn_forward(const py::object& x_obj, const py::object& h0, const py::object& weights_obj, const py::object& c,
                      const py::object& nonlinearity, const py::object& need_cache_obj) {
  Act act = parse_act(nonlinearity);
  const bool need_cache = take_bool("need_cache", need_cache_obj);
  py::array x = take_x(x_obj);
  py::sequence weights = take_list("weights", weights_obj, "(W_ih, W_hh, b_ih, b_hh)");
  if (x.itemsize() == 4) return forward_impl<float>(x, h0, weights, c, act, need_cache);
  return forward_impl<double>(x, h0, weights, c, act, need_cache);
}

template <typename T>
py::tuple backward_impl(const py::object& dout_obj, const py::object& dh_n_obj, py::array hs, const py::object& x_obj,
                        const py::object& h0_obj, bool has_c, const py::sequence& weights, const py::sequence& grads,
                        Act act) {
  const py::dtype dt = hs.dtype();
  const int64_t L = hs.shape(0), Tn = hs.shape(1), N = hs.shape(2), H = hs.shape(3);
  if (int64_t(py::len(weights)) != L)
    throw py::value_error("cache.weights must hold L = " + std::to_string(L) + " layers");
  py::array x = take_x(x_obj);
  if (x.shape(0) != Tn || x.shape(1) != N)
    throw py::value_error("cache.x must have shape (T, N, D) with (T, N) = (" + std::to_string(Tn) + ", " +
                          std::to_string(N) + "), got " + got_shape(x));
  const int64_t D = x.shape(2);
  x = take("cache.x", x, dt, {{"T", Tn}, {"N", N}, {"D", D}});
  py::array h0 = take("cache.h0", h0_obj, dt, {{"L", L}, {"N", N}, {"H", H}});
  Weights<T> w = take_weights<T>(weights, D, H, 1, dt, true);
  py::object dout = py::none(), dh_n = py::none();
  if (!dout_obj.is_none()) dout = take("dout", dout_obj, dt, {{"T", Tn}, {"N", N}, {"H", H}});
  if (!dh_n_obj.is_none()) dh_n = take("dh_n", dh_n_obj, dt, {{"L", L}, {"N", N}, {"H", H}});
  std::vector<py::array> keep;
  std::vector<LayerGrads<T>> g = take_grads<T>(grads, w, D, H, 1, dt, keep);
  // identity W_ih (layer 0): dx is the kernels' dz of layer 0 itself, left in dz when the loop ends
  const bool identity = w.layers[0].W_ih == nullptr;
  auto dz = empty<T>({Tn, N, H});
  auto dx = identity ? dz : empty<T>({Tn, N, D});
  auto dh0 = empty<T>({L, N, H});
  py::object dc = py::none();
  if (has_c) dc = empty<T>({N, H});
  py::object dy = py::none();
  if (L > 1) dy = empty<T>({Tn, N, H});

  RnnBackwardParams<T> p;
  p.T_ = Tn;
  p.N = N;
  p.D = D;
  p.H = H;
  p.L = L;
  p.act = act;
  p.layers = w.layers.data();
  p.grads = g.data();
  p.x = static_cast<const T*>(x.data());
  p.h0 = static_cast<const T*>(h0.data());
  p.hs = static_cast<const T*>(hs.data());
  p.dout = dout.is_none() ? nullptr : static_cast<const T*>(dout.cast<py::array>().data());
  p.dh_n = dh_n.is_none() ? nullptr : static_cast<const T*>(dh_n.cast<py::array>().data());
  p.dx = dx.mutable_data();
  p.dh0 = dh0.mutable_data();
  p.dc = dc.is_none() ? nullptr : static_cast<T*>(dc.cast<py::array>().mutable_data());
  p.dz = dz.mutable_data();
  p.dy = dy.is_none() ? nullptr : static_cast<T*>(dy.cast<py::array>().mutable_data());
  {
    py::gil_scoped_release nogil;
    std::shared_lock<std::shared_mutex> lock(threads_mutex());
    cpu::rnn_backward<T>(p);
  }
  return py::make_tuple(dx, dh0, dc);
}

py::tuple rnn_backward(const py::object& dout, const py::object& dh_n, const py::object& x, const py::object& h0,
                       const py::object& hs_obj, bool has_c, const py::object& weights_obj, const py::object& grads_obj,
                       const py::object& nonlinearity) {
  Act act = parse_act(nonlinearity);
  py::sequence weights = take_list("cache.weights", weights_obj, "(W_ih, W_hh, b_ih, b_hh)");
  py::sequence grads = take_list("grads", grads_obj, "(dW_ih, dW_hh, db_ih, db_hh)");
  if (!py::isinstance<py::array>(hs_obj)) throw py::type_error("cache.hs must be a numpy array (L, T, N, H)");
  py::array hs = py::reinterpret_borrow<py::array>(hs_obj);
  if (hs.ndim() != 4 || hs.dtype().kind() != 'f' || (hs.itemsize() != 4 && hs.itemsize() != 8))
    throw py::value_error("cache.hs must be a float32/float64 array of shape (L, T, N, H), got " + got_shape(hs));
  hs = c_native("cache.hs", hs);
  if (hs.itemsize() == 4) return backward_impl<float>(dout, dh_n, hs, x, h0, has_c, weights, grads, act);
  return backward_impl<double>(dout, dh_n, hs, x, h0, has_c, weights, grads, act);
}

}  // namespace

void register_gated(py::module_& m);  // LSTM and GRU, csrc/bindings/bind_gated.cpp
void register_train(py::module_& m);  // training-step ops, csrc/bindings/bind_train.cpp
void register_decode(py::module_& m);  // native decoding, csrc/bindings/bind_decode.cpp

PYBIND11_MODULE(_C, m) {
  m.doc() = "rnnfast CPU kernels (fused vanilla RNN forward/backward). Use rnnfast.functional, not this.";
  m.def("rnn_forward", &rnn_forward, py::arg("x"), py::arg("h0"), py::arg("weights"), py::arg("c"),
        py::arg("nonlinearity"), py::arg("need_cache"),
        "-> (out (T,N,H), h_n (L,N,H), (x, h0, hs (L,T,N,H), c) or None)");
  m.def("rnn_backward", &rnn_backward, py::arg("dout"), py::arg("dh_n"), py::arg("x"), py::arg("h0"), py::arg("hs"),
        py::arg("has_c"), py::arg("weights"), py::arg("grads"), py::arg("nonlinearity"),
        "-> (dx (T,N,D), dh0 (L,N,H), dc (N,H) or None); parameter gradients accumulate into grads");
  m.def(
      "isa",
      []() {
        try {
          return std::string(cpu::isa());
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      "the kernel build in use: 'generic', 'avx2' or 'avx512' (RNNFAST_ISA, else the best this CPU runs)");
  m.def(
      "set_isa",
      [](const std::string& s) {
        try {
          cpu::set_isa(s);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      py::arg("isa"), "switch the kernel build in-process (tests, benchmarks): 'generic', 'avx2' or 'avx512'");
  m.def(
      "supported_isas",
      []() {
        std::vector<std::string> v;
        for (cpu::Isa i : {cpu::Isa::Generic, cpu::Isa::Avx2, cpu::Isa::Avx512})
          if (cpu::isa_supported(i)) v.push_back(cpu::isa_name(i));
        return v;
      },
      "the kernel builds this CPU can run, slowest first");
  m.def("blas_config", []() { return std::string(scipy_openblas_get_config()); });
  m.def(
      "blas_num_threads",
      []() {
        const int n = blas::max_threads().load();
        return n > 0 ? n : scipy_openblas_get_num_threads();
      },
      "threads rnnfast uses for large GEMMs (small ones run on one thread)");
  m.def(
      "set_blas_num_threads",
      [](const py::object& o) {
        if (!py::isinstance<py::int_>(o) || py::isinstance<py::bool_>(o))
          throw py::type_error("number of threads must be an int, got " + type_name(o));
        if (!(py::int_(1) <= o) || !(o <= py::int_(kMaxThreads)))
          throw py::value_error("number of threads must be between 1 and " + std::to_string(kMaxThreads) + ", got " +
                                py::str(o).cast<std::string>());
        const int n = o.cast<int>();
        py::gil_scoped_release nogil;            // wait for running kernel calls without blocking them
        std::unique_lock<std::shared_mutex> lock(threads_mutex());
        blas::max_threads() = n;
      },
      "set the thread count; waits until kernel calls running in other threads have finished");
  m.def(
      "pool_stats",
      []() {
        const pool::Stats st = pool::stats();
        py::dict d;
        d["cached_bytes"] = st.cached_bytes;
        d["cached_blocks"] = st.cached_blocks;
        d["limit_bytes"] = st.limit_bytes;
        d["hits"] = st.hits;
        d["misses"] = st.misses;
        return d;
      },
      "the block cache of the arrays rnnfast allocates (csrc/cpu/pool.h): cached bytes/blocks, limit, hits, misses");
  m.def(
      "set_pool_limit",
      [](int64_t bytes) {
        if (bytes < 0) throw py::value_error("limit must be >= 0 bytes, got " + std::to_string(bytes));
        return pool::set_limit(size_t(bytes));
      },
      py::arg("bytes"), "set the block cache's limit in bytes (0: no caching); returns the previous one");
  m.def("pool_trim", &pool::trim, "free every cached block");
  m.def(
      "set_thread_threshold", [](int64_t mnk) { blas::thread_threshold() = mnk; },
      "GEMMs with fewer multiply-adds than this run on one thread");
  m.def(
      "recurrence",
      []() {
        static const char* names[] = {"auto", "matvec", "blas"};
        return std::string(names[int(cpu::tuning().path)]);
      },
      "how the per-step recurrent product is computed: 'auto', 'matvec' or 'blas'");
  m.def(
      "set_recurrence",
      [](const std::string& s) {
        cpu::Path p;
        if (s == "auto") p = cpu::Path::Auto;
        else if (s == "matvec") p = cpu::Path::Matvec;
        else if (s == "blas") p = cpu::Path::Blas;
        else throw py::value_error("recurrence must be 'auto', 'matvec' or 'blas', got '" + s + "'");
        cpu::tuning().path = p;
      },
      "force a recurrence path (tests, benchmarks)");
  m.def("small_batch_limit", []() { return cpu::tuning().small_batch; });
  m.def(
      "set_small_batch_limit", [](int64_t n) { cpu::tuning().small_batch = n; },
      "auto path: batches N <= n use the matrix-vector kernel");
  m.def("check_interval", []() { return check_interval(); });
  m.def(
      "set_check_interval",
      [](int64_t n) {
        if (n < 1) throw py::value_error("check interval must be >= 1");
        check_interval() = n;
      },
      "forward calls with more multiply-adds than this check for Ctrl-C between layer/time chunks of this size");
  m.def("gemm_block", []() { return blas::max_block(); });
  m.def(
      "set_gemm_block",
      [](int64_t n) {
        if (n < 1) throw py::value_error("gemm block must be >= 1");
        blas::max_block() = n;
      },
      "largest row/reduction count per BLAS call; lowered by tests to exercise the 64-bit split path");
  register_gated(m);
  register_train(m);
  register_decode(m);
  m.attr("__version__") = RNNFAST_VERSION;
}
