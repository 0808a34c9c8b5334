// Out-of-line instances of blas.h's small-GEMM kernel for callers compiled with -ffp-contract=off
// (train_ops.cpp, whose optimizers must round as NumPy does): compiled here with contraction on, so the
// kernel keeps its fused multiply-adds (without them it runs at half the speed). One copy per ISA build.
#include "cpu/blas.h"

namespace rnnfast {
namespace blas {
inline namespace RNNFAST_ISA_NS {

template <typename T>
void small_gemm_nn(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, const T* C0,
                   int64_t ldc0, T* C, int64_t ldc) {
  gemm_small_fused<T>(M, N, K, A, lda, B, ldb, C0, ldc0, nullptr, 0, C, ldc, NoEpilogue{});
}

template <typename T>
void small_gemm_tn(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, const T* C0,
                   int64_t ldc0, T* C, int64_t ldc) {
  gemm_small_fused<T, NoEpilogue, true>(M, N, K, A, lda, B, ldb, C0, ldc0, nullptr, 0, C, ldc, NoEpilogue{});
}

#define RNNFAST_SMALL_GEMM_INST(T)                                                                                   \
  template void small_gemm_nn<T>(int64_t, int64_t, int64_t, const T*, int64_t, const T*, int64_t, const T*, int64_t, \
                                 T*, int64_t);                                                                       \
  template void small_gemm_tn<T>(int64_t, int64_t, int64_t, const T*, int64_t, const T*, int64_t, const T*, int64_t, \
                                 T*, int64_t);
RNNFAST_SMALL_GEMM_INST(float)
RNNFAST_SMALL_GEMM_INST(double)
#undef RNNFAST_SMALL_GEMM_INST

}  // namespace RNNFAST_ISA_NS
}  // namespace blas
}  // namespace rnnfast
