// Work split by the kernels themselves (not by BLAS), on a few helper threads kept parked between calls.
//
// submit() hands a task to up to n helper threads and returns at once; wait() then returns when every helper
// that started the task has finished it, and withdraws it from those that have not started yet (so a helper
// that is still waking up, or never gets a core on a busy machine, costs nothing). chunks() builds on it:
// pieces of work claimed from a shared counter by the caller and the helpers, so the caller does whatever
// the helpers do not get to, and a call is never slower than one thread by more than the piece a helper is
// in the middle of. (OpenBLAS's own threads split a call statically and wait for the slowest: blas.h,
// thread_threshold.) Starting a thread costs about 100 us on this VM and waking a parked one 15-40 us, so
// the helpers are started once and spin for kSpinUs after each task before they park again.
//
// Callers make each piece's result independent of the thread that computes it and the pieces independent of
// the thread count, so results are the same for any thread count. One task at a time: a caller that finds
// the helpers busy (another Python thread inside a kernel, or a nested call) gets none and does all the work
// itself. After fork() the child starts helpers of its own. Compiled once (parallel.cpp), shared by every
// kernel build.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace rnnfast {
namespace parallel {

using TaskFn = void (*)(void* ctx, int64_t worker);  // worker 1..n on the helpers

// One iteration of a spin-wait: the pause instruction on x86 (a yield elsewhere).
inline void relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// Below this many multiply-adds a job is not split: handing a task to a parked helper costs 15-40 us on
// the 2-core VM, a few percent of 4M multiply-adds (about 25 us on one core). Every kernel that splits its
// own work uses this one threshold.
constexpr double kMinWork = 4e6;

// What wait() needs of a submitted task; helpers = 0 when none could be had.
struct Ticket {
  void* pool = nullptr;
  int64_t helpers = 0;
};

// Handshakes with a spinning helper (decode.cpp's one-stream split): a wait for the helper longer than
// stall_ns() means it lost its core mid-piece, and such splits then pause until split_paused_until() (steady
// clock, ns). One value each for every kernel build. stall_ns() = 0 counts every wait as a stall (tests); the
// default, 0.5 ms, is past the VM's own hiccups (a 50 us threshold fired often on a quiet machine) and short
// against a scheduler time slice (what a busy program on the helper's core costs).
std::atomic<int64_t>& stall_ns();
std::atomic<int64_t>& split_paused_until();

// Runs fn(ctx, w) for w = 1..n on helper threads (at most n; fewer when the helpers are busy or cannot be
// started). fn must not throw.
Ticket submit(int64_t n, TaskFn fn, void* ctx);
// Returns when every helper that started the task has returned from fn; the others never start it.
void wait(const Ticket& t);

// f(c) for c in [0, n), on the caller and up to threads - 1 helpers. An exception thrown by a piece stops
// further claims and is rethrown in the caller once the helpers are out.
template <typename F>
void chunks(int64_t n, int64_t threads, const F& f) {
  if (threads > n) threads = n;
  if (threads <= 1) {
    for (int64_t c = 0; c < n; ++c) f(c);
    return;
  }
  struct Ctx {
    const F* f;
    int64_t n;
    std::atomic<int64_t> next{0};
    std::vector<std::exception_ptr> errors;
    void loop(int64_t w) {
      try {
        for (int64_t c = next++; c < n; c = next++) (*f)(c);
      } catch (...) {
        errors[static_cast<size_t>(w)] = std::current_exception();
        next = n;  // the others stop at their next claim
      }
    }
  } ctx;
  ctx.f = &f;
  ctx.n = n;
  ctx.errors.resize(static_cast<size_t>(threads));
  const Ticket t = submit(threads - 1, [](void* c, int64_t w) { static_cast<Ctx*>(c)->loop(w); }, &ctx);
  ctx.loop(0);
  wait(t);
  for (const std::exception_ptr& e : ctx.errors)
    if (e) std::rethrow_exception(e);
}

// f(r0, r1) for the rows [0, n) cut into up to `threads` groups of near-equal size (consecutive, each
// non-empty), through chunks(): one group per thread, the caller doing those no helper takes. For loops whose
// rows are independent of each other from start to end (a recurrence's sequences), so the groups need no
// synchronisation at all; the caller makes each row's result independent of the group it falls in.
template <typename F>
void row_groups(int64_t n, int64_t threads, const F& f) {
  if (n <= 0) return;
  const int64_t g0 = std::max<int64_t>(1, std::min(threads, n));
  const int64_t per = (n + g0 - 1) / g0, g = (n + per - 1) / per;
  chunks(g, g, [&](int64_t c) { f(c * per, std::min(n, (c + 1) * per)); });
}

}  // namespace parallel
}  // namespace rnnfast
