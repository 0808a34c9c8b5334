// pybind11 bindings of the CUDA kernels (rnnfast._C_cuda): raw device pointers in, checks of everything a
// pointer cannot carry (sizes, required/optional pointers, modes), GIL release, and the translation of
// CUDA errors (RuntimeError) and out-of-memory (MemoryError). Not a public API: shapes and dtypes of the
// arrays are checked by rnnfast._cuda_backend (with rnnfast._checks' messages) before their pointers
// come here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda/rnn_cuda.h"

namespace py = pybind11;
using namespace rnnfast;

namespace {

template <typename T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

void check_dims(int64_t T_, int64_t N, int64_t D, int64_t H, int64_t L) {
  if (T_ < 0 || N < 0 || D < 1 || H < 1 || L < 1)
    throw py::value_error("sizes must satisfy T >= 0, N >= 0, D >= 1, H >= 1, L >= 1, got (T, N, D, H, L) = (" +
                          std::to_string(T_) + ", " + std::to_string(N) + ", " + std::to_string(D) + ", " +
                          std::to_string(H) + ", " + std::to_string(L) + ")");
  // cuBLAS and the tiled kernels take int sizes: the GEMMs run over T*N rows and H or D columns
  if (T_ * N > INT_MAX || D > INT_MAX || H > INT_MAX || N * H > INT_MAX)
    throw py::value_error("T*N, N*H, D and H must each be below 2^31 for the CUDA backend, got (T, N, D, H) = (" +
                          std::to_string(T_) + ", " + std::to_string(N) + ", " + std::to_string(D) + ", " +
                          std::to_string(H) + ")");
}

Act parse_act(int act) {
  if (act != 0 && act != 1) throw py::value_error("act must be 0 (tanh) or 1 (relu), got " + std::to_string(act));
  return static_cast<Act>(act);
}

cuda::Options make_opts(int device, uintptr_t stream, int rec, int gemm, uintptr_t barrier, bool allow_cluster) {
  if (rec < 0 || rec > 2) throw py::value_error("recurrence mode must be 0 (auto), 1 (persistent) or 2 (stepwise)");
  if (gemm < 0 || gemm > 2) throw py::value_error("gemm mode must be 0 (auto), 1 (cublas) or 2 (internal)");
  if (device < 0) throw py::value_error("device must be >= 0");
  cuda::Options o;
  o.device = device;
  o.stream = reinterpret_cast<void*>(stream);
  o.recurrence = static_cast<cuda::Recurrence>(rec);
  o.gemm = static_cast<cuda::GemmImpl>(gemm);
  o.barrier = ptr<unsigned int>(barrier);
  o.allow_cluster = allow_cluster;
  return o;
}

void need(uintptr_t p, const std::string& name) {
  if (p == 0) throw py::value_error(name + " must be a device pointer, got null");
}

// layers: L tuples of 4 pointers (W_ih, W_hh, b_ih, b_hh); biases 0 when absent (both or neither).
template <typename T>
std::vector<LayerWeights<T>> take_layers(const std::vector<std::vector<uintptr_t>>& layers, int64_t L) {
  if (int64_t(layers.size()) != L) throw py::value_error("layers must hold L = " + std::to_string(L) + " tuples");
  std::vector<LayerWeights<T>> out(static_cast<size_t>(L));
  for (int64_t k = 0; k < L; ++k) {
    const auto& w = layers[size_t(k)];
    const std::string s = std::to_string(k);
    if (w.size() != 4) throw py::value_error("layers[" + s + "] must hold 4 pointers (W_ih, W_hh, b_ih, b_hh)");
    need(w[0], "weight_ih_l" + s);
    need(w[1], "weight_hh_l" + s);
    if ((w[2] == 0) != (w[3] == 0))
      throw py::value_error("bias_ih_l" + s + " and bias_hh_l" + s + " must both be given or both be None");
    out[size_t(k)] = {ptr<const T>(w[0]), ptr<const T>(w[1]), ptr<const T>(w[2]), ptr<const T>(w[3])};
  }
  return out;
}

template <typename T>
void forward_t(int64_t T_, int64_t N, int64_t D, int64_t H, int64_t L, int act,
               const std::vector<std::vector<uintptr_t>>& layers, uintptr_t x, uintptr_t h0, uintptr_t c, uintptr_t hs,
               uintptr_t out, uintptr_t h_n, uintptr_t scratch, const cuda::Options& o) {
  auto lw = take_layers<T>(layers, L);
  RnnForwardParams<T> p;
  p.T_ = T_;
  p.N = N;
  p.D = D;
  p.H = H;
  p.L = L;
  p.act = parse_act(act);
  p.layers = lw.data();
  p.x = ptr<const T>(x);
  p.h0 = ptr<const T>(h0);
  p.c = ptr<const T>(c);
  p.hs = ptr<T>(hs);
  p.out = ptr<T>(out);
  p.h_n = ptr<T>(h_n);
  p.scratch = ptr<T>(scratch);
  if (T_ > 0 && N > 0) {
    need(x, "x");
    need(out, "out");
    need(h_n, "h_n");
    if (!hs && L > 1) need(scratch, "scratch (T, N, H), needed without a cache when L > 1");
  }
  py::gil_scoped_release nogil;
  cuda::rnn_forward<T>(p, o);
}

template <typename T>
void backward_t(int64_t T_, int64_t N, int64_t D, int64_t H, int64_t L, int act,
                const std::vector<std::vector<uintptr_t>>& layers, const std::vector<std::vector<uintptr_t>>& grads,
                uintptr_t x, uintptr_t h0, uintptr_t hs, uintptr_t dout, uintptr_t dh_n, uintptr_t dx, uintptr_t dh0,
                uintptr_t dc, uintptr_t dz, uintptr_t dy, const cuda::Options& o) {
  auto lw = take_layers<T>(layers, L);
  if (int64_t(grads.size()) != L) throw py::value_error("grads must hold L = " + std::to_string(L) + " tuples");
  std::vector<LayerGrads<T>> lg(static_cast<size_t>(L));
  for (int64_t k = 0; k < L; ++k) {
    const auto& g = grads[size_t(k)];
    const std::string s = std::to_string(k);
    if (g.size() != 4) throw py::value_error("grads[" + s + "] must hold 4 pointers (dW_ih, dW_hh, db_ih, db_hh)");
    need(g[0], "dW_ih_l" + s);
    need(g[1], "dW_hh_l" + s);
    const bool has_b = lw[size_t(k)].b_ih != nullptr;
    if (has_b && (g[2] == 0 || g[3] == 0))
      throw py::value_error("db_ih_l" + s + " and db_hh_l" + s + " must be given (the layer has biases)");
    lg[size_t(k)] = {ptr<T>(g[0]), ptr<T>(g[1]), has_b ? ptr<T>(g[2]) : nullptr, has_b ? ptr<T>(g[3]) : nullptr};
  }
  RnnBackwardParams<T> p;
  p.T_ = T_;
  p.N = N;
  p.D = D;
  p.H = H;
  p.L = L;
  p.act = parse_act(act);
  p.layers = lw.data();
  p.grads = lg.data();
  p.x = ptr<const T>(x);
  p.h0 = ptr<const T>(h0);
  p.hs = ptr<const T>(hs);
  p.dout = ptr<const T>(dout);
  p.dh_n = ptr<const T>(dh_n);
  p.dx = ptr<T>(dx);
  p.dh0 = ptr<T>(dh0);
  p.dc = ptr<T>(dc);
  p.dz = ptr<T>(dz);
  p.dy = ptr<T>(dy);
  if (T_ > 0 && N > 0) {
    for (auto [v, name] : {std::pair<uintptr_t, const char*>{x, "x"},
                           {hs, "hs"},
                           {dx, "dx"},
                           {dh0, "dh0"},
                           {dz, "dz (T, N, H) scratch"},
                           {dy, "dy (T, N, H) scratch"}})
      need(v, name);
  }
  py::gil_scoped_release nogil;
  cuda::rnn_backward<T>(p, o);
}

void check_dtype(const std::string& dtype) {
  if (dtype != "float32" && dtype != "float64")
    throw py::type_error("dtype must be 'float32' or 'float64', got '" + dtype + "'");
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "rnnfast CUDA kernels (internal; use rnnfast.functional with backend='cuda')";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const cuda::OutOfMemory& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });

  m.def("runtime_status", &cuda::runtime_status, "'' when a CUDA device is usable, else the reason");
  m.def(
      "device_info",
      [](int device) {
        cuda::DeviceInfo d = cuda::device_info(device);
        py::dict r;
        r["name"] = d.name;
        r["compute_capability"] = std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor);
        r["sm_count"] = d.sm_count;
        r["cooperative_launch"] = bool(d.cooperative);
        r["smem_per_block_optin"] = d.smem_optin;
        r["smem_per_sm"] = d.smem_per_sm;
        r["total_mem"] = d.total_mem;
        r["runtime_version"] = d.runtime_version;
        r["driver_version"] = d.driver_version;
        return r;
      },
      py::arg("device"));
  m.def("load_cublas", &cuda::load_cublas, py::arg("path"), "dlopen cuBLAS; '' on success, else the reason");
  m.def("cublas_path", &cuda::cublas_path);
  m.def(
      "plan",
      [](int64_t N, int64_t H, int itemsize, bool backward, int device, int mode, bool allow_cluster) {
        if (N < 1 || H < 1) throw py::value_error("plan needs N >= 1 and H >= 1");
        if (itemsize != 4 && itemsize != 8) throw py::value_error("itemsize must be 4 or 8");
        if (mode < 0 || mode > 2) throw py::value_error("mode must be 0 (auto), 1 (persistent) or 2 (stepwise)");
        cuda::Plan p =
            cuda::plan_recurrence(device, itemsize, N, H, backward, static_cast<cuda::Recurrence>(mode), allow_cluster);
        py::dict r;
        r["path"] = p.persistent ? "persistent" : "stepwise";
        r["why"] = p.why;
        r["persistent_fits"] = p.feasible;
        r["blocks"] = p.blocks;
        r["cluster"] = p.cluster;
        r["threads"] = p.threads;
        r["Nb"] = p.Nb;
        r["Hb"] = p.Hb;
        r["RN"] = p.RN;
        r["KS"] = p.KS;
        r["smem"] = p.smem;
        r["est_persistent_us"] = p.est_persistent_us;
        r["est_stepwise_us"] = p.est_stepwise_us;
        return r;
      },
      py::arg("N"), py::arg("H"), py::arg("itemsize"), py::arg("backward"), py::arg("device"), py::arg("mode"),
      py::arg("allow_cluster"));

  m.def(
      "forward",
      [](const std::string& dtype, int64_t T_, int64_t N, int64_t D, int64_t H, int64_t L, int act,
         const std::vector<std::vector<uintptr_t>>& layers, uintptr_t x, uintptr_t h0, uintptr_t c, uintptr_t hs,
         uintptr_t out, uintptr_t h_n, uintptr_t scratch, uintptr_t barrier, int device, uintptr_t stream, int rec,
         int gemm, bool allow_cluster) {
        check_dtype(dtype);
        check_dims(T_, N, D, H, L);
        auto o = make_opts(device, stream, rec, gemm, barrier, allow_cluster);
        if (dtype == "float32") forward_t<float>(T_, N, D, H, L, act, layers, x, h0, c, hs, out, h_n, scratch, o);
        else forward_t<double>(T_, N, D, H, L, act, layers, x, h0, c, hs, out, h_n, scratch, o);
      },
      "x (T,N,D); h0 (L,N,H) or 0; c (N,H) or 0; hs (L,T,N,H) = or 0; out (T,N,H) =; h_n (L,N,H) =");
  m.def(
      "backward",
      [](const std::string& dtype, int64_t T_, int64_t N, int64_t D, int64_t H, int64_t L, int act,
         const std::vector<std::vector<uintptr_t>>& layers, const std::vector<std::vector<uintptr_t>>& grads,
         uintptr_t x, uintptr_t h0, uintptr_t hs, uintptr_t dout, uintptr_t dh_n, uintptr_t dx, uintptr_t dh0,
         uintptr_t dc, uintptr_t dz, uintptr_t dy, uintptr_t barrier, int device, uintptr_t stream, int rec, int gemm,
         bool allow_cluster) {
        check_dtype(dtype);
        check_dims(T_, N, D, H, L);
        auto o = make_opts(device, stream, rec, gemm, barrier, allow_cluster);
        if (dtype == "float32")
          backward_t<float>(T_, N, D, H, L, act, layers, grads, x, h0, hs, dout, dh_n, dx, dh0, dc, dz, dy, o);
        else backward_t<double>(T_, N, D, H, L, act, layers, grads, x, h0, hs, dout, dh_n, dx, dh0, dc, dz, dy, o);
      },
      "grads += (accumulate); dx (T,N,D) =, dh0 (L,N,H) =, dc (N,H) = or 0; dz, dy (T,N,H) scratch");
}
