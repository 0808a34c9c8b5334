// The block cache of pool.h. Each block carries a 64-byte header holding its usable size, so release()
// needs only the pointer. Cached blocks sit in a size-ordered multimap; acquire() takes the smallest cached
// block of at least the (page-rounded) size asked for, if it is at most 25% larger.
#include "cpu/pool.h"

#include <pthread.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>

namespace rnnfast {
namespace pool {
namespace {

constexpr size_t kHeader = 64;
constexpr size_t kMinPooled = size_t(64) << 10;   // smaller blocks: the system allocator does well
constexpr size_t kPage = 4096;

#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kDefaultMB = 0;
#else
constexpr size_t kDefaultMB = 256;
#endif

size_t default_limit() {
  const char* s = std::getenv("RNNFAST_POOL_MB");
  if (!s || !*s) return kDefaultMB << 20;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (end == s || *end != '\0' || v > (1ull << 20)) return kDefaultMB << 20;   // checked in Python too
  return size_t(v) << 20;
}

struct State {
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;   // usable size -> base pointer
  size_t cached = 0, limit = default_limit();
  uint64_t hits = 0, misses = 0;
};

void reset_in_child();

State& state() {
  // Never destroyed: arrays can be freed (and blocks released) during interpreter shutdown, after static
  // destructors would have run.
  static State* s = [] {
    State* st = new State();
    pthread_atfork(nullptr, nullptr, reset_in_child);
    return st;
  }();
  return *s;
}

// After fork only this thread exists; the mutex may have been held by another thread of the parent.
void reset_in_child() { new (&state().mu) std::mutex(); }

inline size_t& size_of(void* base) { return *static_cast<size_t*>(base); }

void* system_block(size_t usable) {
  void* base = std::aligned_alloc(64, usable + kHeader);
  if (!base) throw std::bad_alloc();
  size_of(base) = usable;
  return base;
}

}  // namespace

void* acquire(size_t bytes) {
  if (bytes < kMinPooled) return static_cast<char*>(system_block((bytes + 63) / 64 * 64)) + kHeader;
  const size_t usable = (bytes + kPage - 1) / kPage * kPage;
  State& s = state();
  {
    std::lock_guard<std::mutex> g(s.mu);
    auto it = s.free_blocks.lower_bound(usable);
    if (it != s.free_blocks.end() && it->first <= usable + usable / 4) {
      void* base = it->second;
      s.cached -= it->first;
      s.free_blocks.erase(it);
      ++s.hits;
      return static_cast<char*>(base) + kHeader;
    }
    ++s.misses;
  }
  return static_cast<char*>(system_block(usable)) + kHeader;
}

void release(void* p) noexcept {
  if (!p) return;
  void* base = static_cast<char*>(p) - kHeader;
  const size_t usable = size_of(base);
  if (usable >= kMinPooled) {
    State& s = state();
    std::lock_guard<std::mutex> g(s.mu);
    if (s.cached + usable <= s.limit) {
      s.free_blocks.emplace(usable, base);
      s.cached += usable;
      return;
    }
  }
  std::free(base);
}

Stats stats() {
  State& s = state();
  std::lock_guard<std::mutex> g(s.mu);
  Stats st;
  st.cached_bytes = s.cached;
  st.cached_blocks = s.free_blocks.size();
  st.limit_bytes = s.limit;
  st.hits = s.hits;
  st.misses = s.misses;
  return st;
}

size_t set_limit(size_t bytes) {
  State& s = state();
  std::multimap<size_t, void*> drop;
  size_t old;
  {
    std::lock_guard<std::mutex> g(s.mu);
    old = s.limit;
    s.limit = bytes;
    while (s.cached > s.limit && !s.free_blocks.empty()) {   // largest first
      auto it = std::prev(s.free_blocks.end());
      s.cached -= it->first;
      drop.emplace(it->first, it->second);
      s.free_blocks.erase(it);
    }
  }
  for (auto& kv : drop) std::free(kv.second);
  return old;
}

void trim() {
  State& s = state();
  std::multimap<size_t, void*> drop;
  {
    std::lock_guard<std::mutex> g(s.mu);
    drop.swap(s.free_blocks);
    s.cached = 0;
  }
  for (auto& kv : drop) std::free(kv.second);
}

}  // namespace pool
}  // namespace rnnfast
