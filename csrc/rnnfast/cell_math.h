// Activations and their derivatives, written once for the CPU and CUDA kernels. Not a place for loops:
// each function works on one value. Derivatives take the activation's output y (tanh' = 1 - y*y).
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define RNNFAST_HD __host__ __device__ __forceinline__
#else
#define RNNFAST_HD inline
#endif

namespace rnnfast {

RNNFAST_HD float act_tanh(float z) { return tanhf(z); }
RNNFAST_HD double act_tanh(double z) { return tanh(z); }

template <typename T>
RNNFAST_HD T act_relu(T z) { return z > T(0) ? z : (z != z ? z : T(0)); }  // NaN propagates

// d tanh / dz expressed through y = tanh(z)
template <typename T>
RNNFAST_HD T dact_tanh(T y) { return T(1) - y * y; }

// d relu / dz expressed through y = relu(z): 1 where y > 0, else 0 (the subgradient at 0 is 0, as in torch)
template <typename T>
RNNFAST_HD T dact_relu(T y) { return y > T(0) ? T(1) : T(0); }

}  // namespace rnnfast
