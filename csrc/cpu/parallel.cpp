// The helper threads of parallel.h: started on first use (and again in a forked child: pthread_atfork),
// never joined (they park on a condition variable between tasks; the pool is never destroyed, so process
// exit never waits on them). Each helper has a slot: the task is written, then its state set to pending
// (release), then its generation bumped; a helper takes the task by moving the state from pending to
// running, and wait() withdraws an untaken task by moving it from pending to withdrawn, so exactly one of
// the two happens.
#include "cpu/parallel.h"

#include <pthread.h>

#include <chrono>
#include <memory>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace rnnfast {
namespace parallel {
namespace {

constexpr int64_t kMaxHelpers = 63;
constexpr int64_t kSpinUs = 100;  // a helper spins this long for the next task before it parks

enum : int { kIdle = 0, kPending = 1, kRunning = 2, kDone = 3, kWithdrawn = 4 };

struct Slot {
  std::atomic<uint64_t> gen{0};
  std::atomic<int> state{kIdle};
  TaskFn fn = nullptr;  // written before state = kPending
  void* ctx = nullptr;
  int64_t worker = 0;
};

struct Pool {
  std::atomic<bool> busy{false};  // claimed from submit() to wait(): one task at a time (an atomic, not a
  // mutex: a nested try from the claiming thread just fails)
  std::mutex mu;  // parking
  std::condition_variable cv;
  std::vector<Slot*> slots;  // grows under `busy`, never shrinks
};

void helper_main(Pool* pool, Slot* s) {
  uint64_t seen = 0;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; s->gen.load(std::memory_order_acquire) == seen; ++i) {
      if ((i & 63) == 63 && std::chrono::steady_clock::now() - t0 > std::chrono::microseconds(kSpinUs)) {
        std::unique_lock<std::mutex> lk(pool->mu);
        pool->cv.wait(lk, [&] { return s->gen.load(std::memory_order_acquire) != seen; });
        break;
      }
      relax();
    }
    seen = s->gen.load(std::memory_order_acquire);
    int expect = kPending;
    if (s->state.compare_exchange_strong(expect, kRunning, std::memory_order_acq_rel)) {
      s->fn(s->ctx, s->worker);
      s->state.store(kDone, std::memory_order_release);
    }
  }
}

std::atomic<Pool*> g_pool{nullptr};
std::atomic<bool> g_creating{false};

// In a forked child the parent's helpers did not come along (and a mutex of theirs may be held forever):
// forget the pool without touching it (it is leaked); the child's first task starts helpers of its own.
void after_fork_in_child() {
  g_pool.store(nullptr, std::memory_order_relaxed);
  g_creating.store(false, std::memory_order_relaxed);
}

// nullptr while another thread is creating the pool (the caller then works alone).
Pool* pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return p;
  bool expect = false;
  if (!g_creating.compare_exchange_strong(expect, true, std::memory_order_acq_rel)) return nullptr;
  static const int registered = pthread_atfork(nullptr, nullptr, after_fork_in_child);
  (void)registered;
  try {
    p = new Pool;
  } catch (...) {
    g_creating.store(false, std::memory_order_release);
    return nullptr;
  }
  g_pool.store(p, std::memory_order_release);
  return p;
}

}  // namespace

std::atomic<int64_t>& stall_ns() {
  static std::atomic<int64_t> v{500000};
  return v;
}

std::atomic<int64_t>& split_paused_until() {
  static std::atomic<int64_t> v{0};
  return v;
}

Ticket submit(int64_t n, TaskFn fn, void* ctx) {
  if (n <= 0) return {};
  Pool* p = pool();
  bool expect = false;
  if (!p || !p->busy.compare_exchange_strong(expect, true, std::memory_order_acq_rel)) return {};
  n = std::min(n, kMaxHelpers);
  try {
    p->slots.reserve(size_t(n));
    while (int64_t(p->slots.size()) < n) {
      std::unique_ptr<Slot> s(new Slot);
      std::thread(helper_main, p, s.get()).detach();  // throws when no more threads are to be had
      p->slots.push_back(s.release());  // cannot throw: reserved
    }
  } catch (...) {  // fewer helpers than asked for
  }
  n = std::min<int64_t>(n, int64_t(p->slots.size()));
  if (n == 0) {
    p->busy.store(false, std::memory_order_release);
    return {};
  }
  for (int64_t i = 0; i < n; ++i) {
    Slot* s = p->slots[size_t(i)];
    s->fn = fn;
    s->ctx = ctx;
    s->worker = i + 1;
    s->state.store(kPending, std::memory_order_release);
    s->gen.fetch_add(1, std::memory_order_release);
  }
  { std::lock_guard<std::mutex> lk(p->mu); }  // a helper between its check and its wait is now waiting
  p->cv.notify_all();
  return {p, n};
}

void wait(const Ticket& t) {
  if (!t.pool) return;
  Pool* p = static_cast<Pool*>(t.pool);
  for (int64_t i = 0; i < t.helpers; ++i) {
    Slot* s = p->slots[size_t(i)];
    int expect = kPending;
    if (s->state.compare_exchange_strong(expect, kWithdrawn, std::memory_order_acq_rel)) continue;  // not started
    for (int64_t k = 0; s->state.load(std::memory_order_acquire) != kDone; ++k) {
      if (k < 4096) relax();
      else std::this_thread::yield();  // the helper may need this core
    }
  }
  p->busy.store(false, std::memory_order_release);
}

}  // namespace parallel
}  // namespace rnnfast
