// Fused vanilla-RNN forward and backward on the CPU, side by side (docs/design.md section 2).
// Per layer: one GEMM for the input projection of all T*N rows, then a serial loop doing only the recurrent
// product fused with bias, constant input and activation; backward mirrors it and batches the weight and
// input gradients into GEMMs after the loop. Not validated here: the bindings check every argument.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#include "cpu/recurrent_avx2.h"
#define RNNFAST_DOT_KERNEL 1
#else
#define RNNFAST_DOT_KERNEL 0
#endif

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

#if RNNFAST_DOT_KERNEL
// y[0:H] += W h for W (H, H) row-major, float32, AVX2+FMA: eight rows at a time, each with its own vector
// accumulator over k, then one transposing horizontal reduction gives the eight sums. It reads W as stored,
// so the forward step needs no transposed copy of W_hh. The k tail uses masked loads (never past the row).
inline __m256 hsum8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5, __m256 a6, __m256 a7) {
  __m256 t0 = _mm256_hadd_ps(a0, a1), t1 = _mm256_hadd_ps(a2, a3);
  __m256 t2 = _mm256_hadd_ps(a4, a5), t3 = _mm256_hadd_ps(a6, a7);
  t0 = _mm256_hadd_ps(t0, t1);
  t2 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(t0, t2, 0x20), _mm256_permute2f128_ps(t0, t2, 0x31));
}

inline float hsum1(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

inline void matvec_dot(const float* __restrict W, int64_t H, const float* __restrict h, float* __restrict y) {
  const int64_t K8 = H & ~int64_t(7);
  const int rem = int(H - K8);
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  int64_t r = 0;
  for (; r + 8 <= H; r += 8) {
    const float* w = W + r * H;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int64_t k = 0; k < K8; k += 8) {
      const __m256 hv = _mm256_loadu_ps(h + k);
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), hv, a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + H + k), hv, a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 2 * H + k), hv, a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 3 * H + k), hv, a3);
      a4 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 4 * H + k), hv, a4);
      a5 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 5 * H + k), hv, a5);
      a6 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 6 * H + k), hv, a6);
      a7 = _mm256_fmadd_ps(_mm256_loadu_ps(w + 7 * H + k), hv, a7);
    }
    if (rem) {
      const __m256 hv = _mm256_maskload_ps(h + K8, mask);
      a0 = _mm256_fmadd_ps(_mm256_maskload_ps(w + K8, mask), hv, a0);
      a1 = _mm256_fmadd_ps(_mm256_maskload_ps(w + H + K8, mask), hv, a1);
      a2 = _mm256_fmadd_ps(_mm256_maskload_ps(w + 2 * H + K8, mask), hv, a2);
      a3 = _mm256_fmadd_ps(_mm256_maskload_ps(w + 3 * H + K8, mask), hv, a3);
      a4 = _mm256_fmadd_ps(_mm256_maskload_ps(w + 4 * H + K8, mask), hv, a4);
      a5 = _mm256_fmadd_ps(_mm256_maskload_ps(w + 5 * H + K8, mask), hv, a5);
      a6 = _mm256_fmadd_ps(_mm256_maskload_ps(w + 6 * H + K8, mask), hv, a6);
      a7 = _mm256_fmadd_ps(_mm256_maskload_ps(w + 7 * H + K8, mask), hv, a7);
    }
    _mm256_storeu_ps(y + r, _mm256_add_ps(_mm256_loadu_ps(y + r), hsum8(a0, a1, a2, a3, a4, a5, a6, a7)));
  }
  for (; r < H; ++r) {  // the last H % 8 rows
    const float* w = W + r * H;
    __m256 a = _mm256_setzero_ps();
    for (int64_t k = 0; k < K8; k += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(h + k), a);
    if (rem) a = _mm256_fmadd_ps(_mm256_maskload_ps(w + K8, mask), _mm256_maskload_ps(h + K8, mask), a);
    y[r] += hsum1(a);
  }
}
#endif

// y[i] = act(z[i]) for i < n, one loop per activation so each vectorises.
template <typename T>
inline void activate(Act a, const T* __restrict z, T* __restrict y, int64_t n) {
  if (a == Act::Tanh) {
    for (int64_t i = 0; i < n; ++i) y[i] = fast_tanh(z[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = act_relu(z[i]);
  }
}

#if RNNFAST_DOT_KERNEL
// float32 on AVX2: eight lanes at a time with the vector tanh (the scalar loop does not vectorise).
template <>
inline void activate<float>(Act a, const float* __restrict z, float* __restrict y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(z + i);
    _mm256_storeu_ps(y + i, a == Act::Tanh ? avx2_rec::tanh8(v) : avx2_rec::relu8(v));
  }
  if (i < n) {
    const __m256i m = avx2_rec::tail_mask(n - i);
    const __m256 v = _mm256_maskload_ps(z + i, m);
    _mm256_maskstore_ps(y + i, m, a == Act::Tanh ? avx2_rec::tanh8(v) : avx2_rec::relu8(v));
  }
}
#endif

// dz[i] = (dy[i] + dh[i]) * act'(y[i]) for i < n; dy may be nullptr (zeros).
template <typename T>
inline void backprop_act(Act a, const T* __restrict dy, const T* __restrict dh, const T* __restrict y,
                         T* __restrict dz, int64_t n) {
  if (a == Act::Tanh) {
    if (dy) for (int64_t i = 0; i < n; ++i) dz[i] = (dy[i] + dh[i]) * dact_tanh(y[i]);
    else for (int64_t i = 0; i < n; ++i) dz[i] = dh[i] * dact_tanh(y[i]);
  } else {
    if (dy) for (int64_t i = 0; i < n; ++i) dz[i] = (dy[i] + dh[i]) * dact_relu(y[i]);
    else for (int64_t i = 0; i < n; ++i) dz[i] = dh[i] * dact_relu(y[i]);
  }
}

// dst (H, H) = src^T
template <typename T>
std::vector<T> transposed(const T* src, int64_t H) {
  std::vector<T> dst(size_t(H * H));
  for (int64_t r = 0; r < H; ++r)
    for (int64_t c = 0; c < H; ++c) dst[size_t(c * H + r)] = src[r * H + c];
  return dst;
}

// The path this layer's recurrence takes (see Path in rnn_cpu.h); Packed exists for float32 on AVX2 only.
template <typename T>
Path choose(const Tuning& tu, int64_t N, int64_t H) {
  constexpr bool packed_ok = RNNFAST_DOT_KERNEL && std::is_same<T, float>::value;
  Path p = tu.path;
  if (p == Path::Auto) p = N <= tu.small_batch ? Path::Matvec : Path::Blas;
  if (p == Path::Packed && !packed_ok) p = Path::Blas;
  return p;
}

// Threads for the Packed recurrence: only when a step has enough work to pay for a barrier.
inline int step_threads(const Tuning& tu, int64_t N, int64_t H) {
  return double(N) * double(H) * double(H) >= double(tu.step_threads_min) ? tu.threads : 1;
}

// One layer forward. X (T, N, Dk) is the layer's input; Y (T, N, H) receives its hidden states.
template <typename T>
void layer_forward(int64_t Tn, int64_t N, int64_t Dk, int64_t H, Act a, const LayerWeights<T>& w, const T* X,
                   const T* h0, const T* c, T* Y, T* h_n, const Tuning& tu) {
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
  const Path path = choose<T>(tu, N, H);
#if RNNFAST_DOT_KERNEL
  if constexpr (std::is_same<T, float>::value) {
    if (path == Path::Packed) {
      avx2_rec::forward(Tn, N, H, a, w.W_hh, h0, bc.data(), Y, step_threads(tu, N, H));
      if (Tn > 0) std::memcpy(h_n, Y + (Tn - 1) * NH, sizeof(T) * size_t(NH));
      else if (h0) std::memcpy(h_n, h0, sizeof(T) * size_t(NH));
      else std::fill(h_n, h_n + NH, T(0));
      return;
    }
  }
#endif
  std::vector<T> acc(static_cast<size_t>(NH));
  if (path == Path::Matvec) {
    // Small batch: one matrix-vector product per sequence, no BLAS call per step.
    constexpr bool dot = RNNFAST_DOT_KERNEL && std::is_same<T, float>::value;
    std::vector<T> WT;  // W_hh^T for the portable axpy kernel
    if (!dot) WT = transposed(w.W_hh, H);
    for (int64_t t = 0; t < Tn; ++t) {
      T* Yt = Y + t * NH;
      const T* Hprev = t > 0 ? Y + (t - 1) * NH : h0;
      for (int64_t i = 0; i < NH; ++i) acc[size_t(i)] = Yt[i] + bc[size_t(i)];
      if (Hprev) {
        for (int64_t n = 0; n < N; ++n) {
#if RNNFAST_DOT_KERNEL
          if constexpr (dot) matvec_dot(w.W_hh, H, Hprev + n * H, acc.data() + n * H);
          else
#endif
            blas::matvec_rows(Hprev + n * H, H, WT.data(), H, acc.data() + n * H, H);
        }
      }
      activate(a, acc.data(), Yt, NH);
    }
  } else {
    for (int64_t t = 0; t < Tn; ++t) {
      T* Yt = Y + t * NH;
      const T* Hprev = t > 0 ? Y + (t - 1) * NH : h0;
      if (Hprev) blas::gemm<T>(false, true, N, H, H, T(1), Hprev, H, w.W_hh, H, T(1), Yt, H);
      for (int64_t i = 0; i < NH; ++i) acc[size_t(i)] = Yt[i] + bc[size_t(i)];
      activate(a, acc.data(), Yt, NH);
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
                    T* dX, T* dh0_k, T* dc, const Tuning& tu) {
  const int64_t NH = N * H;
  // 1. The serial part, in reverse: dz_t = (dy_t + dh_next) * act'(h_t); dh_next = dz_t W_hh.
  const Path path = choose<T>(tu, N, H);
  bool done = false;
#if RNNFAST_DOT_KERNEL
  if constexpr (std::is_same<T, float>::value) {
    if (path == Path::Packed) {
      avx2_rec::backward(Tn, N, H, a, w.W_hh, Hs, dY, dh_n_k, DZ, dh0_k, step_threads(tu, N, H));
      done = true;
    }
  }
#endif
  // dh_next (N, H): gradient flowing into h_{t-1} from step t
  std::vector<T> dh_next(size_t(done ? 0 : NH), T(0));
  if (dh_n_k && !done) std::memcpy(dh_next.data(), dh_n_k, sizeof(T) * size_t(NH));
  const bool small = path == Path::Matvec;
  for (int64_t t = done ? -1 : Tn - 1; t >= 0; --t) {
    T* dz = DZ + t * NH;
    backprop_act(a, dY ? dY + t * NH : nullptr, dh_next.data(), Hs + t * NH, dz, NH);  // through the activation
    if (small) {                                                        // into h_{t-1}
      std::fill(dh_next.begin(), dh_next.end(), T(0));
      for (int64_t n = 0; n < N; ++n) blas::matvec_rows(dz + n * H, H, w.W_hh, H, dh_next.data() + n * H, H);
    } else {
      blas::gemm<T>(false, false, N, H, H, T(1), dz, H, w.W_hh, H, T(0), dh_next.data(), H);
    }
  }
  if (!done) std::memcpy(dh0_k, dh_next.data(), sizeof(T) * size_t(NH));
  // 2. Everything else as whole-sequence GEMMs and reductions.
  auto into_hh_bias = [&]() {
    if (Tn > 1)                                                         // into W_hh, steps 1..T-1
      blas::gemm<T>(true, false, H, H, (Tn - 1) * N, T(1), DZ + NH, H, Hs, H, T(1), g.dW_hh, H);
    if (Tn > 0 && h0k)                                                  // into W_hh, step 0 reads h0
      blas::gemm<T>(true, false, H, H, N, T(1), DZ, H, h0k, H, T(1), g.dW_hh, H);
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
  auto into_ih_input = [&]() {
    blas::gemm<T>(true, false, H, Dk, Tn * N, T(1), DZ, H, X, Dk, T(1), g.dW_ih, Dk);   // into W_ih
    blas::gemm<T>(false, false, Tn * N, Dk, H, T(1), DZ, H, w.W_ih, Dk, T(0), dX, Dk);  // into the input
  };
  into_hh_bias();
  into_ih_input();
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
    layer_forward<T>(Tn, N, Dk, H, p.act, p.layers[k], X, p.h0 ? p.h0 + k * NH : nullptr,
                     k == 0 ? p.c : nullptr, Y, p.h_n + k * NH, tu);
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
    layer_backward<T>(Tn, N, Dk, H, p.act, p.layers[k], p.grads[k], X, p.h0 ? p.h0 + k * NH : nullptr,
                      p.hs + k * TNH, dY, p.dh_n ? p.dh_n + k * NH : nullptr, p.dz, dX, p.dh0 + k * NH,
                      k == 0 ? p.dc : nullptr, tu);
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
