// The recurrent step for float32 on AVX2+FMA CPUs: W_hh packed once per call into 16-column panels, a
// register-blocked 4x16 microkernel, the epilogue (bias, constant input, activation; or the backward's
// dz = (dy + dh) * act'(h)) fused into the same pass, and the panels split over threads that stay alive for
// the whole sequence with one barrier per step, so each core keeps its slice of W_hh in its own cache.
// Included by rnn_cpu.cpp in its AVX2 build only; not a general GEMM.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "rnnfast/cell_math.h"
#include "rnnfast/params.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace rnnfast {
namespace cpu {
namespace avx2_rec {

constexpr int64_t NR = 16;  // panel width: two AVX registers
constexpr int64_t MR = 6;   // rows per microkernel call: 12 accumulators + 2 B + 1 broadcast = 15 registers

// tanh on 8 lanes: the rational form of cell_math.h's fast_tanh, NaN propagating.
inline __m256 tanh8(__m256 x) {
  const __m256 c = _mm256_set1_ps(7.90531110763549805f);
  const __m256 xc = _mm256_max_ps(_mm256_min_ps(x, c), _mm256_sub_ps(_mm256_setzero_ps(), c));
  const __m256 x2 = _mm256_mul_ps(xc, xc);
  __m256 p = _mm256_set1_ps(-2.76076847742355e-16f);
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.00018790482477e-13f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-8.60467152213735e-11f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(5.12229709037114e-08f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(1.48572235717979e-05f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(6.37261928875436e-04f));
  p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(4.89352455891786e-03f));
  p = _mm256_mul_ps(p, xc);
  __m256 q = _mm256_set1_ps(1.19825839466702e-06f);
  q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(1.18534705686654e-04f));
  q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(2.26843463243900e-03f));
  q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(4.89352518554385e-03f));
  const __m256 r = _mm256_div_ps(p, q);
  return _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

inline __m256 relu8(__m256 z) {  // max(z, 0) with NaN kept: MAXPS returns its second operand on NaN
  return _mm256_max_ps(_mm256_setzero_ps(), z);
}

// Packed B (K rows, H columns) as ceil(H/16) panels of K x 16 floats, zero-padded past column H.
// `from_rows_of_W`: B[k][j] = W[j][k] (forward: h W_hh^T); else B[k][j] = W[k][j] (backward: dz W_hh).
inline std::vector<float> pack(const float* W, int64_t H, bool from_rows_of_W) {
  const int64_t np = (H + NR - 1) / NR;
  std::vector<float> P(size_t(np * H * NR), 0.0f);
  for (int64_t p = 0; p < np; ++p) {
    float* dst = P.data() + p * H * NR;
    const int64_t cols = std::min(NR, H - p * NR);
    if (from_rows_of_W) {
      for (int64_t c = 0; c < cols; ++c) {
        const float* src = W + (p * NR + c) * H;
        for (int64_t k = 0; k < H; ++k) dst[k * NR + c] = src[k];
      }
    } else {
      for (int64_t k = 0; k < H; ++k)
        for (int64_t c = 0; c < cols; ++c) dst[k * NR + c] = W[k * H + p * NR + c];
    }
  }
  return P;
}

// acc[r] (2 registers each) = sum_k A[r][k] * Bp[k][0:16] for r < R rows of A (row stride lda).
template <int R>
inline void micro(const float* __restrict A, int64_t lda, const float* __restrict Bp, int64_t K, __m256 (&lo)[MR],
                  __m256 (&hi)[MR]) {
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const __m256 b0 = _mm256_loadu_ps(Bp + k * NR), b1 = _mm256_loadu_ps(Bp + k * NR + 8);
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(A + r * lda + k);
      lo[r] = _mm256_fmadd_ps(a, b0, lo[r]);
      hi[r] = _mm256_fmadd_ps(a, b1, hi[r]);
    }
  }
}

inline void micro_any(int R, const float* A, int64_t lda, const float* Bp, int64_t K, __m256 (&lo)[MR],
                      __m256 (&hi)[MR]) {
  switch (R) {
    case 6: micro<6>(A, lda, Bp, K, lo, hi); break;
    case 5: micro<5>(A, lda, Bp, K, lo, hi); break;
    case 4: micro<4>(A, lda, Bp, K, lo, hi); break;
    case 3: micro<3>(A, lda, Bp, K, lo, hi); break;
    case 2: micro<2>(A, lda, Bp, K, lo, hi); break;
    default: micro<1>(A, lda, Bp, K, lo, hi); break;
  }
}

inline __m256i tail_mask(int64_t n) {  // lanes < n active (n may exceed 8)
  const int m = int(std::min<int64_t>(std::max<int64_t>(n, 0), 8));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(m), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Loads/stores 16 floats, or only the first `cols` of them.
struct Cols {
  int64_t cols;
  __m256i m0, m1;
  explicit Cols(int64_t c) : cols(c), m0(tail_mask(c)), m1(tail_mask(c - 8)) {}
  void load(const float* p, __m256& a, __m256& b) const {
    if (cols == NR) { a = _mm256_loadu_ps(p); b = _mm256_loadu_ps(p + 8); }
    else { a = _mm256_maskload_ps(p, m0); b = _mm256_maskload_ps(p + 8, m1); }
  }
  void store(float* p, __m256 a, __m256 b) const {
    if (cols == NR) { _mm256_storeu_ps(p, a); _mm256_storeu_ps(p + 8, b); }
    else { _mm256_maskstore_ps(p, m0, a); _mm256_maskstore_ps(p + 8, m1, b); }
  }
};

// The range of panels thread `tid` of `nt` owns.
inline void my_panels(int64_t np, int tid, int nt, int64_t& p0, int64_t& p1) {
  p0 = np * tid / nt;
  p1 = np * (tid + 1) / nt;
}

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// A spinning barrier for the threads of one parallel region, one per time step. OpenMP's barrier costs
// about a microsecond; this one costs two cache-line transfers, which matters when a step is only a few
// hundred nanoseconds of work. After a long spin it yields, so an oversubscribed machine still progresses.
struct SpinBarrier {
  alignas(64) std::atomic<int> count{0};
  alignas(64) std::atomic<int> gen{0};
  int n = 1;
  void wait() {
    if (n <= 1) return;
    const int g = gen.load(std::memory_order_acquire);
    if (count.fetch_add(1, std::memory_order_acq_rel) == n - 1) {
      count.store(0, std::memory_order_relaxed);
      gen.store(g + 1, std::memory_order_release);
    } else {
      int spins = 0;
      while (gen.load(std::memory_order_acquire) == g) {
        _mm_pause();
        if (++spins == 4096) {
          spins = 0;
          std::this_thread::yield();
        }
      }
    }
  }
};

// Every thread of the region learns the team size before the first step.
inline void team_start(SpinBarrier& b) {
#ifdef _OPENMP
#pragma omp single
  b.n = omp_get_num_threads();
#else
  b.n = 1;
#endif
}

// Runs body(p0, p1, barrier) on `nthreads` threads, each owning the panels [p0, p1) of np; the threads
// share one SpinBarrier for their per-step synchronisation.
template <typename Body>
inline void run_team(int64_t np, int nthreads, Body&& body) {
  SpinBarrier bar;
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
#endif
  {
    team_start(bar);
    int64_t p0, p1;
    my_panels(np, thread_id(), bar.n, p0, p1);
    body(p0, p1, bar);
  }
}

// For each of this thread's panels [p0, p1) and each block of up to MR rows: the product of rows of A
// (N, H; nullptr = zeros) with the panel, handed to epi(R, n0, p, cols, lo, hi) for the fused epilogue.
template <typename Epi>
inline void tiles(const float* A, int64_t N, int64_t H, const std::vector<float>& Wp, int64_t p0, int64_t p1,
                  Epi&& epi) {
  __m256 lo[MR], hi[MR];
  for (int64_t p = p0; p < p1; ++p) {
    const Cols cl(std::min(NR, H - p * NR));
    const float* Bp = Wp.data() + p * H * NR;
    for (int64_t n0 = 0; n0 < N; n0 += MR) {
      const int R = int(std::min(MR, N - n0));
      if (A) micro_any(R, A + n0 * H, H, Bp, H, lo, hi);
      else for (int r = 0; r < R; ++r) lo[r] = hi[r] = _mm256_setzero_ps();
      epi(R, n0, p, cl, lo, hi);
    }
  }
}

// Forward recurrence of one layer: Y_t = act(Y_t + bc + Y_{t-1} W_hh^T), Y_{-1} = h0 (nullptr = zeros).
// Y (T, N, H) holds the input projection on entry and the hidden states on exit; bc (N, H).
inline void forward(int64_t Tn, int64_t N, int64_t H, Act act, const float* W_hh, const float* h0, const float* bc,
                    float* Y, int nthreads) {
  const std::vector<float> Wp = pack(W_hh, H, /*from_rows_of_W=*/true);
  const int64_t np = (H + NR - 1) / NR, NH = N * H;
  run_team(np, nthreads, [&](int64_t p0, int64_t p1, SpinBarrier& bar) {
    for (int64_t t = 0; t < Tn; ++t) {
      float* Yt = Y + t * NH;
      tiles(t > 0 ? Y + (t - 1) * NH : h0, N, H, Wp, p0, p1,
            [&](int R, int64_t n0, int64_t p, const Cols& cl, const __m256* lo, const __m256* hi) {
              for (int r = 0; r < R; ++r) {  // epilogue: + P_t + bias (+ c), activation
                const int64_t off = (n0 + r) * H + p * NR;
                __m256 y0, y1, b0, b1;
                cl.load(Yt + off, y0, y1);
                cl.load(bc + off, b0, b1);
                y0 = _mm256_add_ps(_mm256_add_ps(y0, b0), lo[r]);
                y1 = _mm256_add_ps(_mm256_add_ps(y1, b1), hi[r]);
                if (act == Act::Tanh) { y0 = tanh8(y0); y1 = tanh8(y1); }
                else { y0 = relu8(y0); y1 = relu8(y1); }
                cl.store(Yt + off, y0, y1);
              }
            });
      bar.wait();
    }
  });
}

// dz = (dy + dh) * act'(y) on columns [c0, c0 + cols) of row block rows; dy may be nullptr (zeros).
inline __m256 dact8(Act act, __m256 y) {
  if (act == Act::Tanh) return _mm256_fnmadd_ps(y, y, _mm256_set1_ps(1.0f));
  return _mm256_and_ps(_mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ), _mm256_set1_ps(1.0f));
}

// Backward recurrence of one layer. Hs (T, N, H) hidden states, dY (T, N, H) or nullptr, dh_n (N, H) or
// nullptr. Writes DZ (T, N, H) with dz_t = (dy_t + dh_{t}) * act'(h_t), and dh0 (N, H) = dz_0 W_hh.
inline void backward(int64_t Tn, int64_t N, int64_t H, Act act, const float* W_hh, const float* Hs, const float* dY,
                     const float* dh_n, float* DZ, float* dh0, int nthreads) {
  const std::vector<float> Wp = pack(W_hh, H, /*from_rows_of_W=*/false);
  const int64_t np = (H + NR - 1) / NR, NH = N * H;
  run_team(np, nthreads, [&](int64_t p0, int64_t p1, SpinBarrier& bar) {
    const __m256 zero = _mm256_setzero_ps();
    // step T-1: dz = (dy + dh_n) * act'(h), elementwise
    if (Tn > 0) {
      const int64_t t = Tn - 1;
      for (int64_t p = p0; p < p1; ++p) {
        const Cols cl(std::min(NR, H - p * NR));
        for (int64_t n = 0; n < N; ++n) {
          const int64_t off = t * NH + n * H + p * NR;
          __m256 d0 = zero, d1 = zero, g0 = zero, g1 = zero, y0, y1;
          if (dY) cl.load(dY + off, d0, d1);
          if (dh_n) cl.load(dh_n + n * H + p * NR, g0, g1);
          cl.load(Hs + off, y0, y1);
          cl.store(DZ + off, _mm256_mul_ps(_mm256_add_ps(d0, g0), dact8(act, y0)),
                   _mm256_mul_ps(_mm256_add_ps(d1, g1), dact8(act, y1)));
        }
      }
    } else if (dh_n) {  // T = 0: the gradient passes straight through
      for (int64_t p = p0; p < p1; ++p) {
        const Cols cl(std::min(NR, H - p * NR));
        for (int64_t n = 0; n < N; ++n) {
          __m256 g0, g1;
          cl.load(dh_n + n * H + p * NR, g0, g1);
          cl.store(dh0 + n * H + p * NR, g0, g1);
        }
      }
    } else {
      for (int64_t p = p0; p < p1; ++p) {
        const Cols cl(std::min(NR, H - p * NR));
        for (int64_t n = 0; n < N; ++n) cl.store(dh0 + n * H + p * NR, zero, zero);
      }
    }
    bar.wait();
    // steps t = T-1 .. 0: dh = dz_t W_hh; then dz_{t-1} = (dy_{t-1} + dh) * act'(h_{t-1}), or dh0 = dh at t = 0
    for (int64_t t = Tn - 1; t >= 0; --t) {
      tiles(DZ + t * NH, N, H, Wp, p0, p1,
            [&](int R, int64_t n0, int64_t p, const Cols& cl, const __m256* lo, const __m256* hi) {
              for (int r = 0; r < R; ++r) {
                const int64_t col = (n0 + r) * H + p * NR;
                if (t == 0) {
                  cl.store(dh0 + col, lo[r], hi[r]);
                } else {
                  const int64_t off = (t - 1) * NH + col;
                  __m256 d0 = zero, d1 = zero, y0, y1;
                  if (dY) cl.load(dY + off, d0, d1);
                  cl.load(Hs + off, y0, y1);
                  cl.store(DZ + off, _mm256_mul_ps(_mm256_add_ps(d0, lo[r]), dact8(act, y0)),
                           _mm256_mul_ps(_mm256_add_ps(d1, hi[r]), dact8(act, y1)));
                }
              }
            });
      bar.wait();
    }
  });
}

}  // namespace avx2_rec
}  // namespace cpu
}  // namespace rnnfast
