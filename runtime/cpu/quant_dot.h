// runtime/cpu/quant_dot.h: the CPU matmul's inner loop for block-quantized weights. The activation row is
// quantized once per matmul to 8-bit blocks of 32 (scale per block), and each weight row's dot product is
// then integer multiply-adds per block with one float scale step per block (AVX2 when the compiler targets
// it, a portable loop otherwise; both compute the same integer sums).
#pragma once
#include <cstdint>

#include "runtime/dtype.h"

namespace strata::cpu {

// 32 activations as int8 with scale d (x ~ d * q), s = d * sum(q), and the integer sums of each half
// (the K-quants with 16-element sub-blocks need them). 48 bytes so an aligned array keeps q 16-aligned.
struct ActBlock {
  int8_t q[32];
  float d;
  float s;
  int16_t half_sum[2];
  // 1: d is the scale of the whole 256-element run this block belongs to (quantize_activations_256), so
  // the K-quant kernels may add the integer sums of its 8 blocks before the float step.
  int32_t shared;
};
static_assert(sizeof(ActBlock) == 48, "activation block layout");

// Quantizes k activations (k a multiple of 32) to k / 32 blocks: d = max|x| / 127, q = round(x / d).
void quantize_activations(const float* x, int64_t k, ActBlock* out);
// The same blocks, but with one d per 256 elements (k a multiple of 256): max|x| over the run / 127, as
// llama.cpp's q8_K for its K-quant dots. Coarser than per 32 where a run's magnitudes differ; the
// repacked K-quant and iq4_xs prefill kernels then step in float once per 256 elements instead of 8 times.
void quantize_activations_256(const float* x, int64_t k, ActBlock* out);
// Dot product of k quantized activations with one weight row of any block-quantized dtype.
float dot_quant(const ActBlock* x, const void* row, DType dtype, int64_t k);
// out[t] = dot_quant(x[t], row, dtype, k) for `count` (1 to kMaxDotTokens) activation rows. The legacy types
// (q4_0..q5_1), q4_K, q5_K and q6_K unpack each weight register once for all rows (prefill, 2+ rows); other
// types loop over dot_quant.
constexpr int kMaxDotTokens = 4;
void dot_quant_tokens(const ActBlock* const* x, int count, const void* row, DType dtype, int64_t k, float* out);

}  // namespace strata::cpu
