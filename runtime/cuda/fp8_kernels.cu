// runtime/cuda/fp8_kernels.cu: f8_e4m3_b128 dequantization and decode GEMV. The e4m3 bytes convert with
// the hardware's fp8 conversion (cuda_fp8.h), exact like the CPU's value table.
#include "runtime/cuda/fp8_kernels.h"

#include <cuda_fp8.h>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_dtype.cuh"
#include "runtime/error.h"
#include "runtime/quant_blocks.h"

namespace strata::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = 4;  // GEMV: output columns per thread block
constexpr int kMaxRows = 8;

__device__ __forceinline__ float e4m3(uint8_t b) {
  __nv_fp8_e4m3 v;
  v.__x = b;
  return static_cast<float>(v);
}

__global__ void convert_f8_kernel(const BlockF8B128* src, void* dst, DType dst_dt, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const BlockF8B128& b = src[i / kF8Block];
    store_elem(dst, dst_dt, i, b.scale * e4m3(b.q[i % kF8Block]));
  }
}

// Lane l of the warp owns bytes 4l..4l+3 of every 128-byte block of its column's row.
template <int M>
__global__ void gemv_f8_kernel(const void* x, DType x_dt, const BlockF8B128* w, const void* bias, DType bias_dt,
                               void* out, DType out_dt, int64_t n, int64_t k) {
  const int lane = threadIdx.x % 32;
  const int64_t col = blockIdx.x * int64_t{kWarps} + threadIdx.x / 32;
  if (col >= n) return;
  const int64_t blocks = k / kF8Block;
  const BlockF8B128* row = w + col * blocks;
  float acc[M] = {};
  for (int64_t b = 0; b < blocks; ++b) {
    uint32_t packed;
    memcpy(&packed, row[b].q + 4 * lane, 4);
    const float s = row[b].scale;
    float wv[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) wv[i] = s * e4m3(static_cast<uint8_t>(packed >> (8 * i)));
    const int64_t base = b * kF8Block + 4 * lane;
#pragma unroll
    for (int r = 0; r < M; ++r)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[r] += wv[i] * load_elem(x, x_dt, r * k + base + i);
  }
#pragma unroll
  for (int r = 0; r < M; ++r) {
    const float total = warp_sum(acc[r]);
    if (lane == 0)
      store_elem(out, out_dt, r * n + col, total + (bias != nullptr ? load_elem(bias, bias_dt, col) : 0.f));
  }
}

// One warp per (row, 128-column block); lane l owns columns 4l..4l+3 of the block.
__global__ void quantize_e4m3_kernel(const void* x, DType x_dt, uint8_t* codes, float* scales, int64_t rows,
                                     int64_t k) {
  const int lane = threadIdx.x % 32;
  const int64_t blocks = k / kF8Block;
  const int64_t item = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32;
  if (item >= rows * blocks) return;
  const int64_t r = item / blocks, b = item % blocks;
  const int64_t base = r * k + b * kF8Block + 4 * lane;
  float v[4];
  if (x_dt == DType::kBF16) {  // the usual activations: one 8-byte load
    const uint2 raw = *reinterpret_cast<const uint2*>(static_cast<const __nv_bfloat16*>(x) + base);
    const auto* h = reinterpret_cast<const __nv_bfloat16*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = __bfloat162float(h[i]);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = load_elem(x, x_dt, base + i);
  }
  float amax = 0.f;
#pragma unroll
  for (int i = 0; i < 4; ++i) amax = fmaxf(amax, fabsf(v[i]));
  amax = warp_max(amax);
  float scale = amax / 448.f;
  if (!(scale > 0.f)) scale = 1.f;  // an all-zero block (or one whose scale underflows)
  uint32_t packed = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i)
    packed |= static_cast<uint32_t>(__nv_cvt_float_to_fp8(v[i] / scale, __NV_SATFINITE, __NV_E4M3)) << (8 * i);
  *reinterpret_cast<uint32_t*>(codes + base) = packed;
  if (lane == 0) scales[b * rows + r] = scale;
}

// One warp per 132-byte block of the weight; lane l moves bytes 4l..4l+3 of its codes.
__global__ void repack_f8_kernel(const BlockF8B128* w, uint8_t* codes, float* scales, int64_t n, int64_t blocks) {
  const int lane = threadIdx.x % 32;
  const int64_t item = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32;
  if (item >= n * blocks) return;
  const BlockF8B128& blk = w[item];
  reinterpret_cast<uint32_t*>(codes + item * kF8Block)[lane] = *reinterpret_cast<const uint32_t*>(blk.q + 4 * lane);
  if (lane == 0) scales[(item % blocks) * n + item / blocks] = blk.scale;
}

unsigned warp_grid(int64_t warps) { return static_cast<unsigned>((warps * 32 + kThreads - 1) / kThreads); }

template <int M>
void launch_rows(const void* x, DType x_dt, const void* w, const void* bias, DType bias_dt, void* out, DType out_dt,
                 int64_t n, int64_t k, const Launch& stream) {
  const dim3 grid(static_cast<unsigned>((n + kWarps - 1) / kWarps));
  gemv_f8_kernel<M><<<grid, kWarps * 32, 0, stream.stream>>>(x, x_dt, static_cast<const BlockF8B128*>(w), bias,
                                                             bias_dt, out, out_dt, n, k);
}

}  // namespace

void launch_quantize_e4m3_b128(const void* x, DType x_dt, uint8_t* codes, float* scales, int64_t rows, int64_t k,
                               const Launch& stream) {
  STRATA_CHECK(k % kF8Block == 0 && reinterpret_cast<uintptr_t>(codes) % 4 == 0 &&
                   (x_dt != DType::kBF16 || reinterpret_cast<uintptr_t>(x) % 8 == 0),
               "quantize e4m3: k = ", k, " must be a multiple of 128 and the buffers aligned");
  if (rows == 0) return;
  quantize_e4m3_kernel<<<warp_grid(rows * (k / kF8Block)), kThreads, 0, stream.stream>>>(x, x_dt, codes, scales,
                                                                                         rows, k);
  CHECK_LAUNCH();
}

void launch_repack_f8_b128(const void* w, uint8_t* codes, float* scales, int64_t n, int64_t k, const Launch& stream) {
  STRATA_CHECK(k % kF8Block == 0 && reinterpret_cast<uintptr_t>(w) % 4 == 0 &&
                   reinterpret_cast<uintptr_t>(codes) % 4 == 0,
               "repack f8_e4m3_b128: k = ", k, " must be a multiple of 128 and the buffers 4-byte aligned");
  if (n == 0) return;
  repack_f8_kernel<<<warp_grid(n * (k / kF8Block)), kThreads, 0, stream.stream>>>(
      static_cast<const BlockF8B128*>(w), codes, scales, n, k / kF8Block);
  CHECK_LAUNCH();
}

void launch_convert_f8(const void* src, void* dst, DType dst_dt, int64_t n, const Launch& stream) {
  if (n == 0) return;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 65535);
  convert_f8_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream.stream>>>(
      static_cast<const BlockF8B128*>(src), dst, dst_dt, n);
  CHECK_LAUNCH();
}

void launch_gemv_f8(const void* x, DType x_dt, const void* w, const void* bias, DType bias_dt, void* out,
                    DType out_dt, int64_t rows, int64_t n, int64_t k, const Launch& stream) {
  STRATA_CHECK(k % kF8Block == 0 && rows >= 1 && rows <= kMaxRows, "gemv f8_e4m3_b128: k = ", k,
               " must be a multiple of 128 and rows = ", rows, " in 1..8");
  switch (rows) {
    case 1: launch_rows<1>(x, x_dt, w, bias, bias_dt, out, out_dt, n, k, stream); break;
    case 2: launch_rows<2>(x, x_dt, w, bias, bias_dt, out, out_dt, n, k, stream); break;
    case 3: launch_rows<3>(x, x_dt, w, bias, bias_dt, out, out_dt, n, k, stream); break;
    case 4: launch_rows<4>(x, x_dt, w, bias, bias_dt, out, out_dt, n, k, stream); break;
    case 5: launch_rows<5>(x, x_dt, w, bias, bias_dt, out, out_dt, n, k, stream); break;
    case 6: launch_rows<6>(x, x_dt, w, bias, bias_dt, out, out_dt, n, k, stream); break;
    case 7: launch_rows<7>(x, x_dt, w, bias, bias_dt, out, out_dt, n, k, stream); break;
    default: launch_rows<8>(x, x_dt, w, bias, bias_dt, out, out_dt, n, k, stream); break;
  }
  CHECK_LAUNCH();
}

}  // namespace strata::cuda
