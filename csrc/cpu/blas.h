// The one place that talks to BLAS (scipy-openblas32, prefixed symbols scipy_cblas_*), plus the small-batch
// microkernels used instead of a BLAS call per time step. Not a general linear-algebra layer: row-major only,
// and only the shapes the RNN kernels need. Sizes are 64-bit here and split into int32 BLAS calls.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>

#include "cblas.h"
#include "cpu/isa_ns.h"
#include "cpu/parallel.h"
#include "cpu/simd.h"

namespace rnnfast {
namespace blas {

// The settings below are one object each for the whole extension (defined once, in blas.cpp), whichever
// kernel build calls them; everything after them is compiled per ISA, in an inline namespace named after
// the build (cpu/isa_ns.h), so the builds' copies stay apart at link time.

// Largest row/reduction count handed to one BLAS call (blasint is 32-bit). Tests lower it to exercise the
// splitting path without allocating 2^31 elements.
int64_t& max_block();

// GEMMs smaller than this many multiply-adds (32M: about 0.3 ms on one core) run on one thread. Waking BLAS
// threads costs tens of microseconds on an idle machine and milliseconds on a busy one, and a threaded call
// waits for its slowest thread: on 2 cores, with another process busy on one of them, a char-LM training step
// (V=96, H=128, T=50, N=32; largest GEMM 26M) took 68 ms at a 4M threshold against 4.3-5 ms single-threaded.
// On a quiet machine, with NumPy and torch steps interleaved, 4M was 10% faster (4.3 against 4.8 ms).
int64_t& thread_threshold();

// The thread count rnnfast wants for large GEMMs (RNNFAST_NUM_THREADS / set_blas_num_threads); 0 = unset,
// meaning whatever OpenBLAS chose at load time (one per core).
std::atomic<int>& max_threads();

// Sets OpenBLAS's (global) thread count to 1 for small calls and back to max_threads() for large ones,
// calling into OpenBLAS only when the wanted count changes. The count changes how OpenBLAS splits a call,
// which can change the rounding of its result (measured: up to 2e-7 relative in float32), so results are
// reproducible for one thread count, not across counts; concurrent callers stay correct to rounding.
// (This wheel exports no per-thread setter.)
void threads_for(int64_t M, int64_t N, int64_t K);

// The threads a kernel that splits its own work may use: max_threads() when set, else OpenBLAS's count.
int worker_threads();

inline namespace RNNFAST_ISA_NS {

inline void gemm_raw(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                     const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)M,
                    (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}
inline void gemm_raw(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
                     const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  scipy_cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)M,
                    (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

// C (M, N) = alpha * op(A) op(B) + beta * C, row-major; op(A) is (M, K), op(B) is (K, N).
// A is (M, K) with lda, or (K, M) when ta; B is (K, N) with ldb, or (N, K) when tb.
// M and K may exceed 2^31: they are split into blocks; degenerate sizes are handled here, not by BLAS.
template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb,
          T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t i = 0; i < M; ++i) {
      T* c = C + i * ldc;
      if (beta == T(0)) std::fill(c, c + N, T(0));
      else
        for (int64_t j = 0; j < N; ++j) c[j] *= beta;
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

// ---- small-batch microkernels (written once against simd.h, compiled per ISA) ----
// These replace a BLAS call per time step when the batch is tiny: at N = 1..4 the step is a few thousand
// FMAs and a BLAS call's fixed cost (argument checks, packing, thread hand-off) would dominate.

// y[0:R] += W h for W (R, K) row-major, h (K): one block of `lanes` rows at a time, each row with its own
// vector accumulator over k, then one transposing reduction gives the block's sums as one vector. Reads W
// as stored (no transposed copy); the k tail uses masked loads (never past the row).
template <typename T>
inline void matvec_dot(const T* __restrict W, int64_t R, int64_t K, const T* __restrict h, T* __restrict y) {
  using VT = simd::V<T>;
  constexpr int n = simd::lanes<T>();
  const int64_t K0 = K - K % n;
  const simd::Tail tk(K - K0);
  int64_t r = 0;
  for (; r + n <= R; r += n) {
    const T* w = W + r * K;
    VT a[n];
    for (int i = 0; i < n; ++i) a[i] = VT{};
    for (int64_t k = 0; k < K0; k += n) {
      const VT hv = simd::load(h + k);
      for (int i = 0; i < n; ++i) a[i] += simd::load(w + i * K + k) * hv;
    }
    if (tk.m) {
      const VT hv = tk.load(h + K0);
      for (int i = 0; i < n; ++i) a[i] += tk.load(w + i * K + K0) * hv;
    }
    simd::store(y + r, simd::load(y + r) + simd::reduce_rows<T>(a));
  }
  for (; r < R; ++r) {  // the last R % lanes rows
    const T* w = W + r * K;
    VT a = {};
    for (int64_t k = 0; k < K0; k += n) a += simd::load(w + k) * simd::load(h + k);
    if (tk.m) a += tk.load(w + K0) * tk.load(h + K0);
    y[r] += simd::hsum<T>(a);
  }
}

// out[0:NV*lanes) (the last vector only its first `last` lanes) += sum_k v[k] * m[k, :]: NV accumulators
// stay in registers while all K rows stream past (independent FMA chains; no reassociated sums).
template <typename T, int NV>
inline void axpy_chunk(const T* __restrict v, int64_t K, const T* __restrict m, int64_t ldm, T* __restrict out,
                       int last) {
  using VT = simd::V<T>;
  constexpr int n = simd::lanes<T>();
  const simd::Tail tl(last);
  const bool full = last == n;
  VT acc[NV];
  for (int i = 0; i < NV - 1; ++i) acc[i] = simd::load(out + n * i);
  acc[NV - 1] = full ? simd::load(out + n * (NV - 1)) : tl.load(out + n * (NV - 1));
  for (int64_t k = 0; k < K; ++k) {
    const VT vk = simd::splat(v[k]);
    const T* mk = m + k * ldm;
    for (int i = 0; i < NV - 1; ++i) acc[i] += vk * simd::load(mk + n * i);
    acc[NV - 1] += vk * (full ? simd::load(mk + n * (NV - 1)) : tl.load(mk + n * (NV - 1)));
  }
  for (int i = 0; i < NV - 1; ++i) simd::store(out + n * i, acc[i]);
  if (full) simd::store(out + n * (NV - 1), acc[NV - 1]);
  else tl.store(out + n * (NV - 1), acc[NV - 1]);
}

// out[0:cols] += sum_k v[k] * M[k, 0:cols] for v (K), M (K, cols) row-major with row stride ldm >= cols:
// column chunks of 8 vectors, the last chunk shorter and its last vector masked.
template <typename T>
inline void matvec_rows(const T* __restrict v, int64_t K, const T* __restrict M, int64_t ldm, T* __restrict out,
                        int64_t cols) {
  constexpr int n = simd::lanes<T>();
  int64_t j0 = 0;
  for (; j0 + 8 * n <= cols; j0 += 8 * n) axpy_chunk<T, 8>(v, K, M + j0, ldm, out + j0, n);
  const int64_t r = cols - j0;
  if (r == 0) return;
  const int last = int(r - n * ((r - 1) / n));  // 1..n valid lanes in the last vector
  switch ((r + n - 1) / n) {
    case 1:
      axpy_chunk<T, 1>(v, K, M + j0, ldm, out + j0, last);
      break;
    case 2:
      axpy_chunk<T, 2>(v, K, M + j0, ldm, out + j0, last);
      break;
    case 3:
      axpy_chunk<T, 3>(v, K, M + j0, ldm, out + j0, last);
      break;
    case 4:
      axpy_chunk<T, 4>(v, K, M + j0, ldm, out + j0, last);
      break;
    case 5:
      axpy_chunk<T, 5>(v, K, M + j0, ldm, out + j0, last);
      break;
    case 6:
      axpy_chunk<T, 6>(v, K, M + j0, ldm, out + j0, last);
      break;
    case 7:
      axpy_chunk<T, 7>(v, K, M + j0, ldm, out + j0, last);
      break;
    default:
      axpy_chunk<T, 8>(v, K, M + j0, ldm, out + j0, last);
      break;
  }
}

// ---- the per-step recurrent product at small batch: C (M, N) += A (M, K) B (K, N), all row-major ----
// At batch 8..128 the step's GEMM (e.g. 32 x 128 x 512 for an LSTM at H = 128) is too small for OpenBLAS
// to amortise packing B at every step (measured: a third of the LSTM step in its copy routines). Here B is
// read in place: a register block of MR rows x NV vectors keeps its accumulators in registers over all K,
// broadcasting A[m, k] and loading NV contiguous vectors of row k of B; a column block's panel of B
// (K x NV vectors) is reused from L1 by every row block. Each C element is one sum over k in order, so the
// result is deterministic and independent of the blocking.
#if defined(__AVX512F__)
constexpr int kGemmMR = 8, kGemmNV = 2;  // 16 of the 32 vector registers accumulate
#else
constexpr int kGemmMR = 4, kGemmNV = 3;  // 12 of 16
#endif

// dst (C, ldd) = src (R, C)^T, both row-major, ldd >= R (columns R..ldd of dst are not written), in 32 x 32
// tiles (a plain double loop wrote with a stride of R elements and took 9 ms for a 1024 x 1024 weight, more
// than a whole H = 1024 step).
template <typename T>
inline void transpose(const T* __restrict src, int64_t R, int64_t C, T* __restrict dst, int64_t ldd = -1) {
  constexpr int64_t S = 32;
  if (ldd < 0) ldd = R;
  for (int64_t r0 = 0; r0 < R; r0 += S)
    for (int64_t c0 = 0; c0 < C; c0 += S) {
      const int64_t r1 = std::min(R, r0 + S), c1 = std::min(C, c0 + S);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) dst[c * ldd + r] = src[r * C + c];
    }
}

// The identity epilogue (gemm_small_fused applies one to each accumulator vector before it is stored).
struct NoEpilogue {
  template <typename VT>
  VT operator()(VT v) const {
    return v;
  }
};

// C (MR rows, NV vectors) = ep(C0 [+ C1] + A B): the accumulators start from C0 (and C1, when given), which
// may be C itself (each block reads its C0 before it writes C).
// FULL: the last vector is whole (a compile-time choice: with a run-time branch on it inside the k loop GCC
// kept the accumulators in memory, at half the speed).
template <typename T, int MR, int NV, bool FULL, typename Ep, bool TA = false>
inline void gemm_small_block_t(int64_t K, const T* __restrict A, int64_t lda, const T* __restrict B, int64_t ldb,
                               const T* C0, int64_t ldc0, const T* C1, int64_t ldc1, T* C, int64_t ldc, int last,
                               const Ep& ep) {
  using VT = simd::V<T>;
  constexpr int n = simd::lanes<T>();
  const simd::Tail tl(last);
  constexpr bool full = FULL;
  VT acc[MR][NV];
  for (int m = 0; m < MR; ++m) {
    for (int i = 0; i < NV - 1; ++i) acc[m][i] = simd::load(C0 + m * ldc0 + n * i);
    acc[m][NV - 1] = full ? simd::load(C0 + m * ldc0 + n * (NV - 1)) : tl.load(C0 + m * ldc0 + n * (NV - 1));
  }
  if (C1)
    for (int m = 0; m < MR; ++m) {
      for (int i = 0; i < NV - 1; ++i) acc[m][i] += simd::load(C1 + m * ldc1 + n * i);
      acc[m][NV - 1] += full ? simd::load(C1 + m * ldc1 + n * (NV - 1)) : tl.load(C1 + m * ldc1 + n * (NV - 1));
    }
  for (int64_t k = 0; k < K; ++k) {
    const T* bk = B + k * ldb;
    VT b[NV];
    for (int i = 0; i < NV - 1; ++i) b[i] = simd::load(bk + n * i);
    b[NV - 1] = full ? simd::load(bk + n * (NV - 1)) : tl.load(bk + n * (NV - 1));
    for (int m = 0; m < MR; ++m) {
      const VT a = simd::splat(TA ? A[k * lda + m] : A[m * lda + k]);
      for (int i = 0; i < NV; ++i) acc[m][i] += a * b[i];
    }
  }
  for (int m = 0; m < MR; ++m) {
    for (int i = 0; i < NV - 1; ++i) simd::store(C + m * ldc + n * i, ep(acc[m][i]));
    if (full) simd::store(C + m * ldc + n * (NV - 1), ep(acc[m][NV - 1]));
    else tl.store(C + m * ldc + n * (NV - 1), ep(acc[m][NV - 1]));
  }
}

template <typename T, int MR, int NV, typename Ep, bool TA = false>
inline void gemm_small_block(int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, const T* C0, int64_t ldc0,
                             const T* C1, int64_t ldc1, T* C, int64_t ldc, int last, const Ep& ep) {
  if (last == simd::lanes<T>())
    gemm_small_block_t<T, MR, NV, true, Ep, TA>(K, A, lda, B, ldb, C0, ldc0, C1, ldc1, C, ldc, last, ep);
  else gemm_small_block_t<T, MR, NV, false, Ep, TA>(K, A, lda, B, ldb, C0, ldc0, C1, ldc1, C, ldc, last, ep);
}

// All rows of one column block of NV vectors (the last `last` lanes valid): full MR-row blocks, then one
// block of the M % MR remaining rows.
template <typename T, int NV, typename Ep, bool TA = false>
inline void gemm_small_cols(int64_t M, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, const T* C0,
                            int64_t ldc0, const T* C1, int64_t ldc1, T* C, int64_t ldc, int last, const Ep& ep) {
  constexpr int MR = kGemmMR;
  int64_t m = 0;
  for (; m + MR <= M; m += MR)
    gemm_small_block<T, MR, NV, Ep, TA>(K, TA ? A + m : A + m * lda, lda, B, ldb, C0 + m * ldc0, ldc0,
                                        C1 ? C1 + m * ldc1 : nullptr, ldc1, C + m * ldc, ldc, last, ep);
  const T* a = TA ? A + m : A + m * lda;
  const T* c0 = C0 + m * ldc0;
  const T* c1 = C1 ? C1 + m * ldc1 : nullptr;
  T* c = C + m * ldc;
#define RNNFAST_GEMM_TAIL(R) gemm_small_block<T, R, NV, Ep, TA>(K, a, lda, B, ldb, c0, ldc0, c1, ldc1, c, ldc, last, ep)
  switch (M - m) {
    case 0:
      break;
    case 1:
      RNNFAST_GEMM_TAIL(1);
      break;
    case 2:
      RNNFAST_GEMM_TAIL(2);
      break;
    case 3:
      RNNFAST_GEMM_TAIL(3);
      break;
#if defined(__AVX512F__)
    case 4:
      RNNFAST_GEMM_TAIL(4);
      break;
    case 5:
      RNNFAST_GEMM_TAIL(5);
      break;
    case 6:
      RNNFAST_GEMM_TAIL(6);
      break;
    default:
      RNNFAST_GEMM_TAIL(7);
      break;
#else
    default:
      break;
#endif
  }
#undef RNNFAST_GEMM_TAIL
}

// C (M, N) = ep(C0 [+ C1] + A (M, K) B (K, N)), row-major with leading dimensions lda >= K, ldb >= N and
// ldc0, ldc1, ldc >= N; C0 may be C, and ldc0 = 0 starts every row from the one row C0 (a bias). TA: A is
// given transposed, (K, M) with lda >= M (its row k holds column k of A). One thread. Reads and writes
// nothing outside the M x K, K x N and M x N windows (the column tail is masked); K = 0 is ep(C0 [+ C1]).
template <typename T, typename Ep, bool TA = false>
inline void gemm_small_fused(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
                             const T* C0, int64_t ldc0, const T* C1, int64_t ldc1, T* C, int64_t ldc, const Ep& ep) {
  constexpr int n = simd::lanes<T>();
  constexpr int NV = kGemmNV;
  if (M <= 0 || N <= 0) return;
  if (K < 0) K = 0;
  int64_t j = 0;
  for (; j + NV * n <= N; j += NV * n)
    gemm_small_cols<T, NV, Ep, TA>(M, K, A, lda, B + j, ldb, C0 + j, ldc0, C1 ? C1 + j : nullptr, ldc1, C + j, ldc, n,
                                   ep);
  const int64_t r = N - j;
  if (r == 0) return;
  const int last = int(r - n * ((r - 1) / n));  // 1..n valid lanes in the last vector
  const T* c1 = C1 ? C1 + j : nullptr;
  switch ((r + n - 1) / n) {
    case 1:
      gemm_small_cols<T, 1, Ep, TA>(M, K, A, lda, B + j, ldb, C0 + j, ldc0, c1, ldc1, C + j, ldc, last, ep);
      break;
    case 2:
      gemm_small_cols<T, 2, Ep, TA>(M, K, A, lda, B + j, ldb, C0 + j, ldc0, c1, ldc1, C + j, ldc, last, ep);
      break;
    default:
      gemm_small_cols<T, 3, Ep, TA>(M, K, A, lda, B + j, ldb, C0 + j, ldc0, c1, ldc1, C + j, ldc, last, ep);
      break;
  }
}

// C (M, N) += A (M, K) B (K, N), row-major with leading dimensions lda >= K, ldb >= N, ldc >= N; one thread.
template <typename T>
inline void gemm_small_nn(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                          int64_t ldc) {
  if (K > 0) gemm_small_fused<T>(M, N, K, A, lda, B, ldb, C, ldc, nullptr, 0, C, ldc, NoEpilogue{});
}

// C (M, N) = C0 + A (M, K) B (K, N) (nn), or C0 + A^T B with A given as (K, M) (tn): gemm_small_fused with
// no epilogue, compiled out of line in small_gemm.cpp with fused multiply-adds for callers built without
// them (train_ops.cpp). ldc0 = 0 starts every row from the row C0. One thread; any sizes.
template <typename T>
void small_gemm_nn(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, const T* C0,
                   int64_t ldc0, T* C, int64_t ldc);
template <typename T>
void small_gemm_tn(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, const T* C0,
                   int64_t ldc0, T* C, int64_t ldc);

// Whether gemm_step runs (M, N, K) in gemm_small_nn (one thread's work at a batch of at most 128 on a vector
// ISA) rather than BLAS.
inline bool step_in_small_kernel(int64_t M, int64_t N, int64_t K) {
  return simd::kBytes >= 32 && M <= 128 && M * N * K < thread_threshold();
}

// The threads for a recurrence's serial loop over M independent sequences (rows) whose step product (M, N, K)
// is one thread's work (the small kernel or per-row matrix-vector products), Tn steps: the sequences are cut
// into groups that run the whole loop each, with no synchronisation between steps (parallel::row_groups).
// One thread below parallel::kMinWork multiply-adds in all.
inline int64_t loop_threads(int64_t Tn, int64_t M, int64_t N, int64_t K) {
  return M >= 2 && double(Tn) * double(M) * double(N) * double(K) >= parallel::kMinWork ? worker_threads() : 1;
}

// Whether a recurrent weight of N x K elements of T is small enough for groups of sequences: every group
// streams the whole weight through its own core's caches at every step, so a weight past half a 1 MB L2 made
// the groups slower than one loop with the weight gradients beside it (H = 512, N = 64 backward: 170 against
// 117 ms with the generic build's one loop).
template <typename T>
inline bool fits_groups(int64_t N, int64_t K) {
  return double(N) * double(K) * sizeof(T) <= double(512 << 10);
}

// The recurrent product of one time step, C (M, N) = beta C + A (M, K) B (K, N) with beta 0 or 1, all
// row-major: gemm_small_nn when it is one thread's work (below thread_threshold()) at a batch of at most 128
// on a vector ISA, else BLAS. Measured on the AVX-512 build, one thread, B warm in L2: 32 x 512 x 128 in
// 24 us against OpenBLAS's 30-34 us, 32 x 128 x 512 in 23 against 33-36, 32 x 128 x 128 level (5.8 / 5.4).
template <typename T>
inline void gemm_step(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C,
                      int64_t ldc) {
  if (step_in_small_kernel(M, N, K)) {
    if (beta == T(0))
      for (int64_t m = 0; m < M; ++m) std::fill(C + m * ldc, C + m * ldc + N, T(0));
    gemm_small_nn<T>(M, N, K, A, lda, B, ldb, C, ldc);
  } else {
    gemm<T>(false, false, M, N, K, T(1), A, lda, B, ldb, beta, C, ldc);
  }
}

}  // namespace RNNFAST_ISA_NS
}  // namespace blas
}  // namespace rnnfast
