// LSTM with projections (torch.nn.LSTM proj_size = P > 0) on the CPU: one layer, one direction per call, with
// optional per-sequence lengths and a reverse flag, so Python stacks layers and directions around it.
// Not the fused gated kernels of gated_cpu.cpp (no packed recurrence, no ISA variants): a generic -O3 build.
#pragma once
#include <cstdint>

namespace rnnfast {
namespace cpu {

// h_t = W_hr (o_t * tanh(c_t)): the hidden state is P wide, the cell state H wide. Gates i, f, g, o as torch.
// A step t with t >= lengths[n] keeps sequence n's states and writes a zero output; reverse runs t = T-1..0.
template <typename T>
struct LstmProjParams {
  int64_t T_ = 0, N = 0, D = 0, H = 0, P = 0;
  bool reverse = false;
  const int64_t* lengths = nullptr;  // (N) or null for all T
  const T* x = nullptr;              // (T, N, D)
  const T* h0 = nullptr;             // (N, P)
  const T* c0 = nullptr;             // (N, H)
  const T* W_ih = nullptr;           // (4H, D)
  const T* W_hh = nullptr;           // (4H, P)
  const T* b_ih = nullptr;           // (4H) or null (then b_hh is null too)
  const T* b_hh = nullptr;           // (4H) or null
  const T* W_hr = nullptr;           // (P, H)
  // forward outputs (=)
  T* out = nullptr;                  // (T, N, P), zero past a length
  T* h_n = nullptr;                  // (N, P)
  T* c_n = nullptr;                  // (N, H)
  // the cache (= in forward, read by backward; all four or none)
  T* gates = nullptr;                // (T, N, 4H) i, f, g, o after their activations
  T* cs = nullptr;                   // (T, N, H) the cell state after step t
  T* ms = nullptr;                   // (T, N, H) o * tanh(c_t), the projection's input (0 past a length)
  T* hs = nullptr;                   // (T, N, P) the hidden state after step t
  // backward: incoming gradients (each or null) and outputs
  const T* dout = nullptr;           // (T, N, P)
  const T* dh_n = nullptr;           // (N, P)
  const T* dc_n = nullptr;           // (N, H)
  T* dx = nullptr;                   // (T, N, D) =
  T* dh0 = nullptr;                  // (N, P) =
  T* dc0 = nullptr;                  // (N, H) =
  T* dW_ih = nullptr;                // (4H, D) +=
  T* dW_hh = nullptr;                // (4H, P) +=
  T* db_ih = nullptr;                // (4H) += (or null)
  T* db_hh = nullptr;                // (4H) += (or null)
  T* dW_hr = nullptr;                // (P, H) +=
};

template <typename T>
void lstm_proj_forward(const LstmProjParams<T>& p);
template <typename T>
void lstm_proj_backward(const LstmProjParams<T>& p);

}  // namespace cpu
}  // namespace rnnfast
