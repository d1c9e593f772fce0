// runtime/cuda/kernels.h: host-side launchers of the CUDA backend's kernels (internal to runtime/cuda/).
// Pointers are device pointers; each launcher enqueues on `stream` and checks the launch.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/cuda/launch.h"
#include "runtime/dtype.h"
#include "runtime/model_config.h"

namespace strata::cuda {

// ---- elementwise_kernels.cu ----
// dst[i] = src[i] for n elements, converting between f32, f16 and bf16 (or dequantizing rows of any block-quantized type, bit-identical to the CPU).
void launch_convert(const void* src, DType src_dt, void* dst, DType dst_dt, int64_t n, const Launch& stream);
void launch_embed(const void* table, DType table_dt, int64_t vocab_rows, int64_t dim, const int32_t* ids,
                  int64_t n_tokens, int64_t vocab_offset, void* out, DType out_dt, const Launch& stream);
// With residual != nullptr: residual += x first (the fused add_rmsnorm), and x is the addend.
void launch_rmsnorm(const void* x, DType x_dt, void* residual, DType res_dt, const void* weight, DType w_dt,
                    float eps, int64_t rows, int64_t dim, void* out, DType out_dt, const Launch& stream);
// inv_freq: rot_dim / 2 floats on the device.
void launch_rope(void* x, DType x_dt, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const int32_t* positions,
                 const float* inv_freq, int64_t rot_dim, RopeStyle style, const Launch& stream);
// launch_rope on q and on k, then launch_kv_write of k and v, in one launch (q, k, v contiguous [T, heads, hd]).
struct RopeKvWrite {
  void* q = nullptr;
  void* k = nullptr;
  const void* v = nullptr;
  DType dt = DType::kBF16;  // of q, k and v
  int64_t q_heads = 0, kv_heads = 0, head_dim = 0, rot_dim = 0;
  RopeStyle style = RopeStyle::kHalf;
  const int32_t* positions = nullptr;
  const float* inv_freq = nullptr;  // rot_dim / 2
  const int32_t* slots = nullptr;
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  DType cache_dt = DType::kBF16;
  int64_t cache_rows = 0;
};
void launch_rope_kv_write(const RopeKvWrite& a, int64_t n_tokens, const Launch& stream);
void launch_silu_mul(const void* gate, DType gate_dt, const void* up, DType up_dt, void* out, DType out_dt,
                     int64_t n, const Launch& stream);
// x [rows, row_bytes] into parts: part j takes the bytes [end[j-1], end[j]) of every row (end[-1] = 0), stored
// as its own [rows, end[j] - end[j-1]] rows.
constexpr int kMaxSplitParts = 4;
struct SplitColumns {
  void* dst[kMaxSplitParts] = {};
  int64_t end[kMaxSplitParts] = {};
  int parts = 0;
};
void launch_split_columns(const void* x, int64_t rows, int64_t row_bytes, const SplitColumns& parts_bytes,
                          const Launch& stream);
void launch_add(void* a, DType a_dt, const void* b, DType b_dt, int64_t n, const Launch& stream);
// out[t, i] = silu(gate_up[t, i]) * gate_up[t, f + i] over rows x f.
void launch_swiglu(const void* gate_up, DType in_dt, void* out, DType out_dt, int64_t rows, int64_t f,
                   const Launch& stream);
// out[m, n] += bias[n] over rows x cols.
void launch_add_bias(void* out, DType out_dt, const void* bias, DType bias_dt, int64_t rows, int64_t cols,
                     const Launch& stream);
// Rows of `row_elems` elements: token t goes to cache row slots[t] (skipped when slots[t] < 0).
void launch_kv_write(const void* k, const void* v, DType src_dt, const int32_t* slots, int64_t n_tokens,
                     int64_t row_elems, void* k_cache, void* v_cache, DType cache_dt, int64_t cache_rows,
                     const Launch& stream);
// launch_kv_write into fp8 caches (rows of head_dim e4m3 codes + an f32 scale, runtime/fp8_kv.h).
void launch_kv_write_fp8(const void* k, const void* v, DType src_dt, const int32_t* slots, int64_t n_tokens,
                         int64_t kv_heads, int64_t head_dim, void* k_cache, void* v_cache, int64_t cache_rows,
                         const Launch& stream);

// ---- gemv_kernels.cu ----
// out[m, n] = sum_k x[m, k] w[n, k] (+ bias[n]) for m < rows <= 8; x is f32 or bf16 with row stride K.
// One-row GEMVs with bf16 x take the pipelined persistent kernel as stream.gemv_rolling says.
void launch_gemv(const void* x, DType x_dt, const void* w, DType w_dt, const void* bias, DType bias_dt, void* out,
                 DType out_dt, int64_t rows, int64_t n, int64_t k, const Launch& stream);
// ---- gemv_quant.cu ----
// The same product with block-quantized weights of any GGUF type (rows <= 8; x f32, f16 or bf16): x is first
// quantized to 8 bits per 32 elements into `scratch` (quant_gemv_scratch_bytes(rows, k) bytes, 16-byte
// aligned), then the weight blocks are read directly. Returns false (launching nothing) where it does not
// apply: w not a quantized type or not 16-byte aligned, K not whole blocks.
size_t quant_gemv_scratch_bytes(int64_t rows, int64_t k);
bool launch_gemv_quant(const void* x, DType x_dt, void* scratch, const void* w, DType w_dt, const void* bias,
                       DType bias_dt, void* out, DType out_dt, int64_t rows, int64_t n, int64_t k,
                       const Launch& stream);
// ---- qgemm_mma.cu ----
// The same product for decode batches (1..kQuantMmaMaxRows rows of bf16 x, 16-byte aligned) with Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0, Q4_K, Q5_K or Q6_K weights (under 4 GiB) on the tensor cores: the packed blocks are read
// once and their integer codes multiplied exactly, with the blocks' scales applied to f32 partial sums (equal to
// the f32 product with the dequantized weight up to summation order). quant_mma_plan picks the split of K for the device; split plans need
// plan.scratch_bytes of f32 partials in `scratch`. launch_quant_mma returns false (launching nothing) where
// it does not apply: another weight type, M out of range, K not whole blocks, w or x not 16-byte aligned, or
// a plan that does not cover K.
constexpr int64_t kQuantMmaMaxRows = 64;
struct QuantMmaPlan {
  int splits = 1;            // blocks along K
  int chunks_per_split = 1;  // 256-element chunks of K each takes
  size_t scratch_bytes = 0;
};
bool quant_mma_supports(DType w_dt, int64_t m, int64_t n, int64_t k);
QuantMmaPlan quant_mma_plan(DType w_dt, int64_t m, int64_t n, int64_t k, int sm_count);
bool launch_quant_mma(const void* x, const void* w, DType w_dt, const void* bias, DType bias_dt, void* out,
                      DType out_dt, int64_t m, int64_t n, int64_t k, const QuantMmaPlan& plan, void* scratch,
                      const Launch& stream);
// The SwiGLU GEMV (rows <= 8): w holds 2f rows, gate then up, and out[m, i] = silu(g) * u of rows i and f + i.
// Returns false (launching nothing) where it does not apply: quantized weights, f16 x, K not a multiple of 8
// or operands not 16-byte aligned.
bool launch_gemv_swiglu(const void* x, DType x_dt, const void* w, DType w_dt, void* out, DType out_dt, int64_t rows,
                        int64_t f, int64_t k, const Launch& stream);

// ---- attention_decode.cu / attention_prefill.cu ----
struct AttentionArgs {
  const void* q = nullptr;  // [T, H, hd]
  DType q_dt = DType::kBF16;
  const void* k_cache = nullptr;  // [blocks, block_size, Hkv, hd]
  const void* v_cache = nullptr;
  DType kv_dt = DType::kBF16;
  void* out = nullptr;  // [T, H, hd]
  DType out_dt = DType::kBF16;
  const int32_t* positions = nullptr;
  const int32_t* token_seq = nullptr;
  const int32_t* block_tables = nullptr;
  int64_t n_tokens = 0, n_seqs = 0, max_blocks = 0, block_size = 0, max_position = 0;
  int64_t n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int64_t n_cache_blocks = 0;
  float scale = 1.f;
  int sm_count = 0;  // the device's multiprocessors (the tensor-core prefill picks its block shape by them)
  bool decode_warps = false;  // decode: the per-warp kernel where it applies (attention_decode_warps.cu)
  bool prefill_mma_fp8 = false;  // prefill: the tensor-core kernel also takes fp8 caches (else the SIMT kernel)
  // Decode split plans: splits are multiples of split_grain keys (16, 32, 64 or 128). The per-warp kernel runs
  // the split plan of a short context (at most two key groups a warp) as one block of 8 or 16 warps per KV
  // head, or per 1 / head_split of its query heads, when whole_blocks is set. head_split: the blocks a KV
  // head's query heads are split over: 0 lets the rule pick (the most, up to 8, that keep one block per SM;
  // in split blocks only for 8 query heads of 128 elements, with the plan's splits then merged to keep about
  // 4 blocks per SM); 1, 2, 4 or 8 force it, with the plan's splits, where it divides the query heads per KV
  // head. The defaults are the measured best (tests/gpu/KERNEL_NOTES.md); tests and tuning runs set others.
  int split_grain = 16;
  // At most this many keys a split (0: no bound): long contexts then get more splits than the ~4 blocks per
  // SM the plan aims for otherwise, so more of the KV cache's loads are in flight at once.
  int split_max_keys = 0;
  // Each token's keys spread over all of the plan's splits (else the plan's fixed pieces of max_position, which
  // leave splits past a shorter context idle: a recorded step plans for the table's width).
  bool split_by_length = false;
  bool whole_blocks = true;
  int head_split = 0;
  // The per-warp kernel's split blocks (head_dim 64 or 128, block_size a multiple of 4) bring K and V through
  // a 4-group cp.async ring in shared memory per warp (3 groups in flight while one computes) instead of two
  // register groups, with one table lookup a group and the scores summed by a butterfly (about 570 instructions
  // a group of 4 keys x 4 heads against 930: the kernel is bound by issue, tests/gpu/KERNEL_NOTES.md).
  bool kv_ring = false;
  // Decode with rope and the cache write folded in (per-warp kernel only, one token per sequence): q is
  // read unrotated; the split holding each token's own position rotates new_k (kHalf pairs over the whole
  // head) and writes it and new_v [T, Hkv, hd] (the cache's dtype) to the caches at slots[t] (skipped when
  // negative), and scores the token's own key from its registers, not from the cache.
  const void* new_k = nullptr;
  const void* new_v = nullptr;
  const float* inv_freq = nullptr;  // head_dim / 2
  const int32_t* slots = nullptr;
  int64_t cache_rows = 0;
};
// Keys per split of the decode kernel's context.
int64_t attention_decode_splits(const AttentionArgs& a, int sm_count);
// The splits a launch asked for `splits` makes (the context in equal grain-rounded pieces: at most `splits`).
int64_t attention_decode_splits_made(const AttentionArgs& a, int64_t splits);
// Scratch bytes the decode kernel needs for `splits` (0 when splits == 1).
int64_t attention_decode_scratch_bytes(const AttentionArgs& a, int64_t splits);
void launch_attention_decode(const AttentionArgs& a, int64_t splits, void* scratch, const Launch& stream);
// The per-warp decode kernel (registers instead of shared-memory tiles; launch_attention_decode takes it
// when a.decode_warps is set and this says it applies): 16-bit KV, head_dim 64 / 128 / 256, up to 8 query
// heads per KV head, 16-byte aligned caches. Same split plan and partial outputs as the tiled kernel, except
// that a short context's plan runs as one wider block per KV head (or per part of its query heads) that writes
// the output itself (AttentionArgs::whole_blocks), and that a KV head's query heads may be split over
// several blocks (AttentionArgs::head_split). Returns the splits it made: the partials to combine when more
// than one.
bool attention_decode_warps_supports(const AttentionArgs& a);
int launch_attention_decode_warps(const AttentionArgs& a, int keys_per_split, int splits, float* part_o,
                                  float* part_ml, const Launch& stream);
// How a launch runs a plan: warps per block, blocks per KV head (each taking that share of its query heads),
// and the splits made (1 in the whole form: no partials to combine).
struct DecodeWarpsForm {
  int warps = 4, head_split = 1, splits = 1, keys_per_split = 0;
  bool operator==(const DecodeWarpsForm& o) const {  // spelled out: the CUDA sources build as C++17
    return warps == o.warps && head_split == o.head_split && splits == o.splits && keys_per_split == o.keys_per_split;
  }
};
DecodeWarpsForm attention_decode_warps_form(const AttentionArgs& a, int keys_per_split, int splits);
// The same for launch_attention_decode(a, splits); where the per-warp kernel does not apply, the tiled
// kernel's blocks of 4 warps as planned.
DecodeWarpsForm attention_decode_form(const AttentionArgs& a, int64_t splits);
// Prefill: the tensor-core kernel (attention_prefill_mma.cu) where it applies (bf16 q, KV and out, head_dim 64
// or 128), the SIMT kernel (attention_prefill.cu) for everything else; launch_attention_prefill picks. The
// _simt and _mma entry points force one kernel (tests and kernel_bench compare them).
void launch_attention_prefill(const AttentionArgs& a, const Launch& stream);
bool attention_prefill_supports(const AttentionArgs& a);  // either kernel
void launch_attention_prefill_simt(const AttentionArgs& a, const Launch& stream);
bool attention_prefill_simt_supports(const AttentionArgs& a);
void launch_attention_prefill_mma(const AttentionArgs& a, const Launch& stream);
bool attention_prefill_mma_supports(const AttentionArgs& a);

// ---- sampling_kernels.cu ----
// One row's sampling parameters (SamplingParams without the repetition penalty, and the draw's step).
struct DeviceSampling {
  float temperature = 0.f;
  int top_k = 0;
  float top_p = 1.f;
  float min_p = 0.f;
  uint64_t seed = 0;
  uint64_t step = 0;
};
// tokens[r] = the token drawn from row r of logits [rows, vocab] (f32) under params[r]; logprobs[r] = its
// log-softmax under the raw logits. params, tokens and logprobs are arrays of `rows` the device can address
// (device memory, or mapped host memory: the CUDA backend's sample() passes the latter).
void launch_sample(const float* logits, int64_t rows, int64_t vocab, const DeviceSampling* params, int32_t* tokens,
                   float* logprobs, const Launch& stream);

}  // namespace strata::cuda
