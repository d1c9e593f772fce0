// runtime/cuda/qgemm_mma_kernel.cuh: the kernel of the tensor-core quantized GEMM (qgemm_mma.cu):
// out[M, N] = x[M, K] w[N, K]^T for a few rows of x (decode batches, M up to 64)
// with block-quantized weights (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K), on the tensor cores, reading
// the packed blocks once.
//
// A block owns 128 output features and a range of K (split-K where the features alone give too few blocks to
// fill the GPU): 4 row warps of two m16 tiles each, and 2 warps along K per row warp (each half of every
// chunk's blocks; their sums meet at the end). K goes in chunks of 256 elements through a 3-stage cp.async
// pipeline in shared memory: per feature row, the chunk's contiguous packed bytes from the 16-byte boundary
// below them (rows of 18-, 34- or 210-byte blocks rarely start aligned), loaded 16 bytes a thread with consecutive
// threads on consecutive bytes; and the chunk of x's rows (bf16). The weight is mma's A operand (16 features
// x 16 k), x's rows are the B operand (8 tokens per tile, ldmatrix from padded rows).
//
// Each lane decodes its A fragments straight from the staged bytes to the blocks' integer codes as bf16
// (exact: the codes have at most 8 significant bits), the two k16 steps of a 32-element group go through
// mma into a fresh f32 product, and that product enters the accumulator times the group's scale (Q6_K: each
// k16 step's product times its 16 elements' scale; the types with a min (Q4_1, Q5_1, Q4_K, Q5_K) also take
// off min times the group's sum of x, from an mma with an all-ones A). So every product is exact and
// only f32 sums round: the result equals the f32 product with the dequantized weight up to summation order
// (and x's rounding to bf16, which the backend's activations already are).
//
// Split-K blocks write f32 partials [split][M][N]; a second kernel sums them in split order (deterministic)
// with the bias into out. One split writes out directly.
//
// Each weight type's kernels are instantiated in a file of their own (qgemm_mma_<type>.cu: launch_tiles<T>),
// so they compile in parallel; qgemm_mma.cu plans the split of K and dispatches.
#pragma once
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_dtype.cuh"
#include "runtime/cuda/launch.h"
#include "runtime/cuda/mma.cuh"
#include "runtime/cuda/pdl.cuh"
#include "runtime/cuda/quant_decode.cuh"
#include "runtime/dtype.h"

namespace strata::cuda::qmma {

constexpr int kRowWarps = 4;                       // warps along the features
constexpr int kKWarps = 2;                         // warps along K sharing each row warp's features
constexpr int kThreads = kRowWarps * kKWarps * 32;
constexpr int kWarpRows = 32;                      // two m16 tiles a warp
constexpr int kBlockRows = kRowWarps * kWarpRows;  // output features a block
constexpr int kChunk = 256;                        // K elements a pipeline stage
constexpr int kXStride = kChunk + 8;               // bf16 per staged x row (16 bytes of padding: no ldmatrix conflicts)
constexpr int kStages = 3;
constexpr int kGroups = kChunk / 32;               // 32-element groups a chunk

// The shared-memory layout of one stage for weight type T: kBlockRows rows of kRowStride bytes (the chunk's
// bytes of the row from the 16-byte boundary at or below their start, then padding that puts the 8 rows one
// mma fragment reads on distinct banks), then NT * 8 rows of x.
template <DType T>
struct WStage {
  static constexpr int kSpan = kChunk / QType<T>::kElems * QType<T>::kBytes;  // packed bytes of a row's chunk
  static constexpr int kVecs = (kSpan + 15 + 15) / 16;  // 16-byte loads covering it from any head offset
  static constexpr int kPadWords = (12 - (kVecs * 4) % 32 + 32) % 32;
  static constexpr int kRowStride = kVecs * 16 + kPadWords * 4;
  static constexpr int kBytes = kBlockRows * kRowStride;
};
template <DType T, int NT>
struct Stage {
  static constexpr int kBytes = WStage<T>::kBytes + NT * 8 * kXStride * 2;
};

// The codes of one 32-element group (group j of a row's chunk at `row`) that a lane's A fragments need, for
// one row: v[0] = elements c, c+1; v[1] = c+8, c+9; v[2] = 16+c, 16+c+1; v[3] = 24+c, 24+c+1, each as a bf16
// pair (lower element in the low half), with c = 2 (lane % 4); the group's scale and min (weight =
// scale * code - min; kMin says whether a type has one). Types with a scale per 16 elements (kHalfScales)
// give scale[0] for elements 0-15 (the first k16 step) and scale[1] for 16-31; the others give scale[0].
template <DType T>
struct GroupCodes;

// A pair of codes below 128 at bits 0-6 and 16-22 becomes the bf16 pair 128 + q by its bits (0x4300 | q);
// `offset` (128 + the type's zero point) is then subtracted, exactly.
__device__ __forceinline__ uint32_t code_pair(uint32_t codes, __nv_bfloat162 offset) {
  const uint32_t bits = codes | 0x43004300u;
  const __nv_bfloat162 r = __hsub2(*reinterpret_cast<const __nv_bfloat162*>(&bits), offset);
  return *reinterpret_cast<const uint32_t*>(&r);
}
// nib holds nibbles at bits 0-3 and 16-19 (the pair's elements), higher bits ignored.
__device__ __forceinline__ uint32_t nibble_pair(uint32_t nib, __nv_bfloat162 offset) {
  return code_pair(nib & 0x000f000fu, offset);
}
// The two bytes at p as bytes 0 and 2 of a word.
__device__ __forceinline__ uint32_t spread_u16(const uint8_t* p) { return __byte_perm(load_u16(p), 0, 0x4140); }
// Bits 0 and 1 of b as the fifth bits (4 and 20) of a code pair.
__device__ __forceinline__ uint32_t bit4_pair(uint32_t b) { return (b & 1u) << 4 | (b & 2u) << 19; }
// A 32-bit word at a 2-byte aligned address.
__device__ __forceinline__ uint32_t load_u32_2(const uint8_t* p) {
  return static_cast<uint32_t>(load_u16(p)) | static_cast<uint32_t>(load_u16(p + 2)) << 16;
}

// Q4_0 (18-byte blocks): d (f16), then 16 bytes: element j < 16 is the low nibble of byte j, element 16 + j
// its high nibble; the code is nibble - 8.
template <>
struct GroupCodes<DType::kQ4_0> {
  static constexpr bool kMin = false, kHalfScales = false;
  __device__ __forceinline__ static void get(const uint8_t* row, int j, int c, uint32_t (&v)[4], float (&scale)[2],
                                             float& /*min*/) {
    const uint8_t* blk = row + 18 * j;
    scale[0] = half_bits(load_u16(blk));
    const __nv_bfloat162 offset = __floats2bfloat162_rn(136.f, 136.f);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t w = spread_u16(blk + 2 + c + 8 * h);
      v[h] = nibble_pair(w, offset);
      v[2 + h] = nibble_pair(w >> 4, offset);
    }
  }
};

// Q4_1 (20-byte blocks): d, m (f16), then Q4_0's 16 nibble bytes; weight = d * nibble + m (min = -m).
template <>
struct GroupCodes<DType::kQ4_1> {
  static constexpr bool kMin = true, kHalfScales = false;
  __device__ __forceinline__ static void get(const uint8_t* row, int j, int c, uint32_t (&v)[4], float (&scale)[2],
                                             float& min) {
    const uint8_t* blk = row + 20 * j;
    scale[0] = half_bits(load_u16(blk));
    min = -half_bits(load_u16(blk + 2));
    const __nv_bfloat162 offset = __floats2bfloat162_rn(128.f, 128.f);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t w = spread_u16(blk + 4 + c + 8 * h);
      v[h] = nibble_pair(w, offset);
      v[2 + h] = nibble_pair(w >> 4, offset);
    }
  }
};

// Q5_0 (22-byte blocks) and Q5_1 (24): d (f16) [, m (f16)], 32 bits qh (element e's fifth bit is bit e), then
// Q4_0's 16 nibble bytes. Q5_0's code is q - 16; Q5_1's weight is d * q + m.
template <DType T, int kQh, bool kOne>
struct Q5Codes {
  static constexpr bool kMin = kOne, kHalfScales = false;
  __device__ __forceinline__ static void get(const uint8_t* row, int j, int c, uint32_t (&v)[4], float (&scale)[2],
                                             float& min) {
    const uint8_t* blk = row + QType<T>::kBytes * j;
    scale[0] = half_bits(load_u16(blk));
    if constexpr (kOne) min = -half_bits(load_u16(blk + 2));
    const uint32_t qh = load_u32_2(blk + kQh);
    const float zero = kOne ? 128.f : 144.f;
    const __nv_bfloat162 offset = __floats2bfloat162_rn(zero, zero);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int e = c + 8 * h;
      const uint32_t w = spread_u16(blk + kQh + 4 + e);
      v[h] = code_pair((w & 0x000f000fu) | bit4_pair(qh >> e), offset);
      v[2 + h] = code_pair((w >> 4 & 0x000f000fu) | bit4_pair(qh >> (16 + e)), offset);
    }
  }
};
template <>
struct GroupCodes<DType::kQ5_0> : Q5Codes<DType::kQ5_0, 2, false> {};
template <>
struct GroupCodes<DType::kQ5_1> : Q5Codes<DType::kQ5_1, 4, true> {};

// Q8_0 (34-byte blocks): d (f16), then 32 int8 codes. Each byte, biased to 0..255, is placed in the mantissa
// of 2^23 and the bias taken off in f32 (exact), then paired as bf16 (exact for |code| <= 128).
template <>
struct GroupCodes<DType::kQ8_0> {
  static constexpr bool kMin = false, kHalfScales = false;
  __device__ __forceinline__ static void get(const uint8_t* row, int j, int c, uint32_t (&v)[4], float (&scale)[2],
                                             float& /*min*/) {
    const uint8_t* blk = row + 34 * j;
    scale[0] = half_bits(load_u16(blk));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t p = load_u16(blk + 2 + c + 8 * i) ^ 0x8080u;
      const float lo = __uint_as_float(0x4b000000u | (p & 0xffu)) - 8388736.f;  // 2^23 + 128
      const float hi = __uint_as_float(0x4b000000u | (p >> 8)) - 8388736.f;
      v[i] = pack_bf16x2(lo, hi);
    }
  }
};

// Q4_K (144-byte blocks of 256) and Q5_K (176): d, dmin (f16), 12 bytes of 6-bit scales and mins, [Q5_K: 32
// bytes qh, element l of group j's fifth bit is bit j of byte l,] 128 bytes of nibbles: group j's element l is
// nibble j % 2 of byte 32 (j / 2) + l; weight = d * sc_j * q - dmin * m_j (the CPU dequantizer's two
// products, runtime/cuda/quant_decode.cuh's dequant8_q45k).
template <bool kFive>
struct Q45KCodes {
  static constexpr bool kMin = true, kHalfScales = false;
  __device__ __forceinline__ static void get(const uint8_t* row, int j, int c, uint32_t (&v)[4], float (&scale)[2],
                                             float& min) {
    int sc, m;
    k_scale_min_dev(row + 4, j, sc, m);
    scale[0] = __fmul_rn(half_bits(load_u16(row)), static_cast<float>(sc));
    min = __fmul_rn(half_bits(load_u16(row + 2)), static_cast<float>(m));
    const __nv_bfloat162 offset = __floats2bfloat162_rn(128.f, 128.f);
    const uint8_t* qs = row + (kFive ? 48 : 16) + 32 * (j / 2) + c;
    const int shift = 4 * (j % 2);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      uint32_t codes = spread_u16(qs + 8 * i) >> shift & 0x000f000fu;
      if constexpr (kFive) codes |= (spread_u16(row + 16 + c + 8 * i) >> j & 0x00010001u) << 4;
      v[i] = code_pair(codes, offset);
    }
  }
};
template <>
struct GroupCodes<DType::kQ4_K> : Q45KCodes<false> {};
template <>
struct GroupCodes<DType::kQ5_K> : Q45KCodes<true> {};

// Q6_K (210-byte blocks of 256): 128 bytes ql, 64 bytes qh, 16 int8 scales, d (f16). Element 32 j + l (half
// h = j / 4, k = j % 4): low nibble k / 2 of ql[64 h + 32 (k % 2) + l], high bits 2k, 2k+1 of qh[32 h + l];
// code = q - 32 and weight = (d * scale[e / 16]) * code (the CPU's two products; dequant8<kQ6_K>).
template <>
struct GroupCodes<DType::kQ6_K> {
  static constexpr bool kMin = false, kHalfScales = true;
  __device__ __forceinline__ static void get(const uint8_t* row, int j, int c, uint32_t (&v)[4], float (&scale)[2],
                                             float& /*min*/) {
    const float d = half_bits(load_u16(row + 208));
    scale[0] = __fmul_rn(d, static_cast<float>(static_cast<int8_t>(row[192 + 2 * j])));
    scale[1] = __fmul_rn(d, static_cast<float>(static_cast<int8_t>(row[193 + 2 * j])));
    const __nv_bfloat162 offset = __floats2bfloat162_rn(160.f, 160.f);
    const int h = j / 4, k = j % 4;
    const uint8_t* ql = row + 64 * h + 32 * (k % 2) + c;
    const uint8_t* qh = row + 128 + 32 * h + c;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t lo = spread_u16(ql + 8 * i) >> (4 * (k / 2)) & 0x000f000fu;
      const uint32_t hi = spread_u16(qh + 8 * i) >> (2 * k) & 0x00030003u;
      v[i] = code_pair(lo | hi << 4, offset);
    }
  }
};

struct QgemmArgs {
  const uint8_t* w;
  const __nv_bfloat16* x;
  const void* bias;
  DType bias_dt;
  void* out;
  DType out_dt;
  float* partial;  // [splits][m][n] when the launch splits K, else nullptr
  int64_t m, n, k;
  int chunks_per_split;
};

// Two warps share each row warp's features, each taking half of a chunk's blocks (twice the warps to hide
// latency at the same shared memory); their sums meet in shared memory at the end. At most 128 registers a
// thread (left alone, ptxas takes up to 255 to hoist loads), so two blocks fit an SM's register file.
template <DType T, int NT>
__global__ __launch_bounds__(kThreads, 2) void qgemm_mma_kernel(QgemmArgs a) {
  using Q = QType<T>;
  using L = WStage<T>;
  constexpr int KW = kKWarps;
  constexpr int kStage = Stage<T, NT>::kBytes;
  extern __shared__ __align__(16) uint8_t smem[];
  const int tid = threadIdx.x, warp = tid / 32 % kRowWarps, kw = tid / 32 / kRowWarps, lane = tid % 32;
  const int64_t row0 = int64_t{blockIdx.x} * kBlockRows;
  const int64_t row_bytes = a.k / Q::kElems * Q::kBytes;
  const int64_t chunks = (a.k + kChunk - 1) / kChunk;
  const int64_t first = int64_t{blockIdx.y} * a.chunks_per_split;
  const int n_chunks = static_cast<int>(min(chunks, first + a.chunks_per_split) - first);
  const uint64_t policy = l2_evict_first_policy();

  // Chunk c's packed bytes of the block's rows into stage `slot`: consecutive threads take consecutive
  // 16-byte pieces of a row, so a warp reads a contiguous stretch of the weight. Byte offsets are 32-bit (the
  // launcher takes weights under 4 GiB), to keep the per-piece address arithmetic short.
  const uint32_t row_bytes32 = static_cast<uint32_t>(row_bytes);
  const auto load_w = [&](int64_t c, int slot) {
    uint8_t* ws = smem + slot * kStage;
    const uint32_t off = static_cast<uint32_t>(c * L::kSpan), stop = min(off + L::kSpan, row_bytes32);
#pragma unroll
    for (int j = 0; j < (kBlockRows * L::kVecs + kThreads - 1) / kThreads; ++j) {
      const int i = tid + kThreads * j;
      if (i >= kBlockRows * L::kVecs) break;
      const int r = i / L::kVecs, piece = i % L::kVecs;
      const uint32_t start = static_cast<uint32_t>(row0 + r) * row_bytes32;
      const uint32_t src = ((start + off) & ~15u) + 16 * piece;
      const bool valid = row0 + r < a.n && src < start + stop;
      cp_async16_stream(ws + r * L::kRowStride + 16 * piece, a.w + (valid ? src : 0u), valid, policy);
    }
  };
  // Chunk c of x's rows (zeros past M and past K).
  const auto load_x = [&](int64_t c, int slot) {
    auto* xs = reinterpret_cast<__nv_bfloat16*>(smem + slot * kStage + L::kBytes);
    constexpr int kPieces = kChunk / 8;
#pragma unroll
    for (int j = 0; j < NT * 8 * kPieces / kThreads; ++j) {
      const int i = tid + kThreads * j;
      const int t = i / kPieces, piece = i % kPieces;
      const int64_t kk = c * kChunk + 8 * piece;
      const bool valid = t < a.m && kk < a.k;
      cp_async16(xs + t * kXStride + 8 * piece, valid ? a.x + t * a.k + kk : a.x, valid);
    }
  };

  // Weights first: no kernel writes them, so they load while the previous kernel drains.
  for (int s = 0; s < kStages - 1; ++s)
    if (s < n_chunks) load_w(first + s, s);
  pdl_wait();
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < n_chunks) load_x(first + s, s);
    cp_async_commit();
  }

  const int g = lane / 4, c = 2 * (lane % 4);
  float acc[2][NT][4] = {};
  for (int i = 0; i < n_chunks; ++i) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // chunk i is in, and every warp is done with the slot refilled next
    const int next = i + kStages - 1;
    if (next < n_chunks) {
      load_w(first + next, next % kStages);
      load_x(first + next, next % kStages);
    }
    cp_async_commit();

    const int64_t chunk = first + i;
    const uint8_t* ws = smem + (i % kStages) * kStage;
    const auto* xs = reinterpret_cast<const __nv_bfloat16*>(ws + L::kBytes);
    // This lane's rows g and g + 8 of each m16 tile, at the chunk's first byte in the stage.
    const uint8_t* rows[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = warp * kWarpRows + mt * 16 + g + 8 * h;
        const int head = static_cast<int>((static_cast<uint32_t>(row0 + r) * row_bytes32 +
                                           static_cast<uint32_t>(chunk * L::kSpan)) & 15);
        rows[mt][h] = ws + r * L::kRowStride + head;
      }
    const int groups = static_cast<int>(min(int64_t{kChunk}, a.k - chunk * kChunk) / 32);
#pragma unroll
    for (int jj = 0; jj < kGroups / KW; ++jj) {
      const int j = kw * (kGroups / KW) + jj;
      if (j >= groups) break;
      uint32_t frag[2][2][4];  // [m tile][k16 step][mma A register]
      float scale[2][2][2], mins[2][2] = {};  // [m tile][row g, row g + 8][k16 step, kHalfScales types]
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        uint32_t v[2][4];
#pragma unroll
        for (int h = 0; h < 2; ++h) GroupCodes<T>::get(rows[mt][h], j, c, v[h], scale[mt][h], mins[mt][h]);
#pragma unroll
        for (int s = 0; s < 2; ++s) {
          frag[mt][s][0] = v[0][2 * s];
          frag[mt][s][1] = v[1][2 * s];
          frag[mt][s][2] = v[0][2 * s + 1];
          frag[mt][s][3] = v[1][2 * s + 1];
        }
      }
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        uint32_t b[4];  // k 0-7, 8-15 (first k16 step), 16-23, 24-31 (second) of tokens nt * 8 ..
        ldmatrix_x4(b, xs + (nt * 8 + (lane & 7)) * kXStride + j * 32 + 8 * (lane >> 3));
        float xsum[4] = {0.f, 0.f, 0.f, 0.f};  // types with a min: the group's sums of x (an all-ones A)
        if constexpr (GroupCodes<T>::kMin) {
          const uint32_t ones[4] = {0x3f803f80u, 0x3f803f80u, 0x3f803f80u, 0x3f803f80u};
          mma_16816(xsum, ones, b[0], b[1]);
          mma_16816(xsum, ones, b[2], b[3]);
        }
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          float p[4] = {0.f, 0.f, 0.f, 0.f}, p1[4] = {0.f, 0.f, 0.f, 0.f};
          mma_16816(p, frag[mt][0], b[0], b[1]);
          if constexpr (GroupCodes<T>::kHalfScales) mma_16816(p1, frag[mt][1], b[2], b[3]);
          else mma_16816(p, frag[mt][1], b[2], b[3]);
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            acc[mt][nt][e] = fmaf(scale[mt][e / 2][0], p[e], acc[mt][nt][e]);
            if constexpr (GroupCodes<T>::kHalfScales) acc[mt][nt][e] = fmaf(scale[mt][e / 2][1], p1[e], acc[mt][nt][e]);
            if constexpr (GroupCodes<T>::kMin) acc[mt][nt][e] = fmaf(-mins[mt][e / 2], xsum[e], acc[mt][nt][e]);
          }
        }
      }
    }
  }
  cp_async_wait<0>();
  pdl_trigger();
  {  // the second K half's sums into the first's
    __syncthreads();  // every warp is done with the stages
    float* red = reinterpret_cast<float*>(smem);
    const int slot = warp * 32 + lane;
    if (kw == 1) {
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) red[((mt * NT + nt) * 4 + e) * kBlockRows + slot] = acc[mt][nt][e];
    }
    __syncthreads();
    if (kw == 1) return;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][nt][e] += red[((mt * NT + nt) * 4 + e) * kBlockRows + slot];
  }

#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t row = row0 + warp * kWarpRows + mt * 16 + g + 8 * (e / 2);
        const int64_t tok = nt * 8 + c + (e % 2);
        if (row >= a.n || tok >= a.m) continue;
        if (a.partial != nullptr) {
          a.partial[(int64_t{blockIdx.y} * a.m + tok) * a.n + row] = acc[mt][nt][e];
        } else {
          const float b = a.bias != nullptr ? load_elem(a.bias, a.bias_dt, row) : 0.f;
          store_elem(a.out, a.out_dt, tok * a.n + row, acc[mt][nt][e] + b);
        }
      }
}

template <DType T, int NT>
void launch_typed(const QgemmArgs& a, dim3 grid, const Launch& stream) {
  constexpr size_t kSmem = static_cast<size_t>(kStages) * Stage<T, NT>::kBytes;
  static_assert(kSmem <= (227u << 10), "a stage set fits in shared memory");
  static_assert(kSmem >= 2 * NT * 4 * kBlockRows * sizeof(float), "the K halves' sums fit in the stages");
  CHECK_CUDA(cudaFuncSetAttribute(qgemm_mma_kernel<T, NT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(kSmem)));
  launch_pdl(qgemm_mma_kernel<T, NT>, grid, dim3(kThreads), kSmem, stream, a);
}

template <DType T>
void launch_tiles(const QgemmArgs& a, int nt, dim3 grid, const Launch& s) {
  switch (nt) {
    case 1: return launch_typed<T, 1>(a, grid, s);
    case 2: return launch_typed<T, 2>(a, grid, s);
    case 3: return launch_typed<T, 3>(a, grid, s);
    case 4: return launch_typed<T, 4>(a, grid, s);
    case 6: return launch_typed<T, 6>(a, grid, s);
    default: return launch_typed<T, 8>(a, grid, s);
  }
}

}  // namespace strata::cuda::qmma
