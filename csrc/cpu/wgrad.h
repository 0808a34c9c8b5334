// The weight-gradient products of one layer's backward (dW_hh, dW_ih and dX), two ways:
// - products(): after the serial loop, when that loop ran on every thread (each step one thread's work, so
//   groups of sequences ran it side by side: parallel::row_groups), in fixed slices of output rows that the
//   threads claim;
// - WeightGradPipe: when the loop runs on one core (its per-step product is a BLAS call: past the small
//   kernel's batch or size), in blocks of time steps that a helper thread computes while the loop is still
//   producing the earlier steps' gate gradients. After the loop the caller takes over: it waits for the
//   block the helper is working on (never for one the helper has not started) and does the rest itself, so
//   a helper that never gets a core costs nothing.
// The blocks (about 256 rows each: a function of T and N only) and their order (from the last step down) are
// the same whoever computes them, so the gradients are bit-for-bit the same for any thread count. The helpers
// are parallel.h's. Used by rnn_cpu.cpp and gated_cpu.cpp.
#pragma once
#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

#include "cpu/blas.h"
#include "cpu/isa_ns.h"
#include "cpu/parallel.h"

namespace rnnfast {
namespace wgrad {
inline namespace RNNFAST_ISA_NS {

template <typename T>
struct WeightGradJob {
  int64_t Tn = 0, N = 0, R = 0, H = 0, Dk = 0;  // R: gate rows (G*H); Dk: the layer's input width
  const T* dGh = nullptr;                       // (T, N, R) hidden-side gate gradients
  const T* dGi = nullptr;                       // (T, N, R) input-side ones (dGh itself for rnn and lstm)
  const T* Hs = nullptr;                        // (T, N, H) the layer's states h_t
  const T* h0 = nullptr;                        // (N, H) h_{-1}, or nullptr (zeros: no contribution)
  const T* X = nullptr;                         // (T, N, Dk) the layer's input
  const T* W_ih = nullptr;                      // (R, Dk), or nullptr: the identity (no dW_ih, no dX here)
  T* dW_hh = nullptr;                           // (R, H) +=
  T* dW_ih = nullptr;                           // (R, Dk) += (when W_ih)
  T* dX = nullptr;                              // (T, N, Dk) = dGi W_ih (when W_ih)
};

// The job of one layer: gate gradients dGi/dGh (T, N, R), its states Hs, h0, input X (T, N, Dk) and W_ih.
template <typename T>
WeightGradJob<T> job(int64_t Tn, int64_t N, int64_t Dk, int64_t H, int64_t R, const T* W_ih, const T* X, const T* h0,
                     const T* Hs, const T* dGi, const T* dGh, T* dW_hh, T* dW_ih, T* dX) {
  WeightGradJob<T> j;
  j.Tn = Tn;
  j.N = N;
  j.R = R;
  j.H = H;
  j.Dk = Dk;
  j.dGh = dGh;
  j.dGi = dGi;
  j.Hs = Hs;
  j.h0 = h0;
  j.X = X;
  j.W_ih = W_ih;
  j.dW_hh = dW_hh;
  j.dW_ih = dW_ih;
  j.dX = dX;
  return j;
}

template <typename T>
class WeightGradPipe {
 public:
  // Below parallel::kMinWork multiply-adds in all, with fewer than kMinBlocks blocks (the helper can only start
  // once the loop has produced a whole block, so two blocks overlap nothing: measured T=10, N=32, H=128
  // backward 159 us on one thread, 239 with the helper), or when a block's product would itself be threaded by
  // BLAS, no helper.
  static constexpr int64_t kRows = 256, kMinBlocks = 3;

  explicit WeightGradPipe(const WeightGradJob<T>& j) : j_(j) {
    B_ = std::max<int64_t>(1, (kRows + j.N - 1) / std::max<int64_t>(1, j.N));
    nblocks_ = (j.Tn + B_ - 1) / B_;
    ready_from_ = j.Tn;
    const int64_t width = std::max(j.H, j.W_ih ? j.Dk : int64_t(0));
    const double work = double(j.Tn * j.N) * double(j.R) * double(j.H + (j.W_ih ? 2 * j.Dk : 0));
    const bool small_blocks = double(B_ * j.N) * double(j.R) * double(width) < double(blas::thread_threshold()) &&
                              double(j.N) * double(j.R) * double(j.H) < double(blas::thread_threshold());
    if (nblocks_ >= kMinBlocks && work >= parallel::kMinWork && small_blocks && blas::worker_threads() > 1)
      ticket_ = parallel::submit(1, [](void* self, int64_t) { static_cast<WeightGradPipe*>(self)->helper(); }, this);
  }
  WeightGradPipe(const WeightGradPipe&) = delete;
  WeightGradPipe& operator=(const WeightGradPipe&) = delete;
  // Unwinding (the loop threw): the helper is stopped and waited for, and no further block is computed (the
  // loop may not have written their gate gradients).
  ~WeightGradPipe() { stop_helper(); }

  // The loop has written the gate gradients of steps t..T-1.
  void ready(int64_t t) {
    if (!ticket_.helpers || ((j_.Tn - t) % B_ != 0 && t != 0)) return;
    {
      std::lock_guard<std::mutex> lk(mu_);
      ready_from_ = t;
    }
    cv_.notify_all();
  }

  // After the loop (every step ready): the blocks the helper has not taken, in order; returns when all are in.
  void finish() {
    stop_helper();
    for (; next_ < nblocks_; ++next_) block(next_);
  }

 private:
  void stop_helper() {
    if (!ticket_.helpers) return;
    {
      std::unique_lock<std::mutex> lk(mu_);
      takeover_ = true;
      cv_.notify_all();
      cv_.wait(lk, [&] { return !busy_; });
    }
    parallel::wait(ticket_);  // out of helper(), or withdrawn before it started
    ticket_ = parallel::Ticket{};
  }

  int64_t lo(int64_t b) const { return std::max<int64_t>(0, j_.Tn - (b + 1) * B_); }
  int64_t hi(int64_t b) const { return j_.Tn - b * B_; }

  void helper() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      cv_.wait(lk, [&] { return takeover_ || next_ >= nblocks_ || ready_from_ <= lo(next_); });
      if (takeover_ || next_ >= nblocks_) return;
      const int64_t b = next_++;
      busy_ = true;
      lk.unlock();
      block(b);
      lk.lock();
      busy_ = false;
      cv_.notify_all();
    }
  }

  // Steps [lo, hi): dW_hh += dGh^T h_{t-1} (step 0 reads h0), dW_ih += dGi^T X, dX = dGi W_ih.
  void block(int64_t b) const {
    const WeightGradJob<T>& j = j_;
    const int64_t l = lo(b), h = hi(b), N = j.N, R = j.R, H = j.H, Dk = j.Dk, s1 = std::max<int64_t>(l, 1);
    if (h > s1)
      blas::gemm<T>(true, false, R, H, (h - s1) * N, T(1), j.dGh + s1 * N * R, R, j.Hs + (s1 - 1) * N * H, H, T(1),
                    j.dW_hh, H);
    if (l == 0 && j.h0) blas::gemm<T>(true, false, R, H, N, T(1), j.dGh, R, j.h0, H, T(1), j.dW_hh, H);
    if (j.W_ih) {
      blas::gemm<T>(true, false, R, Dk, (h - l) * N, T(1), j.dGi + l * N * R, R, j.X + l * N * Dk, Dk, T(1), j.dW_ih,
                    Dk);
      blas::gemm<T>(false, false, (h - l) * N, Dk, R, T(1), j.dGi + l * N * R, R, j.W_ih, Dk, T(0), j.dX + l * N * Dk,
                    Dk);
    }
  }

  WeightGradJob<T> j_;
  int64_t B_ = 1, nblocks_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t ready_from_ = 0, next_ = 0;  // guarded by mu_ while the helper runs
  bool takeover_ = false, busy_ = false;
  parallel::Ticket ticket_;
};

// The same products after the serial loop, when the loop itself ran on every thread (groups of sequences side
// by side: parallel::row_groups): cut by output rows into fixed pieces that threads claim (slices of kSlice
// rows of dW_hh and dW_ih, and dX in the pipe's blocks of steps). A slice adds the pipe's blocks of steps in
// the pipe's order, so each element's sum is the same for any thread count. One thread when a piece's product
// would itself be threaded by BLAS, or below parallel::kMinWork multiply-adds in all.
template <typename T>
void products(const WeightGradJob<T>& j) {
  constexpr int64_t kSlice = 64;
  const int64_t N = j.N, R = j.R, H = j.H, Dk = j.Dk, Tn = j.Tn;
  if (Tn <= 0 || N <= 0 || R <= 0) return;
  const int64_t B = std::max<int64_t>(1, (WeightGradPipe<T>::kRows + N - 1) / N), nb = (Tn + B - 1) / B;
  const int64_t ns = (R + kSlice - 1) / kSlice, nw = j.W_ih ? ns : 0, nx = j.W_ih ? nb : 0;
  const double thr = double(blas::thread_threshold()), rows = double(B * N);
  const double work = double(Tn * N) * double(R) * double(H + (j.W_ih ? 2 * Dk : 0));
  int64_t threads = blas::worker_threads();
  if (work < parallel::kMinWork || double(kSlice) * double(std::max(H, j.W_ih ? Dk : int64_t(0))) * rows >= thr ||
      (j.W_ih && rows * double(R) * double(Dk) >= thr))
    threads = 1;
  auto lo = [&](int64_t b) { return std::max<int64_t>(0, Tn - (b + 1) * B); };
  auto hi = [&](int64_t b) { return Tn - b * B; };
  // C (m, n) += A^T (A given as (k, m), lda) B (k, n): the small kernel on vector ISAs (a piece is one
  // thread's work; OpenBLAS packed both operands of every slice), else BLAS.
  auto tn = [](int64_t m, int64_t n, int64_t k, const T* A, int64_t lda, const T* Bm, int64_t ldb, T* C, int64_t ldc) {
    if (simd::kBytes >= 32)
      blas::gemm_small_fused<T, blas::NoEpilogue, true>(m, n, k, A, lda, Bm, ldb, C, ldc, nullptr, 0, C, ldc,
                                                        blas::NoEpilogue{});
    else blas::gemm<T>(true, false, m, n, k, T(1), A, lda, Bm, ldb, T(1), C, ldc);
  };
  parallel::chunks(ns + nw + nx, threads, [&](int64_t c) {
    if (c < ns + nw) {  // a slice [r0, r1) of dW_hh (c < ns) or of dW_ih
      const bool ih = c >= ns;
      const int64_t r0 = (ih ? c - ns : c) * kSlice, m = std::min(R, r0 + kSlice) - r0;
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t l = lo(b), h = hi(b), s1 = std::max<int64_t>(l, 1);
        if (ih) {
          tn(m, Dk, (h - l) * N, j.dGi + l * N * R + r0, R, j.X + l * N * Dk, Dk, j.dW_ih + r0 * Dk, Dk);
          continue;
        }
        if (h > s1) tn(m, H, (h - s1) * N, j.dGh + s1 * N * R + r0, R, j.Hs + (s1 - 1) * N * H, H, j.dW_hh + r0 * H, H);
        if (l == 0 && j.h0) tn(m, H, N, j.dGh + r0, R, j.h0, H, j.dW_hh + r0 * H, H);
      }
      return;
    }
    const int64_t b = c - ns - nw, l = lo(b), h = hi(b);  // dX for the steps of block b
    blas::gemm<T>(false, false, (h - l) * N, Dk, R, T(1), j.dGi + l * N * R, R, j.W_ih, Dk, T(0), j.dX + l * N * Dk,
                  Dk);
  });
}

// The rows [n0, n0 + M) of a (N, H) starting gradient (dh_n, dc_n), or zeros when src is nullptr: the scratch a
// group of sequences carries through its backward loop.
template <typename T>
std::vector<T> start_rows(const T* src, int64_t n0, int64_t M, int64_t H) {
  if (!src) return std::vector<T>(static_cast<size_t>(M * H), T(0));
  return std::vector<T>(src + n0 * H, src + (n0 + M) * H);
}

// A layer's backward: serial(n0, n1, each_step) runs the serial loop for the sequences [n0, n1), from the last
// step down, calling each_step(t) once step t's gate gradients are written (it keeps its own scratch). With
// grouped (each step one thread's work), groups of sequences run it side by side on `threads` threads and
// products() follows; otherwise the caller runs it for all sequences with a WeightGradPipe beside it.
template <typename T, typename Serial>
void backward_loop(const WeightGradJob<T>& job, bool grouped, int64_t threads, const Serial& serial) {
  if (grouped) {
    parallel::row_groups(job.N, threads, [&](int64_t n0, int64_t n1) { serial(n0, n1, [](int64_t) {}); });
    products(job);
  } else {
    WeightGradPipe<T> pipe(job);
    serial(0, job.N, [&](int64_t t) { pipe.ready(t); });
    pipe.finish();
  }
}

}  // namespace RNNFAST_ISA_NS
}  // namespace wgrad
}  // namespace rnnfast
