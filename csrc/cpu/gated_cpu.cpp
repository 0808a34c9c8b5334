// Fused LSTM and GRU forward and backward on the CPU, side by side, with the structure of rnn_cpu.cpp:
// per layer, one GEMM projects all T*N input rows onto the G*H gate pre-activations; a serial loop does
// only the recurrent product and one fused pointwise step; backward mirrors it and batches the weight and
// input gradients into GEMMs after the loop. When a step is one thread's work, groups of sequences run the
// serial loops side by side (parallel::row_groups). Not validated here: the bindings check every argument.
#include <algorithm>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "cpu/blas.h"
#include "cpu/parallel.h"
#include "cpu/pool.h"
#include "cpu/gated_cpu.h"
#include "cpu/rnn_cpu.h"
#include "cpu/wgrad.h"
#include "rnnfast/cell_math.h"

#ifndef RNNFAST_ISA
#define RNNFAST_ISA generic
#endif

namespace rnnfast {
namespace cpu {
namespace RNNFAST_ISA {

namespace {

// ---- helpers ----

// How one layer computes its per-step recurrent products (the vanilla kernels' Path choice):
//   Matvec: matrix-vector kernels per sequence, no BLAS call per step (small batches);
//   Blas:   one BLAS GEMM per step.
// Auto: Matvec for N <= small_batch, else Blas.
template <typename T>
struct Recurrence {
  bool matvec = false;
  const T* W = nullptr;  // W_hh (R, K)
  int64_t R = 0, K = 0;

  bool transposed = false;  // WT holds W^T (K, R), made once for the GEMM path of forward()
  pool::Buffer<T> WT;

  Recurrence(const Tuning& tu, int64_t N, int64_t R_, int64_t K_, const T* W_, bool need_forward = false)
      : matvec(tu.path == Path::Matvec || (tu.path == Path::Auto && N <= tu.small_batch)),
        W(W_),
        R(R_),
        K(K_),
        transposed(need_forward && !matvec),
        WT(transposed ? size_t(R_ * K_) : 0) {
    if (transposed) {  // the step is then a plain GEMM, which OpenBLAS runs without packing W^T at every
      blas::transpose(W, R, K, WT.get());  // step (the transposed form packed both operands each time)
    }
  }

  // Y (N, R) = Y0 + Hprev (N, K) W^T: the recurrent product of one step (Y0 may be Y); Hprev nullptr is
  // zeros. Y0 is read in place by the small kernel, copied first otherwise.
  void forward(int64_t N, const T* Hprev, const T* Y0, T* Y) const {
    if (transposed && Hprev && blas::step_in_small_kernel(N, R, K)) {
      blas::gemm_small_fused<T>(N, R, K, Hprev, K, WT.get(), R, Y0, R, nullptr, 0, Y, R, blas::NoEpilogue{});
      return;
    }
    if (Y0 != Y && N * R > 0) std::memcpy(Y, Y0, sizeof(T) * size_t(N * R));
    if (!Hprev) return;
    if (matvec) {
      for (int64_t n = 0; n < N; ++n) blas::matvec_dot(W, R, K, Hprev + n * K, Y + n * R);
    } else if (transposed) {
      blas::gemm_step<T>(N, R, K, Hprev, K, WT.get(), R, T(1), Y, R);
    } else {
      blas::gemm<T>(false, true, N, R, K, T(1), Hprev, K, W, K, T(1), Y, R);
    }
  }

  // Whether each step of a forward (or backward) loop over N sequences is one thread's work (per-sequence
  // products or the small kernel) and W_hh small enough (blas::fits_groups), so that groups of sequences can
  // run the loop side by side.
  bool per_thread_steps(int64_t N, bool backward) const {
    return blas::fits_groups<T>(R, K) && (matvec || (backward ? blas::step_in_small_kernel(N, K, R)
                                                              : transposed && blas::step_in_small_kernel(N, R, K)));
  }
  // The threads for such a loop of Tn steps (1 when its steps are not one thread's work).
  int64_t loop_threads(int64_t Tn, int64_t N, bool backward = false) const {
    return per_thread_steps(N, backward) ? blas::loop_threads(Tn, N, R, K) : 1;
  }

  // dH (N, K) += dG (N, R) W: the gradient into h_{t-1} of one step.
  void backward(int64_t N, const T* dG, T* dH) const {
    if (matvec) {
      for (int64_t n = 0; n < N; ++n) blas::matvec_rows(dG + n * R, R, W, K, dH + n * K, K);
    } else {
      blas::gemm_step<T>(N, K, R, dG, R, W, K, T(1), dH, K);
    }
  }
};

// col[j] += sum over the M rows of A (M, C) of A[m, j]
template <typename T>
inline void colsum_add(const T* A, int64_t M, int64_t C, T* col) {
  for (int64_t m = 0; m < M; ++m) {
    const T* a = A + m * C;
    for (int64_t j = 0; j < C; ++j) col[j] += a[j];
  }
}

// After the serial loop and the pipe: db_hh += sum dGh, db_ih += sum dGi, and with the identity W_ih
// (X is the projection itself, Dk == R) dX = dGi unless dGi was written there already.
template <typename T>
void bias_grads(int64_t Tn, int64_t N, int64_t R, const LayerWeights<T>& w, LayerGrads<T>& g, const T* dGi,
                const T* dGh, T* dX) {
  if (g.db_ih) {
    colsum_add(dGi, Tn * N, R, g.db_ih);
    colsum_add(dGh, Tn * N, R, g.db_hh);
  }
  if (!w.W_ih && dX != dGi && Tn * N * R > 0) std::memcpy(dX, dGi, sizeof(T) * size_t(Tn * N * R));
}

// P = X W_ih^T for all T*N rows at once into G (T*N, R). W_ih nullptr is the identity (X is the input
// projection itself, Dk == R: a gathered one-hot input): nothing happens here, and each step reads its rows
// of X just before using them (the LSTM's small kernel starts its accumulators from them; otherwise
// step_input() copies them), while they are in cache: one pass over T*N*R values instead of two (a
// whole-sequence copy went to memory and was read back step by step).
template <typename T>
inline void input_projection(int64_t rows, int64_t R, int64_t Dk, const T* X, const T* W_ih, T* G) {
  if (W_ih) blas::gemm<T>(false, true, rows, R, Dk, T(1), X, Dk, W_ih, Dk, T(0), G, R);
}

// Values [off, off + len) of step t's rows of the identity input projection (see input_projection), the
// step being NR values long: G_t = X_t there.
template <typename T>
inline void step_input(const T* W_ih, int64_t t, int64_t NR, int64_t off, int64_t len, const T* X, T* G) {
  if (!W_ih && len > 0) std::memcpy(G + t * NR + off, X + t * NR + off, sizeof(T) * size_t(len));
}

// The final state of a layer: its last step, else the initial state, else zeros.
template <typename T>
inline void final_state(int64_t Tn, int64_t NH, const T* Y, const T* init, T* dst) {
  if (NH == 0) return;
  if (Tn > 0) std::memcpy(dst, Y + (Tn - 1) * NH, sizeof(T) * size_t(NH));
  else if (init) std::memcpy(dst, init, sizeof(T) * size_t(NH));
  else std::fill(dst, dst + NH, T(0));
}

// ---- the fused pointwise steps, one sequence (row) at a time; __restrict and no branches inside the
// loops so each vectorises. Absent inputs (h_{t-1} at t = 0 without h0, dout = None, ...) are zero rows.

// LSTM forward: g (4H) holds the pre-activations a (without bias) and receives [i, f, g, o]; b (4H) the
// summed biases; cp (H) c_{t-1}; writes c (H) and h (H).
template <typename T>
inline void lstm_point_fwd(int64_t H, const T* __restrict b, T* __restrict g, const T* __restrict cp, T* __restrict c,
                           T* __restrict h) {
  for (int64_t j = 0; j < H; ++j) {
    const T i_ = fast_sigmoid(g[j] + b[j]);
    const T f_ = fast_sigmoid(g[H + j] + b[H + j]);
    const T g_ = fast_tanh(g[2 * H + j] + b[2 * H + j]);
    const T o_ = fast_sigmoid(g[3 * H + j] + b[3 * H + j]);
    const T cv = f_ * cp[j] + i_ * g_;
    g[j] = i_;
    g[H + j] = f_;
    g[2 * H + j] = g_;
    g[3 * H + j] = o_;
    c[j] = cv;
    h[j] = o_ * fast_tanh(cv);
  }
}

// LSTM backward: dy (H) output gradient, dh (H) recurrent gradient into h_t, dcx (H) extra cell gradient,
// dc (H) in: gradient into c_t from step t+1, out: into c_{t-1}; writes da (4H).
template <typename T>
inline void lstm_point_bwd(int64_t H, const T* __restrict g, const T* __restrict c, const T* __restrict cp,
                           const T* __restrict dy, const T* __restrict dh, const T* __restrict dcx, T* __restrict dc,
                           T* __restrict da) {
  for (int64_t j = 0; j < H; ++j) {
    const T dhj = dy[j] + dh[j];                                  // output gradient + recurrent gradient
    const T tc = fast_tanh(c[j]);
    const T i_ = g[j], f_ = g[H + j], g_ = g[2 * H + j], o_ = g[3 * H + j];
    const T dcj = dc[j] + dcx[j] + dhj * o_ * dact_tanh(tc);     // through h = o * tanh(c)
    da[j] = dcj * g_ * dact_sigmoid(i_);                          // backprop through the gate activations
    da[H + j] = dcj * cp[j] * dact_sigmoid(f_);
    da[2 * H + j] = dcj * i_ * dact_tanh(g_);
    da[3 * H + j] = dhj * tc * dact_sigmoid(o_);
    dc[j] = dcj * f_;                                             // into c_{t-1}
  }
}

// GRU forward: g (3H) holds the input-side pre-activations (without bias) and receives [r, z, n]; gh (3H)
// h_{t-1} W_hh^T; b (4H) = [b_ir + b_hr, b_iz + b_hz, b_in, b_hn]; hp (H) h_{t-1}; writes a (H) =
// W_hn h_{t-1} + b_hn and h (H).
template <typename T>
inline void gru_point_fwd(int64_t H, const T* __restrict b, T* __restrict g, const T* __restrict gh,
                          const T* __restrict hp, T* __restrict a, T* __restrict h) {
  for (int64_t j = 0; j < H; ++j) {
    const T r_ = fast_sigmoid(g[j] + b[j] + gh[j]);
    const T z_ = fast_sigmoid(g[H + j] + b[H + j] + gh[H + j]);
    const T av = gh[2 * H + j] + b[3 * H + j];
    const T n_ = fast_tanh(g[2 * H + j] + b[2 * H + j] + r_ * av);
    g[j] = r_;
    g[H + j] = z_;
    g[2 * H + j] = n_;
    a[j] = av;
    h[j] = n_ + z_ * (hp[j] - n_);
  }
}

// GRU backward: dy (H) output gradient; dh (H) in: recurrent gradient into h_t, out: the direct part of
// the gradient into h_{t-1} (dh z; the W_hh part is added after); writes dgi, dgh (3H).
template <typename T>
inline void gru_point_bwd(int64_t H, const T* __restrict g, const T* __restrict a, const T* __restrict hp,
                          const T* __restrict dy, T* __restrict dh, T* __restrict dgi, T* __restrict dgh) {
  for (int64_t j = 0; j < H; ++j) {
    const T dhj = dy[j] + dh[j];                                  // output gradient + recurrent gradient
    const T r_ = g[j], z_ = g[H + j], n_ = g[2 * H + j];
    const T dn = dhj * (T(1) - z_) * dact_tanh(n_);               // through h = (1-z) n + z h_prev, then tanh
    const T dz = dhj * (hp[j] - n_) * dact_sigmoid(z_);
    const T dr = dn * a[j] * dact_sigmoid(r_);                    // the reset gate multiplied W_hn h + b_hn
    dgi[j] = dr;
    dgi[H + j] = dz;
    dgi[2 * H + j] = dn;
    dgh[j] = dr;
    dgh[H + j] = dz;
    dgh[2 * H + j] = dn * r_;
    dh[j] = dhj * z_;                                             // into h_{t-1}, directly
  }
}

// ---- LSTM ----

// One layer forward. X (T, N, Dk) in; Y (T, N, H), C (T, N, H), G (T, N, 4H) out (G holds the activated
// gates i, f, g, o); h0k, c0k (N, H) or nullptr for zeros.
template <typename T>
void lstm_layer_forward(int64_t Tn, int64_t N, int64_t Dk, int64_t H, const LayerWeights<T>& w, const T* X,
                        const T* h0k, const T* c0k, T* Y, T* C, T* G, const Tuning& tu) {
  const int64_t NH = N * H, R = 4 * H, NR = N * R;
  const Recurrence<T> rec(tu, N, R, H, w.W_hh, true);
  // 1. P = X W_ih^T for all T*N rows at once, written where the gates will be.
  input_projection(Tn * N, R, Dk, X, w.W_ih, G);
  std::vector<T> b(size_t(R), T(0));  // b_ih + b_hh, added inside the fused step
  if (w.b_ih)
    for (int64_t j = 0; j < R; ++j) b[size_t(j)] = w.b_ih[j] + w.b_hh[j];
  std::vector<T> zero(c0k ? 0 : size_t(NH), T(0));  // c_{-1} when no c0 was given
  // 2. The recurrence: G_t += h_{t-1} W_hh^T, then the gates, c_t and h_t in one pass; groups of sequences
  // side by side when each step is one thread's work (each row's arithmetic is the same in any group).
  const T* X0 = w.W_ih ? G : X;  // step t's input projection: G itself, or the identity input read in place
  parallel::row_groups(N, rec.loop_threads(Tn, N), [&](int64_t n0, int64_t n1) {
    const int64_t M = n1 - n0;
    for (int64_t t = 0; t < Tn; ++t) {
      T* Gt = G + t * NR + n0 * R;
      const T* Hprev = t > 0 ? Y + (t - 1) * NH + n0 * H : (h0k ? h0k + n0 * H : nullptr);
      const T* Cprev = t > 0 ? C + (t - 1) * NH : (c0k ? c0k : zero.data());
      rec.forward(M, Hprev, X0 + t * NR + n0 * R, Gt);
      for (int64_t n = n0; n < n1; ++n)
        lstm_point_fwd(H, b.data(), G + t * NR + n * R, Cprev + n * H, C + t * NH + n * H, Y + t * NH + n * H);
    }
  });
}

// One layer backward. dY (T, N, H) reaching the outputs (nullptr = zeros); dh_n_k, dc_n_k (N, H) or
// nullptr; dcs_k (T, N, H) extra cell-state gradient or nullptr. dG (T, N, 4H) scratch; dX (T, N, Dk) =,
// dh0_k, dc0_k (N, H) =; the layer's parameter gradients accumulate.
template <typename T>
void lstm_layer_backward(int64_t Tn, int64_t N, int64_t Dk, int64_t H, const LayerWeights<T>& w, LayerGrads<T>& g,
                         const T* X, const T* h0k, const T* c0k, const T* Hs, const T* Cs, const T* Gs, const T* dY,
                         const T* dh_n_k, const T* dc_n_k, const T* dcs_k, T* dG, T* dX, T* dh0_k, T* dc0_k,
                         const Tuning& tu) {
  const int64_t NH = N * H, R = 4 * H, NR = N * R;
  const Recurrence<T> rec(tu, N, R, H, w.W_hh);
  std::vector<T> zero(dY && dcs_k ? 0 : size_t(NH), T(0));  // stands in for absent inputs
  const wgrad::WeightGradJob<T> job = wgrad::job(Tn, N, Dk, H, R, w.W_ih, X, h0k, Hs, dG, dG, g.dW_hh, g.dW_ih, dX);
  // 1. The serial part, in reverse, for the sequences [n0, n1): dhn, dcn (M, H) carry the gradients into
  // h_{t-1}, c_{t-1}; each_step(t) follows the step's gate gradients.
  auto serial = [&](int64_t n0, int64_t n1, const auto& each_step) {
    const int64_t M = n1 - n0, MH = M * H;
    std::vector<T> dh = wgrad::start_rows(dh_n_k, n0, M, H), dc = wgrad::start_rows(dc_n_k, n0, M, H);
    T *dhn = dh.data(), *dcn = dc.data();
    for (int64_t t = Tn - 1; t >= 0; --t) {
      const T* Cprev = t > 0 ? Cs + (t - 1) * NH : c0k;
      const T* dy = dY ? dY + t * NH : zero.data();
      const T* dcx = dcs_k ? dcs_k + t * NH : zero.data();
      for (int64_t n = n0; n < n1; ++n)
        lstm_point_bwd(H, Gs + t * NR + n * R, Cs + t * NH + n * H, Cprev + n * H, dy + n * H, dhn + (n - n0) * H,
                       dcx + n * H, dcn + (n - n0) * H, dG + t * NR + n * R);
      each_step(t);
      std::fill(dhn, dhn + MH, T(0));  // into h_{t-1}
      rec.backward(M, dG + t * NR + n0 * R, dhn);
    }
    if (MH > 0) {
      std::memcpy(dh0_k + n0 * H, dhn, sizeof(T) * size_t(MH));
      std::memcpy(dc0_k + n0 * H, dcn, sizeof(T) * size_t(MH));
    }
  };
  // Groups of sequences side by side when each step is one thread's work (then the threads share the weight
  // products), else the weight gradients in blocks of steps beside the loop (wgrad::backward_loop).
  wgrad::backward_loop(job, rec.per_thread_steps(N, true), rec.loop_threads(Tn, N, true), serial);
  // 2. The biases (the weight products are in).
  bias_grads(Tn, N, R, w, g, dG, dG, dX);
}

// ---- GRU ----

// One layer forward. X (T, N, Dk) in; Y (T, N, H), G (T, N, 3H) (activated r, z, n), Ghn (T, N, H)
// (W_hn h_{t-1} + b_hn) out; h0k (N, H) or nullptr for zeros.
template <typename T>
void gru_layer_forward(int64_t Tn, int64_t N, int64_t Dk, int64_t H, const LayerWeights<T>& w, const T* X, const T* h0k,
                       T* Y, T* G, T* Ghn, const Tuning& tu) {
  const int64_t NH = N * H, R = 3 * H, NR = N * R;
  const Recurrence<T> rec(tu, N, R, H, w.W_hh, true);
  // 1. P = X W_ih^T for all T*N rows at once.
  input_projection(Tn * N, R, Dk, X, w.W_ih, G);
  // Input-side constants: b_ir + b_hr, b_iz + b_hz, b_in; b_hn stays inside the reset product.
  std::vector<T> b(size_t(R + H), T(0));
  if (w.b_ih) {
    for (int64_t j = 0; j < 2 * H; ++j) b[size_t(j)] = w.b_ih[j] + w.b_hh[j];
    for (int64_t j = 0; j < H; ++j) {
      b[size_t(2 * H + j)] = w.b_ih[2 * H + j];
      b[size_t(3 * H + j)] = w.b_hh[2 * H + j];
    }
  }
  std::vector<T> zero(size_t(std::max(NH, NR)), T(0));  // h_{-1} when no h0 was given; the product's start
  // 2. The recurrence, groups of sequences side by side as in lstm_layer_forward.
  parallel::row_groups(N, rec.loop_threads(Tn, N), [&](int64_t n0, int64_t n1) {
    const int64_t M = n1 - n0;
    std::vector<T> gh(static_cast<size_t>(M * R));  // h_{t-1} W_hh^T of this step (M, 3H)
    for (int64_t t = 0; t < Tn; ++t) {
      T* Gt = G + t * NR + n0 * R;
      const T* Hprev = t > 0 ? Y + (t - 1) * NH + n0 * H : (h0k ? h0k + n0 * H : nullptr);
      step_input(w.W_ih, t, NR, n0 * R, M * R, X, G);
      rec.forward(M, Hprev, zero.data(), gh.data());
      if (!Hprev) Hprev = zero.data();
      for (int64_t n = 0; n < M; ++n)
        gru_point_fwd(H, b.data(), Gt + n * R, gh.data() + n * R, Hprev + n * H, Ghn + t * NH + (n0 + n) * H,
                      Y + t * NH + (n0 + n) * H);
    }
  });
}

// One layer backward. dGi, dGh (T, N, 3H) scratch (input- and hidden-side gate gradients; they differ in
// the n block, where the hidden side is scaled by r). Otherwise as lstm_layer_backward.
template <typename T>
void gru_layer_backward(int64_t Tn, int64_t N, int64_t Dk, int64_t H, const LayerWeights<T>& w, LayerGrads<T>& g,
                        const T* X, const T* h0k, const T* Hs, const T* Gs, const T* Ghn, const T* dY, const T* dh_n_k,
                        T* dGi, T* dGh, T* dX, T* dh0_k, const Tuning& tu) {
  const int64_t NH = N * H, R = 3 * H, NR = N * R;
  const Recurrence<T> rec(tu, N, R, H, w.W_hh);
  std::vector<T> zero(dY ? 0 : size_t(NH), T(0));
  const wgrad::WeightGradJob<T> job = wgrad::job(Tn, N, Dk, H, R, w.W_ih, X, h0k, Hs, dGi, dGh, g.dW_hh, g.dW_ih, dX);
  // 1. The serial part, in reverse, for the sequences [n0, n1) (as in lstm_layer_backward).
  auto serial = [&](int64_t n0, int64_t n1, const auto& each_step) {
    const int64_t M = n1 - n0, MH = M * H;
    std::vector<T> dh = wgrad::start_rows(dh_n_k, n0, M, H);
    T* dhn = dh.data();
    for (int64_t t = Tn - 1; t >= 0; --t) {
      const T* Hprev = t > 0 ? Hs + (t - 1) * NH : h0k;
      const T* dy = dY ? dY + t * NH : zero.data();
      for (int64_t n = n0; n < n1; ++n)
        gru_point_bwd(H, Gs + t * NR + n * R, Ghn + t * NH + n * H, Hprev + n * H, dy + n * H, dhn + (n - n0) * H,
                      dGi + t * NR + n * R, dGh + t * NR + n * R);
      each_step(t);
      rec.backward(M, dGh + t * NR + n0 * R, dhn);  // ... and through W_hh
    }
    if (MH > 0) std::memcpy(dh0_k + n0 * H, dhn, sizeof(T) * size_t(MH));
  };
  wgrad::backward_loop(job, rec.per_thread_steps(N, true), rec.loop_threads(Tn, N, true), serial);
  // 2. The biases (the weight products are in).
  bias_grads(Tn, N, R, w, g, dGi, dGh, dX);
}

// Where layer k reads its input and writes its states: the cache when there is one, else ping-pong
// buffers with the top layer landing in out.
template <typename T>
struct LayerIO {
  const T* X;
  T* Y;
};

template <typename T>
LayerIO<T> layer_io(const GatedForwardParams<T>& p, int64_t k, const T* prevY, std::vector<T>* buf) {
  const int64_t TNH = p.T_ * p.N * p.H;
  if (p.hs) return {k == 0 ? p.x : p.hs + (k - 1) * TNH, p.hs + k * TNH};
  T* Y = k == p.L - 1 ? p.out : buf[k % 2].data();
  return {k == 0 ? p.x : prevY, Y};
}

}  // namespace

template <typename T>
void lstm_forward_impl(const GatedForwardParams<T>& p, const Tuning& tu) {
  const int64_t Tn = p.T_, N = p.N, H = p.H, L = p.L, NH = N * H, TNH = Tn * NH;
  std::vector<T> buf[2], cbuf, gbuf;
  if (!p.hs) {  // inference: per-layer scratch instead of the cache
    if (L > 1) buf[0].resize(size_t(TNH));
    if (L > 2) buf[1].resize(size_t(TNH));
    cbuf.resize(size_t(TNH));
    gbuf.resize(size_t(4 * TNH));
  }
  const T* prevY = nullptr;
  for (int64_t k = 0; k < L; ++k) {
    LayerIO<T> io = layer_io(p, k, prevY, buf);
    T* C = p.cs ? p.cs + k * TNH : cbuf.data();
    T* G = p.gates ? p.gates + k * 4 * TNH : gbuf.data();
    const T* h0k = p.h0 ? p.h0 + k * NH : nullptr;
    const T* c0k = p.c0 ? p.c0 + k * NH : nullptr;
    lstm_layer_forward<T>(Tn, N, k == 0 ? p.D : H, H, p.layers[k], io.X, h0k, c0k, io.Y, C, G, tu);
    final_state(Tn, NH, io.Y, h0k, p.h_n + k * NH);
    final_state(Tn, NH, C, c0k, p.c_n + k * NH);
    prevY = io.Y;
  }
  if (p.hs && TNH > 0) std::memcpy(p.out, p.hs + (L - 1) * TNH, sizeof(T) * size_t(TNH));
}

template <typename T>
void lstm_backward_impl(const GatedBackwardParams<T>& p, const Tuning& tu) {
  const int64_t Tn = p.T_, N = p.N, H = p.H, L = p.L, NH = N * H, TNH = Tn * NH;
  // scratch, every element written before it is read (no zero fill): dG (T, N, 4H), dy (T, N, H) for L > 1
  pool::Buffer<T> dG(size_t(4 * TNH)), dy(L > 1 ? size_t(TNH) : 0);
  const T* dY = p.dout;  // gradient reaching layer k's outputs; below the top it lives in dy
  for (int64_t k = L - 1; k >= 0; --k) {
    const T* X = k == 0 ? p.x : p.hs + (k - 1) * TNH;
    T* dX = k == 0 ? p.dx : dy.get();  // may overwrite dY: it was consumed into dG already
    lstm_layer_backward<T>(Tn, N, k == 0 ? p.D : H, H, p.layers[k], p.grads[k], X, p.h0 + k * NH, p.c0 + k * NH,
                           p.hs + k * TNH, p.cs + k * TNH, p.gates + k * 4 * TNH, dY,
                           p.dh_n ? p.dh_n + k * NH : nullptr, p.dc_n ? p.dc_n + k * NH : nullptr,
                           p.dcs ? p.dcs + k * TNH : nullptr, k == 0 && !p.layers[0].W_ih ? p.dx : dG.get(), dX,
                           p.dh0 + k * NH, p.dc0 + k * NH, tu);
    dY = dy.get();
  }
}

template <typename T>
void gru_forward_impl(const GatedForwardParams<T>& p, const Tuning& tu) {
  const int64_t Tn = p.T_, N = p.N, H = p.H, L = p.L, NH = N * H, TNH = Tn * NH;
  std::vector<T> buf[2], gbuf, abuf;
  if (!p.hs) {
    if (L > 1) buf[0].resize(size_t(TNH));
    if (L > 2) buf[1].resize(size_t(TNH));
    gbuf.resize(size_t(3 * TNH));
    abuf.resize(size_t(TNH));
  }
  const T* prevY = nullptr;
  for (int64_t k = 0; k < L; ++k) {
    LayerIO<T> io = layer_io(p, k, prevY, buf);
    T* G = p.gates ? p.gates + k * 3 * TNH : gbuf.data();
    T* A = p.ghn ? p.ghn + k * TNH : abuf.data();
    const T* h0k = p.h0 ? p.h0 + k * NH : nullptr;
    gru_layer_forward<T>(Tn, N, k == 0 ? p.D : H, H, p.layers[k], io.X, h0k, io.Y, G, A, tu);
    final_state(Tn, NH, io.Y, h0k, p.h_n + k * NH);
    prevY = io.Y;
  }
  if (p.hs && TNH > 0) std::memcpy(p.out, p.hs + (L - 1) * TNH, sizeof(T) * size_t(TNH));
}

template <typename T>
void gru_backward_impl(const GatedBackwardParams<T>& p, const Tuning& tu) {
  const int64_t Tn = p.T_, N = p.N, H = p.H, L = p.L, NH = N * H, TNH = Tn * NH;
  pool::Buffer<T> dGi(size_t(3 * TNH)), dGh(size_t(3 * TNH)), dy(L > 1 ? size_t(TNH) : 0);
  const T* dY = p.dout;
  for (int64_t k = L - 1; k >= 0; --k) {
    const T* X = k == 0 ? p.x : p.hs + (k - 1) * TNH;
    T* dX = k == 0 ? p.dx : dy.get();
    gru_layer_backward<T>(Tn, N, k == 0 ? p.D : H, H, p.layers[k], p.grads[k], X, p.h0 + k * NH, p.hs + k * TNH,
                          p.gates + k * 3 * TNH, p.ghn + k * TNH, dY, p.dh_n ? p.dh_n + k * NH : nullptr,
                          k == 0 && !p.layers[0].W_ih ? p.dx : dGi.get(), dGh.get(), dX, p.dh0 + k * NH, tu);
    dY = dy.get();
  }
}

#define RNNFAST_GATED_INST(T)                                                        \
  template void lstm_forward_impl<T>(const GatedForwardParams<T>&, const Tuning&);   \
  template void lstm_backward_impl<T>(const GatedBackwardParams<T>&, const Tuning&); \
  template void gru_forward_impl<T>(const GatedForwardParams<T>&, const Tuning&);    \
  template void gru_backward_impl<T>(const GatedBackwardParams<T>&, const Tuning&);
RNNFAST_GATED_INST(float)
RNNFAST_GATED_INST(double)
#undef RNNFAST_GATED_INST

}  // namespace RNNFAST_ISA
}  // namespace cpu
}  // namespace rnnfast
