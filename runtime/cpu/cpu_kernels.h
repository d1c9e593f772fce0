// runtime/cpu/cpu_kernels.h: inner loops of the CPU backend: dot products of f32 activations with
// float weight rows (converted on the fly, f32 accumulation) and row conversion to f32.
// AVX2/F16C paths when the compiler targets them, portable loops otherwise.
#pragma once
#include <cstdint>

#include "runtime/dtype.h"

namespace strata::cpu {

// Dot product of x[k] with one weight row stored as f32, f16 or bf16 (quantized rows: quant_dot.h).
float dot_row(const float* x, const void* row, DType dtype, int64_t k);
// Converts one weight row of `dtype` (any float or block-quantized type) to f32 (k elements).
void row_to_f32(const void* row, DType dtype, int64_t k, float* out);
// Plain f32 dot product (vectorised).
float dot_f32(const float* a, const float* b, int64_t k);

}  // namespace strata::cpu
