// runtime/cpu/cpu_kernels.h: inner loops of the CPU backend: dot products of f32 activations with
// weight rows of any dtype (converted on the fly, f32 accumulation) and row conversion to f32.
// AVX2/F16C paths when the compiler targets them, portable loops otherwise.
#pragma once
#include <cstdint>

#include "runtime/dtype.h"

namespace strata::cpu {

// Dot product of x[k] with one weight row stored as `dtype`; k is a multiple of 32 for q8_0/q4_0.
float dot_row(const float* x, const void* row, DType dtype, int64_t k);
// Converts one weight row of `dtype` to f32 (k elements).
void row_to_f32(const void* row, DType dtype, int64_t k, float* out);
// Plain f32 dot product (vectorised).
float dot_f32(const float* a, const float* b, int64_t k);

}  // namespace strata::cpu
