// runtime/quant_blocks.h: the byte layouts of GGUF's block-quantized weight types beyond q8_0/q4_0
// (those two live in dtype.h). Every scale is f16 bits unless noted; values within a block are read as
// gguf/ggml define them (runtime/formats/block_quant.h dequantizes each type; tests compare it with the
// gguf package's reference). "Sub-block" is the group one scale covers.
#pragma once
#include <cstdint>
#include <cstring>

#include "runtime/dtype.h"

namespace strata {

// 32 elements: y = d * q + m, q in 0..15 (low nibbles elements 0..15, high 16..31).
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[kQBlock / 2];
};
// 32 elements: y = d * (q - 16), q = nibble | bit j of qh (little-endian u32) << 4.
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQBlock / 2];
};
// 32 elements: y = d * q + m, 5-bit q as in q5_0.
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[kQBlock / 2];
};
// 32 elements: y = d * table[nibble] with the fixed non-uniform table kIq4Values.
struct BlockIQ4_NL {
  uint16_t d;
  uint8_t qs[kQBlock / 2];
};

// 256 elements, 16 sub-blocks of 16: y = d * (sc & 15) * q - dmin * (sc >> 4), q 2-bit.
struct BlockQ2_K {
  uint8_t scales[kQKBlock / 16];
  uint8_t qs[kQKBlock / 4];
  uint16_t d, dmin;
};
// 256 elements, 16 sub-blocks of 16: y = d * (scale - 32) * (q2 - (hmask bit ? 0 : 4)), 6-bit scales packed
// in 12 bytes.
struct BlockQ3_K {
  uint8_t hmask[kQKBlock / 8];
  uint8_t qs[kQKBlock / 4];
  uint8_t scales[12];
  uint16_t d;
};
// 256 elements, 8 sub-blocks of 32: y = d * sc * q - dmin * m, 6-bit sc and m packed in 12 bytes, q 4-bit.
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qs[kQKBlock / 2];
};
// As q4_K with a fifth bit per element in qh.
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[kQKBlock / 8];
  uint8_t qs[kQKBlock / 2];
};
// 256 elements, 16 sub-blocks of 16: y = d * scale * (q - 32), q 6-bit (4 in ql, 2 in qh), int8 scales.
struct BlockQ6_K {
  uint8_t ql[kQKBlock / 2];
  uint8_t qh[kQKBlock / 4];
  int8_t scales[kQKBlock / 16];
  uint16_t d;
};
// 256 elements, 8 sub-blocks of 32: y = d * (scale - 32) * table[nibble], 6-bit scales (low 4 bits in
// scales_l, high 2 in scales_h).
struct BlockIQ4_XS {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[kQKBlock / 64];
  uint8_t qs[kQKBlock / 2];
};

// FP8 checkpoints (issue 23): 128 consecutive elements of a row as float8 e4m3 (the "fn" variant: bias 7,
// no infinities, 0x7f / 0xff NaN) and one f32 scale: y = scale * e4m3(q). Per-tensor, per-channel and
// DeepSeek's 128x128 block scales all give every 128-element stretch of a row a single scale, so each maps
// onto this block exactly.
constexpr int64_t kF8Block = 128;
struct BlockF8B128 {
  float scale;
  uint8_t q[kF8Block];
};

// The value of an e4m3 (fn) byte: normal (1 + m/8) * 2^(e-7), subnormal m/8 * 2^-6; NaN for 0x7f / 0xff.
constexpr float e4m3_to_f32(uint8_t b) {
  const int e = (b >> 3) & 15, m = b & 7;
  float v = 0.f;
  if (e == 15 && m == 7) {
    v = __builtin_nanf("");
  } else if (e == 0) {
    v = static_cast<float>(m) * (1.f / 512.f);
  } else {
    v = static_cast<float>(8 + m) / 8.f;
    for (int i = 7; i < e; ++i) v *= 2.f;
    for (int i = e; i < 7; ++i) v *= 0.5f;
  }
  return (b & 0x80) ? -v : v;
}
// The nearest e4m3 byte to v (ties to even), saturating at +-448 (what torch's float8_e4m3fn cast gives for
// finite inputs in range; strata writes it only in tests and make-model-like tools).
uint8_t f32_to_e4m3(float v);

static_assert(sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24 &&
                  sizeof(BlockIQ4_NL) == 18,
              "GGUF 32-element block layouts");
static_assert(sizeof(BlockF8B128) == 132, "FP8 block layout");
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144 &&
                  sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockIQ4_XS) == 136,
              "GGUF 256-element block layouts");

// The iq4_nl / iq4_xs value table (ggml's kvalues_iq4nl).
inline constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
// The index of the table entry nearest to v (the lower one on ties).
inline int nearest_iq4(float v) {
  int best = 0;
  for (int i = 1; i < 16; ++i) {
    const float a = v - kIq4Values[i], b = v - kIq4Values[best];
    if (a * a < b * b) best = i;
  }
  return best;
}

// The 6-bit scale and min of sub-block j (0..7) of q4_K / q5_K from their 12 packed bytes: bytes 0-3 hold
// scales 0-3 (low 6 bits) and the top bits of scales 4-7; bytes 4-7 the same for the mins; bytes 8-11 the
// low 4 bits of scales (low nibble) and mins (high nibble) 4-7.
inline void k_scale_min(const uint8_t* packed, int j, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = packed[j] & 63;
    *min = packed[j + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((packed[j + 4] & 0x0f) | ((packed[j - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((packed[j + 4] >> 4) | ((packed[j] >> 6) << 4));
  }
}

// The 16 signed scales (-32..31) of q3_K from their 12 packed bytes: bytes 0-7 hold the low 4 bits (low
// nibbles scales 0-7, high nibbles 8-15), bytes 8-11 the high 2 bits (bits 2i..2i+1 of byte 8 + j for
// scale 4i + j). Unpacked four scales per 32-bit word (a per-scale loop costs as much as the dot itself).
inline void q3k_scales(const uint8_t* packed, int8_t* out) {
  uint32_t w[3];
  std::memcpy(w, packed, 12);
  constexpr uint32_t kLow = 0x0f0f0f0fu, kHigh = 0x03030303u;
  const uint32_t words[4] = {(w[0] & kLow) | (w[2] & kHigh) << 4, (w[1] & kLow) | (w[2] >> 2 & kHigh) << 4,
                             (w[0] >> 4 & kLow) | (w[2] >> 4 & kHigh) << 4,
                             (w[1] >> 4 & kLow) | (w[2] >> 6 & kHigh) << 4};
  uint8_t u[16];
  std::memcpy(u, words, 16);
  for (int i = 0; i < 16; ++i) out[i] = static_cast<int8_t>(u[i] - 32);
}

}  // namespace strata
