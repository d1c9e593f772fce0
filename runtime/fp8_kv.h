// runtime/fp8_kv.h: the FP8 (e4m3) KV cache row format and the scalar e4m3 codec behind it.
//
// An fp8 KV cache tensor (dtype f8_e4m3) is [blocks, block_size, Hkv, head_dim + 4] bytes: each row (one
// token, one KV head) is head_dim e4m3 codes followed by the row's own scale, a little-endian f32:
// x[i] ~= e4m3(code[i]) * scale with scale = max_i |x[i]| / 448 (448: e4m3's largest finite value), so the
// row's largest element maps to +-448 and no calibration is needed. The scale is f32, not f16: it costs 2
// bytes more per row (3% of a 128-wide row) but keeps every row 4-byte aligned (the GPU loads the codes as
// 32-bit words) and represents amax / 448 exactly for any row f16 could not (amax / 448 under f16's 6e-5
// normal range loses bits; tiny rows flush to zero). K and V rows use the same format.
#pragma once
#include <cstdint>
#include <cstring>

namespace strata {

constexpr float kE4m3Max = 448.f;
// Bytes of one fp8 KV row after its codes: the f32 scale.
constexpr int64_t kFp8KvScaleBytes = 4;

// e4m3 ("FN": no infinities, one NaN pattern per sign, S.1111.111): bias 7, 3 mantissa bits,
// subnormals m * 2^-9.
inline float e4m3_to_f32(uint8_t code) {
  const uint32_t sign = static_cast<uint32_t>(code & 0x80u) << 24;
  const uint32_t exp = (code >> 3) & 0xfu, man = code & 0x7u;
  uint32_t bits;
  if (exp == 0xf && man == 0x7) {
    bits = sign | 0x7fc00000u;  // NaN
  } else if (exp == 0) {
    float f = static_cast<float>(man) * (1.f / 512.f);  // exact: man * 2^-9
    std::memcpy(&bits, &f, 4);
    bits |= sign;
  } else {
    bits = sign | (exp + 120u) << 23 | man << 20;  // 2^(exp-7) (1 + man/8)
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; magnitudes past 448 saturate to 448 (as CUDA's __NV_SATFINITE); NaN stays NaN.
inline uint8_t f32_to_e4m3(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint8_t sign = static_cast<uint8_t>((x >> 24) & 0x80u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint8_t>(sign | 0x7fu);
  if (abs >= 0x43e00000u) return static_cast<uint8_t>(sign | 0x7eu);  // >= 448 (and inf)
  if (abs < 0x3c800000u) {  // below 2^-6: a subnormal step of 2^-9
    float a;
    std::memcpy(&a, &abs, 4);
    const float scaled = a * 512.f;  // exact
    auto q = static_cast<uint32_t>(scaled);
    const float rem = scaled - static_cast<float>(q);
    if (rem > 0.5f || (rem == 0.5f && (q & 1u))) ++q;  // q == 8 is 2^-6, the smallest normal: still right
    return static_cast<uint8_t>(sign | q);
  }
  uint32_t code = ((abs >> 23) - 120u) << 3 | ((abs >> 20) & 0x7u);
  const uint32_t rem = abs & 0xfffffu;
  if (rem > 0x80000u || (rem == 0x80000u && (code & 1u))) ++code;  // a carry moves into the exponent
  if (code > 0x7eu) code = 0x7eu;
  return static_cast<uint8_t>(sign | code);
}

// Bytes of one fp8 row of head_dim elements (codes + scale).
constexpr int64_t fp8_kv_row_bytes(int64_t head_dim) { return head_dim + kFp8KvScaleBytes; }

// Quantizes x[head_dim] into one fp8 row (codes, then the f32 scale).
void fp8_kv_encode_row(const float* x, int64_t head_dim, uint8_t* row);
// Dequantizes one fp8 row into out[head_dim].
void fp8_kv_decode_row(const uint8_t* row, int64_t head_dim, float* out);

}  // namespace strata
