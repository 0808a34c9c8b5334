// Entry points of the CPU kernels. Not validated here: the bindings check every argument first.
// rnn_cpu.cpp is compiled once per ISA (generic x86-64, x86-64-v3 = avx2, x86-64-v4 = avx512); dispatch.cpp picks
// one at run time.
#pragma once
#include <string>

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
//   Auto:   Matvec when N <= small_batch, else Blas.
// (A third path, W_hh packed once per call with a fused 6x16 microkernel and a thread team kept alive over
// the steps, was measured 1.3-1.6x slower than Blas at N = 32..64 and was removed.)
enum class Path : int { Auto = 0, Matvec = 1, Blas = 2 };

struct Tuning {
  Path path = Path::Auto;
  int64_t small_batch = 4;        // Auto: batches up to this use Matvec
};

Tuning& tuning();

// The kernel builds, one per ISA; every kernel family (vanilla, LSTM, GRU, ...) is compiled once per ISA
// and dispatch.cpp forwards each entry point to the selected build.
enum class Isa : int { Generic = 0, Avx2 = 1, Avx512 = 2 };
const char* isa_name(Isa i);
// Whether this CPU (and this build) can run the given ISA's kernels.
bool isa_supported(Isa i);
// The ISA in use: RNNFAST_ISA=generic|avx2|avx512 when set (std::invalid_argument naming the choices, or
// saying the CPU lacks it, otherwise), else the best the CPU supports. Resolved once, at first use.
Isa current_isa();
// Switches the ISA in-process (tests, benchmarks): std::invalid_argument for an unknown name or one the
// CPU lacks. Not for use while another thread is inside a kernel.
void set_isa(const std::string& name);
const char* isa();

}  // namespace cpu
}  // namespace rnnfast
