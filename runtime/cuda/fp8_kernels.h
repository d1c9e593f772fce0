// runtime/cuda/fp8_kernels.h: the f8_e4m3_b128 weight type on CUDA (FP8 checkpoints, issue 23):
// dequantization (launch_convert's f8 branch, which also feeds the cuBLAS path), the decode GEMV, and the
// operand preparation of the e4m3 tensor-core GEMM (LtGemm::run_fp8): activations quantized per token and
// 128 columns, weights split into plain codes and scales.
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


// The scale tables of the FP8 GEMM's operands are cuBLASLt's VEC128_32F layout: for an operand of `rows`
// rows of k e4m3 codes (row-major, K innermost), the f32 scale of row r and column block b (columns
// 128b..128b+127) sits at scales[b * rows + r], rows innermost (see gemm.h for where that layout comes from).
// Codes of activations: x[r][c] ~= scales[b][r] * codes[r][c], scale = max |x| over the block / 448 (e4m3's
// largest finite value; DeepSeek-V3's 1x128 recipe), 1 for an all-zero block; rounding to nearest, saturated.
// x is f32, f16 or bf16 [rows, k]; k a multiple of 128; codes 4-byte aligned.
void launch_quantize_e4m3_b128(const void* x, DType x_dt, uint8_t* codes, float* scales, int64_t rows, int64_t k,
                               const Launch& stream);
// The same two tables for an f8_e4m3_b128 weight [n, k] (4-byte aligned): its codes copied out of the
// 132-byte blocks into a plain row-major [n, k] matrix, its scales transposed into the layout above. Exact.
void launch_repack_f8_b128(const void* w, uint8_t* codes, float* scales, int64_t n, int64_t k, const Launch& stream);

}  // namespace strata::cuda
