// The helper threads of parallel.h: started on first use (and again in a forked child), never joined (they
// park on a condition variable between tasks; the pool is never destroyed, so process exit never waits on
// them). Each helper has a slot: the task is written, then its state set to pending (release), then its
// generation bumped; a helper takes the task by moving the state from pending to running, and wait()
// withdraws an untaken task by moving it from pending to withdrawn, so exactly one of the two happens.
#include "cpu/parallel.h"

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace rnnfast {
namespace parallel {
namespace {

constexpr int64_t kMaxHelpers = 63;
constexpr int64_t kSpinUs = 100;  // a helper spins this long for the next task before it parks

enum : int { kIdle = 0, kPending = 1, kRunning = 2, kDone = 3, kWithdrawn = 4 };

inline void relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

struct Slot {
  std::atomic<uint64_t> gen{0};
  std::atomic<int> state{kIdle};
  TaskFn fn = nullptr;  // written before state = kPending
  void* ctx = nullptr;
  int64_t worker = 0;
};

struct Pool {
  explicit Pool(pid_t p) : pid(p) {}
  const pid_t pid;
  std::mutex busy;  // held from submit() to wait(): one task at a time
  std::mutex mu;    // parking
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

Pool* pool() {
  static std::atomic<Pool*> current{nullptr};
  static std::mutex create;
  const pid_t me = getpid();
  Pool* p = current.load(std::memory_order_acquire);
  if (p && p->pid == me) return p;
  std::lock_guard<std::mutex> lk(create);
  p = current.load(std::memory_order_acquire);
  if (!p || p->pid != me) {  // first use, or a forked child (whose parent's helpers did not come along)
    p = new Pool(me);
    current.store(p, std::memory_order_release);
  }
  return p;
}

}  // namespace

Ticket submit(int64_t n, TaskFn fn, void* ctx) {
  if (n <= 0) return {};
  Pool* p = pool();
  if (!p->busy.try_lock()) return {};
  n = std::min(n, kMaxHelpers);
  while (int64_t(p->slots.size()) < n) {
    Slot* s = new Slot;
    try {
      std::thread(helper_main, p, s).detach();
    } catch (...) {  // no more threads to be had
      delete s;
      break;
    }
    p->slots.push_back(s);
  }
  n = std::min<int64_t>(n, int64_t(p->slots.size()));
  if (n == 0) {
    p->busy.unlock();
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
  p->busy.unlock();
}

}  // namespace parallel
}  // namespace rnnfast
