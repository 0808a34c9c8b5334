// CUDA kernels and launchers of rnnfast._C_cuda: the stacked vanilla RNN (tanh, relu), forward and
// backward, float32 and float64. Reads top-down: helpers, kernels, launchers. Not the place for argument
// checks (csrc/bindings/bind_cuda.cpp) or array handling (python/rnnfast/_cuda_backend.py).
//
// GEMMs: cuBLAS is loaded at run time with dlopen and never linked; our own tiled GEMM is the fallback.
// Why: CI and the development machines have nvcc and the CUDA runtime but no cuBLAS, so the build must not
// need it, while on a GPU machine cuBLAS (the system CUDA or the nvidia-cublas wheel that PyTorch brings)
// runs the big input-projection and gradient GEMMs near the chip's FP32 rate, which a short hand-written
// kernel does not. The fallback keeps the module complete where no libcublas is found (and is tested by
// forcing it: RNNFAST_CUDA_GEMM=internal). cuBLAS is used in its default math mode: true FP32, no TF32.
//
// Recurrence: (a) persistent: one cooperative launch per layer; each block keeps its rows of W_hh in shared
// memory for all T steps and the blocks meet at a grid barrier once per step (one block: no grid barrier,
// the state stays in shared memory). It fits while W_hh spread over the multiprocessors, plus the state
// rows each block reads, fits in their shared memory (float32 on an H200: H = 2048 at small N, H = 1024 up
// to N = 64, H = 1760 up to N = 16). On Hopper, where W_hh fits in one thread-block cluster (up to 8
// blocks; float32 H up to about 700), the blocks of a cluster exchange the state through distributed
// shared memory and meet at the hardware cluster barrier instead of L2 and a grid barrier; clusters for
// different batch rows are independent (RNNFAST_CUDA_CLUSTER=0 turns this mode off). (b) stepwise: one
// GEMM per step (cuBLAS, then a pointwise kernel; or our tiled GEMM with the add and activation fused) for
// any size. Auto takes the persistent kernel wherever it fits, except for big per-step products at
// H >= 1024 where cuBLAS wins (measured, see plan_recurrence); a cost model picks the persistent tiling;
// RNNFAST_CUDA_RECURRENCE = auto | persistent | stepwise overrides the path.
#include <cooperative_groups.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/rnn_cuda.h"
#include "rnnfast/cell_math.h"
#include "rnnfast/params.h"

namespace rnnfast {
namespace cuda {

// ============================================================================================ helpers

[[noreturn]] void throw_cuda(cudaError_t e, const char* what, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  std::string msg = std::string(what) + " (" + file + ":" + std::to_string(line) + "): " + cudaGetErrorName(e) + ": " +
                    cudaGetErrorString(e);
  if (e == cudaErrorMemoryAllocation) throw OutOfMemory("CUDA out of memory in " + msg);
  throw CudaError("CUDA error in " + msg);
}
#define CK(call)                                                      \
  do {                                                                \
    cudaError_t e_ = (call);                                          \
    if (e_ != cudaSuccess) throw_cuda(e_, #call, __FILE__, __LINE__); \
  } while (0)

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
__host__ __device__ inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

template <typename T>
__device__ __forceinline__ T act_fwd(Act a, T z) {
  return a == Act::Tanh ? act_tanh(z) : act_relu(z);
}
template <typename T>
__device__ __forceinline__ T act_bwd(Act a, T y) {
  return a == Act::Tanh ? dact_tanh(y) : dact_relu(y);
}

// four consecutive values from shared memory in one (float) or two (double) 16-byte loads
__device__ __forceinline__ void lds4(const float* p, float v[4]) {
  float4 q = *reinterpret_cast<const float4*>(p);
  v[0] = q.x;
  v[1] = q.y;
  v[2] = q.z;
  v[3] = q.w;
}
__device__ __forceinline__ void lds4(const double* p, double v[4]) {
  double2 q0 = *reinterpret_cast<const double2*>(p);
  double2 q1 = *reinterpret_cast<const double2*>(p + 2);
  v[0] = q0.x;
  v[1] = q0.y;
  v[2] = q1.x;
  v[3] = q1.y;
}

// four consecutive values from global memory through L2 only (other blocks wrote them) into shared memory
__device__ __forceinline__ void ldcg4_to_smem(const float* g, float* d) {
  *reinterpret_cast<float4*>(d) = __ldcg(reinterpret_cast<const float4*>(g));
}
__device__ __forceinline__ void ldcg4_to_smem(const double* g, double* d) {
  reinterpret_cast<double2*>(d)[0] = __ldcg(reinterpret_cast<const double2*>(g));
  reinterpret_cast<double2*>(d)[1] = __ldcg(reinterpret_cast<const double2*>(g + 2));
}

__device__ __forceinline__ unsigned int ld_acquire_gpu(const unsigned int* p) {
  unsigned int v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// All blocks of a cooperative launch meet here. `bar` counts arrivals and is never reset during a launch
// (zeroed before it), so the k-th barrier waits for k * gridDim.x arrivals: no sense flag, no reuse race.
// The arrival is a release at GPU scope (cumulative: it covers the block's stores that __syncthreads
// ordered before it) and the wait an acquire, so no separate fences are needed.
__device__ __forceinline__ void grid_barrier(unsigned int* bar, unsigned int target) {
  __syncthreads();
  if (threadIdx.x == 0) {
    asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(bar), "r"(1u) : "memory");
    while (ld_acquire_gpu(bar) < target) {}
  }
  __syncthreads();
}

// ============================================================================================ kernels

// ---- the persistent recurrence ------------------------------------------------------------------
// One launch runs all steps of one layer. With state_s the state entering step s:
//   forward  (t = s):      seq[t] = act(seq[t] + state_s @ M^T + c),  state_0 = init (or zeros)
//   backward (t = T-1-s):  seq[t] = (seq[t] + state_s @ M^T) * act'(Y[t]), state_0 = zeros, and a last
//                          phase writes final_out = seq[0] @ M^T (dh0).
// seq holds the additive term on entry (P = X W_ih^T + b, or dy) and the new states on exit, in place.
// Block b owns the output tile rows [n0, n0+Nb) x columns [j0, j0+Hb); its rows of M sit in shared memory
// for the whole launch; each step it reads the state rows it needs (Nb x H) from L2.
template <typename T>
struct RecArgs {
  int T_, N, H;
  const T* M;                  // M(j, k) = M[j*m_sj + k*m_sk]: W_hh (forward) or W_hh^T (backward)
  int64_t m_sj, m_sk;
  T* seq;                      // (T, N, H) in: additive term, out: the states (=)
  const T* init;               // (N, H) state before the first step, or nullptr for zeros
  const T* c;                  // (N, H) constant input added at every step (forward), or nullptr
  const T* Y;                  // (T, N, H) backward: the forward's states of this layer
  T* final_out;                // (N, H) backward: = seq[0] @ M^T (dh0)
  Act act;
  unsigned int* bar;           // grid barrier counter, zero at launch
  int Nb, Hb, KS, Kp, nblk_h;  // tiling from plan_recurrence
  int single;                  // one block: the state stays in shared memory, no grid barrier
  int cluster;                 // > 1: blocks of a cluster of this size (= nblk_h) share the state through
                               // distributed shared memory and sync at the cluster barrier (sm_90+)
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define RNNFAST_CLUSTERS 1
#endif

template <typename T, int RN, int RH, bool kBwd>
__global__ void __launch_bounds__(512, 1) rec_persistent_kernel(const RecArgs<T> a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int Kp = a.Kp, H = a.H, N = a.N, P = blockDim.x, tid = threadIdx.x;
  const int Hbp = int(round_up(a.Hb, RH)), Nbp = int(round_up(a.Nb, RN));
  T* Ms = reinterpret_cast<T*>(smem_raw);  // (Hbp, Kp) my rows of M, zero-padded
  T* Ss0 = Ms + (int64_t)Hbp * Kp;         // (Nbp, Kp) the state rows I read
  T* Ss1 = Ss0 + (int64_t)Nbp * Kp;        // second state buffer (single block or cluster)
  const bool clus = a.cluster > 1;
  const bool local_state = a.single || clus;  // the state lives in shared memory, double-buffered
#ifndef RNNFAST_CLUSTERS
  if (clus) __trap();  // the host never asks for clusters below sm_90
#endif
  const int bn = blockIdx.x / a.nblk_h, bh = blockIdx.x % a.nblk_h;
  const int n0 = bn * a.Nb, j0 = bh * a.Hb;
  const int nv = min(a.Nb, N - n0), hv = min(a.Hb, H - j0);

  // M tile -> shared memory once; consecutive threads walk the unit-stride direction of the source
  if (a.m_sk == 1) {
    for (int i = tid; i < Hbp * Kp; i += P) {
      const int r = i / Kp, k = i - r * Kp;
      Ms[i] = (r < hv && k < H) ? a.M[(int64_t)(j0 + r) * a.m_sj + k] : T(0);
    }
  } else {
    for (int i = tid; i < Hbp * Kp; i += P) {
      const int k = i / Hbp, r = i - k * Hbp;
      Ms[(int64_t)r * Kp + k] = (r < hv && k < H) ? a.M[(int64_t)(j0 + r) * a.m_sj + (int64_t)k * a.m_sk] : T(0);
    }
  }
  for (int i = tid; i < (local_state ? 2 : 1) * Nbp * Kp; i += P) Ss0[i] = T(0);  // padding stays zero
  __syncthreads();
#ifdef RNNFAST_CLUSTERS
  if (clus) cooperative_groups::this_cluster().sync();  // peers write into our state only after this
#endif

  // this thread's micro-tile: RN state rows x RH output columns, K split over KS neighbouring lanes
  const int mth = Hbp / RH, MT = (Nbp / RN) * mth;
  const int ks = tid % a.KS;
  int mt = tid / a.KS;
  const bool active = mt < MT;
  if (!active) mt = 0;  // idle lanes compute a copy of tile 0 and write nothing (they join the shuffles)
  const int rn0 = (mt / mth) * RN, rh0 = (mt % mth) * RH;
  const bool writer = active && ks == 0;
  const int64_t NH = (int64_t)N * H;
  const bool vec_load =
      (H % 4) == 0 && (reinterpret_cast<uintptr_t>(a.seq) % 16) == 0 && (reinterpret_cast<uintptr_t>(a.init) % 16) == 0;
  const int S = a.T_ + (kBwd ? 1 : 0);

  // 1. the epilogue operands of a step (additive term, c; backward: the forward state for act'). Fetched a
  // step ahead, before the barrier, so their latency hides under the barrier wait and the state load.
  T av[RN][RH], yv[RN][RH];
  auto fetch = [&](int s) {
    const bool fin = kBwd && s == a.T_;
    const int t = kBwd ? a.T_ - 1 - s : s;
#pragma unroll
    for (int r = 0; r < RN; ++r)
#pragma unroll
      for (int q = 0; q < RH; ++q) {
        av[r][q] = T(0);
        yv[r][q] = T(0);
        const int n = n0 + rn0 + r, j = j0 + rh0 + q;
        if (writer && !fin && rn0 + r < nv && rh0 + q < hv) {
          const int64_t idx = (int64_t)t * NH + (int64_t)n * H + j;
          av[r][q] = a.seq[idx];
          if (kBwd) yv[r][q] = a.Y[idx];
          else if (a.c) av[r][q] += a.c[(int64_t)n * H + j];
        }
      }
  };
  fetch(0);

  for (int s = 0; s < S; ++s) {
    const bool final_phase = kBwd && s == a.T_;
    const int t = kBwd ? a.T_ - 1 - s : s;
    // 2. the state entering this step: h_{t-1} (forward) or dz_{t+1} (backward), rows n0..n0+nv
    const bool have_state = s > 0 || a.init != nullptr;
    T* Ss = (local_state && (s & 1)) ? Ss1 : Ss0;
    if (have_state && !(local_state && s > 0)) {
      const T* src = (s == 0) ? a.init : a.seq + (int64_t)(kBwd ? t + 1 : t - 1) * NH;
      src += (int64_t)n0 * H;
      if (vec_load) {
        const int H4 = H / 4;
        for (int i = tid; i < nv * H4; i += P) {
          const int r = i / H4, k4 = i - r * H4;
          ldcg4_to_smem(src + (int64_t)r * H + 4 * k4, Ss + (int64_t)r * Kp + 4 * k4);
        }
      } else {
        for (int i = tid; i < nv * H; i += P) {
          const int r = i / H, k = i - r * H;
          Ss[(int64_t)r * Kp + k] = __ldcg(src + (int64_t)r * H + k);
        }
      }
      __syncthreads();
    }
    // 3. partial dot products over this lane's slice of K
    T acc[RN][RH];
#pragma unroll
    for (int r = 0; r < RN; ++r)
#pragma unroll
      for (int q = 0; q < RH; ++q) acc[r][q] = T(0);
    if (have_state) {
      const T* sp = Ss + (int64_t)rn0 * Kp;
      const T* mp = Ms + (int64_t)rh0 * Kp;
      for (int k = ks * 4; k < Kp; k += a.KS * 4) {
        T sv[RN][4], mv[RH][4];
#pragma unroll
        for (int r = 0; r < RN; ++r) lds4(sp + (int64_t)r * Kp + k, sv[r]);
#pragma unroll
        for (int q = 0; q < RH; ++q) lds4(mp + (int64_t)q * Kp + k, mv[q]);
#pragma unroll
        for (int r = 0; r < RN; ++r)
#pragma unroll
          for (int q = 0; q < RH; ++q)
#pragma unroll
            for (int u = 0; u < 4; ++u) acc[r][q] = fma(sv[r][u], mv[q][u], acc[r][q]);
      }
    }
    // 4. sum the KS partial sums (neighbouring lanes of one warp)
    for (int off = a.KS / 2; off > 0; off >>= 1)
#pragma unroll
      for (int r = 0; r < RN; ++r)
#pragma unroll
        for (int q = 0; q < RH; ++q) acc[r][q] += __shfl_xor_sync(0xffffffffu, acc[r][q], off);
    // 5. epilogue: add, activate (forward) or gate by act' (backward); keep the state on chip if single,
    // or hand it to every block of the cluster
    T hval[RN][RH] = {};
    if (writer) {
#pragma unroll
      for (int r = 0; r < RN; ++r)
#pragma unroll
        for (int q = 0; q < RH; ++q) {
          if (rn0 + r >= nv || rh0 + q >= hv) continue;
          const int n = n0 + rn0 + r, j = j0 + rh0 + q;
          if (final_phase) {
            a.final_out[(int64_t)n * H + j] = acc[r][q];
          } else {
            const T v = av[r][q] + acc[r][q];
            const T h = kBwd ? v * act_bwd(a.act, yv[r][q]) : act_fwd(a.act, v);
            a.seq[(int64_t)t * NH + (int64_t)n * H + j] = h;
            hval[r][q] = h;
          }
        }
    }
    if (local_state && !final_phase) {
      // the new state into shared memory: ours (single block) or every peer's (cluster); the KS lanes of a
      // micro-tile share the peers, taking the values from their writer lane
      T* Snext = (s & 1) ? Ss0 : Ss1;
      const int leader = (tid & 31) & ~(a.KS - 1);
#pragma unroll
      for (int r = 0; r < RN; ++r)
#pragma unroll
        for (int q = 0; q < RH; ++q) hval[r][q] = __shfl_sync(0xffffffffu, hval[r][q], leader);
      if (active) {
        const int npeers = clus ? a.cluster : 1;
        for (int pr = ks; pr < npeers; pr += a.KS) {
          T* dst = Snext;
#ifdef RNNFAST_CLUSTERS
          if (clus) dst = cooperative_groups::this_cluster().map_shared_rank(Snext, pr);
#endif
#pragma unroll
          for (int r = 0; r < RN; ++r)
#pragma unroll
            for (int q = 0; q < RH; ++q)
              if (rn0 + r < nv && rh0 + q < hv) dst[(int64_t)(rn0 + r) * Kp + j0 + rh0 + q] = hval[r][q];
        }
      }
    }
    // 6. the next step's operands, then: every block finishes step s before any block reads its output
    if (s + 1 < S) fetch(s + 1);
#ifdef RNNFAST_CLUSTERS
    if (clus) {  // every step, the last too: no block may exit while peers still write into it
      cooperative_groups::this_cluster().sync();
      continue;
    }
#endif
    if (a.single) __syncthreads();
    else if (s + 1 < S) grid_barrier(a.bar, (unsigned int)(s + 1) * gridDim.x);
  }
}

// ---- tiled GEMM with a fused epilogue (the fallback GEMM and the stepwise recurrence) -------------
// C(M x N) = epi(sum_k A(m, k) B(k, n)) with A(m, k) = A[m*sam + k*sak], B(k, n) = B[k*sbk + n*sbn],
// C row-major with leading dimension ldc. 64 x 64 tiles, 256 threads, 4 x 4 outputs per thread.
template <typename T>
struct EpiLinear {  // C = alpha*acc + beta*C (C not read when beta == 0)
  T alpha, beta;
  __device__ void operator()(T* C, int64_t, T acc) const { *C = beta == T(0) ? alpha * acc : alpha * acc + beta * *C; }
};
template <typename T>
struct EpiRecFwd {  // C = act(C + acc [+ c]); c indexed like C
  const T* c;
  Act act;
  __device__ void operator()(T* C, int64_t i, T acc) const { *C = act_fwd(act, *C + acc + (c ? c[i] : T(0))); }
};
template <typename T>
struct EpiRecBwd {  // C = (C + acc) * act'(Y); Y indexed like C
  const T* Y;
  Act act;
  __device__ void operator()(T* C, int64_t i, T acc) const { *C = (*C + acc) * act_bwd(act, Y[i]); }
};

template <typename T, class Epi>
__global__ void __launch_bounds__(256)
    gemm_tiled_kernel(int M, int N, int K, const T* __restrict__ A, int64_t sam, int64_t sak, const T* __restrict__ B,
                      int64_t sbk, int64_t sbn, T* C, int64_t ldc, Epi epi) {
  constexpr int BM = 64, BN = 64, BK = 16;
  __shared__ T As[BK][BM + 4];
  __shared__ T Bs[BK][BN + 4];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = (int64_t)blockIdx.x * BM, n0 = (int64_t)blockIdx.y * BN;
  T acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = T(0);
  for (int k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int e = tid + i * 256;
      int mm, kk;
      if (sak == 1) {
        mm = e / BK;
        kk = e % BK;
      } else {
        kk = e / BM;
        mm = e % BM;
      }
      const int64_t gm = m0 + mm;
      const int gk = k0 + kk;
      As[kk][mm] = (gm < M && gk < K) ? A[gm * sam + (int64_t)gk * sak] : T(0);
      int nn;
      if (sbn == 1) {
        kk = e / BN;
        nn = e % BN;
      } else {
        nn = e / BK;
        kk = e % BK;
      }
      const int64_t gn = n0 + nn;
      const int gk2 = k0 + kk;
      Bs[kk][nn] = (gn < N && gk2 < K) ? B[(int64_t)gk2 * sbk + gn * sbn] : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      T av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
      if (m < M && n < N) epi(C + m * ldc + n, m * ldc + n, acc[i][j]);
    }
}

// ---- pointwise and reductions --------------------------------------------------------------------
template <typename T>  // dst (rows, H) = b_ih + b_hh, or 0 without bias
__global__ void bias_fill_kernel(T* dst, int64_t rows, int64_t H, const T* b_ih, const T* b_hh) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * H; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t j = i % H;
    dst[i] = b_ih ? b_ih[j] + b_hh[j] : T(0);
  }
}
template <typename T>  // x = act(x + c) (stepwise forward after the cuBLAS product)
__global__ void act_fwd_kernel(T* x, const T* c, int64_t n, Act act) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    x[i] = act_fwd(act, x[i] + (c ? c[i] : T(0)));
}
template <typename T>  // g = g * act'(y) (stepwise backward after the cuBLAS product)
__global__ void act_bwd_kernel(T* g, const T* y, int64_t n, Act act) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    g[i] = g[i] * act_bwd(act, y[i]);
}
template <typename T>  // dst += src
__global__ void add_kernel(T* dst, const T* src, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dst[i] += src[i];
}
// Column sums of X (rows, cols) in two deterministic passes: partial (nchunks, cols), then the total.
template <typename T>
__global__ void colsum_partial_kernel(const T* X, int64_t rows, int64_t cols, int64_t rows_per_chunk, T* partial) {
  __shared__ T sm[8][33];
  const int64_t col = (int64_t)blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = (int64_t)blockIdx.y * rows_per_chunk, r1 = min(rows, r0 + rows_per_chunk);
  T s = T(0);
  if (col < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) s += X[r * cols + col];
  sm[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    T tot = T(0);
    for (int i = 0; i < 8; ++i) tot += sm[i][threadIdx.x];
    partial[(int64_t)blockIdx.y * cols + col] = tot;
  }
}
template <typename T>  // accumulate: out1 += s, out2 += s (if given); else out1 = s
__global__ void colsum_finish_kernel(const T* partial, int nchunks, int64_t cols, T* out1, T* out2, int accumulate) {
  for (int64_t col = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; col < cols;
       col += (int64_t)gridDim.x * blockDim.x) {
    T s = T(0);
    for (int c = 0; c < nchunks; ++c) s += partial[(int64_t)c * cols + col];
    if (accumulate) {
      out1[col] += s;
      if (out2) out2[col] += s;
    } else {
      out1[col] = s;
    }
  }
}

// ============================================================================================ launchers

// ---- cuBLAS, loaded at run time ------------------------------------------------------------------
namespace cublas {
using Handle = void*;
using CreateFn = int (*)(Handle*);
using SetStreamFn = int (*)(Handle, cudaStream_t);
using SgemmFn = int (*)(Handle, int, int, int, int, int, const float*, const float*, int, const float*, int,
                        const float*, float*, int);
using DgemmFn = int (*)(Handle, int, int, int, int, int, const double*, const double*, int, const double*, int,
                        const double*, double*, int);
constexpr int OP_N = 0, OP_T = 1;
struct Lib {
  void* so = nullptr;
  std::string path;
  CreateFn create = nullptr;
  SetStreamFn set_stream = nullptr;
  SgemmFn sgemm = nullptr;
  DgemmFn dgemm = nullptr;
  std::map<int, Handle> handles;  // one per device
};
Lib& lib() {
  static Lib l;
  return l;
}
}  // namespace cublas

std::mutex& call_mutex() {  // one call at a time: the cuBLAS handles and plan cache are shared
  static std::mutex m;
  return m;
}

std::string load_cublas(const std::string& path) {
  std::lock_guard<std::mutex> g(call_mutex());
  auto& L = cublas::lib();
  if (L.so) return "";
  void* so = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!so) return std::string("dlopen failed: ") + dlerror();
  auto create = reinterpret_cast<cublas::CreateFn>(dlsym(so, "cublasCreate_v2"));
  auto set_stream = reinterpret_cast<cublas::SetStreamFn>(dlsym(so, "cublasSetStream_v2"));
  auto sgemm = reinterpret_cast<cublas::SgemmFn>(dlsym(so, "cublasSgemm_v2"));
  auto dgemm = reinterpret_cast<cublas::DgemmFn>(dlsym(so, "cublasDgemm_v2"));
  if (!create || !set_stream || !sgemm || !dgemm) {
    dlclose(so);
    return "the library lacks cublasCreate_v2/cublasSetStream_v2/cublasSgemm_v2/cublasDgemm_v2";
  }
  L.so = so;
  L.path = path;
  L.create = create;
  L.set_stream = set_stream;
  L.sgemm = sgemm;
  L.dgemm = dgemm;
  return "";
}

std::string cublas_path() { return cublas::lib().path; }

struct Ctx {
  int device;
  cudaStream_t stream;
  bool use_cublas;
  cublas::Handle handle;
  Recurrence rec;
  unsigned int* barrier;
  bool allow_cluster;
};

Ctx make_ctx(const Options& o) {
  CK(cudaSetDevice(o.device));
  Ctx c{o.device, static_cast<cudaStream_t>(o.stream), false, nullptr, o.recurrence, o.barrier, o.allow_cluster};
  auto& L = cublas::lib();
  if (o.gemm == GemmImpl::Cublas && !L.so) throw CudaError("RNNFAST_CUDA_GEMM=cublas but cuBLAS is not loaded");
  if (o.gemm != GemmImpl::Internal && L.so) {
    auto it = L.handles.find(o.device);
    if (it == L.handles.end()) {
      cublas::Handle h = nullptr;
      int st = L.create(&h);
      if (st != 0) {
        if (st == 3) throw OutOfMemory("cublasCreate failed: CUBLAS_STATUS_ALLOC_FAILED");
        throw CudaError("cublasCreate failed with cuBLAS status " + std::to_string(st));
      }
      it = L.handles.emplace(o.device, h).first;
    }
    c.handle = it->second;
    c.use_cublas = true;
    int st = L.set_stream(c.handle, c.stream);
    if (st != 0) throw CudaError("cublasSetStream failed with cuBLAS status " + std::to_string(st));
  }
  return c;
}

static void check_cublas(int st, const char* what) {
  if (st == 0) return;
  cudaError_t e = cudaGetLastError();
  if (st == 3) throw OutOfMemory(std::string(what) + ": CUBLAS_STATUS_ALLOC_FAILED");
  throw CudaError(std::string(what) + " failed with cuBLAS status " + std::to_string(st) +
                  (e != cudaSuccess ? std::string(" (") + cudaGetErrorString(e) + ")" : ""));
}

static int grid_for(int64_t n, int threads = 256) {
  return int(std::max<int64_t>(1, std::min<int64_t>(ceil_div(n, threads), 65535)));
}

template <typename T, class Epi>
void launch_tiled(const Ctx& c, int M, int N, int K, const T* A, int64_t sam, int64_t sak, const T* B, int64_t sbk,
                  int64_t sbn, T* C, int64_t ldc, Epi epi) {
  if (M == 0 || N == 0) return;
  dim3 grid(unsigned(ceil_div(M, 64)), unsigned(ceil_div(N, 64)));
  gemm_tiled_kernel<T, Epi><<<grid, 256, 0, c.stream>>>(M, N, K, A, sam, sak, B, sbk, sbn, C, ldc, epi);
  CK(cudaGetLastError());
}

// Row-major C (M x N) = alpha * op(A) op(B) + beta * C; op(A) is (M x K): A (M x K, lda) or, transposed,
// A (K x M, lda); likewise op(B) (K x N). cuBLAS is column-major, so it computes C^T = op(B)^T op(A)^T.
template <typename T>
void gemm(const Ctx& c, bool ta, bool tb, int M, int N, int K, T alpha, const T* A, int lda, const T* B, int ldb,
          T beta, T* C, int ldc) {
  if (M == 0 || N == 0) return;
  if (c.use_cublas) {
    auto& L = cublas::lib();
    int st;
    if constexpr (sizeof(T) == 4)
      st = L.sgemm(c.handle, tb ? cublas::OP_T : cublas::OP_N, ta ? cublas::OP_T : cublas::OP_N, N, M, K, &alpha, B,
                   ldb, A, lda, &beta, C, ldc);
    else
      st = L.dgemm(c.handle, tb ? cublas::OP_T : cublas::OP_N, ta ? cublas::OP_T : cublas::OP_N, N, M, K, &alpha, B,
                   ldb, A, lda, &beta, C, ldc);
    check_cublas(st, sizeof(T) == 4 ? "cublasSgemm" : "cublasDgemm");
    CK(cudaGetLastError());
    return;
  }
  launch_tiled<T>(c, M, N, K, A, ta ? 1 : lda, ta ? lda : 1, B, tb ? 1 : ldb, tb ? ldb : 1, C, ldc,
                  EpiLinear<T>{alpha, beta});
}

// ---- the recurrence plan ---------------------------------------------------------------------------
struct DevProps {
  int sm_count = 0, cooperative = 0, cc_major = 0;
  int64_t smem_optin = 0, smem_per_sm = 0;
};
DevProps dev_props(int device) {
  static std::mutex m;
  static std::map<int, DevProps> cache;
  std::lock_guard<std::mutex> g(m);
  auto it = cache.find(device);
  if (it != cache.end()) return it->second;
  DevProps p;
  int v = 0;
  CK(cudaDeviceGetAttribute(&p.sm_count, cudaDevAttrMultiProcessorCount, device));
  CK(cudaDeviceGetAttribute(&p.cooperative, cudaDevAttrCooperativeLaunch, device));
  CK(cudaDeviceGetAttribute(&p.cc_major, cudaDevAttrComputeCapabilityMajor, device));
  CK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  p.smem_optin = v;
  CK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device));
  p.smem_per_sm = v;
  cache[device] = p;
  return p;
}

// The persistent kernel for (itemsize, RN, direction), its dynamic shared-memory limit raised once per device.
static const void* persistent_kernel(int device, int itemsize, int RN, bool bwd) {
  const void* k;
  if (itemsize == 4) {
    if (bwd)
      k = RN == 1   ? (const void*)rec_persistent_kernel<float, 1, 4, true>
          : RN == 2 ? (const void*)rec_persistent_kernel<float, 2, 4, true>
                    : (const void*)rec_persistent_kernel<float, 4, 4, true>;
    else
      k = RN == 1   ? (const void*)rec_persistent_kernel<float, 1, 4, false>
          : RN == 2 ? (const void*)rec_persistent_kernel<float, 2, 4, false>
                    : (const void*)rec_persistent_kernel<float, 4, 4, false>;
  } else {  // float64 uses RN <= 2
    if (bwd)
      k = RN == 1 ? (const void*)rec_persistent_kernel<double, 1, 4, true>
                  : (const void*)rec_persistent_kernel<double, 2, 4, true>;
    else
      k = RN == 1 ? (const void*)rec_persistent_kernel<double, 1, 4, false>
                  : (const void*)rec_persistent_kernel<double, 2, 4, false>;
  }
  static std::mutex m;
  static std::set<std::pair<int, const void*>> done;
  std::lock_guard<std::mutex> g(m);
  if (!done.count({device, k})) {
    CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(dev_props(device).smem_optin)));
    done.insert({device, k});
  }
  return k;
}

// How many clusters of C blocks of this configuration can run at once (0 when none or on error).
static int max_active_clusters(int device, int itemsize, int RN, bool bwd, int P, int64_t smem, int C) {
  const void* k = persistent_kernel(device, itemsize, RN, bwd);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(C));
  cfg.blockDim = dim3(unsigned(P));
  cfg.dynamicSmemBytes = size_t(smem);
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(C);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int n = 0;
  if (cudaOccupancyMaxActiveClusters(&n, k, &cfg) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

// Cost model of the persistent kernel, in cycles per step, used to choose its tiling (a guide, fitted
// roughly to H200 timings, not a promise). compute: FMA issue over the block's warps, or shared-memory
// bandwidth for the operands, whichever is larger; reduction: shuffles; state: L2 latency plus the state
// rows over an L2->SM rate; barrier: one arrival per block on one counter. Cluster mode instead: each block
// sends its outputs to every peer (distributed shared memory) and meets them at the cluster barrier.
static double persistent_cycles(int64_t Nb, int RN, int KS, int P, int Kp, int64_t G, int itemsize, bool cluster) {
  const int RH = 4;
  const double warps = P / 32.0, sched = std::min(4.0, warps);
  const double iters = std::ceil(double(Kp) / (4.0 * KS));
  const double issue = warps * iters * (4.0 * RN * RH * (itemsize == 8 ? 2 : 1) + (RN + RH)) / sched;
  const double smem = warps * iters * (RN + RH) * 3.0 * (itemsize == 8 ? 2 : 1);
  const double comp = std::max(issue, smem);
  if (cluster) {
    const double red = warps * std::log2(double(KS)) * RN * RH;
    return comp + red + 200.0 + double(Nb) * Kp * itemsize / 32.0 + 600.0 + 250.0;
  }
  const double red = warps * std::log2(double(KS)) * RN * RH * 2.0 / sched;
  const double state = G > 1 ? 900.0 + double(Nb) * Kp * itemsize / 48.0 : 0.0;
  const double barrier = G > 1 ? 1100.0 + 6.0 * G : 40.0;
  return comp + state + red + barrier + 250.0;
}

Plan plan_recurrence(int device, int itemsize, int64_t N, int64_t H, bool backward, Recurrence mode,
                     bool allow_cluster) {
  static std::mutex m;
  static std::map<std::tuple<int, int, int64_t, int64_t, bool, bool>, Plan> cache;
  const auto key = std::make_tuple(device, itemsize, N, H, backward, allow_cluster);
  Plan best;
  std::unique_lock<std::mutex> g(m);
  auto it = cache.find(key);
  if (it != cache.end()) {
    best = it->second;
  } else {
    CK(cudaSetDevice(device));
    const DevProps d = dev_props(device);
    const double mhz = 1700.0;
    int Kp = int(round_up(H, 4));
    if ((Kp * itemsize) % 128 == 0) Kp += 4;  // rows of shared memory start on different banks
    double best_cycles = 1e300;
    std::vector<int64_t> nbs;
    for (int64_t nb = 1; nb < N; nb *= 2) nbs.push_back(nb);
    nbs.push_back(N);
    // one candidate tiling: Nb batch rows x Hb hidden units per block; cluster: the H-tiles of one batch
    // tile form a cluster of C = ceil(H / Hb) blocks
    auto consider = [&](int64_t Nb, int64_t Hb, bool cluster) {
      const int RN = (Nb >= 4 && itemsize == 4) ? 4 : (Nb >= 2 ? 2 : 1);  // float64 4x4 tiles spill
      const int64_t Nbp = round_up(Nb, RN), C = ceil_div(H, Hb);
      const int64_t G = ceil_div(N, Nb) * C;
      if (G > d.sm_count || (!cluster && G > 1 && !d.cooperative)) return;
      const bool local = G == 1 || cluster;
      const int64_t smem = (Hb + (local ? 2 : 1) * Nbp) * Kp * int64_t(itemsize);
      const int64_t MT = (Nbp / RN) * (Hb / 4);
      if (smem > d.smem_optin || MT > 512) return;
      // Measured (H200): clusters of blocks that fill a multiprocessor's shared memory lost to the grid
      // barrier once they covered more than about half the chip (H=512, N>=16); keep them below that.
      if (cluster && smem > d.smem_per_sm / 2 && G > d.sm_count / 2) return;
      // KS lanes per micro-tile: searched in cluster mode; otherwise as many as fit (measured better there)
      int ks_max = 32;
      while (ks_max > 1 && (MT * ks_max > 512 || ks_max * 4 > Kp)) ks_max /= 2;
      for (int KS = cluster ? 1 : ks_max; KS <= ks_max; KS *= 2) {
        const int P = int(round_up(MT * KS, 32));
        const double cyc = persistent_cycles(Nb, RN, KS, P, Kp, G, itemsize, cluster);
        // clusters are independent, so they need not all run at once, but the timing assumes they do
        if (cyc < best_cycles * 0.999 &&
            (!cluster || max_active_clusters(device, itemsize, RN, backward, P, smem, int(C)) >= ceil_div(N, Nb))) {
          best_cycles = cyc;
          best.feasible = true;
          best.Nb = int(Nb);
          best.Hb = int(Hb);
          best.RN = RN;
          best.KS = KS;
          best.threads = P;
          best.blocks = int(G);
          best.Kp = Kp;
          best.smem = smem;
          best.cluster = cluster ? int(C) : 0;
        }
      }
    };
    for (int64_t Nb : nbs) {
      for (int64_t Hb = 4; Hb <= round_up(H, 4); Hb += 4) {
        const int64_t minimal = (Hb + Nb) * Kp * int64_t(itemsize);
        if (minimal > d.smem_optin) break;  // grows with Hb
        consider(Nb, Hb, false);
      }
      if (allow_cluster && d.cc_major >= 9) {
        for (int64_t C = 2; C <= 8; ++C) {  // portable cluster sizes
          const int64_t Hb = round_up(ceil_div(H, C), 4);
          if (ceil_div(H, Hb) == C) consider(Nb, Hb, true);
        }
      }
    }
    const double peak_fma_per_cycle = 128.0 * d.sm_count;  // FP32 FMAs per cycle, whole chip
    const double fma = double(N) * H * H * (itemsize == 8 ? 2.0 : 1.0);
    const bool cub = cublas::lib().so != nullptr;
    const double step_cycles = std::max((cub ? 2 : 1) * 3.0 * mhz, fma / (peak_fma_per_cycle * (cub ? 0.7 : 0.25)));
    best.est_stepwise_us = step_cycles / mhz;
    best.est_persistent_us = best.feasible ? best_cycles / mhz : 0.0;
    cache[key] = best;
  }
  g.unlock();
  if (mode == Recurrence::Stepwise) {
    best.persistent = false;
    best.why = "stepwise requested";
  } else if (mode == Recurrence::Persistent) {
    if (!best.feasible)
      throw std::invalid_argument(
          "the persistent recurrence does not fit N = " + std::to_string(N) + ", H = " + std::to_string(H) + " (" +
          std::to_string(itemsize * 8) +
          "-bit) on this GPU: W_hh must fit in the blocks' shared memory; use stepwise or auto");
    best.persistent = true;
    best.why = "persistent requested";
  } else if (!best.feasible) {
    best.persistent = false;
    best.why = "auto: W_hh does not fit on chip";
  } else if (cublas::lib().so && H >= 1024 && double(N) * H * H >= 48.0 * (1 << 20)) {
    // Measured on an H200 (benchmarks/bench_gpu.py, .notes/gpu): the persistent kernel beat the stepwise
    // path (cuBLAS per step) by 1.5x to 9x wherever it fits, except at large H with N*H*H above ~48M FMAs
    // per step (N=64 H=1024, N=16 H=1760), where cuBLAS's product wins forward+backward by ~10%.
    best.persistent = false;
    best.why = "auto: big per-step product, cuBLAS stepwise";
  } else {
    best.persistent = true;
    best.why = "auto: W_hh fits on chip";
  }
  return best;
}

template <typename T, int RN, bool kBwd>
void launch_persistent_rn(const Ctx& c, const Plan& p, const RecArgs<T>& a) {
  auto kern = rec_persistent_kernel<T, RN, 4, kBwd>;
  persistent_kernel(c.device, int(sizeof(T)), RN, kBwd);  // raises the shared-memory limit once
  if (p.cluster > 1) {  // independent clusters: no grid barrier, no co-residency needed beyond one cluster
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(p.blocks);
    cfg.blockDim = dim3(p.threads);
    cfg.dynamicSmemBytes = size_t(p.smem);
    cfg.stream = c.stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = unsigned(p.cluster);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    int nclusters = 0;
    CK(cudaOccupancyMaxActiveClusters(&nclusters, kern, &cfg));
    if (nclusters < 1)
      throw CudaError("persistent recurrence: a cluster of " + std::to_string(p.cluster) + " blocks with " +
                      std::to_string(p.smem) + " bytes of shared memory each cannot be scheduled");
    CK(cudaLaunchKernelEx(&cfg, kern, a));
  } else if (p.blocks > 1) {
    int per_sm = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, p.threads, size_t(p.smem)));
    const DevProps d = dev_props(c.device);
    if (int64_t(per_sm) * d.sm_count < p.blocks)
      throw CudaError("persistent recurrence: " + std::to_string(p.blocks) + " blocks cannot be co-resident (" +
                      std::to_string(per_sm) + " per multiprocessor)");
    CK(cudaMemsetAsync(a.bar, 0, sizeof(unsigned int), c.stream));
    RecArgs<T> args = a;
    void* kargs[] = {&args};
    CK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kern), dim3(p.blocks), dim3(p.threads), kargs,
                                   size_t(p.smem), c.stream));
  } else {
    kern<<<1, p.threads, size_t(p.smem), c.stream>>>(a);
  }
  CK(cudaGetLastError());
}

// One layer's recurrence, in place on seq (T, N, H); see RecArgs for the meaning of each argument.
template <typename T>
void recurrence(const Ctx& c, bool bwd, int64_t T_, int64_t N, int64_t H, const T* W_hh, T* seq, const T* init,
                const T* cvec, const T* Y, T* final_out, Act act) {
  if (T_ == 0 || N == 0) return;
  Plan p = plan_recurrence(c.device, int(sizeof(T)), N, H, bwd, c.rec, c.allow_cluster);
  // auto preferred cuBLAS per step for a big product; with our own GEMM forced, the persistent kernel wins
  if (c.rec == Recurrence::Auto && !p.persistent && p.feasible && !c.use_cublas) p.persistent = true;
  const int64_t NH = N * H;
  if (p.persistent) {
    if (!c.barrier && p.blocks > 1) throw CudaError("persistent recurrence needs a barrier buffer");
    RecArgs<T> a;
    a.T_ = int(T_);
    a.N = int(N);
    a.H = int(H);
    a.M = W_hh;
    a.m_sj = bwd ? 1 : H;
    a.m_sk = bwd ? H : 1;
    a.seq = seq;
    a.init = init;
    a.c = cvec;
    a.Y = Y;
    a.final_out = final_out;
    a.act = act;
    a.bar = c.barrier;
    a.Nb = p.Nb;
    a.Hb = p.Hb;
    a.KS = p.KS;
    a.Kp = p.Kp;
    a.nblk_h = int(ceil_div(H, p.Hb));
    a.single = p.blocks == 1;
    a.cluster = p.cluster;
    const int RN = p.RN;
    constexpr int RN_MAX = sizeof(T) == 4 ? 4 : 2;
    if (bwd) {
      if (RN == 1) launch_persistent_rn<T, 1, true>(c, p, a);
      else if (RN == 2) launch_persistent_rn<T, 2, true>(c, p, a);
      else launch_persistent_rn<T, RN_MAX, true>(c, p, a);
    } else {
      if (RN == 1) launch_persistent_rn<T, 1, false>(c, p, a);
      else if (RN == 2) launch_persistent_rn<T, 2, false>(c, p, a);
      else launch_persistent_rn<T, RN_MAX, false>(c, p, a);
    }
    return;
  }
  const int n = int(N), h = int(H);
  if (!bwd) {
    for (int64_t t = 0; t < T_; ++t) {
      T* cur = seq + t * NH;
      const T* prev = t == 0 ? init : seq + (t - 1) * NH;
      if (c.use_cublas) {  // cur += prev @ W_hh^T, then cur = act(cur + c)
        if (prev) gemm<T>(c, false, true, n, h, h, T(1), prev, h, W_hh, h, T(1), cur, h);
        act_fwd_kernel<T><<<grid_for(NH), 256, 0, c.stream>>>(cur, cvec, NH, act);
        CK(cudaGetLastError());
      } else {  // one fused launch: cur = act(cur + prev @ W_hh^T + c)
        launch_tiled<T>(c, n, h, prev ? h : 0, prev, H, 1, W_hh, 1, H, cur, H, EpiRecFwd<T>{cvec, act});
      }
    }
  } else {
    for (int64_t t = T_ - 1; t >= 0; --t) {
      T* cur = seq + t * NH;
      const T* next = t == T_ - 1 ? nullptr : seq + (t + 1) * NH;
      if (c.use_cublas) {  // cur += next @ W_hh, then cur *= act'(Y[t])
        if (next) gemm<T>(c, false, false, n, h, h, T(1), next, h, W_hh, h, T(1), cur, h);
        act_bwd_kernel<T><<<grid_for(NH), 256, 0, c.stream>>>(cur, Y + t * NH, NH, act);
        CK(cudaGetLastError());
      } else {
        launch_tiled<T>(c, n, h, next ? h : 0, next, H, 1, W_hh, H, 1, cur, H, EpiRecBwd<T>{Y + t * NH, act});
      }
    }
    gemm<T>(c, false, false, n, h, h, T(1), seq, h, W_hh, h, T(0), final_out, h);  // dh0 = dz_0 @ W_hh
  }
}

template <typename T>
void column_sums(const Ctx& c, const T* X, int64_t rows, int64_t cols, T* partial, int64_t partial_capacity, T* out1,
                 T* out2, bool accumulate) {
  int64_t nchunks = std::min<int64_t>(ceil_div(rows, 64), 1024);
  nchunks = std::max<int64_t>(1, std::min<int64_t>(nchunks, partial_capacity / std::max<int64_t>(cols, 1)));
  const int64_t per = ceil_div(rows, nchunks);
  nchunks = ceil_div(rows, per);
  dim3 grid(unsigned(ceil_div(cols, 32)), unsigned(nchunks));
  colsum_partial_kernel<T><<<grid, dim3(32, 8), 0, c.stream>>>(X, rows, cols, per, partial);
  CK(cudaGetLastError());
  colsum_finish_kernel<T>
      <<<grid_for(cols), 256, 0, c.stream>>>(partial, int(nchunks), cols, out1, out2, accumulate ? 1 : 0);
  CK(cudaGetLastError());
}

// ---- forward and backward of the stacked RNN --------------------------------------------------------
// Per layer: P = X W_ih^T + (b_ih + b_hh) as one GEMM into the layer's state buffer, then the recurrence
// in place. With a cache the state buffers are hs[k]; without, two buffers alternate so that the top
// layer lands in `out`.
template <typename T>
void rnn_forward(const RnnForwardParams<T>& p, const Options& opt) {
  std::lock_guard<std::mutex> g(call_mutex());
  const Ctx c = make_ctx(opt);
  const int64_t T_ = p.T_, N = p.N, D = p.D, H = p.H, L = p.L, NH = N * H, TNH = T_ * NH;
  if (T_ == 0 || N == 0) return;  // the bindings fill h_n
  const T* inp = p.x;
  for (int64_t k = 0; k < L; ++k) {
    const LayerWeights<T>& w = p.layers[k];
    const int64_t Dk = k == 0 ? D : H;
    T* dst = p.hs ? p.hs + k * TNH : (((L - 1 - k) % 2 == 0) ? p.out : p.scratch);
    bias_fill_kernel<T><<<grid_for(TNH), 256, 0, c.stream>>>(dst, T_ * N, H, w.b_ih, w.b_hh);
    CK(cudaGetLastError());
    gemm<T>(c, false, true, int(T_ * N), int(H), int(Dk), T(1), inp, int(Dk), w.W_ih, int(Dk), T(1), dst, int(H));
    recurrence<T>(c, false, T_, N, H, w.W_hh, dst, p.h0 ? p.h0 + k * NH : nullptr, k == 0 ? p.c : nullptr, nullptr,
                  nullptr, p.act);
    CK(cudaMemcpyAsync(p.h_n + k * NH, dst + (T_ - 1) * NH, NH * sizeof(T), cudaMemcpyDeviceToDevice, c.stream));
    inp = dst;
  }
  if (p.hs) CK(cudaMemcpyAsync(p.out, inp, TNH * sizeof(T), cudaMemcpyDeviceToDevice, c.stream));
}

// Per layer, top down, the forward read in reverse: G = dy (+ dh_n at the last step); the recurrence turns
// G into dz in place and gives dh0; then the weight and bias gradients and dinp = dz W_ih, each one GEMM
// or reduction over all T*N rows. dz and dy alternate as G so dinp of layer k is G of layer k-1.
template <typename T>
void rnn_backward(const RnnBackwardParams<T>& p, const Options& opt) {
  std::lock_guard<std::mutex> g(call_mutex());
  const Ctx c = make_ctx(opt);
  const int64_t T_ = p.T_, N = p.N, D = p.D, H = p.H, L = p.L, NH = N * H, TNH = T_ * NH;
  if (T_ == 0 || N == 0) return;  // the bindings handle empty sequences
  // the top layer's G: dout, or zeros
  T* G = p.dz;
  if (p.dout) CK(cudaMemcpyAsync(G, p.dout, TNH * sizeof(T), cudaMemcpyDeviceToDevice, c.stream));
  else CK(cudaMemsetAsync(G, 0, TNH * sizeof(T), c.stream));
  for (int64_t k = L - 1; k >= 0; --k) {
    const LayerWeights<T>& w = p.layers[k];
    LayerGrads<T>& gr = p.grads[k];
    const int64_t Dk = k == 0 ? D : H;
    T* other = (G == p.dz) ? p.dy : p.dz;
    const T* hk = p.hs + k * TNH;
    const T* inp = k == 0 ? p.x : p.hs + (k - 1) * TNH;
    const T* h0k = p.h0 ? p.h0 + k * NH : nullptr;
    if (p.dh_n) {  // dh_n reaches the last step
      add_kernel<T><<<grid_for(NH), 256, 0, c.stream>>>(G + (T_ - 1) * NH, p.dh_n + k * NH, NH);
      CK(cudaGetLastError());
    }
    // backprop through the recurrence and the activation: G becomes dz; dh0 = dz_0 W_hh
    recurrence<T>(c, true, T_, N, H, w.W_hh, G, nullptr, nullptr, hk, p.dh0 + k * NH, p.act);
    // into both biases (other is free here: it receives dinp only below)
    if (gr.db_ih) column_sums<T>(c, G, T_ * N, H, other, TNH, gr.db_ih, gr.db_hh, true);
    // into c (layer 0 only), overwritten
    if (k == 0 && p.dc) column_sums<T>(c, G, T_, NH, other, TNH, p.dc, nullptr, false);
    // into W_hh: dz_t^T h_{t-1}, with h_{-1} = h0
    if (T_ > 1)
      gemm<T>(c, true, false, int(H), int(H), int((T_ - 1) * N), T(1), G + NH, int(H), hk, int(H), T(1), gr.dW_hh,
              int(H));
    if (h0k) gemm<T>(c, true, false, int(H), int(H), int(N), T(1), G, int(H), h0k, int(H), T(1), gr.dW_hh, int(H));
    // into W_ih
    gemm<T>(c, true, false, int(H), int(Dk), int(T_ * N), T(1), G, int(H), inp, int(Dk), T(1), gr.dW_ih, int(Dk));
    // into the layer's input
    T* dinp = k == 0 ? p.dx : other;
    gemm<T>(c, false, false, int(T_ * N), int(Dk), int(H), T(1), G, int(H), w.W_ih, int(Dk), T(0), dinp, int(Dk));
    G = other;
  }
}

// ---- device queries ----------------------------------------------------------------------------------
std::string runtime_status() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("no usable CUDA device (no GPU, or no NVIDIA driver for it): cudaGetDeviceCount failed (") +
           cudaGetErrorName(e) + ": " + cudaGetErrorString(e) + ")";
  }
  if (n == 0) return "no usable CUDA device: cudaGetDeviceCount found 0 devices";
  return "";
}

DeviceInfo device_info(int device) {
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, device));
  DeviceInfo d;
  d.name = prop.name;
  d.cc_major = prop.major;
  d.cc_minor = prop.minor;
  d.sm_count = prop.multiProcessorCount;
  d.cooperative = prop.cooperativeLaunch;
  d.smem_optin = int64_t(prop.sharedMemPerBlockOptin);
  d.smem_per_sm = int64_t(prop.sharedMemPerMultiprocessor);
  d.total_mem = int64_t(prop.totalGlobalMem);
  CK(cudaRuntimeGetVersion(&d.runtime_version));
  CK(cudaDriverGetVersion(&d.driver_version));
  return d;
}

template void rnn_forward<float>(const RnnForwardParams<float>&, const Options&);
template void rnn_forward<double>(const RnnForwardParams<double>&, const Options&);
template void rnn_backward<float>(const RnnBackwardParams<float>&, const Options&);
template void rnn_backward<double>(const RnnBackwardParams<double>&, const Options&);

}  // namespace cuda
}  // namespace rnnfast
