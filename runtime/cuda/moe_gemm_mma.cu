// runtime/cuda/moe_gemm_mma.cu: the grouped GEMM of a mixture-of-experts step with many rows per expert
// (moe_kernels.h): every expert's projection in one launch on the tensor cores (mma.sync m16n8k16, f32
// accumulation). Block (x, y) takes slice y of the table (up to 64 consecutive rows of x routed to one
// expert, and that expert's weights) and 128 output columns x, 4 warps of 32 rows x 64 columns; K goes in
// steps of 32 through a 3-stage cp.async pipeline in shared memory, x's rows as mma's A operand and the
// weight's rows as its B operand (both ldmatrix from rows padded to 80 bytes: no bank conflicts). The
// SwiGLU form stages 64 gate rows and the same 64 up rows, so each warp holds a feature's gate and up sums
// in matching registers and writes silu(gate) * up: gate, up and the activation in one launch, and the
// [rows, 2F] product never goes to memory.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/mma.cuh"
#include "runtime/cuda/moe_kernels.h"
#include "runtime/cuda/pdl.cuh"

namespace strata::cuda {
namespace {

constexpr int kTileM = kGroupedMmaRows;  // rows of x a block
constexpr int kTileN = 128;              // weight rows a block stages (64 gate + 64 up in the SwiGLU form)
constexpr int kTileK = 32;
constexpr int kStride = kTileK + 8;      // elements per staged row: 80 bytes, 8 rows on distinct banks
constexpr int kStages = 3;
constexpr int kThreads = 128;            // 2 x 2 warps of 32 rows x 64 staged weight rows

// Two f32 values as a pair of T (the lower column in the low half) at p (4-byte aligned).
template <typename T>
__device__ __forceinline__ void store_pair(T* p, float lo, float hi) {
  if constexpr (std::is_same_v<T, __half>) *reinterpret_cast<__half2*>(p) = __floats2half2_rn(lo, hi);
  else *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(lo, hi);
}

template <typename T, bool kGlu>
__global__ __launch_bounds__(kThreads) void grouped_mma_kernel(const T* __restrict__ x,
                                                               const ExpertSlice* __restrict__ table,
                                                               T* __restrict__ out, int64_t n, int64_t k) {
  __shared__ __align__(16) T xs[kStages][kTileM][kStride];
  __shared__ __align__(16) T ws[kStages][kTileN][kStride];
  // The table and the weights were complete before the previous kernel started (pdl.cuh): read before the wait.
  const ExpertSlice e = table[blockIdx.y];
  const int rows = e.rows;
  if (rows <= 0) return;  // the whole block
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, wm = warp / 2, wn = warp % 2;
  // Plain: weight rows [n0, n0 + 128). SwiGLU: features [n0, n0 + 64), staged rows 0-63 of the gate, 64-127 of up.
  const int64_t n0 = int64_t{blockIdx.x} * (kGlu ? kTileN / 2 : kTileN);
  const T* w0 = static_cast<const T*>(e.w0);
  const T* w1 = static_cast<const T*>(e.w1);
  const T* xe = x + e.in_row * k;
  const int64_t ktiles = k / kTileK;

  // Each row is 4 pieces of 16 bytes a stage; rows past n or past the slice are zero-filled.
  const auto load_w = [&](int64_t kt, int slot) {
#pragma unroll
    for (int j = 0; j < kTileN * 4 / kThreads; ++j) {
      const int i = tid + kThreads * j, r = i / 4, piece = i % 4;
      const int64_t row = kGlu ? n0 + r % (kTileN / 2) : n0 + r;
      const T* base = kGlu && r >= kTileN / 2 ? w1 : w0;
      const bool valid = row < n;
      cp_async16(&ws[slot][r][piece * 8], valid ? base + row * k + kt * kTileK + piece * 8 : w0, valid);
    }
  };
  const auto load_x = [&](int64_t kt, int slot) {
#pragma unroll
    for (int j = 0; j < kTileM * 4 / kThreads; ++j) {
      const int i = tid + kThreads * j, t = i / 4, piece = i % 4;
      const bool valid = t < rows;
      cp_async16(&xs[slot][t][piece * 8], valid ? xe + t * k + kt * kTileK + piece * 8 : xe, valid);
    }
  };

  for (int s = 0; s < kStages - 1; ++s)
    if (s < ktiles) load_w(s, s);
  pdl_wait();
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ktiles) load_x(s, s);
    cp_async_commit();
  }

  // The first staged weight row of the warp's n8 tile pair p (tiles 2p, 2p + 1): plain, 64 rows a warp;
  // SwiGLU, pairs 0-1 its 32 gate rows and pairs 2-3 the same features' up rows.
  const auto pair_row = [&](int p) {
    return kGlu ? (p < 2 ? wn * 32 + 16 * p : kTileN / 2 + wn * 32 + 16 * (p - 2)) : wn * 64 + 16 * p;
  };
  float acc[2][8][4] = {};  // [m16 tile][n8 tile][mma D register]
  for (int64_t kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage kt is in, and every warp is done with the slot refilled next
    const int64_t next = kt + kStages - 1;
    if (next < ktiles) {
      load_w(next, static_cast<int>(next % kStages));
      load_x(next, static_cast<int>(next % kStages));
    }
    cp_async_commit();
    const int slot = static_cast<int>(kt % kStages);
#pragma unroll
    for (int ks = 0; ks < kTileK / 16; ++ks) {
      uint32_t a[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
        ldmatrix_x4(a[mt], &xs[slot][wm * 32 + mt * 16 + lane % 8 + 8 * (lane / 8 % 2)][ks * 16 + 8 * (lane / 16)]);
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        uint32_t b[4];  // tile 2p: k 0-7, 8-15; tile 2p + 1: k 0-7, 8-15
        ldmatrix_x4(b, &ws[slot][pair_row(p) + lane % 8 + 8 * (lane / 16)][ks * 16 + 8 * (lane / 8 % 2)]);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          mma_16816_t<T>(acc[mt][2 * p], a[mt], b[0], b[1]);
          mma_16816_t<T>(acc[mt][2 * p + 1], a[mt], b[2], b[3]);
        }
      }
    }
  }
  cp_async_wait<0>();
  pdl_trigger();

  const int g = lane / 4, c = 2 * (lane % 4);
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int t = wm * 32 + mt * 16 + g + 8 * h;
      if (t >= rows) continue;
      T* orow = out + (e.out_row + t) * n;
      if constexpr (kGlu) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int64_t col = n0 + wn * 32 + 8 * j + c;
          if (col >= n) continue;
          const float g0 = acc[mt][j][2 * h], g1 = acc[mt][j][2 * h + 1];
          store_pair(orow + col, g0 / (1.f + __expf(-g0)) * acc[mt][j + 4][2 * h],
                     g1 / (1.f + __expf(-g1)) * acc[mt][j + 4][2 * h + 1]);
        }
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const int64_t col = n0 + wn * 64 + 8 * j + c;
          if (col < n) store_pair(orow + col, acc[mt][j][2 * h], acc[mt][j][2 * h + 1]);
        }
      }
    }
}

template <typename T>
void launch_typed(const void* x, const ExpertSlice* table, int64_t slices, bool swiglu, void* out, int64_t n,
                  int64_t k, const Launch& stream) {
  const int64_t cols = swiglu ? kTileN / 2 : kTileN;
  const dim3 grid(static_cast<unsigned>((n + cols - 1) / cols), static_cast<unsigned>(slices));
  if (swiglu)
    launch_pdl(grouped_mma_kernel<T, true>, grid, dim3(kThreads), 0, stream, static_cast<const T*>(x), table,
               static_cast<T*>(out), n, k);
  else
    launch_pdl(grouped_mma_kernel<T, false>, grid, dim3(kThreads), 0, stream, static_cast<const T*>(x), table,
               static_cast<T*>(out), n, k);
}

}  // namespace

bool grouped_mma_supports(DType dt, int64_t n, int64_t k) {
  return (dt == DType::kBF16 || dt == DType::kF16) && n > 0 && n % 8 == 0 && k > 0 && k % kTileK == 0;
}

void launch_grouped_mma(const void* x, const ExpertSlice* table, int64_t slices, DType dt, bool swiglu, void* out,
                        int64_t n, int64_t k, const Launch& stream) {
  STRATA_CHECK(grouped_mma_supports(dt, n, k) && slices <= 65535, "launch_grouped_mma: ", dtype_name(dt), " [", n,
               ", ", k, "] over ", slices, " slices is outside what the kernel takes");
  if (slices == 0) return;
  if (dt == DType::kF16) launch_typed<__half>(x, table, slices, swiglu, out, n, k, stream);
  else launch_typed<__nv_bfloat16>(x, table, slices, swiglu, out, n, k, stream);
  CHECK_LAUNCH();
}

}  // namespace strata::cuda
