// Run-time choice between the two builds of rnn_cpu.cpp: x86-64-v3 (AVX2 + FMA) when the CPU has it,
// otherwise the generic build. Not a kernel: it only forwards.
#include "cpu/rnn_cpu.h"

namespace rnnfast {
namespace cpu {
namespace generic {
template <typename T> void rnn_forward_impl(const RnnForwardParams<T>&, const Tuning&);
template <typename T> void rnn_backward_impl(const RnnBackwardParams<T>&, const Tuning&);
}  // namespace generic
#ifdef RNNFAST_HAVE_AVX2
namespace avx2 {
template <typename T> void rnn_forward_impl(const RnnForwardParams<T>&, const Tuning&);
template <typename T> void rnn_backward_impl(const RnnBackwardParams<T>&, const Tuning&);
}  // namespace avx2
#endif

namespace {
bool use_avx2() {
#ifdef RNNFAST_HAVE_AVX2
  static const bool v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return v;
#else
  return false;
#endif
}
}  // namespace

Tuning& tuning() {
  static Tuning t;
  return t;
}

bool packed_available() { return use_avx2(); }

const char* isa() { return use_avx2() ? "avx2" : "generic"; }

template <typename T>
void rnn_forward(const RnnForwardParams<T>& p) {
#ifdef RNNFAST_HAVE_AVX2
  if (use_avx2()) return avx2::rnn_forward_impl<T>(p, tuning());
#endif
  generic::rnn_forward_impl<T>(p, tuning());
}

template <typename T>
void rnn_backward(const RnnBackwardParams<T>& p) {
#ifdef RNNFAST_HAVE_AVX2
  if (use_avx2()) return avx2::rnn_backward_impl<T>(p, tuning());
#endif
  generic::rnn_backward_impl<T>(p, tuning());
}

template void rnn_forward<float>(const RnnForwardParams<float>&);
template void rnn_forward<double>(const RnnForwardParams<double>&);
template void rnn_backward<float>(const RnnBackwardParams<float>&);
template void rnn_backward<double>(const RnnBackwardParams<double>&);

}  // namespace cpu
}  // namespace rnnfast
