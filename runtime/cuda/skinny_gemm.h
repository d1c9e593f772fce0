// runtime/cuda/skinny_gemm.h: the weight-streaming tensor-core matmul for a few rows (batched decode,
// M = 3..64; issue #5): out[M, N] = x[M, K] w[N, K]^T (+ bias) with 16-bit x and w. Internal to runtime/cuda/;
// CudaBackend::matmul picks it between the GEMV (gemv_kernels.cu) and cuBLAS (gemm.h).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "runtime/dtype.h"

namespace strata::cuda {

constexpr int64_t kSkinnyMaxRows = 64;

// Whether the kernel takes this product: x and w both bf16 or both f16 (in_dt), 3 <= m <= 64, k % 8 == 0,
// out f32/f16/bf16, on an sm_80+ device with enough shared memory. x and w must also be 16-byte aligned.
bool skinny_gemm_supports(DType in_dt, DType out_dt, int64_t m, int64_t n, int64_t k);

// Bytes of the one workspace every launch on a device with `sm_count` SMs fits in. The caller allocates it once,
// zeroes it once (it holds split-K counters that each launch leaves zero again) and never grows it, so CUDA
// graphs that recorded its address stay valid.
size_t skinny_gemm_workspace_bytes(int sm_count);

// How one launch is cut: `splits` blocks share each block of 128 output features along K (split-K, so that
// small N still fills the GPU).
struct SkinnyGemmPlan {
  int64_t splits = 1;
};
SkinnyGemmPlan skinny_gemm_plan(int64_t m, int64_t n, int64_t k, int sm_count);

// out[m, n] = x[m, k] w[n, k]^T (+ bias[n]) on `stream`, with programmatic dependent launch when enabled
// (pdl.cuh). workspace: skinny_gemm_workspace_bytes(sm_count) bytes, zeroed once, used only when splits > 1.
void launch_skinny_gemm(const void* x, const void* w, DType in_dt, const void* bias, DType bias_dt, void* out,
                        DType out_dt, int64_t m, int64_t n, int64_t k, const SkinnyGemmPlan& plan, void* workspace,
                        size_t workspace_bytes, int sm_count, cudaStream_t stream);

}  // namespace strata::cuda
