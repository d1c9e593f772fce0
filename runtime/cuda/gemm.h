// runtime/cuda/gemm.h: the cuBLAS half of the CUDA matmul (M above the GEMV threshold): bf16/f16/f32
// operands with f32 accumulation. Internal to runtime/cuda/.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>

#include <cstdint>
#include <map>
#include <tuple>
#include <vector>

#include "runtime/dtype.h"

namespace strata::cuda {

// out[M, N] (row-major, row stride ldo) = x[M, K] * w[N, K]^T. x and w share `in_dt` (bf16, f16 or f32);
// out_dt is in_dt or f32.
void cublas_gemm(cublasHandle_t handle, const void* x, const void* w, DType in_dt, void* out, DType out_dt, int64_t m,
                 int64_t n, int64_t k, int64_t ldo);

// Several such products in one cuBLAS call (cublasGemmGroupedBatchedEx, each its own group): for p < m.size(),
// out_p[m[p], n] (row stride n) = x_p[m[p], k] w_p[n, k]^T, with the problems' w, x and out pointers in device
// arrays; 16-bit inputs and outputs of `dt`, f32 accumulation. Problems with m[p] == 0 must not be listed.
// Returns false (nothing enqueued) where this cuBLAS does not offer it for these types.
bool cublas_gemm_grouped(cublasHandle_t handle, DType dt, int64_t n, int64_t k, const std::vector<int>& m,
                         const void* const* w_dev, const void* const* x_dev, void* const* out_dev);

// The same product through cuBLASLt, for 16-bit inputs with an f32 output (the LM head's logits): on an
// H100, cublasGemmEx ran 32000 x 4096 at M = 16 in 1.0 ms (260 GB/s of weights) where the bf16-output
// shape next to it streamed at ~1.5 TB/s. The heuristic's first algorithm is kept per shape.
class LtGemm {
 public:
  LtGemm(cudaStream_t stream, void* workspace, size_t workspace_bytes);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;
  // Same contract as cublas_gemm; false (nothing enqueued) when cuBLASLt offers no algorithm.
  bool run(const void* x, const void* w, DType in_dt, void* out, DType out_dt, int64_t m, int64_t n, int64_t k,
           int64_t ldo);

  // out[m, n] (row-major, f32/f16/bf16) = x[m, k] w[n, k]^T on the e4m3 tensor cores (Hopper): both operands
  // are row-major e4m3 codes with one f32 scale per row and 128 columns (cuBLASLt's VEC128_32F mode on A and
  // B), the tables of fp8_kernels.h (scale of row r, block b at scales[b * rows + r]). f32 accumulation.
  // Needs k % 128 == 0, m % 8 == 0, n % 8 == 0 and 16-byte aligned pointers (the caller checks). Returns
  // false (nothing enqueued) where cuBLASLt offers no algorithm for the shape; fp8_refused says so beforehand
  // once a shape has been tried.
  bool run_fp8(const uint8_t* x_codes, const float* x_scales, const uint8_t* w_codes, const float* w_scales, void* out,
               DType out_dt, int64_t m, int64_t n, int64_t k);
  bool fp8_refused(DType out_dt, int64_t m, int64_t n, int64_t k) const;

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool ok = false;
    bool ran = false;  // run_fp8: a first call that cuBLASLt turns down marks the plan refused
  };
  // Asks cuBLASLt for the plan's algorithm within the workspace (and, when min_align > 0, for operands only that
  // many bytes aligned); sets p.ok and p.algo and returns the heuristic's status.
  cublasStatus_t choose_algo(Plan& p, uint32_t min_align);
  cublasLtHandle_t handle_ = nullptr;
  cudaStream_t stream_;
  void* workspace_;
  size_t workspace_bytes_;
  std::map<std::tuple<int, int, int64_t, int64_t, int64_t, int64_t>, Plan> plans_;
  std::map<std::tuple<int, int64_t, int64_t, int64_t>, Plan> fp8_plans_;  // out_dt, m, n, k
};

}  // namespace strata::cuda
