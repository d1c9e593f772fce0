// runtime/formats/block_quant.h: GGUF block quantization of f32 rows (make-model writes quantized
// GGUF) and dequantization of every GGUF weight type strata reads, bit-identical to the gguf package's
// reference (tests/runtime/formats/block_quant_test.cpp). Layouts: dtype.h and quant_blocks.h.
// Legacy 32-element types are in block_quant.cpp, K-quants and iq4_xs in kquants.cpp.
#pragma once
#include <cstdint>

#include "runtime/dtype.h"

namespace strata {

// Dequantizes n elements (a whole number of the type's blocks) of any block-quantized dtype.
void dequantize_row(DType dtype, const void* blocks, float* y, int64_t n);

// Whether quantize_row can write `dtype` (also f8_e4m3_b128, for tests): q8_0, q4_0, q4_1, q5_0, q5_1 (ggml's rules, byte-identical to
// the gguf package's quantize), q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs (ggml's importance-free searches,
// as llama-quantize without an imatrix: the scale fits weighted by |x|, x^2 or RMS + |x|).
bool can_quantize(DType dtype);
// Quantizes n elements (a whole number of blocks) into `blocks`; throws for a dtype it cannot write.
void quantize_row(DType dtype, const float* x, void* blocks, int64_t n);

// n must be a multiple of kQBlock. Q8_0: scale = max|x| / 127, q = round(x / scale).
void quantize_row_q8_0(const float* x, BlockQ8_0* out, int64_t n);
// Q4_0 (ggml's rule): scale = (the element of largest magnitude, with its sign) / -8,
// q = clamp(round-half-up(x / scale) + 8, 0, 15).
void quantize_row_q4_0(const float* x, BlockQ4_0* out, int64_t n);
void dequantize_row_q8_0(const BlockQ8_0* in, float* y, int64_t n);
void dequantize_row_q4_0(const BlockQ4_0* in, float* y, int64_t n);

// f8_e4m3_b128 (fp8_block.cpp): y = scale * e4m3(q). quantize_row_f8 picks scale = max|x| / 448 per block
// and rounds x / scale to the nearest e4m3 (checkpoints come from other tools; this serves tests).
struct BlockF8B128;
void dequantize_row_f8(const BlockF8B128* in, float* y, int64_t n);
void quantize_row_f8(const float* x, BlockF8B128* out, int64_t n);

// The K-quant and iq4_xs halves of dequantize_row / quantize_row, and iq4_nl's quantizer (kquants.cpp).
void dequantize_row_k(DType dtype, const void* blocks, float* y, int64_t n);
void quantize_row_k(DType dtype, const float* x, void* blocks, int64_t n);
struct BlockIQ4_NL;
void quantize_row_iq4_nl(const float* x, BlockIQ4_NL* out, int64_t n);

}  // namespace strata
