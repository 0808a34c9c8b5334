// A cache of large aligned memory blocks for the arrays rnnfast allocates at every training step (outputs,
// caches, gradients, scratch). Without it each step maps fresh pages: the allocator returns freed blocks of
// a few MB to the OS and the next step faults them back in, zeroed (measured on a 2-core VM: a third of an
// LSTM step (V=96, H=128, T=50, N=32) in the kernel's page-fault path; the step took 23-30 ms with plain
// malloc and 14.5 ms with retained blocks). Blocks of at least min_bytes() are kept for reuse, up to
// limit_bytes() in all (RNNFAST_POOL_MB, default 256; 0 turns caching off; off by default under
// AddressSanitizer, which would otherwise not see a use after free inside a cached block). Smaller requests
// go straight to the system allocator. Thread-safe; safe across fork (the child starts with an unlocked pool).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

namespace rnnfast {
namespace pool {

// An uninitialised block of at least `bytes` bytes, 64-byte aligned; throws std::bad_alloc.
void* acquire(size_t bytes);
// Returns a block from acquire() (nullptr is ignored): cached when it is large and the cache has room.
void release(void* p) noexcept;

struct Stats {
  size_t cached_bytes = 0, cached_blocks = 0, limit_bytes = 0;
  uint64_t hits = 0, misses = 0;
};
Stats stats();
// Sets the cache limit (bytes); blocks above it are freed at once. Returns the previous limit.
size_t set_limit(size_t bytes);
// Frees every cached block (the memory goes back to the system).
void trim();

// A typed scratch buffer of n elements from the pool, released when it goes out of scope.
template <typename T>
class Buffer {
 public:
  explicit Buffer(size_t n) : p_(static_cast<T*>(acquire(n ? n * sizeof(T) : sizeof(T)))) {}
  ~Buffer() { release(p_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* get() const { return p_; }

 private:
  T* p_;
};

}  // namespace pool
}  // namespace rnnfast
