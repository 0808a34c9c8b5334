// Kernels of csrc/cpu/train_ops.h: the fused linear head + softmax cross-entropy, token-row gather and
// scatter-add, optimizers and clipping over flat buffers. Compiled once per ISA (generic, avx2, avx512;
// chosen in train_dispatch.cpp) with -ffp-contract=off so the optimizers round exactly as NumPy does (the
// head's products call the small-GEMM kernel compiled with fused multiply-adds in small_gemm.cpp). Not a
// place for argument checks: the binding validated every shape, dtype and id before these run.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "cpu/blas.h"
#include "cpu/parallel.h"
#include "cpu/train_ops.h"

#ifndef RNNFAST_ISA
#define RNNFAST_ISA generic
#endif

namespace rnnfast {
namespace train {
namespace RNNFAST_ISA {

namespace {

// exp(x) for x <= 0 (shifted logits) in float32, branch-free so the row loop vectorises: Cephes' expf
// polynomial on x - n ln2, times 2^n built from the exponent bits. Relative error about 2 ulp; inputs
// below -87 give exp(-87) (beside the row maximum's 1 that is 0 for the softmax); NaN propagates.
inline float exp_neg(float x) {
  const float xc = x < -87.0f ? -87.0f : x;
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  float q = 1.9875691500e-4f;
  q = q * r + 1.3981999507e-3f;
  q = q * r + 8.3334519073e-3f;
  q = q * r + 4.1665795894e-2f;
  q = q * r + 1.6666665459e-1f;
  q = q * r + 5.0000001201e-1f;
  const float y = q * (r * r) + r + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return y * two_n;
}
inline double exp_neg(double x) { return std::exp(x); }

// Reductions in 8 independent lanes (the compiler may not reorder a floating-point reduction itself).
template <typename T>
inline T row_max(const T* z, int64_t V) {
  T m[8];
  for (int l = 0; l < 8; ++l) m[l] = z[0];
  int64_t j = 0;
  for (; j + 8 <= V; j += 8)
    for (int l = 0; l < 8; ++l) m[l] = z[j + l] > m[l] ? z[j + l] : m[l];
  for (; j < V; ++j) m[0] = z[j] > m[0] ? z[j] : m[0];
  for (int l = 1; l < 8; ++l) m[0] = m[l] > m[0] ? m[l] : m[0];
  return m[0];
}

template <typename T>
inline T row_sum(const T* z, int64_t V) {
  T s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= V; j += 8)
    for (int l = 0; l < 8; ++l) s[l] += z[j + l];
  for (; j < V; ++j) s[0] += z[j];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

}  // namespace

// The rows are cut into ng groups (a fixed count for the problem's size, never the thread count) that
// parallel::chunks shares out among rnnfast's threads. Group g does its rows' logits GEMM, softmax,
// dlogits and dh GEMM, and its part of dW (group 0 straight into dW, the others into buffers of their own),
// db and the loss; the parts are then added in group order. So the result does not depend on the thread
// count, and the two big products run on both cores as single-thread calls each thread makes for itself
// (a helper that never gets a core leaves its groups to the caller). One group when a group's GEMM would
// itself be threaded by BLAS (>= blas::thread_threshold()), below parallel::kMinWork, or when the dW parts
// would take over kPartBytes.
constexpr int64_t kGroupRows = 200, kMaxGroups = 8;
constexpr double kPartBytes = 4.0 * 1024 * 1024;

template <typename T>
double linear_xent(const XentParams<T>& p) {
  const int64_t M = p.M, K = p.K, V = p.V;
  auto row_weight = [&](int64_t r) -> T {
    if (p.has_ignore && p.targets[r] == p.ignore_index) return T(0);
    return p.weight ? p.weight[r] : T(1);
  };
  double denom;
  if (p.mean) {
    double s = 0;
    for (int64_t r = 0; r < M; ++r) s += double(row_weight(r));
    denom = std::max(s, 1.0);
  } else {
    denom = double(p.nseq);
  }
  int64_t ng = std::max<int64_t>(1, std::min<int64_t>(kMaxGroups, M / kGroupRows));
  const double gwork = double((M + ng - 1) / ng) * double(V) * double(K);
  if (gwork >= double(blas::thread_threshold()) || 3.0 * double(M) * double(V) * double(K) < parallel::kMinWork ||
      (p.dW && double(ng - 1) * double(V * K) * sizeof(T) > kPartBytes))
    ng = 1;
  const int64_t per = (M + ng - 1) / ng;
  // On a vector ISA, when a group's products are one thread's work, they run in the small-GEMM kernel
  // (blas.h; each element one sum in order, so any grouping gives the same bits): W^T (K, V) is made once.
  const bool small = simd::kBytes >= 32 && double(per) * double(V) * double(K) < double(blas::thread_threshold());
  std::vector<T> WT(small ? size_t(K * V) : 0), zero(small ? size_t(std::max(K, V)) : 0, T(0));
  if (small) blas::transpose(p.W, V, K, WT.data());
  std::vector<double> loss(size_t(ng), 0.0), dbp(p.db ? size_t(ng * V) : 0, 0.0);
  // the dW parts of groups 1.. (each written whole by its group's GEMM with beta 0: no zeroing pass)
  std::unique_ptr<T[]> dWp(p.dW && ng > 1 ? new T[size_t((ng - 1) * V * K)] : nullptr);
  auto group = [&](int64_t g) {
    const int64_t r0 = g * per, r1 = std::min(M, r0 + per), m = r1 - r0;
    if (m <= 0) return;  // M = 0 (ng <= M / kGroupRows leaves no group empty otherwise)
    const T* h = p.h + r0 * K;
    T* logits = p.logits + r0 * V;
    // logits (m, V) = h (m, K) W^T (K, V) + b
    if (small) {
      blas::small_gemm_nn<T>(m, V, K, h, K, WT.data(), V, p.b ? p.b : zero.data(), 0, logits, V);
    } else {
      if (p.b)
        for (int64_t r = 0; r < m; ++r) std::memcpy(logits + r * V, p.b, size_t(V) * sizeof(T));
      blas::gemm<T>(false, true, m, V, K, T(1), h, K, p.W, K, p.b ? T(1) : T(0), logits, V);
    }
    double ls = 0;
    for (int64_t r = 0; r < m; ++r) {
      T* z = logits + r * V;
      const T w = row_weight(r0 + r);
      const int64_t t = w != T(0) ? p.targets[r0 + r] : 0;
      const T mx = row_max(z, V);
      const T zt = z[t] - mx;
      for (int64_t j = 0; j < V; ++j) z[j] = exp_neg(z[j] - mx);  // softmax numerators, in place
      const T s = row_sum(z, V);
      ls -= double(w) * (double(zt) - std::log(double(s)));  // -w log softmax_t
      // dlogits = w (softmax - onehot(t)) / denom, written over the numerators
      const T coef = T(double(w) / denom);
      const T inv = coef / s;
      for (int64_t j = 0; j < V; ++j) z[j] *= inv;
      z[t] -= coef;
    }
    loss[size_t(g)] = ls;
    const T* dl = logits;
    if (p.dW) {  // into W (or group g's part)
      T* dst = g == 0 ? p.dW : dWp.get() + (g - 1) * V * K;
      if (small) blas::small_gemm_tn<T>(V, K, m, dl, V, h, K, g == 0 ? p.dW : zero.data(), g == 0 ? K : 0, dst, K);
      else blas::gemm<T>(true, false, V, K, m, T(1), dl, V, h, K, g == 0 ? T(1) : T(0), dst, K);
    }
    if (p.db) {  // into b
      double* acc = dbp.data() + g * V;
      for (int64_t r = 0; r < m; ++r)
        for (int64_t j = 0; j < V; ++j) acc[j] += double(dl[r * V + j]);
    }
    if (p.dh && small) blas::small_gemm_nn<T>(m, K, V, dl, V, p.W, K, zero.data(), 0, p.dh + r0 * K, K);  // into h
    else if (p.dh) blas::gemm<T>(false, false, m, K, V, T(1), dl, V, p.W, K, T(0), p.dh + r0 * K, K);
  };
  parallel::chunks(ng, ng > 1 ? blas::worker_threads() : 1, group);
  double total = 0;
  for (int64_t g = 0; g < ng; ++g) total += loss[size_t(g)];
  if (p.dW)
    for (int64_t g = 1; g < ng; ++g) {
      const T* part = dWp.get() + (g - 1) * V * K;
      for (int64_t i = 0; i < V * K; ++i) p.dW[i] += part[i];
    }
  if (p.db)
    for (int64_t j = 0; j < V; ++j) {
      double a = 0;
      for (int64_t g = 0; g < ng; ++g) a += dbp[size_t(g * V + j)];
      p.db[j] += T(a);
    }
  return total / denom;
}

template <typename T>
void gather_rows(const T* table, int64_t K, const int64_t* ids, int64_t M, T* out) {
  for (int64_t r = 0; r < M; ++r) std::memcpy(out + r * K, table + ids[r] * K, size_t(K) * sizeof(T));
}

template <typename T>
void scatter_add_rows(T* table, int64_t K, const int64_t* ids, int64_t M, const T* rows) {
  for (int64_t r = 0; r < M; ++r) {
    T* __restrict dst = table + ids[r] * K;
    const T* __restrict src = rows + r * K;
    for (int64_t j = 0; j < K; ++j) dst[j] += src[j];
  }
}

template <typename T>
void one_hot(const int64_t* ids, int64_t M, int64_t V, T* x) {
  std::memset(x, 0, size_t(M) * size_t(V) * sizeof(T));
  for (int64_t r = 0; r < M; ++r) x[r * V + ids[r]] = T(1);
}

template <typename T>
void sgd(T* __restrict p, const T* __restrict g, T* __restrict buf, int64_t n, double lr, double momentum, double wd,
         bool first) {
  const T tl = T(lr), tm = T(momentum), tw = T(wd);
  const bool has_wd = wd != 0.0, has_m = momentum != 0.0;
  for (int64_t i = 0; i < n; ++i) {
    T gi = has_wd ? g[i] + tw * p[i] : g[i];
    if (has_m) {
      gi = first ? gi : buf[i] * tm + gi;
      buf[i] = gi;
    }
    p[i] -= tl * gi;
  }
}

template <typename T>
void adagrad(T* __restrict p, const T* __restrict g, T* __restrict s, int64_t n, double lr, double eps) {
  const T tl = T(lr), te = T(eps);
  for (int64_t i = 0; i < n; ++i) {
    s[i] += g[i] * g[i];
    p[i] -= (tl * g[i]) / (std::sqrt(s[i]) + te);
  }
}

template <typename T>
void rmsprop(T* __restrict p, const T* __restrict g, T* __restrict s, int64_t n, double lr, double alpha, double eps) {
  const T tl = T(lr), ta = T(alpha), t1a = T(1 - alpha), te = T(eps);
  for (int64_t i = 0; i < n; ++i) {
    s[i] = s[i] * ta;
    s[i] += (t1a * g[i]) * g[i];
    p[i] -= (tl * g[i]) / (std::sqrt(s[i]) + te);
  }
}

template <typename T>
void adam(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v, int64_t n, double lr, double b1,
          double b2, double eps, int64_t t) {
  const double c1 = 1 - std::pow(b1, double(t)), c2 = 1 - std::pow(b2, double(t));
  const T tb1 = T(b1), t1b1 = T(1 - b1), tb2 = T(b2), t1b2 = T(1 - b2), step = T(lr / c1), tc2 = T(c2), te = T(eps);
  for (int64_t i = 0; i < n; ++i) {
    m[i] = m[i] * tb1;
    m[i] += t1b1 * g[i];
    v[i] = v[i] * tb2;
    v[i] += (t1b2 * g[i]) * g[i];
    p[i] -= (step * m[i]) / (std::sqrt(v[i] / tc2) + te);
  }
}

template <typename T>
void clip_value(T* g, int64_t n, double c) {
  const T hi = T(c), lo = T(-c);
  for (int64_t i = 0; i < n; ++i) g[i] = g[i] < lo ? lo : (g[i] > hi ? hi : g[i]);
}

template <typename T>
double l2_norm(const T* g, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += double(g[i + j]) * double(g[i + j]);
  for (; i < n; ++i) acc[0] += double(g[i]) * double(g[i]);
  return std::sqrt(((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
}

template <typename T>
void scale(T* g, int64_t n, double s) {
  const T ts = T(s);
  for (int64_t i = 0; i < n; ++i) g[i] *= ts;
}

template <typename T>
bool all_finite(const T* g, int64_t n) {
  // NaN and inf are the values whose exponent bits are all ones: an integer test that vectorises (the
  // floating-point x * 0 test did not: 0.8 ns per value). Blocks of 4096 so a bad value ends the scan soon.
  using U = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
  constexpr U kExp = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
  for (int64_t i0 = 0; i0 < n; i0 += 4096) {
    const int64_t i1 = std::min(n, i0 + 4096);
    U bad = 0;
    for (int64_t i = i0; i < i1; ++i) {
      U u;
      std::memcpy(&u, g + i, sizeof(U));
      bad |= U((u & kExp) == kExp);
    }
    if (bad) return false;
  }
  return true;
}

RNNFAST_TRAIN_INSTANTIATE(float)
RNNFAST_TRAIN_INSTANTIATE(double)

}  // namespace RNNFAST_ISA
}  // namespace train
}  // namespace rnnfast
