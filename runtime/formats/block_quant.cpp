// runtime/formats/block_quant.cpp: reference (scalar) Q8_0/Q4_0 quantizers; bit-compatible with ggml.
#include "runtime/formats/block_quant.h"

#include <algorithm>
#include <cmath>

namespace strata {

void quantize_row_q8_0(const float* x, BlockQ8_0* out, int64_t n) {
  for (int64_t b = 0; b < n / kQBlock; ++b, x += kQBlock) {
    float amax = 0.f;
    for (int64_t i = 0; i < kQBlock; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    out[b].scale = f32_to_f16(d);
    for (int64_t i = 0; i < kQBlock; ++i) out[b].q[i] = static_cast<int8_t>(std::lround(x[i] * id));
  }
}

void quantize_row_q4_0(const float* x, BlockQ4_0* out, int64_t n) {
  for (int64_t b = 0; b < n / kQBlock; ++b, x += kQBlock) {
    float amax = 0.f, max = 0.f;
    for (int64_t i = 0; i < kQBlock; ++i)
      if (std::fabs(x[i]) > amax) {
        amax = std::fabs(x[i]);
        max = x[i];
      }
    const float d = max / -8.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    out[b].scale = f32_to_f16(d);
    for (int64_t i = 0; i < kQBlock / 2; ++i) {
      const int lo = std::min(15, static_cast<int>(x[i] * id + 8.5f));
      const int hi = std::min(15, static_cast<int>(x[i + kQBlock / 2] * id + 8.5f));
      out[b].q[i] = static_cast<uint8_t>(lo | hi << 4);
    }
  }
}

void dequantize_row_q8_0(const BlockQ8_0* in, float* y, int64_t n) {
  for (int64_t b = 0; b < n / kQBlock; ++b) {
    const float d = f16_to_f32(in[b].scale);
    for (int64_t i = 0; i < kQBlock; ++i) *y++ = d * in[b].q[i];
  }
}

void dequantize_row_q4_0(const BlockQ4_0* in, float* y, int64_t n) {
  for (int64_t b = 0; b < n / kQBlock; ++b, y += kQBlock) {
    const float d = f16_to_f32(in[b].scale);
    for (int64_t i = 0; i < kQBlock / 2; ++i) {
      y[i] = d * ((in[b].q[i] & 0x0f) - 8);
      y[i + kQBlock / 2] = d * ((in[b].q[i] >> 4) - 8);
    }
  }
}

}  // namespace strata
