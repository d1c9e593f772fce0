// runtime/cuda/encoder_kernels.cu: the small kernels of the encoder ops (runtime/cuda/encoder_kernels.h):
// LayerNorm, GELU-family activations, and the operand tables and row softmax that bidirectional attention
// runs between cuBLAS's batched GEMMs. Element types are runtime values: these ops move little data next to
// the tower's GEMMs.
#include <algorithm>
#include <cstdint>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_dtype.cuh"
#include "runtime/cuda/encoder_kernels.h"

namespace strata::cuda {
namespace {

constexpr int kThreads = 256;
// A softmax row lives in shared memory: 8k f32 scores (32 KiB) stay inside the 48 KiB every device gives
// without opting in.
constexpr int64_t kSoftmaxMaxLen = 8 * 1024;

unsigned grid_for(int64_t n) {
  return static_cast<unsigned>(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, 65535 * 16));
}

// Reductions over the block (blockDim.x a multiple of 32, at most 1024); shared: 32 floats. Every thread gets
// the result; the trailing barrier lets the caller reuse `shared` at once.
__device__ float block_sum(float v, float* shared) {
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = static_cast<int>(blockDim.x + 31) / 32;
  float total = lane < warps ? shared[lane] : 0.f;
  total = warp_sum(total);
  __syncthreads();
  return total;
}
__device__ float block_max(float v, float* shared) {
  v = warp_max(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = static_cast<int>(blockDim.x + 31) / 32;
  float best = lane < warps ? shared[lane] : -INFINITY;
  best = warp_max(best);
  __syncthreads();
  return best;
}

// One block per row; two passes over the row (mean, then the variance around it: no cancellation when the
// mean is large, as the CPU backend does), then the scaled write. The row is re-read from L1/L2.
__global__ void layernorm_kernel(const void* x, DType x_dt, const void* weight, DType w_dt, const void* bias,
                                 DType b_dt, float eps, int64_t dim, void* out, DType out_dt) {
  __shared__ float shared[32];
  const int64_t base = blockIdx.x * dim;
  float sum = 0.f;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) sum += load_elem(x, x_dt, base + d);
  const float mean = block_sum(sum, shared) / static_cast<float>(dim);
  float var = 0.f;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    const float c = load_elem(x, x_dt, base + d) - mean;
    var += c * c;
  }
  const float inv = rsqrtf(block_sum(var, shared) / static_cast<float>(dim) + eps);
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    const float b = bias != nullptr ? load_elem(bias, b_dt, d) : 0.f;
    store_elem(out, out_dt, base + d, (load_elem(x, x_dt, base + d) - mean) * inv * load_elem(weight, w_dt, d) + b);
  }
}

__device__ __forceinline__ float activate(float v, EncoderActivation act) {
  switch (act) {
    case EncoderActivation::kGeluErf: return 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
    case EncoderActivation::kGeluTanh:
      return 0.5f * v * (1.f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    case EncoderActivation::kQuickGelu: return v / (1.f + expf(-1.702f * v));
  }
  return v;
}

__global__ void activation_kernel(const void* x, DType x_dt, EncoderActivation act, void* out, DType out_dt,
                                  int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    store_elem(out, out_dt, i, activate(load_elem(x, x_dt, i), act));
}

__global__ void attention_tables_kernel(const uint8_t* q, const uint8_t* k, const uint8_t* v, uint8_t* out,
                                        int64_t elem_bytes, int64_t out_elem_bytes, uint8_t* scores, int64_t score_ld,
                                        int64_t seq_len, int64_t heads, int64_t head_dim, int64_t entries,
                                        AttentionTables t) {
  const int64_t b = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (b >= entries) return;
  const int64_t s = b / heads, h = b % heads;
  const int64_t first = (s * seq_len * heads + h) * head_dim;  // element of the sequence's first token, head h
  t.q[b] = q + first * elem_bytes;
  t.k[b] = k + first * elem_bytes;
  t.v[b] = v + first * elem_bytes;
  t.out[b] = out + first * out_elem_bytes;
  uint8_t* block = scores + b * seq_len * score_ld * 4;
  t.scores[b] = block;
  t.probs[b] = block;
}

__global__ void encoder_attention_meta_kernel(int32_t* positions, int32_t* token_seq, int32_t* tables, int64_t seqs,
                                              int64_t seq_len) {
  const int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (t < seqs) tables[t] = static_cast<int32_t>(t);
  if (t >= seqs * seq_len) return;
  positions[t] = static_cast<int32_t>(seq_len - 1);
  token_seq[t] = static_cast<int32_t>(t / seq_len);
}

// One block per row of n scores: the row into shared memory, its max and the sum of exponentials, then the
// probabilities written from the row's first byte on (after the barrier that follows the last read).
__global__ void softmax_rows_kernel(float* scores, int64_t n, int64_t ld, DType probs_dt) {
  extern __shared__ float row[];
  __shared__ float shared[32];
  float* src = scores + blockIdx.x * ld;
  float best = -INFINITY;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    row[j] = src[j];
    best = fmaxf(best, row[j]);
  }
  best = block_max(best, shared);  // its barriers also order the row's loads before any store below
  float sum = 0.f;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const float e = expf(row[j] - best);
    row[j] = e;
    sum += e;
  }
  const float inv = 1.f / block_sum(sum, shared);
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) store_elem(src, probs_dt, j, row[j] * inv);
}

}  // namespace

void launch_layernorm(const void* x, DType x_dt, const void* weight, DType w_dt, const void* bias, DType b_dt,
                      float eps, int64_t rows, int64_t dim, void* out, DType out_dt, const Launch& stream) {
  if (rows == 0) return;
  layernorm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream.stream>>>(x, x_dt, weight, w_dt, bias, b_dt,
                                                                                eps, dim, out, out_dt);
  CHECK_LAUNCH();
}

void launch_activation(const void* x, DType x_dt, EncoderActivation act, void* out, DType out_dt, int64_t n,
                       const Launch& stream) {
  if (n == 0) return;
  activation_kernel<<<grid_for(n), kThreads, 0, stream.stream>>>(x, x_dt, act, out, out_dt, n);
  CHECK_LAUNCH();
}

void launch_attention_tables(const void* q, const void* k, const void* v, void* out, int64_t elem_bytes,
                             int64_t out_elem_bytes, void* scores, int64_t score_ld, int64_t seqs, int64_t seq_len,
                             int64_t heads, int64_t head_dim, const AttentionTables& tables, const Launch& stream) {
  const int64_t entries = seqs * heads;
  if (entries == 0) return;
  attention_tables_kernel<<<grid_for(entries), kThreads, 0, stream.stream>>>(
      static_cast<const uint8_t*>(q), static_cast<const uint8_t*>(k), static_cast<const uint8_t*>(v),
      static_cast<uint8_t*>(out), elem_bytes, out_elem_bytes, static_cast<uint8_t*>(scores), score_ld, seq_len, heads,
      head_dim, entries, tables);
  CHECK_LAUNCH();
}

void launch_encoder_attention_meta(int32_t* positions, int32_t* token_seq, int32_t* tables, int64_t seqs,
                                   int64_t seq_len, const Launch& stream) {
  const int64_t n = seqs * seq_len;
  if (n == 0) return;
  encoder_attention_meta_kernel<<<grid_for(n), kThreads, 0, stream.stream>>>(positions, token_seq, tables, seqs,
                                                                              seq_len);
  CHECK_LAUNCH();
}

void launch_softmax_rows(void* scores, int64_t rows, int64_t n, int64_t ld, DType probs_dt, const Launch& stream) {
  STRATA_CHECK(n > 0 && n <= kSoftmaxMaxLen && ld >= n, "attention_bidirectional: sequences of ", n,
               " tokens (rows of ", ld, "); the CUDA softmax takes 1..", kSoftmaxMaxLen);
  if (rows == 0) return;
  const int threads = n >= 512 ? 256 : n >= 128 ? 128 : 32;
  // Grid x holds up to 2^31 - 1 blocks: rows = sequences x heads x seq_len stays far below.
  softmax_rows_kernel<<<static_cast<unsigned>(rows), threads, static_cast<size_t>(n) * sizeof(float),
                        stream.stream>>>(static_cast<float*>(scores), n, ld, probs_dt);
  CHECK_LAUNCH();
}

int64_t softmax_rows_max_len() { return kSoftmaxMaxLen; }

}  // namespace strata::cuda
