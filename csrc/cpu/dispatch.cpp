// The one run-time dispatcher of the CPU kernels: every kernel family (vanilla, LSTM, GRU) is compiled once
// per ISA into its own namespace (CMakeLists.txt), and each entry point here forwards to the build chosen by
// RNNFAST_ISA or, unset, the best the CPU supports. Not a kernel. A new family adds its entry points to
// RNNFAST_KERNELS and one forwarding function each.
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "cpu/gated_cpu.h"
#include "cpu/rnn_cpu.h"

namespace rnnfast {
namespace cpu {

// X(name, params): every entry point of every family, templated on the element type.
#define RNNFAST_KERNELS(X)              \
  X(rnn_forward, RnnForwardParams)      \
  X(rnn_backward, RnnBackwardParams)    \
  X(lstm_forward, GatedForwardParams)   \
  X(lstm_backward, GatedBackwardParams) \
  X(gru_forward, GatedForwardParams)    \
  X(gru_backward, GatedBackwardParams)

#define RNNFAST_DECL(fn, P) template <typename T> void fn##_impl(const P<T>&, const Tuning&);
namespace generic {
RNNFAST_KERNELS(RNNFAST_DECL)
}
#ifdef RNNFAST_HAVE_X86_ISAS
namespace avx2 {
RNNFAST_KERNELS(RNNFAST_DECL)
}
namespace avx512 {
RNNFAST_KERNELS(RNNFAST_DECL)
}
#endif
#undef RNNFAST_DECL

namespace {

// One ISA's build: a pointer per entry point and element type.
struct Table {
#define RNNFAST_FIELD(fn, P)                      \
  void (*fn##_f)(const P<float>&, const Tuning&); \
  void (*fn##_d)(const P<double>&, const Tuning&);
  RNNFAST_KERNELS(RNNFAST_FIELD)
#undef RNNFAST_FIELD
};

#define RNNFAST_ENTRY(fn, P) &ns::fn##_impl<float>, &ns::fn##_impl<double>,
#define ns generic
const Table kGeneric = {RNNFAST_KERNELS(RNNFAST_ENTRY)};
#undef ns
#ifdef RNNFAST_HAVE_X86_ISAS
#define ns avx2
const Table kAvx2 = {RNNFAST_KERNELS(RNNFAST_ENTRY)};
#undef ns
#define ns avx512
const Table kAvx512 = {RNNFAST_KERNELS(RNNFAST_ENTRY)};
#undef ns
#endif
#undef RNNFAST_ENTRY

const Table& table_of(Isa i) {
#ifdef RNNFAST_HAVE_X86_ISAS
  if (i == Isa::Avx512) return kAvx512;
  if (i == Isa::Avx2) return kAvx2;
#endif
  return kGeneric;
}

Isa parse(const std::string& name, const char* where) {
  Isa i;
  if (name == "generic") i = Isa::Generic;
  else if (name == "avx2") i = Isa::Avx2;
  else if (name == "avx512") i = Isa::Avx512;
  else
    throw std::invalid_argument(std::string(where) + " must be one of 'generic', 'avx2', 'avx512', got '" + name + "'");
  if (!isa_supported(i))
    throw std::invalid_argument(std::string(where) + "='" + name + "': this CPU (or this build) lacks " +
                                (i == Isa::Avx512 ? "AVX-512 F/BW/DQ/VL" : "AVX2+FMA") + "; choose 'generic'" +
                                (isa_supported(Isa::Avx2) ? " or 'avx2'" : ""));
  return i;
}

Isa best() {
  if (isa_supported(Isa::Avx512)) return Isa::Avx512;
  if (isa_supported(Isa::Avx2)) return Isa::Avx2;
  return Isa::Generic;
}

// The selected ISA; -1 until first resolved (from RNNFAST_ISA or the CPU).
int& selected() {
  static int v = -1;
  return v;
}

const Table& active() { return table_of(current_isa()); }

}  // namespace

const char* isa_name(Isa i) {
  switch (i) {
    case Isa::Avx512:
      return "avx512";
    case Isa::Avx2:
      return "avx2";
    default:
      return "generic";
  }
}

bool isa_supported(Isa i) {
  if (i == Isa::Generic) return true;
#ifdef RNNFAST_HAVE_X86_ISAS
  static const bool v3 =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
  static const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return i == Isa::Avx2 ? v3 : v4;
#else
  return false;
#endif
}

Isa current_isa() {
  if (selected() < 0) {
    const char* env = std::getenv("RNNFAST_ISA");
    selected() = int(env && *env ? parse(env, "RNNFAST_ISA") : best());
  }
  return Isa(selected());
}

void set_isa(const std::string& name) { selected() = int(parse(name, "isa")); }

const char* isa() { return isa_name(current_isa()); }

Tuning& tuning() {
  static Tuning t;
  return t;
}

#define RNNFAST_FORWARD(fn, P)                                                 \
  template <typename T>                                                        \
  void fn(const P<T>& p) {                                                     \
    if constexpr (std::is_same<T, float>::value) active().fn##_f(p, tuning()); \
    else active().fn##_d(p, tuning());                                         \
  }                                                                            \
  template void fn<float>(const P<float>&);                                    \
  template void fn<double>(const P<double>&);
RNNFAST_KERNELS(RNNFAST_FORWARD)
#undef RNNFAST_FORWARD
#undef RNNFAST_KERNELS

}  // namespace cpu
}  // namespace rnnfast
