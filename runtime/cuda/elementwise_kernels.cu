// runtime/cuda/elementwise_kernels.cu: the memory-bound small ops of the CUDA backend (dtype conversion,
// embedding, rmsnorm, rope, silu_mul, add, bias, kv_write). Element types are runtime values here: these
// ops move little data next to matmul and attention, and one kernel serves every dtype pairing.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_dtype.cuh"
#include "runtime/cuda/fp8_kernels.h"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/kv_fp8.cuh"
#include "runtime/cuda/pdl.cuh"
#include "runtime/cuda/quant_decode.cuh"
#include "runtime/cuda/rope.cuh"

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

// Block-quantized sources: one thread per 8 consecutive elements (n a multiple of 8), dequantized as the CPU
// backend does (quant_decode.cuh).
__device__ __forceinline__ void store_group(void* dst, DType dst_dt, bool vec, int64_t first, const float (&y)[8]) {
  if (vec) {
    store8(static_cast<__nv_bfloat16*>(dst) + first, y);
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) store_elem(dst, dst_dt, first + i, y[i]);
  }
}

__global__ void dequant_kernel(const void* src, DType src_dt, void* dst, DType dst_dt, bool vec, int64_t groups) {
  for (int64_t g = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; g < groups; g += int64_t{gridDim.x} * blockDim.x) {
    float y[8];
    dequant8_any(src, src_dt, g, y);
    store_group(dst, dst_dt, vec, 8 * g, y);
  }
}

__global__ void embed_kernel(const void* table, DType table_dt, int64_t vocab_rows, int64_t dim, const int32_t* ids,
                             int64_t vocab_offset, void* out, DType out_dt) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.x;
  const int64_t row = static_cast<int64_t>(ids[t]) - vocab_offset;
  const bool inside = row >= 0 && row < vocab_rows;
  if (dtype_is_quantized_dev(table_dt)) {  // dim is whole blocks, so a multiple of 8
    for (int64_t g = threadIdx.x; g < dim / 8; g += blockDim.x) {
      float y[8] = {};
      if (inside) dequant8_any(table, table_dt, row * (dim / 8) + g, y);
#pragma unroll
      for (int i = 0; i < 8; ++i) store_elem(out, out_dt, t * dim + 8 * g + i, y[i]);
    }
    return;
  }
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

// residual[i] += add[i], rounded as stored; returns the stored value (what a norm of the sum must see).
__device__ __forceinline__ float add_into(void* residual, DType res_dt, const void* add, DType add_dt, int64_t i) {
  const float v = round_to(res_dt, load_elem(residual, res_dt, i) + load_elem(add, add_dt, i));
  store_elem(residual, res_dt, i, v);
  return v;
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
    const float v =
        residual != nullptr ? add_into(residual, res_dt, x, x_dt, base + d) : load_elem(x, x_dt, base + d);
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss, shared) / static_cast<float>(dim) + eps);
  const void* src = residual != nullptr ? residual : x;
  const DType src_dt = residual != nullptr ? res_dt : x_dt;
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x)
    store_elem(out, out_dt, base + d, load_elem(src, src_dt, base + d) * inv * load_elem(weight, w_dt, d));
}

// Whether the 8-wide (16-byte) kernels may take the pointer.
bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// rmsnorm_kernel for bf16 rows (x, residual, out) of dim % 8 == 0 and dim <= 8 x 1024: each thread holds 8
// consecutive elements in registers (one 16-byte load and store each), so the row is read once, not twice.
// The prefill's norms are bandwidth-bound; the scalar kernel reached about half the copy rate there.
template <typename TW>
__global__ void rmsnorm_bf16x8_kernel(const __nv_bfloat16* x, __nv_bfloat16* residual, const TW* weight, float eps,
                                      int64_t dim, __nv_bfloat16* out) {
  __shared__ float shared[32];
  const int64_t base = blockIdx.x * dim, d = int64_t{threadIdx.x} * 8;
  // No kernel writes the weight: its load goes out before the wait, off the chain that follows it.
  float w[8] = {};
  if (d < dim) load8(weight + d, w);
  pdl_wait();
  pdl_trigger();
  float v[8] = {};
  float ss = 0.f;
  if (d < dim) {
    load8(x + base + d, v);
    if (residual != nullptr) {
      float r[8];
      load8(residual + base + d, r);
#pragma unroll
      for (int i = 0; i < 8; ++i) v[i] = round_to(DType::kBF16, r[i] + v[i]);  // the norm sees the stored sum
      store8(residual + base + d, v);
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) ss += v[i] * v[i];
  }
  const float inv = rsqrtf(block_sum(ss, shared) / static_cast<float>(dim) + eps);
  if (d < dim) {
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] *= inv * w[i];
    store8(out + base + d, v);
  }
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
    float x0 = load_elem(x, x_dt, a), x1 = load_elem(x, x_dt, b);
    rotate_pair(static_cast<float>(positions[t]) * inv_freq[i], x0, x1);
    store_elem(x, x_dt, a, x0);
    store_elem(x, x_dt, b, x1);
  }
}

// rope_kernel and kv_write_kernel in one launch: blockIdx.x is the token, blockIdx.y a slice of its work items,
// which are (in order) the rotated pairs of q's and k's heads, k's unrotated tail dims, and v's elements.
// A rotated k pair goes to the cache as it is computed, so no item reads another's output.
__global__ void rope_kv_write_kernel(RopeKvWrite a) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.x, half = a.rot_dim / 2;
  const int64_t q_pairs = a.q_heads * half, k_pairs = a.kv_heads * half;
  const int64_t tail = a.head_dim - a.rot_dim, k_tail = a.kv_heads * tail, kv_elems = a.kv_heads * a.head_dim;
  const int64_t items = q_pairs + k_pairs + k_tail + kv_elems;
  const int64_t slot = a.slots[t];
  const bool cached = slot >= 0 && slot < a.cache_rows;  // padding tokens (slot < 0) are rotated, not written
  const float pos = static_cast<float>(a.positions[t]);
  for (int64_t w = blockIdx.y * int64_t{blockDim.x} + threadIdx.x; w < items; w += int64_t{gridDim.y} * blockDim.x) {
    if (w < q_pairs + k_pairs) {
      const bool is_q = w < q_pairs;
      const int64_t p = is_q ? w : w - q_pairs, head = p / half, i = p % half;
      void* x = is_q ? a.q : a.k;
      const int64_t base = (t * (is_q ? a.q_heads : a.kv_heads) + head) * a.head_dim;
      const bool halves = a.style == RopeStyle::kHalf;
      const int64_t da = halves ? i : 2 * i, db = halves ? i + half : 2 * i + 1;
      float x0 = load_elem(x, a.dt, base + da), x1 = load_elem(x, a.dt, base + db);
      rotate_pair(pos * a.inv_freq[i], x0, x1);
      store_elem(x, a.dt, base + da, x0);
      store_elem(x, a.dt, base + db, x1);
      if (!is_q && cached) {
        const int64_t row = slot * kv_elems + head * a.head_dim;
        store_elem(a.k_cache, a.cache_dt, row + da, x0);
        store_elem(a.k_cache, a.cache_dt, row + db, x1);
      }
    } else if (!cached) {
      continue;
    } else if (w < q_pairs + k_pairs + k_tail) {
      const int64_t e = w - q_pairs - k_pairs, head = e / tail, d = a.rot_dim + e % tail;
      store_elem(a.k_cache, a.cache_dt, slot * kv_elems + head * a.head_dim + d,
                 load_elem(a.k, a.dt, t * kv_elems + head * a.head_dim + d));
    } else {
      const int64_t e = w - q_pairs - k_pairs - k_tail;
      store_elem(a.v_cache, a.cache_dt, slot * kv_elems + e, load_elem(a.v, a.dt, t * kv_elems + e));
    }
  }
}

// rope_kv_write_kernel for bf16 q, k, v and caches, kHalf pairs over the whole head: a work item is 8
// consecutive pairs (16-byte loads of both halves) or 8 elements of v.
__global__ void rope_kv_write_bf16x8_kernel(RopeKvWrite a) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.x, half = a.head_dim / 2, h8 = half / 8;
  const int64_t q_units = a.q_heads * h8, k_units = a.kv_heads * h8, kv_elems = a.kv_heads * a.head_dim;
  const int64_t units = q_units + k_units + kv_elems / 8;
  const int64_t slot = a.slots[t];
  const bool cached = slot >= 0 && slot < a.cache_rows;
  const float pos = static_cast<float>(a.positions[t]);
  for (int64_t w = blockIdx.y * int64_t{blockDim.x} + threadIdx.x; w < units; w += int64_t{gridDim.y} * blockDim.x) {
    if (w < q_units + k_units) {
      const bool is_q = w < q_units;
      const int64_t p = is_q ? w : w - q_units, head = p / h8, i0 = (p % h8) * 8;
      auto* x = static_cast<__nv_bfloat16*>(is_q ? a.q : a.k);
      const int64_t base = (t * (is_q ? a.q_heads : a.kv_heads) + head) * a.head_dim;
      float x0[8], x1[8];
      load8(x + base + i0, x0);
      load8(x + base + i0 + half, x1);
#pragma unroll
      for (int j = 0; j < 8; ++j) rotate_pair(pos * a.inv_freq[i0 + j], x0[j], x1[j]);
      store8(x + base + i0, x0);
      store8(x + base + i0 + half, x1);
      if (!is_q && cached) {
        auto* row = static_cast<__nv_bfloat16*>(a.k_cache) + slot * kv_elems + head * a.head_dim;
        store8(row + i0, x0);
        store8(row + i0 + half, x1);
      }
    } else if (cached) {
      const int64_t e = (w - q_units - k_units) * 8;
      *reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(a.v_cache) + slot * kv_elems + e) =
          *reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(a.v) + t * kv_elems + e);
    }
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

// Units of `U` (16, 4, 2 or 1 bytes): element i of x [rows, cols] goes to the part whose column range
// holds i % cols.
template <typename U>
__global__ void split_columns_kernel(const U* x, int64_t cols, int64_t n, SplitColumns p) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    int j = 0;
    int64_t begin = 0;
    while (c >= p.end[j]) begin = p.end[j++];
    static_cast<U*>(p.dst[j])[r * (p.end[j] - begin) + (c - begin)] = x[i];
  }
}

// swiglu_kernel for bf16 with f % 8 == 0: 8 outputs per thread from one 16-byte load of gate and of up.
__global__ void swiglu_bf16x8_kernel(const __nv_bfloat16* gate_up, __nv_bfloat16* out, int64_t f, int64_t n8) {
  pdl_wait();
  pdl_trigger();
  const int64_t f8 = f / 8;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n8; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / f8, c = (i % f8) * 8;
    float g[8], u[8];
    load8(gate_up + t * 2 * f + c, g);
    load8(gate_up + t * 2 * f + f + c, u);
#pragma unroll
    for (int j = 0; j < 8; ++j) g[j] = g[j] / (1.f + __expf(-g[j])) * u[j];
    store8(out + t * f + c, g);
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

// kv_write_kernel into fp8 caches (runtime/fp8_kv.h): one warp per (K or V, head) row of the token takes the
// row's amax, then writes its codes (x / scale rounded to e4m3) and the scale amax / 448 after them.
__global__ void kv_write_fp8_kernel(const void* k, const void* v, DType src_dt, const int32_t* slots,
                                    int64_t kv_heads, int64_t head_dim, void* k_cache, void* v_cache,
                                    int64_t cache_rows) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.x;
  const int64_t slot = slots[t];
  if (slot < 0 || slot >= cache_rows) return;  // padding token (or a bad slot, checked on the host side)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  const int64_t row_bytes = kv_row_stride<KvFp8>(static_cast<int>(head_dim));
  for (int64_t r = warp; r < 2 * kv_heads; r += warps) {
    const bool is_k = r < kv_heads;
    const int64_t head = is_k ? r : r - kv_heads;
    const void* src = is_k ? k : v;
    const int64_t base = (t * kv_heads + head) * head_dim;
    float amax = 0.f;
    for (int64_t i = lane; i < head_dim; i += 32) amax = fmaxf(amax, fabsf(load_elem(src, src_dt, base + i)));
    amax = warp_max(amax);
    const float scale = amax / 448.f;
    uint8_t* row = static_cast<uint8_t*>(is_k ? k_cache : v_cache) + (slot * kv_heads + head) * row_bytes;
    for (int64_t i = lane; i < head_dim; i += 32)
      row[i] = scale > 0.f ? f32_to_e4m3(load_elem(src, src_dt, base + i) / scale) : uint8_t{0};
    if (lane == 0) *reinterpret_cast<float*>(row + head_dim) = scale;
  }
}

}  // namespace

void launch_convert(const void* src, DType src_dt, void* dst, DType dst_dt, int64_t n, const Launch& stream) {
  if (n == 0) return;
  // f8_e4m3_b128 (HF FP8 checkpoints) has its own kernels; the GGUF block types share dequant_kernel.
  if (src_dt == DType::kF8_B128) return launch_convert_f8(src, dst, dst_dt, n, stream);
  if (dtype_is_quantized(src_dt)) {
    // Whole blocks, so n is a multiple of 8; bf16 output in one 16-byte store per thread where aligned.
    const bool vec = dst_dt == DType::kBF16 && reinterpret_cast<uintptr_t>(dst) % 16 == 0;
    dequant_kernel<<<grid_for(n / 8), kThreads, 0, stream.stream>>>(src, src_dt, dst, dst_dt, vec, n / 8);
    CHECK_LAUNCH();
    return;
  }
  convert_kernel<<<grid_for(n), kThreads, 0, stream.stream>>>(src, src_dt, dst, dst_dt, n);
  CHECK_LAUNCH();
}

void launch_embed(const void* table, DType table_dt, int64_t vocab_rows, int64_t dim, const int32_t* ids,
                  int64_t n_tokens, int64_t vocab_offset, void* out, DType out_dt, const Launch& stream) {
  if (n_tokens == 0) return;
  launch_pdl(embed_kernel, static_cast<unsigned>(n_tokens), kThreads, 0, stream, table, table_dt, vocab_rows, dim, ids,
             vocab_offset, out, out_dt);
  CHECK_LAUNCH();
}

void launch_rmsnorm(const void* x, DType x_dt, void* residual, DType res_dt, const void* weight, DType w_dt,
                    float eps, int64_t rows, int64_t dim, void* out, DType out_dt, const Launch& stream) {
  if (rows == 0) return;
  const bool vec = x_dt == DType::kBF16 && out_dt == DType::kBF16 && (residual == nullptr || res_dt == DType::kBF16) &&
                   (w_dt == DType::kF32 || w_dt == DType::kBF16) && dim % 8 == 0 && dim <= 8 * 1024 &&
                   aligned16(x) && aligned16(residual) && aligned16(weight) && aligned16(out);
  if (vec) {
    const unsigned threads = static_cast<unsigned>((dim / 8 + 31) / 32 * 32);
    const auto* xb = static_cast<const __nv_bfloat16*>(x);
    auto* rb = static_cast<__nv_bfloat16*>(residual);
    auto* ob = static_cast<__nv_bfloat16*>(out);
    if (w_dt == DType::kF32)
      launch_pdl(rmsnorm_bf16x8_kernel<float>, static_cast<unsigned>(rows), threads, 0, stream, xb, rb,
                 static_cast<const float*>(weight), eps, dim, ob);
    else
      launch_pdl(rmsnorm_bf16x8_kernel<__nv_bfloat16>, static_cast<unsigned>(rows), threads, 0, stream, xb, rb,
                 static_cast<const __nv_bfloat16*>(weight), eps, dim, ob);
    CHECK_LAUNCH();
    return;
  }
  const int threads = dim >= 4096 ? 1024 : dim >= 1024 ? 512 : 128;
  launch_pdl(rmsnorm_kernel, static_cast<unsigned>(rows), threads, 0, stream, x, x_dt, residual, res_dt, weight, w_dt,
             eps, dim, out, out_dt);
  CHECK_LAUNCH();
}

void launch_rope(void* x, DType x_dt, int64_t n_tokens, int64_t n_heads, int64_t head_dim, const int32_t* positions,
                 const float* inv_freq, int64_t rot_dim, RopeStyle style, const Launch& stream) {
  const int64_t pairs = n_tokens * n_heads * (rot_dim / 2);
  if (pairs == 0) return;
  launch_pdl(rope_kernel, grid_for(pairs), kThreads, 0, stream, x, x_dt, n_heads, head_dim, positions, inv_freq,
             rot_dim, style, pairs);
  CHECK_LAUNCH();
}

void launch_rope_kv_write(const RopeKvWrite& a, int64_t n_tokens, const Launch& stream) {
  if (n_tokens == 0) return;
  const bool vec = a.dt == DType::kBF16 && a.cache_dt == DType::kBF16 && a.style == RopeStyle::kHalf &&
                   a.rot_dim == a.head_dim && a.head_dim % 16 == 0 && aligned16(a.q) && aligned16(a.k) &&
                   aligned16(a.v) && aligned16(a.k_cache) && aligned16(a.v_cache);
  const int64_t items = vec ? (a.q_heads + a.kv_heads) * (a.head_dim / 16) + a.kv_heads * a.head_dim / 8
                            : (a.q_heads + a.kv_heads) * (a.rot_dim / 2) + a.kv_heads * (2 * a.head_dim - a.rot_dim);
  const auto slices = static_cast<unsigned>(std::clamp<int64_t>((items + kThreads - 1) / kThreads, 1, 64));
  const dim3 grid(static_cast<unsigned>(n_tokens), slices);
  if (vec) launch_pdl(rope_kv_write_bf16x8_kernel, grid, kThreads, 0, stream, a);
  else launch_pdl(rope_kv_write_kernel, grid, kThreads, 0, stream, a);
  CHECK_LAUNCH();
}

void launch_silu_mul(const void* gate, DType gate_dt, const void* up, DType up_dt, void* out, DType out_dt,
                     int64_t n, const Launch& stream) {
  if (n == 0) return;
  launch_pdl(silu_mul_kernel, grid_for(n), kThreads, 0, stream, gate, gate_dt, up, up_dt, out, out_dt, n);
  CHECK_LAUNCH();
}

void launch_swiglu(const void* gate_up, DType in_dt, void* out, DType out_dt, int64_t rows, int64_t f,
                   const Launch& stream) {
  const int64_t n = rows * f;
  if (n == 0) return;
  if (in_dt == DType::kBF16 && out_dt == DType::kBF16 && f % 8 == 0 && aligned16(gate_up) && aligned16(out)) {
    launch_pdl(swiglu_bf16x8_kernel, grid_for(n / 8), kThreads, 0, stream,
               static_cast<const __nv_bfloat16*>(gate_up), static_cast<__nv_bfloat16*>(out), f, n / 8);
    CHECK_LAUNCH();
    return;
  }
  launch_pdl(swiglu_kernel, grid_for(n), kThreads, 0, stream, gate_up, in_dt, out, out_dt, f, n);
  CHECK_LAUNCH();
}

void launch_split_columns(const void* x, int64_t rows, int64_t row_bytes, const SplitColumns& parts_bytes,
                          const Launch& stream) {
  if (rows == 0 || row_bytes == 0) return;
  // The widest unit that divides every part's row and aligns every pointer.
  uintptr_t mix = reinterpret_cast<uintptr_t>(x);
  for (int j = 0; j < parts_bytes.parts; ++j)
    mix |= reinterpret_cast<uintptr_t>(parts_bytes.dst[j]) | static_cast<uintptr_t>(parts_bytes.end[j]);
  const int64_t unit = mix % 16 == 0 ? 16 : mix % 4 == 0 ? 4 : mix % 2 == 0 ? 2 : 1;
  SplitColumns p = parts_bytes;
  for (int j = 0; j < p.parts; ++j) p.end[j] /= unit;
  for (int j = p.parts; j < kMaxSplitParts; ++j) p.end[j] = INT64_MAX;
  const int64_t cols = row_bytes / unit, n = rows * cols;
  auto go = [&](auto* tag) {
    using U = std::remove_pointer_t<decltype(tag)>;
    launch_pdl(split_columns_kernel<U>, grid_for(n), kThreads, 0, stream, static_cast<const U*>(x), cols, n, p);
  };
  if (unit == 16) go(static_cast<uint4*>(nullptr));
  else if (unit == 4) go(static_cast<uint32_t*>(nullptr));
  else if (unit == 2) go(static_cast<uint16_t*>(nullptr));
  else go(static_cast<uint8_t*>(nullptr));
  CHECK_LAUNCH();
}

void launch_add(void* a, DType a_dt, const void* b, DType b_dt, int64_t n, const Launch& stream) {
  if (n == 0) return;
  launch_pdl(add_kernel, grid_for(n), kThreads, 0, stream, a, a_dt, b, b_dt, n);
  CHECK_LAUNCH();
}

void launch_add_bias(void* out, DType out_dt, const void* bias, DType bias_dt, int64_t rows, int64_t cols,
                     const Launch& stream) {
  if (rows * cols == 0) return;
  add_bias_kernel<<<grid_for(rows * cols), kThreads, 0, stream.stream>>>(out, out_dt, bias, bias_dt, cols, rows * cols);
  CHECK_LAUNCH();
}

void launch_kv_write(const void* k, const void* v, DType src_dt, const int32_t* slots, int64_t n_tokens,
                     int64_t row_elems, void* k_cache, void* v_cache, DType cache_dt, int64_t cache_rows,
                     const Launch& stream) {
  if (n_tokens == 0) return;
  launch_pdl(kv_write_kernel, static_cast<unsigned>(n_tokens), 128, 0, stream, k, v, src_dt, slots, row_elems, k_cache,
             v_cache, cache_dt, cache_rows);
  CHECK_LAUNCH();
}

void launch_kv_write_fp8(const void* k, const void* v, DType src_dt, const int32_t* slots, int64_t n_tokens,
                         int64_t kv_heads, int64_t head_dim, void* k_cache, void* v_cache, int64_t cache_rows,
                         const Launch& stream) {
  if (n_tokens == 0) return;
  launch_pdl(kv_write_fp8_kernel, static_cast<unsigned>(n_tokens), 128, 0, stream, k, v, src_dt, slots, kv_heads,
             head_dim, k_cache, v_cache, cache_rows);
  CHECK_LAUNCH();
}

}  // namespace strata::cuda
