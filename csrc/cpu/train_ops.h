// The native pieces of a training step besides the recurrent layers: a fused linear head + softmax
// cross-entropy (forward and backward in one call), token-row gather / scatter-add, the optimizers (SGD,
// Adagrad, RMSprop, Adam) and gradient clipping over flat buffers. Not a place for argument checks (those
// live in csrc/bindings/bind_train.cpp) nor for the recurrent kernels (rnn_cpu.cpp, gated_cpu.cpp).
#pragma once
#include <cstdint>

namespace rnnfast {
namespace train {

// Linear head + softmax cross-entropy over M = T*N rows of hidden states.
// logits = h W^T + b; per row r with weight w_r (mask, 0 where the target is ignored):
// loss = sum_r -w_r log softmax(logits_r)[t_r] / denom, denom = nseq ("sum": per sequence) or
// max(sum_r w_r, 1) ("mean"). dlogits = w_r (softmax - onehot(t_r)) / denom, written into `logits`.
template <typename T>
struct XentParams {
  int64_t M = 0, K = 0, V = 0;     // rows, hidden width, classes
  const T* h = nullptr;            // (M, K) hidden states
  const T* W = nullptr;            // (V, K) head weight
  const T* b = nullptr;            // (V) head bias, or nullptr
  const int64_t* targets = nullptr;  // (M) class ids; rows with weight 0 may hold anything
  const T* weight = nullptr;       // (M) non-negative row weights, or nullptr for all ones
  int64_t ignore_index = 0;        // targets equal to it count as weight 0 when has_ignore
  bool has_ignore = false;
  bool mean = false;               // reduction: "mean" when true, else "sum" (divide by nseq)
  int64_t nseq = 1;                // N, the divisor of the "sum" reduction
  T* logits = nullptr;             // (M, V) = scratch: logits, then dlogits on return
  T* dW = nullptr;                 // (V, K) += dlogits^T h, or nullptr
  T* db = nullptr;                 // (V) += column sums of dlogits, or nullptr
  T* dh = nullptr;                 // (M, K) = dlogits W, or nullptr
};

// Returns the loss (accumulated in double).
template <typename T>
double linear_xent(const XentParams<T>& p);

// out (M, K) = table[ids[r], :] for r < M; table (R, K). Ids are trusted (checked by the binding).
template <typename T>
void gather_rows(const T* table, int64_t K, const int64_t* ids, int64_t M, T* out);

// table (R, K) += rows (M, K) scattered by ids (M): table[ids[r]] += rows[r], in row order.
template <typename T>
void scatter_add_rows(T* table, int64_t K, const int64_t* ids, int64_t M, const T* rows);

// x (M, V) = one-hot rows of ids (M): zeros with x[r, ids[r]] = 1.
template <typename T>
void one_hot(const int64_t* ids, int64_t M, int64_t V, T* x);

// ---- optimizers over flat buffers of n elements: p (n) +=, g (n) read, state buffers (n) updated ----
// The arithmetic is NumPy's, operation for operation and rounding for rounding (scalars rounded to T
// first, no fused multiply-add), so the native update equals rnnfast.train's NumPy update bit for bit.

// g' = g + wd p; momentum: buf = first ? g' : buf * mom + g'; p -= lr * (momentum ? buf : g').
template <typename T>
void sgd(T* p, const T* g, T* buf, int64_t n, double lr, double momentum, double wd, bool first);
// s += g*g; p -= (lr g) / (sqrt(s) + eps)
template <typename T>
void adagrad(T* p, const T* g, T* s, int64_t n, double lr, double eps);
// s = s*alpha + ((1-alpha) g) g; p -= (lr g) / (sqrt(s) + eps)
template <typename T>
void rmsprop(T* p, const T* g, T* s, int64_t n, double lr, double alpha, double eps);
// m = m*b1 + (1-b1) g; v = v*b2 + ((1-b2) g) g; p -= ((lr/c1) m) / (sqrt(v / c2) + eps), c_i = 1 - b_i^t
template <typename T>
void adam(T* p, const T* g, T* m, T* v, int64_t n, double lr, double b1, double b2, double eps, int64_t t);

// ---- clipping ----
// g (n) clamped to [-c, c] in place (NaN stays NaN).
template <typename T>
void clip_value(T* g, int64_t n, double c);
// sqrt(sum g^2) accumulated in double.
template <typename T>
double l2_norm(const T* g, int64_t n);
// g (n) *= s (s rounded to T first, as NumPy's in-place multiply by a Python float).
template <typename T>
void scale(T* g, int64_t n, double s);
// true when every element of g (n) is finite.
template <typename T>
bool all_finite(const T* g, int64_t n);

}  // namespace train
}  // namespace rnnfast

// Explicit instantiations of every entry point above for one T, used by each ISA build (train_ops.cpp) and
// by the dispatcher (train_dispatch.cpp), so the two lists cannot drift apart.
#define RNNFAST_TRAIN_INSTANTIATE(T)                                                             \
  template double linear_xent<T>(const XentParams<T>&);                                          \
  template void gather_rows<T>(const T*, int64_t, const int64_t*, int64_t, T*);                  \
  template void scatter_add_rows<T>(T*, int64_t, const int64_t*, int64_t, const T*);             \
  template void one_hot<T>(const int64_t*, int64_t, int64_t, T*);                                \
  template void sgd<T>(T*, const T*, T*, int64_t, double, double, double, bool);                 \
  template void adagrad<T>(T*, const T*, T*, int64_t, double, double);                           \
  template void rmsprop<T>(T*, const T*, T*, int64_t, double, double, double);                   \
  template void adam<T>(T*, const T*, T*, T*, int64_t, double, double, double, double, int64_t); \
  template void clip_value<T>(T*, int64_t, double);                                              \
  template double l2_norm<T>(const T*, int64_t);                                                 \
  template void scale<T>(T*, int64_t, double);                                                   \
  template bool all_finite<T>(const T*, int64_t);
