// runtime/cuda/rope.cuh: the rope pair update in device code, shared by the rope kernels
// (elementwise_kernels.cu) and the decode attention that folds rope in (attention_decode_warps.cu), so
// both round the same way.
#pragma once

namespace strata::cuda {

// (x0, x1) rotated by the angle whose sine and cosine are sn and cs.
__device__ __forceinline__ void rotate_pair(float sn, float cs, float& x0, float& x1) {
  const float y0 = x0 * cs - x1 * sn;
  x1 = x0 * sn + x1 * cs;
  x0 = y0;
}

// (x0, x1) rotated by angle (position * inverse frequency).
__device__ __forceinline__ void rotate_pair(float angle, float& x0, float& x1) {
  float sn, cs;
  sincosf(angle, &sn, &cs);
  rotate_pair(sn, cs, x0, x1);
}

}  // namespace strata::cuda
