// runtime/cuda/attention_prefill_mma.cu: the tensor-core path of prefill attention (issue #5): bf16 q, KV cache
// and output, head_dim 64 or 128, FlashAttention-2 style on warp-level mma.sync m16n8k16 (sm_80 and up).
// Same semantics as the SIMT kernel in attention_prefill.cu, which keeps every other case.
#include <cuda_bf16.h>

#include <climits>
#include <cstdint>
#include <mutex>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/mma.cuh"

// Layout of the work. A block (4 warps) owns 64 consecutive tokens of the step x one query head; each warp
// owns 16 of those rows for the whole kernel (Q fragments, the output accumulator and the running max/sum
// live in its registers). The block streams the sequence's keys in tiles of 64 through shared memory:
// cp.async copies tile i+1 (K and V, gathered row by row through the block table, so any block_size works)
// while the warps compute tile i (S = Q K^T on tensor cores, online softmax in f32 with exp2 and a
// log2(e)-prescaled scale, O += P V with P rounded to bf16).
//
// One block per (query tile, query head), not per KV head: the G query heads of a KV group read the same
// K/V tiles, but from L2 (one KV head of a 2048-token sequence is 1 MiB), and blocks are numbered head
// fastest so a group's blocks run together. Packing the G heads into a block's rows instead would not
// reduce the block's shared-memory traffic per FLOP (that is set by the 64 rows per block) and would
// make the Q/O addressing and the causal skipping per row irregular.
//
// Causality and sequences. Row r is token t0 + r at position positions[t] of sequence token_seq[t]; it
// attends to its sequence's keys 0..positions[t]. A query tile may hold several sequences (chunked prefill
// packs them back to back): the block then makes one pass per sequence present, each pass streaming that
// sequence's keys and writing only that sequence's rows (the other rows are masked out and discarded).
// Nothing assumes the scheduler's order (tokens of a sequence consecutive, positions increasing); it only
// makes passes rare and the skipping below effective. Per warp, key tiles past the largest position of
// its rows are skipped and only tiles that reach past the smallest one are masked.
namespace strata::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 16 * kWarps;  // query rows (tokens) per block: one m16 slab per warp
constexpr int kKeys = 64;           // keys per tile
constexpr float kLog2e = 1.4426950408889634f;

template <int HD>
struct MmaSmem {
  // Row stride in bf16 elements: +8 (16 bytes) so the 8 row addresses of one ldmatrix 8x8 land in 8
  // different 16-byte bank groups (HD * 2 bytes is a multiple of 128, which would put all 8 in the same).
  static constexpr int kStride = HD + 8;
  static constexpr int kQElems = kRows * kStride;     // Q tile [kRows][kStride]
  static constexpr int kTileElems = kKeys * kStride;  // one K or V tile [kKeys][kStride]
  static constexpr int kChunks = HD / 8;              // 16-byte chunks per row
  // Tile copies: thread tid moves chunk tid % kChunks of rows tid / kChunks + n * kRowStep, n < kCopies.
  static constexpr int kRowStep = kThreads / kChunks;
  static constexpr int kCopies = kKeys / kRowStep;
  static_assert(kThreads % kChunks == 0 && kKeys % kRowStep == 0 && kRows == kKeys, "one copy loop for Q, K, V");
  // Q, K x 2 buffers, V x 2 buffers, then row positions and sequences and the pass state.
  static constexpr size_t kBytes =
      sizeof(bf16) * (kQElems + 4 * kTileElems) + sizeof(int) * (2 * kRows + 2) + sizeof(unsigned long long);
};

// ---- PTX wrappers (the rest are in mma.cuh) ----

// 2^x; ex2.approx of -inf is +0, which masked scores rely on.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// ---- the kernel ----

template <int HD>
__global__ __launch_bounds__(kThreads, HD == 64 ? 3 : 2) void attention_prefill_mma_kernel(AttentionArgs a) {
  using S = MmaSmem<HD>;
  constexpr int kStride = S::kStride;
  extern __shared__ uint4 smem_raw[];  // 16-byte aligned, as cp.async and ldmatrix need
  bf16* q_s = reinterpret_cast<bf16*>(smem_raw);
  bf16* k_s = q_s + S::kQElems;         // [2][kKeys][kStride]
  bf16* v_s = k_s + 2 * S::kTileElems;  // [2][kKeys][kStride]
  auto* done_s = reinterpret_cast<unsigned long long*>(v_s + 2 * S::kTileElems);  // rows already written
  int* row_pos = reinterpret_cast<int*>(done_s + 1);  // [kRows]: -1 past the last token
  int* row_seq = row_pos + kRows;                     // [kRows]: -1 past the last token
  int* pass_s = row_seq + kRows;                      // [0]: this pass's sequence, [1]: its largest position

  const int H = static_cast<int>(a.n_heads);
  const int h = blockIdx.x;
  const int kvh = h / static_cast<int>(a.n_heads / a.n_kv_heads);
  // Highest query tiles first: they have the most keys, so the short ones fill the tail of the grid.
  const int64_t t0 = int64_t{gridDim.y - 1 - blockIdx.y} * kRows;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4;        // fragment row (and row + 8)
  const int c2 = 2 * (lane % 4);  // fragment column pair

  if (tid < kRows) {
    const int64_t t = t0 + tid;
    const bool valid = t < a.n_tokens;
    row_pos[tid] = valid ? a.positions[t] : -1;
    row_seq[tid] = valid ? a.token_seq[t] : -1;
  }
  if (tid == 0) *done_s = 0;

  // Q tile -> shared (rows past the last token zero-filled) -> A fragments in registers for the whole kernel.
  const bf16* q = static_cast<const bf16*>(a.q);
  const int copy_ch = tid % S::kChunks, copy_row = tid / S::kChunks;
#pragma unroll
  for (int n = 0; n < S::kCopies; ++n) {
    const int r = copy_row + n * S::kRowStep;
    const int64_t t = t0 + r;
    const bool valid = t < a.n_tokens;
    cp_async16(q_s + r * kStride + copy_ch * 8, valid ? q + (t * H + h) * HD + copy_ch * 8 : q, valid);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t qf[HD / 16][4];  // qf[kk] = A fragment of this warp's 16 rows x dims 16kk..16kk+15
  {
    // Matrices 0..3 = (rows 0-7, dims +0), (rows 8-15, dims +0), (rows 0-7, dims +8), (rows 8-15, dims +8),
    // i.e. a[0..3] in mma_16816's order.
    const bf16* p = q_s + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + (lane >> 4) * 8;
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) ldmatrix_x4(qf[kk], p + kk * 16);
  }

  const bf16* kc = static_cast<const bf16*>(a.k_cache);
  const bf16* vc = static_cast<const bf16*>(a.v_cache);
  const int bs = static_cast<int>(a.block_size);
  const int bs_shift = (bs & (bs - 1)) == 0 ? __ffs(bs) - 1 : -1;  // block sizes are powers of two in practice
  const int64_t hkv = a.n_kv_heads;
  const float scale_log2 = a.scale * kLog2e;  // scores in log2 units: p = 2^(s * scale_log2 - m)
  // Lane offsets of the ldmatrix row addresses inside a K tile (non-transposed: B = K^T) and a V tile
  // (transposed: B = V). K: matrices (keys +0, dims +0), (keys +0, dims +8), (keys +8, dims +0),
  // (keys +8, dims +8) = b0, b1 of key block n and b0, b1 of key block n + 1. V: (keys +0, dims +0),
  // (keys +8, dims +0), (keys +0, dims +8), (keys +8, dims +8) = b0, b1 of dim block n and of n + 1.
  const int k_lane = ((lane & 7) + (lane >> 4) * 8) * kStride + ((lane >> 3) & 1) * 8;
  const int v_lane = ((lane & 7) + ((lane >> 3) & 1) * 8) * kStride + (lane >> 4) * 8;

  while (true) {
    __syncthreads();  // the previous pass is done with pass_s, done_s and the K/V buffers
    if (tid == 0) {   // pick the first sequence with rows not yet written, and mark its rows
      int cur = -1, kmax = -1;
      unsigned long long done = *done_s;
      for (int i = 0; i < kRows; ++i) {
        if (row_seq[i] < 0 || (done >> i & 1ull)) continue;
        if (cur < 0) cur = row_seq[i];
        if (row_seq[i] == cur) {
          done |= 1ull << i;
          kmax = max(kmax, row_pos[i]);
        }
      }
      pass_s[0] = cur;
      pass_s[1] = kmax;
      *done_s = done;
    }
    __syncthreads();
    const int cur = pass_s[0], kmax = pass_s[1];
    if (cur < 0) break;

    // This thread's two rows (g and g + 8 of the warp's slab): position, or -1 when not in this pass.
    const int r0 = warp * 16 + g, r1 = r0 + 8;
    const int pos0 = row_seq[r0] == cur ? row_pos[r0] : -1;
    const int pos1 = row_seq[r1] == cur ? row_pos[r1] : -1;
    const int warp_max = __reduce_max_sync(0xffffffffu, max(pos0, pos1));  // -1: nothing to do this pass
    const int warp_min = __reduce_min_sync(0xffffffffu, min(pos0, pos1));  // -1: some row is masked out
    const int32_t* table = a.block_tables + int64_t{cur} * a.max_blocks;
    const int n_tiles = kmax / kKeys + 1;

    // K and V rows kb .. kb + kKeys - 1 of sequence `cur` into buffer `buf`; keys past kmax are zeros
    // (their block-table entries may not exist, and 0 * garbage could be NaN in P V).
    auto load_tile = [&](int tile, int buf) {
      const int kb = tile * kKeys;
      bf16* kd = k_s + buf * S::kTileElems;
      bf16* vd = v_s + buf * S::kTileElems;
#pragma unroll
      for (int n = 0; n < S::kCopies; ++n) {
        const int r = copy_row + n * S::kRowStep;
        const int j = kb + r;
        const bool valid = j <= kmax;
        int64_t off = 0;
        if (valid) {
          const int blk = bs_shift >= 0 ? j >> bs_shift : j / bs;
          const int in_blk = bs_shift >= 0 ? j & (bs - 1) : j % bs;
          off = ((int64_t{table[blk]} * bs + in_blk) * hkv + kvh) * HD + copy_ch * 8;
        }
        cp_async16(kd + r * kStride + copy_ch * 8, kc + off, valid);
        cp_async16(vd + r * kStride + copy_ch * 8, vc + off, valid);
      }
    };

    float o[HD / 8][4];  // O accumulator: o[n] = rows g, g+8 x dims 8n + c2, +1 (C fragment layout)
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY;  // running max of rows g, g+8 (log2 units), same in the 4 lanes
    float l0 = 0.f, l1 = 0.f;              // running sums, this lane's columns only (summed at the end)

    load_tile(0, 0);
    cp_async_commit();
    for (int it = 0; it < n_tiles; ++it) {
      // Buffer (it + 1) & 1 was last read in iteration it - 1, which ended with a barrier.
      if (it + 1 < n_tiles) load_tile(it + 1, (it + 1) & 1);
      cp_async_commit();  // possibly empty, so that "all but the newest group" is always tile it
      cp_async_wait<1>();
      __syncthreads();

      const int kb = it * kKeys;
      if (kb <= warp_max) {  // warp-uniform: some row of this warp sees a key of this tile
        const bf16* kt = k_s + (it & 1) * S::kTileElems;
        const bf16* vt = v_s + (it & 1) * S::kTileElems;

        // S = Q K^T: s[n] = rows g, g+8 x keys kb + 8n + c2, +1.
        float s[kKeys / 8][4];
#pragma unroll
        for (int n = 0; n < kKeys / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk) {
#pragma unroll
          for (int n = 0; n < kKeys / 8; n += 2) {
            uint32_t b[4];
            ldmatrix_x4(b, kt + k_lane + n * 8 * kStride + kk * 16);
            mma_16816(s[n], qf[kk], b[0], b[1]);
            mma_16816(s[n + 1], qf[kk], b[2], b[3]);
          }
        }

        if (kb + kKeys - 1 > warp_min) {  // warp-uniform: the diagonal, a sequence boundary or the tail
#pragma unroll
          for (int n = 0; n < kKeys / 8; ++n) {
            const int j = kb + 8 * n + c2;
            if (j > pos0) s[n][0] = -INFINITY;
            if (j + 1 > pos0) s[n][1] = -INFINITY;
            if (j > pos1) s[n][2] = -INFINITY;
            if (j + 1 > pos1) s[n][3] = -INFINITY;
          }
        }

        // Online softmax. The row max is reduced over the 4 lanes that share a row (lane ^ 1, lane ^ 2).
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int n = 0; n < kKeys / 8; ++n) {
          mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
          mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        // scale > 0 (attention_prefill_mma_supports), so max(s) * scale_log2 = max(s * scale_log2).
        const float new0 = fmaxf(m0, mx0 * scale_log2), new1 = fmaxf(m1, mx1 * scale_log2);
        // A row with no key yet (masked out of this pass, or only later keys) keeps m = -inf; subtracting 0
        // instead keeps its p = 2^-inf = 0 and alpha = 0 rather than NaN.
        const float use0 = new0 == -INFINITY ? 0.f : new0, use1 = new1 == -INFINITY ? 0.f : new1;
        const float alpha0 = exp2_approx(m0 - use0), alpha1 = exp2_approx(m1 - use1);
        m0 = new0;
        m1 = new1;
        float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
        for (int n = 0; n < kKeys / 8; ++n) {
          s[n][0] = exp2_approx(fmaf(s[n][0], scale_log2, -use0));
          s[n][1] = exp2_approx(fmaf(s[n][1], scale_log2, -use0));
          s[n][2] = exp2_approx(fmaf(s[n][2], scale_log2, -use1));
          s[n][3] = exp2_approx(fmaf(s[n][3], scale_log2, -use1));
          sum0 += s[n][0] + s[n][1];
          sum1 += s[n][2] + s[n][3];
        }
        l0 = l0 * alpha0 + sum0;
        l1 = l1 * alpha1 + sum1;
#pragma unroll
        for (int n = 0; n < HD / 8; ++n) {
          o[n][0] *= alpha0;
          o[n][1] *= alpha0;
          o[n][2] *= alpha1;
          o[n][3] *= alpha1;
        }

        // O += P V. The C fragments of key blocks 2kk and 2kk + 1 are exactly the A fragment of keys
        // 16kk..16kk+15 (rows g / g+8, columns c2 / c2 + 8), so P never leaves registers.
#pragma unroll
        for (int kk = 0; kk < kKeys / 16; ++kk) {
          const uint32_t pa[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                                  pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                  pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
          for (int n = 0; n < HD / 8; n += 2) {
            uint32_t b[4];
            ldmatrix_x4_trans(b, vt + v_lane + kk * 16 * kStride + n * 8);
            mma_16816(o[n], pa, b[0], b[1]);
            mma_16816(o[n + 1], pa, b[2], b[3]);
          }
        }
      }
      __syncthreads();  // the next iteration's copy overwrites this buffer
    }

    // Finish: full row sums, normalise, store this pass's rows as bf16x2 (4 lanes write 16 contiguous bytes).
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    bf16* out = static_cast<bf16*>(a.out);
    if (pos0 >= 0) {
      const float inv = 1.f / l0;
      uint32_t* dst = reinterpret_cast<uint32_t*>(out + ((t0 + r0) * H + h) * HD + c2);
#pragma unroll
      for (int n = 0; n < HD / 8; ++n) dst[4 * n] = pack_bf16x2(o[n][0] * inv, o[n][1] * inv);
    }
    if (pos1 >= 0) {
      const float inv = 1.f / l1;
      uint32_t* dst = reinterpret_cast<uint32_t*>(out + ((t0 + r1) * H + h) * HD + c2);
#pragma unroll
      for (int n = 0; n < HD / 8; ++n) dst[4 * n] = pack_bf16x2(o[n][2] * inv, o[n][3] * inv);
    }
  }
}

template <int HD>
void launch_hd(const AttentionArgs& a, cudaStream_t stream) {
  using S = MmaSmem<HD>;
  static std::once_flag once;  // the opt-in above 48 KB of shared memory, once per kernel (per device: TODO)
  std::call_once(once, [] {
    CHECK_CUDA(cudaFuncSetAttribute(attention_prefill_mma_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(S::kBytes)));
  });
  const dim3 grid(static_cast<unsigned>(a.n_heads), static_cast<unsigned>((a.n_tokens + kRows - 1) / kRows));
  attention_prefill_mma_kernel<HD><<<grid, kThreads, S::kBytes, stream>>>(a);
  CHECK_LAUNCH();
}

bool aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

bool attention_prefill_mma_supports(const AttentionArgs& a) {
  // gridDim.y counts query tiles (at most 65535); q/k/v rows are copied in 16-byte pieces, out stored as bf16x2.
  return a.q_dt == DType::kBF16 && a.kv_dt == DType::kBF16 && a.out_dt == DType::kBF16 &&
         (a.head_dim == 64 || a.head_dim == 128) && a.n_kv_heads > 0 && a.n_heads % a.n_kv_heads == 0 &&
         a.n_heads <= INT_MAX && a.block_size > 0 && a.block_size <= INT_MAX && a.scale > 0.f &&
         a.n_tokens <= int64_t{65535} * kRows && aligned(a.q, 16) && aligned(a.k_cache, 16) &&
         aligned(a.v_cache, 16) && aligned(a.out, 4);
}

void launch_attention_prefill_mma(const AttentionArgs& a, cudaStream_t stream) {
  if (a.n_tokens == 0) return;
  STRATA_CHECK(attention_prefill_mma_supports(a), "tensor-core prefill attention does not support head_dim ",
               a.head_dim, ", q/kv/out dtypes ", dtype_name(a.q_dt), "/", dtype_name(a.kv_dt), "/",
               dtype_name(a.out_dt), " or ", a.n_tokens, " tokens; launch_attention_prefill picks the SIMT kernel");
  if (a.head_dim == 64) launch_hd<64>(a, stream);
  else launch_hd<128>(a, stream);
}

}  // namespace strata::cuda
