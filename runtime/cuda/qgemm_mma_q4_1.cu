// runtime/cuda/qgemm_mma_q4_1.cu: the tensor-core quantized GEMM's Q4_1 kernels (qgemm_mma_kernel.cuh), in a file of
// their own so each type's kernels compile in parallel.
#include "runtime/cuda/qgemm_mma_kernel.cuh"

namespace strata::cuda::qmma {
template void launch_tiles<DType::kQ4_1>(const QgemmArgs&, int, dim3, const Launch&);
}  // namespace strata::cuda::qmma
