// runtime/cuda/gemv_quant.cu: matmul for few rows (decode, M <= 8) with block-quantized weights of every
// GGUF type, reading the quantized bytes directly. Two kernels:
//  1. x is quantized to 8 bits per 32 elements (scale amax / 127, round to nearest even; the CPU backend's
//     quantize_activations, runtime/cpu/quant_dot.cpp), with each block's scaled half sums.
//  2. Each warp owns one weight row. A warp stages a tile of the row's contiguous bytes (32 * G 32-element
//     chunks) into shared memory with 16-byte loads from the 16-byte boundary below the tile (blocks are 18,
//     22, 110, 210... bytes, so a row rarely starts aligned), issuing the next tile's loads before it
//     computes the current one. Each lane then takes one chunk: the weight codes become 8 words of 4 bytes
//     and the chunk's dot with x is two sets of 4 dp4a (one per 16-element half), so the per-element work is
//     integer unpacking and a quarter of a dp4a, and x is read as 1 byte per element instead of 2.
// A chunk's contribution is dx * (a0 * dotA + a1 * dotB) + b0 * dx * hsumA + b1 * dx * hsumB, where a is the
// weight's scale of each half and b its offset (min, or minus scale times the code's zero point).
// The aligned loads may touch up to 15 bytes before a tile and after the tensor's last byte: never past the
// 16-byte granule that holds a byte of the (16-byte aligned) weight, so never off its allocation's pages.
#include <algorithm>
#include <cstdint>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_dtype.cuh"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/pdl.cuh"
#include "runtime/cuda/quant_decode.cuh"
#include "runtime/error.h"

namespace strata::cuda {
namespace {

constexpr int kWarps = 8;  // rows per block

// Per 32-element block of x: scale, scale * sum of the first 16 codes, scale * sum of the last 16.
struct XMeta {
  float d, s0, s1, pad;
};

// One warp per 32-element block of x: lane i quantizes element i.
__global__ __launch_bounds__(256) void quantize_x_kernel(const void* x, DType x_dt, int64_t blocks, int8_t* xq,
                                                         XMeta* meta) {
  pdl_wait();
  pdl_trigger();
  const int64_t b = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (b >= blocks) return;
  const float v = load_elem(x, x_dt, b * 32 + lane);
  const float amax = warp_max(fabsf(v));
  const float d = amax / 127.f;
  const float inv = amax > 0.f ? 127.f / amax : 0.f;
  const int q = __float2int_rn(__fmul_rn(v, inv));
  xq[b * 32 + lane] = static_cast<int8_t>(q);
  int half = q;
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) half += __shfl_xor_sync(0xffffffffu, half, o);  // sum within each 16 lanes
  const int other = __shfl_xor_sync(0xffffffffu, half, 16);
  if (lane == 0) meta[b] = XMeta{d, d * static_cast<float>(half), d * static_cast<float>(other), 0.f};
}

// acc[m] += chunk . x's block `chunk_index` of row m.
template <int M>
__device__ __forceinline__ void chunk_dot(const Chunk& c, const int8_t* __restrict__ xq, const XMeta* __restrict__ meta,
                                          int64_t k, int64_t chunk_index, float (&acc)[M]) {
  const int64_t chunks = k / 32;
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const int4* xv = reinterpret_cast<const int4*>(xq + m * k + chunk_index * 32);
    const int4 x0 = __ldg(xv), x1 = __ldg(xv + 1);
    const float4 xm = __ldg(reinterpret_cast<const float4*>(meta + m * chunks + chunk_index));
    int da = __dp4a(static_cast<int>(c.q[0]), x0.x, 0);
    da = __dp4a(static_cast<int>(c.q[1]), x0.y, da);
    da = __dp4a(static_cast<int>(c.q[2]), x0.z, da);
    da = __dp4a(static_cast<int>(c.q[3]), x0.w, da);
    int db = __dp4a(static_cast<int>(c.q[4]), x1.x, 0);
    db = __dp4a(static_cast<int>(c.q[5]), x1.y, db);
    db = __dp4a(static_cast<int>(c.q[6]), x1.z, db);
    db = __dp4a(static_cast<int>(c.q[7]), x1.w, db);
    const float dot = fmaf(c.a0, static_cast<float>(da), c.a1 * static_cast<float>(db));
    acc[m] = fmaf(xm.x, dot, fmaf(c.b0, xm.y, fmaf(c.b1, xm.z, acc[m])));
  }
}

template <DType T, int M, int G>
__global__ __launch_bounds__(kWarps * 32) void gemv_quant_kernel(const int8_t* __restrict__ xq,
                                                                 const XMeta* __restrict__ meta,
                                                                 const uint8_t* __restrict__ w, const void* bias,
                                                                 DType bias_dt, void* out, DType out_dt, int64_t n,
                                                                 int64_t k) {
  using Q = QType<T>;
  constexpr int kPerBlock = Q::kElems / 32;  // chunks per block
  constexpr int kChunks = 32 * G;            // chunks per tile
  constexpr int kTileBytes = kChunks / kPerBlock * Q::kBytes;
  constexpr int kVecs = (kTileBytes + 15) / 16 + 1;  // + 1: a tile that starts off a 16-byte boundary
  constexpr int kPerLane = (kVecs + 31) / 32;
  static_assert(kChunks % kPerBlock == 0, "tiles hold whole blocks");
  __shared__ uint4 stage[kWarps][kPerLane * 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = int64_t{blockIdx.x} * kWarps + warp;
  if (row >= n) return;  // no block-wide barrier below
  const int64_t row_bytes = k / Q::kElems * Q::kBytes, chunks = k / 32;
  const int64_t tiles = (chunks + kChunks - 1) / kChunks;
  const uint8_t* rp = w + row * row_bytes;
  uint4 raw[kPerLane] = {};
  const auto load = [&](int64_t t) {
    const uint8_t* start = rp + t * kTileBytes;
    const int64_t stop = (t + 1) * kTileBytes;
    const uint8_t* end = rp + (stop < row_bytes ? stop : row_bytes);
    const auto* base = reinterpret_cast<const uint4*>(reinterpret_cast<uintptr_t>(start) & ~uintptr_t{15});
    const int vecs = static_cast<int>((end - reinterpret_cast<const uint8_t*>(base) + 15) / 16);
#pragma unroll
    for (int v = 0; v < kPerLane; ++v)
      if (lane + 32 * v < vecs) raw[v] = __ldcs(base + lane + 32 * v);
  };
  load(0);  // weights: before waiting for x's quantization
  pdl_wait();
  float acc[M] = {};
  for (int64_t t = 0; t < tiles; ++t) {
    __syncwarp();  // the previous tile's reads of the stage are done
#pragma unroll
    for (int v = 0; v < kPerLane; ++v) stage[warp][lane + 32 * v] = raw[v];
    __syncwarp();
    const int head = static_cast<int>(reinterpret_cast<uintptr_t>(rp + t * kTileBytes) & 15);
    if (t + 1 < tiles) load(t + 1);
    const uint8_t* tile = reinterpret_cast<const uint8_t*>(stage[warp]) + head;
#pragma unroll
    for (int g = 0; g < G; ++g) {
      const int local = 32 * g + lane;
      const int64_t c = t * kChunks + local;
      if (c >= chunks) continue;
      const Chunk ch = decode_chunk<T>(tile + (local / kPerBlock) * Q::kBytes, local % kPerBlock);
      chunk_dot<M>(ch, xq, meta, k, c, acc);
    }
  }
  pdl_trigger();
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = warp_sum(acc[m]);
  if (lane == 0) {
    const float b = bias != nullptr ? load_elem(bias, bias_dt, row) : 0.f;
#pragma unroll
    for (int m = 0; m < M; ++m) store_elem(out, out_dt, m * n + row, acc[m] + b);
  }
}

template <DType T, int M>
void launch_typed(const int8_t* xq, const XMeta* meta, const void* w, const void* bias, DType bias_dt, void* out,
                  DType out_dt, int64_t n, int64_t k, const Launch& stream) {
  const dim3 grid(static_cast<unsigned>((n + kWarps - 1) / kWarps));
  launch_pdl(gemv_quant_kernel<T, M, 2>, grid, dim3(kWarps * 32), 0, stream, xq, meta,
             static_cast<const uint8_t*>(w), bias, bias_dt, out, out_dt, n, k);
}

template <int M>
void launch_rows(const int8_t* xq, const XMeta* meta, const void* w, DType w_dt, const void* bias, DType bias_dt,
                 void* out, DType out_dt, int64_t n, int64_t k, const Launch& s) {
  switch (w_dt) {
#define STRATA_GEMV_Q(T) \
  case T: return launch_typed<T, M>(xq, meta, w, bias, bias_dt, out, out_dt, n, k, s);
    STRATA_GEMV_Q(DType::kQ8_0)
    STRATA_GEMV_Q(DType::kQ4_0)
    STRATA_GEMV_Q(DType::kQ4_1)
    STRATA_GEMV_Q(DType::kQ5_0)
    STRATA_GEMV_Q(DType::kQ5_1)
    STRATA_GEMV_Q(DType::kIQ4_NL)
    STRATA_GEMV_Q(DType::kQ2_K)
    STRATA_GEMV_Q(DType::kQ3_K)
    STRATA_GEMV_Q(DType::kQ4_K)
    STRATA_GEMV_Q(DType::kQ5_K)
    STRATA_GEMV_Q(DType::kQ6_K)
    STRATA_GEMV_Q(DType::kIQ4_XS)
#undef STRATA_GEMV_Q
    default: STRATA_THROW(ErrorKind::kInternal, "launch_gemv_quant: ", dtype_name(w_dt), " is not block-quantized");
  }
}

size_t xq_bytes(int64_t rows, int64_t k) { return static_cast<size_t>((rows * k + 255) / 256 * 256); }

}  // namespace

size_t quant_gemv_scratch_bytes(int64_t rows, int64_t k) {
  return xq_bytes(rows, k) + static_cast<size_t>(rows * (k / 32)) * sizeof(XMeta);
}

bool launch_gemv_quant(const void* x, DType x_dt, void* scratch, const void* w, DType w_dt, const void* bias,
                       DType bias_dt, void* out, DType out_dt, int64_t rows, int64_t n, int64_t k,
                       const Launch& stream) {
  if (rows < 1 || rows > 8 || !dtype_is_quantized(w_dt) || k % 32 != 0 || k % dtype_block_elems(w_dt) != 0 ||
      reinterpret_cast<uintptr_t>(w) % 16 != 0 || reinterpret_cast<uintptr_t>(scratch) % 16 != 0)
    return false;
  if (n == 0) return true;
  auto* xq = static_cast<int8_t*>(scratch);
  auto* meta = reinterpret_cast<XMeta*>(static_cast<uint8_t*>(scratch) + xq_bytes(rows, k));
  const int64_t blocks = rows * k / 32;
  launch_pdl(quantize_x_kernel, dim3(static_cast<unsigned>((blocks + 7) / 8)), dim3(256), 0, stream, x, x_dt, blocks,
             xq, meta);
  switch (rows) {
    case 1: launch_rows<1>(xq, meta, w, w_dt, bias, bias_dt, out, out_dt, n, k, stream); break;
    case 2: launch_rows<2>(xq, meta, w, w_dt, bias, bias_dt, out, out_dt, n, k, stream); break;
    case 3: launch_rows<3>(xq, meta, w, w_dt, bias, bias_dt, out, out_dt, n, k, stream); break;
    case 4: launch_rows<4>(xq, meta, w, w_dt, bias, bias_dt, out, out_dt, n, k, stream); break;
    case 5: launch_rows<5>(xq, meta, w, w_dt, bias, bias_dt, out, out_dt, n, k, stream); break;
    case 6: launch_rows<6>(xq, meta, w, w_dt, bias, bias_dt, out, out_dt, n, k, stream); break;
    case 7: launch_rows<7>(xq, meta, w, w_dt, bias, bias_dt, out, out_dt, n, k, stream); break;
    default: launch_rows<8>(xq, meta, w, w_dt, bias, bias_dt, out, out_dt, n, k, stream); break;
  }
  CHECK_LAUNCH();
  return true;
}

}  // namespace strata::cuda
