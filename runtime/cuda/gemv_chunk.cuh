// runtime/cuda/gemv_chunk.cuh: the weight-streaming loads of the GEMV kernels (gemv_kernels.cu, moe_gemv.cu):
// 8 weights of f32, f16 or bf16 as raw 16-byte chunks loaded first (several of them, evict-first so the
// activations stay in L1/L2), then converted, so all of a lane's loads are issued before the first multiply.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace strata::cuda {

template <typename TW>
struct RawChunk {
  uint4 r[sizeof(TW) == 4 ? 2 : 1];
};

template <typename TW>
__device__ __forceinline__ void load_raw(const TW* p, RawChunk<TW>& c) {
  const uint4* q = reinterpret_cast<const uint4*>(p);
  c.r[0] = __ldcs(q);
  if constexpr (sizeof(TW) == 4) c.r[1] = __ldcs(q + 1);
}

template <typename TW>
__device__ __forceinline__ void decode_raw(const RawChunk<TW>& c, float (&v)[8]) {
  if constexpr (sizeof(TW) == 4) {
    const float* f = reinterpret_cast<const float*>(c.r);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = f[i];
  } else if constexpr (std::is_same_v<TW, __half>) {
    const auto* h = reinterpret_cast<const __half2*>(c.r);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(h[i]);
      v[2 * i] = f.x, v[2 * i + 1] = f.y;
    }
  } else {
    const auto* h = reinterpret_cast<const __nv_bfloat162*>(c.r);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(h[i]);
      v[2 * i] = f.x, v[2 * i + 1] = f.y;
    }
  }
}

}  // namespace strata::cuda
