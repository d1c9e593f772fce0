// runtime/cuda/cuda_backend_moe.cpp: CudaBackend's mixture-of-experts op (the combine); the experts
// themselves are the backend's matmuls (runtime/models/moe.cpp): GEMVs over a decode step's few rows of
// each selected expert, cuBLAS GEMMs over a prefill's, quantized experts through the quantized paths.
#include "runtime/cuda/cuda_backend_impl.h"
#include "runtime/cuda/moe_kernels.h"

namespace strata {
namespace cuda_backend_detail {

void CudaBackend::combine_rows(const Tensor& src, const Tensor& index, const Tensor& weight, bool accumulate,
                               Tensor& out) {
  check_on_device(src, "src", "combine_rows");
  check_on_device(index, "index", "combine_rows");
  check_on_device(weight, "weight", "combine_rows");
  check_on_device(out, "out", "combine_rows");
  check_float(src, "src", "combine_rows");
  check_float(out, "out", "combine_rows");
  STRATA_CHECK(index.dtype() == DType::kI32 && weight.dtype() == DType::kF32,
               "combine_rows: index must be i32 and weight f32");
  const int64_t D = out.dim(-1), T = out.numel() / D, n = index.numel();
  STRATA_CHECK(T > 0 && n % T == 0 && weight.numel() == n && src.dim(-1) == D, "combine_rows: ", n,
               " indices and ", weight.numel(), " weights for ", T, " output rows; src ", shape_str(src.shape()),
               ", out ", shape_str(out.shape()));
  set_device();
  auto scope = profile([&] { return cat("moe combine k", n / T); });
  cuda::launch_combine_rows(src.raw(), src.dtype(), src.numel() / D, index.data<int32_t>(), weight.data<float>(),
                            n / T, T, D, accumulate, out.raw(), out.dtype(), launch());
}

}  // namespace cuda_backend_detail
}  // namespace strata
