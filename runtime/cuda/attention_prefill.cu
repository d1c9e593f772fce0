// runtime/cuda/attention_prefill.cu: paged causal attention for many tokens per sequence (prefill,
// chunked prefill), flash-attention style: a block owns 32 query rows (consecutive tokens x the G query
// heads of one KV head, so each K/V tile serves the whole GQA group), streams the sequence's keys in
// tiles of 32 through shared memory with an online softmax, and never materialises the score matrix.
// SIMT f32 arithmetic: the fallback for what the tensor-core kernel (attention_prefill_mma.cu) does not
// cover (f32/f16 operands, fp8 caches, head dims other than 64 and 128); launch_attention_prefill picks
// between them.
// Tiles that straddle sequences are processed one sequence at a time.
#include <algorithm>
#include <mutex>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_dtype.cuh"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/kv_fp8.cuh"

namespace strata::cuda {
namespace {

constexpr int kRows = 32;  // query rows per block
constexpr int kKeys = 32;  // keys per tile
constexpr int kThreads = 128;  // 4 threads per query row
constexpr int kPPad = kKeys + 4;

template <int HDMAX>
struct PrefillSmem {
  static constexpr int kQStride = HDMAX + 4;  // pads keep the 8 rows a warp touches in distinct banks
  static constexpr int kVStride = HDMAX + 4;
  static constexpr size_t kBytes =
      sizeof(float) * (kRows * kQStride + HDMAX * kKeys + kKeys * kVStride + kRows * kPPad) + sizeof(int) * 4 * kRows;
};

template <typename TKV, int HDMAX>
__global__ __launch_bounds__(kThreads) void attention_prefill_kernel(AttentionArgs a) {
  using S = PrefillSmem<HDMAX>;
  extern __shared__ float4 smem4[];
  float* q_s = reinterpret_cast<float*>(smem4);        // [kRows][kQStride]
  float* kt_s = q_s + kRows * S::kQStride;             // [HDMAX][kKeys] (K transposed)
  float* v_s = kt_s + HDMAX * kKeys;                   // [kKeys][kVStride]
  float* p_s = v_s + kKeys * S::kVStride;              // [kRows][kPPad]
  int* row_tok = reinterpret_cast<int*>(p_s + kRows * kPPad);
  int* row_pos = row_tok + kRows;
  int* row_seq = row_pos + kRows;
  int* pass = row_seq + kRows;  // [0]: current sequence, [1]: its largest position, [2]: rows-done mask

  const int G = static_cast<int>(a.n_heads / a.n_kv_heads);
  const int H = static_cast<int>(a.n_heads);
  const int hd = static_cast<int>(a.head_dim);
  const int chunks = hd / 8;
  const int tile_tokens = kRows / G;
  const int kvh = blockIdx.y;
  const int64_t t0 = int64_t{blockIdx.x} * tile_tokens;
  const int tid = threadIdx.x;
  const int r = tid / 4, sub = tid % 4;

  if (tid < kRows) {
    const int64_t t = t0 + tid / G;
    const bool valid = tid < tile_tokens * G && t < a.n_tokens;
    row_tok[tid] = valid ? static_cast<int>(t) : -1;
    row_pos[tid] = valid ? a.positions[t] : -1;
    row_seq[tid] = valid ? a.token_seq[t] : -1;
  }
  if (tid == 0) pass[2] = 0;
  __syncthreads();
  for (int i = tid; i < kRows * hd; i += kThreads) {
    const int row = i / hd, d = i % hd;
    float v = 0.f;
    if (row_tok[row] >= 0)
      v = load_elem(a.q, a.q_dt, (int64_t{row_tok[row]} * H + kvh * G + row % G) * hd + d) * a.scale;
    q_s[row * S::kQStride + d] = v;
  }

  const TKV* kc = static_cast<const TKV*>(a.k_cache);
  const TKV* vc = static_cast<const TKV*>(a.v_cache);
  const int bs = static_cast<int>(a.block_size);
  const int64_t hkv = a.n_kv_heads;

  while (true) {
    __syncthreads();
    if (tid == 0) {  // pick the next sequence of this tile and mark its rows
      int cur = -1, kmax = -1;
      unsigned done = static_cast<unsigned>(pass[2]);
      for (int i = 0; i < kRows; ++i) {
        if (row_tok[i] < 0 || (done >> i & 1u)) continue;
        if (cur < 0) cur = row_seq[i];
        if (row_seq[i] == cur) {
          done |= 1u << i;
          kmax = max(kmax, row_pos[i]);
        }
      }
      pass[0] = cur;
      pass[1] = kmax;
      pass[2] = static_cast<int>(done);
    }
    __syncthreads();
    const int cur = pass[0], kmax = pass[1];
    if (cur < 0) break;
    const bool active = row_tok[r] >= 0 && row_seq[r] == cur;
    const int my_pos = active ? row_pos[r] : -1;
    const int32_t* table = a.block_tables + int64_t{cur} * a.max_blocks;

    float m = -INFINITY, l = 0.f;
    float acc[HDMAX / 16][4];
#pragma unroll
    for (int i = 0; i < HDMAX / 16; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][e] = 0.f;

    for (int kb = 0; kb <= kmax; kb += kKeys) {
      // K tile transposed (keys fastest, conflict-free stores), V tile row-major (chunks fastest).
      for (int i = tid; i < kKeys * chunks; i += kThreads) {
        const int c = i % kKeys, ch = i / kKeys;
        const int j = kb + c;
        float kv[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        if (j <= kmax) {
          const int64_t row = ((int64_t{table[j / bs]} * bs + j % bs) * hkv + kvh) * kv_row_stride<TKV>(hd);
          load_kv8(kc + row, ch * 8, hd, kv);
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) kt_s[(ch * 8 + e) * kKeys + c] = kv[e];
      }
      for (int i = tid; i < kKeys * chunks; i += kThreads) {
        const int ch = i % chunks, c = i / chunks;
        const int j = kb + c;
        float vv[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        if (j <= kmax) {
          const int64_t row = ((int64_t{table[j / bs]} * bs + j % bs) * hkv + kvh) * kv_row_stride<TKV>(hd);
          load_kv8(vc + row, ch * 8, hd, vv);
        }
        float4* dst = reinterpret_cast<float4*>(v_s + c * S::kVStride + ch * 8);
        dst[0] = make_float4(vv[0], vv[1], vv[2], vv[3]);
        dst[1] = make_float4(vv[4], vv[5], vv[6], vv[7]);
      }
      __syncthreads();

      // Scores of row r against keys sub*8 .. sub*8+7.
      float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      const float* qrow = q_s + r * S::kQStride;
      for (int d = 0; d < hd; d += 4) {
        const float4 qv = *reinterpret_cast<const float4*>(qrow + d);
        const float qe[4] = {qv.x, qv.y, qv.z, qv.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float4 k0 = *reinterpret_cast<const float4*>(kt_s + (d + e) * kKeys + sub * 8);
          const float4 k1 = *reinterpret_cast<const float4*>(kt_s + (d + e) * kKeys + sub * 8 + 4);
          s[0] = fmaf(qe[e], k0.x, s[0]);
          s[1] = fmaf(qe[e], k0.y, s[1]);
          s[2] = fmaf(qe[e], k0.z, s[2]);
          s[3] = fmaf(qe[e], k0.w, s[3]);
          s[4] = fmaf(qe[e], k1.x, s[4]);
          s[5] = fmaf(qe[e], k1.y, s[5]);
          s[6] = fmaf(qe[e], k1.z, s[6]);
          s[7] = fmaf(qe[e], k1.w, s[7]);
        }
      }
      float tmax = -INFINITY;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        if (kb + sub * 8 + i > my_pos) s[i] = -INFINITY;  // causal (and inactive rows: my_pos = -1)
        tmax = fmaxf(tmax, s[i]);
      }
      tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
      tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
      const float m_new = fmaxf(m, tmax);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;  // rows with no key yet stay at zero weight
      const float alpha = __expf(m - m_use);
      float sum = 0.f;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float p = __expf(s[i] - m_use);
        sum += p;
        p_s[r * kPPad + sub * 8 + i] = p;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      l = l * alpha + sum;
      m = m_new;
#pragma unroll
      for (int i = 0; i < HDMAX / 16; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][e] *= alpha;
      __syncwarp();  // p_s of row r is written and read by the same 4 lanes

      const int kn = min(kKeys, kmax - kb + 1);
      for (int c = 0; c < kn; ++c) {
        const float p = p_s[r * kPPad + c];
        const float* vrow = v_s + c * S::kVStride;
#pragma unroll
        for (int i = 0; i < HDMAX / 16; ++i) {
          const int d = sub * 4 + 16 * i;
          if (d < hd) {
            const float4 vv = *reinterpret_cast<const float4*>(vrow + d);
            acc[i][0] = fmaf(p, vv.x, acc[i][0]);
            acc[i][1] = fmaf(p, vv.y, acc[i][1]);
            acc[i][2] = fmaf(p, vv.z, acc[i][2]);
            acc[i][3] = fmaf(p, vv.w, acc[i][3]);
          }
        }
      }
      __syncthreads();  // the next tile overwrites kt_s / v_s
    }

    if (active) {
      const int64_t base = (int64_t{row_tok[r]} * H + kvh * G + r % G) * hd;
      const float inv = 1.f / l;
#pragma unroll
      for (int i = 0; i < HDMAX / 16; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int d = sub * 4 + 16 * i + e;
          if (d < hd) store_elem(a.out, a.out_dt, base + d, acc[i][e] * inv);
        }
    }
  }
}

template <typename TKV, int HDMAX>
void launch_typed(const AttentionArgs& a, const Launch& stream) {
  using S = PrefillSmem<HDMAX>;
  static std::once_flag once;  // the opt-in above 48 KB of shared memory, once per kernel (per device: TODO)
  std::call_once(once, [] {
    CHECK_CUDA(cudaFuncSetAttribute(attention_prefill_kernel<TKV, HDMAX>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(S::kBytes)));
  });
  const int64_t G = a.n_heads / a.n_kv_heads;
  const int64_t tile_tokens = kRows / G;
  const dim3 grid(static_cast<unsigned>((a.n_tokens + tile_tokens - 1) / tile_tokens),
                  static_cast<unsigned>(a.n_kv_heads));
  attention_prefill_kernel<TKV, HDMAX><<<grid, kThreads, S::kBytes, stream.stream>>>(a);
  CHECK_LAUNCH();
}

template <typename TKV>
void launch_hd(const AttentionArgs& a, const Launch& stream) {
  if (a.head_dim <= 32) launch_typed<TKV, 32>(a, stream);
  else if (a.head_dim <= 64) launch_typed<TKV, 64>(a, stream);
  else if (a.head_dim <= 128) launch_typed<TKV, 128>(a, stream);
  else launch_typed<TKV, 256>(a, stream);
}

}  // namespace

bool attention_prefill_simt_supports(const AttentionArgs& a) {
  const int64_t G = a.n_heads / a.n_kv_heads;
  return G >= 1 && G <= kRows && a.head_dim % 8 == 0 && a.head_dim <= 256 &&
         (a.kv_dt == DType::kBF16 || a.kv_dt == DType::kF16 || a.kv_dt == DType::kF32 || a.kv_dt == DType::kF8_E4M3);
}

bool attention_prefill_supports(const AttentionArgs& a) {
  return attention_prefill_mma_supports(a) || attention_prefill_simt_supports(a);
}

void launch_attention_prefill_simt(const AttentionArgs& a, const Launch& stream) {
  if (a.n_tokens == 0) return;
  STRATA_CHECK(attention_prefill_simt_supports(a), "CUDA prefill attention does not support head_dim ", a.head_dim,
               " with ", a.n_heads / a.n_kv_heads, " query heads per KV head and KV dtype ", dtype_name(a.kv_dt));
  switch (a.kv_dt) {
    case DType::kBF16: launch_hd<__nv_bfloat16>(a, stream); break;
    case DType::kF16: launch_hd<__half>(a, stream); break;
    case DType::kF8_E4M3: launch_hd<KvFp8>(a, stream); break;  // dequantized on load (kv_fp8.cuh)
    default: launch_hd<float>(a, stream); break;
  }
}

void launch_attention_prefill(const AttentionArgs& a, const Launch& stream) {
  if (attention_prefill_mma_supports(a)) launch_attention_prefill_mma(a, stream);
  else launch_attention_prefill_simt(a, stream);
}

}  // namespace strata::cuda
