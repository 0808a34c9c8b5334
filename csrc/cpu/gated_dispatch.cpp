// Run-time choice between the two builds of gated_cpu.cpp (x86-64-v3 with AVX2 + FMA when the CPU has it,
// otherwise generic), with the same test as the vanilla kernels (cpu::packed_available). Not a kernel.
#include "cpu/gated_cpu.h"
#include "cpu/rnn_cpu.h"

namespace rnnfast {
namespace cpu {

#define RNNFAST_GATED_DECL                                                                          \
  template <typename T> void lstm_forward_impl(const GatedForwardParams<T>&, const Tuning&);   \
  template <typename T> void lstm_backward_impl(const GatedBackwardParams<T>&, const Tuning&); \
  template <typename T> void gru_forward_impl(const GatedForwardParams<T>&, const Tuning&);    \
  template <typename T> void gru_backward_impl(const GatedBackwardParams<T>&, const Tuning&);
namespace generic {
RNNFAST_GATED_DECL
}  // namespace generic
#ifdef RNNFAST_HAVE_AVX2
namespace avx2 {
RNNFAST_GATED_DECL
}  // namespace avx2
#define RNNFAST_PICK(fn, p)                                       \
  if (packed_available()) return avx2::fn<T>(p, tuning());       \
  generic::fn<T>(p, tuning())
#else
#define RNNFAST_PICK(fn, p) generic::fn<T>(p, tuning())
#endif
#undef RNNFAST_GATED_DECL

template <typename T>
void lstm_forward(const GatedForwardParams<T>& p) { RNNFAST_PICK(lstm_forward_impl, p); }
template <typename T>
void lstm_backward(const GatedBackwardParams<T>& p) { RNNFAST_PICK(lstm_backward_impl, p); }
template <typename T>
void gru_forward(const GatedForwardParams<T>& p) { RNNFAST_PICK(gru_forward_impl, p); }
template <typename T>
void gru_backward(const GatedBackwardParams<T>& p) { RNNFAST_PICK(gru_backward_impl, p); }
#undef RNNFAST_PICK

template void lstm_forward<float>(const GatedForwardParams<float>&);
template void lstm_forward<double>(const GatedForwardParams<double>&);
template void lstm_backward<float>(const GatedBackwardParams<float>&);
template void lstm_backward<double>(const GatedBackwardParams<double>&);
template void gru_forward<float>(const GatedForwardParams<float>&);
template void gru_forward<double>(const GatedForwardParams<double>&);
template void gru_backward<float>(const GatedBackwardParams<float>&);
template void gru_backward<double>(const GatedBackwardParams<double>&);

}  // namespace cpu
}  // namespace rnnfast
