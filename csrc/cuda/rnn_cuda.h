// Host-side interface of the CUDA kernels (csrc/cuda/rnn_cuda.cu) for the bindings (bind_cuda.cpp).
// Not a CUDA header: nothing here needs nvcc, so the bindings compile with the host compiler. The
// launchers take raw device pointers the bindings checked; they throw CudaError / OutOfMemory.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "rnnfast/params.h"

namespace rnnfast {
namespace cuda {

// A CUDA runtime or launch error, carrying the CUDA error name and string (-> Python RuntimeError).
struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// cudaErrorMemoryAllocation (-> Python MemoryError).
struct OutOfMemory : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class Recurrence : int { Auto = 0, Persistent = 1, Stepwise = 2 };
enum class GemmImpl : int { Auto = 0, Cublas = 1, Internal = 2 };

// Where and how one call runs.
struct Options {
  int device = 0;
  void* stream = nullptr;                 // cudaStream_t; nullptr = the legacy default stream
  Recurrence recurrence = Recurrence::Auto;
  GemmImpl gemm = GemmImpl::Auto;
  unsigned int* barrier = nullptr;        // device scratch of >= 1 uint32 for the persistent kernel's grid barrier
  bool allow_cluster = true;              // the persistent kernel may use thread-block clusters (sm_90+)
};

// How the recurrence of one layer runs (see plan_recurrence in rnn_cuda.cu).
struct Plan {
  bool persistent = false;
  bool feasible = false;      // whether the persistent kernel fits this size at all
  int Nb = 0, Hb = 0;         // the batch rows and hidden units one block owns
  int RN = 0, KS = 0;         // micro-tile rows per thread, lanes splitting the K loop
  int threads = 0, blocks = 0, Kp = 0;
  int cluster = 0;            // > 1: blocks per thread-block cluster (state shared on chip), 0: none
  int64_t smem = 0;           // dynamic shared memory per block, bytes
  double est_persistent_us = 0, est_stepwise_us = 0;   // modelled time per step (informational)
  std::string why;            // why this path was chosen
};

// "" when a CUDA device is usable, else the reason (no driver, no device, ...).
std::string runtime_status();
struct DeviceInfo {
  std::string name;
  int cc_major = 0, cc_minor = 0, sm_count = 0, cooperative = 0;
  int64_t smem_optin = 0, smem_per_sm = 0, total_mem = 0;
  int runtime_version = 0, driver_version = 0;
};
DeviceInfo device_info(int device);

// cuBLAS is never linked: load it at run time from `path`; returns "" on success, else the reason.
std::string load_cublas(const std::string& path);
std::string cublas_path();  // "" when not loaded

Plan plan_recurrence(int device, int itemsize, int64_t N, int64_t H, bool backward, Recurrence mode,
                     bool allow_cluster);

template <typename T>
void rnn_forward(const RnnForwardParams<T>& p, const Options& opt);
template <typename T>
void rnn_backward(const RnnBackwardParams<T>& p, const Options& opt);

}  // namespace cuda
}  // namespace rnnfast
