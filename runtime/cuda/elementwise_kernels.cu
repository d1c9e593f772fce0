// runtime/cuda/elementwise_kernels.cu: the memory-bound small ops of the CUDA backend (dtype conversion,
// embedding, rmsnorm, rope, silu_mul, add, bias, kv_write). Element types are runtime values here: these
// ops move little data next to matmul and attention, and one kernel serves every dtype pairing.
#include <algorithm>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_dtype.cuh"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/pdl.cuh"

namespace strata::cuda {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t n, int threads = kThreads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, 65535 * 16));
}

__global__ void convert_kernel(const void* src, DType src_dt, void* dst, DType dst_dt, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    store_elem(dst, dst_dt, i, load_elem(src, src_dt, i));
}

__global__ void embed_kernel(const void* table, DType table_dt, int64_t vocab_rows, int64_t dim, const int32_t* ids,
                             int64_t vocab_offset, void* out, DType out_dt) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.x;
  const int64_t row = static_cast<int64_t>(ids[t]) - vocab_offset;
  const bool inside = row >= 0 && row < vocab_rows;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
    store_elem(out, out_dt, t * dim + d, inside ? load_elem(table, table_dt, row * dim + d) : 0.f);
}

__device__ float block_sum(float v, float* shared) {  // shared: 32 floats; every thread gets the sum
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) / 32;
  float total = lane < warps ? shared[lane] : 0.f;
  total = warp_sum(total);
  __syncthreads();
  return total;
}

// One block per row. Pass 1 forms (residual + x, rounded as stored) and its sum of squares; pass 2
// re-reads the row (from L1/L2) to scale it. The norm uses the stored residual, as an unfused add would.
__global__ void rmsnorm_kernel(const void* x, DType x_dt, void* residual, DType res_dt, const void* weight,
                               DType w_dt, float eps, int64_t dim, void* out, DType out_dt) {
  __shared__ float shared[32];
  pdl_wait();
  pdl_trigger();
  const int64_t base = blockIdx.x * dim;
  float ss = 0.f;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    float v;
    if (residual != nullptr) {
      v = round_to(res_dt, load_elem(residual, res_dt, base + d) + load_elem(x, x_dt, base + d));
      store_elem(residual, res_dt, base + d, v);
    } else {
      v = load_elem(x, x_dt, base + d);
    }
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss, shared) / static_cast<float>(dim) + eps);
  const void* src = residual != nullptr ? residual : x;
  const DType src_dt = residual != nullptr ? res_dt : x_dt;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
    store_elem(out, out_dt, base + d, load_elem(src, src_dt, base + d) * inv * load_elem(weight, w_dt, d));
}

// One thread per rotated pair. kHalf pairs dim i with i + rot/2; kAdjacent pairs 2i with 2i + 1.
__global__ void rope_kernel(void* x, DType x_dt, int64_t n_heads, int64_t head_dim, const int32_t* positions,
                            const float* inv_freq, int64_t rot_dim, RopeStyle style, int64_t total_pairs) {
  pdl_wait();
  pdl_trigger();
  const int64_t half = rot_dim / 2;
  for (int64_t p = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; p < total_pairs;
       p += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = p % half;
    const int64_t th = p / half;  // token * n_heads + head
    const int64_t t = th / n_heads;
    const int64_t base = th * head_dim;
    const int64_t a = style == RopeStyle::kHalf ? base + i : base + 2 * i;
    const int64_t b = style == RopeStyle::kHalf ? base + i + half : base + 2 * i + 1;
    float s, c;
    sincosf(static_cast<float>(positions[t]) * inv_freq[i], &s, &c);
    const float x0 = load_elem(x, x_dt, a), x1 = load_elem(x, x_dt, b);
    store_elem(x, x_dt, a, x0 * c - x1 * s);
    store_elem(x, x_dt, b, x0 * s + x1 * c);
  }
}

__global__ void silu_mul_kernel(const void* gate, DType gate_dt, const void* up, DType up_dt, void* out,
                                DType out_dt, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float g = load_elem(gate, gate_dt, i);
    store_elem(out, out_dt, i, g / (1.f + __expf(-g)) * load_elem(up, up_dt, i));
  }
}

__global__ void swiglu_kernel(const void* gate_up, DType in_dt, void* out, DType out_dt, int64_t f, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / f, c = i % f;
    const float g = load_elem(gate_up, in_dt, t * 2 * f + c);
    store_elem(out, out_dt, i, g / (1.f + __expf(-g)) * load_elem(gate_up, in_dt, t * 2 * f + f + c));
  }
}

__global__ void add_kernel(void* a, DType a_dt, const void* b, DType b_dt, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    store_elem(a, a_dt, i, load_elem(a, a_dt, i) + load_elem(b, b_dt, i));
}

__global__ void add_bias_kernel(void* out, DType out_dt, const void* bias, DType bias_dt, int64_t cols, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    store_elem(out, out_dt, i, load_elem(out, out_dt, i) + load_elem(bias, bias_dt, i % cols));
}

__global__ void kv_write_kernel(const void* k, const void* v, DType src_dt, const int32_t* slots, int64_t row_elems,
                                void* k_cache, void* v_cache, DType cache_dt, int64_t cache_rows) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.x;
  const int64_t slot = slots[t];
  if (slot < 0 || slot >= cache_rows) return;  // padding token (or a bad slot, checked on the host side)
  for (int64_t e = threadIdx.x; e < row_elems; e += blockDim.x) {
    store_elem(k_cache, cache_dt, slot * row_elems + e, load_elem(k, src_dt, t * row_elems + e));
    store_elem(v_cache, cache_dt, slot * row_elems + e, load_elem(v, src_dt, t * row_elems + e));
  }
}

}  // namespace

void launch_convert(const void* src, DType src_dt, void* dst, DType dst_dt, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  convert_kernel<<<grid_for(n), kThreads, 0, stream>>>(src, src_dt, dst, dst_dt, n);
  CHECK_LAUNCH();
}

void launch_embed(const void* table, DType table_dt, int64_t vocab_rows, int64_t dim, const int32_t* ids,
                  int64_t n_tokens, int64_t vocab_offset, void* out, DType out_dt, cudaStream_t stream) {
  if (n_tokens == 0) return;
  launch_pdl(embed_kernel, static_cast<unsigned>(n_tokens), kThreads, 0, stream, table, table_dt, vocab_rows, dim, ids,
             vocab_offset, out, out_dt);
  CHECK_LAUNCH();
}

void launch_rmsnorm(const void* x, DType x_dt, void* residual, DType res_dt, const void* weight, DType w_dt,
                    float eps, int64_t rows, int64_t dim, void* out, DType out_dt, cudaStream_t stream) {
  if (rows == 0) return;
  const int threads = dim >= 4096 ? 1024 : dim >= 1024 ? 512 : 128;
  launch_pdl(rmsnorm_kernel, static_cast<unsigned>(rows), threads, 0, stream, x, x_dt, residual, res_dt, weight, w_dt,
             eps, dim, out, out_dt);
  CHECK_LAUNCH();
}

void launch_rope(void* x, DType x_dt, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const int32_t* positions,
                 const float* inv_freq, int64_t rot_dim, RopeStyle style, cudaStream_t stream) {
  const int64_t pairs = n_tokens * n_heads * (rot_dim / 2);
  if (pairs == 0) return;
  launch_pdl(rope_kernel, grid_for(pairs), kThreads, 0, stream, x, x_dt, n_heads, head_dim, positions, inv_freq,
             rot_dim, style, pairs);
  CHECK_LAUNCH();
}

void launch_silu_mul(const void* gate, DType gate_dt, const void* up, DType up_dt, void* out, DType out_dt,
                     int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  launch_pdl(silu_mul_kernel, grid_for(n), kThreads, 0, stream, gate, gate_dt, up, up_dt, out, out_dt, n);
  CHECK_LAUNCH();
}

void launch_swiglu(const void* gate_up, DType in_dt, void* out, DType out_dt, int64_t rows, int64_t f,
                   cudaStream_t stream) {
  const int64_t n = rows * f;
  if (n == 0) return;
  launch_pdl(swiglu_kernel, grid_for(n), kThreads, 0, stream, gate_up, in_dt, out, out_dt, f, n);
  CHECK_LAUNCH();
}

void launch_add(void* a, DType a_dt, const void* b, DType b_dt, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  launch_pdl(add_kernel, grid_for(n), kThreads, 0, stream, a, a_dt, b, b_dt, n);
  CHECK_LAUNCH();
}

void launch_add_bias(void* out, DType out_dt, const void* bias, DType bias_dt, int64_t rows, int64_t cols,
                     cudaStream_t stream) {
  if (rows * cols == 0) return;
  add_bias_kernel<<<grid_for(rows * cols), kThreads, 0, stream>>>(out, out_dt, bias, bias_dt, cols, rows * cols);
  CHECK_LAUNCH();
}

void launch_kv_write(const void* k, const void* v, DType src_dt, const int32_t* slots, int64_t n_tokens,
                     int64_t row_elems, void* k_cache, void* v_cache, DType cache_dt, int64_t cache_rows,
                     cudaStream_t stream) {
  if (n_tokens == 0) return;
  launch_pdl(kv_write_kernel, static_cast<unsigned>(n_tokens), 128, 0, stream, k, v, src_dt, slots, row_elems, k_cache,
             v_cache, cache_dt, cache_rows);
  CHECK_LAUNCH();
}

}  // namespace strata::cuda
