// The width-generic SIMD layer of the CPU kernels: one vector type per element type whose width is the
// build's ISA (64 bytes in the avx512 build, 32 in avx2, 16 in the generic x86-64 build), loads/stores
// that never assume alignment, masked tails, the row-sum reduction and the vector activations. Kernels are
// written once against it and compiled once per ISA (CMakeLists.txt). Not a general SIMD library.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu/isa_ns.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace rnnfast {
namespace simd {
inline namespace RNNFAST_ISA_NS {

#if defined(__AVX512F__)
constexpr int kBytes = 64;
#elif defined(__AVX2__)
constexpr int kBytes = 32;
#else
constexpr int kBytes = 16;
#endif

template <typename T> struct Vec;
template <> struct Vec<float> {
  typedef float type __attribute__((vector_size(kBytes)));
  typedef int32_t mask_type __attribute__((vector_size(kBytes)));
  static constexpr int n = kBytes / 4;
};
template <> struct Vec<double> {
  typedef double type __attribute__((vector_size(kBytes)));
  typedef int64_t mask_type __attribute__((vector_size(kBytes)));
  static constexpr int n = kBytes / 8;
};
template <typename T> using V = typename Vec<T>::type;
template <typename T> constexpr int lanes() { return Vec<T>::n; }

// Unaligned full-width load/store (caller arrays need not be aligned to anything but their element).
template <typename T> inline V<T> load(const T* p) {
  V<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T> inline void store(T* p, V<T> v) { std::memcpy(p, &v, sizeof(v)); }
// x - 0 (not 0 + x) so the compiler may drop the arithmetic: x - (+0) is x for every x, -0 included, while
// 0 + (-0) is +0, which kept an add before every broadcast.
template <typename T> inline V<T> splat(T x) { return x - V<T>{}; }

// The first m lanes (0 <= m < lanes) of p: loads zero the other lanes, stores leave memory past m alone.
// Masked instructions where the ISA has them, so a tail never touches memory past the row.
struct Tail {
  int m;
#if defined(__AVX512F__)
  __mmask16 k;
  explicit Tail(int64_t m_) : m(int(m_)), k(__mmask16((1u << m) - 1u)) {}
#elif defined(__AVX2__)
  __m256i k;
  explicit Tail(int64_t m_)
      : m(int(m_)), k(_mm256_cmpgt_epi32(_mm256_set1_epi32(int(m_)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))) {}
#else
  explicit Tail(int64_t m_) : m(int(m_)) {}
#endif
  V<float> load(const float* p) const {
#if defined(__AVX512F__)
    return V<float>(_mm512_maskz_loadu_ps(k, p));
#elif defined(__AVX2__)
    return V<float>(_mm256_maskload_ps(p, k));
#else
    V<float> v = {};
    std::memcpy(&v, p, sizeof(float) * size_t(m));
    return v;
#endif
  }
  void store(float* p, V<float> v) const {
#if defined(__AVX512F__)
    _mm512_mask_storeu_ps(p, k, __m512(v));
#elif defined(__AVX2__)
    _mm256_maskstore_ps(p, k, __m256(v));
#else
    std::memcpy(p, &v, sizeof(float) * size_t(m));
#endif
  }
  // double tails go through memory (float32 is the fast path; these are at most lanes-1 elements)
  V<double> load(const double* p) const {
    V<double> v = {};
    std::memcpy(&v, p, sizeof(double) * size_t(m));
    return v;
  }
  void store(double* p, V<double> v) const { std::memcpy(p, &v, sizeof(double) * size_t(m)); }
};

template <typename T> inline T hsum(V<T> a) {
  T s = T(0);
  for (int i = 0; i < lanes<T>(); ++i) s += a[i];
  return s;
}

// Lane i of the result = the sum of all lanes of a[i], for a[0..n) with n = lanes: a transposing tree of
// "even lanes + odd lanes" over pairs (log2 n levels, n - 1 shuffle pairs in all), so a block of row dot
// products leaves the registers as one vector instead of n scalar reductions.
template <typename T> struct Shuf;
#define RNNFAST_SHUF(TY, ...)            \
  template <> struct Shuf<TY> {          \
    static constexpr int n = Vec<TY>::n; \
    __VA_ARGS__                          \
  };
#if defined(__AVX512F__)
RNNFAST_SHUF(
    float, static V<float> pair(V<float> a, V<float> b) {
      using M = Vec<float>::mask_type;
      return __builtin_shuffle(a, b, M{0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}) +
             __builtin_shuffle(a, b, M{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31});
    })
RNNFAST_SHUF(
    double, static V<double> pair(V<double> a, V<double> b) {
      using M = Vec<double>::mask_type;
      return __builtin_shuffle(a, b, M{0, 2, 4, 6, 8, 10, 12, 14}) +
             __builtin_shuffle(a, b, M{1, 3, 5, 7, 9, 11, 13, 15});
    })
#elif defined(__AVX2__)
RNNFAST_SHUF(
    float, static V<float> pair(V<float> a, V<float> b) {
      using M = Vec<float>::mask_type;
      return __builtin_shuffle(a, b, M{0, 2, 4, 6, 8, 10, 12, 14}) +
             __builtin_shuffle(a, b, M{1, 3, 5, 7, 9, 11, 13, 15});
    })
RNNFAST_SHUF(
    double, static V<double> pair(V<double> a, V<double> b) {
      using M = Vec<double>::mask_type;
      return __builtin_shuffle(a, b, M{0, 2, 4, 6}) + __builtin_shuffle(a, b, M{1, 3, 5, 7});
    })
#else
RNNFAST_SHUF(
    float, static V<float> pair(V<float> a, V<float> b) {
      using M = Vec<float>::mask_type;
      return __builtin_shuffle(a, b, M{0, 2, 4, 6}) + __builtin_shuffle(a, b, M{1, 3, 5, 7});
    })
RNNFAST_SHUF(
    double, static V<double> pair(V<double> a, V<double> b) {
      using M = Vec<double>::mask_type;
      return __builtin_shuffle(a, b, M{0, 2}) + __builtin_shuffle(a, b, M{1, 3});
    })
#endif
#undef RNNFAST_SHUF

template <typename T> inline V<T> reduce_rows(V<T>* a) {
  for (int w = lanes<T>(); w > 1; w /= 2)
    for (int i = 0; i < w / 2; ++i) a[i] = Shuf<T>::pair(a[2 * i], a[2 * i + 1]);
  return a[0];
}

#if defined(__AVX2__)
// float32 on x86: in-lane horizontal adds and one cross-lane permute per eight rows (the generic tree's
// two-source permutes cost more here).
inline __m256 hsum8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5, __m256 a6, __m256 a7) {
  __m256 t0 = _mm256_hadd_ps(a0, a1), t1 = _mm256_hadd_ps(a2, a3);
  __m256 t2 = _mm256_hadd_ps(a4, a5), t3 = _mm256_hadd_ps(a6, a7);
  t0 = _mm256_hadd_ps(t0, t1);
  t2 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(t0, t2, 0x20), _mm256_permute2f128_ps(t0, t2, 0x31));
}
#if defined(__AVX512F__)
template <> inline V<float> reduce_rows<float>(V<float>* a) {
  __m256 h[16];
  for (int i = 0; i < 16; ++i) {
    const __m512 z = __m512(a[i]);
    h[i] = _mm256_add_ps(_mm512_castps512_ps256(z), _mm512_extractf32x8_ps(z, 1));
  }
  const __m256 lo = hsum8(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]);
  const __m256 hi = hsum8(h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]);
  return V<float>(_mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1));
}
#else
template <> inline V<float> reduce_rows<float>(V<float>* a) {
  return V<float>(hsum8(__m256(a[0]), __m256(a[1]), __m256(a[2]), __m256(a[3]), __m256(a[4]), __m256(a[5]),
                        __m256(a[6]), __m256(a[7])));
}
#endif
#endif

// ---- vector activations (cell_math.h's scalar forms, lane by lane; NaN propagates) ----
template <typename T> inline V<T> relu(V<T> z) { return z > T(0) ? z : (z != z ? z : V<T>{}); }

// float32: the rational tanh of cell_math.h's fast_tanh; float64: libm tanh per lane.
inline V<float> tanh(V<float> x) {
  const float c = 7.90531110763549805f;
  V<float> xc = x > c ? splat(c) : x;
  xc = xc < -c ? splat(-c) : xc;
  const V<float> x2 = xc * xc;
  V<float> p = splat(-2.76076847742355e-16f);
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * xc;
  V<float> q = splat(1.19825839466702e-06f);
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  const V<float> r = p / q;
  return x != x ? x : r;
}
inline V<double> tanh(V<double> x) {
  for (int i = 0; i < lanes<double>(); ++i) x[i] = std::tanh(x[i]);
  return x;
}

// The ISA this translation unit was compiled for.
inline const char* isa_name() {
#if defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__)
  return "avx2";
#else
  return "generic";
#endif
}

}  // namespace RNNFAST_ISA_NS
}  // namespace simd
}  // namespace rnnfast
