// pybind11 bindings of the LSTM-with-projections CPU kernel (csrc/cpu/lstm_proj_cpu.cpp), registered into
// rnnfast._C by register_lstm_proj(): shape/dtype validation naming each argument (H the cell width, P the
// projection width), allocation, GIL release. Not a public API: rnnfast._lstm_proj calls it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bindings/validate.h"
#include "cpu/lstm_proj_cpu.h"

namespace py = pybind11;
using namespace rnnfast;
using namespace rnnfast::bind;

namespace {

struct Dims {
  int64_t T, N, D, H, P;
};

Dims dims_of(const py::array& x, const py::handle& W_hh, const py::handle& W_hr) {
  if (!py::isinstance<py::array>(W_hh) || py::reinterpret_borrow<py::array>(W_hh).ndim() != 2)
    throw py::type_error("W_hh must be a 2-D numpy array of shape (4H, P)");
  if (!py::isinstance<py::array>(W_hr) || py::reinterpret_borrow<py::array>(W_hr).ndim() != 2)
    throw py::type_error("W_hr must be a 2-D numpy array of shape (P, H)");
  py::array hr = py::reinterpret_borrow<py::array>(W_hr);
  Dims d{x.shape(0), x.shape(1), x.shape(2), hr.shape(1), hr.shape(0)};
  if (d.H < 1 || d.P < 1)
    throw py::value_error("W_hr must have shape (P, H) with P >= 1 and H >= 1, got " + got_shape(hr));
  check_fits_blas("D", d.D);
  check_fits_blas("4H", 4 * d.H);
  check_fits_blas("T*N", d.T * d.N);
  return d;
}

py::object take_lengths(const py::object& lengths, int64_t N, int64_t T) {
  if (lengths.is_none()) return py::none();
  py::array a = take("lengths", lengths, py::dtype::of<int64_t>(), {{"N", N}});
  const int64_t* l = static_cast<const int64_t*>(a.data());
  for (int64_t n = 0; n < N; ++n)
    if (l[n] < 0 || l[n] > T)
      throw py::value_error("lengths[" + std::to_string(n) + "] = " + std::to_string(l[n]) +
                            " is outside [0, T] = [0, " + std::to_string(T) + "]");
  return a;
}

template <typename T>
py::tuple forward_impl(py::array x, const py::object& h0_, const py::object& c0_, const py::object& W_ih_,
                       const py::object& W_hh_, const py::object& b_ih_, const py::object& b_hh_,
                       const py::object& W_hr_, const py::object& lengths_, bool reverse, bool need_cache) {
  const py::dtype dt = x.dtype();
  const Dims d = dims_of(x, W_hh_, W_hr_);
  const int64_t G = 4 * d.H;
  py::array h0 = take("h0", h0_, dt, {{"N", d.N}, {"P", d.P}});
  py::array c0 = take("c0", c0_, dt, {{"N", d.N}, {"H", d.H}});
  py::array W_ih = take("W_ih", W_ih_, dt, {{"4H", G}, {"D", d.D}});
  py::array W_hh = take("W_hh", W_hh_, dt, {{"4H", G}, {"P", d.P}});
  py::array W_hr = take("W_hr", W_hr_, dt, {{"P", d.P}, {"H", d.H}});
  if (b_ih_.is_none() != b_hh_.is_none()) throw py::value_error("b_ih and b_hh must both be given or both be None");
  py::object b_ih = py::none(), b_hh = py::none();
  if (!b_ih_.is_none()) {
    b_ih = take("b_ih", b_ih_, dt, {{"4H", G}});
    b_hh = take("b_hh", b_hh_, dt, {{"4H", G}});
  }
  py::object lengths = take_lengths(lengths_, d.N, d.T);
  x = take("x", x, dt, {{"T", d.T}, {"N", d.N}, {"D", d.D}});
  py::array_t<T> out({d.T, d.N, d.P}), h_n({d.N, d.P}), c_n({d.N, d.H});
  py::object gates = py::none(), cs = py::none(), ms = py::none(), hs = py::none();
  if (need_cache) {
    gates = py::array_t<T>({d.T, d.N, G});
    cs = py::array_t<T>({d.T, d.N, d.H});
    ms = py::array_t<T>({d.T, d.N, d.H});
    hs = py::array_t<T>({d.T, d.N, d.P});
  }
  cpu::LstmProjParams<T> p;
  p.T_ = d.T;
  p.N = d.N;
  p.D = d.D;
  p.H = d.H;
  p.P = d.P;
  p.reverse = reverse;
  p.lengths = lengths.is_none() ? nullptr : static_cast<const int64_t*>(lengths.cast<py::array>().data());
  p.x = static_cast<const T*>(x.data());
  p.h0 = static_cast<const T*>(h0.data());
  p.c0 = static_cast<const T*>(c0.data());
  p.W_ih = static_cast<const T*>(W_ih.data());
  p.W_hh = static_cast<const T*>(W_hh.data());
  p.W_hr = static_cast<const T*>(W_hr.data());
  p.b_ih = ptr<T>(b_ih);
  p.b_hh = ptr<T>(b_hh);
  p.out = out.mutable_data();
  p.h_n = h_n.mutable_data();
  p.c_n = c_n.mutable_data();
  p.gates = const_cast<T*>(ptr<T>(gates));
  p.cs = const_cast<T*>(ptr<T>(cs));
  p.ms = const_cast<T*>(ptr<T>(ms));
  p.hs = const_cast<T*>(ptr<T>(hs));
  {
    py::gil_scoped_release nogil;
    cpu::lstm_proj_forward<T>(p);
  }
  py::object cache = need_cache ? py::object(py::make_tuple(gates, cs, ms, hs)) : py::object(py::none());
  return py::make_tuple(out, h_n, c_n, cache);
}

template <typename T>
py::tuple backward_impl(const py::object& dout_, const py::object& dh_n_, const py::object& dc_n_, py::array x,
                        const py::object& h0_, const py::object& c0_, const py::object& gates_, const py::object& cs_,
                        const py::object& ms_, const py::object& hs_, const py::object& W_ih_, const py::object& W_hh_,
                        const py::object& W_hr_, const py::object& lengths_, bool reverse, const py::object& dW_ih_,
                        const py::object& dW_hh_, const py::object& db_ih_, const py::object& db_hh_,
                        const py::object& dW_hr_) {
  const py::dtype dt = x.dtype();
  const Dims d = dims_of(x, W_hh_, W_hr_);
  const int64_t G = 4 * d.H;
  x = take("x", x, dt, {{"T", d.T}, {"N", d.N}, {"D", d.D}});
  py::array h0 = take("h0", h0_, dt, {{"N", d.N}, {"P", d.P}});
  py::array c0 = take("c0", c0_, dt, {{"N", d.N}, {"H", d.H}});
  py::array gates = take("cache gates", gates_, dt, {{"T", d.T}, {"N", d.N}, {"4H", G}});
  py::array cs = take("cache cs", cs_, dt, {{"T", d.T}, {"N", d.N}, {"H", d.H}});
  py::array ms = take("cache ms", ms_, dt, {{"T", d.T}, {"N", d.N}, {"H", d.H}});
  py::array hs = take("cache hs", hs_, dt, {{"T", d.T}, {"N", d.N}, {"P", d.P}});
  py::array W_ih = take("W_ih", W_ih_, dt, {{"4H", G}, {"D", d.D}});
  py::array W_hh = take("W_hh", W_hh_, dt, {{"4H", G}, {"P", d.P}});
  py::array W_hr = take("W_hr", W_hr_, dt, {{"P", d.P}, {"H", d.H}});
  py::object dout = py::none(), dh_n = py::none(), dc_n = py::none();
  if (!dout_.is_none()) dout = take("dout", dout_, dt, {{"T", d.T}, {"N", d.N}, {"P", d.P}});
  if (!dh_n_.is_none()) dh_n = take("dh_n", dh_n_, dt, {{"N", d.N}, {"P", d.P}});
  if (!dc_n_.is_none()) dc_n = take("dc_n", dc_n_, dt, {{"N", d.N}, {"H", d.H}});
  py::object lengths = take_lengths(lengths_, d.N, d.T);
  py::array dW_ih = take_grad("dW_ih", dW_ih_, dt, {{"4H", G}, {"D", d.D}});
  py::array dW_hh = take_grad("dW_hh", dW_hh_, dt, {{"4H", G}, {"P", d.P}});
  py::array dW_hr = take_grad("dW_hr", dW_hr_, dt, {{"P", d.P}, {"H", d.H}});
  if (db_ih_.is_none() != db_hh_.is_none()) throw py::value_error("db_ih and db_hh must both be given or both be None");
  py::object db_ih = py::none(), db_hh = py::none();
  if (!db_ih_.is_none()) {
    db_ih = take_grad("db_ih", db_ih_, dt, {{"4H", G}});
    db_hh = take_grad("db_hh", db_hh_, dt, {{"4H", G}});
  }
  py::array_t<T> dx({d.T, d.N, d.D}), dh0({d.N, d.P}), dc0({d.N, d.H});
  cpu::LstmProjParams<T> p;
  p.T_ = d.T;
  p.N = d.N;
  p.D = d.D;
  p.H = d.H;
  p.P = d.P;
  p.reverse = reverse;
  p.lengths = lengths.is_none() ? nullptr : static_cast<const int64_t*>(lengths.cast<py::array>().data());
  p.x = static_cast<const T*>(x.data());
  p.h0 = static_cast<const T*>(h0.data());
  p.c0 = static_cast<const T*>(c0.data());
  p.W_ih = static_cast<const T*>(W_ih.data());
  p.W_hh = static_cast<const T*>(W_hh.data());
  p.W_hr = static_cast<const T*>(W_hr.data());
  p.gates = const_cast<T*>(static_cast<const T*>(gates.data()));
  p.cs = const_cast<T*>(static_cast<const T*>(cs.data()));
  p.ms = const_cast<T*>(static_cast<const T*>(ms.data()));
  p.hs = const_cast<T*>(static_cast<const T*>(hs.data()));
  p.dout = ptr<T>(dout);
  p.dh_n = ptr<T>(dh_n);
  p.dc_n = ptr<T>(dc_n);
  p.dx = dx.mutable_data();
  p.dh0 = dh0.mutable_data();
  p.dc0 = dc0.mutable_data();
  p.dW_ih = static_cast<T*>(dW_ih.mutable_data());
  p.dW_hh = static_cast<T*>(dW_hh.mutable_data());
  p.dW_hr = static_cast<T*>(dW_hr.mutable_data());
  p.db_ih = const_cast<T*>(ptr<T>(db_ih));
  p.db_hh = const_cast<T*>(ptr<T>(db_hh));
  {
    py::gil_scoped_release nogil;
    cpu::lstm_proj_backward<T>(p);
  }
  return py::make_tuple(dx, dh0, dc0);
}

}  // namespace

void register_lstm_proj(py::module_& m) {
  m.def(
      "lstm_proj_forward",
      [](const py::object& x_, const py::object& h0, const py::object& c0, const py::object& W_ih,
         const py::object& W_hh, const py::object& b_ih, const py::object& b_hh, const py::object& W_hr,
         const py::object& lengths, bool reverse, bool need_cache) {
        py::array x = take_x(x_);
        if (x.itemsize() == 4)
          return forward_impl<float>(x, h0, c0, W_ih, W_hh, b_ih, b_hh, W_hr, lengths, reverse, need_cache);
        return forward_impl<double>(x, h0, c0, W_ih, W_hh, b_ih, b_hh, W_hr, lengths, reverse, need_cache);
      },
      py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("W_ih"), py::arg("W_hh"), py::arg("b_ih"), py::arg("b_hh"),
      py::arg("W_hr"), py::arg("lengths"), py::arg("reverse"), py::arg("need_cache"),
      "one layer and direction -> (out (T,N,P), h_n (N,P), c_n (N,H), (gates, cs, ms, hs) or None)");
  m.def(
      "lstm_proj_backward",
      [](const py::object& dout, const py::object& dh_n, const py::object& dc_n, const py::object& x_,
         const py::object& h0, const py::object& c0, const py::object& gates, const py::object& cs,
         const py::object& ms, const py::object& hs, const py::object& W_ih, const py::object& W_hh,
         const py::object& W_hr, const py::object& lengths, bool reverse, const py::object& dW_ih,
         const py::object& dW_hh, const py::object& db_ih, const py::object& db_hh, const py::object& dW_hr) {
        py::array x = take_x(x_);
        if (x.itemsize() == 4)
          return backward_impl<float>(dout, dh_n, dc_n, x, h0, c0, gates, cs, ms, hs, W_ih, W_hh, W_hr, lengths,
                                      reverse, dW_ih, dW_hh, db_ih, db_hh, dW_hr);
        return backward_impl<double>(dout, dh_n, dc_n, x, h0, c0, gates, cs, ms, hs, W_ih, W_hh, W_hr, lengths, reverse,
                                     dW_ih, dW_hh, db_ih, db_hh, dW_hr);
      },
      py::arg("dout"), py::arg("dh_n"), py::arg("dc_n"), py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("gates"),
      py::arg("cs"), py::arg("ms"), py::arg("hs"), py::arg("W_ih"), py::arg("W_hh"), py::arg("W_hr"),
      py::arg("lengths"), py::arg("reverse"), py::arg("dW_ih"), py::arg("dW_hh"), py::arg("db_ih"), py::arg("db_hh"),
      py::arg("dW_hr"), "-> (dx (T,N,D), dh0 (N,P), dc0 (N,H)); parameter gradients accumulate (+=)");
}
