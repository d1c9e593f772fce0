// runtime/cuda/attention_decode.cu: paged attention, one block per (token, KV head, context split).
// GQA-aware: the block holds all G query heads of its KV head, so each K/V row is read once for the
// group. Split-K along the context (flash-decoding) keeps the GPU busy when few tokens attend to long
// contexts; a combine kernel merges the splits' (max, sum, unnormalised output). Inside a split, keys go
// in tiles of kTile with an online softmax. Correct for any batch (prefill too), efficient for decode. fp8
// caches dequantize on load (kv_fp8.cuh).
#include <algorithm>

#include "runtime/cuda/attention_decode.cuh"
#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_dtype.cuh"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/kv_fp8.cuh"
#include "runtime/cuda/pdl.cuh"

namespace strata::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kLanesPerKey = 4;  // QK phase: 4 lanes share one key's dot products, 8 keys per warp step

template <int GMAX>
__host__ __device__ constexpr int tile_keys() { return GMAX >= 16 ? 128 : 256; }

__host__ __device__ constexpr int pow2_at_least(int v) {
  int p = 1;
  while (p < v) p *= 2;
  return p;
}

// part_o: [T, H, splits, hd] unnormalised outputs; part_ml: [T, H, splits, 2] (running max, sum).
template <typename TKV, int HDMAX, int GMAX>
__global__ __launch_bounds__(kThreads) void attention_decode_kernel(AttentionArgs a, int keys_per_split, int splits,
                                                                    float* part_o, float* part_ml) {
  constexpr int kTile = tile_keys<GMAX>();
  constexpr int kChunks = HDMAX / 8;                      // 16-byte chunks of a bf16 row at most
  constexpr int kVLanes = pow2_at_least(kChunks) > 32 ? 32 : pow2_at_least(kChunks);
  constexpr int kVKeys = 32 / kVLanes;                     // keys per warp step in the PV phase
  __shared__ float q_s[GMAX][HDMAX];
  __shared__ float p_s[GMAX][kTile];
  __shared__ float o_s[GMAX][HDMAX];
  __shared__ float m_s[GMAX], l_s[GMAX], alpha_s[GMAX];

  pdl_wait();
  pdl_trigger();
  const int t = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int hd = static_cast<int>(a.head_dim);
  const int chunks = hd / 8;
  const int G = static_cast<int>(a.n_heads / a.n_kv_heads);
  const int H = static_cast<int>(a.n_heads);
  const int seq = a.token_seq[t];
  int start, end;
  decode_split_keys(a, t, split, splits, keys_per_split, start, end);
  if (start >= end) return write_empty_partial(a, t, kvh * G, G, split, splits, part_ml);

  for (int i = threadIdx.x; i < G * hd; i += kThreads) {
    const int g = i / hd, d = i % hd;
    q_s[g][d] = load_elem(a.q, a.q_dt, (int64_t{t} * H + kvh * G + g) * hd + d) * a.scale;
    o_s[g][d] = 0.f;
  }
  if (threadIdx.x < GMAX) {
    m_s[threadIdx.x] = -INFINITY;
    l_s[threadIdx.x] = 0.f;
  }
  __syncthreads();

  const TKV* kc = static_cast<const TKV*>(a.k_cache);
  const TKV* vc = static_cast<const TKV*>(a.v_cache);
  const int32_t* table = a.block_tables + int64_t{seq} * a.max_blocks;
  const int bs = static_cast<int>(a.block_size);
  const int64_t hkv = a.n_kv_heads;
  const int row_stride = kv_row_stride<TKV>(hd);  // fp8 rows carry their scale after the codes
  auto row_of = [&](int j) -> int64_t {
    const int64_t block = table[j / bs];
    return ((block * bs + j % bs) * hkv + kvh) * row_stride;
  };

  float acc[GMAX][8];
#pragma unroll
  for (int g = 0; g < GMAX; ++g)
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[g][i] = 0.f;

  const int sub = lane % kLanesPerKey;
  const int vslot = lane / kVLanes, vchunk = lane % kVLanes;
  for (int tile0 = start; tile0 < end; tile0 += kTile) {
    const int n = min(kTile, end - tile0);
    // QK: scores of the tile into p_s.
    for (int kk = warp * (32 / kLanesPerKey) + lane / kLanesPerKey; kk - lane / kLanesPerKey < n;
         kk += kWarps * (32 / kLanesPerKey)) {
      float s[GMAX];
#pragma unroll
      for (int g = 0; g < GMAX; ++g) s[g] = 0.f;
      if (kk < n) {
        const TKV* krow = kc + row_of(tile0 + kk);
#pragma unroll
        for (int c0 = 0; c0 < kChunks; c0 += kLanesPerKey) {
          const int c = c0 + sub;
          if (c < chunks) {
            float kv[8];
            load_kv8(krow, c * 8, hd, kv);
#pragma unroll
            for (int g = 0; g < GMAX; ++g)
              if (g < G) {
#pragma unroll
                for (int i = 0; i < 8; ++i) s[g] = fmaf(q_s[g][c * 8 + i], kv[i], s[g]);
              }
          }
        }
      }
#pragma unroll
      for (int g = 0; g < GMAX; ++g) {
        s[g] += __shfl_xor_sync(0xffffffffu, s[g], 1);
        s[g] += __shfl_xor_sync(0xffffffffu, s[g], 2);
      }
      if (sub == 0 && kk < n) {
#pragma unroll
        for (int g = 0; g < GMAX; ++g)
          if (g < G) p_s[g][kk] = s[g];
      }
    }
    __syncthreads();
    // Online softmax: one warp per query head.
    for (int g = warp; g < G; g += kWarps) {
      float mx = -INFINITY;
      for (int i = lane; i < n; i += 32) mx = fmaxf(mx, p_s[g][i]);
      mx = warp_max(mx);
      const float m_old = m_s[g];
      const float m_new = fmaxf(m_old, mx);
      float sum = 0.f;
      for (int i = lane; i < n; i += 32) {
        const float p = __expf(p_s[g][i] - m_new);
        p_s[g][i] = p;
        sum += p;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const float alpha = __expf(m_old - m_new);  // 0 on the first tile (m_old = -inf)
        alpha_s[g] = alpha;
        l_s[g] = l_s[g] * alpha + sum;
        m_s[g] = m_new;
      }
    }
    __syncthreads();
    // PV: each lane owns one 8-wide slice of the head for one key slot.
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
      const float alpha = g < G ? alpha_s[g] : 0.f;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[g][i] *= alpha;
    }
    if (vchunk < chunks) {
      constexpr int kStep = kWarps * kVKeys;  // keys between a lane's consecutive slots
      constexpr int kPV = 4;                  // V rows in flight per lane
      for (int kk0 = warp * kVKeys + vslot; kk0 < n; kk0 += kPV * kStep) {
        float vv[kPV][8];
#pragma unroll
        for (int u = 0; u < kPV; ++u)
          if (kk0 + u * kStep < n) load_kv8(vc + row_of(tile0 + kk0 + u * kStep), vchunk * 8, hd, vv[u]);
#pragma unroll
        for (int u = 0; u < kPV; ++u) {
          const int kk = kk0 + u * kStep;
          if (kk >= n) break;
#pragma unroll
          for (int g = 0; g < GMAX; ++g)
            if (g < G) {
              const float p = p_s[g][kk];
#pragma unroll
              for (int i = 0; i < 8; ++i) acc[g][i] = fmaf(p, vv[u][i], acc[g][i]);
            }
        }
      }
    }
    __syncthreads();  // p_s is rewritten by the next tile
  }

  // Reduce the key slots of each warp, then the warps (shared atomics).
#pragma unroll
  for (int g = 0; g < GMAX; ++g)
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int o = kVLanes; o < 32; o *= 2) acc[g][i] += __shfl_xor_sync(0xffffffffu, acc[g][i], o);
  if (vslot == 0 && vchunk < chunks) {
#pragma unroll
    for (int g = 0; g < GMAX; ++g)
      if (g < G) {
#pragma unroll
        for (int i = 0; i < 8; ++i) atomicAdd(&o_s[g][vchunk * 8 + i], acc[g][i]);
      }
  }
  __syncthreads();

  for (int i = threadIdx.x; i < G * hd; i += kThreads) {
    const int g = i / hd, d = i % hd;
    write_decode_result(a, int64_t{t} * H + kvh * G + g, d, split, splits, o_s[g][d], m_s[g], l_s[g], part_o,
                        part_ml);
  }
}

// One block per (token, head): merges the splits' partial softmaxes.
__global__ void attention_combine_kernel(const float* part_o, const float* part_ml, int splits, int hd,
                                         void* out, DType out_dt) {
  pdl_wait();
  pdl_trigger();
  const int64_t head = blockIdx.x;
  const float* ml = part_ml + head * splits * 2;
  // One pass with a running max: a split's (max, sum) and output loads do not wait for the others', so
  // they go out together (one round trip to L2, not one for the maxima and one for the outputs).
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float mx = -INFINITY, denom = 0.f, v = 0.f;
#pragma unroll 4
    for (int s = 0; s < splits; ++s) {
      const float m = ml[2 * s], l = ml[2 * s + 1], o = part_o[(head * splits + s) * hd + d];
      if (!(l > 0.f)) continue;  // an empty split
      const float top = fmaxf(mx, m), old_scale = __expf(mx - top), scale = __expf(m - top);
      denom = denom * old_scale + scale * l;
      v = v * old_scale + scale * o;
      mx = top;
    }
    store_elem(out, out_dt, head * hd + d, v / denom);
  }
}

struct SplitPlan {
  int splits = 1;
  int keys_per_split = 0;
};

// Splits are multiples of a.split_grain keys (not whole tiles): a single long sequence then still spreads
// over many SMs, and a short one over several.
int split_grain(const AttentionArgs& a) {
  STRATA_CHECK(a.split_grain == 16 || a.split_grain == 32 || a.split_grain == 64 || a.split_grain == 128,
               "decode attention split grain must be 16, 32, 64 or 128 keys, got ", a.split_grain);
  return a.split_grain;
}

// The plan of a launch asked for `splits`: equal pieces of the context rounded up to the grain, which may
// make fewer splits than asked.
SplitPlan plan_for_count(const AttentionArgs& a, int64_t splits) {
  const int64_t max_pos = std::max<int64_t>(a.max_position, 1);
  int64_t per = (max_pos + splits - 1) / splits;
  const int grain = split_grain(a);
  per = (per + grain - 1) / grain * grain;
  SplitPlan plan;
  plan.keys_per_split = static_cast<int>(per);
  plan.splits = static_cast<int>((max_pos + per - 1) / per);
  return plan;
}

SplitPlan plan_splits(const AttentionArgs& a, int sm_count) {
  const int tile = split_grain(a);
  const int64_t max_pos = std::max<int64_t>(a.max_position, 1);
  // At least 32 keys of work per query head in a split (16 keys with 2 or more heads per KV head): below
  // that the split's fixed costs and the merge outweigh the parallelism. H200, 1 token, per-warp kernel,
  // us per launch: MHA at 80 keys (table width 128) 2 / 4 / 8 splits 8.6 / 6.7 / 7.5; GQA 8 at 80 keys
  // 2 / 4 / 8 splits 17.2 / 11.7 / 9.8 (tests/gpu/attention_splits). And at least 4 keys per query head
  // of the group: each split writes a partial of head_dim + 2 floats per query head, which then stays
  // under a quarter of the K/V bytes the split reads (so 64 keys at 16 heads per KV head; not measured).
  const int64_t group = std::max<int64_t>(a.n_heads / std::max<int64_t>(a.n_kv_heads, 1), 1);
  const int64_t min_keys = std::max({int64_t{tile}, 32 / group, 4 * group});
  const int64_t max_splits = std::max<int64_t>((max_pos + min_keys - 1) / min_keys, 1);
  const int64_t blocks = std::max<int64_t>(a.n_tokens * a.n_kv_heads, 1);
  // About 4 blocks per SM: at 4000 keys (MHA, H200) 16 splits took 34 us against 41 for 32 with the
  // per-warp kernel, 54 against 63 with the tiles; GQA 8 at 4000 keys 64 splits 38 us, 32 splits 40.
  int64_t wanted = (4 * int64_t{sm_count} + blocks - 1) / blocks;
  if (a.split_max_keys > 0) wanted = std::max<int64_t>(wanted, (max_pos + a.split_max_keys - 1) / a.split_max_keys);
  return plan_for_count(a, std::clamp<int64_t>(wanted, 1, max_splits));
}

template <typename TKV, int HDMAX>
void launch_g(const AttentionArgs& a, const SplitPlan& plan, float* part_o, float* part_ml, const Launch& stream) {
  const dim3 grid(static_cast<unsigned>(a.n_tokens), static_cast<unsigned>(a.n_kv_heads),
                  static_cast<unsigned>(plan.splits));
  switch (heads_pow2(a.n_heads / a.n_kv_heads)) {
#define STRATA_DECODE_CASE(G)                                                                                     \
  case G:                                                                                                       \
    launch_pdl(attention_decode_kernel<TKV, HDMAX, G>, grid, kThreads, 0, stream, a, plan.keys_per_split,      \
               plan.splits, part_o, part_ml);                                                                 \
    break;
    STRATA_DECODE_CASE(1)
    STRATA_DECODE_CASE(2)
    STRATA_DECODE_CASE(4)
    STRATA_DECODE_CASE(8)
    STRATA_DECODE_CASE(16)
#undef STRATA_DECODE_CASE
  }
  CHECK_LAUNCH();
}

template <typename TKV>
void launch_hd(const AttentionArgs& a, const SplitPlan& plan, float* part_o, float* part_ml, const Launch& stream) {
  if (a.head_dim <= 32) launch_g<TKV, 32>(a, plan, part_o, part_ml, stream);
  else if (a.head_dim <= 64) launch_g<TKV, 64>(a, plan, part_o, part_ml, stream);
  else if (a.head_dim <= 128) launch_g<TKV, 128>(a, plan, part_o, part_ml, stream);
  else launch_g<TKV, 256>(a, plan, part_o, part_ml, stream);
}

}  // namespace

int64_t attention_decode_splits(const AttentionArgs& a, int sm_count) { return plan_splits(a, sm_count).splits; }
int64_t attention_decode_splits_made(const AttentionArgs& a, int64_t splits) { return plan_for_count(a, splits).splits; }

DecodeWarpsForm attention_decode_form(const AttentionArgs& a, int64_t splits) {
  const SplitPlan plan = plan_for_count(a, splits);
  if (a.decode_warps && attention_decode_warps_supports(a))
    return attention_decode_warps_form(a, plan.keys_per_split, plan.splits);
  return {kWarps, 1, plan.splits, plan.keys_per_split};
}

int64_t attention_decode_scratch_bytes(const AttentionArgs& a, int64_t splits) {
  if (splits <= 1) return 0;
  return a.n_tokens * a.n_heads * splits * (a.head_dim + 2) * int64_t{sizeof(float)};
}

void launch_attention_decode(const AttentionArgs& a, int64_t splits, void* scratch, const Launch& stream) {
  if (a.n_tokens == 0) return;
  STRATA_CHECK(a.head_dim % 8 == 0 && a.head_dim <= 256, "CUDA attention needs head_dim a multiple of 8 up to 256, got ",
               a.head_dim);
  STRATA_CHECK(a.n_heads / a.n_kv_heads <= 16, "CUDA decode attention supports up to 16 query heads per KV head, got ",
               a.n_heads / a.n_kv_heads);
  // The caller sized the scratch from attention_decode_splits with the same sm_count; recompute the plan
  // from the split count it chose.
  const SplitPlan plan = plan_for_count(a, splits);
  STRATA_CHECK(plan.splits <= splits, "internal: split plan grew");
  float* part_o = static_cast<float*>(scratch);
  float* part_ml = plan.splits > 1 ? part_o + a.n_tokens * a.n_heads * plan.splits * a.head_dim : nullptr;
  int made = plan.splits;
  if (a.decode_warps && attention_decode_warps_supports(a)) {
    made = launch_attention_decode_warps(a, plan.keys_per_split, plan.splits, part_o, part_ml, stream);
  } else {
    STRATA_CHECK(a.new_k == nullptr, "internal: rope and the cache write fold only into the per-warp decode kernel");
    switch (a.kv_dt) {
      case DType::kBF16: launch_hd<__nv_bfloat16>(a, plan, part_o, part_ml, stream); break;
      case DType::kF16: launch_hd<__half>(a, plan, part_o, part_ml, stream); break;
      case DType::kF32: launch_hd<float>(a, plan, part_o, part_ml, stream); break;
      case DType::kF8_E4M3: launch_hd<KvFp8>(a, plan, part_o, part_ml, stream); break;
      default:
        STRATA_THROW(ErrorKind::kInvalidArgument, "KV cache dtype ", dtype_name(a.kv_dt), " is not supported on CUDA");
    }
  }
  if (made > 1) {
    launch_pdl(attention_combine_kernel, static_cast<unsigned>(a.n_tokens * a.n_heads), 128, 0, stream, part_o,
               static_cast<const float*>(part_ml), made, static_cast<int>(a.head_dim), a.out, a.out_dt);
    CHECK_LAUNCH();
  }
}

}  // namespace strata::cuda
