// runtime/cuda/moe_kernels.h: the mixture-of-experts kernels of the CUDA backend (runtime/models/moe.h runs
// the experts themselves as the backend's matmuls over each expert's contiguous rows).
#pragma once
#include <cstdint>

#include "runtime/cuda/launch.h"
#include "runtime/dtype.h"

namespace strata::cuda {

// out[t, :] = (accumulate ? out[t, :] : 0) + sum over j < k of weight[t*k + j] * src[index[t*k + j], :] for
// t < rows, in f32, the sum in j order; a negative index adds nothing (another rank holds that expert).
// src [src_rows, dim] and out [rows, dim] are f32/f16/bf16; index and weight on the device.
void launch_combine_rows(const void* src, DType src_dt, int64_t src_rows, const int32_t* index, const float* weight,
                         int64_t k, int64_t rows, int64_t dim, bool accumulate, void* out, DType out_dt,
                         const Launch& stream);

}  // namespace strata::cuda
