// runtime/cuda/cuda_backend.h: the CUDA implementation of strata::Backend (bf16 activations and KV cache,
// f32 accumulation). Only launcher/ and tests name it; model code sees the Backend interface.
// Built only with CUDA (STRATA_HAVE_CUDA); this header itself includes no CUDA header.
#pragma once
#include <memory>
#include <string>

#include "runtime/backend.h"

namespace strata {

struct CudaBackendOptions {
  // Converts rank-2 f32 weights to bf16 in upload_weight (halves bytes and doubles GEMV speed; the loss is
  // below bf16 activation rounding). Rank-1 weights (norms, biases) stay f32 either way: they are tiny.
  bool f32_weights_to_bf16 = true;
  // Attention kernel choice. kAuto: the per-token decode kernel (split-K over the context) when the step
  // has at most 4 tokens per sequence on average, else the tiled prefill kernel. kPrefill is the tensor-core
  // kernel where it applies (bf16, head_dim 64 or 128) and the SIMT one elsewhere; kPrefillSimt forces the
  // SIMT one. Tests force each path; kernel_bench compares the two prefill kernels.
  enum class AttentionPath { kAuto, kDecode, kPrefill, kPrefillSimt };
  AttentionPath attention_path = AttentionPath::kAuto;
  // The fields below are set by the launcher (--kernel-options, --cuda-graphs, --profile-ops; README.md);
  // the defaults are the forms measured best (tests/gpu/KERNEL_NOTES.md), the others stay for A/B runs.
  //
  // matmul uses the hand-written GEMV for M <= gemv_max_rows (0..8) with f32/f16/bf16 weights, cuBLAS above.
  // 2: on an H100 the GEMV beats cuBLAS by 4-10% at M = 1, ties at M = 2 and loses from M = 4. Quantized
  // weights use the GEMV up to M = 8 whatever this says (unless 0), since cuBLAS needs them dequantized first.
  int gemv_max_rows = 2;
  // Matmuls with Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 / Q4_K / Q5_K / Q6_K weights and quant_mma_min_rows <= M <=
  // quant_mma_max_rows rows of x take the tensor-core quantized GEMM (qgemm_mma.cu: the packed blocks read
  // once, exact products of the codes); other M and types keep the GEMV / dequantize-then-cuBLAS paths. max 0
  // turns it off; the range is 1..64. 4..32: on an H100 (kernel_bench --qmma, tests/gpu/KERNEL_NOTES.md) a 7b
  // layer's matmuls summed were 1.01-1.2x faster than the GEMV at M = 4 (Q5_K 0.84x) but 0.77-0.92x at M = 2,
  // 2.4-5.2x faster than the old paths at M = 16-32, and 0.72-0.74x dequantize + cuBLAS at M = 64 for Q8_0 and
  // Q4_K (1.04x for Q4_0).
  int quant_mma_min_rows = 4;
  int quant_mma_max_rows = 32;
  // Which kernel takes plain one-row GEMVs (bf16 x): 0 the pipelined persistent one where the plain grid is
  // at most two waves, 1 never, 2 always.
  int gemv_rolling = 0;
  // rope_kv_write as one kernel (off: rope, rope, kv_write).
  bool fuse_rope_kv_write = true;
  // Decode attention through the per-warp kernel (q, scores and output in registers, K and V of the next
  // key group loaded while one computes) where it applies, instead of the shared-memory tiles: 8.6 against
  // 14.4 us a layer at 80 keys, 34 against 54 at 4000 on an H200 (tests/gpu/attention_splits).
  bool decode_attention_warps = true;
  // Decode steps (one token per sequence) fold rope and the KV cache write into the per-warp attention
  // (Backend::rope_kv_attention): one kernel fewer per layer.
  bool fuse_rope_attention = true;
  // The per-warp decode attention's forms (cuda::AttentionArgs: split_grain, whole_blocks, head_split):
  // keys a split's length is a multiple of (16, 32, 64 or 128); short contexts in one wider block per KV
  // head; the blocks a KV head's query heads are split over (0: the rule; 1, 2, 4 or 8 force it).
  int decode_split_grain = 16;
  // At most this many keys in a decode attention split (0: no bound; cuda::AttentionArgs::split_max_keys).
  int decode_split_max_keys = 0;
  // Each decode token's keys over all of the split plan's blocks (cuda::AttentionArgs::split_by_length): a
  // recorded step plans for the table's width, which left the splits past the context idle. H100, Llama-3.1-8B
  // shape at a 32k context (65536-key table), batch 1: 12.90 -> 10.21 ms a step (bf16 KV), 12.02 -> 9.68 (fp8 KV)
  // (bench/results/gpu-s28).
  bool decode_split_by_length = true;
  bool decode_whole_blocks = true;
  int decode_head_split = 0;
  // Long-context decode attention (split blocks) loads K and V through a cp.async ring in shared memory and
  // sums the scores by a butterfly (cuda::AttentionArgs::kv_ring): more of the cache's bytes in flight per
  // warp and about 40% fewer instructions per key group. H100 (bench/results/gpu-s29): the 32k-key launch of
  // 64 splits 154 -> 71 us (DRAM 26% -> 57% of peak, Nsight Compute); Llama-3.1-8B shape decoding at a 32k
  // context 10.22 -> 7.94 ms a step.
  bool decode_kv_ring = true;
  // Decode batches (the GEMV's rows) form the SwiGLU in the fused gate/up GEMV's epilogue, each warp owning
  // a gate row and its up row (Backend::matmul_swiglu): one kernel fewer per layer and no [M, 2F] product
  // in memory.
  bool fuse_swiglu = true;
  // Mixture-of-experts steps run their selected experts as grouped launches (Backend::expert_ffn): where every
  // expert has at most moe_gemv_max_rows rows (1..8; 0: never), one GEMV launch forming the SwiGLU from the
  // gate and up rows and one for the down projection (16-bit weights); above, with bf16 weights, a grouped
  // GEMM: moe_gemm 0 cuBLAS's (gate and up in one call, silu_mul, down in one call), 1 the tensor-core kernel
  // of moe_gemm_mma.cu (gate, up and the SwiGLU in one launch, down in another), 2 the kernel where at least
  // kMoeMmaMinExperts experts average kMoeMmaMinRows rows, else cuBLAS's. On an H100 (bench/results/
  // moegemm-h100-20261207) the kernel ran a 2048-token Qwen3-30B-A3B-shape prefill (128 experts, ~128 rows
  // each) at 193k tok/s against cuBLAS's 60k, but the Mixtral-8x7B shape (8 experts, ~512 rows) at 86k
  // against 164k, and batch 64 of either (4 and 16 rows an expert) 0.93x and 0.71x cuBLAS's. Off, or for
  // quantized and f32 experts: each expert's own matmuls.
  // Steps of at most moe_gemv_max_rows tokens whose experts are all resident (16-bit, grouped GEMV) route on
  // the device (Backend::moe_routed: a routing kernel, the two grouped GEMVs reading its table, the combine):
  // no host round trip per layer, so MoE decode steps record as CUDA graphs. Off: routing on the host.
  // moe_gpu_test checks both; tests/gpu/moeroute.sh measured batch 1 at 1.12x (Qwen3-30B-A3B shape) and 1.09x
  // (Mixtral-8x7B shape) the host routing on an H100, graphs not recorded in that run (bench/results/gpu-s28).
  bool moe_device_route = true;
  bool moe_grouped = true;
  int moe_gemv_max_rows = 4;
  int moe_gemm = 2;
  static constexpr int64_t kMoeMmaMinExperts = 32, kMoeMmaMinRows = 32;
  // Programmatic dependent launch between the decode kernels (runtime/cuda/pdl.cuh), where the device has
  // it (Hopper and later).
  bool pdl = true;
  // Decode steps recorded once per shape as CUDA graphs and replayed (Backend::capture); off while profiling.
  bool graphs = true;
  // Matmuls with 16-bit inputs and an f32 output (the LM head) through cuBLASLt instead of cublasGemmEx.
  bool cublaslt = true;
  // Encoder (vision tower) attention with bf16 operands and head_dim 64 or 128 on the tensor-core prefill
  // kernel, without a score matrix in memory (off: cuBLAS batched GEMMs around a row softmax). vision_gpu_test
  // checks both; on the LLaVA-1.5-7B serving benchmark (H100) P99 at 16 requests/s went 505 -> 487 ms and
  // prefill-carrying steps 19.6 -> 18.6 ms (bench/results/gpu-s28).
  bool encoder_flash_attention = true;
  // Prefill attention over an fp8 (e4m3) KV cache on the tensor-core kernel, which rounds the dequantized rows to
  // bf16 in shared memory (off: the SIMT kernel). H100, Llama-3.1-8B shape, 32k prompt: 1477 -> 10042 tok/s
  // (bench/results/gpu-s28); kv_fp8_gpu_test checks both.
  bool prefill_mma_fp8_kv = true;
  // Matmuls with f8_e4m3_b128 weights (FP8 checkpoints) above the GEMV's rows on the e4m3 tensor cores through
  // cuBLASLt (LtGemm::run_fp8) instead of dequantizing the weight to bf16 for cuBLAS: x is quantized to e4m3
  // with one scale per token and 128 columns (DeepSeek-V3's 1x128 recipe, about 2^-4 relative error per
  // element), the weight's codes and scales are split out of its 132-byte blocks. 0: off; 1: the weight
  // split into scratch at every call; 2: the split copy made once in upload_weight and kept (1 + 4/128 more
  // bytes per weight element on the device), calls fall back to 1's for weights not uploaded that way.
  // Rows beyond the last multiple of 8 take the FP8 GEMV; shapes cuBLASLt refuses take the old path.
  // Off by default: on an H100 (bench/results/gpu-s28) 2 ran a 4-layer 7b-shape FP8 prefill at 368-375k tok/s
  // against 207k for the dequantize path and 349k for bf16 weights, but the e4m3 activations move logits
  // (fp8_gpu_test's dequantize-exact tolerances fail with it on), and perplexity on a real FP8 checkpoint has
  // not been measured.
  int fp8_cublaslt = 0;
  // Per-op GPU time from events on the compute stream, printed to stderr as a table when the backend goes
  // away (runtime/cuda/op_profiler.h). Slows every op by a few microseconds and turns graphs off.
  bool profile = false;
};

// Makes a backend on CUDA device `device`. Throws strata::Error (kCuda) when the device does not exist.
std::unique_ptr<Backend> make_cuda_backend(int device = 0, const CudaBackendOptions& options = {});

// Number of visible CUDA devices; 0 when there is no driver or no GPU (never throws).
int cuda_device_count();

// Free memory of CUDA device `device` now (cudaMemGetInfo). Throws strata::Error (kCuda) on failure.
int64_t cuda_free_bytes(int device);

// PCI bus id of CUDA device `device` ("0000:3B:00.0"): names the same card in NVML. Throws kCuda.
std::string cuda_pci_bus_id(int device);

}  // namespace strata

namespace strata {
// The backend's compute stream as a cudaStream_t (void* here to keep CUDA headers out), for code that must
// order its own CUDA work with the backend's ops (NCCL collectives, the prefetcher's events).
void* cuda_backend_stream(Backend& backend);
}  // namespace strata
