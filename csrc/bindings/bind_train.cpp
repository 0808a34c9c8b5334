// pybind11 bindings of the training-step ops (csrc/cpu/train_ops.h), registered into rnnfast._C by
// register_train(): argument validation (messages name the argument and its expected shape in the letters
// M = T*N rows, K hidden width, V classes), float32/float64 dispatch, GIL release. Not a public API:
// rnnfast.nn / rnnfast.train call it. A call that raises has changed nothing.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bindings/validate.h"
#include "cpu/blas.h"
#include "cpu/train_ops.h"

namespace py = pybind11;
using namespace rnnfast;

namespace {

std::string dstr(const py::dtype& d) { return py::str(d).cast<std::string>(); }

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

bool is_f32(const py::array& a) { return a.dtype().equal(py::dtype::of<float>()); }
bool is_f64(const py::array& a) { return a.dtype().equal(py::dtype::of<double>()); }

py::array as_array(const std::string& name, const py::handle& o) {
  if (!py::isinstance<py::array>(o))
    throw py::type_error(name + " must be a numpy array, got " +
                         py::str(py::type::of(o).attr("__name__")).cast<std::string>());
  return py::reinterpret_borrow<py::array>(o);
}

// A float32/float64 array; `dt` (when given) is the dtype it must have.
py::array float_array(const std::string& name, const py::handle& o, const py::dtype* dt = nullptr) {
  py::array a = as_array(name, o);
  if (dt) {
    if (!a.dtype().equal(*dt))
      throw py::type_error(name + " must have dtype " + dstr(*dt) + ", got " + dstr(a.dtype()));
  } else if (!is_f32(a) && !is_f64(a)) {
    throw py::type_error(name + " must have dtype float32 or float64, got " + dstr(a.dtype()));
  }
  return a;
}

// An array written in place: C-contiguous and writable (a copy would drop the result).
py::array out_array(const std::string& name, const py::handle& o, const py::dtype* dt = nullptr) {
  py::array a = float_array(name, o, dt);
  if (!(a.flags() & py::array::c_style)) throw py::value_error(name + " must be C-contiguous (it is updated in place)");
  if (!a.writeable()) throw py::value_error(name + " must be writable (it is updated in place)");
  return a;
}

py::array contiguous(py::array a) {
  return (a.flags() & py::array::c_style) ? a : py::array::ensure(a, py::array::c_style);
}

void check_shape(const std::string& name, const py::array& a, const std::vector<int64_t>& want,
                 const std::string& letters) {
  bool ok = a.ndim() == py::ssize_t(want.size());
  for (size_t i = 0; ok && i < want.size(); ++i) ok = a.shape(py::ssize_t(i)) == want[i];
  if (!ok) {
    std::string w = "(";
    for (size_t i = 0; i < want.size(); ++i) w += (i ? ", " : "") + std::to_string(want[i]);
    w += want.size() == 1 ? ",)" : ")";
    throw py::value_error(name + " must have shape " + letters + " = " + w + ", got " + shape_of(a));
  }
}

// Integer ids as a contiguous int64 array (any integer dtype accepted).
py::array_t<int64_t> int_ids(const std::string& name, const py::handle& o) {
  py::array a = as_array(name, o);
  const char k = a.dtype().kind();
  if (k != 'i' && k != 'u')
    throw py::type_error(name + " must be an integer array of ids, got dtype " + dstr(a.dtype()));
  return py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
}

void check_ids_in(const std::string& name, const py::array_t<int64_t>& ids, int64_t R) {
  const int64_t* d = ids.data();
  for (int64_t i = 0, n = ids.size(); i < n; ++i)
    if (d[i] < 0 || d[i] >= R)
      throw py::value_error(name + " holds id " + std::to_string(d[i]) + " at flat position " + std::to_string(i) +
                            ", outside [0, " + std::to_string(R) + ")");
}

template <typename T>
py::tuple xent_impl(py::array h, py::array W, py::object b, py::array_t<int64_t> tg, py::object mask, py::object ignore,
                    bool mean, int64_t nseq, py::object dW, py::object db, bool need_dh) {
  const int64_t M = h.shape(0), K = h.shape(1), V = W.shape(0);
  train::XentParams<T> p;
  p.M = M;
  p.K = K;
  p.V = V;
  p.mean = mean;
  p.nseq = nseq;
  py::array hc = contiguous(h), Wc = contiguous(W), bc;
  p.h = static_cast<const T*>(hc.data());
  p.W = static_cast<const T*>(Wc.data());
  if (!b.is_none()) {
    bc = contiguous(b.cast<py::array>());
    p.b = static_cast<const T*>(bc.data());
  }
  p.targets = tg.data();
  py::array_t<T> wts;
  if (!mask.is_none()) {
    wts = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(mask);
    if (!wts) throw py::type_error("mask must be a numeric array of shape (M,)");
    const T* w = wts.data();
    for (int64_t r = 0; r < M; ++r)
      if (!(std::isfinite(double(w[r])) && w[r] >= T(0)))
        throw py::value_error("mask must hold finite, non-negative weights (True/1 = counts, False/0 = ignored)");
    p.weight = w;
  }
  if (!ignore.is_none()) {
    p.has_ignore = true;
    p.ignore_index = ignore.cast<int64_t>();
  }
  for (int64_t r = 0; r < M; ++r) {      // every counted target must name a class
    const int64_t t = p.targets[r];
    const bool counted = !(p.has_ignore && t == p.ignore_index) && (!p.weight || p.weight[r] != T(0));
    if (counted && (t < 0 || t >= V))
      throw py::value_error("targets[" + std::to_string(r) + "] = " + std::to_string(t) +
                            " (flat position) is outside the classes [0, V) = [0, " + std::to_string(V) + ")");
  }
  py::array_t<T> logits = bind::pooled<T>({M, V});
  p.logits = logits.mutable_data();
  if (!dW.is_none()) p.dW = static_cast<T*>(dW.cast<py::array>().mutable_data());
  if (!db.is_none()) p.db = static_cast<T*>(db.cast<py::array>().mutable_data());
  py::object dh = py::none();
  if (need_dh) {
    py::array_t<T> a = bind::pooled<T>({M, K});
    p.dh = a.mutable_data();
    dh = a;
  }
  double loss;
  {
    py::gil_scoped_release nogil;
    loss = train::linear_xent<T>(p);
  }
  return py::make_tuple(loss, dh);
}

py::tuple linear_xent(py::object h_o, py::object W_o, py::object b_o, py::object t_o, py::object mask,
                      py::object ignore, const std::string& reduction, int64_t nseq, py::object dW_o, py::object db_o,
                      bool need_dh) {
  if (reduction != "sum" && reduction != "mean")
    throw py::value_error("reduction must be 'sum' or 'mean', got '" + reduction + "'");
  py::array h = float_array("h", h_o);
  if (h.ndim() != 2) throw py::value_error("h must have shape (M, K) (hidden rows), got " + shape_of(h));
  const py::dtype dt = h.dtype();
  const int64_t M = h.shape(0), K = h.shape(1);
  py::array W = float_array("weight", W_o, &dt);
  if (W.ndim() != 2 || W.shape(1) != K)
    throw py::value_error("weight must have shape (V, K) with K = " + std::to_string(K) + ", got " + shape_of(W));
  const int64_t V = W.shape(0);
  if (V < 1) throw py::value_error("weight must have V >= 1 rows (classes), got " + shape_of(W));
  if (!b_o.is_none()) check_shape("bias", float_array("bias", b_o, &dt), {V}, "(V,)");
  py::array_t<int64_t> tg = int_ids("targets", t_o);
  check_shape("targets", tg, {M}, "(M,)");
  if (!mask.is_none()) check_shape("mask", as_array("mask", mask), {M}, "(M,)");
  if (nseq < 1) throw py::value_error("nseq (N, the 'sum' divisor) must be >= 1, got " + std::to_string(nseq));
  if (!dW_o.is_none()) check_shape("dweight", out_array("dweight", dW_o, &dt), {V, K}, "(V, K)");
  if (!db_o.is_none()) check_shape("dbias", out_array("dbias", db_o, &dt), {V}, "(V,)");
  if (is_f32(h)) return xent_impl<float>(h, W, b_o, tg, mask, ignore, reduction == "mean", nseq, dW_o, db_o, need_dh);
  return xent_impl<double>(h, W, b_o, tg, mask, ignore, reduction == "mean", nseq, dW_o, db_o, need_dh);
}

py::array gather_rows(py::object table_o, py::object ids_o) {
  py::array table = contiguous(float_array("table", table_o));
  if (table.ndim() != 2) throw py::value_error("table must have shape (R, K), got " + shape_of(table));
  auto ids = int_ids("ids", ids_o);
  check_ids_in("ids", ids, table.shape(0));
  std::vector<py::ssize_t> shape(ids.shape(), ids.shape() + ids.ndim());
  shape.push_back(table.shape(1));
  py::array out = bind::pooled(table.dtype(), shape);
  const int64_t K = table.shape(1), M = ids.size();
  const bool f32 = is_f32(table);
  py::gil_scoped_release nogil;
  if (f32)
    train::gather_rows<float>(static_cast<const float*>(table.data()), K, ids.data(), M,
                              static_cast<float*>(out.mutable_data()));
  else
    train::gather_rows<double>(static_cast<const double*>(table.data()), K, ids.data(), M,
                               static_cast<double*>(out.mutable_data()));
  return out;
}

void scatter_add_rows(py::object table_o, py::object ids_o, py::object rows_o) {
  py::array table = out_array("table", table_o);
  if (table.ndim() != 2) throw py::value_error("table must have shape (R, K), got " + shape_of(table));
  const py::dtype dt = table.dtype();
  auto ids = int_ids("ids", ids_o);
  const int64_t K = table.shape(1), M = ids.size();
  py::array rows = contiguous(float_array("rows", rows_o, &dt));
  if (rows.size() != M * K)
    throw py::value_error("rows must hold (M, K) = (" + std::to_string(M) + ", " + std::to_string(K) +
                          ") values (one row per id), got shape " + shape_of(rows));
  check_ids_in("ids", ids, table.shape(0));
  const bool f32 = is_f32(table);
  py::gil_scoped_release nogil;
  if (f32)
    train::scatter_add_rows<float>(static_cast<float*>(table.mutable_data()), K, ids.data(), M,
                                   static_cast<const float*>(rows.data()));
  else
    train::scatter_add_rows<double>(static_cast<double*>(table.mutable_data()), K, ids.data(), M,
                                    static_cast<const double*>(rows.data()));
}

py::array one_hot(py::object ids_o, int64_t V, py::object dtype) {
  auto ids = int_ids("ids", ids_o);
  if (V < 1) throw py::value_error("V must be >= 1, got " + std::to_string(V));
  check_ids_in("ids", ids, V);
  const py::dtype dt = py::dtype::from_args(dtype);
  std::vector<py::ssize_t> shape(ids.shape(), ids.shape() + ids.ndim());
  shape.push_back(V);
  if (dt.kind() != 'f' || (dt.itemsize() != 4 && dt.itemsize() != 8))
    throw py::type_error("dtype must be float32 or float64, got " + dstr(dt));
  py::array out = bind::pooled(dt, shape);
  const int64_t M = ids.size();
  const bool f32 = dt.itemsize() == 4;
  py::gil_scoped_release nogil;
  if (f32) train::one_hot<float>(ids.data(), M, V, static_cast<float*>(out.mutable_data()));
  else train::one_hot<double>(ids.data(), M, V, static_cast<double*>(out.mutable_data()));
  return out;
}

// ---- optimizers: every buffer C-contiguous, writable where updated, same dtype and size as p ----
struct Bufs {
  std::vector<py::array> a;
  int64_t n = 0;
  bool f32 = true;
};

Bufs take_bufs(const std::vector<std::pair<std::string, py::object>>& items, const std::vector<bool>& write) {
  Bufs b;
  py::array p = out_array(items[0].first, items[0].second);
  const py::dtype dt = p.dtype();
  b.n = p.size();
  b.f32 = is_f32(p);
  b.a.push_back(p);
  for (size_t i = 1; i < items.size(); ++i) {
    py::array x =
        write[i] ? out_array(items[i].first, items[i].second, &dt) : float_array(items[i].first, items[i].second, &dt);
    if (!write[i] && !(x.flags() & py::array::c_style)) throw py::value_error(items[i].first + " must be C-contiguous");
    if (x.size() != b.n)
      throw py::value_error(items[i].first + " must hold as many values as " + items[0].first + " (" +
                            std::to_string(b.n) + "), got shape " + shape_of(x));
    b.a.push_back(x);
  }
  return b;
}

template <typename T>
T* ptr(const py::array& a) {
  return static_cast<T*>(const_cast<void*>(a.data()));
}

void check_finite(const std::string& name, double v, bool positive = false) {
  if (!std::isfinite(v) || v < 0 || (positive && v == 0))
    throw py::value_error(name + " must be a finite number " + (positive ? "> 0" : ">= 0") + ", got " +
                          std::to_string(v));
}

void sgd(py::object p, py::object g, py::object buf, double lr, double momentum, double wd, bool first) {
  check_finite("lr", lr);
  check_finite("momentum", momentum);
  check_finite("weight_decay", wd);
  if (momentum != 0 && buf.is_none()) throw py::value_error("momentum needs a buffer");
  std::vector<std::pair<std::string, py::object>> it = {{"param", p}, {"grad", g}};
  if (!buf.is_none()) it.push_back({"momentum_buffer", buf});
  Bufs b = take_bufs(it, {true, false, true});
  py::gil_scoped_release nogil;
  if (b.f32)
    train::sgd<float>(ptr<float>(b.a[0]), ptr<float>(b.a[1]), momentum ? ptr<float>(b.a[2]) : nullptr, b.n, lr,
                      momentum, wd, first);
  else
    train::sgd<double>(ptr<double>(b.a[0]), ptr<double>(b.a[1]), momentum ? ptr<double>(b.a[2]) : nullptr, b.n, lr,
                       momentum, wd, first);
}

void adagrad(py::object p, py::object g, py::object s, double lr, double eps) {
  check_finite("lr", lr);
  check_finite("eps", eps);
  Bufs b = take_bufs({{"param", p}, {"grad", g}, {"sum", s}}, {true, false, true});
  py::gil_scoped_release nogil;
  if (b.f32) train::adagrad<float>(ptr<float>(b.a[0]), ptr<float>(b.a[1]), ptr<float>(b.a[2]), b.n, lr, eps);
  else train::adagrad<double>(ptr<double>(b.a[0]), ptr<double>(b.a[1]), ptr<double>(b.a[2]), b.n, lr, eps);
}

void rmsprop(py::object p, py::object g, py::object s, double lr, double alpha, double eps) {
  check_finite("lr", lr);
  check_finite("alpha", alpha);
  check_finite("eps", eps);
  Bufs b = take_bufs({{"param", p}, {"grad", g}, {"square_avg", s}}, {true, false, true});
  py::gil_scoped_release nogil;
  if (b.f32) train::rmsprop<float>(ptr<float>(b.a[0]), ptr<float>(b.a[1]), ptr<float>(b.a[2]), b.n, lr, alpha, eps);
  else train::rmsprop<double>(ptr<double>(b.a[0]), ptr<double>(b.a[1]), ptr<double>(b.a[2]), b.n, lr, alpha, eps);
}

void adam(py::object p, py::object g, py::object m, py::object v, double lr, double b1, double b2, double eps,
          int64_t t) {
  check_finite("lr", lr);
  check_finite("beta1", b1);
  check_finite("beta2", b2);
  check_finite("eps", eps);
  if (t < 1) throw py::value_error("t (the step count) must be >= 1, got " + std::to_string(t));
  Bufs b = take_bufs({{"param", p}, {"grad", g}, {"exp_avg", m}, {"exp_avg_sq", v}}, {true, false, true, true});
  py::gil_scoped_release nogil;
  if (b.f32)
    train::adam<float>(ptr<float>(b.a[0]), ptr<float>(b.a[1]), ptr<float>(b.a[2]), ptr<float>(b.a[3]), b.n, lr, b1, b2,
                       eps, t);
  else
    train::adam<double>(ptr<double>(b.a[0]), ptr<double>(b.a[1]), ptr<double>(b.a[2]), ptr<double>(b.a[3]), b.n, lr, b1,
                        b2, eps, t);
}

void clip_value(py::object g_o, double c) {
  check_finite("clip", c, true);
  py::array g = out_array("grad", g_o);
  const int64_t n = g.size();
  const bool f32 = is_f32(g);
  py::gil_scoped_release nogil;
  if (f32) train::clip_value<float>(ptr<float>(g), n, c);
  else train::clip_value<double>(ptr<double>(g), n, c);
}

double l2_norm(py::object g_o) {
  py::array g = contiguous(float_array("grad", g_o));
  const int64_t n = g.size();
  const bool f32 = is_f32(g);
  py::gil_scoped_release nogil;
  return f32 ? train::l2_norm<float>(ptr<float>(g), n) : train::l2_norm<double>(ptr<double>(g), n);
}

void scale(py::object g_o, double s) {
  py::array g = out_array("grad", g_o);
  const int64_t n = g.size();
  const bool f32 = is_f32(g);
  py::gil_scoped_release nogil;
  if (f32) train::scale<float>(ptr<float>(g), n, s);
  else train::scale<double>(ptr<double>(g), n, s);
}

bool all_finite(py::object g_o) {
  py::array g = contiguous(float_array("grad", g_o));
  const int64_t n = g.size();
  const bool f32 = is_f32(g);
  py::gil_scoped_release nogil;
  return f32 ? train::all_finite<float>(ptr<float>(g), n) : train::all_finite<double>(ptr<double>(g), n);
}

// out (M, N) = op(a) op(b) + beta out on rnnfast's BLAS; op(a) = a^T when ta (a is (K, M)), likewise b.
void gemm(py::object a_o, py::object b_o, py::object out_o, bool ta, bool tb, double beta) {
  py::array out = out_array("out", out_o);
  const py::dtype dt = out.dtype();
  py::array a = contiguous(float_array("a", a_o, &dt)), b = contiguous(float_array("b", b_o, &dt));
  if (a.ndim() != 2 || b.ndim() != 2 || out.ndim() != 2)
    throw py::value_error("a, b and out must be 2-D, got " + shape_of(a) + ", " + shape_of(b) + ", " + shape_of(out));
  const int64_t M = ta ? a.shape(1) : a.shape(0), K = ta ? a.shape(0) : a.shape(1);
  const int64_t Kb = tb ? b.shape(1) : b.shape(0), N = tb ? b.shape(0) : b.shape(1);
  if (Kb != K || out.shape(0) != M || out.shape(1) != N)
    throw py::value_error("gemm shapes do not agree: op(a) (M, K) = (" + std::to_string(M) + ", " + std::to_string(K) +
                          "), op(b) (K, N) = (" + std::to_string(Kb) + ", " + std::to_string(N) + "), out " +
                          shape_of(out));
  const int64_t lda = a.shape(1), ldb = b.shape(1);
  const bool f32 = is_f32(out);
  py::gil_scoped_release nogil;
  if (f32)
    blas::gemm<float>(ta, tb, M, N, K, 1.0f, ptr<float>(a), lda, ptr<float>(b), ldb, float(beta), ptr<float>(out), N);
  else blas::gemm<double>(ta, tb, M, N, K, 1.0, ptr<double>(a), lda, ptr<double>(b), ldb, beta, ptr<double>(out), N);
}

}  // namespace

void register_train(py::module_& m) {
  m.def("gemm", &gemm, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("ta"), py::arg("tb"), py::arg("beta"),
        "out (M,N) = op(a) op(b) + beta * out on rnnfast's BLAS (op = transpose when ta / tb)");
  using py::arg;
  m.def("linear_xent", &linear_xent, arg("h"), arg("weight"), arg("bias"), arg("targets"), arg("mask"),
        arg("ignore_index"), arg("reduction"), arg("nseq"), arg("dweight"), arg("dbias"), arg("need_dh"),
        "fused head + softmax cross-entropy over rows h (M,K): -> (loss, dh (M,K) or None); dweight (V,K) and "
        "dbias (V) accumulate (+=)");
  m.def("gather_rows", &gather_rows, arg("table"), arg("ids"), "table (R,K)[ids] -> ids.shape + (K,)");
  m.def("scatter_add_rows", &scatter_add_rows, arg("table"), arg("ids"), arg("rows"),
        "table (R,K)[ids[i]] += rows[i], repeated ids summed");
  m.def("one_hot", &one_hot, arg("ids"), arg("V"), arg("dtype"), "one-hot rows: ids.shape + (V,)");
  m.def("sgd", &sgd, arg("param"), arg("grad"), arg("buf"), arg("lr"), arg("momentum"), arg("weight_decay"),
        arg("first"));
  m.def("adagrad", &adagrad, arg("param"), arg("grad"), arg("sum"), arg("lr"), arg("eps"));
  m.def("rmsprop", &rmsprop, arg("param"), arg("grad"), arg("square_avg"), arg("lr"), arg("alpha"), arg("eps"));
  m.def("adam", &adam, arg("param"), arg("grad"), arg("exp_avg"), arg("exp_avg_sq"), arg("lr"), arg("beta1"),
        arg("beta2"), arg("eps"), arg("t"));
  m.def("clip_value", &clip_value, arg("grad"), arg("clip"));
  m.def("l2_norm", &l2_norm, arg("grad"), "sqrt(sum grad^2), accumulated in float64");
  m.def("scale", &scale, arg("grad"), arg("s"));
  m.def("all_finite", &all_finite, arg("grad"));
}
