// runtime/cuda/attention_decode_warps.cu: paged decode attention with the online softmax kept per warp in
// registers. Same grid (token, KV head, context split), split plan and partial format as the tiled kernel
// in attention_decode.cu, but no block barrier per key tile: each warp walks its own groups of kKeys
// consecutive keys, issues the K and V rows of the next group before it computes the current one (V does not
// wait for the softmax), and the warps merge once at the end. q and the output slice live in registers: lane
// l owns elements [l * EPL, (l + 1) * EPL) of every head, so a K or V row is one 4/8/16-byte load per lane.
// The split's block-table entries are staged in shared memory first, so no key waits on a table read.
// Short contexts are bound by latency, not bytes (tests/gpu/KERNEL_NOTES.md), so: where a launch would
// split a short context over a few blocks of 4 warps, one block of 8 or 16 warps takes it whole and writes
// the output itself (no partials, no combine kernel); and with rope folded in, the first K/V group goes out
// before the wait for the QKV product, whose q and new key and value then come in one round trip (the new
// key is used from registers, not read back from the cache).
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "runtime/cuda/attention_decode.cuh"
#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_dtype.cuh"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/mma.cuh"
#include "runtime/cuda/pdl.cuh"
#include "runtime/cuda/rope.cuh"

namespace strata::cuda {
namespace {

constexpr int kTableCap = 512;  // staged block-table entries (8192 keys at block size 16)

// Keys per warp group (their loads go out together): 8, fewer where the heads' slices already take many
// registers (scores, q, output and two groups of rows are all per lane; ptxas then spilled).
__host__ __device__ constexpr int group_keys(int epl, int gmax) {
  return gmax * epl >= 32 ? 2 : gmax * epl >= 16 ? 4 : 8;
}

// Keys a group takes when its rows come through the shared-memory ring (at most 4, so that 4 stages of 4 warps
// fit the static shared memory beside the merge buffers), and whether a form can use the ring: split blocks of
// 4 warps, head_dim 64 or 128 (256 would need 64 KiB of ring).
__host__ __device__ constexpr int ring_group_keys(int epl, int gmax) { return group_keys(epl, gmax) < 4 ? group_keys(epl, gmax) : 4; }
__host__ __device__ constexpr bool ring_applies(int epl, int warps) { return warps == 4 && epl <= 4; }
constexpr int kRingStages = 4;

// One lane's slice of a 16-bit K or V row: EPL elements, 4 / 8 / 16 bytes.
template <int EPL>
struct Slice {
  using type = std::conditional_t<EPL == 2, uint32_t, std::conditional_t<EPL == 4, uint2, uint4>>;
};

// A lane's slice global -> shared without a register round trip; zero-filled (src not read) when !valid.
template <int BYTES>
__device__ __forceinline__ void cp_async_slice(void* dst, const void* src, bool valid) {
  if constexpr (BYTES == 16) {
    cp_async16(dst, src, valid);
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(smem_u32(dst)), "l"(src), "n"(BYTES),
                 "r"(valid ? BYTES : 0));
  }
}

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

// A lane's slice of a 16-bit row packed from floats (rounded as the cache stores them), and the raw bits of
// a slice of 16-bit elements: built in registers (a local array would go through the stack).
template <typename TKV>
__device__ __forceinline__ uint32_t bits16(TKV h) {
  if constexpr (std::is_same_v<TKV, __half>) return __half_as_ushort(h);
  else return __bfloat16_as_ushort(h);
}
template <int EPL>
__device__ __forceinline__ typename Slice<EPL>::type slice_of(const uint32_t (&w)[EPL / 2]) {
  if constexpr (EPL == 2) return w[0];
  else if constexpr (EPL == 4) return make_uint2(w[0], w[1]);
  else return make_uint4(w[0], w[1], w[2], w[3]);
}
template <typename TKV, int EPL>
__device__ __forceinline__ typename Slice<EPL>::type pack_slice(const float (&v)[EPL]) {
  uint32_t w[EPL / 2];
#pragma unroll
  for (int i = 0; i < EPL / 2; ++i)
    w[i] = bits16(from_float<TKV>(v[2 * i])) | bits16(from_float<TKV>(v[2 * i + 1])) << 16;
  return slice_of<EPL>(w);
}

// Grid (token, KV head x head_split, context split): with head_split > 1 each block takes 1 / head_split of
// its KV head's query heads (the blocks of a KV head read the same K/V rows, mostly from L2). STAGES 0: each
// warp holds two key groups in registers (one loading while the other computes); STAGES > 0: each warp's
// groups come through a ring of that many groups in shared memory filled by cp.async, so STAGES - 1 groups
// are in flight while one computes (AttentionArgs::kv_ring).
template <typename TKV, int EPL, int GMAX, int W, int STAGES>
__global__ __launch_bounds__(W * 32) void attention_decode_warps_kernel(AttentionArgs a, int keys_per_split,
                                                                        int splits, int head_split, float* part_o,
                                                                        float* part_ml) {
  using Raw = typename Slice<EPL>::type;
  constexpr int kHd = 32 * EPL;
  constexpr int kKeys = STAGES > 0 ? ring_group_keys(EPL, GMAX) : group_keys(EPL, GMAX);
  __shared__ int32_t blocks_s[kTableCap];
  __shared__ Raw ring_s[STAGES > 0 ? W * STAGES * 2 * kKeys * 32 : 1];  // [warp][stage][K, V][key][lane]
  __shared__ float m_s[W][GMAX], l_s[W][GMAX];
  __shared__ float o_s[W][GMAX][kHd];

  const int t = blockIdx.x, kvh = blockIdx.y / head_split, split = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int group = static_cast<int>(a.n_heads / a.n_kv_heads);  // query heads per KV head
  const int G = group / head_split;                               // this block's query heads
  const int h0 = group * kvh + G * static_cast<int>(blockIdx.y % head_split);
  const bool writes_cache = blockIdx.y % head_split == 0;  // one block of the KV head writes the new row
  const int H = static_cast<int>(a.n_heads);
  // The step's inputs (positions, tables) were copied in before the step's first kernel (and every kernel
  // triggers its dependents only after its own wait), so they and the staged table are read before the wait
  // for the QKV product.
  const int seq = a.token_seq[t];
  int start, end;
  decode_split_keys(a, t, split, splits, keys_per_split, start, end);

  // The split's block-table entries (or none, when they do not fit: then each group reads the table).
  const int bs = static_cast<int>(a.block_size);
  const int32_t* table = a.block_tables + int64_t{seq} * a.max_blocks;
  const int first_block = start / bs, n_blocks = start < end ? (end - 1) / bs - first_block + 1 : 0;
  const bool staged = n_blocks <= kTableCap;
  if (staged)
    for (int i = threadIdx.x; i < n_blocks; i += W * 32) blocks_s[i] = table[first_block + i];
  __syncthreads();  // blocks_s

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

  // With rope folded in (one token per sequence) every key but the token's own was written by an earlier
  // step, so the first group's rows go out now; the token's own row is taken from registers below.
  const bool rope = a.new_k != nullptr;
  const int pos = a.positions[t];
  const bool own = rope && start <= pos && pos < end;  // this split holds the token's own key
  constexpr int kStride = W * kKeys;
  Raw ka[kKeys], va[kKeys], kb[kKeys], vb[kKeys];
  int base = start + warp * kKeys;
  // The ring: group i of this warp (keys base + i * kStride ...) goes to stage i % STAGES, one commit group
  // each (empty past the split, so the wait counts stay aligned).
  constexpr int kStages = STAGES > 0 ? STAGES : 1;
  const auto ring_slot = [&](int stage, int kv, int u) -> Raw* {
    return &ring_s[(((warp * kStages + stage) * 2 + kv) * kKeys + u) * 32 + lane];
  };
  // A group's keys are consecutive and start at a multiple of kKeys (splits start at multiples of the grain),
  // so with block_size % kKeys == 0 (the launch checks) they share one cache block: one table lookup a group.
  const int64_t key_stride = hkv * kHd;
  const auto issue_group = [&](int i) {
    const int b = base + i * kStride;
    if (b < end) {
      const int64_t r0 = row_of(b);
#pragma unroll
      for (int u = 0; u < kKeys; ++u) {
        const bool valid = b + u < end;  // past the split: zero-filled, the address not read
        cp_async_slice<sizeof(Raw)>(ring_slot(i % kStages, 0, u), kc + r0 + u * key_stride, valid);
        cp_async_slice<sizeof(Raw)>(ring_slot(i % kStages, 1, u), vc + r0 + u * key_stride, valid);
      }
    }
    cp_async_commit();
  };
  if constexpr (STAGES > 0) {
    if (rope && base < end)
      for (int i = 0; i < STAGES - 1; ++i) issue_group(i);
  } else {
    if (rope && base < end) load_group(base, ka, va);
  }
  pdl_wait();
  pdl_trigger();
  if (start >= end) return write_empty_partial(a, t, h0, G, split, splits, part_ml);

  // q, and the token's own key and value: all loads of one round trip.
  float q[GMAX][EPL], kn[EPL] = {};
  Raw vn{};
#pragma unroll
  for (int g = 0; g < GMAX; ++g)
#pragma unroll
    for (int i = 0; i < EPL; ++i)
      q[g][i] = g < G ? load_elem(a.q, a.q_dt, (int64_t{t} * H + h0 + g) * kHd + lane * EPL + i) : 0.f;
  const int64_t own_src = (int64_t{t} * a.n_kv_heads + kvh) * kHd + lane * EPL;
  if (own) {
    const auto* k = static_cast<const TKV*>(a.new_k);
#pragma unroll
    for (int i = 0; i < EPL; ++i) kn[i] = cuda::to_float(k[own_src + i]);
    const auto* v = static_cast<const TKV*>(a.new_v);
    uint32_t w[EPL / 2];
#pragma unroll
    for (int i = 0; i < EPL / 2; ++i) w[i] = bits16(v[own_src + 2 * i]) | bits16(v[own_src + 2 * i + 1]) << 16;
    vn = slice_of<EPL>(w);
  }
  if (rope) {  // element d pairs with d +- kHd / 2, which lane ^ 16 holds at the same index
    const bool low = lane < 16;  // this lane holds the pair's first element
    const auto rotate = [low](float& x, float sn, float cs) {
      const float other = __shfl_xor_sync(0xffffffffu, x, 16);
      float x0 = low ? x : other, x1 = low ? other : x;
      rotate_pair(sn, cs, x0, x1);
      x = low ? x0 : x1;
    };
#pragma unroll
    for (int i = 0; i < EPL; ++i) {
      float sn, cs;  // one angle for the element in every query head of the group and the key
      sincosf(static_cast<float>(pos) * a.inv_freq[(lane * EPL + i) % (kHd / 2)], &sn, &cs);
#pragma unroll
      for (int g = 0; g < GMAX; ++g) rotate(q[g][i], sn, cs);
      if (own) rotate(kn[i], sn, cs);  // uniform over the block
    }
  }
  Raw kn_raw{};
  if (own) {
    kn_raw = pack_slice<TKV, EPL>(kn);
    const int64_t slot = a.slots[t];
    if (warp == 0 && writes_cache && slot >= 0 && slot < a.cache_rows) {  // not a padding token
      const int64_t dst = (slot * a.n_kv_heads + kvh) * kHd + lane * EPL;
      *reinterpret_cast<Raw*>(const_cast<TKV*>(kc) + dst) = kn_raw;
      *reinterpret_cast<Raw*>(const_cast<TKV*>(vc) + dst) = vn;
    }
  }
#pragma unroll
  for (int g = 0; g < GMAX; ++g)
#pragma unroll
    for (int i = 0; i < EPL; ++i) q[g][i] *= a.scale;
  // The token's own row in a loaded group: from registers (its cache row may not be written yet).
  auto patch_own = [&](int b, Raw (&k)[kKeys], Raw (&v)[kKeys]) {
    if (!own) return;
#pragma unroll
    for (int u = 0; u < kKeys; ++u)
      if (b + u == pos) {
        k[u] = kn_raw;
        v[u] = vn;
      }
  };
  auto load_patched = [&](int b, Raw (&k)[kKeys], Raw (&v)[kKeys]) {
    load_group(b, k, v);
    patch_own(b, k, v);
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
  // This lane's share of each key's score for each head: the dot over its EPL elements.
  const auto partial_dots = [&](const Raw (&k)[kKeys], float (&s)[kKeys][GMAX]) {
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
  };
  auto compute_group = [&](int base, const Raw (&k)[kKeys], const Raw (&v)[kKeys]) {
    float s[kKeys][GMAX];
    partial_dots(k, s);
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

  // The ring path's group (leaner: the per-warp kernel is bound by issued instructions, about 930 a group of
  // 4 keys x 4 heads in compute_group, 80 of them shuffles). The kS = kKeys x GMAX partial dot products
  // (key u, head g at u * GMAX + g) are summed over the warp by a butterfly that halves the values each step
  // (kS - 1 + 5 - log2 kS shuffles instead of 5 kS): lane l ends with the whole score of value
  // (l >> (5 - log2 kS)) & (kS - 1), takes the one exp of it, and the heads' maxima and the probabilities
  // reach every lane by shuffles.
  constexpr int kS = kKeys * GMAX;
  constexpr int kLogS = kS <= 1 ? 0 : kS == 2 ? 1 : kS == 4 ? 2 : kS == 8 ? 3 : kS == 16 ? 4 : 5;
  constexpr int kLogG = GMAX == 1 ? 0 : GMAX == 2 ? 1 : GMAX == 4 ? 2 : 3;
  static_assert((1 << kLogS) == kS && kS <= 32 && (1 << kLogG) == GMAX, "powers of two");
  constexpr int kLaneShift = 5 - kLogS;  // value j sits in the lanes l with (l >> kLaneShift) & (kS - 1) == j
  auto compute_group_lean = [&](int base, const Raw (&k)[kKeys], const Raw (&v)[kKeys]) {
    constexpr unsigned kAll = 0xffffffffu;
    float dots[kKeys][GMAX], s[kS];  // s: key u, head g at u * GMAX + g
    partial_dots(k, dots);
#pragma unroll
    for (int u = 0; u < kKeys; ++u)
#pragma unroll
      for (int g = 0; g < GMAX; ++g) s[u * GMAX + g] = dots[u][g];
    // Reduce-scatter: each step keeps one half of the values and sends the other to lane ^ off. The steps
    // are spelled out with constant sizes (a loop over steps left s[] indexed in local memory), and the
    // halves selected by masks, not `? :`.
    const auto halve = [&](auto n_tag, int off) {
      constexpr int kHalf = decltype(n_tag)::value / 2;
      const unsigned upper = (lane & off) != 0 ? ~0u : 0u;
#pragma unroll
      for (int i = 0; i < kHalf; ++i) {
        const unsigned lo = __float_as_uint(s[i]), hi = __float_as_uint(s[i + kHalf]);
        const float keep = __uint_as_float((hi & upper) | (lo & ~upper));
        const float send = __uint_as_float((lo & upper) | (hi & ~upper));
        s[i] = keep + __shfl_xor_sync(kAll, send, off);
      }
    };
    if constexpr (kS >= 2) halve(std::integral_constant<int, kS>{}, 16);
    if constexpr (kS >= 4) halve(std::integral_constant<int, kS / 2>{}, 8);
    if constexpr (kS >= 8) halve(std::integral_constant<int, kS / 4>{}, 4);
    if constexpr (kS >= 16) halve(std::integral_constant<int, kS / 8>{}, 2);
    if constexpr (kS >= 32) halve(std::integral_constant<int, kS / 16>{}, 1);
    float score = s[0];
#pragma unroll
    for (int off = 16 >> kLogS; off >= 1; off >>= 1) score += __shfl_xor_sync(kAll, score, off);
    const int idx = (lane >> kLaneShift) & (kS - 1), my_u = idx >> kLogG, my_g = idx & (GMAX - 1);
    if (base + my_u >= end || my_g >= G) score = -INFINITY;  // past the split, or a padding head
    // The group's maximum of this lane's head: its keys are the lanes that differ in the key bits of idx.
    float group_max = score;
#pragma unroll
    for (int bit = kLogG; bit < kLogS; ++bit)
      group_max = fmaxf(group_max, __shfl_xor_sync(kAll, group_max, 1 << (kLaneShift + bit)));
    float old_max = m[0];
#pragma unroll
    for (int g = 1; g < GMAX; ++g) old_max = my_g == g ? m[g] : old_max;
    const float p = score == -INFINITY ? 0.f : __expf(score - fmaxf(old_max, group_max));
    float vf[kKeys][EPL];
#pragma unroll
    for (int u = 0; u < kKeys; ++u) to_float<TKV, EPL>(v[u], vf[u]);
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
      const float head_max = __shfl_sync(kAll, group_max, g << kLaneShift);  // key 0's lane of head g
      if (g >= G) continue;
      const float mx = fmaxf(m[g], head_max);
      const float alpha = __expf(m[g] - mx);  // 0 on the first group (m = -inf)
      l[g] *= alpha;
#pragma unroll
      for (int i = 0; i < EPL; ++i) o[g][i] *= alpha;
      m[g] = mx;
#pragma unroll
      for (int u = 0; u < kKeys; ++u) {
        const float pu = __shfl_sync(kAll, p, (u * GMAX + g) << kLaneShift);
        l[g] += pu;
#pragma unroll
        for (int i = 0; i < EPL; ++i) o[g][i] = fmaf(pu, vf[u][i], o[g][i]);
      }
    }
  };

  if constexpr (STAGES > 0) {
    // STAGES - 1 groups in flight: group i is read once its copies are done, and its stage's previous
    // occupant (group i - 1, already in registers and computed) is refilled with group i + STAGES - 1.
    if (!rope && base < end)
      for (int i = 0; i < STAGES - 1; ++i) issue_group(i);
    for (int i = 0; base + i * kStride < end; ++i) {
      const int b = base + i * kStride;
      cp_async_wait<STAGES - 2>();
#pragma unroll
      for (int u = 0; u < kKeys; ++u) {
        ka[u] = *ring_slot(i % kStages, 0, u);
        va[u] = *ring_slot(i % kStages, 1, u);
      }
      patch_own(b, ka, va);
      issue_group(i + STAGES - 1);
      compute_group_lean(b, ka, va);
    }
    cp_async_wait<0>();
  } else {
    // Two groups in flight per warp: the next group's rows load while this one computes.
    if (!rope && base < end) load_group(base, ka, va);
    patch_own(base, ka, va);
    for (; base < end; base += 2 * kStride) {
      if (base + kStride < end) load_patched(base + kStride, kb, vb);
      compute_group(base, ka, va);
      if (base + kStride >= end) break;
      if (base + 2 * kStride < end) load_patched(base + 2 * kStride, ka, va);
      compute_group(base + kStride, kb, vb);
    }
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
  for (int i = threadIdx.x; i < G * kHd; i += W * 32) {
    const int g = i / kHd, d = i % kHd;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < W; ++w) mx = fmaxf(mx, m_s[w][g]);
    float sum = 0.f, out = 0.f;
#pragma unroll
    for (int w = 0; w < W; ++w) {
      if (l_s[w][g] == 0.f) continue;  // a warp that got no key (m = -inf)
      const float f = __expf(m_s[w][g] - mx);
      sum += f * l_s[w][g];
      out += f * o_s[w][g][d];
    }
    write_decode_result(a, int64_t{t} * H + h0 + g, d, split, splits, out, mx, sum, part_o, part_ml);
  }
}

// Warps a block may take: 16 where a lane's share of the heads is small enough for the 128 registers of a
// 512-thread block (ptxas, sm_90: head_dim 64, or 128 with up to 4 query heads per KV head: 87-128, no spills;
// head_dim 256 or 8 heads at 128 spilled), else 8 while the merge buffers fit the 48 KiB of static shared
// memory.
constexpr int max_warps(int epl, int gmax) { return epl <= 4 && epl * gmax <= 16 ? 16 : epl * gmax <= 32 ? 8 : 4; }

// How a plan of `splits` x `keys_per_split` keys runs. A short context runs as one block of 8 or 16 warps that
// takes every key and writes the output itself (no partials, no combine kernel), where each warp then has at
// most two key groups: a plan of 2-4 splits (H200, attention_splits, MHA, us per launch: 80 keys, table 128,
// 5.0 whole against 5.9 in 4 splits; but at 500 keys 14.8 against 13.5, at 4000 keys 99 against 81: past a
// few groups a warp, the same warps on 4 SMs outrun them on one), or any plan whose keys are one group a warp
// of 16 warps. With several query heads per KV head, the whole form splits them over up to 8 blocks of the
// same KV head (`head_split`), the most that keeps one block per SM: fewer heads a warp take fewer registers
// (so 16 warps and larger key groups), and the step's few KV heads fill more SMs (80 keys, 4 query heads per
// KV head: 9.07 us in 8 split blocks, 4.96 whole over 4 blocks; 8 per KV head: 19.09 in 4 splits, 5.11 over
// 8 blocks). Other plans run in blocks of 4 warps (below).
DecodeWarpsForm choose_form(const AttentionArgs& a, int epl, int keys_per_split, int splits) {
  const int g = static_cast<int>(a.n_heads / a.n_kv_heads);
  const int64_t blocks = a.n_tokens * a.n_kv_heads;
  // The forced split, else the most blocks per KV head (up to 8, dividing its query heads) that keep one
  // block per SM.
  const int head_split_forced = a.head_split;
  STRATA_CHECK(head_split_forced == 0 || head_split_forced == 1 || head_split_forced == 2 || head_split_forced == 4 ||
                   head_split_forced == 8,
               "decode attention head split must be 0 (the rule), 1, 2, 4 or 8 blocks per KV head, got ",
               head_split_forced);
  const bool forced = head_split_forced > 0 && g % head_split_forced == 0;
  int most = forced ? head_split_forced : 1;
  for (int h = 8; !forced && h > 1 && most == 1; h /= 2)
    if (g % h == 0 && blocks * h <= a.sm_count) most = h;
  if (a.whole_blocks && splits > 1) {
    const int64_t keys = int64_t{keys_per_split} * splits;
    const auto whole_warps = [&](int head_split) {  // 0: no whole block for these heads
      const int gm = heads_pow2(g / head_split), most_warps = max_warps(epl, gm), group = group_keys(epl, gm);
      const int w = 4 * splits <= 8 ? 8 : 16;
      if (4 * splits <= most_warps && keys <= int64_t{2} * w * group) return w;
      if (most_warps >= 16 && keys <= int64_t{16} * group) return 16;
      return 0;
    };
    for (int hs = most; hs >= (forced ? most : 1); hs /= 2)  // fewer blocks where the heads do not fit
      if (const int warps = whole_warps(hs); warps > 0) return {warps, hs, 1, static_cast<int>(keys)};
  }
  // Split blocks of 4 warps. By the rule the query heads go over `most` blocks only where all of them would
  // leave a warp 2-key groups (8 heads of 128 elements), with adjacent splits merged so the blocks stay about
  // 4 per SM (as plan_splits aims). H200, 1 token, us per launch: 8 query heads per KV head at 500 keys 23.5
  // in 16 splits, 11.6 in 8 splits of one head; one TP8 rank of 70b-shape (8 on 1) at 500 keys 22.8 against
  // 9.1. With 4 heads (4-key groups) the kernel gain is smaller (4000 keys: 36.9 against 32.1) and a decode
  // step at a 2000-token context did not follow the kernel times' order, so that stays one block a KV head.
  if (forced) return {4, most, splits, keys_per_split};
  if (most == 1 || group_keys(epl, heads_pow2(g)) > 2) return {4, 1, splits, keys_per_split};
  const int64_t wanted = std::max<int64_t>(1, (int64_t{4} * a.sm_count + blocks * most - 1) / (blocks * most));
  const int merge = static_cast<int>(std::max<int64_t>(1, (splits + wanted - 1) / wanted));
  return {4, most, (splits + merge - 1) / merge, keys_per_split * merge};
}

template <typename TKV, int EPL>
int launch_epl(const AttentionArgs& a, int keys_per_split, int splits, float* part_o, float* part_ml,
               const Launch& stream) {
  const DecodeWarpsForm f = choose_form(a, EPL, keys_per_split, splits);
  const dim3 grid(static_cast<unsigned>(a.n_tokens), static_cast<unsigned>(a.n_kv_heads * f.head_split),
                  static_cast<unsigned>(f.splits));
  auto go = [&](auto gmax_tag) {
    constexpr int GMAX = decltype(gmax_tag)::value;
    constexpr int kMax = max_warps(EPL, GMAX);
    auto run = [&](auto width_tag) {
      constexpr int kW = decltype(width_tag)::value;
      if constexpr (ring_applies(EPL, kW)) {
        if (a.kv_ring && a.block_size % 4 == 0)  // a group's keys in one cache block (issue_group)
          return launch_pdl(attention_decode_warps_kernel<TKV, EPL, GMAX, kW, kRingStages>, grid, kW * 32, 0, stream,
                            a, f.keys_per_split, f.splits, f.head_split, part_o, part_ml);
      }
      launch_pdl(attention_decode_warps_kernel<TKV, EPL, GMAX, kW, 0>, grid, kW * 32, 0, stream, a, f.keys_per_split,
                 f.splits, f.head_split, part_o, part_ml);
    };
    if constexpr (kMax >= 16)
      if (f.warps == 16) return run(std::integral_constant<int, 16>{});
    if constexpr (kMax >= 8)
      if (f.warps == 8) return run(std::integral_constant<int, 8>{});
    run(std::integral_constant<int, 4>{});
  };
  switch (heads_pow2(static_cast<int>(a.n_heads / a.n_kv_heads) / f.head_split)) {
    case 1: go(std::integral_constant<int, 1>{}); break;
    case 2: go(std::integral_constant<int, 2>{}); break;
    case 4: go(std::integral_constant<int, 4>{}); break;
    default: go(std::integral_constant<int, 8>{}); break;
  }
  CHECK_LAUNCH();
  return f.splits;
}

template <typename TKV>
int launch_tkv(const AttentionArgs& a, int keys_per_split, int splits, float* part_o, float* part_ml,
               const Launch& stream) {
  if (a.head_dim == 64) return launch_epl<TKV, 2>(a, keys_per_split, splits, part_o, part_ml, stream);
  if (a.head_dim == 128) return launch_epl<TKV, 4>(a, keys_per_split, splits, part_o, part_ml, stream);
  return launch_epl<TKV, 8>(a, keys_per_split, splits, part_o, part_ml, stream);
}

}  // namespace

bool attention_decode_warps_supports(const AttentionArgs& a) {
  const bool kv16 = a.kv_dt == DType::kBF16 || a.kv_dt == DType::kF16;
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return kv16 && (a.head_dim == 64 || a.head_dim == 128 || a.head_dim == 256) && a.n_kv_heads > 0 &&
         a.n_heads % a.n_kv_heads == 0 && a.n_heads / a.n_kv_heads <= 8 && aligned(a.k_cache) && aligned(a.v_cache);
}

DecodeWarpsForm attention_decode_warps_form(const AttentionArgs& a, int keys_per_split, int splits) {
  const int epl = static_cast<int>(a.head_dim / 32);
  return choose_form(a, epl, keys_per_split, splits);
}

int launch_attention_decode_warps(const AttentionArgs& a, int keys_per_split, int splits, float* part_o,
                                  float* part_ml, const Launch& stream) {
  STRATA_CHECK(attention_decode_warps_supports(a), "internal: the per-warp decode attention does not take head_dim ",
               a.head_dim, ", ", a.n_heads / std::max<int64_t>(a.n_kv_heads, 1), " heads per KV head, KV ",
               dtype_name(a.kv_dt));
  if (a.kv_dt == DType::kF16) return launch_tkv<__half>(a, keys_per_split, splits, part_o, part_ml, stream);
  return launch_tkv<__nv_bfloat16>(a, keys_per_split, splits, part_o, part_ml, stream);
}

}  // namespace strata::cuda
