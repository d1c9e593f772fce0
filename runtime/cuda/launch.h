// runtime/cuda/launch.h: where and how a launcher of runtime/cuda/kernels.h enqueues its kernels. The
// CUDA backend fills it from its options on every call, so no launcher reads process-wide state.
#pragma once
#include <cuda_runtime.h>

namespace strata::cuda {

// Which kernel takes plain one-row GEMVs (bf16 x, 16-bit weights): the pipelined persistent one where the
// plain grid is at most two waves (the measured best, tests/gpu/KERNEL_NOTES.md), never, or always.
enum class GemvRolling { kByGrid = 0, kNever = 1, kAlways = 2 };

struct Launch {
  cudaStream_t stream = nullptr;
  // Programmatic dependent launch (pdl.cuh): Hopper and later only; the backend sets it from the device.
  bool pdl = false;
  GemvRolling gemv_rolling = GemvRolling::kByGrid;

  // A bare stream launches plainly with the default forms (tests and tools that time one kernel).
  Launch(cudaStream_t s) : stream(s) {}  // NOLINT(google-explicit-constructor)
  Launch(cudaStream_t s, bool pdl_on, GemvRolling rolling) : stream(s), pdl(pdl_on), gemv_rolling(rolling) {}
  operator cudaStream_t() const { return stream; }  // NOLINT(google-explicit-constructor)
};

}  // namespace strata::cuda
