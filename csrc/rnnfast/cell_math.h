// Activations and their derivatives, written once for the CPU and CUDA kernels. Not a place for loops:
// each function works on one value. Derivatives take the activation's output y (tanh' = 1 - y*y).
#pragma once
#include <cmath>

#include "cpu/isa_ns.h"  // one copy of these per kernel build

#if defined(__CUDACC__)
#define RNNFAST_HD __host__ __device__ __forceinline__
#else
#define RNNFAST_HD inline
#endif

namespace rnnfast {
inline namespace RNNFAST_ISA_NS {

RNNFAST_HD float act_tanh(float z) { return tanhf(z); }
RNNFAST_HD double act_tanh(double z) { return tanh(z); }

template <typename T>
RNNFAST_HD T act_relu(T z) {
  return z > T(0) ? z : (z != z ? z : T(0));
}  // NaN propagates

// tanh for float32 as a rational function (the minimax form Eigen uses), accurate to a few ulp on the
// whole line, branch-free so loops over it vectorise; NaN propagates. The CPU kernels use it for float32
// instead of tanhf (a libm call per element dominated small-batch steps); float64 keeps the libm tanh.
RNNFAST_HD float fast_tanh(float x) {
  const float c = 7.90531110763549805f;  // beyond this tanh(x) rounds to +-1 in float32
  float xc = x > c ? c : (x < -c ? -c : x);
  const float x2 = xc * xc;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * xc;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  const float r = p / q;
  return x != x ? x : r;
}
RNNFAST_HD double fast_tanh(double x) { return tanh(x); }

// d tanh / dz expressed through y = tanh(z)
template <typename T>
RNNFAST_HD T dact_tanh(T y) {
  return T(1) - y * y;
}

// d relu / dz expressed through y = relu(z): 1 where y > 0, else 0 (the subgradient at 0 is 0, as in torch)
template <typename T>
RNNFAST_HD T dact_relu(T y) {
  return y > T(0) ? T(1) : T(0);
}

// Logistic sigmoid for the gated cells (LSTM, GRU), derivative from the output: sigma' = y (1 - y).
RNNFAST_HD float act_sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }
RNNFAST_HD double act_sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }

// float32 sigmoid through the branch-free tanh above, sigma(z) = (1 + tanh(z/2)) / 2, so loops over it
// vectorise (absolute error a few 1e-8); NaN propagates. float64 keeps the exp form.
RNNFAST_HD float fast_sigmoid(float z) { return 0.5f * fast_tanh(0.5f * z) + 0.5f; }
RNNFAST_HD double fast_sigmoid(double z) { return act_sigmoid(z); }

template <typename T>
RNNFAST_HD T dact_sigmoid(T y) {
  return y * (T(1) - y);
}

}  // namespace RNNFAST_ISA_NS
}  // namespace rnnfast
