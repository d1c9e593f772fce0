// runtime/formats/fp8_block.cpp: the f8_e4m3_b128 weight type (FP8 checkpoints, issue 23): e4m3 rounding
// and the block (de)quantizer. Dequantization is scale * e4m3(q) in f32, what the FP8 checkpoints'
// reference dequantizers compute (weight.to(float32) * scale).
#include <cmath>
#include <cstring>

#include "runtime/error.h"
#include "runtime/formats/block_quant.h"
#include "runtime/quant_blocks.h"

namespace strata {

uint8_t f32_to_e4m3(float v) {
  const uint8_t sign = std::signbit(v) ? 0x80 : 0;
  const float a = std::fabs(v);
  if (std::isnan(v)) return 0x7f;
  if (a >= 448.f) return sign | 0x7e;  // saturate at the largest finite value
  // Binary search over the 127 non-negative finite codes, then ties to the even code.
  int lo = 0, hi = 0x7e;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (e4m3_to_f32(static_cast<uint8_t>(mid)) <= a) lo = mid;
    else hi = mid;
  }
  const float dlo = a - e4m3_to_f32(static_cast<uint8_t>(lo)), dhi = e4m3_to_f32(static_cast<uint8_t>(hi)) - a;
  const int code = dlo < dhi ? lo : dhi < dlo ? hi : (lo % 2 == 0 ? lo : hi);
  return static_cast<uint8_t>(sign | code);
}

void dequantize_row_f8(const BlockF8B128* in, float* y, int64_t n) {
  for (int64_t b = 0; b < n / kF8Block; ++b, y += kF8Block)
    for (int64_t i = 0; i < kF8Block; ++i) y[i] = in[b].scale * e4m3_to_f32(in[b].q[i]);
}

void quantize_row_f8(const float* x, BlockF8B128* out, int64_t n) {
  for (int64_t b = 0; b < n / kF8Block; ++b, x += kF8Block) {
    float amax = 0.f;
    for (int64_t i = 0; i < kF8Block; ++i) amax = std::fmax(amax, std::fabs(x[i]));
    const float scale = amax / 448.f;
    out[b].scale = scale;
    for (int64_t i = 0; i < kF8Block; ++i) out[b].q[i] = scale == 0.f ? 0 : f32_to_e4m3(x[i] / scale);
  }
}

}  // namespace strata
