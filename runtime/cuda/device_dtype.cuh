// runtime/cuda/device_dtype.cuh: scalar and 8-wide loads/stores of f32, f16, bf16 and q8_0/q4_0 elements
// in device code, and warp reductions. Shared by every kernel file of runtime/cuda/.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "runtime/dtype.h"

namespace strata::cuda {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Runtime-dtype element access for the small ops (the branch is uniform across the grid).
__device__ __forceinline__ float load_elem(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::kF16: return __half2float(static_cast<const __half*>(p)[i]);
    case DType::kQ8_0: {
      const auto* b = static_cast<const BlockQ8_0*>(p) + i / kQBlock;
      return __half2float(__ushort_as_half(b->scale)) * static_cast<float>(b->q[i % kQBlock]);
    }
    case DType::kQ4_0: {
      const auto* b = static_cast<const BlockQ4_0*>(p) + i / kQBlock;
      const int j = static_cast<int>(i % kQBlock);
      const int nib = j < 16 ? (b->q[j] & 0xf) : (b->q[j - 16] >> 4);
      return __half2float(__ushort_as_half(b->scale)) * static_cast<float>(nib - 8);
    }
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ void store_elem(void* p, DType dt, int64_t i, float v) {
  switch (dt) {
    case DType::kBF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    case DType::kF16: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    default: static_cast<float*>(p)[i] = v; break;
  }
}

// Rounds v the way a store of dtype dt would (so fused kernels see what an unfused pair would).
__device__ __forceinline__ float round_to(DType dt, float v) {
  switch (dt) {
    case DType::kBF16: return __bfloat162float(__float2bfloat16_rn(v));
    case DType::kF16: return __half2float(__float2half_rn(v));
    default: return v;
  }
}

// Eight consecutive elements starting at an 8-aligned index (16-bit types: one 16-byte load; f32: two).
__device__ __forceinline__ void load8(const __nv_bfloat16* p, float (&v)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const auto* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void load8(const __half* p, float (&v)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const auto* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  const float4 a = *reinterpret_cast<const float4*>(p);
  const float4 b = *reinterpret_cast<const float4*>(p + 4);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

// Eight floats rounded to bf16 into one 16-byte store at an 8-aligned index.
__device__ __forceinline__ void store8(__nv_bfloat16* p, const float (&v)[8]) {
  uint4 raw;
  auto* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = raw;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

}  // namespace strata::cuda
