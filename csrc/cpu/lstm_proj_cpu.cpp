// LSTM with projections (proj_size P > 0), forward and backward of one layer and direction, CPU: the input
// projection for all T*N rows in one GEMM, then per step a GEMM into the gates, the pointwise cell, and a GEMM
// through W_hr. Not tuned like gated_cpu.cpp (no microkernels, no ISA variants); the math is reference.py's
// lstm_proj_* and torch's.
#include "cpu/lstm_proj_cpu.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/blas.h"
#include "rnnfast/cell_math.h"

namespace rnnfast {
namespace cpu {

namespace {

inline bool valid(const int64_t* lengths, int64_t n, int64_t t) { return lengths == nullptr || t < lengths[n]; }

}  // namespace

template <typename T>
void lstm_proj_forward(const LstmProjParams<T>& p) {
  const int64_t Tn = p.T_, N = p.N, D = p.D, H = p.H, P = p.P, G = 4 * H;
  if (Tn == 0 || N == 0) {
    if (N) {
      std::copy(p.h0, p.h0 + N * P, p.h_n);
      std::copy(p.c0, p.c0 + N * H, p.c_n);
    }
    return;
  }
  std::vector<T> own_gates;
  T* A = p.gates;                                    // (T, N, 4H): pre-activations, then the gates
  if (A == nullptr) {
    own_gates.resize(size_t(Tn * N * G));
    A = own_gates.data();
  }
  // A = X W_ih^T + (b_ih + b_hh), all rows at once
  for (int64_t r = 0; r < Tn * N; ++r) {
    T* a = A + r * G;
    if (p.b_ih)
      for (int64_t j = 0; j < G; ++j) a[j] = p.b_ih[j] + p.b_hh[j];
    else std::fill(a, a + G, T(0));
  }
  blas::gemm<T>(false, true, Tn * N, G, D, T(1), p.x, D, p.W_ih, D, T(1), A, G);
  std::vector<T> h(p.h0, p.h0 + N * P), c(p.c0, p.c0 + N * H), m(size_t(N * H)), hp(size_t(N * P));
  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t t = p.reverse ? Tn - 1 - s : s;
    T* a = A + t * N * G;
    blas::gemm<T>(false, true, N, G, P, T(1), h.data(), P, p.W_hh, P, T(1), a, G);   // a += h W_hh^T
    for (int64_t n = 0; n < N; ++n) {
      T* an = a + n * G;
      T* cn = c.data() + n * H;
      T* mn = m.data() + n * H;
      const bool ok = valid(p.lengths, n, t);
      for (int64_t j = 0; j < H; ++j) {
        const T i = act_sigmoid(an[j]), f = act_sigmoid(an[H + j]), g = act_tanh(an[2 * H + j]),
                o = act_sigmoid(an[3 * H + j]);
        an[j] = i;
        an[H + j] = f;
        an[2 * H + j] = g;
        an[3 * H + j] = o;
        if (ok) {
          cn[j] = f * cn[j] + i * g;                 // c_t = f c_{t-1} + i g
          mn[j] = o * act_tanh(cn[j]);               // m_t = o tanh(c_t)
        } else {
          mn[j] = T(0);
        }
      }
    }
    blas::gemm<T>(false, true, N, P, H, T(1), m.data(), H, p.W_hr, H, T(0), hp.data(), P);   // m W_hr^T
    T* out = p.out + t * N * P;
    for (int64_t n = 0; n < N; ++n) {
      if (valid(p.lengths, n, t)) {
        std::copy(hp.data() + n * P, hp.data() + (n + 1) * P, h.data() + n * P);
        std::copy(hp.data() + n * P, hp.data() + (n + 1) * P, out + n * P);
      } else {
        std::fill(out + n * P, out + (n + 1) * P, T(0));
      }
    }
    if (p.cs) {
      std::copy(c.begin(), c.end(), p.cs + t * N * H);
      std::copy(m.begin(), m.end(), p.ms + t * N * H);
      std::copy(h.begin(), h.end(), p.hs + t * N * P);
    }
  }
  std::copy(h.begin(), h.end(), p.h_n);
  std::copy(c.begin(), c.end(), p.c_n);
}

template <typename T>
void lstm_proj_backward(const LstmProjParams<T>& p) {
  const int64_t Tn = p.T_, N = p.N, D = p.D, H = p.H, P = p.P, G = 4 * H;
  std::vector<T> dh(size_t(N * P), T(0)), dc(size_t(N * H), T(0)), dm(size_t(N * H)), tmp(size_t(N * P));
  if (p.dh_n) std::copy(p.dh_n, p.dh_n + N * P, dh.begin());
  if (p.dc_n) std::copy(p.dc_n, p.dc_n + N * H, dc.begin());
  std::vector<T> DA(size_t(Tn * N * G), T(0)), DH(size_t(Tn * N * P), T(0));
  for (int64_t s = Tn - 1; s >= 0; --s) {            // the forward's steps in reverse
    const int64_t t = p.reverse ? Tn - 1 - s : s;
    const int64_t tp = p.reverse ? t + 1 : t - 1;    // the step before t in the forward's order
    const T* hprev = s == 0 ? p.h0 : p.hs + tp * N * P;
    const T* cprev = s == 0 ? p.c0 : p.cs + tp * N * H;
    T* dht = DH.data() + t * N * P;
    for (int64_t n = 0; n < N; ++n) {                // the gradient reaching h_t: from later steps and dout
      if (!valid(p.lengths, n, t)) continue;
      for (int64_t k = 0; k < P; ++k) dht[n * P + k] = dh[n * P + k] + (p.dout ? p.dout[(t * N + n) * P + k] : T(0));
    }
    blas::gemm<T>(false, false, N, H, P, T(1), dht, P, p.W_hr, H, T(0), dm.data(), H);   // through W_hr into m
    const T* gt = p.gates + t * N * G;
    const T* ct = p.cs + t * N * H;
    T* da = DA.data() + t * N * G;
    for (int64_t n = 0; n < N; ++n) {
      if (!valid(p.lengths, n, t)) continue;          // a step past the length passes dh and dc through
      for (int64_t j = 0; j < H; ++j) {
        const int64_t r = n * G;
        const T i = gt[r + j], f = gt[r + H + j], g = gt[r + 2 * H + j], o = gt[r + 3 * H + j];
        const T tc = act_tanh(ct[n * H + j]);
        const T dmj = dm[n * H + j];
        const T dcn = dc[n * H + j] + dmj * o * dact_tanh(tc);   // through m = o tanh(c) into c
        da[r + j] = dcn * g * dact_sigmoid(i);                   // through c = f c_prev + i g, the activations
        da[r + H + j] = dcn * cprev[n * H + j] * dact_sigmoid(f);
        da[r + 2 * H + j] = dcn * i * dact_tanh(g);
        da[r + 3 * H + j] = dmj * tc * dact_sigmoid(o);          // ... and into o
        dc[n * H + j] = dcn * f;                                 // into the previous cell state
      }
    }
    blas::gemm<T>(false, false, N, P, G, T(1), da, G, p.W_hh, P, T(0), tmp.data(), P);   // into h_prev
    for (int64_t n = 0; n < N; ++n)
      if (valid(p.lengths, n, t)) std::copy(tmp.data() + n * P, tmp.data() + (n + 1) * P, dh.data() + n * P);
    blas::gemm<T>(true, false, G, P, N, T(1), da, G, hprev, P, T(1), p.dW_hh, P);         // into W_hh
  }
  std::copy(dh.begin(), dh.end(), p.dh0);
  std::copy(dc.begin(), dc.end(), p.dc0);
  if (Tn == 0 || N == 0) return;
  blas::gemm<T>(true, false, G, D, Tn * N, T(1), DA.data(), G, p.x, D, T(1), p.dW_ih, D);  // into W_ih
  blas::gemm<T>(true, false, P, H, Tn * N, T(1), DH.data(), P, p.ms, H, T(1), p.dW_hr, H); // into W_hr
  if (p.db_ih) {                                                                           // into both biases
    for (int64_t r = 0; r < Tn * N; ++r)
      for (int64_t j = 0; j < G; ++j) p.db_ih[j] += DA[size_t(r * G + j)];
    for (int64_t r = 0; r < Tn * N; ++r)
      for (int64_t j = 0; j < G; ++j) p.db_hh[j] += DA[size_t(r * G + j)];
  }
  blas::gemm<T>(false, false, Tn * N, D, G, T(1), DA.data(), G, p.W_ih, D, T(0), p.dx, D);  // into the input
}

template void lstm_proj_forward<float>(const LstmProjParams<float>&);
template void lstm_proj_forward<double>(const LstmProjParams<double>&);
template void lstm_proj_backward<float>(const LstmProjParams<float>&);
template void lstm_proj_backward<double>(const LstmProjParams<double>&);

}  // namespace cpu
}  // namespace rnnfast
