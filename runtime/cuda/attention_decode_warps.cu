// runtime/cuda/attention_decode_warps.cu: paged decode attention with the online softmax kept per warp in
// registers. Same grid (token, KV head, context split), split plan and partial format as the tiled kernel
// in attention_decode.cu, but no block barrier per key tile: each of the 4 warps walks its own groups of
// kKeys consecutive keys, issues the K and V rows of the next group before it computes the current one (V
// does not wait for the softmax), and the warps merge once at the end. q and the output slice live in
// registers: lane l owns elements [l * EPL, (l + 1) * EPL) of every head, so a K or V row is one 4/8/16-byte
// load per lane. The split's block-table entries are staged in shared memory first, so no key waits on a
// table read. Short contexts were bound by the tiled kernel's chain of dependent steps (14 us a layer at
// 80 keys on an H200, tests/gpu/KERNEL_NOTES.md); this kernel targets that latency.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "runtime/cuda/attention_decode.cuh"
#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_dtype.cuh"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/pdl.cuh"
#include "runtime/cuda/rope.cuh"

namespace strata::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kTableCap = 512;  // staged block-table entries (8192 keys at block size 16)

// Keys per warp group (their loads go out together): 8, fewer where the heads' slices already take many
// registers (scores, q, output and two groups of rows are all per lane; ptxas then spilled).
template <int EPL, int GMAX>
__host__ __device__ constexpr int group_keys() { return GMAX * EPL >= 32 ? 2 : GMAX * EPL >= 16 ? 4 : 8; }

// One lane's slice of a 16-bit K or V row: EPL elements, 4 / 8 / 16 bytes.
template <int EPL>
struct Slice {
  using type = std::conditional_t<EPL == 2, uint32_t, std::conditional_t<EPL == 4, uint2, uint4>>;
};

template <typename TKV, int EPL>
__device__ __forceinline__ void to_float(const typename Slice<EPL>::type& raw, float (&v)[EPL]) {
  const auto* h = reinterpret_cast<const std::conditional_t<std::is_same_v<TKV, __half>, __half2, __nv_bfloat162>*>(&raw);
#pragma unroll
  for (int i = 0; i < EPL / 2; ++i) {
    float2 f;
    if constexpr (std::is_same_v<TKV, __half>) f = __half22float2(h[i]);
    else f = __bfloat1622float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}

// The token's own key and value into the caches (AttentionArgs::new_k): k rotated by its position (kHalf
// pairs over the whole head, as rope_kv_write does), v as it is. Run by the split that will read them.
template <typename TKV, int kHd>
__device__ void write_new_kv(const AttentionArgs& a, int t, int kvh, int pos) {
  const int64_t slot = a.slots[t];
  if (slot < 0 || slot >= a.cache_rows) return;  // a padding token
  const int64_t src = (int64_t{t} * a.n_kv_heads + kvh) * kHd, dst = (slot * a.n_kv_heads + kvh) * kHd;
  const auto* k = static_cast<const TKV*>(a.new_k);
  const auto* v = static_cast<const TKV*>(a.new_v);
  auto* kc = static_cast<TKV*>(const_cast<void*>(a.k_cache));
  auto* vc = static_cast<TKV*>(const_cast<void*>(a.v_cache));
  constexpr int kHalf = kHd / 2;
  for (int j = threadIdx.x; j < kHalf; j += blockDim.x) {
    float x0 = cuda::to_float(k[src + j]), x1 = cuda::to_float(k[src + j + kHalf]);
    rotate_pair(static_cast<float>(pos) * a.inv_freq[j], x0, x1);
    kc[dst + j] = from_float<TKV>(x0);
    kc[dst + j + kHalf] = from_float<TKV>(x1);
  }
  for (int d = threadIdx.x; d < kHd; d += blockDim.x) vc[dst + d] = v[src + d];
}

template <typename TKV, int EPL, int GMAX>
__global__ __launch_bounds__(kWarps * 32) void attention_decode_warps_kernel(AttentionArgs a, int keys_per_split,
                                                                             int splits, float* part_o,
                                                                             float* part_ml) {
  using Raw = typename Slice<EPL>::type;
  constexpr int kHd = 32 * EPL;
  constexpr int kKeys = group_keys<EPL, GMAX>();
  __shared__ int32_t blocks_s[kTableCap];
  __shared__ float m_s[kWarps][GMAX], l_s[kWarps][GMAX];
  __shared__ float o_s[kWarps][GMAX][kHd];

  const int t = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int G = static_cast<int>(a.n_heads / a.n_kv_heads);
  const int H = static_cast<int>(a.n_heads);
  // The step's inputs (positions, tables) were copied in before the step's first kernel (and every kernel
  // triggers its dependents only after its own wait), so they and the staged table are read before the wait
  // for the QKV product.
  const int seq = a.token_seq[t];
  int start, end;
  decode_split_keys(a, t, split, keys_per_split, start, end);

  // The split's block-table entries (or none, when they do not fit: then each group reads the table).
  const int bs = static_cast<int>(a.block_size);
  const int32_t* table = a.block_tables + int64_t{seq} * a.max_blocks;
  const int first_block = start / bs, n_blocks = start < end ? (end - 1) / bs - first_block + 1 : 0;
  const bool staged = n_blocks <= kTableCap;
  if (staged)
    for (int i = threadIdx.x; i < n_blocks; i += kWarps * 32) blocks_s[i] = table[first_block + i];
  __syncthreads();  // blocks_s

  const bool rope = a.new_k != nullptr;
  const int pos = a.positions[t];
  pdl_wait();
  pdl_trigger();
  if (start >= end) return write_empty_partial(a, t, kvh, split, splits, part_ml);
  if (rope && start <= pos && pos < end) write_new_kv<TKV, kHd>(a, t, kvh, pos);

  float q[GMAX][EPL];
#pragma unroll
  for (int g = 0; g < GMAX; ++g)
#pragma unroll
    for (int i = 0; i < EPL; ++i)
      q[g][i] = g < G ? load_elem(a.q, a.q_dt, (int64_t{t} * H + kvh * G + g) * kHd + lane * EPL + i) : 0.f;
  if (rope) {  // element d pairs with d +- kHd / 2, which lane ^ 16 holds at the same index
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
      float sn, cs;  // one angle for the element in every query head of the group
      sincosf(static_cast<float>(pos) * a.inv_freq[(lane * EPL + i) % (kHd / 2)], &sn, &cs);
#pragma unroll
      for (int g = 0; g < GMAX; ++g) {
        const float other = __shfl_xor_sync(0xffffffffu, q[g][i], 16);
        const bool low = lane < 16;  // this lane holds the pair's first element
        float x0 = low ? q[g][i] : other, x1 = low ? other : q[g][i];
        rotate_pair(sn, cs, x0, x1);
        q[g][i] = low ? x0 : x1;
      }
    }
  }
#pragma unroll
  for (int g = 0; g < GMAX; ++g)
#pragma unroll
    for (int i = 0; i < EPL; ++i) q[g][i] *= a.scale;
  __syncthreads();  // the token's own K and V rows

  const TKV* kc = static_cast<const TKV*>(a.k_cache);
  const TKV* vc = static_cast<const TKV*>(a.v_cache);
  const int64_t hkv = a.n_kv_heads;
  auto row_of = [&](int j) -> int64_t {
    const int64_t block = staged ? blocks_s[j / bs - first_block] : table[j / bs];
    return ((block * bs + j % bs) * hkv + kvh) * kHd + lane * EPL;
  };
  auto load_group = [&](int base, Raw (&k)[kKeys], Raw (&v)[kKeys]) {
#pragma unroll
    for (int u = 0; u < kKeys; ++u)
      if (base + u < end) {
        const int64_t r = row_of(base + u);
        k[u] = *reinterpret_cast<const Raw*>(kc + r);
        v[u] = *reinterpret_cast<const Raw*>(vc + r);
      } else {
        k[u] = Raw{};  // past the split: scored but never weighted
        v[u] = Raw{};
      }
  };

  float m[GMAX], l[GMAX], o[GMAX][EPL];
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.f;
#pragma unroll
    for (int i = 0; i < EPL; ++i) o[g][i] = 0.f;
  }
  // The group's scores first (independent warp sums overlap), then one rescale of the running state.
  auto compute_group = [&](int base, const Raw (&k)[kKeys], const Raw (&v)[kKeys]) {
    float s[kKeys][GMAX];
#pragma unroll
    for (int u = 0; u < kKeys; ++u) {
      float kf[EPL];
      to_float<TKV, EPL>(k[u], kf);
#pragma unroll
      for (int g = 0; g < GMAX; ++g) {
        float d = 0.f;
#pragma unroll
        for (int i = 0; i < EPL; ++i) d = fmaf(q[g][i], kf[i], d);
        s[u][g] = d;
      }
    }
#pragma unroll
    for (int u = 0; u < kKeys; ++u)
#pragma unroll
      for (int g = 0; g < GMAX; ++g) s[u][g] = g < G ? warp_sum(s[u][g]) : 0.f;
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
      if (g >= G) continue;
      float mx = m[g];
#pragma unroll
      for (int u = 0; u < kKeys; ++u)
        if (base + u < end) mx = fmaxf(mx, s[u][g]);
      const float alpha = __expf(m[g] - mx);  // 0 on the first group (m = -inf)
      l[g] *= alpha;
#pragma unroll
      for (int i = 0; i < EPL; ++i) o[g][i] *= alpha;
      m[g] = mx;
#pragma unroll
      for (int u = 0; u < kKeys; ++u) {
        if (base + u >= end) continue;
        const float p = __expf(s[u][g] - mx);
        l[g] += p;
        float vf[EPL];
        to_float<TKV, EPL>(v[u], vf);
#pragma unroll
        for (int i = 0; i < EPL; ++i) o[g][i] = fmaf(p, vf[i], o[g][i]);
      }
    }
  };

  // Two groups in flight per warp: the next group's rows load while this one computes.
  constexpr int kStride = kWarps * kKeys;
  Raw ka[kKeys], va[kKeys], kb[kKeys], vb[kKeys];
  int base = start + warp * kKeys;
  if (base < end) load_group(base, ka, va);
  for (; base < end; base += 2 * kStride) {
    if (base + kStride < end) load_group(base + kStride, kb, vb);
    compute_group(base, ka, va);
    if (base + kStride >= end) break;
    if (base + 2 * kStride < end) load_group(base + 2 * kStride, ka, va);
    compute_group(base + kStride, kb, vb);
  }

  // Merge the warps: each one's (max, sum, unnormalised output), rescaled to the block's max.
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    if (lane == 0) {
      m_s[warp][g] = m[g];
      l_s[warp][g] = l[g];
    }
#pragma unroll
    for (int i = 0; i < EPL; ++i) o_s[warp][g][lane * EPL + i] = o[g][i];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * kHd; i += kWarps * 32) {
    const int g = i / kHd, d = i % kHd;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, m_s[w][g]);
    float sum = 0.f, out = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      if (l_s[w][g] == 0.f) continue;  // a warp that got no key (m = -inf)
      const float f = __expf(m_s[w][g] - mx);
      sum += f * l_s[w][g];
      out += f * o_s[w][g][d];
    }
    write_decode_result(a, int64_t{t} * H + kvh * G + g, d, split, splits, out, mx, sum, part_o, part_ml);
  }
}

template <typename TKV, int EPL>
void launch_epl(const AttentionArgs& a, int keys_per_split, int splits, float* part_o, float* part_ml,
                cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(a.n_tokens), static_cast<unsigned>(a.n_kv_heads), static_cast<unsigned>(splits));
  const int64_t g = a.n_heads / a.n_kv_heads;
  auto go = [&](auto gmax_tag) {
    constexpr int GMAX = decltype(gmax_tag)::value;
    launch_pdl(attention_decode_warps_kernel<TKV, EPL, GMAX>, grid, kWarps * 32, 0, stream, a, keys_per_split, splits,
               part_o, part_ml);
  };
  if (g <= 1) go(std::integral_constant<int, 1>{});
  else if (g <= 2) go(std::integral_constant<int, 2>{});
  else if (g <= 4) go(std::integral_constant<int, 4>{});
  else go(std::integral_constant<int, 8>{});
  CHECK_LAUNCH();
}

template <typename TKV>
void launch_tkv(const AttentionArgs& a, int keys_per_split, int splits, float* part_o, float* part_ml,
                cudaStream_t stream) {
  if (a.head_dim == 64) launch_epl<TKV, 2>(a, keys_per_split, splits, part_o, part_ml, stream);
  else if (a.head_dim == 128) launch_epl<TKV, 4>(a, keys_per_split, splits, part_o, part_ml, stream);
  else launch_epl<TKV, 8>(a, keys_per_split, splits, part_o, part_ml, stream);
}

}  // namespace

bool attention_decode_warps_supports(const AttentionArgs& a) {
  const bool kv16 = a.kv_dt == DType::kBF16 || a.kv_dt == DType::kF16;
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return kv16 && (a.head_dim == 64 || a.head_dim == 128 || a.head_dim == 256) && a.n_kv_heads > 0 &&
         a.n_heads % a.n_kv_heads == 0 && a.n_heads / a.n_kv_heads <= 8 && aligned(a.k_cache) && aligned(a.v_cache);
}

void launch_attention_decode_warps(const AttentionArgs& a, int keys_per_split, int splits, float* part_o,
                                   float* part_ml, cudaStream_t stream) {
  STRATA_CHECK(attention_decode_warps_supports(a), "internal: the per-warp decode attention does not take head_dim ",
               a.head_dim, ", ", a.n_heads / std::max<int64_t>(a.n_kv_heads, 1), " heads per KV head, KV ",
               dtype_name(a.kv_dt));
  if (a.kv_dt == DType::kF16) launch_tkv<__half>(a, keys_per_split, splits, part_o, part_ml, stream);
  else launch_tkv<__nv_bfloat16>(a, keys_per_split, splits, part_o, part_ml, stream);
}

}  // namespace strata::cuda
