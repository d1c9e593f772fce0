// runtime/cuda/encoder_kernels.h: host-side launchers of the encoder (vision tower) kernels of the CUDA
// backend: LayerNorm with weight and bias, the GELU-family activations, and the pieces of bidirectional
// attention that run around cuBLAS's batched GEMMs (the pointer tables and the row softmax). Internal to
// runtime/cuda/; pointers are device pointers, each launcher enqueues on `stream` and checks the launch.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/cuda/launch.h"
#include "runtime/dtype.h"

namespace strata::cuda {

// out = (x - mean) / sqrt(var + eps) * weight (+ bias) over rows of `dim`; bias may be null. Any float dtypes.
void launch_layernorm(const void* x, DType x_dt, const void* weight, DType w_dt, const void* bias, DType b_dt,
                      float eps, int64_t rows, int64_t dim, void* out, DType out_dt, const Launch& stream);
// Backend's Activation, restated here: the .cu files build as C++17 and include no Backend header.
enum class EncoderActivation : uint8_t { kGeluErf, kGeluTanh, kQuickGelu };
// out[i] = act(x[i]) over n elements; out may be x.
void launch_activation(const void* x, DType x_dt, EncoderActivation act, void* out, DType out_dt, int64_t n,
                       const Launch& stream);

// The operand tables of one chunk of bidirectional attention as cublasGemmBatchedEx takes them, one entry per
// (sequence, head) of `seqs` sequences of `seq_len` tokens and `heads` heads of `head_dim`, entry
// b = s * heads + h. q, k, v and out are [seqs * seq_len, heads, head_dim] (row stride heads * head_dim
// elements of `elem_bytes`); scores is [seqs * heads, seq_len, score_ld] f32 (rows padded to score_ld
// elements, so every block and row starts 16-byte aligned). Tables: q, k, v, out, scores.
struct AttentionTables {
  const void** q = nullptr;
  const void** k = nullptr;
  const void** v = nullptr;
  void** out = nullptr;
  void** scores = nullptr;      // the first GEMM's output (f32)
  const void** probs = nullptr;  // the same rows read back as the second GEMM's input (see launch_softmax_rows)
};
void launch_attention_tables(const void* q, const void* k, const void* v, void* out, int64_t elem_bytes,
                             int64_t out_elem_bytes, void* scores, int64_t score_ld, int64_t seqs, int64_t seq_len,
                             int64_t heads, int64_t head_dim, const AttentionTables& tables, const Launch& stream);
// Row softmax of the first n of every `ld` f32 scores [rows, ld], in place: row r's probabilities are written
// as `probs_dt` from the first byte of row r on (16-bit ones fill the first half of the row: element stride
// 2 ld, f32 stride ld). A block reads its whole row before it writes, and no block touches another's row.
void launch_softmax_rows(void* scores, int64_t rows, int64_t n, int64_t ld, DType probs_dt, const Launch& stream);
// The longest row launch_softmax_rows takes (its row lives in shared memory).
int64_t softmax_rows_max_len();
// Bidirectional attention as the tensor-core prefill kernel's paged attention (AttentionArgs): every token of
// sequence s sits at position seq_len - 1 (so it sees all the sequence's keys), token_seq[t] = t / seq_len, and
// sequence s's one-block table entry is s (blocks of seq_len tokens: k and v themselves are the cache).
void launch_encoder_attention_meta(int32_t* positions, int32_t* token_seq, int32_t* tables, int64_t seqs,
                                   int64_t seq_len, const Launch& stream);

}  // namespace strata::cuda
