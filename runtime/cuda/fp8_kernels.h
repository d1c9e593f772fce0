// runtime/cuda/fp8_kernels.h: the f8_e4m3_b128 weight type on CUDA (FP8 checkpoints, issue 23):
// dequantization (launch_convert's f8 branch, which also feeds the cuBLAS path) and the decode GEMV.
#pragma once
#include <cstdint>

#include "runtime/cuda/launch.h"
#include "runtime/dtype.h"

namespace strata::cuda {

// dst[i] = scale * e4m3(q) for n elements (whole 128-element blocks) of f8_e4m3_b128 into f32/f16/bf16.
void launch_convert_f8(const void* src, void* dst, DType dst_dt, int64_t n, const Launch& stream);
// out[r][j] = sum_k x[r][k] * w[j][k] (+ bias[j]) for rows <= 8 activation rows (f32 or bf16), w
// [n, k] f8_e4m3_b128 (k a multiple of 128): one warp per output column, one block per warp iteration.
void launch_gemv_f8(const void* x, DType x_dt, const void* w, const void* bias, DType bias_dt, void* out,
                    DType out_dt, int64_t rows, int64_t n, int64_t k, const Launch& stream);

}  // namespace strata::cuda
