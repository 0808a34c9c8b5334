// The name of the inline namespace that keeps each kernel build's copies of the header-defined helpers
// (simd.h, blas.h's microkernels, cell_math.h) apart: the per-ISA objects are compiled with -DRNNFAST_ISA=
// generic|avx2|avx512 (CMakeLists.txt), everything else (bindings, dispatch, the lstm_proj build, CUDA) is
// "baseline". Without it the linker keeps one copy of, say, blas::matvec_dot<float> for all builds: the
// avx512 kernels then ran the generic one, and a generic caller could be handed AVX-512 code.
#pragma once
#ifdef RNNFAST_ISA
#define RNNFAST_ISA_NS RNNFAST_ISA
#else
#define RNNFAST_ISA_NS baseline
#endif
