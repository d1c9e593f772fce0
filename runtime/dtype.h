// runtime/dtype.h: element types of tensors, including GGUF block-quantized ones, and the scalar
// conversions (f16, bf16) every backend shares.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace strata {

// The block-quantized types are GGUF's (ggml's) weight types, plus f8_e4m3_b128 (FP8 checkpoints: 128 e4m3
// bytes and one f32 scale); their block layouts are in runtime/quant_blocks.h except q8_0/q4_0's, which the
// CUDA kernels also read, below. f8_e4m3 (the raw FP8 element) and i64 occur in safetensors files of
// quantized checkpoints, which the Hugging Face reader transcodes (runtime/formats/hf_quant.h): no weight
// keeps them. f8_e4m3 is also the fp8 KV cache's element (rows of codes and a scale: runtime/fp8_kv.h).
enum class DType : uint8_t {
  kF32, kF16, kBF16, kI8, kI32, kQ8_0, kQ4_0,
  kQ4_1, kQ5_0, kQ5_1, kQ2_K, kQ3_K, kQ4_K, kQ5_K, kQ6_K, kIQ4_NL, kIQ4_XS,
  kF8_E4M3, kF8_B128, kI64,
};

// The legacy types (q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl) store kQBlock elements per block; the K-quants
// and iq4_xs kQKBlock (dtype_block_elems says which). q8_0 = f16 scale + 32 x int8; q4_0 = f16 scale +
// 16 bytes of packed nibbles (low nibbles are elements 0..15, high 16..31).
constexpr int64_t kQBlock = 32;
constexpr int64_t kQKBlock = 256;
struct BlockQ8_0 {
  uint16_t scale;  // f16 bits
  int8_t q[kQBlock];
};
struct BlockQ4_0 {
  uint16_t scale;  // f16 bits
  uint8_t q[kQBlock / 2];
};
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18, "GGUF block layouts");

// Elements per storage block: 1 for plain types, 32 or 256 for quantized ones.
int64_t dtype_block_elems(DType dtype);
// Bytes per storage block.
int64_t dtype_block_bytes(DType dtype);
// Bytes needed for `elems` elements; elems must be a multiple of the block size (checked).
int64_t dtype_bytes(DType dtype, int64_t elems);
bool dtype_is_quantized(DType dtype);
const char* dtype_name(DType dtype);
// Every GGUF block-quantized dtype (what GGUF files hold and make-model writes; f8_e4m3_b128 is not one),
// and their names as one "q8_0, q4_0, q4_1, ..." list for messages.
std::vector<DType> quantized_dtypes();
std::string quantized_dtype_names();
// Parses "f32", "f16", "bf16", "i8", "i32" and the quantized names dtype_name gives ("q4_k", "iq4_xs", ...;
// also "float16", "bfloat16" and GGUF's upper-case spellings); throws otherwise.
DType dtype_from_name(const std::string& name);

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      uint32_t m = man;
      do {
        ++e;
        m <<= 1;
      } while ((m & 0x400u) == 0);
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (m & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | man << 13;
  } else {
    bits = sign | (exp + 112) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_f16(float f) {  // round to nearest even
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow to inf
  if (abs < 0x38800000u) {  // subnormal or zero in f16
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t e = abs >> 23;
    const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;
    uint32_t half = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t h = ((abs - 0x38000000u) >> 13);
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

inline float bf16_to_f32(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

}  // namespace strata
