// runtime/cuda/attention_prefill_mma.cu: the tensor-core path of prefill attention (issue #5): bf16 q and
// output, a bf16 or fp8 (e4m3, kv_fp8.cuh) KV cache, head_dim 64 or 128, FlashAttention-2 style on warp-level
// mma.sync m16n8k16 (sm_80 and up). Same semantics as the SIMT kernel in attention_prefill.cu, which keeps
// every other case.
#include <cuda_bf16.h>

#include <climits>
#include <cstdint>
#include <mutex>
#include <type_traits>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/kv_fp8.cuh"
#include "runtime/cuda/mma.cuh"

// Layout of the work. A block (4 warps) owns 64 or 128 consecutive tokens of the step x one query head; each
// warp owns MT = 1 or 2 slabs of 16 of those rows for the whole kernel (the output accumulator and the running
// max/sum live in its registers; at MT = 1 the Q fragments too, at MT = 2 they are re-read from shared memory
// every key tile, as registers are short). The block streams the sequence's keys in tiles of 64 (32 at
// head_dim 128, MT = 2, where 64 would spill) through shared memory: cp.async copies tile i+1 (K and V,
// gathered row by row through the block table, so any block_size works; an fp8 cache's rows, 4-byte aligned,
// are loaded, scaled and rounded to bf16 by the threads instead) while the warps compute tile i
// (S = Q K^T on tensor cores, online softmax in f32 with exp2 and a log2(e)-prescaled scale, O += P V with P
// rounded to bf16). At MT = 2 every K/V fragment a warp loads with ldmatrix feeds two slabs, halving the
// shared-memory reads per FLOP that bound the MT = 1 kernel; it halves the blocks too, so the launcher takes
// it only when the 128-row blocks still fill every SM (measured on an H200: 1.2x at 2048 tokens x 32 heads,
// slower on small grids). 8 warps x 16 rows was measured no faster than 4 x 16: the shared-memory fill it
// saves is not the bound.
//
// One block per (query tile, query head), not per KV head: the G query heads of a KV group read the same
// K/V tiles, but from L2 (one KV head of a 2048-token sequence is 1 MiB), and blocks are numbered head
// fastest so a group's blocks run together. Packing the G heads into a block's rows instead would not
// reduce the block's shared-memory traffic per FLOP (that is set by the rows per warp) and would
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

constexpr int kMinRows = 64;  // the smallest block's query rows (attention_prefill_mma_supports' token bound)
constexpr float kLog2e = 1.4426950408889634f;

// A block of WARPS warps, each owning MT slabs of 16 query rows; head_dim HD; key tiles of KEYS; registers
// budgeted for MIN_BLOCKS blocks per SM (__launch_bounds__).
template <int HD_, int WARPS, int MT_, int KEYS, int MIN_BLOCKS>
struct MmaShape {
  static constexpr int HD = HD_, MT = MT_;
  static constexpr int kKeys = KEYS;  // keys per tile
  static constexpr int kMinBlocks = MIN_BLOCKS;
  static constexpr int kThreads = 32 * WARPS;
  static constexpr int kRows = 16 * MT * WARPS;  // query rows (tokens) per block
  // Row stride in bf16 elements: +8 (16 bytes) so the 8 row addresses of one ldmatrix 8x8 land in 8
  // different 16-byte bank groups (HD * 2 bytes is a multiple of 128, which would put all 8 in the same).
  static constexpr int kStride = HD + 8;
  static constexpr int kQElems = kRows * kStride;     // Q tile [kRows][kStride]
  static constexpr int kTileElems = kKeys * kStride;  // one K or V tile [kKeys][kStride]
  static constexpr int kChunks = HD / 8;              // 16-byte chunks per row
  // Tile copies: thread tid moves chunk tid % kChunks of rows tid / kChunks + n * kRowStep, n < kQCopies (Q)
  // or n < kKvCopies (K, V).
  static constexpr int kRowStep = kThreads / kChunks;
  static constexpr int kQCopies = kRows / kRowStep;
  static constexpr int kKvCopies = kKeys / kRowStep;
  static_assert(kThreads % kChunks == 0 && kKeys % kRowStep == 0 && kRows % kRowStep == 0, "whole copy loops");
  static_assert(kRows % 64 == 0 && kRows >= kMinRows, "done_s holds 64 rows per word");
  static constexpr int kDoneWords = kRows / 64;
  // Q, K x 2 buffers, V x 2 buffers (a multiple of 16 bytes), then the done mask, row positions and sequences
  // and the pass state.
  static constexpr size_t kBytes = sizeof(bf16) * (kQElems + 4 * kTileElems) +
                                   sizeof(unsigned long long) * kDoneWords + sizeof(int) * (2 * kRows + 2);
};

// The shapes launched (see the header comment and launch_attention_prefill_mma). Per thread (ptxas, sm_90 / sm_80,
// no spills): 156 / 153, 226 / 228, 226 / 223 and 249 / 254 registers.
using Shape64 = MmaShape<64, 4, 1, 64, 3>;     // 64 rows, 3 blocks per SM
using Shape64x2 = MmaShape<64, 4, 2, 64, 2>;   // 128 rows, 2 blocks per SM
using Shape128 = MmaShape<128, 4, 1, 64, 2>;   // 64 rows, 2 blocks per SM
using Shape128x2 = MmaShape<128, 4, 2, 32, 2>; // 128 rows, key tiles of 32 (64 spills), 2 blocks per SM

// ---- PTX wrappers (the rest are in mma.cuh) ----

// 2^x; ex2.approx of -inf is +0, which masked scores rely on.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// ---- the kernel ----

// Eight cache elements c8 .. c8 + 7 of an fp8 row (head_dim codes, then the row's f32 scale) as bf16.
template <int HD>
__device__ __forceinline__ uint4 fp8_row_to_bf16x8(const uint8_t* row, int c8) {
  const float scale = *reinterpret_cast<const float*>(row + HD);
  const uint32_t w[2] = {*reinterpret_cast<const uint32_t*>(row + c8),
                         *reinterpret_cast<const uint32_t*>(row + c8 + 4)};
  uint32_t packed[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = e4m3x2_to_float2(static_cast<uint16_t>(w[i / 2] >> (16 * (i % 2))));
    packed[i] = pack_bf16x2(f.x * scale, f.y * scale);
  }
  return make_uint4(packed[0], packed[1], packed[2], packed[3]);
}

template <class S, class TKV>
__global__ __launch_bounds__(S::kThreads, S::kMinBlocks) void attention_prefill_mma_kernel(AttentionArgs a) {
  constexpr bool kFp8 = std::is_same_v<TKV, KvFp8>;
  constexpr int HD = S::HD, MT = S::MT, kKeys = S::kKeys;
  constexpr int kStride = S::kStride, kRows = S::kRows;
  constexpr bool kQInRegs = MT == 1;  // else Q's A fragments are re-read from shared memory every key tile
  extern __shared__ uint4 smem_raw[];  // 16-byte aligned, as cp.async and ldmatrix need
  bf16* q_s = reinterpret_cast<bf16*>(smem_raw);
  bf16* k_s = q_s + S::kQElems;         // [2][kKeys][kStride]
  bf16* v_s = k_s + 2 * S::kTileElems;  // [2][kKeys][kStride]
  auto* done_s = reinterpret_cast<unsigned long long*>(v_s + 2 * S::kTileElems);  // [kDoneWords]: rows written
  int* row_pos = reinterpret_cast<int*>(done_s + S::kDoneWords);  // [kRows]: -1 past the last token
  int* row_seq = row_pos + kRows;                                  // [kRows]: -1 past the last token
  int* pass_s = row_seq + kRows;  // [0]: this pass's sequence, [1]: its largest position

  const int H = static_cast<int>(a.n_heads);
  const int h = blockIdx.x;
  const int kvh = h / static_cast<int>(a.n_heads / a.n_kv_heads);
  // Highest query tiles first: they have the most keys, so the short ones fill the tail of the grid.
  const int64_t t0 = int64_t{gridDim.y - 1 - blockIdx.y} * kRows;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4;         // fragment row (and row + 8)
  const int c2 = 2 * (lane % 4);  // fragment column pair
  const int warp_row = warp * 16 * MT;  // first of this warp's rows; slab m is rows warp_row + 16m ..+15

  for (int i = tid; i < kRows; i += S::kThreads) {
    const int64_t t = t0 + i;
    const bool valid = t < a.n_tokens;
    row_pos[i] = valid ? a.positions[t] : -1;
    row_seq[i] = valid ? a.token_seq[t] : -1;
  }
  if (tid < S::kDoneWords) done_s[tid] = 0;

  // Q tile -> shared (rows past the last token zero-filled).
  const bf16* q = static_cast<const bf16*>(a.q);
  const int copy_ch = tid % S::kChunks, copy_row = tid / S::kChunks;
#pragma unroll
  for (int n = 0; n < S::kQCopies; ++n) {
    const int r = copy_row + n * S::kRowStep;
    const int64_t t = t0 + r;
    const bool valid = t < a.n_tokens;
    cp_async16(q_s + r * kStride + copy_ch * 8, valid ? q + (t * H + h) * HD + copy_ch * 8 : q, valid);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  // A fragments of Q: matrices 0..3 = (rows 0-7, dims +0), (rows 8-15, dims +0), (rows 0-7, dims +8),
  // (rows 8-15, dims +8) of a slab, i.e. a[0..3] in mma_16816's order. q_lane + 16m rows + 16kk dims.
  const bf16* q_lane = q_s + (warp_row + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + (lane >> 4) * 8;
  // With MT == 1, qf[kk] holds dims 16kk..16kk+15 of the warp's 16 rows for the whole kernel (unused else).
  uint32_t qf[kQInRegs ? HD / 16 : 1][4];
  if constexpr (kQInRegs) {
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) ldmatrix_x4(qf[kk], q_lane + kk * 16);
  }

  const TKV* kc = static_cast<const TKV*>(a.k_cache);
  const TKV* vc = static_cast<const TKV*>(a.v_cache);
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
      for (int w = 0; w < S::kDoneWords; ++w) {
        unsigned long long done = done_s[w];
        for (int b = 0; b < 64; ++b) {
          const int i = 64 * w + b;
          if (row_seq[i] < 0 || (done >> b & 1ull)) continue;
          if (cur < 0) cur = row_seq[i];
          if (row_seq[i] == cur) {
            done |= 1ull << b;
            kmax = max(kmax, row_pos[i]);
          }
        }
        done_s[w] = done;
      }
      pass_s[0] = cur;
      pass_s[1] = kmax;
    }
    __syncthreads();
    const int cur = pass_s[0], kmax = pass_s[1];
    if (cur < 0) break;

    // Row r's position, or -1 when not in this pass. This thread's rows are g and g + 8 of each of the warp's
    // slabs; their positions are re-read from shared memory where needed (registers are scarce at MT = 2).
    auto pass_pos = [&](int r) { return row_seq[r] == cur ? row_pos[r] : -1; };
    int lane_max = -1, lane_min = INT_MAX;
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int p = pass_pos(warp_row + 16 * m + 8 * hf + g);
        lane_max = max(lane_max, p);
        lane_min = min(lane_min, p);
      }
    const int warp_max = __reduce_max_sync(0xffffffffu, lane_max);  // -1: nothing to do this pass
    const int warp_min = __reduce_min_sync(0xffffffffu, lane_min);  // -1: some row is masked out
    const int32_t* table = a.block_tables + int64_t{cur} * a.max_blocks;
    const int n_tiles = kmax / kKeys + 1;

    // K and V rows kb .. kb + kKeys - 1 of sequence `cur` into buffer `buf`; keys past kmax are zeros
    // (their block-table entries may not exist, and 0 * garbage could be NaN in P V).
    auto load_tile = [&](int tile, int buf) {
      const int kb = tile * kKeys;
      bf16* kd = k_s + buf * S::kTileElems;
      bf16* vd = v_s + buf * S::kTileElems;
#pragma unroll
      for (int n = 0; n < S::kKvCopies; ++n) {
        const int r = copy_row + n * S::kRowStep;
        const int j = kb + r;
        const bool valid = j <= kmax;
        int64_t row = 0;  // the cache row (token slot x KV head)
        if (valid) {
          const int blk = bs_shift >= 0 ? j >> bs_shift : j / bs;
          const int in_blk = bs_shift >= 0 ? j & (bs - 1) : j % bs;
          row = (int64_t{table[blk]} * bs + in_blk) * hkv + kvh;
        }
        if constexpr (kFp8) {
          const auto* k8 = reinterpret_cast<const uint8_t*>(kc) + row * kv_row_stride<KvFp8>(HD);
          const auto* v8 = reinterpret_cast<const uint8_t*>(vc) + row * kv_row_stride<KvFp8>(HD);
          const uint4 zero = make_uint4(0, 0, 0, 0);
          const int c8 = copy_ch * 8;
          *reinterpret_cast<uint4*>(kd + r * kStride + c8) = valid ? fp8_row_to_bf16x8<HD>(k8, c8) : zero;
          *reinterpret_cast<uint4*>(vd + r * kStride + c8) = valid ? fp8_row_to_bf16x8<HD>(v8, c8) : zero;
        } else {
          const int64_t off = row * HD + copy_ch * 8;
          cp_async16(kd + r * kStride + copy_ch * 8, kc + off, valid);
          cp_async16(vd + r * kStride + copy_ch * 8, vc + off, valid);
        }
      }
    };

    // O accumulator: o[m][n] = slab m's rows g, g+8 x dims 8n + c2, +1 (C fragment layout). Running max
    // (log2 units, same in the 4 lanes of a row) and sum (this lane's columns only, summed at the end) of
    // row g (index 0) and g + 8 (index 1) of each slab.
    float o[MT][HD / 8][4];
    float row_m[MT][2], row_l[MT][2];
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
      for (int n = 0; n < HD / 8; ++n) o[m][n][0] = o[m][n][1] = o[m][n][2] = o[m][n][3] = 0.f;
      row_m[m][0] = row_m[m][1] = -INFINITY;
      row_l[m][0] = row_l[m][1] = 0.f;
    }

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

        // S = Q K^T: s[m][n] = slab m's rows g, g+8 x keys kb + 8n + c2, +1. Each K fragment feeds MT slabs.
        float s[MT][kKeys / 8][4];
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
          for (int n = 0; n < kKeys / 8; ++n) s[m][n][0] = s[m][n][1] = s[m][n][2] = s[m][n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk) {
          uint32_t qa[MT][4];
          if constexpr (kQInRegs) {
#pragma unroll
            for (int i = 0; i < 4; ++i) qa[0][i] = qf[kk][i];
          } else {
#pragma unroll
            for (int m = 0; m < MT; ++m) ldmatrix_x4(qa[m], q_lane + 16 * m * kStride + kk * 16);
          }
#pragma unroll
          for (int n = 0; n < kKeys / 8; n += 2) {
            uint32_t b[4];
            ldmatrix_x4(b, kt + k_lane + n * 8 * kStride + kk * 16);
#pragma unroll
            for (int m = 0; m < MT; ++m) {
              mma_16816(s[m][n], qa[m], b[0], b[1]);
              mma_16816(s[m][n + 1], qa[m], b[2], b[3]);
            }
          }
        }

        if (kb + kKeys - 1 > warp_min) {  // warp-uniform: the diagonal, a sequence boundary or the tail
#pragma unroll
          for (int m = 0; m < MT; ++m) {
            const int pos0 = pass_pos(warp_row + 16 * m + g), pos1 = pass_pos(warp_row + 16 * m + 8 + g);
#pragma unroll
            for (int n = 0; n < kKeys / 8; ++n) {
              const int j = kb + 8 * n + c2;
              if (j > pos0) s[m][n][0] = -INFINITY;
              if (j + 1 > pos0) s[m][n][1] = -INFINITY;
              if (j > pos1) s[m][n][2] = -INFINITY;
              if (j + 1 > pos1) s[m][n][3] = -INFINITY;
            }
          }
        }

        // Online softmax, per slab. A row's max is reduced over the 4 lanes that share it (lane ^ 1, lane ^ 2).
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
          for (int n = 0; n < kKeys / 8; ++n) {
            mx0 = fmaxf(mx0, fmaxf(s[m][n][0], s[m][n][1]));
            mx1 = fmaxf(mx1, fmaxf(s[m][n][2], s[m][n][3]));
          }
          mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
          mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
          mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
          mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
          // scale > 0 (attention_prefill_mma_supports), so max(s) * scale_log2 = max(s * scale_log2).
          const float new0 = fmaxf(row_m[m][0], mx0 * scale_log2), new1 = fmaxf(row_m[m][1], mx1 * scale_log2);
          // A row with no key yet (masked out of this pass, or only later keys) keeps m = -inf; subtracting 0
          // instead keeps its p = 2^-inf = 0 and alpha = 0 rather than NaN.
          const float use0 = new0 == -INFINITY ? 0.f : new0, use1 = new1 == -INFINITY ? 0.f : new1;
          const float alpha0 = exp2_approx(row_m[m][0] - use0), alpha1 = exp2_approx(row_m[m][1] - use1);
          row_m[m][0] = new0;
          row_m[m][1] = new1;
          float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
          for (int n = 0; n < kKeys / 8; ++n) {
            s[m][n][0] = exp2_approx(fmaf(s[m][n][0], scale_log2, -use0));
            s[m][n][1] = exp2_approx(fmaf(s[m][n][1], scale_log2, -use0));
            s[m][n][2] = exp2_approx(fmaf(s[m][n][2], scale_log2, -use1));
            s[m][n][3] = exp2_approx(fmaf(s[m][n][3], scale_log2, -use1));
            sum0 += s[m][n][0] + s[m][n][1];
            sum1 += s[m][n][2] + s[m][n][3];
          }
          row_l[m][0] = row_l[m][0] * alpha0 + sum0;
          row_l[m][1] = row_l[m][1] * alpha1 + sum1;
#pragma unroll
          for (int n = 0; n < HD / 8; ++n) {
            o[m][n][0] *= alpha0;
            o[m][n][1] *= alpha0;
            o[m][n][2] *= alpha1;
            o[m][n][3] *= alpha1;
          }
        }

        // O += P V. The C fragments of key blocks 2kk and 2kk + 1 are exactly the A fragment of keys
        // 16kk..16kk+15 (rows g / g+8, columns c2 / c2 + 8), so P never leaves registers. Each V fragment
        // feeds MT slabs.
#pragma unroll
        for (int kk = 0; kk < kKeys / 16; ++kk) {
          uint32_t pa[MT][4];
#pragma unroll
          for (int m = 0; m < MT; ++m) {
            pa[m][0] = pack_bf16x2(s[m][2 * kk][0], s[m][2 * kk][1]);
            pa[m][1] = pack_bf16x2(s[m][2 * kk][2], s[m][2 * kk][3]);
            pa[m][2] = pack_bf16x2(s[m][2 * kk + 1][0], s[m][2 * kk + 1][1]);
            pa[m][3] = pack_bf16x2(s[m][2 * kk + 1][2], s[m][2 * kk + 1][3]);
          }
#pragma unroll
          for (int n = 0; n < HD / 8; n += 2) {
            uint32_t b[4];
            ldmatrix_x4_trans(b, vt + v_lane + kk * 16 * kStride + n * 8);
#pragma unroll
            for (int m = 0; m < MT; ++m) {
              mma_16816(o[m][n], pa[m], b[0], b[1]);
              mma_16816(o[m][n + 1], pa[m], b[2], b[3]);
            }
          }
        }
      }
      __syncthreads();  // the next iteration's copy overwrites this buffer
    }

    // Finish: full row sums, normalise, store this pass's rows as bf16x2 (4 lanes write 16 contiguous bytes).
    bf16* out = static_cast<bf16*>(a.out);
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float l = row_l[m][hf];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const int r = warp_row + 16 * m + 8 * hf + g;
        if (pass_pos(r) >= 0) {
          const float inv = 1.f / l;
          uint32_t* dst = reinterpret_cast<uint32_t*>(out + ((t0 + r) * H + h) * HD + c2);
#pragma unroll
          for (int n = 0; n < HD / 8; ++n) dst[4 * n] = pack_bf16x2(o[m][n][2 * hf] * inv, o[m][n][2 * hf + 1] * inv);
        }
      }
  }
}

template <class S, class TKV>
void launch_shape_kv(const AttentionArgs& a, const Launch& stream) {
  static std::once_flag once;  // the opt-in above 48 KB of shared memory, once per kernel (per device: TODO)
  std::call_once(once, [] {
    CHECK_CUDA(cudaFuncSetAttribute(attention_prefill_mma_kernel<S, TKV>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(S::kBytes)));
  });
  const dim3 grid(static_cast<unsigned>(a.n_heads), static_cast<unsigned>((a.n_tokens + S::kRows - 1) / S::kRows));
  attention_prefill_mma_kernel<S, TKV><<<grid, S::kThreads, S::kBytes, stream.stream>>>(a);
  CHECK_LAUNCH();
}

template <class S>
void launch_shape(const AttentionArgs& a, const Launch& stream) {
  if (a.kv_dt == DType::kF8_E4M3) launch_shape_kv<S, KvFp8>(a, stream);
  else launch_shape_kv<S, bf16>(a, stream);
}

bool aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

bool attention_prefill_mma_supports(const AttentionArgs& a) {
  // gridDim.y counts query tiles (at most 65535); q/k/v rows are copied in 16-byte pieces, out stored as bf16x2.
  // An fp8 cache's rows (head_dim codes + a 4-byte scale) are 4-byte aligned and read with 4-byte loads.
  const uintptr_t kv_align = a.kv_dt == DType::kF8_E4M3 ? 4 : 16;
  return a.q_dt == DType::kBF16 && (a.kv_dt == DType::kBF16 || (a.kv_dt == DType::kF8_E4M3 && a.prefill_mma_fp8)) &&
         a.out_dt == DType::kBF16 &&
         (a.head_dim == 64 || a.head_dim == 128) && a.n_kv_heads > 0 && a.n_heads % a.n_kv_heads == 0 &&
         a.n_heads <= INT_MAX && a.block_size > 0 && a.block_size <= INT_MAX && a.scale > 0.f &&
         a.n_tokens <= int64_t{65535} * kMinRows && aligned(a.q, 16) && aligned(a.k_cache, kv_align) &&
         aligned(a.v_cache, kv_align) && aligned(a.out, 4);
}

void launch_attention_prefill_mma(const AttentionArgs& a, const Launch& stream) {
  if (a.n_tokens == 0) return;
  STRATA_CHECK(attention_prefill_mma_supports(a), "tensor-core prefill attention does not support head_dim ",
               a.head_dim, ", q/kv/out dtypes ", dtype_name(a.q_dt), "/", dtype_name(a.kv_dt), "/",
               dtype_name(a.out_dt), " or ", a.n_tokens, " tokens; launch_attention_prefill picks the SIMT kernel");
  // 128-row blocks read each K/V fragment from shared memory once per 32 rows instead of 16, but halve the
  // blocks: only worth it when they still make 1.5 waves of 2 blocks per SM (at one wave, H200: a 2228-token
  // batch of 6 sequences x 16 heads was 10% slower than with 64-row blocks, 4 x 512 tokens x 32 heads even).
  STRATA_CHECK(a.sm_count > 0, "launch_attention_prefill_mma: AttentionArgs.sm_count is not set");
  const bool wide = a.n_heads * ((a.n_tokens + 127) / 128) >= int64_t{3} * a.sm_count;
  if (a.head_dim == 64) wide ? launch_shape<Shape64x2>(a, stream) : launch_shape<Shape64>(a, stream);
  else wide ? launch_shape<Shape128x2>(a, stream) : launch_shape<Shape128>(a, stream);
}

}  // namespace strata::cuda
