// Fused vanilla-RNN forward and backward on the CPU, side by side (DESIGN.md section 2).
// Per layer: one GEMM for the input projection of all T*N rows, then a serial loop doing only the recurrent
// product fused with bias, constant input and activation; backward mirrors it and batches the weight and
// input gradients into GEMMs after the loop. Not validated here: the bindings check every argument.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/blas.h"
#include "cpu/rnn_cpu.h"
#include "rnnfast/cell_math.h"

#ifndef RNNFAST_ISA
#define RNNFAST_ISA generic
#endif

namespace rnnfast {
namespace cpu {
namespace RNNFAST_ISA {

namespace {

template <typename T>
inline T act(Act a, T z) { return a == Act::Tanh ? act_tanh(z) : act_relu(z); }

// Round H up to a whole number of microkernel blocks.
template <typename T>
inline int64_t padded(int64_t H) {
  const int64_t B = blas::block<T>();
  return (H + B - 1) / B * B;
}

// dst (H, Hp) = src (H, H), transposed when `transpose`, zero-padded on the right.
template <typename T>
std::vector<T> padded_copy(const T* src, int64_t H, int64_t Hp, bool transpose) {
  std::vector<T> dst(size_t(H * Hp), T(0));
  for (int64_t r = 0; r < H; ++r)
    for (int64_t c = 0; c < H; ++c) dst[size_t(r * Hp + c)] = transpose ? src[c * H + r] : src[r * H + c];
  return dst;
}

// One layer forward. X (T, N, Dk) is the layer's input; Y (T, N, H) receives its hidden states.
template <typename T>
void layer_forward(int64_t Tn, int64_t N, int64_t Dk, int64_t H, Act a, const LayerWeights<T>& w, const T* X,
                   const T* h0, const T* c, T* Y, T* h_n, int64_t small_n) {
  const int64_t NH = N * H;
  // 1. P = X W_ih^T for all T*N rows at once; the biases and c are added inside the loop.
  blas::gemm<T>(false, true, Tn * N, H, Dk, T(1), X, Dk, w.W_ih, Dk, T(0), Y, H);
  // bc (N, H) = b_ih + b_hh [+ c[n]]: the per-sequence constant added at every step
  std::vector<T> bc(size_t(NH), T(0));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < H; ++j) {
      T v = w.b_ih ? w.b_ih[j] + w.b_hh[j] : T(0);
      bc[size_t(n * H + j)] = c ? v + c[n * H + j] : v;
    }
  // 2. The recurrence: Y_t = act(P_t + bc + h_{t-1} W_hh^T).
  if (N <= small_n) {
    const int64_t Hp = padded<T>(H);
    const std::vector<T> WT = padded_copy(w.W_hh, H, Hp, /*transpose=*/true);  // WT[k, j] = W_hh[j, k]
    std::vector<T> acc(size_t(Hp), T(0));
    for (int64_t t = 0; t < Tn; ++t) {
      T* Yt = Y + t * NH;
      const T* Hprev = t > 0 ? Y + (t - 1) * NH : h0;
      for (int64_t n = 0; n < N; ++n) {
        T* y = Yt + n * H;
        const T* b = bc.data() + n * H;
        for (int64_t j = 0; j < H; ++j) acc[size_t(j)] = y[j] + b[j];
        for (int64_t j = H; j < Hp; ++j) acc[size_t(j)] = T(0);
        if (Hprev) blas::matvec_rows(Hprev + n * H, H, WT.data(), Hp, acc.data(), Hp);
        for (int64_t j = 0; j < H; ++j) y[j] = act(a, acc[size_t(j)]);
      }
    }
  } else {
    for (int64_t t = 0; t < Tn; ++t) {
      T* Yt = Y + t * NH;
      const T* Hprev = t > 0 ? Y + (t - 1) * NH : h0;
      if (Hprev) blas::gemm<T>(false, true, N, H, H, T(1), Hprev, H, w.W_hh, H, T(1), Yt, H);
      for (int64_t i = 0; i < NH; ++i) Yt[i] = act(a, Yt[i] + bc[size_t(i)]);
    }
  }
  if (Tn > 0) std::memcpy(h_n, Y + (Tn - 1) * NH, sizeof(T) * size_t(NH));
  else if (h0) std::memcpy(h_n, h0, sizeof(T) * size_t(NH));
  else std::fill(h_n, h_n + NH, T(0));
}

// One layer backward. dY (T, N, H) is the gradient reaching the layer's outputs (nullptr = zeros);
// dh_n_k (N, H) that of its final state (nullptr = zeros). Writes DZ (T, N, H), dX (T, N, Dk) =, dh0_k (N, H) =,
// dc (N, H) = when given; accumulates the layer's parameter gradients.
template <typename T>
void layer_backward(int64_t Tn, int64_t N, int64_t Dk, int64_t H, Act a, const LayerWeights<T>& w,
                    LayerGrads<T>& g, const T* X, const T* h0k, const T* Hs, const T* dY, const T* dh_n_k, T* DZ,
                    T* dX, T* dh0_k, T* dc, int64_t small_n) {
  const int64_t NH = N * H;
  const int64_t Hp = padded<T>(H);
  // dh_next (N, Hp): gradient flowing into h_{t-1} from step t
  std::vector<T> dh_next(size_t(N * Hp), T(0));
  if (dh_n_k)
    for (int64_t n = 0; n < N; ++n) std::memcpy(&dh_next[size_t(n * Hp)], dh_n_k + n * H, sizeof(T) * size_t(H));
  const bool small = N <= small_n;
  std::vector<T> Wp;
  if (small) Wp = padded_copy(w.W_hh, H, Hp, /*transpose=*/false);
  // 1. The serial part, in reverse: dz_t = (dy_t + dh_next) * act'(h_t); dh_next = dz_t W_hh.
  for (int64_t t = Tn - 1; t >= 0; --t) {
    const T* Ht = Hs + t * NH;
    T* dz = DZ + t * NH;
    for (int64_t n = 0; n < N; ++n) {
      const T* dyn = dY ? dY + t * NH + n * H : nullptr;
      const T* dhn = &dh_next[size_t(n * Hp)];
      for (int64_t j = 0; j < H; ++j) {
        const T y = Ht[n * H + j];
        const T d = a == Act::Tanh ? dact_tanh(y) : dact_relu(y);      // backprop through the activation
        dz[n * H + j] = ((dyn ? dyn[j] : T(0)) + dhn[j]) * d;
      }
    }
    if (small) {
      for (int64_t n = 0; n < N; ++n) {                                 // into h_{t-1}
        T* dhn = &dh_next[size_t(n * Hp)];
        std::fill(dhn, dhn + Hp, T(0));
        blas::matvec_rows(dz + n * H, H, Wp.data(), Hp, dhn, Hp);
      }
    } else {
      blas::gemm<T>(false, false, N, H, H, T(1), dz, H, w.W_hh, H, T(0), dh_next.data(), Hp);
    }
  }
  for (int64_t n = 0; n < N; ++n) std::memcpy(dh0_k + n * H, &dh_next[size_t(n * Hp)], sizeof(T) * size_t(H));
  // 2. Everything else as whole-sequence GEMMs and reductions.
  if (Tn > 1)                                                           // into W_hh, steps 1..T-1
    blas::gemm<T>(true, false, H, H, (Tn - 1) * N, T(1), DZ + NH, H, Hs, H, T(1), g.dW_hh, H);
  if (Tn > 0 && h0k)                                                    // into W_hh, step 0 reads h0
    blas::gemm<T>(true, false, H, H, N, T(1), DZ, H, h0k, H, T(1), g.dW_hh, H);
  blas::gemm<T>(true, false, H, Dk, Tn * N, T(1), DZ, H, X, Dk, T(1), g.dW_ih, Dk);   // into W_ih
  if (g.db_ih || dc) {                                                  // into the biases and c
    std::vector<T> colsum(size_t(H), T(0));
    if (dc) std::fill(dc, dc + NH, T(0));
    for (int64_t t = 0; t < Tn; ++t)
      for (int64_t n = 0; n < N; ++n) {
        const T* dz = DZ + t * NH + n * H;
        for (int64_t j = 0; j < H; ++j) colsum[size_t(j)] += dz[j];
        if (dc)
          for (int64_t j = 0; j < H; ++j) dc[n * H + j] += dz[j];
      }
    if (g.db_ih)
      for (int64_t j = 0; j < H; ++j) {
        g.db_ih[j] += colsum[size_t(j)];
        g.db_hh[j] += colsum[size_t(j)];
      }
  }
  blas::gemm<T>(false, false, Tn * N, Dk, H, T(1), DZ, H, w.W_ih, Dk, T(0), dX, Dk);    // into the input
}

}  // namespace

template <typename T>
void rnn_forward_impl(const RnnForwardParams<T>& p, int64_t small_n) {
  const int64_t Tn = p.T_, N = p.N, D = p.D, H = p.H, L = p.L;
  const int64_t NH = N * H, TNH = Tn * NH;
  for (int64_t k = 0; k < L; ++k) {
    const int64_t Dk = k == 0 ? D : H;
    const T* X;
    T* Y;
    if (p.hs) {  // training: every layer's states go to the cache
      X = k == 0 ? p.x : p.hs + (k - 1) * TNH;
      Y = p.hs + k * TNH;
    } else {     // inference: ping-pong between out and scratch so the top layer lands in out
      const bool to_out = ((L - 1 - k) % 2) == 0;
      X = k == 0 ? p.x : (to_out ? p.scratch : p.out);
      Y = to_out ? p.out : p.scratch;
    }
    layer_forward<T>(Tn, N, Dk, H, p.act, p.layers[k], X, p.h0 ? p.h0 + k * NH : nullptr,
                     k == 0 ? p.c : nullptr, Y, p.h_n + k * NH, small_n);
  }
  if (p.hs && TNH > 0) std::memcpy(p.out, p.hs + (L - 1) * TNH, sizeof(T) * size_t(TNH));
}

template <typename T>
void rnn_backward_impl(const RnnBackwardParams<T>& p, int64_t small_n) {
  const int64_t Tn = p.T_, N = p.N, D = p.D, H = p.H, L = p.L;
  const int64_t NH = N * H, TNH = Tn * NH;
  const T* dY = p.dout;  // gradient reaching layer k's outputs; for k < L-1 it lives in p.dy
  for (int64_t k = L - 1; k >= 0; --k) {
    const int64_t Dk = k == 0 ? D : H;
    const T* X = k == 0 ? p.x : p.hs + (k - 1) * TNH;
    T* dX = k == 0 ? p.dx : p.dy;  // dy may be overwritten: this layer's dY was consumed into DZ already
    layer_backward<T>(Tn, N, Dk, H, p.act, p.layers[k], p.grads[k], X, p.h0 ? p.h0 + k * NH : nullptr,
                      p.hs + k * TNH, dY, p.dh_n ? p.dh_n + k * NH : nullptr, p.dz, dX, p.dh0 + k * NH,
                      k == 0 ? p.dc : nullptr, small_n);
    dY = p.dy;
  }
}

template void rnn_forward_impl<float>(const RnnForwardParams<float>&, int64_t);
template void rnn_forward_impl<double>(const RnnForwardParams<double>&, int64_t);
template void rnn_backward_impl<float>(const RnnBackwardParams<float>&, int64_t);
template void rnn_backward_impl<double>(const RnnBackwardParams<double>&, int64_t);

}  // namespace RNNFAST_ISA
}  // namespace cpu
}  // namespace rnnfast
