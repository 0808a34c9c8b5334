// Plain structs that carry dimensions and raw pointers from the bindings to the kernels (CPU and CUDA).
// Not a container: nothing here owns memory or checks anything; the bindings validate every field first.
// Dimension letters: T time, N batch, D input (of layer 0), H hidden, L layers. All arrays are C-contiguous.
#pragma once
#include <cstdint>

namespace rnnfast {

enum class Act : int { Tanh = 0, Relu = 1 };

// One layer's weights. Layer k's input width is D_k = (k == 0 ? D : H).
template <typename T>
struct LayerWeights {
  const T* W_ih = nullptr;  // (H, D_k); nullptr in layer 0 (CPU kernels only): the identity, x is x W_ih^T
  const T* W_hh = nullptr;  // (H, H)
  const T* b_ih = nullptr;  // (H) or nullptr when the layer has no bias
  const T* b_hh = nullptr;  // (H) or nullptr when the layer has no bias
};

// One layer's parameter gradients, all accumulated (+=).
template <typename T>
struct LayerGrads {
  T* dW_ih = nullptr;  // (H, D_k) +=; nullptr where W_ih is the identity
  T* dW_hh = nullptr;  // (H, H) +=
  T* db_ih = nullptr;  // (H) += or nullptr without bias
  T* db_hh = nullptr;  // (H) += or nullptr without bias
};

template <typename T>
struct RnnForwardParams {
  int64_t T_ = 0, N = 0, D = 0, H = 0, L = 0;
  Act act = Act::Tanh;
  const LayerWeights<T>* layers = nullptr;  // [L]
  const T* x = nullptr;   // (T, N, D) input, time-major
  const T* h0 = nullptr;  // (L, N, H) initial hidden state, or nullptr for zeros
  const T* c = nullptr;   // (N, H) constant input added at every step of layer 0, or nullptr
  T* out = nullptr;       // (T, N, H) = top layer's hidden states
  T* h_n = nullptr;       // (L, N, H) = final hidden state of every layer
  // The cache (training only; nullptr for inference): hs (L, T, N, H) = hidden state of every layer at
  // every step. Layer k's input sequence is x (k == 0) or hs[k-1]; h_{-1} is h0[k]. Same layout in every
  // backend, so forward on one backend and backward on another works.
  T* hs = nullptr;
  // Inference scratch when L > 1: (T, N, H), holds the previous layer's output; ignored with a cache.
  T* scratch = nullptr;
};

template <typename T>
struct RnnBackwardParams {
  int64_t T_ = 0, N = 0, D = 0, H = 0, L = 0;
  Act act = Act::Tanh;
  const LayerWeights<T>* layers = nullptr;  // [L]
  LayerGrads<T>* grads = nullptr;           // [L], accumulated (+=)
  const T* x = nullptr;     // (T, N, D) forward input
  const T* h0 = nullptr;    // (L, N, H) forward initial state, or nullptr for zeros
  const T* hs = nullptr;    // (L, T, N, H) the cache written by forward
  const T* dout = nullptr;  // (T, N, H) gradient of the top layer's output, or nullptr for zeros
  const T* dh_n = nullptr;  // (L, N, H) gradient of the final hidden states, or nullptr for zeros
  T* dx = nullptr;          // (T, N, D) =
  T* dh0 = nullptr;         // (L, N, H) =
  T* dc = nullptr;          // (N, H) = gradient of the constant input c, or nullptr when c was not given
  // Scratch: dz (T, N, H) and dy (T, N, max(D, H)); the bindings allocate them.
  T* dz = nullptr;
  T* dy = nullptr;
};

}  // namespace rnnfast
