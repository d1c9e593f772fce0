// runtime/cuda/moe_kernels.cu: the mixture-of-experts combine (moe_kernels.h). One block per output row
// sums that token's k expert rows, so no two threads write one element: no atomics, the same bits every
// run, and each token's row is read and written once.
#include <algorithm>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_dtype.cuh"
#include "runtime/cuda/moe_kernels.h"
#include "runtime/cuda/pdl.cuh"

namespace strata::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void combine_rows_kernel(const void* src, DType src_dt, int64_t src_rows, const int32_t* index,
                                    const float* weight, int64_t k, int64_t dim, bool accumulate, void* out,
                                    DType out_dt) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.x;
  const int32_t* idx = index + t * k;
  const float* w = weight + t * k;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    float acc = accumulate ? load_elem(out, out_dt, t * dim + d) : 0.f;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t r = idx[j];
      if (r >= 0 && r < src_rows) acc += w[j] * load_elem(src, src_dt, r * dim + d);
    }
    store_elem(out, out_dt, t * dim + d, acc);
  }
}

}  // namespace

void launch_combine_rows(const void* src, DType src_dt, int64_t src_rows, const int32_t* index, const float* weight,
                         int64_t k, int64_t rows, int64_t dim, bool accumulate, void* out, DType out_dt,
                         const Launch& stream) {
  if (rows == 0 || dim == 0) return;
  const unsigned threads = static_cast<unsigned>(std::min<int64_t>(kThreads, (dim + 31) / 32 * 32));
  launch_pdl(combine_rows_kernel, static_cast<unsigned>(rows), threads, 0, stream, src, src_dt, src_rows, index,
             weight, k, dim, accumulate, out, out_dt);
  CHECK_LAUNCH();
}

}  // namespace strata::cuda
