// runtime/cuda/qgemm_mma.cu: the tensor-core quantized GEMM for decode batches (kernels.h's quant_mma_*): which
// weight types it takes, the split of K per device, the launch, and the deterministic split-K reduction. The
// kernel and how it reads each block type: qgemm_mma_kernel.cuh.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_dtype.cuh"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/pdl.cuh"
#include "runtime/cuda/qgemm_mma_kernel.cuh"
#include "runtime/error.h"

namespace strata::cuda {
namespace qmma {
// Instantiated in qgemm_mma_<type>.cu.
extern template void launch_tiles<DType::kQ4_0>(const QgemmArgs&, int, dim3, const Launch&);
extern template void launch_tiles<DType::kQ4_1>(const QgemmArgs&, int, dim3, const Launch&);
extern template void launch_tiles<DType::kQ5_0>(const QgemmArgs&, int, dim3, const Launch&);
extern template void launch_tiles<DType::kQ5_1>(const QgemmArgs&, int, dim3, const Launch&);
extern template void launch_tiles<DType::kQ8_0>(const QgemmArgs&, int, dim3, const Launch&);
extern template void launch_tiles<DType::kQ4_K>(const QgemmArgs&, int, dim3, const Launch&);
extern template void launch_tiles<DType::kQ5_K>(const QgemmArgs&, int, dim3, const Launch&);
extern template void launch_tiles<DType::kQ6_K>(const QgemmArgs&, int, dim3, const Launch&);
}  // namespace qmma

namespace {
using qmma::kBlockRows;
using qmma::kChunk;
using qmma::kStages;
using qmma::kXStride;
using qmma::QgemmArgs;
using qmma::WStage;

// out[i] = the splits' partials summed in split order, plus the bias.
__global__ __launch_bounds__(256) void qgemm_reduce_kernel(const float* __restrict__ partial, int splits,
                                                           const void* bias, DType bias_dt, void* out, DType out_dt,
                                                           int64_t m, int64_t n) {
  pdl_wait();
  pdl_trigger();
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= m * n) return;
  float s = 0.f;
  for (int p = 0; p < splits; ++p) s += partial[p * m * n + i];
  if (bias != nullptr) s += load_elem(bias, bias_dt, i % n);
  store_elem(out, out_dt, i, s);
}

// Blocks of the kernel that fit on an SM at once: 2 by registers (128 a thread), fewer where shared memory
// says so.
int blocks_per_sm(size_t smem) { return std::max(1, std::min(2, static_cast<int>((227u << 10) / (smem + 1024)))); }

// Calls f(std::integral_constant<DType, T>{}) for the supported weight type w_dt; false for any other.
template <typename F>
bool with_weight_type(DType w_dt, F&& f) {
  switch (w_dt) {
#define STRATA_QMMA_TYPE(T) \
  case T: f(std::integral_constant<DType, T>{}); return true;
    STRATA_QMMA_TYPE(DType::kQ4_0)
    STRATA_QMMA_TYPE(DType::kQ4_1)
    STRATA_QMMA_TYPE(DType::kQ5_0)
    STRATA_QMMA_TYPE(DType::kQ5_1)
    STRATA_QMMA_TYPE(DType::kQ8_0)
    STRATA_QMMA_TYPE(DType::kQ4_K)
    STRATA_QMMA_TYPE(DType::kQ5_K)
    STRATA_QMMA_TYPE(DType::kQ6_K)
#undef STRATA_QMMA_TYPE
    default: return false;
  }
}

size_t smem_bytes(DType w_dt, int nt) {
  const size_t x = static_cast<size_t>(nt) * 8 * kXStride * 2;
  size_t w = 0;
  with_weight_type(w_dt, [&](auto t) { w = WStage<decltype(t)::value>::kBytes; });
  return kStages * (w + x);
}

// Token tiles of 8: 1-4, then 6 and 8 (M of 33-48 and 49-64).
int token_tiles(int64_t m) {
  const int nt = static_cast<int>((m + 7) / 8);
  return nt <= 4 ? nt : nt <= 6 ? 6 : 8;
}

}  // namespace

bool quant_mma_supports(DType w_dt, int64_t m, int64_t n, int64_t k) {
  const bool type = with_weight_type(w_dt, [](auto) {});
  return type && m >= 1 && m <= kQuantMmaMaxRows && k > 0 && k % dtype_block_elems(w_dt) == 0 &&
         dtype_bytes(w_dt, n * k) < (int64_t{1} << 32);
}

QuantMmaPlan quant_mma_plan(DType w_dt, int64_t m, int64_t n, int64_t k, int sm_count) {
  QuantMmaPlan p;
  const int nt = token_tiles(m);
  const int64_t tiles = (n + kBlockRows - 1) / kBlockRows, chunks = (k + kChunk - 1) / kChunk;
  const int64_t slots = int64_t{std::max(sm_count, 1)} * blocks_per_sm(smem_bytes(w_dt, nt));
  // The split of K that minimises waves x (chunks per block + 1), the fewest splits on a tie (less partial
  // traffic). The + 1 is a block's start and drain, which its own pipeline does not hide: about one chunk's
  // time on the H100 (KERNEL_NOTES.md, "Split-K"). Without it 11008 x 4096 Q8_0 took 16 splits of one chunk,
  // 11 waves of blocks that are all start, and measured 41 us at every M.
  int64_t best = 1, best_cost = INT64_MAX;
  for (int64_t s = 1; s <= chunks; ++s) {
    const int64_t per = (chunks + s - 1) / s;
    if ((chunks + per - 1) / per != s) continue;  // the same blocks as a smaller split
    const int64_t cost = (tiles * s + slots - 1) / slots * (per + 1);
    if (cost < best_cost) best = s, best_cost = cost;
  }
  p.splits = static_cast<int>(best);
  p.chunks_per_split = static_cast<int>((chunks + best - 1) / best);
  p.scratch_bytes = best > 1 ? static_cast<size_t>(best * m * n) * sizeof(float) : 0;
  return p;
}

bool launch_quant_mma(const void* x, const void* w, DType w_dt, const void* bias, DType bias_dt, void* out,
                      DType out_dt, int64_t m, int64_t n, int64_t k, const QuantMmaPlan& plan, void* scratch,
                      const Launch& stream) {
  if (!quant_mma_supports(w_dt, m, n, k) || reinterpret_cast<uintptr_t>(w) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(x) % 16 != 0 || (plan.splits > 1 && scratch == nullptr))
    return false;
  const int64_t chunks = (k + kChunk - 1) / kChunk;
  if (plan.chunks_per_split < 1 ||
      (chunks + plan.chunks_per_split - 1) / plan.chunks_per_split != plan.splits)
    return false;
  if (n == 0) return true;
  QgemmArgs a{static_cast<const uint8_t*>(w),
              static_cast<const __nv_bfloat16*>(x),
              bias,
              bias_dt,
              out,
              out_dt,
              plan.splits > 1 ? static_cast<float*>(scratch) : nullptr,
              m,
              n,
              k,
              plan.chunks_per_split};
  const dim3 grid(static_cast<unsigned>((n + kBlockRows - 1) / kBlockRows), static_cast<unsigned>(plan.splits));
  const int nt = token_tiles(m);
  with_weight_type(w_dt, [&](auto t) { qmma::launch_tiles<decltype(t)::value>(a, nt, grid, stream); });
  CHECK_LAUNCH();
  if (plan.splits > 1) {
    const int64_t total = m * n;
    launch_pdl(qgemm_reduce_kernel, dim3(static_cast<unsigned>((total + 255) / 256)), dim3(256), 0, stream,
               static_cast<const float*>(scratch), plan.splits, bias, bias_dt, out, out_dt, m, n);
    CHECK_LAUNCH();
  }
  return true;
}

}  // namespace strata::cuda
