// runtime/cuda/gemv_kernels.cu: matmul for few rows (decode, M <= 8): out[m, n] = x[m, :] . w[n, :].
// Memory-bound on the weights: warps own weight rows (two each), 16-byte streaming loads (evict-first, so x
// stays in L1/L2), several loads in flight per lane, a warp reduction per output. Quantized weights are
// gemv_quant.cu's. Not for M > 8: cuBLAS takes those (gemm.cpp). The SwiGLU variant multiplies by a fused [gate; up] weight and
// writes silu(gate) * up: each warp owns a gate row and its up row, so the pair's activation is formed in
// the epilogue and the [M, 2F] product never goes to memory.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_dtype.cuh"
#include "runtime/cuda/fp8_kernels.h"
#include "runtime/cuda/gemv_chunk.cuh"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/pdl.cuh"

namespace strata::cuda {
namespace {

constexpr int kWarps = 8;  // rows per block

template <int M>
__device__ __forceinline__ void finish_rows(float (&acc)[M], int64_t row, int64_t n, const void* bias,
                                            DType bias_dt, void* out, DType out_dt) {
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = warp_sum(acc[m]);
  if (threadIdx.x % 32 == 0) {
    const float b = bias != nullptr ? load_elem(bias, bias_dt, row) : 0.f;
#pragma unroll
    for (int m = 0; m < M; ++m) store_elem(out, out_dt, m * n + row, acc[m] + b);
  }
}

// acc[r][m] += the 8 decoded weights of chunk c of row r . the same 8 elements of row m of x.
template <typename TX, int M, int R>
__device__ __forceinline__ void accumulate_chunk(const TX* x, int64_t k, int64_t c, const float (&wv)[R][8],
                                                 float (&acc)[R][M]) {
#pragma unroll
  for (int m = 0; m < M; ++m) {
    float xv[8];
    load8(x + m * k + c * 8, xv);
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[r][m] = fmaf(wv[r][i], xv[i], acc[r][m]);
  }
}

// Plain weights with K % 8 == 0 (rows 16-byte aligned). Each warp owns R consecutive rows, so one load of
// an x chunk serves R rows (x re-reads from L1 were the limit at M = 8); R * U chunks of 16 bytes are in
// flight per lane before the first multiply. With KS > 1, KS warps of a block share each row group, each
// taking every KS-th group of 32 chunks, and add their sums through shared memory: a matrix with few rows
// (4096 x 4096, 4096 x 11008) otherwise gives too few warps to keep enough loads in flight on every SM.
//
// kGlu: the SwiGLU variant (R = 2). The weight has 2n rows, gate rows [0, n) then up rows [n, 2n); the
// warp's two rows are g and n + g, and out[m, g] = silu(gate + bias[g]) * (up + bias[n + g]).
template <typename TW, typename TX, int M, int R, int U, int KS, bool kGlu>
__global__ __launch_bounds__(kWarps * 32) void gemv_kernel(const TX* __restrict__ x, const TW* __restrict__ w,
                                                           const void* bias, DType bias_dt, void* out, DType out_dt,
                                                           int64_t n, int64_t k) {
  static_assert(kWarps % KS == 0, "slices must divide the block's warps");
  static_assert(!kGlu || R == 2, "the SwiGLU variant pairs one gate row with one up row");
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, slice = warp % KS;
  const int64_t group = int64_t{blockIdx.x} * (kWarps / KS) + warp / KS;
  const int64_t row0 = kGlu ? group : group * R, row_step = kGlu ? n : 1;
  const auto row_ok = [&](int r) { return kGlu ? row0 < n : row0 + r < n; };
  const int64_t chunks = k / 8, stride = 32 * U * KS;
  float acc[R][M] = {};
  RawChunk<TW> raw[R][U];
  const auto load = [&](int64_t c0) {
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (row_ok(r) && c0 + u * 32 * KS < chunks)
          load_raw(w + (row0 + r * row_step) * k + (c0 + u * 32 * KS) * 8, raw[r][u]);
  };
  // Weights are never written by the kernels before this one (a streamed layer's copy is ordered before
  // them by an event), so the first loads go out before waiting for x's producer to finish.
  if (row0 < n) load(lane + 32 * slice);
  pdl_wait();
  if (row0 < n) {
    for (int64_t c0 = lane + 32 * slice; c0 < chunks; c0 += stride) {
      if (c0 != lane + 32 * slice) load(c0);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = c0 + u * 32 * KS;
        if (c >= chunks) continue;
        float wv[R][8];
#pragma unroll
        for (int r = 0; r < R; ++r) decode_raw(raw[r][u], wv[r]);
        accumulate_chunk(x, k, c, wv, acc);
      }
    }
  }
  pdl_trigger();  // only the reduction and stores are left: let the next kernel get going
  if constexpr (KS == 1 && !kGlu) {
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (row0 + r < n) finish_rows<M>(acc[r], row0 + r, n, bias, bias_dt, out, out_dt);
    return;
  }
  const bool finisher = slice == 0 && lane == 0 && row0 < n;
  // Sum the slices' partials (KS > 1) through shared memory; one lane per row group finishes its rows.
  __shared__ float partial[kWarps][R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float v = warp_sum(acc[r][m]);
      if (lane == 0) partial[warp][r][m] = v;
    }
  if constexpr (KS > 1) __syncthreads();
  if (finisher) {
    float sum[R][M];
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float v = 0.f;
#pragma unroll
        for (int s2 = 0; s2 < KS; ++s2) v += partial[warp + s2][r][m];
        const float b = bias != nullptr && row_ok(r) ? load_elem(bias, bias_dt, row0 + r * row_step) : 0.f;
        sum[r][m] = v + b;
      }
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
      if constexpr (kGlu) {
        const float g = sum[0][m];
        store_elem(out, out_dt, m * n + row0, g / (1.f + __expf(-g)) * sum[1][m]);
      } else {
#pragma unroll
        for (int r = 0; r < R; ++r) {
          if (row0 + r >= n) continue;
          store_elem(out, out_dt, m * n + row0 + r, sum[r][m]);
        }
      }
    }
  }
}

// The same product for one row of x with the loads pipelined across iterations: each lane issues the 16-byte
// loads of its next chunks (the row group's next ones, else the next group's first) as soon as it has
// decoded the current ones, so its loads stay in flight through the multiplies and the row group's
// reduction. Blocks walk row groups with a stride of the grid, which is one wave (persistent). For grids of
// at most two waves of gemv_kernel (the 4096-row projections of a 7b shape), where that kernel's blocks
// start and drain together and the wave boundary leaves the memory bus idle. U is half of gemv_kernel's so
// that the current and the next loads fit the same registers (4 blocks per SM, as gemv_kernel). H200, 7b
// shapes in a 32-layer graph (bench/results/gpu-h200-20261202-s19/c-rolling-u2): o 9.90 against 10.54 us,
// down 22.75 against 24.48; but qkv 25.87 against 25.16 and gate_up 44.33 against 42.14 (many waves: the
// plain kernel's extra loads in flight win there), and 2 rows of x lost 7% end to end.
template <typename TW, typename TX, int M, int R, int U, int KS, bool kGlu>
__global__ __launch_bounds__(kWarps * 32, 4) void gemv_rolling_kernel(const TX* __restrict__ x,
                                                                   const TW* __restrict__ w, const void* bias,
                                                                   DType bias_dt, void* out, DType out_dt, int64_t n,
                                                                   int64_t k) {
  static_assert(kWarps % KS == 0, "slices must divide the block's warps");
  static_assert(!kGlu || R == 2, "the SwiGLU variant pairs one gate row with one up row");
  constexpr int kPerBlock = kWarps / KS;  // row groups a block takes at a time
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, slice = warp % KS;
  const int64_t groups = kGlu ? n : (n + R - 1) / R;
  const int64_t block_groups = (groups + kPerBlock - 1) / kPerBlock;
  const int64_t chunks = k / 8, stride = 32 * U * KS, first = lane + 32 * slice;
  const int64_t row_step = kGlu ? n : 1, group_stride = int64_t{gridDim.x} * kPerBlock;
  RawChunk<TW> raw[R][U];
  const auto load_u = [&](int64_t g, int64_t c0, int u) {
    const int64_t row0 = kGlu ? g : g * R, c = c0 + u * 32 * KS;
    if (g >= groups || c >= chunks) return;
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (kGlu || row0 + r < n) load_raw(w + (row0 + r * row_step) * k + c * 8, raw[r][u]);
  };
  int64_t g = int64_t{blockIdx.x} * kPerBlock + warp / KS;
#pragma unroll
  for (int u = 0; u < U; ++u) load_u(g, first, u);  // weights: before the wait, as in gemv_kernel
  pdl_wait();
  // Two buffers: a block's next reduction writes the other one, so it needs no second barrier.
  __shared__ float partial[2][kWarps][R][M];
  int parity = 0;
  for (int64_t bg = blockIdx.x; bg < block_groups; bg += gridDim.x, g += group_stride, parity ^= 1) {
    float acc[R][M] = {};
    if (g < groups) {
      for (int64_t c0 = first; c0 < chunks; c0 += stride) {
        const bool same_group = c0 + stride < chunks;
        const int64_t ng = same_group ? g : g + group_stride, nc = same_group ? c0 + stride : first;
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int64_t c = c0 + u * 32 * KS;
          const bool here = c < chunks;
          float wv[R][8];
          if (here)
#pragma unroll
            for (int r = 0; r < R; ++r) decode_raw(raw[r][u], wv[r]);
          load_u(ng, nc, u);
          if (!here) continue;
          accumulate_chunk(x, k, c, wv, acc);
        }
      }
    }
    if (bg + gridDim.x >= block_groups) pdl_trigger();  // the block's last loads are in
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float v = warp_sum(acc[r][m]);
        if (lane == 0) partial[parity][warp][r][m] = v;
      }
    if constexpr (KS > 1) __syncthreads();
    if (slice != 0 || lane != 0 || g >= groups) continue;
    const int64_t row0 = kGlu ? g : g * R;
    float sum[R][M];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const bool ok = kGlu || row0 + r < n;
      const float b = bias != nullptr && ok ? load_elem(bias, bias_dt, row0 + r * row_step) : 0.f;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float v = 0.f;
#pragma unroll
        for (int s2 = 0; s2 < KS; ++s2) v += partial[parity][warp + s2][r][m];
        sum[r][m] = v + b;
      }
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
      if constexpr (kGlu) {
        const float gate = sum[0][m];
        store_elem(out, out_dt, m * n + row0, gate / (1.f + __expf(-gate)) * sum[1][m]);
      } else {
#pragma unroll
        for (int r = 0; r < R; ++r)
          if (row0 + r < n) store_elem(out, out_dt, m * n + row0 + r, sum[r][m]);
      }
    }
  }
}

// Blocks of `kernel` (kWarps warps, no dynamic shared memory) resident on the current device at once.
template <typename Kernel>
unsigned blocks_per_wave(Kernel* kernel) {
  int device = 0, sms = 0, per_sm = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  CHECK_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  CHECK_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kWarps * 32, 0));
  return static_cast<unsigned>(std::max(1, per_sm) * sms);
}

// Any K: scalar fallback for odd shapes (e.g. K not a multiple of 8).
template <int M>
__global__ __launch_bounds__(kWarps * 32) void gemv_scalar_kernel(const void* x, DType x_dt, const void* w,
                                                                  DType w_dt, const void* bias, DType bias_dt,
                                                                  void* out, DType out_dt, int64_t n, int64_t k) {
  const int64_t row = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32;
  if (row >= n) return;
  float acc[M] = {};
  for (int64_t i = threadIdx.x % 32; i < k; i += 32) {
    const float wv = load_elem(w, w_dt, row * k + i);
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = fmaf(wv, load_elem(x, x_dt, m * k + i), acc[m]);
  }
  finish_rows<M>(acc, row, n, bias, bias_dt, out, out_dt);
}

bool plain_gemv_applies(const void* x, DType x_dt, const void* w, DType w_dt, int64_t k) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return (x_dt == DType::kBF16 || x_dt == DType::kF32) && aligned(x) && aligned(w) && k % 8 == 0 &&
         (w_dt == DType::kBF16 || w_dt == DType::kF16 || w_dt == DType::kF32);
}

// gemv_kernel for plain weights (plain_gemv_applies); kGlu: the SwiGLU variant, n = F outputs per row of x.
template <int M, bool kGlu>
void launch_plain(const void* x, DType x_dt, const void* w, DType w_dt, const void* bias, DType bias_dt, void* out,
                  DType out_dt, int64_t n, int64_t k, const Launch& stream) {
  const dim3 block(kWarps * 32);
  auto launch = [&](auto* xt, auto* wt) {
    using TX = std::remove_const_t<std::remove_pointer_t<decltype(xt)>>;
    using TW = std::remove_const_t<std::remove_pointer_t<decltype(wt)>>;
    // Rows per warp R and 16-byte chunks per row in flight U: R * U = 8 loads in flight per lane. R = 2
    // at M = 1 too: each warp then has 8 loads out for two rows at once, where R = 1 had half of its U = 8
    // beyond the end of a 4096-wide row at 4 warps per row. R = 4 at M = 8 left too few blocks per SM.
    constexpr int R = 2;
    constexpr int U = 8 / R;
    // Warps per row: 4 at M = 1, the 7b shapes' projections in a 32-layer CUDA graph on an H200 (us per
    // launch, 4 / 2 warps per row): 12288 x 4096 25.3 / 27.3, 4096 x 4096 10.4 / 10.8, 22016 x 4096
    // 42.5 / 44.7, 4096 x 11008 24.9 / 24.2; the chain of all four 92.0% of the copy rate against 88.5%
    // with the earlier R = 1 (tests/gpu/KERNEL_NOTES.md). Rows of 8192 and more take 2 at M = 1 (4096 x
    // 11008: 24.48 against 24.94 us, 2026-12-02). At M = 2, 4 everywhere: batch 2 of the 7b shape 497.9
    // against 481.6 tok/s with 2 for the 22016-row gate/up. Past 2 rows, 4 below 8192 row groups (enough
    // warps to fill ~132 SMs), else 2 (measured at M = 1 with R = 1, not re-measured since).
    const int64_t row_groups = kGlu ? n : (n + R - 1) / R;
    const int ks = k < 2048 ? 1 : M == 1 && k >= 8192 ? 2 : M <= 2 || row_groups < 8192 ? 4 : 2;
    auto go = [&](auto ks_tag) {
      constexpr int KS = decltype(ks_tag)::value;
      const int64_t per_block = int64_t{kWarps / KS} * (kGlu ? 1 : R);
      const dim3 grid(static_cast<unsigned>((n + per_block - 1) / per_block));
      if constexpr (M == 1 && std::is_same_v<TX, __nv_bfloat16> && !std::is_same_v<TW, float>) {
        auto* plain = gemv_kernel<TW, TX, M, R, U, KS, kGlu>;
        auto* rolling = gemv_rolling_kernel<TW, TX, M, R, U / 2, KS, kGlu>;
        // Once per process (one GPU model per process).
        static const unsigned plain_wave = blocks_per_wave(plain), rolling_wave = blocks_per_wave(rolling);
        const GemvRolling form = stream.gemv_rolling;
        if (form == GemvRolling::kAlways || (form == GemvRolling::kByGrid && grid.x <= 2 * plain_wave)) {
          launch_pdl(rolling, dim3(std::min(grid.x, rolling_wave)), block, 0, stream, static_cast<const TX*>(x),
                     static_cast<const TW*>(w), bias, bias_dt, out, out_dt, n, k);
          return;
        }
      }
      launch_pdl(gemv_kernel<TW, TX, M, R, U, KS, kGlu>, grid, block, 0, stream, static_cast<const TX*>(x),
                 static_cast<const TW*>(w), bias, bias_dt, out, out_dt, n, k);
    };
    if (ks == 1) go(std::integral_constant<int, 1>{});
    else if (ks == 2) go(std::integral_constant<int, 2>{});
    else go(std::integral_constant<int, 4>{});
  };
  auto with_w = [&](auto* xt) {
    switch (w_dt) {
      case DType::kBF16: launch(xt, static_cast<const __nv_bfloat16*>(nullptr)); break;
      case DType::kF16: launch(xt, static_cast<const __half*>(nullptr)); break;
      default: launch(xt, static_cast<const float*>(nullptr)); break;
    }
  };
  if (x_dt == DType::kBF16) with_w(static_cast<const __nv_bfloat16*>(nullptr));
  else with_w(static_cast<const float*>(nullptr));
  CHECK_LAUNCH();
}

template <int M>
void dispatch_rows(const void* x, DType x_dt, const void* w, DType w_dt, const void* bias, DType bias_dt, void* out,
                   DType out_dt, int64_t n, int64_t k, const Launch& stream) {
  const dim3 grid(static_cast<unsigned>((n + kWarps - 1) / kWarps));
  const dim3 block(kWarps * 32);
  STRATA_CHECK(!dtype_is_quantized(w_dt), "launch_gemv: ", dtype_name(w_dt),
               " weights take launch_gemv_quant (gemv_quant.cu)");
  if (plain_gemv_applies(x, x_dt, w, w_dt, k)) {
    return launch_plain<M, false>(x, x_dt, w, w_dt, bias, bias_dt, out, out_dt, n, k, stream);
  } else {
    gemv_scalar_kernel<M><<<grid, block, 0, stream.stream>>>(x, x_dt, w, w_dt, bias, bias_dt, out, out_dt, n, k);
  }
  CHECK_LAUNCH();
}

// Calls f(std::integral_constant<int, rows>) for rows in 1..8: the kernels take the row count as a template.
template <typename F>
void with_rows(int64_t rows, const char* op, F&& f) {
  switch (rows) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    case 8: return f(std::integral_constant<int, 8>{});
    default: STRATA_THROW(ErrorKind::kInternal, op, " takes 1..8 rows, got ", rows);
  }
}

}  // namespace

void launch_gemv(const void* x, DType x_dt, const void* w, DType w_dt, const void* bias, DType bias_dt, void* out,
                 DType out_dt, int64_t rows, int64_t n, int64_t k, const Launch& stream) {
  if (rows == 0 || n == 0) return;
  if (w_dt == DType::kF8_B128) return launch_gemv_f8(x, x_dt, w, bias, bias_dt, out, out_dt, rows, n, k, stream);
  with_rows(rows, "launch_gemv", [&](auto rows_tag) {
    dispatch_rows<decltype(rows_tag)::value>(x, x_dt, w, w_dt, bias, bias_dt, out, out_dt, n, k, stream);
  });
}

bool launch_gemv_swiglu(const void* x, DType x_dt, const void* w, DType w_dt, void* out, DType out_dt, int64_t rows,
                        int64_t f, int64_t k, const Launch& stream) {
  if (rows < 1 || rows > 8 || !plain_gemv_applies(x, x_dt, w, w_dt, k)) return false;
  if (f == 0) return true;
  with_rows(rows, "launch_gemv_swiglu", [&](auto rows_tag) {
    launch_plain<decltype(rows_tag)::value, true>(x, x_dt, w, w_dt, nullptr, DType::kF32, out, out_dt, f, k, stream);
  });
  return true;
}

}  // namespace strata::cuda
