// runtime/cuda/cuda_backend.h: the CUDA implementation of strata::Backend (bf16 activations and KV cache,
// f32 accumulation). Only launcher/ and tests name it; model code sees the Backend interface.
// Built only with CUDA (STRATA_HAVE_CUDA); this header itself includes no CUDA header.
#pragma once
#include <memory>

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
  // matmul uses the hand-written GEMV for M <= gemv_max_rows (0..8) with f32/f16/bf16 weights, cuBLAS above.
  // 2: on an H100 the GEMV beats cuBLAS by 4-10% at M = 1, ties at M = 2 and loses from M = 4
  // (tests/gpu/KERNEL_NOTES.md). Quantized weights use the GEMV up to M = 8 whatever this says (unless 0),
  // since cuBLAS needs them dequantized first. The environment variable STRATA_GEMV_MAX_ROWS=N overrides it.
  int gemv_max_rows = 2;
  // rope_kv_write as one kernel (off: rope, rope, kv_write). STRATA_FUSED_ROPE_KV=0/1 overrides it.
  bool fuse_rope_kv_write = true;
  // Decode attention through the per-warp kernel (q, scores and output in registers, K and V of the next
  // key group loaded while one computes) where it applies, instead of the shared-memory tiles: 8.6 against
  // 14.4 us a layer at 80 keys, 34 against 54 at 4000 on an H200 (tests/gpu/attention_splits).
  // STRATA_DECODE_ATTN_WARPS=0/1 overrides it.
  bool decode_attention_warps = true;
  // Decode steps (one token per sequence) fold rope and the KV cache write into the per-warp attention
  // (Backend::rope_kv_attention): one kernel fewer per layer. STRATA_FUSED_ROPE_ATTN=0/1 overrides it.
  bool fuse_rope_attention = true;
  // Decode batches (the GEMV's rows) form the SwiGLU in the fused gate/up GEMV's epilogue, each warp owning
  // a gate row and its up row (Backend::matmul_swiglu): one kernel fewer per layer and no [M, 2F] product
  // in memory. STRATA_FUSED_SWIGLU=0/1 overrides it.
  bool fuse_swiglu = true;
  // Decode steps of one sequence leave each RMSNorm to the GEMVs (Backend::defers_norms): the output and
  // down projections add into the residual and form the next norm in their epilogue, the QKV and gate/up
  // GEMVs scale their products by it; two norm kernels fewer per layer. Off: no gain measured yet on an
  // H200 (tests/gpu/KERNEL_NOTES.md, "Batch 1 in the fifth session"). STRATA_PENDING_NORMS=0/1 overrides it.
  bool pending_norms = false;
  // Decode steps recorded once per shape as CUDA graphs and replayed (Backend::capture). The environment
  // variable STRATA_CUDA_GRAPHS=0/1 overrides it; STRATA_CUDA_PROFILE (per-op events) turns it off too.
  bool graphs = true;
  // Matmuls with 16-bit inputs and an f32 output (the LM head) through cuBLASLt instead of cublasGemmEx.
  // STRATA_CUBLASLT=0/1 overrides it.
  bool cublaslt = true;
};

// Makes a backend on CUDA device `device`. Throws strata::Error (kCuda) when the device does not exist.
std::unique_ptr<Backend> make_cuda_backend(int device = 0, const CudaBackendOptions& options = {});

// Number of visible CUDA devices; 0 when there is no driver or no GPU (never throws).
int cuda_device_count();

// Free memory of CUDA device `device` now (cudaMemGetInfo). Throws strata::Error (kCuda) on failure.
int64_t cuda_free_bytes(int device);

}  // namespace strata

namespace strata {
// The backend's compute stream as a cudaStream_t (void* here to keep CUDA headers out), for code that must
// order its own CUDA work with the backend's ops (NCCL collectives, the prefetcher's events).
void* cuda_backend_stream(Backend& backend);
}  // namespace strata
