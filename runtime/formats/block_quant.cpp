// runtime/formats/block_quant.cpp: the 32-element GGUF types (q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl):
// reference (scalar) quantizers and dequantizers, bit-compatible with the gguf package. Built with
// -ffp-contract=off (CMakeLists.txt): a fused multiply-add would round differently from the reference's
// separate multiply and add.
#include "runtime/formats/block_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/error.h"
#include "runtime/quant_blocks.h"

namespace strata {
namespace {

// The element of largest magnitude, with its sign (the first one on ties).
float signed_absmax(const float* x, int64_t n) {
  float amax = 0.f, max = 0.f;
  for (int64_t i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  return max;
}

void min_max(const float* x, int64_t n, float* lo, float* hi) {
  *lo = *hi = x[0];
  for (int64_t i = 1; i < n; ++i) {
    *lo = std::min(*lo, x[i]);
    *hi = std::max(*hi, x[i]);
  }
}

// q = trunc(v) clamped to [0, top]; v is never below 0 for the callers' inputs.
uint8_t trunc_code(float v, int top) { return static_cast<uint8_t>(std::min(top, static_cast<int>(v))); }

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

void quantize_q4_1(const float* x, BlockQ4_1* out, int64_t n) {
  for (int64_t b = 0; b < n / kQBlock; ++b, x += kQBlock) {
    float lo, hi;
    min_max(x, kQBlock, &lo, &hi);
    const float d = (hi - lo) / 15.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    out[b].d = f32_to_f16(d);
    out[b].m = f32_to_f16(lo);
    for (int64_t i = 0; i < kQBlock / 2; ++i)
      out[b].qs[i] = static_cast<uint8_t>(trunc_code((x[i] - lo) * id + 0.5f, 15) |
                                          trunc_code((x[i + kQBlock / 2] - lo) * id + 0.5f, 15) << 4);
  }
}

// q5_0 / q5_1 share the packing: 4 low bits in qs (like q4), bit 4 of element j in bit j of qh.
void pack_q5(const uint8_t* q, uint8_t* qh, uint8_t* qs) {
  uint32_t high = 0;
  for (int i = 0; i < kQBlock; ++i) high |= static_cast<uint32_t>(q[i] >> 4) << i;
  std::memcpy(qh, &high, 4);
  for (int i = 0; i < kQBlock / 2; ++i) qs[i] = static_cast<uint8_t>((q[i] & 0x0f) | (q[i + kQBlock / 2] & 0x0f) << 4);
}

void quantize_q5_0(const float* x, BlockQ5_0* out, int64_t n) {
  for (int64_t b = 0; b < n / kQBlock; ++b, x += kQBlock) {
    const float d = signed_absmax(x, kQBlock) / -16.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    uint8_t q[kQBlock];
    for (int i = 0; i < kQBlock; ++i) q[i] = trunc_code(x[i] * id + 16.5f, 31);
    out[b].d = f32_to_f16(d);
    pack_q5(q, out[b].qh, out[b].qs);
  }
}

void quantize_q5_1(const float* x, BlockQ5_1* out, int64_t n) {
  for (int64_t b = 0; b < n / kQBlock; ++b, x += kQBlock) {
    float lo, hi;
    min_max(x, kQBlock, &lo, &hi);
    const float d = (hi - lo) / 31.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    uint8_t q[kQBlock];
    for (int i = 0; i < kQBlock; ++i) q[i] = trunc_code((x[i] - lo) * id + 0.5f, 31);
    out[b].d = f32_to_f16(d);
    out[b].m = f32_to_f16(lo);
    pack_q5(q, out[b].qh, out[b].qs);
  }
}

}  // namespace

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
    const float d = signed_absmax(x, kQBlock) / -8.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    out[b].scale = f32_to_f16(d);
    for (int64_t i = 0; i < kQBlock / 2; ++i)
      out[b].q[i] = static_cast<uint8_t>(trunc_code(x[i] * id + 8.5f, 15) |
                                         trunc_code(x[i + kQBlock / 2] * id + 8.5f, 15) << 4);
  }
}

void dequantize_row_q8_0(const BlockQ8_0* in, float* y, int64_t n) {
  for (int64_t b = 0; b < n / kQBlock; ++b) {
    const float d = f16_to_f32(in[b].scale);
    for (int64_t i = 0; i < kQBlock; ++i) *y++ = static_cast<float>(in[b].q[i]) * d;
  }
}

void dequantize_row_q4_0(const BlockQ4_0* in, float* y, int64_t n) {
  for (int64_t b = 0; b < n / kQBlock; ++b, y += kQBlock) {
    const float d = f16_to_f32(in[b].scale);
    for (int64_t i = 0; i < kQBlock / 2; ++i) {
      y[i] = d * static_cast<float>((in[b].q[i] & 0x0f) - 8);
      y[i + kQBlock / 2] = d * static_cast<float>((in[b].q[i] >> 4) - 8);
    }
  }
}

void dequantize_row(DType dtype, const void* blocks, float* y, int64_t n) {
  STRATA_CHECK(n % dtype_block_elems(dtype) == 0, "dequantize_row: ", n, " elements of ", dtype_name(dtype),
               " are not a whole number of ", dtype_block_elems(dtype), "-element blocks");
  const int64_t nb = n / kQBlock;
  switch (dtype) {
    case DType::kQ8_0: dequantize_row_q8_0(static_cast<const BlockQ8_0*>(blocks), y, n); return;
    case DType::kQ4_0: dequantize_row_q4_0(static_cast<const BlockQ4_0*>(blocks), y, n); return;
    case DType::kF8_B128: dequantize_row_f8(static_cast<const BlockF8B128*>(blocks), y, n); return;
    case DType::kQ4_1:
      for (int64_t b = 0; b < nb; ++b, y += kQBlock) {
        const auto& blk = static_cast<const BlockQ4_1*>(blocks)[b];
        const float d = f16_to_f32(blk.d), m = f16_to_f32(blk.m);
        for (int i = 0; i < kQBlock / 2; ++i) {
          y[i] = d * static_cast<float>(blk.qs[i] & 0x0f) + m;
          y[i + kQBlock / 2] = d * static_cast<float>(blk.qs[i] >> 4) + m;
        }
      }
      return;
    case DType::kQ5_0:
    case DType::kQ5_1:
      for (int64_t b = 0; b < nb; ++b, y += kQBlock) {
        const bool with_min = dtype == DType::kQ5_1;
        const auto* b0 = static_cast<const BlockQ5_0*>(blocks) + b;
        const auto* b1 = static_cast<const BlockQ5_1*>(blocks) + b;
        const float d = f16_to_f32(with_min ? b1->d : b0->d);
        const uint32_t qh = load_u32(with_min ? b1->qh : b0->qh);
        const uint8_t* qs = with_min ? b1->qs : b0->qs;
        for (int i = 0; i < kQBlock; ++i) {
          const int q = ((qs[i % 16] >> (4 * (i / 16))) & 0x0f) | static_cast<int>((qh >> i) & 1u) << 4;
          y[i] = with_min ? d * static_cast<float>(q) + f16_to_f32(b1->m) : d * static_cast<float>(q - 16);
        }
      }
      return;
    case DType::kIQ4_NL:
      for (int64_t b = 0; b < nb; ++b, y += kQBlock) {
        const auto& blk = static_cast<const BlockIQ4_NL*>(blocks)[b];
        const float d = f16_to_f32(blk.d);
        for (int i = 0; i < kQBlock / 2; ++i) {
          y[i] = d * static_cast<float>(kIq4Values[blk.qs[i] & 0x0f]);
          y[i + kQBlock / 2] = d * static_cast<float>(kIq4Values[blk.qs[i] >> 4]);
        }
      }
      return;
    default: dequantize_row_k(dtype, blocks, y, n);
  }
}

bool can_quantize(DType dtype) { return dtype_is_quantized(dtype) && dtype != DType::kF8_B128; }

void quantize_row(DType dtype, const float* x, void* blocks, int64_t n) {
  STRATA_CHECK(dtype_is_quantized(dtype), "quantize_row: ", dtype_name(dtype), " is not a block-quantized dtype");
  STRATA_CHECK(n % dtype_block_elems(dtype) == 0, "quantize_row: ", n, " elements of ", dtype_name(dtype),
               " are not a whole number of ", dtype_block_elems(dtype), "-element blocks");
  switch (dtype) {
    case DType::kQ8_0: quantize_row_q8_0(x, static_cast<BlockQ8_0*>(blocks), n); return;
    case DType::kQ4_0: quantize_row_q4_0(x, static_cast<BlockQ4_0*>(blocks), n); return;
    case DType::kF8_B128: quantize_row_f8(x, static_cast<BlockF8B128*>(blocks), n); return;
    case DType::kQ4_1: quantize_q4_1(x, static_cast<BlockQ4_1*>(blocks), n); return;
    case DType::kQ5_0: quantize_q5_0(x, static_cast<BlockQ5_0*>(blocks), n); return;
    case DType::kQ5_1: quantize_q5_1(x, static_cast<BlockQ5_1*>(blocks), n); return;
    case DType::kIQ4_NL: quantize_row_iq4_nl(x, static_cast<BlockIQ4_NL*>(blocks), n); return;
    default: quantize_row_k(dtype, x, blocks, n);
  }
}

}  // namespace strata
