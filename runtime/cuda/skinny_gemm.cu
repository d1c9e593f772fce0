// runtime/cuda/skinny_gemm.cu: out[M, N] = x[M, K] w[N, K]^T (+ bias) for batched decode, M = 3..64, bf16 or f16
// x and w, f32 accumulation (issue #5). Bound by streaming the weights once, not by FLOPs: cuBLAS tiles for
// large M and reached 54-77% of the copy rate here; this kernel keeps the tensor cores busy only enough to
// consume a weight stream that fills HBM. Not for M <= 2 (gemv_kernels.cu) or M > 64 (cuBLAS, gemm.cpp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <mutex>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_dtype.cuh"
#include "runtime/cuda/mma.cuh"
#include "runtime/cuda/pdl.cuh"
#include "runtime/cuda/skinny_gemm.h"

// Layout of the work. The product is computed transposed, out^T = w x^T, so the weights are mma.sync's A
// operand: 16 weight rows (= 16 output features) x 16 k per m16n8k16, stored row-major exactly as w is. x^T
// is the B operand: 8 tokens per n8, i.e. x's rows, k contiguous, which is B's column-major layout. M tokens
// are padded to 16 * MT (MT = 1..4, a template parameter) with zero rows in shared memory.
//
// A block (4 warps) owns 128 consecutive output features (32 per warp: two m16 tiles sharing each B fragment)
// and a range of K. It streams that range in k-tiles of 64 through a 4-stage cp.async pipeline: each stage
// holds the 128 x 64 weight tile (16 KB, 16-byte copies with an L2 evict-first policy, read once) and the
// 16MT x 64 x tile (re-read from L2 by every block; at most 8 KB, so x costs at most half the weights' bytes
// in L2 traffic and no HBM traffic). Three stages in flight = 48 KB of weights per block, two blocks per SM
// (110 KB of shared memory each at MT = 4) = ~96 KB per SM, enough to cover HBM latency at full rate.
//
// Split-K. N / 128 blocks alone do not fill the GPU for N = 4096 (32 blocks for 132 SMs x 2 slots), so
// skinny_gemm_plan splits K over `splits` blocks per feature block, as many as fit in one wave of resident
// blocks (never a second, partial wave) and at least 4 k-tiles each. Each split writes its f32 partial tile
// to the workspace; the last split to finish (an atomic counter per feature block) sums the partials in
// split order (the same float sums whichever block comes last, so results are deterministic), adds the bias,
// stores the output and resets its counter to zero for the next launch. One kernel, no memset, no second
// launch, and nothing that grows on the hot path: the workspace is sized once per device for every plan.
namespace strata::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kBlockN = 32 * kWarps;      // output features per block
constexpr int kBlockK = 64;               // k per pipeline stage
constexpr int kStages = 4;
constexpr int kStride = kBlockK + 8;      // smem row stride (elements): +16 bytes so an ldmatrix hits 8 bank groups
constexpr int kTileStride = kBlockN + 4;  // epilogue f32 tile row stride: conflict-free fragment stores
constexpr int kChunks = kBlockK / 8;      // 16-byte chunks per row of a stage
constexpr int kRowStep = kThreads / kChunks;  // rows covered by one copy instruction of the block
constexpr int kWCopies = kBlockN / kRowStep;  // copies per thread per weight stage
constexpr int kWElems = kBlockN * kStride;
constexpr int kMinTilesPerSplit = 4;  // 256 k per split at least: shorter ranges are all pipeline fill
constexpr int kMaxSplits = 16;
static_assert(kThreads % kChunks == 0 && kBlockN % kRowStep == 0 && 16 % kRowStep == 0, "copy mapping");

template <int MT>
struct SkinnySmem {
  static constexpr int kTokens = 16 * MT;
  static constexpr int kXElems = kTokens * kStride;
  static constexpr int kStageElems = kWElems + kXElems;
  static constexpr size_t kBytes = size_t{2} * kStages * kStageElems;
  static_assert(sizeof(float) * kTokens * kTileStride <= kBytes, "the epilogue tile reuses the pipeline's memory");
};

struct SkinnyArgs {
  const void* x;  // [m, k], row stride k
  const void* w;  // [n, k]
  const void* bias;
  DType bias_dt;
  void* out;  // [m, n]
  DType out_dt;
  int m;
  int64_t n, k;
  int k_tiles;       // ceil(k / kBlockK)
  int splits;        // gridDim.y
  unsigned* counters;  // [gridDim.x] when splits > 1
  float4* partials;    // [gridDim.x][splits][m][kBlockN / 4] when splits > 1
};

// out[mrow, n0 + f .. n0 + f + 3] = v (+ bias), columns past n skipped.
__device__ __forceinline__ void store4(const SkinnyArgs& a, int mrow, int64_t col, float4 v) {
  const float vals[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int64_t c = col + e;
    if (c >= a.n) break;
    const float b = a.bias != nullptr ? load_elem(a.bias, a.bias_dt, c) : 0.f;
    store_elem(a.out, a.out_dt, int64_t{mrow} * a.n + c, vals[e] + b);
  }
}

template <typename T, int MT>
__global__ __launch_bounds__(kThreads, 2) void skinny_gemm_kernel(SkinnyArgs a) {
  using S = SkinnySmem<MT>;
  extern __shared__ uint4 smem_raw[];  // 16-byte aligned, as cp.async and ldmatrix need
  T* smem = reinterpret_cast<T*>(smem_raw);
  __shared__ int last_s;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t n0 = int64_t{blockIdx.x} * kBlockN;
  const int split = static_cast<int>(blockIdx.y);
  const int kt_begin = static_cast<int>(int64_t{split} * a.k_tiles / a.splits);
  const int n_kt = static_cast<int>(int64_t{split + 1} * a.k_tiles / a.splits) - kt_begin;
  const T* x = static_cast<const T*>(a.x);
  const T* w = static_cast<const T*>(a.w);
  const int64_t k = a.k;

  // Copies: thread tid moves chunk tid % kChunks of rows tid / kChunks + i * kRowStep. Rows past n (weights)
  // or m (tokens) and chunks past k are zero-filled, so they add nothing.
  const int ch = tid % kChunks, row = tid / kChunks;
  const T* w_row = w + (n0 + row) * k + ch * 8;
  unsigned w_valid = 0;  // bit i: weight row row + i * kRowStep exists
#pragma unroll
  for (int i = 0; i < kWCopies; ++i) w_valid |= (n0 + row + i * kRowStep < a.n ? 1u : 0u) << i;
  const uint64_t policy = l2_evict_first_policy();
  const auto load_w = [&](int buf, int kt) {
    T* dst = smem + buf * S::kStageElems + row * kStride + ch * 8;
    const int64_t kofs = int64_t{kt} * kBlockK;
    const bool k_ok = kofs + ch * 8 < k;
#pragma unroll
    for (int i = 0; i < kWCopies; ++i) {
      const bool valid = k_ok && (w_valid >> i & 1u);
      cp_async16_stream(dst + i * kRowStep * kStride, valid ? w_row + int64_t{i} * kRowStep * k + kofs : w, valid,
                        policy);
    }
  };
  const auto load_x = [&](int buf, int kt) {
    T* dst = smem + buf * S::kStageElems + kWElems + row * kStride + ch * 8;
    const int64_t kofs = int64_t{kt} * kBlockK + ch * 8;
    const bool k_ok = kofs < k;
#pragma unroll
    for (int i = 0; i < S::kTokens / kRowStep; ++i) {
      const int tok = row + i * kRowStep;
      const bool valid = k_ok && tok < a.m;
      cp_async16(dst + i * kRowStep * kStride, valid ? x + int64_t{tok} * k + kofs : x, valid);
    }
  };

  // Prologue: stages 0..kStages-2. The weights are never written by the kernels before this one (a streamed
  // layer's copy is ordered before them by an event), so their copies go out before waiting for x's producer
  // (programmatic dependent launch). All of it is one group, padded with empty groups so that the main loop's
  // "all but the newest kStages - 2 groups" always means "k-tile it has landed".
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s)
    if (s < n_kt) load_w(s, kt_begin + s);
  pdl_wait();
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s)
    if (s < n_kt) load_x(s, kt_begin + s);
  cp_async_commit();
#pragma unroll
  for (int s = 0; s < kStages - 2; ++s) cp_async_commit();

  // acc[i][j]: features warp * 32 + 16 i + (g, g + 8) x tokens 8 j + (c2, c2 + 1), mma_16816's D layout.
  float acc[2][2 * MT][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2 * MT; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;
  // ldmatrix row addresses. A (weights, as the attention kernel's Q): matrices (rows +0, k +0), (rows +8, k +0),
  // (rows +0, k +8), (rows +8, k +8) = a[0..3]. B (x rows, as its K tile): (tokens +0, k +0), (tokens +0, k +8),
  // (tokens +8, k +0), (tokens +8, k +8) = b0, b1 of tokens 0-7 and b0, b1 of tokens 8-15.
  const int a_lane = (warp * 32 + (lane & 7) + ((lane >> 3) & 1) * 8) * kStride + (lane >> 4) * 8;
  const int b_lane = ((lane & 7) + (lane >> 4) * 8) * kStride + ((lane >> 3) & 1) * 8;

  for (int it = 0; it < n_kt; ++it) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // k-tile it is visible to every warp, and every warp is done with buffer (it - 1) % kStages
    const int pre = it + kStages - 1;
    if (pre < n_kt) {
      load_w(pre % kStages, kt_begin + pre);
      load_x(pre % kStages, kt_begin + pre);
    }
    cp_async_commit();  // possibly empty, to keep the group count

    const T* ws = smem + (it % kStages) * S::kStageElems;
    const T* xs = ws + kWElems;
#pragma unroll
    for (int kk = 0; kk < kBlockK / 16; ++kk) {
      uint32_t af[2][4];
      ldmatrix_x4(af[0], ws + a_lane + kk * 16);
      ldmatrix_x4(af[1], ws + a_lane + 16 * kStride + kk * 16);
#pragma unroll
      for (int t = 0; t < MT; ++t) {
        uint32_t bf[4];
        ldmatrix_x4(bf, xs + b_lane + t * 16 * kStride + kk * 16);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          mma_16816_t<T>(acc[i][2 * t], af[i], bf[0], bf[1]);
          mma_16816_t<T>(acc[i][2 * t + 1], af[i], bf[2], bf[3]);
        }
      }
    }
  }
  pdl_trigger();  // only the epilogue is left: let the next kernel get going

  // Epilogue: the accumulators go through shared memory as an f32 [tokens][128 features] tile, so that rows of
  // the output (or of the partials) are written 4 features per thread, consecutive threads on consecutive
  // features.
  cp_async_wait<0>();  // only empty groups can be left, but the pipeline's memory is about to be reused
  __syncthreads();
  float* tile = reinterpret_cast<float*>(smem_raw);
  {
    const int g = lane / 4, c2 = 2 * (lane % 4);
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2 * MT; ++j) {
        const int f = warp * 32 + 16 * i + g, tok = 8 * j + c2;
        tile[tok * kTileStride + f] = acc[i][j][0];
        tile[(tok + 1) * kTileStride + f] = acc[i][j][1];
        tile[tok * kTileStride + f + 8] = acc[i][j][2];
        tile[(tok + 1) * kTileStride + f + 8] = acc[i][j][3];
      }
  }
  __syncthreads();
  constexpr int kVecs = kBlockN / 4;  // float4s per token row
  const int items = a.m * kVecs;
  const auto tile4 = [&](int idx) {
    return *reinterpret_cast<const float4*>(tile + (idx / kVecs) * kTileStride + (idx % kVecs) * 4);
  };
  if (a.splits == 1) {
    for (int idx = tid; idx < items; idx += kThreads) store4(a, idx / kVecs, n0 + (idx % kVecs) * 4, tile4(idx));
    return;
  }

  float4* mine = a.partials + (int64_t{blockIdx.x} * a.splits + split) * items;
  for (int idx = tid; idx < items; idx += kThreads) __stcg(mine + idx, tile4(idx));
  __threadfence();  // the partials are visible device-wide before the counter says so
  __syncthreads();
  if (tid == 0) last_s = atomicAdd(a.counters + blockIdx.x, 1u) == static_cast<unsigned>(a.splits - 1);
  __syncthreads();
  if (!last_s) return;
  __threadfence();
  const float4* all = a.partials + int64_t{blockIdx.x} * a.splits * items;
  for (int idx = tid; idx < items; idx += kThreads) {
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int s = 0; s < a.splits; ++s) {  // split order, whichever block is last: deterministic
      const float4 p = __ldcg(all + int64_t{s} * items + idx);
      sum.x += p.x;
      sum.y += p.y;
      sum.z += p.z;
      sum.w += p.w;
    }
    store4(a, idx / kVecs, n0 + (idx % kVecs) * 4, sum);
  }
  if (tid == 0) a.counters[blockIdx.x] = 0;  // ready for the next launch (kernel boundaries order this)
}

// Per-process setup of the 8 kernels (shared memory opt-in above 48 KB) and their residency per SM.
// TODO(#5): per device, as attention_prefill_mma.cu's opt-in; one process drives one kind of GPU in practice.
struct Setup {
  bool ok = false;          // the device has sm_80+ and enough shared memory per block
  int blocks_per_sm[5] = {};  // [MT], bf16 kernels (the f16 ones are the same code)
};

template <typename T, int MT>
void set_smem(int max_optin, bool& ok) {
  if (static_cast<size_t>(max_optin) < SkinnySmem<MT>::kBytes) {
    ok = false;
    return;
  }
  CHECK_CUDA(cudaFuncSetAttribute(skinny_gemm_kernel<T, MT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(SkinnySmem<MT>::kBytes)));
}

const Setup& setup() {
  static Setup s;
  static std::once_flag once;
  std::call_once(once, [] {
    int device = 0, major = 0, max_optin = 0;
    CHECK_CUDA(cudaGetDevice(&device));
    CHECK_CUDA(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    CHECK_CUDA(cudaDeviceGetAttribute(&max_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    s.ok = major >= 8;
    if (!s.ok) return;
    set_smem<__nv_bfloat16, 1>(max_optin, s.ok);
    set_smem<__nv_bfloat16, 2>(max_optin, s.ok);
    set_smem<__nv_bfloat16, 3>(max_optin, s.ok);
    set_smem<__nv_bfloat16, 4>(max_optin, s.ok);
    set_smem<__half, 1>(max_optin, s.ok);
    set_smem<__half, 2>(max_optin, s.ok);
    set_smem<__half, 3>(max_optin, s.ok);
    set_smem<__half, 4>(max_optin, s.ok);
    if (!s.ok) return;
    const auto occupancy = [](auto kernel, size_t bytes) {
      int blocks = 0;
      CHECK_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, bytes));
      return std::max(blocks, 1);
    };
    s.blocks_per_sm[1] = occupancy(skinny_gemm_kernel<__nv_bfloat16, 1>, SkinnySmem<1>::kBytes);
    s.blocks_per_sm[2] = occupancy(skinny_gemm_kernel<__nv_bfloat16, 2>, SkinnySmem<2>::kBytes);
    s.blocks_per_sm[3] = occupancy(skinny_gemm_kernel<__nv_bfloat16, 3>, SkinnySmem<3>::kBytes);
    s.blocks_per_sm[4] = occupancy(skinny_gemm_kernel<__nv_bfloat16, 4>, SkinnySmem<4>::kBytes);
  });
  return s;
}

int max_blocks_per_sm() {
  const Setup& s = setup();
  return *std::max_element(s.blocks_per_sm + 1, s.blocks_per_sm + 5);
}

// Workspace layout: counters (one word per block of a full wave), then the partials of a full wave at M = 64.
size_t counter_bytes(int sm_count) {
  const size_t words = static_cast<size_t>(max_blocks_per_sm()) * static_cast<size_t>(sm_count);
  return (words * sizeof(unsigned) + 255) / 256 * 256;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
bool float_dtype(DType dt) { return dt == DType::kF32 || dt == DType::kF16 || dt == DType::kBF16; }

template <typename T, int MT>
void launch_mt(const SkinnyArgs& a, dim3 grid, cudaStream_t stream) {
  launch_pdl(skinny_gemm_kernel<T, MT>, grid, dim3(kThreads), SkinnySmem<MT>::kBytes, stream, a);
}

template <typename T>
void launch_t(const SkinnyArgs& a, dim3 grid, cudaStream_t stream) {
  switch ((a.m + 15) / 16) {
    case 1: return launch_mt<T, 1>(a, grid, stream);
    case 2: return launch_mt<T, 2>(a, grid, stream);
    case 3: return launch_mt<T, 3>(a, grid, stream);
    default: return launch_mt<T, 4>(a, grid, stream);
  }
}

}  // namespace

bool skinny_gemm_supports(DType in_dt, DType out_dt, int64_t m, int64_t n, int64_t k) {
  // gridDim.x counts feature blocks (at most 2^31 - 1); k-tiles fit an int.
  return (in_dt == DType::kBF16 || in_dt == DType::kF16) && float_dtype(out_dt) && m >= 3 && m <= kSkinnyMaxRows &&
         n > 0 && k > 0 && k % 8 == 0 && k / kBlockK < (int64_t{1} << 30) && n / kBlockN < (int64_t{1} << 30) &&
         setup().ok;
}

size_t skinny_gemm_workspace_bytes(int sm_count) {
  const size_t wave = static_cast<size_t>(max_blocks_per_sm()) * static_cast<size_t>(sm_count);
  return counter_bytes(sm_count) + wave * kSkinnyMaxRows * kBlockN * sizeof(float);
}

SkinnyGemmPlan skinny_gemm_plan(int64_t m, int64_t n, int64_t k, int sm_count) {
  const int64_t mt = std::clamp<int64_t>((m + 15) / 16, 1, 4);
  const int64_t blocks_n = (n + kBlockN - 1) / kBlockN;
  const int64_t k_tiles = (k + kBlockK - 1) / kBlockK;
  const int64_t wave = int64_t{setup().blocks_per_sm[mt]} * std::max(sm_count, 1);
  SkinnyGemmPlan plan;
  // As many splits as fit in one wave of resident blocks next to the other feature blocks (a second, partial
  // wave would double the time of its blocks' bytes), each at least kMinTilesPerSplit k-tiles long.
  if (blocks_n < wave) plan.splits = std::clamp<int64_t>(std::min(wave / blocks_n, k_tiles / kMinTilesPerSplit), 1, kMaxSplits);
  // blocks_n * splits <= wave, so the workspace sized by skinny_gemm_workspace_bytes holds every plan.
  return plan;
}

void launch_skinny_gemm(const void* x, const void* w, DType in_dt, const void* bias, DType bias_dt, void* out,
                        DType out_dt, int64_t m, int64_t n, int64_t k, const SkinnyGemmPlan& plan, void* workspace,
                        size_t workspace_bytes, int sm_count, cudaStream_t stream) {
  if (m == 0 || n == 0) return;
  STRATA_CHECK(skinny_gemm_supports(in_dt, out_dt, m, n, k) && aligned16(x) && aligned16(w) &&
                   (bias == nullptr || float_dtype(bias_dt)),
               "skinny GEMM does not take M = ", m, ", N = ", n, ", K = ", k, " with ", dtype_name(in_dt), " -> ",
               dtype_name(out_dt), " (or x/w are not 16-byte aligned); CudaBackend::matmul falls back to cuBLAS");
  const int64_t blocks_n = (n + kBlockN - 1) / kBlockN;
  SkinnyArgs a{};
  a.x = x;
  a.w = w;
  a.bias = bias;
  a.bias_dt = bias_dt;
  a.out = out;
  a.out_dt = out_dt;
  a.m = static_cast<int>(m);
  a.n = n;
  a.k = k;
  a.k_tiles = static_cast<int>((k + kBlockK - 1) / kBlockK);
  a.splits = static_cast<int>(std::clamp<int64_t>(plan.splits, 1, std::max(a.k_tiles, 1)));
  if (a.splits > 1) {
    const size_t counters = counter_bytes(sm_count);
    const size_t need = counters + static_cast<size_t>(blocks_n * a.splits * m * kBlockN) * sizeof(float);
    STRATA_CHECK(workspace != nullptr && aligned16(workspace) && need <= workspace_bytes &&
                     static_cast<size_t>(blocks_n) * sizeof(unsigned) <= counters,
                 "skinny GEMM: the workspace (", workspace_bytes, " bytes) does not hold ", a.splits, " splits of ",
                 blocks_n, " feature blocks at M = ", m, " (", need, " bytes); size it with skinny_gemm_workspace_bytes");
    a.counters = static_cast<unsigned*>(workspace);
    a.partials = reinterpret_cast<float4*>(static_cast<uint8_t*>(workspace) + counters);
  }
  const dim3 grid(static_cast<unsigned>(blocks_n), static_cast<unsigned>(a.splits));
  if (in_dt == DType::kF16) launch_t<__half>(a, grid, stream);
  else launch_t<__nv_bfloat16>(a, grid, stream);
}

}  // namespace strata::cuda
