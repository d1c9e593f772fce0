// runtime/cuda/quant_decode.cuh: device-side readers of every GGUF block type (runtime/quant_blocks.h):
//  - dequant8: 8 consecutive elements of a block as f32, bit-identical to the CPU dequantizers
//    (runtime/formats/block_quant.cpp, kquants.cpp): the same operations in the same order, with rounded
//    operations (mul_rn, add_rn) that the compiler cannot contract into one fma.
//  - decode_chunk: the integer codes of one 32-element chunk (element order, 4 per 32-bit word) and the float
//    terms that turn integer dot products with 8-bit activations into the chunk's contribution, for the GEMV
//    (gemv_quant.cu).
// Outside nvcc the same code compiles as host C++ (plain stand-ins for the few intrinsics), so a CPU test
// (tests/runtime/cuda_quant_decode_test.cpp) checks the decoders against the CPU's without a GPU.
#pragma once
#include <cstdint>
#include <cstring>

#include "runtime/dtype.h"
#include "runtime/quant_blocks.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define STRATA_QD __device__ __forceinline__
#define STRATA_QD_UNROLL _Pragma("unroll")
#else
#define STRATA_QD inline
#define STRATA_QD_UNROLL
#endif

namespace strata::cuda {

STRATA_QD float half_bits(uint16_t h) {
#if defined(__CUDACC__)
  return __half2float(__ushort_as_half(h));
#else
  return f16_to_f32(h);
#endif
}

// a * b, a + b and a - b, each rounded on its own (never fused into an fma).
#if defined(__CUDACC__)
STRATA_QD float mul_rn(float a, float b) { return __fmul_rn(a, b); }
STRATA_QD float add_rn(float a, float b) { return __fadd_rn(a, b); }
STRATA_QD float sub_rn(float a, float b) { return __fsub_rn(a, b); }
STRATA_QD uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t s) { return __byte_perm(x, y, s); }
#else
inline float mul_rn(float a, float b) {
  volatile float r = a * b;
  return r;
}
inline float add_rn(float a, float b) {
  volatile float r = a + b;
  return r;
}
inline float sub_rn(float a, float b) {
  volatile float r = a - b;
  return r;
}
// Byte k of the result is byte (s >> 4k) & 7 of the 8 bytes y:x (selectors here never set bit 3).
inline uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t s) {
  const uint64_t v = x | static_cast<uint64_t>(y) << 32;
  uint32_t r = 0;
  for (int k = 0; k < 4; ++k) r |= static_cast<uint32_t>(v >> (8 * ((s >> (4 * k)) & 7)) & 0xff) << (8 * k);
  return r;
}
#endif

// A 32-bit word of a block at p, whose address is a multiple of A bytes (2 or more): one load when A >= 4.
template <int A>
STRATA_QD uint32_t load_u32(const uint8_t* p) {
#if defined(__CUDACC__)
  if constexpr (A % 4 == 0) {
    return *reinterpret_cast<const uint32_t*>(p);
  } else {
    const auto* h = reinterpret_cast<const uint16_t*>(p);
    return static_cast<uint32_t>(h[0]) | static_cast<uint32_t>(h[1]) << 16;
  }
#else
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
#endif
}
STRATA_QD uint16_t load_u16(const uint8_t* p) {
#if defined(__CUDACC__)
  return *reinterpret_cast<const uint16_t*>(p);
#else
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
#endif
}

// The iq4 value table, 4 entries per word, for byte_perm lookups.
STRATA_QD uint32_t iq4_word(int i) {
  constexpr uint32_t kWords[4] = {0xBFAD9881u, 0xF6EADDCFu, 0x26190D01u, 0x71594535u};
  return kWords[i];
}
// One iq4 table value (kIq4Values lives in host memory).
STRATA_QD float iq4_value(int idx) {
  const uint32_t w = idx < 8 ? (idx < 4 ? iq4_word(0) : iq4_word(1)) : (idx < 12 ? iq4_word(2) : iq4_word(3));
  return static_cast<float>(static_cast<int8_t>(w >> (8 * (idx % 4)) & 0xff));
}
// Four iq4 table values (int8 bytes) for the four nibble indices held in the low nibbles of idx's bytes.
STRATA_QD uint32_t iq4_lookup(uint32_t idx) {
  // The selector wants the four indices packed as nibbles: byte b's index to nibble b.
  const uint32_t sel = (idx & 0xf) | (idx >> 4 & 0xf0) | (idx >> 8 & 0xf00) | (idx >> 12 & 0xf000);
  const uint32_t lo = byte_perm(iq4_word(0), iq4_word(1), sel & 0x7777);  // entries 0..7
  const uint32_t hi = byte_perm(iq4_word(2), iq4_word(3), sel & 0x7777);  // entries 8..15
  // Byte b from hi where bit 3 of index b is set.
  return byte_perm(lo, hi, 0x3210 | (sel >> 1 & 0x4444));
}

// Bit 4 of 4 elements: bits 0..3 of b moved to bit 4 of bytes 0..3.
STRATA_QD uint32_t spread4_bit4(uint32_t b) { return ((b & 0xf) * 0x00204081u & 0x01010101u) << 4; }

// ---- dequant8: elements 8g .. 8g+7 of the block at blk -------------------------------------------

template <DType T>
STRATA_QD void dequant8(const uint8_t* blk, int g, float (&y)[8]);

template <>
STRATA_QD void dequant8<DType::kQ8_0>(const uint8_t* blk, int g, float (&y)[8]) {
  const float d = half_bits(load_u16(blk));
  STRATA_QD_UNROLL
  for (int i = 0; i < 8; ++i) y[i] = mul_rn(static_cast<float>(static_cast<int8_t>(blk[2 + 8 * g + i])), d);
}

// The 4-bit code of element e (0..31) of a legacy block whose 16 nibble bytes are at qs.
STRATA_QD int legacy_nibble(const uint8_t* qs, int e) { return (qs[e % 16] >> (4 * (e / 16))) & 0xf; }

template <>
STRATA_QD void dequant8<DType::kQ4_0>(const uint8_t* blk, int g, float (&y)[8]) {
  const float d = half_bits(load_u16(blk));
  STRATA_QD_UNROLL
  for (int i = 0; i < 8; ++i) y[i] = mul_rn(d, static_cast<float>(legacy_nibble(blk + 2, 8 * g + i) - 8));
}
template <>
STRATA_QD void dequant8<DType::kQ4_1>(const uint8_t* blk, int g, float (&y)[8]) {
  const float d = half_bits(load_u16(blk)), m = half_bits(load_u16(blk + 2));
  STRATA_QD_UNROLL
  for (int i = 0; i < 8; ++i)
    y[i] = add_rn(mul_rn(d, static_cast<float>(legacy_nibble(blk + 4, 8 * g + i))), m);
}
template <>
STRATA_QD void dequant8<DType::kQ5_0>(const uint8_t* blk, int g, float (&y)[8]) {
  const float d = half_bits(load_u16(blk));
  const uint32_t qh = load_u32<2>(blk + 2);
  STRATA_QD_UNROLL
  for (int i = 0; i < 8; ++i) {
    const int e = 8 * g + i;
    const int q = legacy_nibble(blk + 6, e) | static_cast<int>((qh >> e) & 1u) << 4;
    y[i] = mul_rn(d, static_cast<float>(q - 16));
  }
}
template <>
STRATA_QD void dequant8<DType::kQ5_1>(const uint8_t* blk, int g, float (&y)[8]) {
  const float d = half_bits(load_u16(blk)), m = half_bits(load_u16(blk + 2));
  const uint32_t qh = load_u32<4>(blk + 4);
  STRATA_QD_UNROLL
  for (int i = 0; i < 8; ++i) {
    const int e = 8 * g + i;
    const int q = legacy_nibble(blk + 8, e) | static_cast<int>((qh >> e) & 1u) << 4;
    y[i] = add_rn(mul_rn(d, static_cast<float>(q)), m);
  }
}
template <>
STRATA_QD void dequant8<DType::kIQ4_NL>(const uint8_t* blk, int g, float (&y)[8]) {
  const float d = half_bits(load_u16(blk));
  STRATA_QD_UNROLL
  for (int i = 0; i < 8; ++i) y[i] = mul_rn(d, iq4_value(legacy_nibble(blk + 2, 8 * g + i)));
}

template <>
STRATA_QD void dequant8<DType::kQ2_K>(const uint8_t* blk, int g, float (&y)[8]) {
  const float d = half_bits(load_u16(blk + 80)), dmin = half_bits(load_u16(blk + 82));
  const int e0 = 8 * g, sc = blk[e0 / 16];
  const float dl = mul_rn(d, static_cast<float>(sc & 0xf)), ml = mul_rn(dmin, static_cast<float>(sc >> 4));
  STRATA_QD_UNROLL
  for (int i = 0; i < 8; ++i) {
    const int e = e0 + i;
    const int q = (blk[16 + 32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
    y[i] = sub_rn(mul_rn(dl, static_cast<float>(q)), ml);
  }
}

// The signed 6-bit scale s (0..15) of q3_K from its 12 packed bytes (q3k_scales in quant_blocks.h).
STRATA_QD int q3k_scale(const uint8_t* packed, int s) {
  const int low = (packed[s % 8] >> (4 * (s / 8))) & 0xf;
  const int high = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
  return (low | high << 4) - 32;
}

template <>
STRATA_QD void dequant8<DType::kQ3_K>(const uint8_t* blk, int g, float (&y)[8]) {
  const float d = half_bits(load_u16(blk + 108));
  const int e0 = 8 * g;
  const float dl = mul_rn(d, static_cast<float>(q3k_scale(blk + 96, e0 / 16)));
  STRATA_QD_UNROLL
  for (int i = 0; i < 8; ++i) {
    const int e = e0 + i, gr = e / 128, k = (e % 128) / 32, l = e % 32;
    const int low = (blk[32 + 32 * gr + l] >> (2 * k)) & 3;
    const int high = (blk[l] >> (4 * gr + k)) & 1;
    y[i] = mul_rn(dl, static_cast<float>(low - (high ? 0 : 4)));
  }
}

// The 6-bit scale and min of sub-block j of q4_K / q5_K (k_scale_min in quant_blocks.h).
STRATA_QD void k_scale_min_dev(const uint8_t* packed, int j, int& sc, int& m) {
  if (j < 4) {
    sc = packed[j] & 63;
    m = packed[j + 4] & 63;
  } else {
    sc = (packed[j + 4] & 0x0f) | ((packed[j - 4] >> 6) << 4);
    m = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
  }
}

template <bool kFive>
STRATA_QD void dequant8_q45k(const uint8_t* blk, int g, float (&y)[8]) {
  const float d = half_bits(load_u16(blk)), dmin = half_bits(load_u16(blk + 2));
  const uint8_t* qs = blk + (kFive ? 48 : 16);
  const int j = g / 4;
  int sc, m;
  k_scale_min_dev(blk + 4, j, sc, m);
  const float dl = mul_rn(d, static_cast<float>(sc)), ml = mul_rn(dmin, static_cast<float>(m));
  STRATA_QD_UNROLL
  for (int i = 0; i < 8; ++i) {
    const int l = 8 * (g % 4) + i;
    int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0xf;
    if constexpr (kFive) q |= ((blk[16 + l] >> j) & 1) << 4;
    y[i] = sub_rn(mul_rn(dl, static_cast<float>(q)), ml);
  }
}
template <>
STRATA_QD void dequant8<DType::kQ4_K>(const uint8_t* blk, int g, float (&y)[8]) {
  dequant8_q45k<false>(blk, g, y);
}
template <>
STRATA_QD void dequant8<DType::kQ5_K>(const uint8_t* blk, int g, float (&y)[8]) {
  dequant8_q45k<true>(blk, g, y);
}

template <>
STRATA_QD void dequant8<DType::kQ6_K>(const uint8_t* blk, int g, float (&y)[8]) {
  const float d = half_bits(load_u16(blk + 208));
  const int e0 = 8 * g;
  const float dl = mul_rn(d, static_cast<float>(static_cast<int8_t>(blk[192 + e0 / 16])));
  STRATA_QD_UNROLL
  for (int i = 0; i < 8; ++i) {
    const int e = e0 + i, h = e / 128, k = (e % 128) / 32, l = e % 32;
    const int low = (blk[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0xf;
    const int high = (blk[128 + 32 * h + l] >> (2 * k)) & 3;
    y[i] = mul_rn(dl, static_cast<float>((low | high << 4) - 32));
  }
}

template <>
STRATA_QD void dequant8<DType::kIQ4_XS>(const uint8_t* blk, int g, float (&y)[8]) {
  const float d = half_bits(load_u16(blk));
  const int j = g / 4;
  const int ls = ((blk[4 + j / 2] >> (4 * (j % 2))) & 0xf) | ((load_u16(blk + 2) >> (2 * j)) & 3) << 4;
  const float dl = mul_rn(d, static_cast<float>(ls - 32));
  STRATA_QD_UNROLL
  for (int i = 0; i < 8; ++i) {
    const int l = 8 * (g % 4) + i;
    y[i] = mul_rn(dl, iq4_value((blk[8 + 16 * j + l % 16] >> (4 * (l / 16))) & 0xf));
  }
}

STRATA_QD bool dtype_is_quantized_dev(DType dt) {
  return dt == DType::kQ8_0 || dt == DType::kQ4_0 || (dt >= DType::kQ4_1 && dt <= DType::kIQ4_XS);
}

// Runtime-dtype form: elements 8 * group .. + 7 of a row of blocks (group counted from the row's start).
STRATA_QD void dequant8_any(const void* p, DType dt, int64_t group, float (&y)[8]) {
  const auto* base = static_cast<const uint8_t*>(p);
#define STRATA_DQ8(T, BYTES, GROUPS) \
  case T: return dequant8<T>(base + (group / (GROUPS)) * (BYTES), static_cast<int>(group % (GROUPS)), y);
  switch (dt) {
    STRATA_DQ8(DType::kQ8_0, 34, 4)
    STRATA_DQ8(DType::kQ4_0, 18, 4)
    STRATA_DQ8(DType::kQ4_1, 20, 4)
    STRATA_DQ8(DType::kQ5_0, 22, 4)
    STRATA_DQ8(DType::kQ5_1, 24, 4)
    STRATA_DQ8(DType::kIQ4_NL, 18, 4)
    STRATA_DQ8(DType::kQ2_K, 84, 32)
    STRATA_DQ8(DType::kQ3_K, 110, 32)
    STRATA_DQ8(DType::kQ4_K, 144, 32)
    STRATA_DQ8(DType::kQ5_K, 176, 32)
    STRATA_DQ8(DType::kQ6_K, 210, 32)
    STRATA_DQ8(DType::kIQ4_XS, 136, 32)
    default:
      STRATA_QD_UNROLL
      for (int i = 0; i < 8; ++i) y[i] = 0.f;
  }
#undef STRATA_DQ8
}

// ---- the GEMV's chunks --------------------------------------------------------------------------

// Bytes and elements per block, and the alignment every block keeps in a 16-byte aligned tensor.
template <DType T>
struct QType;
template <> struct QType<DType::kQ8_0> { static constexpr int kBytes = 34, kElems = 32, kAlign = 2; };
template <> struct QType<DType::kQ4_0> { static constexpr int kBytes = 18, kElems = 32, kAlign = 2; };
template <> struct QType<DType::kQ4_1> { static constexpr int kBytes = 20, kElems = 32, kAlign = 4; };
template <> struct QType<DType::kQ5_0> { static constexpr int kBytes = 22, kElems = 32, kAlign = 2; };
template <> struct QType<DType::kQ5_1> { static constexpr int kBytes = 24, kElems = 32, kAlign = 8; };
template <> struct QType<DType::kIQ4_NL> { static constexpr int kBytes = 18, kElems = 32, kAlign = 2; };
template <> struct QType<DType::kQ2_K> { static constexpr int kBytes = 84, kElems = 256, kAlign = 4; };
template <> struct QType<DType::kQ3_K> { static constexpr int kBytes = 110, kElems = 256, kAlign = 2; };
template <> struct QType<DType::kQ4_K> { static constexpr int kBytes = 144, kElems = 256, kAlign = 16; };
template <> struct QType<DType::kQ5_K> { static constexpr int kBytes = 176, kElems = 256, kAlign = 16; };
template <> struct QType<DType::kQ6_K> { static constexpr int kBytes = 210, kElems = 256, kAlign = 2; };
template <> struct QType<DType::kIQ4_XS> { static constexpr int kBytes = 136, kElems = 256, kAlign = 8; };

// One chunk's codes (4 per word, element order) and its scales/offsets per 16-element half.
struct Chunk {
  uint32_t q[8];
  float a0, a1, b0, b1;
};

constexpr uint32_t kNib = 0x0f0f0f0fu;

// The 16 nibble bytes at qs as 8 code words: low nibbles are elements 0..15, high ones 16..31.
template <int A>
STRATA_QD void nibble_codes(const uint8_t* qs, uint32_t (&q)[8]) {
  STRATA_QD_UNROLL
  for (int i = 0; i < 4; ++i) {
    const uint32_t w = load_u32<A>(qs + 4 * i);
    q[i] = w & kNib;
    q[4 + i] = w >> 4 & kNib;
  }
}

STRATA_QD void set_scales(Chunk& c, float a, float b) { c.a0 = c.a1 = a, c.b0 = c.b1 = b; }

// Chunk `sub` (0 for the 32-element types, 0..7 for the 256-element ones) of the block at blk.
template <DType T>
STRATA_QD Chunk decode_chunk(const uint8_t* blk, int sub) {
  constexpr int A = QType<T>::kAlign;
  Chunk c;
  if constexpr (T == DType::kQ8_0) {
    STRATA_QD_UNROLL
    for (int i = 0; i < 8; ++i) c.q[i] = load_u32<A>(blk + 2 + 4 * i);
    set_scales(c, half_bits(load_u16(blk)), 0.f);
  } else if constexpr (T == DType::kQ4_0) {
    nibble_codes<A>(blk + 2, c.q);
    const float d = half_bits(load_u16(blk));
    set_scales(c, d, -8.f * d);
  } else if constexpr (T == DType::kQ4_1) {
    nibble_codes<A>(blk + 4, c.q);
    set_scales(c, half_bits(load_u16(blk)), half_bits(load_u16(blk + 2)));
  } else if constexpr (T == DType::kQ5_0 || T == DType::kQ5_1) {
    constexpr int kQh = T == DType::kQ5_0 ? 2 : 4;
    nibble_codes<A>(blk + kQh + 4, c.q);
    const uint32_t qh = load_u32<A>(blk + kQh);
    STRATA_QD_UNROLL
    for (int i = 0; i < 8; ++i) c.q[i] |= spread4_bit4(qh >> (4 * i));
    const float d = half_bits(load_u16(blk));
    if constexpr (T == DType::kQ5_0) set_scales(c, d, -16.f * d);
    else set_scales(c, d, half_bits(load_u16(blk + 2)));
  } else if constexpr (T == DType::kIQ4_NL) {
    nibble_codes<A>(blk + 2, c.q);
    STRATA_QD_UNROLL
    for (int i = 0; i < 8; ++i) c.q[i] = iq4_lookup(c.q[i]);
    set_scales(c, half_bits(load_u16(blk)), 0.f);
  } else if constexpr (T == DType::kIQ4_XS) {
    nibble_codes<A>(blk + 8 + 16 * sub, c.q);
    STRATA_QD_UNROLL
    for (int i = 0; i < 8; ++i) c.q[i] = iq4_lookup(c.q[i]);
    const int ls = ((blk[4 + sub / 2] >> (4 * (sub % 2))) & 0xf) | ((load_u16(blk + 2) >> (2 * sub)) & 3) << 4;
    set_scales(c, half_bits(load_u16(blk)) * static_cast<float>(ls - 32), 0.f);
  } else if constexpr (T == DType::kQ4_K || T == DType::kQ5_K) {
    constexpr bool kFive = T == DType::kQ5_K;
    const uint8_t* qs = blk + (kFive ? 48 : 16) + 32 * (sub / 2);
    const int shift = 4 * (sub % 2);
    STRATA_QD_UNROLL
    for (int i = 0; i < 8; ++i) {
      c.q[i] = load_u32<A>(qs + 4 * i) >> shift & kNib;
      if constexpr (kFive) c.q[i] |= (load_u32<A>(blk + 16 + 4 * i) >> sub & 0x01010101u) << 4;
    }
    int sc, m;
    k_scale_min_dev(blk + 4, sub, sc, m);
    const float d = half_bits(load_u16(blk)), dmin = half_bits(load_u16(blk + 2));
    set_scales(c, d * static_cast<float>(sc), -dmin * static_cast<float>(m));
  } else if constexpr (T == DType::kQ6_K) {
    const int h = sub / 4, k = sub % 4;
    const uint8_t* ql = blk + 64 * h + 32 * (k % 2);
    const uint8_t* qh = blk + 128 + 32 * h;
    STRATA_QD_UNROLL
    for (int i = 0; i < 8; ++i)
      c.q[i] = (load_u32<A>(ql + 4 * i) >> (4 * (k / 2)) & kNib) |
               (load_u32<A>(qh + 4 * i) >> (2 * k) & 0x03030303u) << 4;
    const float d = half_bits(load_u16(blk + 208));
    const float s0 = d * static_cast<float>(static_cast<int8_t>(blk[192 + 2 * sub]));
    const float s1 = d * static_cast<float>(static_cast<int8_t>(blk[193 + 2 * sub]));
    c.a0 = s0, c.a1 = s1, c.b0 = -32.f * s0, c.b1 = -32.f * s1;
  } else if constexpr (T == DType::kQ3_K) {
    const int g = sub / 4, k = sub % 4;
    STRATA_QD_UNROLL
    for (int i = 0; i < 8; ++i)
      c.q[i] = (load_u32<A>(blk + 32 + 32 * g + 4 * i) >> (2 * k) & 0x03030303u) |
               (load_u32<A>(blk + 4 * i) >> (4 * g + k) & 0x01010101u) << 2;
    const float d = half_bits(load_u16(blk + 108));
    const float s0 = d * static_cast<float>(q3k_scale(blk + 96, 2 * sub));
    const float s1 = d * static_cast<float>(q3k_scale(blk + 96, 2 * sub + 1));
    c.a0 = s0, c.a1 = s1, c.b0 = -4.f * s0, c.b1 = -4.f * s1;
  } else {
    static_assert(T == DType::kQ2_K, "every GGUF block type has a decoder");
    const int g = sub / 4, k = sub % 4;
    STRATA_QD_UNROLL
    for (int i = 0; i < 8; ++i) c.q[i] = load_u32<A>(blk + 16 + 32 * g + 4 * i) >> (2 * k) & 0x03030303u;
    const float d = half_bits(load_u16(blk + 80)), dmin = half_bits(load_u16(blk + 82));
    const int sc0 = blk[2 * sub], sc1 = blk[2 * sub + 1];
    c.a0 = d * static_cast<float>(sc0 & 0xf), c.a1 = d * static_cast<float>(sc1 & 0xf);
    c.b0 = -dmin * static_cast<float>(sc0 >> 4), c.b1 = -dmin * static_cast<float>(sc1 >> 4);
  }
  return c;
}

}  // namespace strata::cuda

#undef STRATA_QD
#undef STRATA_QD_UNROLL
