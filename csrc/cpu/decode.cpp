// Native autoregressive decoding (decode.h). A model is laid out once (transposed into contiguous panels of
// two vectors, the token input projection as a (V, G*H) table plus biases) and kept for later calls with
// the same weight bytes (the prepared-model cache below); per step only packed matrix products over the
// rows, the cell's pointwise update, the head and the token choice run. Written against simd.h's vectors
// (the build's own width), not tied to the recurrence kernels of rnn_cpu.cpp / gated_cpu.cpp. Compiled
// once per ISA (generic, avx2, avx512). Every sum adds its terms in one fixed order, whatever the vector
// width, the row blocking or the batch: the avx2 and avx512 builds give the same bits, and a sequence's
// tokens do not depend on the other sequences of its batch.
#include "cpu/decode.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "cpu/blas.h"
#include "cpu/parallel.h"
#include "cpu/simd.h"
#include "rnnfast/cell_math.h"

#ifndef RNNFAST_ISA
#define RNNFAST_ISA generic
#endif

namespace rnnfast {
namespace cpu {
namespace RNNFAST_ISA {

namespace {

inline int64_t pad_to(int64_t n, int64_t b) { return (n + b - 1) / b * b; }

// ---- exp, vectorisable (branch-free range reduction + polynomial) ----
// float32: Cephes' expf polynomial, relative error ~1e-7; float64: degree-13 Taylor on |r| <= ln2/2, a few ulp.
inline float vexp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float fi = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = (x - fi * 0.693359375f) - fi * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t e = (int32_t(fi) + 127) << 23;
  float s;
  std::memcpy(&s, &e, sizeof s);
  return p * s;
}
inline double vexp(double x) {
  x = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
  const double fi = std::floor(x * 1.4426950408889634074 + 0.5);
  const double r = (x - fi * 6.93145751953125e-1) - fi * 1.42860682030941723212e-6;
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  // 2^fi without a double -> int64 conversion (AVX2 has none, which would keep the loop scalar): adding
  // 1.5 * 2^52 leaves fi as the low bits of the mantissa.
  const double shifter = 6755399441055744.0;
  const double tf = fi + shifter;
  int64_t tb, sb;
  std::memcpy(&tb, &tf, sizeof tb);
  std::memcpy(&sb, &shifter, sizeof sb);
  const int64_t e = (tb - sb + 1023) << 52;
  double s;
  std::memcpy(&s, &e, sizeof s);
  return p * s;
}

// ---- packed products: out[i][0:n] += sum_k v[i][k] * M[k][0:n] for R rows ----
// The build's own vectors (simd.h: 64 bytes in the avx512 build, 32 in avx2, 16 in generic). M (K, n) is
// stored as n / PW panels of (K, PW), PW = two vectors, each panel contiguous, so a block of panels streams
// through memory in order whatever the row block. Every output element is its initial value plus the K
// products added in k order (one multiply-add each), so the result does not depend on the ISA's vector
// width, the row blocking or the number of rows: a sequence's tokens do not depend on the batch.
namespace sv = rnnfast::simd;
template <typename T>
constexpr int64_t VW = sv::lanes<T>();
template <typename T>
constexpr int64_t PW = 2 * VW<T>;

// Register blocking: one row takes up to P1 panels per pass; row blocks of RB rows take PB panels per pass.
#if defined(__AVX512F__)
constexpr int kP1 = 8, kRB = 6, kPB = 2;   // 16 / 24 of the 32 zmm registers as accumulators
#elif defined(__AVX2__)
constexpr int kP1 = 6, kRB = 3, kPB = 2;   // 12 of the 16 ymm registers
#else
constexpr int kP1 = 6, kRB = 3, kPB = 2;   // 12 of the 16 xmm registers
#endif

template <typename T>
struct Packed {
  int64_t K = 0, n = 0;                    // n: a multiple of PW
  std::vector<T> d;                        // (n / PW, K, PW)
  const T* panel(int64_t p) const { return d.data() + p * K * PW<T>; }
};

// M = src^T padded with zero columns to n: src (n_src, K) row-major (a torch (out, in) weight).
template <typename T>
Packed<T> pack_t(const T* src, int64_t n_src, int64_t K, int64_t n) {
  constexpr int64_t B = PW<T>;
  Packed<T> M;
  M.K = K;
  M.n = n;
  M.d.assign(static_cast<size_t>(n * K), T(0));
  for (int64_t p = 0; p < n / B; ++p) {
    T* dp = M.d.data() + p * K * B;
    const int64_t j1 = std::min<int64_t>(B, n_src - p * B);
    for (int64_t jj = 0; jj < j1; ++jj) {
      const T* s = src + (p * B + jj) * K;
      for (int64_t k = 0; k < K; ++k) dp[k * B + jj] = s[k];
    }
  }
  return M;
}

// R rows x P panels starting at panel p0.
constexpr int64_t kPF = 8;  // rows of a panel prefetched ahead

// The accumulators start from init[r] (the row's own out[r] when init is nullptr).
template <typename T, int R, int P>
inline void mk(const T* const* v, const Packed<T>& M, int64_t p0, T* const* out, const T* const* init) {
  using V = sv::V<T>;
  constexpr int64_t B = PW<T>, W = VW<T>;
  const int64_t K = M.K, ps = K * B;
  const T* __restrict m0 = M.panel(p0);
  V acc[R][P][2];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) {
      const T* i0 = init ? init[r] : out[r];
      acc[r][p][0] = sv::load(i0 + (p0 + p) * B);
      acc[r][p][1] = sv::load(i0 + (p0 + p) * B + W);
    }
  for (int64_t k = 0; k < K; ++k) {
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) {
      __builtin_prefetch(m0 + p * ps + (k + kPF) * B);
      __builtin_prefetch(m0 + p * ps + (k + kPF) * B + W);
      const V a = sv::load(m0 + p * ps + k * B), b = sv::load(m0 + p * ps + k * B + W);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const T vk = v[r][k];
        acc[r][p][0] += vk * a;
        acc[r][p][1] += vk * b;
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) {
      sv::store(out[r] + (p0 + p) * B, acc[r][p][0]);
      sv::store(out[r] + (p0 + p) * B + W, acc[r][p][1]);
    }
}

template <typename T, int P = kP1>
inline void mm_one(const T* const* v, const Packed<T>& M, int64_t p0, int64_t np, T* const* out, const T* const* init) {
  if constexpr (P > 0) {
    for (; np >= P; np -= P, p0 += P) mk<T, 1, P>(v, M, p0, out, init);
    if (np > 0) mm_one<T, P - 1>(v, M, p0, np, out, init);
  }
}

// r (1 <= r <= R) rows x pn (1 or kPB) panels from panel p.
template <typename T, int R = kRB>
inline void mm_tail(int64_t r, const T* const* v, const Packed<T>& M, int64_t p, int64_t pn, T* const* out,
                    const T* const* init) {
  if constexpr (R > 1) {
    if (r < R) return mm_tail<T, R - 1>(r, v, M, p, pn, out, init);
  }
  if (pn == kPB) mk<T, R, kPB>(v, M, p, out, init);
  else mk<T, R, 1>(v, M, p, out, init);
}

// Several rows: panel groups outer (a group, K x kPB*PW, stays in L1 while every row block passes over it),
// blocks of kRB rows inner. One row: every panel in as few passes as the registers allow. Row i's sums start
// from init[i] when init is given (a row of the token table or a bias: no copy into out first), else from
// out[i].
template <typename T>
void mm_rows(int64_t R, const T* const* v, const Packed<T>& M, T* const* out, const T* const* init = nullptr) {
  const int64_t np = M.n / PW<T>;
  if (R == 1) return mm_one<T>(v, M, 0, np, out, init);
  for (int64_t p = 0; p < np; p += kPB) {
    const int64_t pn = std::min<int64_t>(kPB, np - p);
    int64_t i = 0;
    for (; i + kRB <= R; i += kRB) mm_tail<T>(kRB, v + i, M, p, pn, out + i, init ? init + i : nullptr);
    if (R > i) mm_tail<T>(R - i, v + i, M, p, pn, out + i, init ? init + i : nullptr);
  }
}

// ---- the model laid out for decoding ----
template <typename T>
struct Prepared {
  DecodeCell cell;
  int64_t L, H, G, GH, GHp, V, Vp;
  std::vector<T> table;                 // (V, GHp): token v's layer-0 input projection + biases
  std::vector<Packed<T>> WihT;          // [L] (H, GHp) for k >= 1 (empty for k = 0)
  std::vector<Packed<T>> WhhT;          // [L] (H, GHp)
  std::vector<std::vector<T>> bias;     // [L] (GHp): k >= 1: b_ih + b_hh (gru: b_ih); k = 0 unused
  std::vector<std::vector<T>> bhh;      // [L] (GHp) gru only: b_hh (zeros without bias)
  Packed<T> WoT;                        // (H, Vp)
  std::vector<T> bo;                    // (Vp)
};

template <typename T>
Prepared<T> prepare(const DecodeModel<T>& m) {
  Prepared<T> p;
  p.cell = m.cell;
  p.L = m.L;
  p.H = m.H;
  p.G = m.G;
  p.GH = m.G * m.H;
  p.GHp = pad_to(p.GH, PW<T>);
  p.V = m.V;
  p.Vp = pad_to(m.V, PW<T>);
  const bool gru = m.cell == DecodeCell::Gru;
  const int64_t GH = p.GH, GHp = p.GHp, H = m.H;
  // The layer-0 input projection of every token: one-hot -> the columns of W_ih, embedding -> E W_ih^T.
  p.table.assign(size_t(m.V * GHp), T(0));
  const LayerWeights<T>& w0 = m.layers[0];
  if (m.embed) blas::gemm<T>(false, true, m.V, GH, m.D, T(1), m.embed, m.D, w0.W_ih, m.D, T(0), p.table.data(), GHp);
  else blas::transpose(w0.W_ih, GH, m.V, p.table.data(), GHp);  // columns GH..GHp stay zero
  p.WihT.resize(size_t(m.L));
  p.WhhT.resize(size_t(m.L));
  p.bias.resize(size_t(m.L));
  p.bhh.resize(size_t(m.L));
  for (int64_t k = 0; k < m.L; ++k) {
    const LayerWeights<T>& w = m.layers[k];
    std::vector<T> b(static_cast<size_t>(GHp), T(0));          // the bias that goes with the input side
    if (w.b_ih)
      for (int64_t j = 0; j < GH; ++j) b[j] = gru ? w.b_ih[j] : w.b_ih[j] + w.b_hh[j];
    if (gru) {
      p.bhh[k].assign(static_cast<size_t>(GHp), T(0));
      if (w.b_hh) std::copy(w.b_hh, w.b_hh + GH, p.bhh[k].begin());
    }
    p.WhhT[k] = pack_t(w.W_hh, GH, H, GHp);
    if (k == 0) {
      for (int64_t v = 0; v < m.V; ++v)
        for (int64_t j = 0; j < GH; ++j) p.table[v * GHp + j] += b[j];
    } else {
      p.WihT[k] = pack_t(w.W_ih, GH, H, GHp);
      p.bias[k] = std::move(b);
    }
  }
  p.WoT = pack_t(m.W_out, m.V, H, p.Vp);
  p.bo.assign(size_t(p.Vp), T(0));
  if (m.b_out) std::copy(m.b_out, m.b_out + m.V, p.bo.begin());
  return p;
}

// ---- the prepared models of recent calls, found again by content ----
// A call looks its model up by the bytes of every weight (a copy kept with the entry): an entry is reused
// only when all of them are equal to the bytes it was prepared from, so an in-place change of any
// parameter, a new model or load_state_dict can never reuse a stale layout (the array's identity plays no
// part). Comparing costs one read of the weights, much less than preparing them. Models above
// kCacheMaxBytes are prepared per call (their steps cost far more than preparing); at most kCacheEntries.
constexpr size_t kCacheEntries = 4;
constexpr size_t kCacheMaxBytes = size_t(16) << 20;

template <typename T, typename F>
void for_each_source(const DecodeModel<T>& m, F&& f) {
  const int64_t GH = m.G * m.H;
  if (m.embed) f(m.embed, m.V * m.D);
  for (int64_t k = 0; k < m.L; ++k) {
    const LayerWeights<T>& w = m.layers[k];
    f(w.W_ih, GH * (k == 0 ? m.D : m.H));
    f(w.W_hh, GH * m.H);
    if (w.b_ih) f(w.b_ih, GH);
    if (w.b_hh) f(w.b_hh, GH);
  }
  f(m.W_out, m.V * m.H);
  if (m.b_out) f(m.b_out, m.V);
}

template <typename T>
struct CacheEntry {
  std::vector<int64_t> key;                // cell, sizes and which optional arrays exist
  std::vector<T> snap;                     // the source arrays, concatenated in for_each_source's order
  std::shared_ptr<const Prepared<T>> prep;
};

template <typename T>
std::vector<int64_t> cache_key(const DecodeModel<T>& m) {
  std::vector<int64_t> k = {int64_t(m.cell), m.L, m.H, m.G, m.V, m.D, m.embed != nullptr, m.b_out != nullptr};
  for (int64_t l = 0; l < m.L; ++l) k.push_back(m.layers[l].b_ih != nullptr);
  return k;
}

template <typename T>
bool same_sources(const DecodeModel<T>& m, const std::vector<T>& snap) {
  size_t off = 0;
  bool same = true;
  for_each_source(m, [&](const T* a, int64_t n) {
    if (same) same = std::memcmp(a, snap.data() + off, sizeof(T) * size_t(n)) == 0;
    off += size_t(n);
  });
  return same;
}

template <typename T>
struct PrepCache {
  std::mutex mu;
  std::list<CacheEntry<T>> entries;        // most recently used first
  int64_t hits = 0, misses = 0;
};

template <typename T>
PrepCache<T>& prep_cache() {
  static PrepCache<T> c;
  return c;
}

template <typename T>
std::shared_ptr<const Prepared<T>> get_prepared(const DecodeModel<T>& m) {
  size_t n = 0;
  for_each_source(m, [&](const T*, int64_t c) { n += size_t(c); });
  if (n * sizeof(T) > kCacheMaxBytes) return std::make_shared<const Prepared<T>>(prepare(m));
  PrepCache<T>& c = prep_cache<T>();
  const std::vector<int64_t> key = cache_key(m);
  {
    std::lock_guard<std::mutex> lock(c.mu);
    for (auto it = c.entries.begin(); it != c.entries.end(); ++it)
      if (it->key == key && it->snap.size() == n && same_sources(m, it->snap)) {
        c.entries.splice(c.entries.begin(), c.entries, it);
        ++c.hits;
        return it->prep;
      }
    ++c.misses;
  }
  CacheEntry<T> e;
  e.key = key;
  e.snap.reserve(n);
  for_each_source(m, [&](const T* a, int64_t cnt) { e.snap.insert(e.snap.end(), a, a + cnt); });
  e.prep = std::make_shared<const Prepared<T>>(prepare(m));
  std::shared_ptr<const Prepared<T>> out = e.prep;
  std::lock_guard<std::mutex> lock(c.mu);
  c.entries.push_front(std::move(e));
  while (c.entries.size() > kCacheEntries) c.entries.pop_back();
  return out;
}

// ---- one step for a block of rows ----
template <typename T>
struct Scratch {
  std::vector<T> pre, gh, logits;           // (R, GHp), (R, GHp), (R, Vp)
  std::vector<const T*> vin, vh, ipre, igh, ilog;
  std::vector<T*> opre, ogh, olog;
  Scratch(const Prepared<T>& p, int64_t R)
      : pre(size_t(R * p.GHp)),
        gh(p.cell == DecodeCell::Gru ? size_t(R * p.GHp) : 0),
        logits(size_t(R * p.Vp)),
        vin(static_cast<size_t>(R)),
        vh(static_cast<size_t>(R)),
        ipre(static_cast<size_t>(R)),
        igh(static_cast<size_t>(R)),
        ilog(static_cast<size_t>(R)),
        opre(static_cast<size_t>(R)),
        ogh(static_cast<size_t>(R)),
        olog(static_cast<size_t>(R)) {}
};

template <typename T>
inline void act_rnn(DecodeCell cell, int64_t H, const T* __restrict z, T* __restrict h) {
  if (cell == DecodeCell::RnnTanh)
    for (int64_t j = 0; j < H; ++j) h[j] = fast_tanh(z[j]);
  else
    for (int64_t j = 0; j < H; ++j) h[j] = act_relu(z[j]);
}

template <typename T>
inline void act_lstm(int64_t H, const T* __restrict a, T* __restrict c, T* __restrict h) {
  for (int64_t j = 0; j < H; ++j) {
    const T i_ = fast_sigmoid(a[j]);
    const T f_ = fast_sigmoid(a[H + j]);
    const T g_ = fast_tanh(a[2 * H + j]);
    const T o_ = fast_sigmoid(a[3 * H + j]);
    const T cv = f_ * c[j] + i_ * g_;
    c[j] = cv;
    h[j] = o_ * fast_tanh(cv);
  }
}

template <typename T>
inline void act_gru(int64_t H, const T* __restrict gi, const T* __restrict gh, T* __restrict h) {
  for (int64_t j = 0; j < H; ++j) {
    const T r_ = fast_sigmoid(gi[j] + gh[j]);
    const T z_ = fast_sigmoid(gi[H + j] + gh[H + j]);
    const T n_ = fast_tanh(gi[2 * H + j] + r_ * gh[2 * H + j]);
    h[j] = (T(1) - z_) * n_ + z_ * h[j];
  }
}

// Advance rows idx[0:R) (of Nrows, state h / cs (L, Nrows, H)) by one step fed tokens tok[0:R); leaves their
// logits in s.logits (R, Vp) unless head is false. The products' sums start from the row's constant part
// (its token's table row, the layer's bias, the head's bias) read in place; only with an extra input c is
// the table row copied first (to add c).
template <typename T>
void step(const Prepared<T>& p, int64_t R, const int64_t* idx, const int64_t* tok, int64_t Nrows, T* h, T* cs,
          const T* c, Scratch<T>& s, bool head = true) {
  const int64_t GHp = p.GHp, H = p.H;
  const bool gru = p.cell == DecodeCell::Gru, lstm = p.cell == DecodeCell::Lstm;
  for (int64_t k = 0; k < p.L; ++k) {
    T* hk = h + k * Nrows * H;
    // The input side: layer 0 a table row (in place unless c is added), above it bias + W_ih h_{k-1}.
    const bool copy0 = k == 0 && c;
    for (int64_t i = 0; i < R; ++i) {
      T* pre = s.pre.data() + i * GHp;
      const T* src = k == 0 ? p.table.data() + tok[i] * GHp : p.bias[k].data();
      if (copy0) {
        std::memcpy(pre, src, sizeof(T) * static_cast<size_t>(GHp));
        const T* ci = c + idx[i] * H;
        for (int64_t j = 0; j < H; ++j) pre[j] += ci[j];
      }
      s.ipre[i] = copy0 ? pre : src;  // the input side's value (layer 0) or its sums' start (above)
      s.opre[i] = pre;
      if (gru) {
        s.ogh[i] = s.gh.data() + i * GHp;
        s.igh[i] = p.bhh[k].data();
      }
      s.vh[i] = hk + idx[i] * H;
      if (k > 0) s.vin[i] = h + ((k - 1) * Nrows + idx[i]) * H;
    }
    if (k > 0) {
      mm_rows<T>(R, s.vin.data(), p.WihT[k], s.opre.data(), s.ipre.data());  // input side
      for (int64_t i = 0; i < R; ++i) s.ipre[i] = s.opre[i];
    }
    if (gru) {
      mm_rows<T>(R, s.vh.data(), p.WhhT[k], s.ogh.data(), s.igh.data());  // recurrent, into gh
    } else {
      mm_rows<T>(R, s.vh.data(), p.WhhT[k], s.opre.data(), s.ipre.data());  // recurrent, onto the input side
    }
    for (int64_t i = 0; i < R; ++i) {
      T* hi = hk + idx[i] * H;
      if (lstm) act_lstm(H, s.opre[i], cs + (k * Nrows + idx[i]) * H, hi);
      else if (gru) act_gru(H, s.ipre[i], s.ogh[i], hi);
      else act_rnn(p.cell, H, s.opre[i], hi);
    }
  }
  if (!head) return;
  const T* top = h + (p.L - 1) * Nrows * H;
  for (int64_t i = 0; i < R; ++i) {
    s.olog[i] = s.logits.data() + i * p.Vp;
    s.ilog[i] = p.bo.data();
    s.vh[i] = top + idx[i] * H;
  }
  mm_rows<T>(R, s.vh.data(), p.WoT, s.olog.data(), s.ilog.data());  // the head
}

// The largest of z[0:V) (NaN ignored unless z[0] is NaN), in vector lanes; max is exact, so the lane order
// changes nothing (at most the sign of a zero maximum, which no caller can see: it is only subtracted).
template <typename T>
inline T max_of(const T* z, int64_t V) {
  using Vt = sv::V<T>;
  constexpr int64_t W = VW<T>;
  T r = z[0];
  int64_t j0 = 0;
  if (V >= W) {
    Vt m = sv::splat(z[0]);
    for (; j0 + W <= V; j0 += W) {
      const Vt x = sv::load(z + j0);
      m = x > m ? x : m;
    }
    for (int64_t l = 0; l < W; ++l) r = m[l] > r ? m[l] : r;
  }
  for (int64_t j = j0; j < V; ++j) r = z[j] > r ? z[j] : r;
  return r;
}

// np.argmax semantics: the first maximum, or the first NaN.
template <typename T>
inline int64_t argmax(const T* z, int64_t V) {
  bool nan = false;
  for (int64_t j = 0; j < V; ++j) nan |= z[j] != z[j];
  if (nan)
    for (int64_t j = 0; j < V; ++j)
      if (z[j] != z[j]) return j;
  const T m = max_of(z, V);
  for (int64_t j = 0; j < V; ++j)
    if (z[j] == m) return j;
  return 0;
}

// A token from softmax(z / temperature) restricted to the top_k largest (ties at the k-th value kept): the
// first token whose cumulative weight exceeds u times the total. The weights are summed in blocks of 8
// (block sums in a fixed order, then the blocks in order), the same on every ISA, and the chosen block is
// scanned token by token.
template <typename T>
int64_t sample_one(const T* z, int64_t V, T inv_temp, int64_t top_k, double u, T* pbuf, T* kbuf, double* bsum) {
  constexpr int64_t BS = 8;
  T kth = -std::numeric_limits<T>::infinity();
  if (top_k > 0 && top_k < V) {
    const T lowest = -std::numeric_limits<T>::infinity();
    for (int64_t j = 0; j < V; ++j) kbuf[j] = z[j] != z[j] ? lowest : z[j];   // NaN: no ordering
    std::nth_element(kbuf, kbuf + (top_k - 1), kbuf + V, [](T a, T b) { return a > b; });
    kth = kbuf[top_k - 1];
  }
  const T m = max_of(z, V);
  for (int64_t j = 0; j < V; ++j) {
    const T e = vexp((z[j] - m) * inv_temp);
    pbuf[j] = z[j] >= kth ? e : T(0);
  }
  const int64_t nblk = (V + BS - 1) / BS, nfull = V / BS;
  for (int64_t b = 0; b < nblk; ++b) bsum[b] = 0.0;
  for (int64_t i = 0; i < BS; ++i)                  // every block in token order, the blocks side by side
    for (int64_t b = 0; b < nfull; ++b) bsum[b] += double(pbuf[b * BS + i]);
  for (int64_t j = nfull * BS; j < V; ++j) bsum[nfull] += double(pbuf[j]);
  double total = 0;
  for (int64_t b = 0; b < nblk; ++b) total += bsum[b];
  const double target = u * total;
  double cum = 0;
  for (int64_t b = 0; b < nblk; ++b) {
    if (!(cum + bsum[b] > target)) {
      cum += bsum[b];
      continue;
    }
    const int64_t j1 = std::min(V, (b + 1) * BS);
    int64_t last = -1;
    for (int64_t j = b * BS; j < j1; ++j) {
      if (pbuf[j] > T(0)) {
        cum += double(pbuf[j]);
        last = j;
        if (cum > target) return j;
      }
    }
    if (last >= 0) return last;                    // rounding inside the block: its last positive token
  }
  for (int64_t j = V - 1; j >= 0; --j)              // rounding at the very end (or no positive weight)
    if (pbuf[j] > T(0)) return j;
  return argmax(z, V);
}

// The lanes of x above thr (NaN is not), as bits.
inline unsigned above_mask(sv::V<double> x, double thr) {
#if defined(__AVX512F__)
  return unsigned(_mm512_cmp_pd_mask(__m512d(x), _mm512_set1_pd(thr), _CMP_GT_OQ));
#elif defined(__AVX2__)
  return unsigned(_mm256_movemask_pd(_mm256_cmp_pd(__m256d(x), _mm256_set1_pd(thr), _CMP_GT_OQ)));
#else
  unsigned m = 0;
  for (int q = 0; q < sv::lanes<double>(); ++q) m |= unsigned(x[q] > thr) << q;
  return m;
#endif
}

constexpr int64_t kRowBlock = 128;  // rows advanced together (their scratch stays in L2)

// ---- one stream of a vanilla RNN on two threads ----
// A single sequence's step is a chain of matrix-vector products (28K multiply-adds at H = 128, V = 96: about
// a microsecond on one core, where a core does one 64-byte multiply-add a cycle at best), too short for the
// pool's task hand-off but long against a handshake between two spinning cores (about 35 ns one way here).
// So for the whole call one helper spins beside the caller, and every product of a step is cut by columns:
// the caller takes the first half of a layer's panels (and two thirds of the head's), the helper the rest. A
// phase (one layer's product and activation, or the head) is opened by the caller; its second half is claimed
// once, by the helper or, when the helper has not claimed it by the time the caller's own half is done, by
// the caller itself (so a helper that never gets a core costs nothing). The caller samples. Each output
// element is the same sum as in step() (column cuts only), so the tokens are the same as on one thread.
template <typename T>
struct SplitStream {
  const Prepared<T>& p;
  const T* c;                                  // (H) constant input of layer 0, or nullptr
  // Every buffer starts on its own 64-byte line in mem (the two threads write neighbouring columns; panels
  // are whole lines, so neither ever writes a line the other writes).
  std::vector<T> mem;
  std::vector<T*> state[2];                    // [parity][L] (H): h before / after the step
  std::vector<T*> pre;                         // [L] (GHp) the layers' sums
  T* in0 = nullptr;                            // (GHp) layer 0's input row with c added
  T* logits = nullptr;                         // (Vp)
  const T* row0 = nullptr;                     // layer 0's input row of this step (table or in0)
  int cur = 0;                                 // state[cur] holds h_{t-1}
  alignas(64) std::atomic<int64_t> open{-1};   // the phase the caller has opened
  alignas(64) std::atomic<int64_t> claim{-1};  // the last phase whose second half was claimed
  alignas(64) std::atomic<int64_t> done{-1};   // the last phase whose second half the helper finished
  std::atomic<bool> stop{false};

  SplitStream(const Prepared<T>& p_, const T* c_, const T* h0) : p(p_), c(c_) {
    const int64_t line = 64 / int64_t(sizeof(T)), Hl = pad_to(p.H, line), Gl = pad_to(p.GHp, line);
    mem.assign(size_t(2 * p.L * Hl + (p.L + 1) * Gl + pad_to(p.Vp, line) + line), T(0));
    T* at = mem.data();
    while (reinterpret_cast<uintptr_t>(at) % 64 != 0) ++at;
    auto take = [&](int64_t n) {
      T* r = at;
      at += n;
      return r;
    };
    for (int b = 0; b < 2; ++b)
      for (int64_t k = 0; k < p.L; ++k) state[b].push_back(take(Hl));
    for (int64_t k = 0; k < p.L; ++k) pre.push_back(take(Gl));
    in0 = take(Gl);
    logits = take(pad_to(p.Vp, line));
    for (int64_t k = 0; k < p.L; ++k) std::copy(h0 + k * p.H, h0 + (k + 1) * p.H, state[0][size_t(k)]);
  }

  // Phase q's half (0: the caller's, 1: the second): layer q % (L + 1), or the head when that is L.
  void work(int64_t q, int half) {
    const int64_t j = q % (p.L + 1);
    const std::vector<T*>& old = state[cur];
    const std::vector<T*>& nxt = state[1 - cur];
    if (j == p.L) {  // the head: out of the new top state
      const int64_t np = p.Vp / PW<T>, s = np - np / 3;
      const int64_t p0 = half ? s : 0, cnt = half ? np - s : s;
      if (cnt <= 0) return;
      const T* v[1] = {nxt[size_t(p.L - 1)]};
      T* o[1] = {logits};
      const T* i0[1] = {p.bo.data()};
      mm_one<T>(v, p.WoT, p0, cnt, o, i0);
      return;
    }
    const int64_t np = p.GHp / PW<T>, s = (np + 1) / 2;
    const int64_t p0 = half ? s : 0, cnt = half ? np - s : s;
    if (cnt <= 0) return;
    T* o[1] = {pre[size_t(j)]};
    const T* i0[1] = {j == 0 ? row0 : p.bias[size_t(j)].data()};
    if (j > 0) {  // the input side, from the layer below's new state
      const T* vin[1] = {nxt[size_t(j - 1)]};
      mm_one<T>(vin, p.WihT[size_t(j)], p0, cnt, o, i0);
      i0[0] = o[0];
    }
    const T* vh[1] = {old[size_t(j)]};
    mm_one<T>(vh, p.WhhT[size_t(j)], p0, cnt, o, i0);
    const int64_t u0 = p0 * PW<T>, u1 = std::min(p.H, (p0 + cnt) * PW<T>);
    if (u1 > u0) act_rnn(p.cell, u1 - u0, pre[size_t(j)] + u0, nxt[size_t(j)] + u0);
  }

  // The caller: opens phase q, does its half, then the second half unless the helper has claimed it. A wait
  // for the helper of more than parallel::stall_ns() means it lost its core mid-phase (another program is
  // busy there): the helper is then stopped for the rest of the call (returns false), as it would cost a time
  // slice again.
  bool run_phase(int64_t q) {
    open.store(q, std::memory_order_release);
    work(q, 0);
    int64_t e = q - 1;
    if (claim.compare_exchange_strong(e, q, std::memory_order_acq_rel)) {
      work(q, 1);
      return true;
    }
    const int64_t stall = parallel::stall_ns().load(std::memory_order_relaxed);
    bool slow = false;
    std::chrono::steady_clock::time_point t0;
    for (int64_t k = 0; done.load(std::memory_order_acquire) < q; ++k) {
      if (k == 64) t0 = std::chrono::steady_clock::now();
      if (!slow && (stall <= 0 || (k > 64 && (k & 255) == 0 &&
                                   std::chrono::steady_clock::now() - t0 > std::chrono::nanoseconds(stall))))
        slow = true;
      if (k < 4096) parallel::relax();
      else std::this_thread::yield();  // the helper may need this core
    }
    if (slow) stop.store(true, std::memory_order_release);
    return !slow;
  }

  void helper() {
    int64_t last = -1;
    while (!stop.load(std::memory_order_acquire)) {
      const int64_t q = open.load(std::memory_order_acquire);
      if (q == last) {
        parallel::relax();
        continue;
      }
      last = q;
      int64_t e = q - 1;
      if (claim.compare_exchange_strong(e, q, std::memory_order_acq_rel)) {
        work(q, 1);
        done.store(q, std::memory_order_release);
      }
    }
  }
};

inline int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// After a call whose helper lost its core (SplitStream::run_phase), one-stream calls run on one thread until
// parallel::split_paused_until(), a pause that backs off: 10 ms after a lone stall (other libraries' threads
// still spinning after their calls: NumPy's and torch's peers in the benchmark), four times the last pause
// (up to 2 s) after a stall within 0.5 s of the previous pause's end (a program busy on the other core).
// Measured with such a program: 2.6x slower than one thread with no pause.
constexpr int64_t kPauseMinNs = 10000000, kPauseMaxNs = 2000000000, kPauseMemoryNs = 500000000;
std::atomic<int64_t> g_pause_ns{kPauseMinNs};

void note_stall() {
  const int64_t now = steady_ns(), resumed = parallel::split_paused_until().load(std::memory_order_relaxed);
  const int64_t last = g_pause_ns.load(std::memory_order_relaxed);
  const int64_t pause = now - resumed < kPauseMemoryNs ? std::min(kPauseMaxNs, 4 * last) : kPauseMinNs;
  g_pause_ns.store(pause, std::memory_order_relaxed);
  parallel::split_paused_until().store(now + pause, std::memory_order_relaxed);
}

// Whether one stream goes through SplitStream: a vanilla cell, a product of at least two panels per layer and
// head, enough steps to pay for waking the helper, more than one thread, and no recent stall.
template <typename T>
bool split_stream(const Prepared<T>& p, const SampleParams<T>& sp) {
  const bool rnn = p.cell == DecodeCell::RnnTanh || p.cell == DecodeCell::RnnRelu;
  return sp.N == 1 && rnn && p.GHp / PW<T> >= 2 && p.Vp / PW<T> >= 2 && sp.steps >= 16 && blas::worker_threads() > 1 &&
         steady_ns() >= parallel::split_paused_until().load(std::memory_order_relaxed);
}

template <typename T>
void sample_split(const Prepared<T>& p, const SampleParams<T>& sp, int64_t first) {
  const int64_t V = p.V, L = p.L, GHp = p.GHp;
  std::vector<T> pbuf(static_cast<size_t>(V)), kbuf(static_cast<size_t>(V));
  std::vector<double> bsum(static_cast<size_t>(V / 8 + 1));
  const T inv_temp = T(1.0 / sp.temperature);
  SplitStream<T> ss(p, sp.c, sp.h);
  struct Helper {  // started here, stopped and waited for on every way out
    SplitStream<T>& ss;
    parallel::Ticket ticket;
    explicit Helper(SplitStream<T>& s)
        : ss(s), ticket(parallel::submit(1, [](void* x, int64_t) { static_cast<SplitStream<T>*>(x)->helper(); }, &s)) {}
    ~Helper() {
      ss.stop.store(true, std::memory_order_release);
      parallel::wait(ticket);
    }
  } helper(ss);
  int64_t tok = first, q = 0, t = 0;
  for (; t < sp.steps; ++t) {
    const T* row = p.table.data() + tok * GHp;
    if (ss.c) {
      std::copy(row, row + GHp, ss.in0);
      for (int64_t j = 0; j < p.H; ++j) ss.in0[j] += ss.c[j];
      row = ss.in0;
    }
    ss.row0 = row;
    for (int64_t j = 0; j <= L; ++j)
      if (!ss.run_phase(q++)) note_stall();
    ss.cur = 1 - ss.cur;  // the new state is h_t (the helper reads cur only inside a phase)
    const T* z = ss.logits;
    tok = sp.greedy ? argmax(z, V)
                    : sample_one(z, V, inv_temp, sp.top_k, decode_uniform(sp.seed, 0, uint64_t(sp.t0 + t)), pbuf.data(),
                                 kbuf.data(), bsum.data());
    sp.ids[t] = tok;
    if (tok == sp.end_token) {
      ++t;
      break;
    }
  }
  for (; t < sp.steps; ++t) sp.ids[t] = sp.pad_token;
  for (int64_t k = 0; k < L; ++k)
    std::copy(ss.state[ss.cur][size_t(k)], ss.state[ss.cur][size_t(k)] + p.H, sp.h + k * p.H);
}

}  // namespace

template <typename T>
void decode_sample_impl(const DecodeModel<T>& m, const SampleParams<T>& sp) {
  const std::shared_ptr<const Prepared<T>> pp = get_prepared(m);
  const Prepared<T>& p = *pp;
  const int64_t N = sp.N, V = m.V;
  std::vector<int64_t> prev(sp.first, sp.first + N), active(static_cast<size_t>(N)), toks(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) active[n] = n;
  std::vector<char> done(static_cast<size_t>(N), 0);
  Scratch<T> s(p, std::min<int64_t>(kRowBlock, N));
  std::vector<T> pbuf(static_cast<size_t>(V)), kbuf(static_cast<size_t>(V));
  std::vector<double> bsum(static_cast<size_t>(V / 8 + 1));
  const T inv_temp = T(1.0 / sp.temperature);
  for (int64_t t = 0; t < sp.P; ++t) {                // the forced prefix: feed, no head, no choice
    for (int64_t b = 0; b < N; b += kRowBlock) {
      const int64_t nb = std::min(kRowBlock, N - b);
      for (int64_t i = 0; i < nb; ++i) toks[i] = prev[b + i];
      step(p, nb, active.data() + b, toks.data(), N, sp.h, sp.cs, sp.c, s, false);
    }
    std::copy(sp.prefix + t * N, sp.prefix + (t + 1) * N, prev.begin());
  }
  if (split_stream(p, sp)) return sample_split(p, sp, prev[0]);
  int64_t t = 0;
  for (; t < sp.steps && !active.empty(); ++t) {
    int64_t* out = sp.ids + t * N;
    for (int64_t n = 0; n < N; ++n) out[n] = sp.pad_token;
    const int64_t R = int64_t(active.size());
    for (int64_t b = 0; b < R; b += kRowBlock) {
      const int64_t nb = std::min(kRowBlock, R - b);
      const int64_t* idx = active.data() + b;
      for (int64_t i = 0; i < nb; ++i) toks[i] = prev[idx[i]];
      step(p, nb, idx, toks.data(), N, sp.h, sp.cs, sp.c, s);
      for (int64_t i = 0; i < nb; ++i) {
        const T* z = s.logits.data() + i * p.Vp;
        const int64_t n = idx[i];
        const int64_t tok =
            sp.greedy ? argmax(z, V)
                      : sample_one(z, V, inv_temp, sp.top_k, decode_uniform(sp.seed, uint64_t(n), uint64_t(sp.t0 + t)),
                                   pbuf.data(), kbuf.data(), bsum.data());
        out[n] = prev[n] = tok;
        if (tok == sp.end_token) done[n] = 1;
      }
    }
    active.erase(std::remove_if(active.begin(), active.end(), [&](int64_t n) { return done[n] != 0; }), active.end());
  }
  for (; t < sp.steps; ++t)
    for (int64_t n = 0; n < N; ++n) sp.ids[t * N + n] = sp.pad_token;
}

// The beam search of bp's N sources (each source's search depends on no other source's).
template <typename T>
void beam_sources(const Prepared<T>& p, const DecodeModel<T>& m, const BeamParams<T>& bp) {
  const int64_t N = bp.N, K = bp.K, NK = N * K, V = m.V, L = m.L, H = m.H, end = bp.end_token;
  const bool lstm = m.cell == DecodeCell::Lstm;
  const double ninf = -std::numeric_limits<double>::infinity();
  // States of every beam, (L, N*K, H), beam k of source n at row n*K + k; double-buffered for the reorder.
  std::vector<T> h(static_cast<size_t>(L * NK * H)), h2(h.size()), cs(lstm ? h.size() : 0), cs2(cs.size());
  for (int64_t k = 0; k < L; ++k)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t b = 0; b < K; ++b) {
        const int64_t src = (k * N + n) * H, dst = (k * NK + n * K + b) * H;
        std::memcpy(&h[dst], bp.h0 + src, sizeof(T) * static_cast<size_t>(H));
        if (lstm) std::memcpy(&cs[dst], bp.c0 + src, sizeof(T) * static_cast<size_t>(H));
      }
  std::vector<T> cb;
  if (bp.c) {
    cb.resize(static_cast<size_t>(NK * H));
    for (int64_t r = 0; r < NK; ++r) std::memcpy(&cb[r * H], bp.c + (r / K) * H, sizeof(T) * static_cast<size_t>(H));
  }
  std::vector<double> score(static_cast<size_t>(NK), ninf), score2(static_cast<size_t>(NK)),
      lp(static_cast<size_t>(NK * V));
  for (int64_t n = 0; n < N; ++n) score[n * K] = 0.0;          // one live beam at the start
  std::vector<char> done(static_cast<size_t>(NK), 0), done2(static_cast<size_t>(NK));
  std::vector<int64_t> prev(static_cast<size_t>(NK), bp.start_token), active, toks(static_cast<size_t>(NK));
  std::vector<int64_t> hist_tok, hist_par;                     // (steps, N*K) token and parent beam
  Scratch<T> s(p, std::min<int64_t>(kRowBlock, NK));
  const int64_t RB = std::min<int64_t>(kRowBlock, NK);
  std::vector<double> best_v(static_cast<size_t>(K)), ebuf(static_cast<size_t>(RB * V)), sums(static_cast<size_t>(RB));
  std::vector<int64_t> best_i(static_cast<size_t>(K));
  std::vector<double> lse(static_cast<size_t>(NK));
  int64_t steps = 0;
  for (int64_t t = 0; t < bp.max_len; ++t) {
    // Beams that are finished or still at -inf (never live) need no step: their candidates are fixed.
    active.clear();
    for (int64_t r = 0; r < NK; ++r)
      if (!done[r] && score[r] != ninf) active.push_back(r);
    const int64_t R = int64_t(active.size());
    for (int64_t b = 0; b < R; b += kRowBlock) {
      const int64_t nb = std::min(kRowBlock, R - b);
      const int64_t* idx = active.data() + b;
      for (int64_t i = 0; i < nb; ++i) toks[i] = prev[idx[i]];
      step(p, nb, idx, toks.data(), NK, h.data(), lstm ? cs.data() : nullptr, bp.c ? cb.data() : nullptr, s);
      // log-softmax in float64: every row's exps, then the rows' sums side by side (each in token order),
      // then the logs.
      for (int64_t i = 0; i < nb; ++i) {
        const T* z = s.logits.data() + i * p.Vp;
        double* l = lp.data() + idx[i] * V;
        double* e = ebuf.data() + i * V;
        const double mx = double(max_of(z, V));
        for (int64_t j = 0; j < V; ++j) l[j] = double(z[j]) - mx;
        for (int64_t j = 0; j < V; ++j) e[j] = vexp(l[j]);
        sums[i] = 0.0;
      }
      for (int64_t j = 0; j < V; ++j)
        for (int64_t i = 0; i < nb; ++i) sums[i] += ebuf[i * V + j];
      for (int64_t i = 0; i < nb; ++i) lse[idx[i]] = std::log(sums[i]);   // row r's log-probs: lp - lse[r]
    }
    hist_tok.resize(size_t((t + 1) * NK));
    hist_par.resize(size_t((t + 1) * NK));
    for (int64_t n = 0; n < N; ++n) {
      // The K best of the K*V candidates, descending; equal values keep candidate order (stable).
      int64_t cnt = 0;
      auto offer = [&](double v, int64_t ci) {
        if (cnt == K && !(v > best_v[K - 1])) return;
        int64_t pos = cnt < K ? cnt++ : K - 1;
        while (pos > 0 && v > best_v[pos - 1]) {
          best_v[pos] = best_v[pos - 1];
          best_i[pos] = best_i[pos - 1];
          --pos;
        }
        best_v[pos] = v;
        best_i[pos] = ci;
      };
      for (int64_t b = 0; b < K; ++b) {
        const int64_t r = n * K + b;
        const double sc = score[r];
        if (done[r] || sc == ninf) {
          if (cnt == K && !(sc > best_v[K - 1])) continue;    // nothing here can enter
          for (int64_t j = 0; j < V; ++j) {
            const double v = done[r] ? (j == end ? sc : ninf) : ninf;
            if (cnt == K && !(v > best_v[K - 1])) {
              if (!done[r] || j > end) break;
              continue;
            }
            offer(v, b * V + j);
          }
          continue;
        }
        const double* l = lp.data() + r * V;
        const double ls = lse[r];
        int64_t j = 0;
        for (; j < V && cnt < K; ++j) offer(sc + (l[j] - ls), b * V + j);
        // Full: a candidate enters only above the K-th best, which only rises, so only the lanes of a vector
        // above it when the vector is reached are offered, in order (exactly what offering all would do).
        using VD = sv::V<double>;
        constexpr int64_t WD = VW<double>;
        for (; j + WD <= V; j += WD) {
          const VD x = sv::splat(sc) + (sv::load(l + j) - sv::splat(ls));
          for (unsigned mk = above_mask(x, best_v[K - 1]); mk; mk &= mk - 1) {
            const int q = __builtin_ctz(mk);
            offer(x[q], b * V + j + q);
          }
        }
        for (; j < V; ++j) offer(sc + (l[j] - ls), b * V + j);
      }
      for (int64_t k = 0; k < K; ++k) {
        const int64_t r = n * K + k, b = best_i[k] / V, tok = best_i[k] % V, from = n * K + b;
        score2[r] = best_v[k];
        done2[r] = char(done[from] || tok == end);
        hist_tok[t * NK + r] = tok;
        hist_par[t * NK + r] = b;
        toks[r] = tok;
        for (int64_t l = 0; l < L; ++l) {
          std::memcpy(&h2[(l * NK + r) * H], &h[(l * NK + from) * H], sizeof(T) * static_cast<size_t>(H));
          if (lstm) std::memcpy(&cs2[(l * NK + r) * H], &cs[(l * NK + from) * H], sizeof(T) * static_cast<size_t>(H));
        }
      }
    }
    h.swap(h2);
    if (lstm) cs.swap(cs2);
    score.swap(score2);
    done.swap(done2);
    std::copy(toks.begin(), toks.begin() + NK, prev.begin());
    steps = t + 1;
    if (std::all_of(done.begin(), done.end(), [](char d) { return d != 0; })) break;
  }
  for (int64_t n = 0; n < N; ++n) {                            // follow beam 0 back to the start
    for (int64_t t = steps; t < bp.max_len; ++t) bp.ids[t * N + n] = end;
    int64_t k = 0;
    for (int64_t t = steps - 1; t >= 0; --t) {
      bp.ids[t * N + n] = hist_tok[t * NK + n * K + k];
      k = hist_par[t * NK + n * K + k];
    }
    bp.scores[n] = score[n * K];
  }
}

// Sources [n0, n1) of bp as a search of their own: h0/c0 rows copied out of every layer, ids into a
// buffer of their own (copied back by the caller), c and scores offset in place.
template <typename T>
struct SourceChunk {
  std::vector<T> h0, c0;
  std::vector<int64_t> ids;
  BeamParams<T> bp;
  SourceChunk(const DecodeModel<T>& m, const BeamParams<T>& all, int64_t n0, int64_t n1) : bp(all) {
    const int64_t nc = n1 - n0, H = m.H, L = m.L;
    h0.resize(size_t(L * nc * H));
    if (all.c0) c0.resize(h0.size());
    for (int64_t k = 0; k < L; ++k) {
      std::memcpy(&h0[size_t(k * nc * H)], all.h0 + (k * all.N + n0) * H, sizeof(T) * size_t(nc * H));
      if (all.c0) std::memcpy(&c0[size_t(k * nc * H)], all.c0 + (k * all.N + n0) * H, sizeof(T) * size_t(nc * H));
    }
    ids.resize(size_t(all.max_len * nc));
    bp.N = nc;
    bp.h0 = h0.data();
    bp.c0 = all.c0 ? c0.data() : nullptr;
    bp.c = all.c ? all.c + n0 * H : nullptr;
    bp.ids = ids.data();
    bp.scores = all.scores + n0;
  }
  void copy_ids_back(const BeamParams<T>& all, int64_t n0) const {
    for (int64_t t = 0; t < all.max_len; ++t)
      std::memcpy(all.ids + t * all.N + n0, &ids[size_t(t * bp.N)], sizeof(int64_t) * size_t(bp.N));
  }
};

// Beam search over independent sources, in chunks of sources shared out by parallel::chunks among
// rnnfast's threads (blas::worker_threads()). Each source's result is the same whichever thread computes
// it (a row's products, log-softmax and top-K read no other source), so the output equals the one-thread
// search bit for bit. Below parallel::kMinWork multiply-adds, one thread.

template <typename T>
void decode_beam_impl(const DecodeModel<T>& m, const BeamParams<T>& bp) {
  const std::shared_ptr<const Prepared<T>> pp = get_prepared(m);
  const int64_t N = bp.N, G = m.cell == DecodeCell::Lstm ? 4 : m.cell == DecodeCell::Gru ? 3 : 1;
  const double work = double(N * bp.K) * double(bp.max_len) * double(m.H) * double(G * m.H * m.L + m.V);
  const int64_t threads = work < parallel::kMinWork ? 1 : std::min<int64_t>(blas::worker_threads(), N);
  if (threads <= 1) return beam_sources(*pp, m, bp);
  const int64_t nchunks = std::min<int64_t>(N, 2 * threads), per = (N + nchunks - 1) / nchunks;
  parallel::chunks(nchunks, threads, [&](int64_t c) {
    const int64_t n0 = c * per, n1 = std::min(N, n0 + per);
    if (n0 >= n1) return;
    SourceChunk<T> ch(m, bp, n0, n1);
    beam_sources(*pp, m, ch.bp);
    ch.copy_ids_back(bp, n0);
  });
}

template <typename T>
void decode_cache_clear_t() {
  PrepCache<T>& c = prep_cache<T>();
  std::lock_guard<std::mutex> lock(c.mu);
  c.entries.clear();
  c.hits = c.misses = 0;
}
template <typename T>
void decode_cache_stats_t(int64_t* out) {
  PrepCache<T>& c = prep_cache<T>();
  std::lock_guard<std::mutex> lock(c.mu);
  out[0] += c.hits;
  out[1] += c.misses;
  out[2] += int64_t(c.entries.size());
}

void decode_cache_clear() {
  decode_cache_clear_t<float>();
  decode_cache_clear_t<double>();
}
void decode_cache_stats(int64_t* out) {
  decode_cache_stats_t<float>(out);
  decode_cache_stats_t<double>(out);
}

template void decode_sample_impl<float>(const DecodeModel<float>&, const SampleParams<float>&);
template void decode_sample_impl<double>(const DecodeModel<double>&, const SampleParams<double>&);
template void decode_beam_impl<float>(const DecodeModel<float>&, const BeamParams<float>&);
template void decode_beam_impl<double>(const DecodeModel<double>&, const BeamParams<double>&);

}  // namespace RNNFAST_ISA
}  // namespace cpu
}  // namespace rnnfast
