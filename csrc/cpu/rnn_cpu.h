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

// Batches at or below this size use the register-blocked microkernel for the recurrent product; larger
// batches use one BLAS GEMM per step. Tunable for tests and benchmarks.
int64_t& small_batch_limit();
// "avx2" or "generic": the kernel variant chosen for this CPU.
const char* isa();

}  // namespace cpu
}  // namespace rnnfast
