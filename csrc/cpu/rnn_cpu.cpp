// Fused vanilla-RNN forward and backward on the CPU, side by side (docs/design.md section 2).
// Per layer: one GEMM for the input projection of all T*N rows, then a serial loop doing only the recurrent
// product fused with bias, constant input and activation; backward mirrors it and batches the weight and
// input gradients into GEMMs after the loop. When a step is one thread's work, groups of sequences run the
// serial loops side by side (parallel::row_groups). Not validated here: the bindings check every argument.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/blas.h"
#include "cpu/parallel.h"
#include "cpu/pool.h"
#include "cpu/rnn_cpu.h"
#include "cpu/simd.h"
#include "cpu/wgrad.h"
#include "rnnfast/cell_math.h"

#ifndef RNNFAST_ISA
#define RNNFAST_ISA generic
#endif

namespace rnnfast {
namespace cpu {
namespace RNNFAST_ISA {

namespace {

// y[i] = act(z[i]) for i < n: the vector activations of simd.h, the last vector masked.
template <typename T>
inline void activate(Act a, const T* __restrict z, T* __restrict y, int64_t n) {
  constexpr int L = simd::lanes<T>();
  int64_t i = 0;
  if (a == Act::Tanh) {
    for (; i + L <= n; i += L) simd::store(y + i, simd::tanh(simd::load(z + i)));
  } else {
    for (; i + L <= n; i += L) simd::store(y + i, simd::relu<T>(simd::load(z + i)));
  }
  if (i < n) {
    const simd::Tail tl(n - i);
    const simd::V<T> v = tl.load(z + i);
    tl.store(y + i, a == Act::Tanh ? simd::tanh(v) : simd::relu<T>(v));
  }
}

// dz[i] = (dy[i] + dh[i]) * act'(y[i]) for i < n; dy may be nullptr (zeros).
template <typename T>
inline void backprop_act(Act a, const T* __restrict dy, const T* __restrict dh, const T* __restrict y, T* __restrict dz,
                         int64_t n) {
  if (a == Act::Tanh) {
    if (dy)
      for (int64_t i = 0; i < n; ++i) dz[i] = (dy[i] + dh[i]) * dact_tanh(y[i]);
    else
      for (int64_t i = 0; i < n; ++i) dz[i] = dh[i] * dact_tanh(y[i]);
  } else {
    if (dy)
      for (int64_t i = 0; i < n; ++i) dz[i] = (dy[i] + dh[i]) * dact_relu(y[i]);
    else
      for (int64_t i = 0; i < n; ++i) dz[i] = dh[i] * dact_relu(y[i]);
  }
}

// The path this layer's recurrence takes (see Path in rnn_cpu.h).
inline Path choose(const Tuning& tu, int64_t N) {
  return tu.path == Path::Auto ? (N <= tu.small_batch ? Path::Matvec : Path::Blas) : tu.path;
}

// One layer forward. X (T, N, Dk) is the layer's input; Y (T, N, H) receives its hidden states.
template <typename T>
void layer_forward(int64_t Tn, int64_t N, int64_t Dk, int64_t H, Act a, const LayerWeights<T>& w, const T* X,
                   const T* h0, const T* c, T* Y, T* h_n, const Tuning& tu) {
  const int64_t NH = N * H;
  // 1. P = X W_ih^T for all T*N rows at once; the biases and c are added inside the loop. W_ih nullptr is
  // the identity: X is the projection itself (Dk == H, a gathered one-hot input), read step by step.
  if (w.W_ih) blas::gemm<T>(false, true, Tn * N, H, Dk, T(1), X, Dk, w.W_ih, Dk, T(0), Y, H);
  auto P = [&](int64_t t) -> const T* { return w.W_ih ? Y + t * NH : X + t * NH; };  // step t's projection
  // bc (N, H) = b_ih + b_hh [+ c[n]]: the per-sequence constant added at every step
  std::vector<T> bc(size_t(NH), T(0));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < H; ++j) {
      T v = w.b_ih ? w.b_ih[j] + w.b_hh[j] : T(0);
      bc[size_t(n * H + j)] = c ? v + c[n * H + j] : v;
    }
  // 2. The recurrence: Y_t = act(P_t + bc + h_{t-1} W_hh^T). The sequences are independent, so on the
  // per-sequence and small-kernel paths groups of them run the whole loop on rnnfast's threads (row_groups:
  // no synchronisation between steps; each row's arithmetic is the same in any group, so the result does not
  // depend on the thread count).
  const Path path = choose(tu, N);
  const int64_t fthreads = blas::fits_groups<T>(H, H) ? blas::loop_threads(Tn, N, H, H) : 1;
  if (path == Path::Matvec) {
    // Small batch: one matrix-vector product per sequence, no BLAS call per step.
    parallel::row_groups(N, fthreads, [&](int64_t n0, int64_t n1) {
      const int64_t M = n1 - n0, MH = M * H;
      std::vector<T> acc(static_cast<size_t>(MH));
      for (int64_t t = 0; t < Tn; ++t) {
        T* Yt = Y + t * NH + n0 * H;
        const T* Hprev = t > 0 ? Y + (t - 1) * NH + n0 * H : (h0 ? h0 + n0 * H : nullptr);
        const T* Pt = P(t) + n0 * H;
        const T* bt = bc.data() + n0 * H;
        for (int64_t i = 0; i < MH; ++i) acc[size_t(i)] = Pt[i] + bt[i];
        if (Hprev)
          for (int64_t n = 0; n < M; ++n) blas::matvec_dot(w.W_hh, H, H, Hprev + n * H, acc.data() + n * H);
        activate(a, acc.data(), Yt, MH);
      }
    });
  } else {
    // W_hh^T once per call: the step's product is then a plain (N, H) x (H, H) GEMM, which OpenBLAS runs in
    // its small-matrix kernel without packing either operand at every step (the transposed form packed both)
    pool::Buffer<T> WhhT(size_t(H * H));
    blas::transpose(w.W_hh, H, H, WhhT.get());
    const T* WT = WhhT.get();
    if (blas::step_in_small_kernel(N, H, H)) {
      // In the small-GEMM kernel the whole step is one pass: Y_t = act(P_t + bc + h_{t-1} W_hh^T), the
      // accumulators starting from P_t + bc and activated in registers (the order of the Matvec path's sums).
      parallel::row_groups(N, fthreads, [&](int64_t n0, int64_t n1) {
        const int64_t M = n1 - n0;
        const T* bt = bc.data() + n0 * H;
        for (int64_t t = 0; t < Tn; ++t) {
          T* Yt = Y + t * NH + n0 * H;
          const T* Hprev = t > 0 ? Y + (t - 1) * NH + n0 * H : (h0 ? h0 + n0 * H : nullptr);
          const T* hp = Hprev ? Hprev : Yt;  // not read when K = 0
          const T* Pt = P(t) + n0 * H;
          if (a == Act::Tanh)
            blas::gemm_small_fused<T>(M, H, Hprev ? H : 0, hp, H, WT, H, Pt, H, bt, H, Yt, H,
                                      [](simd::V<T> v) { return simd::tanh(v); });
          else
            blas::gemm_small_fused<T>(M, H, Hprev ? H : 0, hp, H, WT, H, Pt, H, bt, H, Yt, H,
                                      [](simd::V<T> v) { return simd::relu<T>(v); });
        }
      });
    } else {
      std::vector<T> acc(static_cast<size_t>(NH));
      for (int64_t t = 0; t < Tn; ++t) {
        T* Yt = Y + t * NH;
        const T* Hprev = t > 0 ? Y + (t - 1) * NH : h0;
        if (!w.W_ih && NH > 0) std::memcpy(Yt, P(t), sizeof(T) * size_t(NH));
        if (Hprev) blas::gemm_step<T>(N, H, H, Hprev, H, WT, H, T(1), Yt, H);
        for (int64_t i = 0; i < NH; ++i) acc[size_t(i)] = Yt[i] + bc[size_t(i)];
        activate(a, acc.data(), Yt, NH);
      }
    }
  }
  if (NH == 0) return;
  if (Tn > 0) std::memcpy(h_n, Y + (Tn - 1) * NH, sizeof(T) * size_t(NH));
  else if (h0) std::memcpy(h_n, h0, sizeof(T) * size_t(NH));
  else std::fill(h_n, h_n + NH, T(0));
}

// One layer backward. dY (T, N, H) is the gradient reaching the layer's outputs (nullptr = zeros);
// dh_n_k (N, H) that of its final state (nullptr = zeros). Writes DZ (T, N, H), dX (T, N, Dk) =, dh0_k (N, H) =,
// dc (N, H) = when given; accumulates the layer's parameter gradients.
template <typename T>
void layer_backward(int64_t Tn, int64_t N, int64_t Dk, int64_t H, Act a, const LayerWeights<T>& w, LayerGrads<T>& g,
                    const T* X, const T* h0k, const T* Hs, const T* dY, const T* dh_n_k, T* DZ, T* dX, T* dh0_k, T* dc,
                    const Tuning& tu) {
  const int64_t NH = N * H;
  // 1. The serial part, in reverse: dz_t = (dy_t + dh_next) * act'(h_t); dh_next = dz_t W_hh.
  const bool small = choose(tu, N) == Path::Matvec;
  const wgrad::WeightGradJob<T> job = wgrad::job(Tn, N, Dk, H, H, w.W_ih, X, h0k, Hs, DZ, DZ, g.dW_hh, g.dW_ih, dX);
  // Rows dz_t[n0:n1] and dh_next (M, H), the gradient flowing into h_{t-1} from step t, of steps Tn-1 .. 0.
  auto serial = [&](int64_t n0, int64_t n1, const auto& each_step) {
    const int64_t M = n1 - n0, MH = M * H;
    std::vector<T> dh = wgrad::start_rows(dh_n_k, n0, M, H);
    T* dhn = dh.data();
    for (int64_t t = Tn - 1; t >= 0; --t) {
      T* dz = DZ + t * NH + n0 * H;
      backprop_act(a, dY ? dY + t * NH + n0 * H : nullptr, dhn, Hs + t * NH + n0 * H, dz, MH);  // through act
      each_step(t);
      if (small) {                                                      // into h_{t-1}
        std::fill(dhn, dhn + MH, T(0));
        for (int64_t n = 0; n < M; ++n) blas::matvec_rows(dz + n * H, H, w.W_hh, H, dhn + n * H, H);
      } else {
        blas::gemm_step<T>(M, H, H, dz, H, w.W_hh, H, T(0), dhn, H);
      }
    }
    if (MH > 0) std::memcpy(dh0_k + n0 * H, dhn, sizeof(T) * size_t(MH));
  };
  // Each step one thread's work: groups of sequences side by side, then the threads share the weight products;
  // otherwise dW_hh, dW_ih and dX in blocks of steps on a helper as the loop produces DZ (wgrad.h).
  const bool grouped = blas::fits_groups<T>(H, H) && (small || blas::step_in_small_kernel(N, H, H));
  wgrad::backward_loop(job, grouped, grouped ? blas::loop_threads(Tn, N, H, H) : 1, serial);
  // 2. The biases and c (the weight products are in).
  auto into_bias = [&]() {
    if (g.db_ih || dc) {                                                // into the biases and c
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
  };
  into_bias();
  // identity W_ih: no parameter, and the input's gradient is DZ itself
  if (!w.W_ih && dX != DZ && Tn * NH > 0) std::memcpy(dX, DZ, sizeof(T) * size_t(Tn * NH));
}

}  // namespace

template <typename T>
void rnn_forward_impl(const RnnForwardParams<T>& p, const Tuning& tu) {
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
    layer_forward<T>(Tn, N, Dk, H, p.act, p.layers[k], X, p.h0 ? p.h0 + k * NH : nullptr, k == 0 ? p.c : nullptr, Y,
                     p.h_n + k * NH, tu);
  }
  if (p.hs && TNH > 0) std::memcpy(p.out, p.hs + (L - 1) * TNH, sizeof(T) * size_t(TNH));
}

template <typename T>
void rnn_backward_impl(const RnnBackwardParams<T>& p, const Tuning& tu) {
  const int64_t Tn = p.T_, N = p.N, D = p.D, H = p.H, L = p.L;
  const int64_t NH = N * H, TNH = Tn * NH;
  const T* dY = p.dout;  // gradient reaching layer k's outputs; for k < L-1 it lives in p.dy
  for (int64_t k = L - 1; k >= 0; --k) {
    const int64_t Dk = k == 0 ? D : H;
    const T* X = k == 0 ? p.x : p.hs + (k - 1) * TNH;
    T* dX = k == 0 ? p.dx : p.dy;  // dy may be overwritten: this layer's dY was consumed into DZ already
    layer_backward<T>(Tn, N, Dk, H, p.act, p.layers[k], p.grads[k], X, p.h0 ? p.h0 + k * NH : nullptr, p.hs + k * TNH,
                      dY, p.dh_n ? p.dh_n + k * NH : nullptr, p.dz, dX, p.dh0 + k * NH, k == 0 ? p.dc : nullptr, tu);
    dY = p.dy;
  }
}

template void rnn_forward_impl<float>(const RnnForwardParams<float>&, const Tuning&);
template void rnn_forward_impl<double>(const RnnForwardParams<double>&, const Tuning&);
template void rnn_backward_impl<float>(const RnnBackwardParams<float>&, const Tuning&);
template void rnn_backward_impl<double>(const RnnBackwardParams<double>&, const Tuning&);

}  // namespace RNNFAST_ISA
}  // namespace cpu
}  // namespace rnnfast
