// The extension-wide BLAS settings of blas.h: one definition each, compiled once (not per ISA), so the
// bindings and every kernel build read and set the same values.
#include "cpu/blas.h"

namespace rnnfast {
namespace blas {

int64_t& max_block() {
  static int64_t v = (int64_t(1) << 30);
  return v;
}

int64_t& thread_threshold() {
  static int64_t v = int64_t(32) << 20;
  return v;
}

std::atomic<int>& max_threads() {
  static std::atomic<int> v{0};
  return v;
}

int worker_threads() {
  const int n = max_threads().load(std::memory_order_relaxed);
  return n > 0 ? n : scipy_openblas_get_num_threads();
}

void threads_for(int64_t M, int64_t N, int64_t K) {
  static std::atomic<int> current{-1};
  if (max_threads().load(std::memory_order_relaxed) == 0) max_threads() = scipy_openblas_get_num_threads();
  const int want = double(M) * double(N) * double(K) < double(thread_threshold()) ? 1 : max_threads().load();
  if (current.load(std::memory_order_relaxed) != want) {
    scipy_openblas_set_num_threads(want);
    current = want;
  }
}

}  // namespace blas
}  // namespace rnnfast
