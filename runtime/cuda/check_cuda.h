// runtime/cuda/check_cuda.h: CHECK_CUDA / CHECK_CUBLAS / CHECK_LAUNCH, the vendor checks of the CUDA
// backend. Each throws strata::Error (kCuda) naming the call, file:line and the vendor's own message.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "runtime/error.h"

namespace strata::cuda {
const char* cublas_status_string(cublasStatus_t status);
}  // namespace strata::cuda

#define CHECK_CUDA(call)                                                                                  \
  do {                                                                                                    \
    const cudaError_t status_ = (call);                                                                   \
    if (status_ != cudaSuccess)                                                                           \
      ::strata::detail::throw_error(::strata::ErrorKind::kCuda, #call, __FILE__, __LINE__,                \
                                    ::strata::cat("CUDA error in ", #call, ": ", cudaGetErrorName(status_), \
                                                  ": ", cudaGetErrorString(status_)));                    \
  } while (0)

#define CHECK_CUBLAS(call)                                                                          \
  do {                                                                                              \
    const cublasStatus_t status_ = (call);                                                          \
    if (status_ != CUBLAS_STATUS_SUCCESS)                                                           \
      ::strata::detail::throw_error(::strata::ErrorKind::kCuda, #call, __FILE__, __LINE__,          \
                                    ::strata::cat("cuBLAS error in ", #call, ": ",                  \
                                                  ::strata::cuda::cublas_status_string(status_)));  \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, execution errors at the next sync.
#define CHECK_LAUNCH() CHECK_CUDA(cudaGetLastError())
