// runtime/cuda/gemm.h: the cuBLAS half of the CUDA matmul (M above the GEMV threshold): bf16/f16/f32
// operands with f32 accumulation. Internal to runtime/cuda/.
#pragma once
#include <cublas_v2.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace strata::cuda {

// out[M, N] (row-major, row stride ldo) = x[M, K] * w[N, K]^T. x and w share `in_dt` (bf16, f16 or f32);
// out_dt is in_dt or f32.
void cublas_gemm(cublasHandle_t handle, const void* x, const void* w, DType in_dt, void* out, DType out_dt, int64_t m,
                 int64_t n, int64_t k, int64_t ldo);

}  // namespace strata::cuda
