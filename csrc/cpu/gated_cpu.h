// Entry points and parameter structs of the gated-cell CPU kernels (LSTM and GRU, PyTorch's gate layout).
// Not validated here: csrc/bindings/bind_gated.cpp checks every argument first. gated_cpu.cpp is compiled
// once per ISA (generic, avx2, avx512) like rnn_cpu.cpp; dispatch.cpp picks one at run time.
// Dimension letters: T time, N batch, D input (of layer 0), H hidden, L layers; G gates (LSTM 4, GRU 3).
#pragma once
#include <cstdint>

#include "rnnfast/params.h"

namespace rnnfast {

// Gate blocks, in PyTorch's order, of the G*H rows of W_ih (G*H, D_k), W_hh (G*H, H), b_ih and b_hh (G*H).
//   LSTM (G = 4): i (input), f (forget), g (cell candidate, tanh), o (output)
//       c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t)
//   GRU (G = 3): r (reset), z (update), n (new, tanh), with the reset applied to W_hn h + b_hn:
//       n = tanh(W_in x + b_in + r * (W_hn h_{t-1} + b_hn)),  h_t = (1 - z) * n + z * h_{t-1}
// LayerWeights / LayerGrads (params.h) are reused with these gate-stacked shapes.

template <typename T>
struct GatedForwardParams {
  int64_t T_ = 0, N = 0, D = 0, H = 0, L = 0;
  const LayerWeights<T>* layers = nullptr;  // [L]
  const T* x = nullptr;   // (T, N, D) input, time-major
  const T* h0 = nullptr;  // (L, N, H) initial hidden state, or nullptr for zeros
  const T* c0 = nullptr;  // LSTM: (L, N, H) initial cell state, or nullptr for zeros; GRU: unused
  T* out = nullptr;       // (T, N, H) = top layer's hidden states
  T* h_n = nullptr;       // (L, N, H) = final hidden state of every layer
  T* c_n = nullptr;       // LSTM: (L, N, H) = final cell state of every layer; GRU: unused
  // The cache (training; all nullptr for inference). Layer k's input is x (k == 0) or hs[k-1].
  T* hs = nullptr;     // (L, T, N, H) = hidden state of every layer at every step
  T* cs = nullptr;     // LSTM: (L, T, N, H) = cell state of every layer at every step
  T* gates = nullptr;  // (L, T, N, G*H) = gates after their activations (LSTM i,f,g,o; GRU r,z,n)
  T* ghn = nullptr;    // GRU: (L, T, N, H) = W_hn h_{t-1} + b_hn, the term the reset gate multiplies
};

template <typename T>
struct GatedBackwardParams {
  int64_t T_ = 0, N = 0, D = 0, H = 0, L = 0;
  const LayerWeights<T>* layers = nullptr;  // [L]
  LayerGrads<T>* grads = nullptr;           // [L], accumulated (+=)
  const T* x = nullptr;      // (T, N, D) forward input
  const T* h0 = nullptr;     // (L, N, H) forward initial hidden state (never nullptr: the cache holds zeros)
  const T* c0 = nullptr;     // LSTM: (L, N, H) forward initial cell state (never nullptr)
  const T* hs = nullptr;     // (L, T, N, H) cache
  const T* cs = nullptr;     // LSTM: (L, T, N, H) cache
  const T* gates = nullptr;  // (L, T, N, G*H) cache
  const T* ghn = nullptr;    // GRU: (L, T, N, H) cache
  const T* dout = nullptr;   // (T, N, H) gradient of the top layer's output, or nullptr for zeros
  const T* dh_n = nullptr;   // (L, N, H) gradient of the final hidden states, or nullptr for zeros
  const T* dc_n = nullptr;   // LSTM: (L, N, H) gradient of the final cell states, or nullptr for zeros
  const T* dcs = nullptr;    // LSTM: (L, T, N, H) extra gradient reaching the cell state of every step, or
                             // nullptr (variable-length batches route dc_n into each sequence's last step)
  T* dx = nullptr;           // (T, N, D) =
  T* dh0 = nullptr;          // (L, N, H) =
  T* dc0 = nullptr;          // LSTM: (L, N, H) =
};

namespace cpu {

template <typename T>
void lstm_forward(const GatedForwardParams<T>& p);
template <typename T>
void lstm_backward(const GatedBackwardParams<T>& p);
template <typename T>
void gru_forward(const GatedForwardParams<T>& p);
template <typename T>
void gru_backward(const GatedBackwardParams<T>& p);

}  // namespace cpu
}  // namespace rnnfast
