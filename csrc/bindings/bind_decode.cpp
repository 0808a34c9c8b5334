// pybind11 bindings of native decoding (csrc/cpu/decode.h), registered into rnnfast._C by register_decode():
// argument validation (messages name the argument and the expected shape, e.g. "h0 must have shape
// (L, N, H) = (1, 3, 64), got (1, 2, 64)"), dtype dispatch, the run-time choice of the ISA build (generic,
// avx2, avx512), the prepared-model cache controls (decode_cache_clear / decode_cache_stats),
// GIL release. Not a public API: rnnfast._decode calls it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "bindings/validate.h"
#include "cpu/decode.h"
#include "cpu/parallel.h"
#include "cpu/rnn_cpu.h"

namespace py = pybind11;
using namespace rnnfast;

namespace rnnfast {
namespace cpu {
#define RNNFAST_DECODE_DECLARE(NS)                                                              \
  namespace NS {                                                                                \
  template <typename T> void decode_sample_impl(const DecodeModel<T>&, const SampleParams<T>&); \
  template <typename T> void decode_beam_impl(const DecodeModel<T>&, const BeamParams<T>&);     \
  void decode_cache_clear();                                                                    \
  void decode_cache_stats(int64_t*);                                                            \
  }
RNNFAST_DECODE_DECLARE(generic)
#ifdef RNNFAST_HAVE_X86_ISAS
RNNFAST_DECODE_DECLARE(avx2)
RNNFAST_DECODE_DECLARE(avx512)
#endif
#undef RNNFAST_DECODE_DECLARE

// The ISA build chosen by cpu/dispatch.cpp (RNNFAST_ISA, else the best the CPU runs), as for every kernel.
#ifdef RNNFAST_HAVE_X86_ISAS
#define RNNFAST_DECODE_FORWARD(call) \
  switch (current_isa()) {           \
    case Isa::Avx512:                \
      return avx512::call;           \
    case Isa::Avx2:                  \
      return avx2::call;             \
    default:                         \
      return generic::call;          \
  }
#else
#define RNNFAST_DECODE_FORWARD(call) return generic::call
#endif

template <typename T>
void decode_sample(const DecodeModel<T>& m, const SampleParams<T>& p) {
  RNNFAST_DECODE_FORWARD(decode_sample_impl<T>(m, p));
}

template <typename T>
void decode_beam(const DecodeModel<T>& m, const BeamParams<T>& p) {
  RNNFAST_DECODE_FORWARD(decode_beam_impl<T>(m, p));
}
#undef RNNFAST_DECODE_FORWARD

// The prepared-model cache of every ISA build (decode.cpp): cleared, or (hits, misses, entries) summed.
void decode_cache_clear_all() {
  generic::decode_cache_clear();
#ifdef RNNFAST_HAVE_X86_ISAS
  avx2::decode_cache_clear();
  avx512::decode_cache_clear();
#endif
}
py::tuple decode_cache_stats_all() {
  int64_t s[3] = {0, 0, 0};
  generic::decode_cache_stats(s);
#ifdef RNNFAST_HAVE_X86_ISAS
  avx2::decode_cache_stats(s);
  avx512::decode_cache_stats(s);
#endif
  return py::make_tuple(s[0], s[1], s[2]);
}

}  // namespace cpu
}  // namespace rnnfast

namespace {

using namespace rnnfast::bind;

cpu::DecodeCell parse_cell(const std::string& cell, int& G) {
  if (cell == "rnn_tanh") {
    G = 1;
    return cpu::DecodeCell::RnnTanh;
  }
  if (cell == "rnn_relu") {
    G = 1;
    return cpu::DecodeCell::RnnRelu;
  }
  if (cell == "lstm") {
    G = 4;
    return cpu::DecodeCell::Lstm;
  }
  if (cell == "gru") {
    G = 3;
    return cpu::DecodeCell::Gru;
  }
  throw py::value_error("cell must be 'rnn_tanh', 'rnn_relu', 'lstm' or 'gru', got '" + cell + "'");
}

void check_token(const char* name, int64_t v, int64_t V, bool allow_none) {
  if ((allow_none && v == -1) || (v >= 0 && v < V)) return;
  throw py::value_error(std::string(name) + " must lie in [0, V) = [0, " + std::to_string(V) + ")" +
                        (allow_none ? " (or be None)" : "") + ", got " + std::to_string(v));
}

// Everything a decode call shares: the model's arrays validated and the struct filled in.
template <typename T>
struct Model {
  cpu::DecodeModel<T> m;
  Weights<T> w;
  py::array embed, W_out, b_out;
  bool has_embed = false, has_bias = false;
};

template <typename T>
Model<T> take_model(cpu::DecodeCell cell, int G, const py::sequence& weights, const py::object& embed_obj,
                    const py::array& W_out_in, const py::object& b_out_obj) {
  Model<T> md;
  const py::dtype dt = W_out_in.dtype();
  const int64_t H = hidden_size(weights, G), L = int64_t(py::len(weights));
  if (W_out_in.ndim() != 2 || W_out_in.shape(1) != H || W_out_in.shape(0) < 1)
    throw py::value_error("head weight must have shape (V, H) with H = " + std::to_string(H) + " and V >= 1, got " +
                          got_shape(W_out_in));
  const int64_t V = W_out_in.shape(0);
  md.W_out = take("head weight", W_out_in, dt, {{"V", V}, {"H", H}});
  if (!b_out_obj.is_none()) {
    md.b_out = take("head bias", b_out_obj, dt, {{"V", V}});
    md.has_bias = true;
  }
  int64_t D = V;
  if (!embed_obj.is_none()) {
    if (!py::isinstance<py::array>(embed_obj) || py::reinterpret_borrow<py::array>(embed_obj).ndim() != 2)
      throw py::value_error("embed must be a (V, E) array (the token embedding) or None (one-hot input)");
    D = py::reinterpret_borrow<py::array>(embed_obj).shape(1);
    md.embed = take("embed", embed_obj, dt, {{"V", V}, {"E", D}});
    md.has_embed = true;
  }
  check_fits_blas("V", V);
  check_fits_blas("G*H", G * H);
  check_fits_blas("D", D);
  md.w = take_weights<T>(weights, D, H, G, dt);
  md.m.cell = cell;
  md.m.L = L;
  md.m.H = H;
  md.m.G = G;
  md.m.V = V;
  md.m.D = D;
  md.m.layers = md.w.layers.data();
  md.m.embed = md.has_embed ? static_cast<const T*>(md.embed.data()) : nullptr;
  md.m.W_out = static_cast<const T*>(md.W_out.data());
  md.m.b_out = md.has_bias ? static_cast<const T*>(md.b_out.data()) : nullptr;
  return md;
}

// The (L, N, H) states: h0 required; c0 exactly when the cell is an LSTM; c (N, H) only for the vanilla cell.
template <typename T>
void take_states(cpu::DecodeCell cell, const py::dtype& dt, int64_t L, int64_t N, int64_t H, const py::object& h0,
                 const py::object& c0, const py::object& c, py::array_t<T>& h_out, py::object& c_out,
                 py::object& c_in) {
  py::array h = take("h0", h0, dt, {{"L", L}, {"N", N}, {"H", H}});
  h_out = py::array_t<T>({L, N, H});
  std::memcpy(h_out.mutable_data(), h.data(), sizeof(T) * size_t(L * N * H));
  const bool lstm = cell == cpu::DecodeCell::Lstm;
  if (lstm) {
    if (c0.is_none()) throw py::value_error("c0 (the LSTM cell state, (L, N, H)) must be given for cell='lstm'");
    py::array a = take("c0", c0, dt, {{"L", L}, {"N", N}, {"H", H}});
    py::array_t<T> cc({L, N, H});
    std::memcpy(cc.mutable_data(), a.data(), sizeof(T) * size_t(L * N * H));
    c_out = cc;
  } else if (!c0.is_none()) {
    throw py::value_error("c0 is the LSTM cell state; give None for this cell");
  }
  if (!c.is_none()) {
    if (cell != cpu::DecodeCell::RnnTanh && cell != cpu::DecodeCell::RnnRelu)
      throw py::value_error("the constant input c exists only for the vanilla RNN cell");
    c_in = take("c", c, dt, {{"N", N}, {"H", H}});
  }
}

py::array_t<int64_t> take_ids(const char* name, const py::object& obj, int64_t V, bool allow_empty = false) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy integer array of shape (N,)");
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (a.dtype().kind() != 'i' && a.dtype().kind() != 'u')
    throw py::type_error(std::string(name) + " must be an integer array of token ids, got dtype " +
                         py::str(a.dtype()).cast<std::string>());
  if (a.ndim() != 1 || (a.shape(0) < 1 && !allow_empty))
    throw py::value_error(std::string(name) + " must have shape (N,) with N >= 1, got " + got_shape(a));
  py::array_t<int64_t> ids = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
  const int64_t* d = ids.data();
  for (py::ssize_t i = 0; i < ids.shape(0); ++i)
    if (d[i] < 0 || d[i] >= V)
      throw py::value_error(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(d[i]) +
                            " is outside the vocabulary [0, V) = [0, " + std::to_string(V) + ")");
  return ids;
}

template <typename T>
py::tuple sample_impl(cpu::DecodeCell cell, int G, const py::sequence& weights, const py::object& embed,
                      const py::array& W_out, const py::object& b_out, const py::object& first_obj,
                      const py::object& h0, const py::object& c0, const py::object& c, int64_t steps,
                      const std::string& method, double temperature, int64_t top_k, uint64_t seed, int64_t t0,
                      int64_t end_token, int64_t pad_token, const py::object& prefix_obj) {
  Model<T> md = take_model<T>(cell, G, weights, embed, W_out, b_out);
  const int64_t V = md.m.V, L = md.m.L, H = md.m.H;
  if (method != "greedy" && method != "sample")
    throw py::value_error("method must be 'greedy' or 'sample', got '" + method + "'");
  const bool greedy = method == "greedy";
  if (!greedy && !(temperature > 0 && std::isfinite(temperature)))
    throw py::value_error("temperature must be a finite number > 0, got " + std::to_string(temperature));
  if (top_k < 0) throw py::value_error("top_k must be >= 1 (or 0 / None for no limit), got " + std::to_string(top_k));
  if (steps < 0) throw py::value_error("steps must be >= 0, got " + std::to_string(steps));
  if (t0 < 0) throw py::value_error("t0 must be >= 0, got " + std::to_string(t0));
  check_token("end_token", end_token, V, true);
  check_token("pad_token", pad_token, V, false);
  py::array_t<int64_t> first = take_ids("first", first_obj, V);
  const int64_t N = first.shape(0);
  py::array_t<T> h;
  py::object cs = py::none(), cin = py::none();
  take_states<T>(cell, W_out.dtype(), L, N, H, h0, c0, c, h, cs, cin);
  py::array_t<int64_t> prefix;
  int64_t P = 0;
  if (!prefix_obj.is_none()) {
    if (!py::isinstance<py::array>(prefix_obj) || py::reinterpret_borrow<py::array>(prefix_obj).ndim() != 2 ||
        py::reinterpret_borrow<py::array>(prefix_obj).shape(1) != N)
      throw py::value_error("prefix must be an integer array of shape (P, N) with N = " + std::to_string(N) +
                            " or None");
    py::array a = py::reinterpret_borrow<py::array>(prefix_obj);
    P = a.shape(0);
    py::array flat = a.reshape({py::ssize_t(P * N)});
    prefix = take_ids("prefix", flat, V, true);
  }
  py::array_t<int64_t> ids({steps, N});
  cpu::SampleParams<T> p;
  p.P = P;
  p.prefix = P ? prefix.data() : nullptr;
  p.N = N;
  p.steps = steps;
  p.greedy = greedy;
  p.temperature = temperature;
  p.top_k = top_k;
  p.seed = seed;
  p.t0 = t0;
  p.end_token = end_token;
  p.pad_token = pad_token;
  p.first = first.data();
  p.c = ptr<T>(cin);
  p.h = h.mutable_data();
  p.cs = const_cast<T*>(ptr<T>(cs));
  p.ids = ids.mutable_data();
  {
    py::gil_scoped_release nogil;
    cpu::decode_sample<T>(md.m, p);
  }
  return py::make_tuple(ids, h, cs);
}

template <typename T>
py::tuple beam_impl(cpu::DecodeCell cell, int G, const py::sequence& weights, const py::object& embed,
                    const py::array& W_out, const py::object& b_out, const py::object& h0, const py::object& c0,
                    const py::object& c, int64_t start_token, int64_t end_token, int64_t max_len, int64_t beam_size) {
  Model<T> md = take_model<T>(cell, G, weights, embed, W_out, b_out);
  const int64_t V = md.m.V, L = md.m.L, H = md.m.H;
  check_token("start_token", start_token, V, false);
  check_token("end_token", end_token, V, false);
  if (max_len < 1) throw py::value_error("max_len must be >= 1, got " + std::to_string(max_len));
  if (beam_size < 1) throw py::value_error("beam_size must be >= 1, got " + std::to_string(beam_size));
  if (!py::isinstance<py::array>(h0) || py::reinterpret_borrow<py::array>(h0).ndim() != 3)
    throw py::value_error("h0 must be an (L, N, H) array");
  const int64_t N = py::reinterpret_borrow<py::array>(h0).shape(1);
  if (N < 1) throw py::value_error("empty batch: h0 has N = 0 sequences");
  py::array_t<T> h;
  py::object cs = py::none(), cin = py::none();
  take_states<T>(cell, W_out.dtype(), L, N, H, h0, c0, c, h, cs, cin);
  py::array_t<int64_t> ids({max_len, N});
  py::array_t<double> scores(N);
  cpu::BeamParams<T> p;
  p.N = N;
  p.K = beam_size;
  p.max_len = max_len;
  p.start_token = start_token;
  p.end_token = end_token;
  p.c = ptr<T>(cin);
  p.h0 = h.data();
  p.c0 = ptr<T>(cs);
  p.ids = ids.mutable_data();
  p.scores = scores.mutable_data();
  {
    py::gil_scoped_release nogil;
    cpu::decode_beam<T>(md.m, p);
  }
  return py::make_tuple(ids, scores);
}

py::array head_weight(const py::object& W_out) {
  if (!py::isinstance<py::array>(W_out)) throw py::type_error("head weight must be a numpy array of shape (V, H)");
  py::array a = py::reinterpret_borrow<py::array>(W_out);
  if (a.dtype().kind() != 'f' || (a.itemsize() != 4 && a.itemsize() != 8))
    throw py::type_error("head weight must have dtype float32 or float64, got " +
                         py::str(a.dtype()).cast<std::string>());
  return a;
}

py::tuple decode_sample_py(const std::string& cell, const py::sequence& weights, const py::object& embed,
                           const py::object& W_out, const py::object& b_out, const py::object& first,
                           const py::object& h0, const py::object& c0, const py::object& c, int64_t steps,
                           const std::string& method, double temperature, int64_t top_k, uint64_t seed, int64_t t0,
                           int64_t end_token, int64_t pad_token, const py::object& prefix) {
  int G = 1;
  const cpu::DecodeCell cl = parse_cell(cell, G);
  py::array W = head_weight(W_out);
  if (W.itemsize() == 4)
    return sample_impl<float>(cl, G, weights, embed, W, b_out, first, h0, c0, c, steps, method, temperature, top_k,
                              seed, t0, end_token, pad_token, prefix);
  return sample_impl<double>(cl, G, weights, embed, W, b_out, first, h0, c0, c, steps, method, temperature, top_k, seed,
                             t0, end_token, pad_token, prefix);
}

py::tuple decode_beam_py(const std::string& cell, const py::sequence& weights, const py::object& embed,
                         const py::object& W_out, const py::object& b_out, const py::object& h0, const py::object& c0,
                         const py::object& c, int64_t start_token, int64_t end_token, int64_t max_len,
                         int64_t beam_size) {
  int G = 1;
  const cpu::DecodeCell cl = parse_cell(cell, G);
  py::array W = head_weight(W_out);
  if (W.itemsize() == 4)
    return beam_impl<float>(cl, G, weights, embed, W, b_out, h0, c0, c, start_token, end_token, max_len, beam_size);
  return beam_impl<double>(cl, G, weights, embed, W, b_out, h0, c0, c, start_token, end_token, max_len, beam_size);
}

}  // namespace

void register_decode(py::module_& m) {
  m.def("decode_sample", &decode_sample_py, py::arg("cell"), py::arg("weights"), py::arg("embed"),
        py::arg("head_weight"), py::arg("head_bias"), py::arg("first"), py::arg("h0"), py::arg("c0"), py::arg("c"),
        py::arg("steps"), py::arg("method"), py::arg("temperature"), py::arg("top_k"), py::arg("seed"), py::arg("t0"),
        py::arg("end_token"), py::arg("pad_token"), py::arg("prefix") = py::none(),
        "-> (ids (steps, N) int64, h_n (L, N, H), c_n (L, N, H) or None): greedy or sampled decoding after an "
        "optional forced prefix (P, N)");
  m.def("decode_beam", &decode_beam_py, py::arg("cell"), py::arg("weights"), py::arg("embed"), py::arg("head_weight"),
        py::arg("head_bias"), py::arg("h0"), py::arg("c0"), py::arg("c"), py::arg("start_token"), py::arg("end_token"),
        py::arg("max_len"), py::arg("beam_size"),
        "-> (ids (max_len, N) int64, scores (N,) float64): beam search, the best beam of each source");
  m.def("decode_cache_clear", &cpu::decode_cache_clear_all,
        "drop the decoders' prepared models (kept per call by the bytes of the weights; a changed weight never "
        "matches an entry)");
  m.def("decode_cache_stats", &cpu::decode_cache_stats_all,
        "-> (hits, misses, entries) of the decoders' prepared-model cache since the last clear");
  m.def(
      "_helper_stall_ns",
      [](int64_t ns, bool resume) {
        const int64_t old = parallel::stall_ns().exchange(ns);
        if (resume) parallel::split_paused_until().store(0);
        return old;
      },
      py::arg("ns"), py::arg("resume") = true,
      "tests: set the wait (ns) after which a spinning helper counts as having lost its core (0: every wait), "
      "return the old value; resume=True also ends a pause of the one-stream split");
  m.def("decode_uniform", &cpu::decode_uniform, py::arg("seed"), py::arg("n"), py::arg("t"),
        "the decoder's uniform draw in [0, 1) for sequence n at step t");
}
