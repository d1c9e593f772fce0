// comm/nccl/check_nccl.h: error checks for NCCL and CUDA calls made by the NCCL communicator. The
// message carries the call, file:line, NCCL's error string and ncclGetLastError's detail, so users get
// NCCL's reason without re-running under NCCL_DEBUG.
#pragma once
#include <cuda_runtime.h>
#include <nccl.h>

#include "runtime/error.h"

namespace strata::comm::detail {
[[noreturn]] void throw_nccl_error(const char* call, const char* file, int line, ncclResult_t result, ncclComm_t comm);
[[noreturn]] void throw_cuda_error(const char* call, const char* file, int line, cudaError_t status);
}  // namespace strata::comm::detail

// ncclInProgress is not an error: non-blocking communicators finish the call in the background.
#define CHECK_NCCL(call, nccl_comm)                                                                      \
  do {                                                                                              \
    const ncclResult_t result_ = (call);                                                            \
    if (result_ != ncclSuccess && result_ != ncclInProgress)                                        \
      ::strata::comm::detail::throw_nccl_error(#call, __FILE__, __LINE__, result_, (nccl_comm));        \
  } while (0)

#define CHECK_CUDA_COMM(call)                                                                       \
  do {                                                                                              \
    const cudaError_t status_ = (call);                                                             \
    if (status_ != cudaSuccess) ::strata::comm::detail::throw_cuda_error(#call, __FILE__, __LINE__, status_); \
  } while (0)
