// Native autoregressive decoding: a whole batch of token sequences generated in one call (greedy,
// temperature and top-k sampling with a counter-based generator, end token, carried state) and beam search,
// for the vanilla RNN (tanh/relu), LSTM and GRU, stacked. Not validated here (bind_decode.cpp checks every
// argument); not a training path (no caches, no gradients). decode.cpp is compiled once per kernel ISA
// (generic, avx2, avx512), each with its own vector width; every build gives the same tokens (decode.cpp).
#pragma once
#include <cstdint>

#include "cpu/isa_ns.h"
#include "rnnfast/params.h"

namespace rnnfast {
namespace cpu {

enum class DecodeCell : int { RnnTanh = 0, RnnRelu = 1, Lstm = 2, Gru = 3 };

// The model, torch layout. G = 1 (rnn), 4 (lstm, gates i f g o), 3 (gru, gates r z n).
template <typename T>
struct DecodeModel {
  DecodeCell cell = DecodeCell::RnnTanh;
  int64_t L = 0, H = 0, G = 1;
  int64_t V = 0;                          // vocabulary: input tokens and head outputs, [0, V)
  int64_t D = 0;                          // layer 0's input width: E (embedding) or V (one-hot)
  const LayerWeights<T>* layers = nullptr;  // [L]: W_ih (G*H, D_k), W_hh (G*H, H), b_ih, b_hh (G*H) or nullptr
  const T* embed = nullptr;               // (V, D) token embedding, or nullptr: one-hot input (D == V)
  const T* W_out = nullptr;               // (V, H) head weight
  const T* b_out = nullptr;               // (V) head bias or nullptr
};

// Sampling / greedy decoding of N sequences for `steps` steps. Step t feeds tok (first[n] at t = 0, then the
// token chosen at t - 1), advances the state, computes the head's logits and chooses a token. A sequence that
// chose end_token stops: its state stays as it was after that step and its later ids are pad_token.
template <typename T>
struct SampleParams {
  int64_t N = 0, steps = 0;
  bool greedy = true;
  double temperature = 1.0;   // > 0 (sampling)
  int64_t top_k = 0;          // sample among the top_k largest logits (ties at the k-th value kept); 0 = all
  uint64_t seed = 0;          // the uniform draw of sequence n at step t is a pure function of (seed, n, t0 + t)
  int64_t t0 = 0;             // step offset of the random stream (continuing a decode in chunks)
  int64_t end_token = -1;     // -1: none
  int64_t pad_token = 0;
  const int64_t* first = nullptr;  // (N) the first input token of each sequence
  // A forced prefix (a prime): P steps before decoding, each feeding its input and then taking the next
  // input from prefix (P, N) instead of choosing one (no output, no random draw). nullptr when P = 0.
  int64_t P = 0;
  const int64_t* prefix = nullptr;
  const T* c = nullptr;       // (N, H) constant input added at every step of layer 0 (rnn only), or nullptr
  T* h = nullptr;             // (L, N, H) in: initial hidden state; out (=): final state
  T* cs = nullptr;            // (L, N, H) LSTM cell state, in and out (=); nullptr for rnn/gru
  int64_t* ids = nullptr;     // (steps, N) = chosen tokens
};

// Beam search (Seq2Seq): beam K per source from start_token, up to max_len steps; the highest total
// log-probability (log-softmax in float64) wins, ties to the earlier candidate (beam-major, then token).
// A finished beam continues only with end_token at no cost. Decoding stops once every beam has finished.
template <typename T>
struct BeamParams {
  int64_t N = 0, K = 1, max_len = 1;
  int64_t start_token = 0, end_token = 0;
  const T* c = nullptr;       // (N, H) or nullptr
  const T* h0 = nullptr;      // (L, N, H) initial hidden state of every source
  const T* c0 = nullptr;      // (L, N, H) LSTM cell state or nullptr
  int64_t* ids = nullptr;     // (max_len, N) = the best beam's tokens (end_token after it ends)
  double* scores = nullptr;   // (N) = its total log-probability
};

template <typename T>
void decode_sample(const DecodeModel<T>& m, const SampleParams<T>& p);
template <typename T>
void decode_beam(const DecodeModel<T>& m, const BeamParams<T>& p);

// The generator: a counter-based hash (three rounds of the SplitMix64 finaliser) of (seed, n, t), so a
// sequence's draws depend on nothing else (not the batch, the thread count or the machine). 53 bits -> [0, 1).
inline namespace RNNFAST_ISA_NS {
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
inline double decode_uniform(uint64_t seed, uint64_t n, uint64_t t) {
  const uint64_t x = splitmix64(splitmix64(splitmix64(seed) ^ n) ^ (t * 0xD1B54A32D192ED03ull));
  return double(x >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace RNNFAST_ISA_NS
}  // namespace cpu
}  // namespace rnnfast
