// runtime/cuda/moe_gemv.cu: the grouped GEMV of a mixture-of-experts decode step (moe_kernels.h): every
// selected expert's projection in one launch. Block (x, y) takes entry y of the table (an expert, its
// weights and its few rows of x) and a tile of its output features, with gemv_kernels.cu's inner loop:
// warps own weight rows (two each, or a gate row and its up row in the SwiGLU form), 16-byte streaming loads
// several deep, KS warps splitting K where the rows alone give too few warps, a warp reduction per output.
// So a step reads each selected expert's bytes once, whatever its rows (up to 8), and pays one launch per
// projection instead of one per expert; an entry with no rows costs its blocks a table read. The routed form
// (moe_routed's gate/up launch) reads its table and its rows' tokens from the routing kernel just before it.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_dtype.cuh"
#include "runtime/cuda/gemv_chunk.cuh"
#include "runtime/cuda/moe_kernels.h"
#include "runtime/cuda/pdl.cuh"

namespace strata::cuda {
namespace {

constexpr int kWarps = 8;

// M: the most rows an entry has (its own count is read at run time). R rows a warp (2: one x chunk load
// serves both), U chunks of each row in flight per lane (R * U = 8, as gemv_kernels.cu measured best).
// kRouted: x's rows come through x_rows, and the table and x_rows are the previous kernel's output.
template <typename TW, int M, int R, int U, int KS, bool kGlu, bool kRouted>
__global__ __launch_bounds__(kWarps * 32) void grouped_gemv_kernel(const __nv_bfloat16* __restrict__ x,
                                                                   const ExpertSlice* __restrict__ table,
                                                                   const int32_t* __restrict__ x_rows,
                                                                   void* out, DType out_dt, int64_t n, int64_t k) {
  static_assert(kWarps % KS == 0, "slices must divide the block's warps");
  static_assert(!kGlu || R == 2, "the SwiGLU form pairs one gate row with one up row");
  // Unrouted, the table and the weights were written before the previous kernel ran (copies ordered ahead
  // of this launch's predecessor, or a routing kernel two launches back), so they are read before the wait;
  // x is the previous kernel's output. Routed, the routing kernel just before wrote the table.
  if constexpr (kRouted) pdl_wait();
  const ExpertSlice e = table[blockIdx.y];
  const int rows = e.rows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, slice = warp % KS;
  const int64_t group = int64_t{blockIdx.x} * (kWarps / KS) + warp / KS;
  const int64_t row0 = kGlu ? group : group * R;
  const bool active = rows > 0 && row0 < n;
  const auto row_ok = [&](int r) { return kGlu ? row0 < n : row0 + r < n; };
  const TW* w0 = static_cast<const TW*>(e.w0);
  const TW* w1 = static_cast<const TW*>(e.w1);
  const auto row_ptr = [&](int r) { return kGlu ? (r == 0 ? w0 : w1) + row0 * k : w0 + (row0 + r) * k; };
  const int64_t chunks = k / 8, stride = 32 * U * KS, first = lane + 32 * slice;
  float acc[R][M] = {};
  RawChunk<TW> raw[R][U];
  const auto load = [&](int64_t c0) {
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (row_ok(r) && c0 + u * 32 * KS < chunks) load_raw(row_ptr(r) + (c0 + u * 32 * KS) * 8, raw[r][u]);
  };
  if (active) load(first);
  pdl_wait();
  if (active) {
    int64_t x_row[M];
#pragma unroll
    for (int m = 0; m < M; ++m) x_row[m] = kRouted ? (m < rows ? x_rows[e.in_row + m] : 0) : e.in_row + m;
    for (int64_t c0 = first; c0 < chunks; c0 += stride) {
      if (c0 != first) load(c0);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = c0 + u * 32 * KS;
        if (c >= chunks) continue;
        float wv[R][8];
#pragma unroll
        for (int r = 0; r < R; ++r) decode_raw(raw[r][u], wv[r]);
#pragma unroll
        for (int m = 0; m < M; ++m) {
          if (m >= rows) break;
          float xv[8];
          load8(x + x_row[m] * k + c * 8, xv);
#pragma unroll
          for (int r = 0; r < R; ++r)
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[r][m] = fmaf(wv[r][i], xv[i], acc[r][m]);
        }
      }
    }
  }
  pdl_trigger();  // only the reductions and stores are left
  // Every warp reaches the barrier (inactive ones with zeros); one lane per row group finishes its rows.
  __shared__ float partial[kWarps][R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float v = warp_sum(acc[r][m]);
      if (lane == 0) partial[warp][r][m] = v;
    }
  if constexpr (KS > 1) __syncthreads();
  if (slice != 0 || lane != 0 || !active) return;
#pragma unroll
  for (int m = 0; m < M; ++m) {
    if (m >= rows) break;
    float sum[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float v = 0.f;
#pragma unroll
      for (int s = 0; s < KS; ++s) v += partial[warp + s][r][m];
      sum[r] = v;
    }
    const int64_t out_row = (e.out_row + m) * n;
    if constexpr (kGlu) {
      store_elem(out, out_dt, out_row + row0, sum[0] / (1.f + __expf(-sum[0])) * sum[1]);
    } else {
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (row0 + r < n) store_elem(out, out_dt, out_row + row0 + r, sum[r]);
    }
  }
}

template <typename TW, int M, bool kGlu, bool kRouted>
void launch_typed(const void* x, const ExpertSlice* table, const int32_t* x_rows, int64_t entries, void* out,
                  DType out_dt, int64_t n, int64_t k, const Launch& stream) {
  constexpr int R = 2, U = 8 / R;
  // Warps per row group by gemv_kernels.cu's rule for one matrix, over the whole launch's row groups.
  const int64_t row_groups = (kGlu ? n : (n + R - 1) / R) * entries;
  const int ks = k < 2048 ? 1 : M == 1 && k >= 8192 ? 2 : M <= 2 || row_groups < 8192 ? 4 : 2;
  auto go = [&](auto ks_tag) {
    constexpr int KS = decltype(ks_tag)::value;
    const int64_t per_block = int64_t{kWarps / KS} * (kGlu ? 1 : R);
    const dim3 grid(static_cast<unsigned>((n + per_block - 1) / per_block), static_cast<unsigned>(entries));
    launch_pdl(grouped_gemv_kernel<TW, M, R, U, KS, kGlu, kRouted>, grid, dim3(kWarps * 32), 0, stream,
               static_cast<const __nv_bfloat16*>(x), table, x_rows, out, out_dt, n, k);
  };
  if (ks == 1) go(std::integral_constant<int, 1>{});
  else if (ks == 2) go(std::integral_constant<int, 2>{});
  else go(std::integral_constant<int, 4>{});
}

template <typename TW, bool kGlu, bool kRouted>
void launch_rows(int max_rows, const void* x, const ExpertSlice* table, const int32_t* x_rows, int64_t entries,
                 void* out, DType out_dt, int64_t n, int64_t k, const Launch& stream) {
  const auto go = [&](auto m_tag) {
    launch_typed<TW, decltype(m_tag)::value, kGlu, kRouted>(x, table, x_rows, entries, out, out_dt, n, k, stream);
  };
  if (max_rows <= 1) go(std::integral_constant<int, 1>{});
  else if (max_rows <= 2) go(std::integral_constant<int, 2>{});
  else if (max_rows <= 4) go(std::integral_constant<int, 4>{});
  else go(std::integral_constant<int, 8>{});
}

}  // namespace

bool grouped_gemv_supports(DType x_dt, DType w_dt, int64_t k, int max_rows) {
  return x_dt == DType::kBF16 && (w_dt == DType::kBF16 || w_dt == DType::kF16) && k > 0 && k % 8 == 0 &&
         max_rows >= 1 && max_rows <= kGroupedGemvMaxRows;
}

void launch_grouped_gemv(const void* x, const ExpertSlice* table, int64_t entries, int max_rows, DType w_dt,
                         bool swiglu, void* out, DType out_dt, int64_t n, int64_t k, const Launch& stream,
                         const int32_t* x_rows) {
  STRATA_CHECK(grouped_gemv_supports(DType::kBF16, w_dt, k, max_rows) && entries <= 65535 &&
                   (x_rows == nullptr || swiglu),
               "launch_grouped_gemv: ", dtype_name(w_dt), " weights, K ", k, ", ", max_rows, " rows, ", entries,
               " entries", x_rows != nullptr && !swiglu ? ", routed rows without the SwiGLU form" : "",
               " are outside what the kernel takes");
  if (entries == 0 || n == 0) return;
  auto with_type = [&](auto* wt) {
    using TW = std::remove_const_t<std::remove_pointer_t<decltype(wt)>>;
    if (x_rows != nullptr) launch_rows<TW, true, true>(max_rows, x, table, x_rows, entries, out, out_dt, n, k, stream);
    else if (swiglu) launch_rows<TW, true, false>(max_rows, x, table, nullptr, entries, out, out_dt, n, k, stream);
    else launch_rows<TW, false, false>(max_rows, x, table, nullptr, entries, out, out_dt, n, k, stream);
  };
  if (w_dt == DType::kF16) with_type(static_cast<const __half*>(nullptr));
  else with_type(static_cast<const __nv_bfloat16*>(nullptr));
  CHECK_LAUNCH();
}

}  // namespace strata::cuda
