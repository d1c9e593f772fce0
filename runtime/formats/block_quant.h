// runtime/formats/block_quant.h: GGUF Q8_0 / Q4_0 block quantization of f32 rows (make-model
// writes quantized GGUF), with the matching dequantization for tests. Layouts are in dtype.h.
#pragma once
#include <cstdint>

#include "runtime/dtype.h"

namespace strata {

// n must be a multiple of kQBlock. Q8_0: scale = max|x| / 127, q = round(x / scale).
void quantize_row_q8_0(const float* x, BlockQ8_0* out, int64_t n);
// Q4_0 (ggml's rule): scale = (the element of largest magnitude, with its sign) / -8,
// q = clamp(round-half-up(x / scale) + 8, 0, 15).
void quantize_row_q4_0(const float* x, BlockQ4_0* out, int64_t n);
void dequantize_row_q8_0(const BlockQ8_0* in, float* y, int64_t n);
void dequantize_row_q4_0(const BlockQ4_0* in, float* y, int64_t n);

}  // namespace strata
