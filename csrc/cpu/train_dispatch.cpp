// Run-time choice between the two builds of train_ops.cpp (x86-64-v3 when the CPU has AVX2 + FMA, else
// generic), as dispatch.cpp does for the recurrent kernels. Not a kernel: it only forwards.
#include "cpu/rnn_cpu.h"
#include "cpu/train_ops.h"

namespace rnnfast {
namespace train {

#define RNNFAST_TRAIN_DECLARE(NS)                                                                          \
  namespace NS {                                                                                           \
  template <typename T> double linear_xent(const XentParams<T>&);                                          \
  template <typename T> void gather_rows(const T*, int64_t, const int64_t*, int64_t, T*);                  \
  template <typename T> void scatter_add_rows(T*, int64_t, const int64_t*, int64_t, const T*);             \
  template <typename T> void one_hot(const int64_t*, int64_t, int64_t, T*);                                \
  template <typename T> void sgd(T*, const T*, T*, int64_t, double, double, double, bool);                 \
  template <typename T> void adagrad(T*, const T*, T*, int64_t, double, double);                           \
  template <typename T> void rmsprop(T*, const T*, T*, int64_t, double, double, double);                   \
  template <typename T> void adam(T*, const T*, T*, T*, int64_t, double, double, double, double, int64_t); \
  template <typename T> void clip_value(T*, int64_t, double);                                              \
  template <typename T> double l2_norm(const T*, int64_t);                                                 \
  template <typename T> void scale(T*, int64_t, double);                                                   \
  template <typename T> bool all_finite(const T*, int64_t);                                                \
  }
RNNFAST_TRAIN_DECLARE(generic)
#ifdef RNNFAST_HAVE_X86_ISAS
RNNFAST_TRAIN_DECLARE(avx2)
RNNFAST_TRAIN_DECLARE(avx512)
#endif
#undef RNNFAST_TRAIN_DECLARE

// The ISA build chosen by cpu/dispatch.cpp (RNNFAST_ISA, else the best the CPU runs), as for every kernel.
#ifdef RNNFAST_HAVE_X86_ISAS
#define RNNFAST_FORWARD(call)   \
  switch (cpu::current_isa()) { \
    case cpu::Isa::Avx512:      \
      return avx512::call;      \
    case cpu::Isa::Avx2:        \
      return avx2::call;        \
    default:                    \
      return generic::call;     \
  }
#else
#define RNNFAST_FORWARD(call) return generic::call
#endif

template <typename T>
double linear_xent(const XentParams<T>& p) {
  RNNFAST_FORWARD(linear_xent<T>(p));
}
template <typename T>
void gather_rows(const T* a, int64_t K, const int64_t* ids, int64_t M, T* out) {
  RNNFAST_FORWARD(gather_rows<T>(a, K, ids, M, out));
}
template <typename T>
void scatter_add_rows(T* a, int64_t K, const int64_t* ids, int64_t M, const T* rows) {
  RNNFAST_FORWARD(scatter_add_rows<T>(a, K, ids, M, rows));
}
template <typename T>
void one_hot(const int64_t* ids, int64_t M, int64_t V, T* x) {
  RNNFAST_FORWARD(one_hot<T>(ids, M, V, x));
}
template <typename T>
void sgd(T* p, const T* g, T* b, int64_t n, double lr, double mom, double wd, bool first) {
  RNNFAST_FORWARD(sgd<T>(p, g, b, n, lr, mom, wd, first));
}
template <typename T>
void adagrad(T* p, const T* g, T* s, int64_t n, double lr, double eps) {
  RNNFAST_FORWARD(adagrad<T>(p, g, s, n, lr, eps));
}
template <typename T>
void rmsprop(T* p, const T* g, T* s, int64_t n, double lr, double alpha, double eps) {
  RNNFAST_FORWARD(rmsprop<T>(p, g, s, n, lr, alpha, eps));
}
template <typename T>
void adam(T* p, const T* g, T* m, T* v, int64_t n, double lr, double b1, double b2, double eps, int64_t t) {
  RNNFAST_FORWARD(adam<T>(p, g, m, v, n, lr, b1, b2, eps, t));
}
template <typename T>
void clip_value(T* g, int64_t n, double c) {
  RNNFAST_FORWARD(clip_value<T>(g, n, c));
}
template <typename T>
double l2_norm(const T* g, int64_t n) {
  RNNFAST_FORWARD(l2_norm<T>(g, n));
}
template <typename T>
void scale(T* g, int64_t n, double s) {
  RNNFAST_FORWARD(scale<T>(g, n, s));
}
template <typename T>
bool all_finite(const T* g, int64_t n) {
  RNNFAST_FORWARD(all_finite<T>(g, n));
}
#undef RNNFAST_FORWARD

RNNFAST_TRAIN_INSTANTIATE(float)
RNNFAST_TRAIN_INSTANTIATE(double)

}  // namespace train
}  // namespace rnnfast
