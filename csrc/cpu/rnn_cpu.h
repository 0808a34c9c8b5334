// Entry points of the CPU kernels. Not validated here: the bindings check every argument first.
// rnn_cpu.cpp is compiled twice (generic x86-64 and x86-64-v3 with AVX2/FMA); dispatch.cpp picks one at run time.
#pragma once
#include "rnnfast/params.h"

namespace rnnfast {
namespace cpu {

template <typename T>
void rnn_forward(const RnnForwardParams<T>& p);
template <typename T>
void rnn_backward(const RnnBackwardParams<T>& p);

// How the recurrent product of each step is computed.
//   Matvec: one matrix-vector kernel per sequence (small batches; no packing, no BLAS call per step);
//   Blas:   one BLAS GEMM per step (OpenBLAS threads it when the step is large);
//   Packed: (float32 on AVX2, opt-in) W_hh packed once, a fused 6x16 microkernel + epilogue, threads kept
//           alive over all steps with a spin barrier per step. Measured on the 2-core dev machine it was
//           1.3-1.6x slower than Blas at N=32..64 and slower than Matvec at N=1, so Auto never picks it;
//           it stays selectable (and tested) as the base for a tuned kernel.
//   Auto:   Matvec when N <= small_batch, else Blas.
enum class Path : int { Auto = 0, Matvec = 1, Blas = 2, Packed = 3 };

struct Tuning {
  Path path = Path::Auto;
  int64_t small_batch = 4;        // Auto: batches up to this use Matvec
  // Steps with at least this many multiply-adds (N*H*H) are shared between threads. Sharing needs a
  // barrier per step, and any other busy thread on the machine (NumPy's or torch's BLAS pools spin after
  // each call) can preempt a partner at a barrier for a whole time slice; so only steps long enough
  // (~0.3 ms on one core) to absorb that are shared. Measured: at N*H*H = 6e5 sharing was 17x slower
  // than one thread when interleaved with NumPy matmuls on a 2-core machine.
  int64_t step_threads_min = int64_t(1) << 23;
  int threads = 1;                // threads for the Packed recurrence
};

Tuning& tuning();
// "avx2" or "generic": the kernel variant chosen for this CPU.
bool packed_available();
const char* isa();

}  // namespace cpu
}  // namespace rnnfast
