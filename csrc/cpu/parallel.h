// Work split by the kernels themselves (not by BLAS): `chunks` independent pieces of work claimed from a
// shared counter by the calling thread and up to threads - 1 helper threads started for the call and joined
// before it returns (no pool is kept: nothing to go wrong across fork(), nothing spinning between calls).
// A helper that starts late, or never gets a core on a busy machine, leaves its unclaimed chunks to the
// others, so a call is never slower than one thread by more than the one chunk a helper is working on;
// OpenBLAS's own threads split a call statically and wait for the slowest (see blas.h, thread_threshold).
// Callers make each chunk's result independent of the thread that computes it, and the chunking
// independent of the thread count, so results are the same for any thread count. An exception thrown by
// a chunk stops further claims and is rethrown in the caller after the join.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <system_error>
#include <thread>
#include <vector>

namespace rnnfast {
namespace parallel {

template <typename F>
void chunks(int64_t n, int64_t threads, const F& f) {
  threads = std::max<int64_t>(1, std::min(threads, n));
  if (threads == 1) {
    for (int64_t c = 0; c < n; ++c) f(c);
    return;
  }
  std::atomic<int64_t> next{0};
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  auto loop = [&](int64_t w) {
    try {
      for (int64_t c = next++; c < n; c = next++) f(c);
    } catch (...) {
      errors[static_cast<size_t>(w)] = std::current_exception();
      next = n;  // the others stop at their next claim
    }
  };
  std::vector<std::thread> helpers;
  try {
    for (int64_t w = 1; w < threads; ++w) helpers.emplace_back(loop, w);
  } catch (const std::system_error&) {  // no thread to be had: the caller does what is left alone
  }
  loop(0);
  for (std::thread& th : helpers) th.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace parallel
}  // namespace rnnfast
