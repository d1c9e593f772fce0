// runtime/cuda/moe_kernels.h: the mixture-of-experts kernels of the CUDA backend: the combine
// (moe_kernels.cu) and the grouped GEMVs that run a decode step's selected experts in one launch per
// projection (moe_gemv.cu); prefill-sized steps take cuBLAS's grouped GEMM (gemm.h) or the grouped
// tensor-core GEMM (moe_gemm_mma.cu).
#pragma once
#include <cstdint>

#include "runtime/cuda/launch.h"
#include "runtime/dtype.h"

namespace strata::cuda {

// out[t, :] = (accumulate ? out[t, :] : 0) + sum over j < k of weight[t*k + j] * src[index[t*k + j], :] for
// t < rows, in f32, the sum in j order; a negative index adds nothing (another rank holds that expert).
// src [src_rows, dim] and out [rows, dim] are f32/f16/bf16; index and weight on the device.
void launch_combine_rows(const void* src, DType src_dt, int64_t src_rows, const int32_t* index, const float* weight,
                         int64_t k, int64_t rows, int64_t dim, bool accumulate, void* out, DType out_dt,
                         const Launch& stream);

// Some consecutive rows of one expert in a grouped launch (launch_grouped_gemv, launch_grouped_mma), an entry of
// a device-memory table.
struct ExpertSlice {
  const void* w0 = nullptr;  // the weight [n, k]; the SwiGLU form: the gate [n, k]
  const void* w1 = nullptr;  // the SwiGLU form: the up [n, k]; else unused
  int64_t in_row = 0;        // the slice's first row of x
  int64_t out_row = 0;       // ... and of out
  int32_t rows = 0;          // up to kGroupedGemvMaxRows or kGroupedMmaRows
  int32_t unused = 0;
};
constexpr int kGroupedGemvMaxRows = 8;

// A decode step's routing on the device (launch_moe_route), for the grouped GEMV to read: no host round trip.
struct MoeRouteArgs {
  const float* logits = nullptr;  // [tokens, experts] f32
  int32_t tokens = 0, experts = 0, top_k = 0;
  bool norm_topk = true;
  const void* const* weights = nullptr;  // [held][3]: each held expert's gate, up and down
  int32_t first = 0, held = 0;           // global index of the first held expert; how many
  int32_t entries = 0;                   // the table's capacity: min(tokens * top_k, held)
  const float* shared_logit = nullptr;   // [tokens] Qwen2-MoE's shared-expert gate logits, or null
  const int32_t* count_mask = nullptr;   // [tokens]: token t counts where count_mask[t] >= 0; null: all do
  unsigned long long* counts = nullptr;  // [experts + 1]: tokens per expert, then weight bytes; or null
  long long expert_bytes = 0;            // one expert's gate + up + down bytes
  // Outputs. Slots s = t * top_k + j in route_tokens' order (runtime/models/moe.h); the held slots are placed
  // in rows [0, tokens * top_k) grouped by expert (first chosen first), each expert's tokens ascending.
  ExpertSlice* table = nullptr;  // [2 entries]: gate/up entries (in_row indexes x_rows), then down entries
  int32_t* x_rows = nullptr;     // [tokens * top_k] the token of each placed row
  int32_t* pos = nullptr;        // [tokens * top_k] each slot's row, -1 for another rank's expert
  float* weight = nullptr;       // [tokens * top_k] each slot's combine weight
  int32_t* shared_ids = nullptr;  // [tokens] t, with shared_logit
  float* shared_gate = nullptr;   // [tokens] sigmoid(shared_logit[t])
};
constexpr int kMoeRouteMaxTokens = 8, kMoeRouteMaxExperts = 1024, kMoeRouteMaxTopK = 32;
// Softmax over every expert in f32 and the top_k by logit (ties to the lower index), renormalized when
// norm_topk, as route_tokens; one block. Unused table entries get 0 rows.
void launch_moe_route(const MoeRouteArgs& args, const Launch& stream);

// Whether launch_grouped_gemv takes these operands: bf16 x with k % 8 == 0 (rows 16-byte aligned from a
// 16-byte aligned base), f32, f16 or bf16 weights, 1..kGroupedGemvMaxRows rows.
bool grouped_gemv_supports(DType x_dt, DType w_dt, int64_t k, int max_rows);
// For each of the `entries` of `table` (device memory) and each m < rows: out[out_row + m, :] =
// x[in_row + m, :] w0^T, or with `swiglu` silu(x[in_row + m, :] w0^T) * (x[in_row + m, :] w1^T) (the SwiGLU
// formed from the f32 sums). x [*, k] bf16, every weight [n, k] of w_dt with 16-byte aligned rows, out [*, n].
// max_rows bounds the entries' rows. One launch: blocks own (entry, output rows), so each reads only its
// expert's weights, once, whatever the entry's rows. With x_rows (device memory, the SwiGLU form only) row m
// of an entry is x[x_rows[in_row + m]], and the table and x_rows may come from the kernel just before
// (launch_moe_route); without, the table must be complete before that kernel starts.
void launch_grouped_gemv(const void* x, const ExpertSlice* table, int64_t entries, int max_rows, DType w_dt,
                         bool swiglu, void* out, DType out_dt, int64_t n, int64_t k, const Launch& stream,
                         const int32_t* x_rows = nullptr);

// The same products for many rows per expert (prefill, large decode batches) on the tensor cores
// (moe_gemm_mma.cu): every slice of up to kGroupedMmaRows rows times 128 output columns (64 features of gate and
// up in the SwiGLU form) a block, bf16 or f16 x and weights of that type, f32 accumulation, out of x's type. The
// caller cuts each expert's rows into slices. k % 32 == 0 and n % 8 == 0, rows 16-byte aligned.
constexpr int kGroupedMmaRows = 64;
bool grouped_mma_supports(DType dt, int64_t n, int64_t k);
void launch_grouped_mma(const void* x, const ExpertSlice* table, int64_t slices, DType dt, bool swiglu, void* out,
                        int64_t n, int64_t k, const Launch& stream);

}  // namespace strata::cuda
