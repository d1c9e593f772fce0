// runtime/cuda/kv_fp8.cuh: device access to fp8 (e4m3) KV cache rows: head_dim codes, then the row's f32
// scale (the layout of runtime/fp8_kv.h). Kernels templated on the cache element take KvFp8 for such a cache:
// kv_row_stride gives its row size and load_kv8 dequantizes on load, so their inner loops stay as they are.
#pragma once
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "runtime/cuda/device_dtype.cuh"

namespace strata::cuda {

// One byte of an fp8 KV row (a distinct type so templates pick the loads below).
struct KvFp8 {
  uint8_t code;
};
static_assert(sizeof(KvFp8) == 1, "fp8 KV rows are bytes");

// Elements (of TKV) from one cache row to the next: head_dim, plus the 4 scale bytes of an fp8 row.
template <typename TKV>
__host__ __device__ constexpr int kv_row_stride(int head_dim) {
  return head_dim;
}
template <>
__host__ __device__ constexpr int kv_row_stride<KvFp8>(int head_dim) {
  return head_dim + 4;
}

// Elements c8 .. c8 + 7 (c8 a multiple of 8) of the cache row starting at `row`, as floats.
template <typename TKV>
__device__ __forceinline__ void load_kv8(const TKV* row, int c8, int /*head_dim*/, float (&v)[8]) {
  load8(row + c8, v);
}

// e4m3 -> f16 is exact (every e4m3 value is an f16), so code * scale rounds once, as on the CPU.
__device__ __forceinline__ float2 e4m3x2_to_float2(uint16_t two) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two), __NV_E4M3);
  return __half22float2(*reinterpret_cast<const __half2*>(&h));
}

__device__ __forceinline__ void load_kv8(const KvFp8* row, int c8, int head_dim, float (&v)[8]) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(row);
  const float scale = *reinterpret_cast<const float*>(bytes + head_dim);  // rows are 4-byte aligned
  const uint32_t w[2] = {*reinterpret_cast<const uint32_t*>(bytes + c8),
                         *reinterpret_cast<const uint32_t*>(bytes + c8 + 4)};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = e4m3x2_to_float2(static_cast<uint16_t>(w[i / 2] >> (16 * (i % 2))));
    v[2 * i] = f.x * scale;
    v[2 * i + 1] = f.y * scale;
  }
}

// Round to nearest even, saturating to +-448 (runtime/fp8_kv.h's f32_to_e4m3).
__device__ __forceinline__ uint8_t f32_to_e4m3(float x) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}

}  // namespace strata::cuda
