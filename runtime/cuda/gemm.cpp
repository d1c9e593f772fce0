// runtime/cuda/gemm.cpp: cublasGemmEx for the CUDA matmul. cuBLAS is column-major: the row-major product
// out[M, N] = x[M, K] w[N, K]^T is computed as out^T[N, M] = w[N, K] x^T[K, M], i.e. op(A) = A^T with
// A = w seen as a K x N column-major matrix, B = x seen as K x M.
#include "runtime/cuda/gemm.h"

#include "runtime/cuda/check_cuda.h"

namespace strata::cuda {
namespace {
cudaDataType_t cuda_type(DType dt) {
  switch (dt) {
    case DType::kBF16: return CUDA_R_16BF;
    case DType::kF16: return CUDA_R_16F;
    case DType::kF32: return CUDA_R_32F;
    default: STRATA_THROW(ErrorKind::kInternal, "no cuBLAS type for ", dtype_name(dt));
  }
}
}  // namespace

void cublas_gemm(cublasHandle_t handle, const void* x, const void* w, DType in_dt, void* out, DType out_dt, int64_t m,
                 int64_t n, int64_t k, int64_t ldo) {
  STRATA_CHECK(out_dt == in_dt || out_dt == DType::kF32, "internal: cuBLAS output ", dtype_name(out_dt), " for ",
               dtype_name(in_dt), " inputs");
  const float alpha = 1.f, beta = 0.f;
  // f32 weights keep full f32 arithmetic (no TF32): they are only used where precision was asked for.
  CHECK_CUBLAS(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                            static_cast<int>(k), &alpha, w, cuda_type(in_dt), static_cast<int>(k), x, cuda_type(in_dt),
                            static_cast<int>(k), &beta, out, cuda_type(out_dt), static_cast<int>(ldo),
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace strata::cuda
