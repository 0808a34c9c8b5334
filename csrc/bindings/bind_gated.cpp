// pybind11 bindings of the gated-cell CPU kernels (LSTM and GRU), registered into rnnfast._C by
// register_gated(): argument validation (messages name the argument and the gate-stacked shape, e.g.
// "weight_hh_l0 must have shape (4H, H) = (400, 100), got ..."), dtype dispatch, allocation, GIL release.
// Not a public API: rnnfast.functional calls it through rnnfast._cpu_backend.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "bindings/validate.h"
#include "cpu/gated_cpu.h"

namespace py = pybind11;
using namespace rnnfast;

namespace {

using namespace rnnfast::bind;

// ---- forward: LSTM (G = 4) and GRU (G = 3) ----

// The stack as (layer, time chunk) kernel calls of Tc steps with a signal check between them (see
// bind_cpu.cpp's forward_chunked): with a cache each call fills its slice of hs/cs/gates/ghn; without one,
// ping-pong buffers with the top layer landing in out. Same result as one call.
template <typename T>
void forward_chunked(bool lstm, const GatedForwardParams<T>& p, int64_t Tc) {
  const int G = lstm ? 4 : 3;
  const int64_t Tn = p.T_, N = p.N, H = p.H, L = p.L, NH = N * H, TNH = Tn * NH;
  std::vector<T> buf[2], carry_h(static_cast<size_t>(NH)), carry_c(static_cast<size_t>(lstm ? NH : 0));
  if (!p.hs && L > 1) buf[0].resize(size_t(TNH));
  if (!p.hs && L > 2) buf[1].resize(size_t(TNH));
  const T* prevY = nullptr;
  for (int64_t k = 0; k < L; ++k) {
    const int64_t Dk = k == 0 ? p.D : H;
    T* Y = p.hs ? p.hs + k * TNH : (k == L - 1 ? p.out : buf[k % 2].data());
    const T* X = k == 0 ? p.x : prevY;
    for (int64_t t0 = 0; t0 < Tn; t0 += Tc) {
      GatedForwardParams<T> q;
      q.T_ = std::min(Tc, Tn - t0);
      q.N = N;
      q.D = Dk;
      q.H = H;
      q.L = 1;
      q.layers = p.layers + k;
      q.x = X + t0 * N * Dk;
      q.h0 = t0 == 0 ? (p.h0 ? p.h0 + k * NH : nullptr) : carry_h.data();
      q.h_n = p.h_n + k * NH;
      if (lstm) {
        q.c0 = t0 == 0 ? (p.c0 ? p.c0 + k * NH : nullptr) : carry_c.data();
        q.c_n = p.c_n + k * NH;
      }
      if (p.hs) {                // one layer with a cache: the kernel copies its states to out as well
        q.hs = Y + t0 * NH;
        q.out = p.out + t0 * NH;
        if (p.cs) q.cs = p.cs + k * TNH + t0 * NH;
        q.gates = p.gates + k * G * TNH + t0 * N * G * H;
        if (p.ghn) q.ghn = p.ghn + k * TNH + t0 * NH;
      } else {
        q.out = Y + t0 * NH;
      }
      if (lstm) cpu::lstm_forward<T>(q);
      else cpu::gru_forward<T>(q);
      std::copy(q.h_n, q.h_n + NH, carry_h.begin());
      if (lstm) std::copy(q.c_n, q.c_n + NH, carry_c.begin());
      check_signals();
    }
    prevY = Y;
  }
  if (p.hs && TNH > 0) std::copy(p.hs + (L - 1) * TNH, p.hs + L * TNH, p.out);
}

template <typename T>
py::tuple forward_impl(int G, py::array x, const py::object& h0_obj, const py::object& c0_obj,
                       const py::sequence& weights, bool need_cache) {
  const bool lstm = G == 4;
  const py::dtype dt = x.dtype();
  const int64_t Tn = x.shape(0), N = x.shape(1), D = x.shape(2);
  const int64_t H = hidden_size(weights, G), L = int64_t(py::len(weights));
  check_fits_blas("D", D);
  check_fits_blas("4H", 4 * H);
  check_fits_blas("N", N);
  check_fits_blas("T*N", Tn * N);
  Weights<T> w = take_weights<T>(weights, D, H, G, dt, true);
  py::object h0 = py::none(), c0 = py::none();
  if (!h0_obj.is_none()) h0 = take("h0", h0_obj, dt, {{"L", L}, {"N", N}, {"H", H}});
  if (lstm && !c0_obj.is_none()) c0 = take("c0", c0_obj, dt, {{"L", L}, {"N", N}, {"H", H}});

  py::array_t<T> out = pooled<T>({Tn, N, H}), h_n = pooled<T>({L, N, H});
  py::object c_n = py::none(), hs = py::none(), cs = py::none(), gates = py::none(), ghn = py::none();
  if (lstm) c_n = pooled<T>({L, N, H});
  if (need_cache) {
    hs = pooled<T>({L, Tn, N, H});
    gates = pooled<T>({L, Tn, N, G * H});
    if (lstm) cs = pooled<T>({L, Tn, N, H});
    else ghn = pooled<T>({L, Tn, N, H});
  }
  GatedForwardParams<T> p;
  p.T_ = Tn;
  p.N = N;
  p.D = D;
  p.H = H;
  p.L = L;
  p.layers = w.layers.data();
  p.x = static_cast<const T*>(x.data());
  p.h0 = ptr<T>(h0);
  p.c0 = ptr<T>(c0);
  p.out = out.mutable_data();
  p.h_n = h_n.mutable_data();
  p.c_n = const_cast<T*>(ptr<T>(c_n));
  p.hs = const_cast<T*>(ptr<T>(hs));
  p.cs = const_cast<T*>(ptr<T>(cs));
  p.gates = const_cast<T*>(ptr<T>(gates));
  p.ghn = const_cast<T*>(ptr<T>(ghn));
  {
    py::gil_scoped_release nogil;
    std::shared_lock<std::shared_mutex> lock(threads_mutex());
    const int64_t Tc = chunk_steps(Tn, N, D, H, L, G);
    if (Tc > 0) forward_chunked<T>(lstm, p, Tc);
    else if (lstm) cpu::lstm_forward<T>(p);
    else cpu::gru_forward<T>(p);
  }
  py::object kept = py::none();
  if (need_cache) {
    if (h0.is_none()) h0 = zeros<T>({L, N, H});
    if (lstm) {
      if (c0.is_none()) c0 = zeros<T>({L, N, H});
      kept = py::make_tuple(x, h0, c0, hs, cs, gates);
    } else {
      kept = py::make_tuple(x, h0, hs, gates, ghn);
    }
  }
  if (lstm) return py::make_tuple(out, h_n, c_n, kept);
  return py::make_tuple(out, h_n, kept);
}

py::tuple lstm_forward(const py::object& x_obj, const py::object& h0, const py::object& c0,
                       const py::object& weights_obj, const py::object& need_cache_obj) {
  const bool need_cache = take_bool("need_cache", need_cache_obj);
  py::array x = take_x(x_obj, "x");
  py::sequence weights = take_list("weights", weights_obj, "(W_ih, W_hh, b_ih, b_hh)");
  if (x.itemsize() == 4) return forward_impl<float>(4, x, h0, c0, weights, need_cache);
  return forward_impl<double>(4, x, h0, c0, weights, need_cache);
}

py::tuple gru_forward(const py::object& x_obj, const py::object& h0, const py::object& weights_obj,
                      const py::object& need_cache_obj) {
  const bool need_cache = take_bool("need_cache", need_cache_obj);
  py::array x = take_x(x_obj, "x");
  py::sequence weights = take_list("weights", weights_obj, "(W_ih, W_hh, b_ih, b_hh)");
  if (x.itemsize() == 4) return forward_impl<float>(3, x, h0, py::none(), weights, need_cache);
  return forward_impl<double>(3, x, h0, py::none(), weights, need_cache);
}

// ---- backward ----

// The cache record, validated against hs (L, T, N, H).
struct Cache {
  py::object x, h0, c0, hs, cs, gates, ghn;
};

template <typename T>
py::tuple backward_impl(int G, const py::object& dout_obj, const py::object& dh_n_obj, const py::object& dc_n_obj,
                        const py::object& dcs_obj, Cache c, const py::sequence& weights, const py::sequence& grads) {
  const bool lstm = G == 4;
  py::array hs = c.hs.cast<py::array>();
  const py::dtype dt = hs.dtype();
  const int64_t L = hs.shape(0), Tn = hs.shape(1), N = hs.shape(2), H = hs.shape(3);
  if (int64_t(py::len(weights)) != L)
    throw py::value_error("cache.weights must hold L = " + std::to_string(L) + " layers");
  py::array x = take_x(c.x, "cache.x");
  if (x.shape(0) != Tn || x.shape(1) != N)
    throw py::value_error("cache.x must have shape (T, N, D) with (T, N) = (" + std::to_string(Tn) + ", " +
                          std::to_string(N) + "), got " + got_shape(x));
  const int64_t D = x.shape(2);
  const std::vector<Dim> LNH = {{"L", L}, {"N", N}, {"H", H}}, LTNH = {{"L", L}, {"T", Tn}, {"N", N}, {"H", H}};
  c.x = take("cache.x", x, dt, {{"T", Tn}, {"N", N}, {"D", D}});
  c.h0 = take("cache.h0", c.h0, dt, LNH);
  c.gates = take("cache.gates", c.gates, dt, {{"L", L}, {"T", Tn}, {"N", N}, {gh_name(G), G * H}});
  if (lstm) {
    c.c0 = take("cache.c0", c.c0, dt, LNH);
    c.cs = take("cache.cs", c.cs, dt, LTNH);
  } else {
    c.ghn = take("cache.ghn", c.ghn, dt, LTNH);
  }
  Weights<T> w = take_weights<T>(weights, D, H, G, dt, true);
  py::object dout = py::none(), dh_n = py::none(), dc_n = py::none(), dcs = py::none();
  if (!dout_obj.is_none()) dout = take("dout", dout_obj, dt, {{"T", Tn}, {"N", N}, {"H", H}});
  if (!dh_n_obj.is_none()) dh_n = take("dh_n", dh_n_obj, dt, LNH);
  if (lstm && !dc_n_obj.is_none()) dc_n = take("dc_n", dc_n_obj, dt, LNH);
  if (lstm && !dcs_obj.is_none()) dcs = take("dcs", dcs_obj, dt, LTNH);
  std::vector<py::array> keep;
  std::vector<LayerGrads<T>> g = take_grads<T>(grads, w, D, H, G, dt, keep);
  py::array_t<T> dx = pooled<T>({Tn, N, D}), dh0 = pooled<T>({L, N, H});
  py::object dc0 = py::none();
  if (lstm) dc0 = pooled<T>({L, N, H});

  GatedBackwardParams<T> p;
  p.T_ = Tn;
  p.N = N;
  p.D = D;
  p.H = H;
  p.L = L;
  p.layers = w.layers.data();
  p.grads = g.data();
  p.x = ptr<T>(c.x);
  p.h0 = ptr<T>(c.h0);
  p.c0 = ptr<T>(c.c0);
  p.hs = static_cast<const T*>(hs.data());
  p.cs = ptr<T>(c.cs);
  p.gates = ptr<T>(c.gates);
  p.ghn = ptr<T>(c.ghn);
  p.dout = ptr<T>(dout);
  p.dh_n = ptr<T>(dh_n);
  p.dc_n = ptr<T>(dc_n);
  p.dcs = ptr<T>(dcs);
  p.dx = dx.mutable_data();
  p.dh0 = dh0.mutable_data();
  p.dc0 = const_cast<T*>(ptr<T>(dc0));
  {
    py::gil_scoped_release nogil;
    std::shared_lock<std::shared_mutex> lock(threads_mutex());
    if (lstm) cpu::lstm_backward<T>(p);
    else cpu::gru_backward<T>(p);
  }
  if (lstm) return py::make_tuple(dx, dh0, dc0);
  return py::make_tuple(dx, dh0);
}

py::tuple backward(int G, const py::object& dout, const py::object& dh_n, const py::object& dc_n, const py::object& dcs,
                   Cache c, const py::object& weights_obj, const py::object& grads_obj) {
  py::sequence weights = take_list("cache.weights", weights_obj, "(W_ih, W_hh, b_ih, b_hh)");
  py::sequence grads = take_list("grads", grads_obj, "(dW_ih, dW_hh, db_ih, db_hh)");
  if (!py::isinstance<py::array>(c.hs)) throw py::type_error("cache.hs must be a numpy array (L, T, N, H)");
  py::array hs = py::reinterpret_borrow<py::array>(c.hs);
  if (hs.ndim() != 4 || hs.dtype().kind() != 'f' || (hs.itemsize() != 4 && hs.itemsize() != 8))
    throw py::value_error("cache.hs must be a float32/float64 array of shape (L, T, N, H), got " + got_shape(hs));
  hs = c_native("cache.hs", hs);
  c.hs = hs;
  if (hs.itemsize() == 4) return backward_impl<float>(G, dout, dh_n, dc_n, dcs, c, weights, grads);
  return backward_impl<double>(G, dout, dh_n, dc_n, dcs, c, weights, grads);
}

}  // namespace

void register_lstm_proj(py::module_& m);  // LSTM with projections, csrc/bindings/bind_lstm_proj.cpp

void register_gated(py::module_& m) {
  register_lstm_proj(m);
  m.def("lstm_forward", &lstm_forward, py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("weights"),
        py::arg("need_cache"),
        "-> (out (T,N,H), h_n (L,N,H), c_n (L,N,H), (x, h0, c0, hs, cs, gates (L,T,N,4H)) or None)");
  m.def(
      "lstm_backward",
      [](const py::object& dout, const py::object& dh_n, const py::object& dc_n, const py::object& dcs,
         const py::object& x, const py::object& h0, const py::object& c0, const py::object& hs, const py::object& cs,
         const py::object& gates, const py::object& weights, const py::object& grads) {
        return backward(4, dout, dh_n, dc_n, dcs, Cache{x, h0, c0, hs, cs, gates, py::none()}, weights, grads);
      },
      py::arg("dout"), py::arg("dh_n"), py::arg("dc_n"), py::arg("dcs"), py::arg("x"), py::arg("h0"), py::arg("c0"),
      py::arg("hs"), py::arg("cs"), py::arg("gates"), py::arg("weights"), py::arg("grads"),
      "-> (dx (T,N,D), dh0 (L,N,H), dc0 (L,N,H)); parameter gradients accumulate into grads");
  m.def("gru_forward", &gru_forward, py::arg("x"), py::arg("h0"), py::arg("weights"), py::arg("need_cache"),
        "-> (out (T,N,H), h_n (L,N,H), (x, h0, hs, gates (L,T,N,3H), ghn (L,T,N,H)) or None)");
  m.def(
      "gru_backward",
      [](const py::object& dout, const py::object& dh_n, const py::object& x, const py::object& h0,
         const py::object& hs, const py::object& gates, const py::object& ghn, const py::object& weights,
         const py::object& grads) {
        return backward(3, dout, dh_n, py::none(), py::none(), Cache{x, h0, py::none(), hs, py::none(), gates, ghn},
                        weights, grads);
      },
      py::arg("dout"), py::arg("dh_n"), py::arg("x"), py::arg("h0"), py::arg("hs"), py::arg("gates"), py::arg("ghn"),
      py::arg("weights"), py::arg("grads"), "-> (dx (T,N,D), dh0 (L,N,H)); parameter gradients accumulate into grads");
}
