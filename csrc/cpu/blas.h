// The one place that talks to BLAS (scipy-openblas32, prefixed symbols scipy_cblas_*), plus the small-batch
// microkernel used instead of a BLAS call per time step. Not a general linear-algebra layer: row-major only,
// and only the shapes the RNN kernels need. Sizes are 64-bit here and split into int32 BLAS calls.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>

#include "cblas.h"

namespace rnnfast {
namespace blas {

// Largest row/reduction count handed to one BLAS call (blasint is 32-bit). Tests lower it to exercise the
// splitting path without allocating 2^31 elements.
inline int64_t& max_block() {
  static int64_t v = (int64_t(1) << 30);
  return v;
}

// GEMMs smaller than this many multiply-adds run on one thread: waking BLAS threads costs tens of
// microseconds on an idle machine and milliseconds on a busy one, more than such a GEMM takes alone.
inline int64_t& thread_threshold() {
  static int64_t v = int64_t(4) << 20;
  return v;
}

// The thread count rnnfast wants for large GEMMs (RNNFAST_NUM_THREADS / set_blas_num_threads); 0 = unset,
// meaning whatever OpenBLAS chose at load time (one per core).
inline std::atomic<int>& max_threads() {
  static std::atomic<int> v{0};
  return v;
}

// Sets OpenBLAS's (global) thread count to 1 for small calls and back to max_threads() for large ones,
// calling into OpenBLAS only when the wanted count changes. The count changes how OpenBLAS splits a call,
// which can change the rounding of its result (measured: up to 2e-7 relative in float32), so results are
// reproducible for one thread count, not across counts; concurrent callers stay correct to rounding.
// (This wheel exports no per-thread setter.)
inline void threads_for(int64_t M, int64_t N, int64_t K) {
  static std::atomic<int> current{-1};
  if (max_threads().load(std::memory_order_relaxed) == 0) max_threads() = scipy_openblas_get_num_threads();
  const int want = double(M) * double(N) * double(K) < double(thread_threshold()) ? 1 : max_threads().load();
  if (current.load(std::memory_order_relaxed) != want) {
    scipy_openblas_set_num_threads(want);
    current = want;
  }
}

inline void gemm_raw(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                     const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)M,
                    (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}
inline void gemm_raw(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                     int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  scipy_cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)M,
                    (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

// C (M, N) = alpha * op(A) op(B) + beta * C, row-major; op(A) is (M, K), op(B) is (K, N).
// A is (M, K) with lda, or (K, M) when ta; B is (K, N) with ldb, or (N, K) when tb.
// M and K may exceed 2^31: they are split into blocks; degenerate sizes are handled here, not by BLAS.
template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t i = 0; i < M; ++i) {
      T* c = C + i * ldc;
      if (beta == T(0)) std::fill(c, c + N, T(0));
      else for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
    return;
  }
  const int64_t blk = max_block();
  for (int64_t m0 = 0; m0 < M; m0 += blk) {
    const int64_t mb = std::min(blk, M - m0);
    const T* Am = ta ? A + m0 : A + m0 * lda;
    T* Cm = C + m0 * ldc;
    for (int64_t k0 = 0; k0 < K; k0 += blk) {
      const int64_t kb = std::min(blk, K - k0);
      const T* Ak = ta ? Am + k0 * lda : Am + k0;
      const T* Bk = tb ? B + k0 : B + k0 * ldb;
      threads_for(mb, N, kb);
      gemm_raw(ta, tb, mb, N, kb, alpha, Ak, lda, Bk, ldb, k0 == 0 ? beta : T(1), Cm, ldc);
    }
  }
}

// ---- small-batch microkernels ----
// These replace a BLAS call per time step when the batch is tiny: at N = 1..4 the step is a few thousand
// FMAs and a BLAS call's fixed cost (argument checks, packing, thread hand-off) would dominate.

// Vector block of the axpy kernel: 256 bytes = 8 AVX registers of accumulators.
template <typename T>
constexpr int64_t block() { return 256 / int64_t(sizeof(T)); }

// out[0:len] += sum_k v[k] * m[k, 0:len] for one block; Full makes len the compile-time block size.
template <typename T, bool Full>
inline void axpy_block(const T* __restrict v, int64_t K, const T* __restrict m, int64_t ldm, T* __restrict out,
                       int64_t r) {
  constexpr int64_t B = block<T>();
  const int64_t len = Full ? B : r;
  T acc[B];
  for (int64_t j = 0; j < len; ++j) acc[j] = out[j];
  for (int64_t k = 0; k < K; ++k) {
    const T vk = v[k];
    const T* mk = m + k * ldm;
    for (int64_t j = 0; j < len; ++j) acc[j] += vk * mk[j];
  }
  for (int64_t j = 0; j < len; ++j) out[j] = acc[j];
}

// out[0:n] += sum_k v[k] * M[k, 0:n], M row-major with row stride ldm >= n.
// The axpy form vectorises without reassociating sums: each block of `out` stays in registers while all K
// rows stream past (8 independent FMA chains hide the FMA latency). The last block may be partial.
template <typename T>
inline void matvec_rows(const T* __restrict v, int64_t K, const T* __restrict M, int64_t ldm, T* __restrict out,
                        int64_t n) {
  constexpr int64_t B = block<T>();
  int64_t j0 = 0;
  for (; j0 + B <= n; j0 += B) axpy_block<T, true>(v, K, M + j0, ldm, out + j0, B);
  if (j0 < n) axpy_block<T, false>(v, K, M + j0, ldm, out + j0, n - j0);
}

}  // namespace blas
}  // namespace rnnfast
