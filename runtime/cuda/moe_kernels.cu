// runtime/cuda/moe_kernels.cu: the mixture-of-experts combine and a decode step's routing (moe_kernels.h).
// The combine: blocks own (output row, column span) and sum that token's k expert rows, so no two threads
// write one element: no atomics, the same bits every run, and each token's row is read and written once.
#include <algorithm>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/device_dtype.cuh"
#include "runtime/cuda/moe_kernels.h"
#include "runtime/cuda/pdl.cuh"

namespace strata::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void combine_rows_kernel(const void* src, DType src_dt, int64_t src_rows, const int32_t* index,
                                    const float* weight, int64_t k, int64_t dim, bool accumulate, void* out,
                                    DType out_dt) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.x;
  const int32_t* idx = index + t * k;
  const float* w = weight + t * k;
  for (int64_t d = int64_t{blockIdx.y} * blockDim.x + threadIdx.x; d < dim; d += int64_t{blockDim.x} * gridDim.y) {
    float acc = accumulate ? load_elem(out, out_dt, t * dim + d) : 0.f;
    for (int64_t j = 0; j < k; ++j) {
      const int64_t r = idx[j];
      if (r >= 0 && r < src_rows) acc += w[j] * load_elem(src, src_dt, r * dim + d);
    }
    store_elem(out, out_dt, t * dim + d, acc);
  }
}

}  // namespace

void launch_combine_rows(const void* src, DType src_dt, int64_t src_rows, const int32_t* index, const float* weight,
                         int64_t k, int64_t rows, int64_t dim, bool accumulate, void* out, DType out_dt,
                         const Launch& stream) {
  if (rows == 0 || dim == 0) return;
  const unsigned threads = static_cast<unsigned>(std::min<int64_t>(kThreads, (dim + 31) / 32 * 32));
  // A decode step's few rows would leave most SMs idle: spans of 2 x threads columns, as many as 4 a row.
  const int64_t span = 2 * int64_t{threads};
  const auto spans = static_cast<unsigned>(rows >= 32 ? 1 : std::min<int64_t>(4, (dim + span - 1) / span));
  launch_pdl(combine_rows_kernel, dim3(static_cast<unsigned>(rows), spans), dim3(threads), 0, stream, src, src_dt,
             src_rows, index, weight, k, dim, accumulate, out, out_dt);
  CHECK_LAUNCH();
}

namespace {

// One block of 8 warps: warp t routes token t, then thread s places slot s (tokens * top_k <= 256).
__global__ __launch_bounds__(256) void moe_route_kernel(MoeRouteArgs a) {
  pdl_wait();  // the router's logits are the previous kernel's output
  pdl_trigger();
  constexpr int kSlots = kMoeRouteMaxTokens * kMoeRouteMaxTopK;
  __shared__ int32_t sel[kSlots], leader[kSlots], rows_of[kSlots], rank_of[kSlots], entry_of[kSlots],
      offset_of[kSlots];
  __shared__ float prob[kSlots];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int T = a.tokens, E = a.experts, k = a.top_k, S = T * k;
  if (warp < T) {
    const float* row = a.logits + int64_t{warp} * E;
    float top = -INFINITY;
    for (int e = lane; e < E; e += 32) top = fmaxf(top, row[e]);
    top = warp_max(top);
    float sum = 0.f;
    for (int e = lane; e < E; e += 32) sum += expf(row[e] - top);
    sum = warp_sum(sum);
    // Top k by logit (the softmax is monotone), ties to the lower index: lane l holds experts l, l + 32, ...
    uint32_t taken = 0;
    float chosen = 0.f;
    for (int j = 0; j < k; ++j) {
      float best = 0.f;
      int best_e = -1;
      for (int i = 0, e = lane; e < E; ++i, e += 32)
        if (!(taken >> i & 1u) && (best_e < 0 || row[e] > best)) best = row[e], best_e = e;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, best, o);
        const int oe = __shfl_xor_sync(0xffffffffu, best_e, o);
        if (oe >= 0 && (best_e < 0 || ov > best || (ov == best && oe < best_e))) best = ov, best_e = oe;
      }
      if (best_e % 32 == lane) taken |= 1u << (best_e / 32);
      const float p = expf(best - top) / sum;
      chosen += p;
      if (lane == 0) sel[warp * k + j] = best_e, prob[warp * k + j] = p;
    }
    __syncwarp();
    if (lane < k && a.norm_topk) prob[warp * k + lane] /= chosen;
  }
  __syncthreads();
  const int s = threadIdx.x;
  const auto is_held = [&](int q) { return sel[q] - a.first >= 0 && sel[q] - a.first < a.held; };
  const auto counted = [&](int q) { return a.count_mask == nullptr || a.count_mask[q / k] >= 0; };
  // Each slot's expert: its first slot (the leader), how many slots chose it, how many before this one.
  if (s < S) {
    int lead = s, rows = 0, rank = 0;
    for (int q = 0; q < S; ++q)
      if (sel[q] == sel[s]) rows += 1, rank += q < s, lead = min(lead, q);
    leader[s] = lead, rows_of[s] = rows, rank_of[s] = rank;
  }
  __syncthreads();
  // Held experts take entries in the order of their leaders, their rows placed one after another.
  int used = 0;
  for (int q = 0; q < S; ++q) {
    if (leader[q] != q || !is_held(q)) continue;
    if (q == s) entry_of[s] = used;
    ++used;
  }
  if (s < S && leader[s] == s && is_held(s)) {
    int offset = 0;
    for (int q = 0; q < s; ++q)
      if (leader[q] == q && is_held(q)) offset += rows_of[q];
    offset_of[s] = offset;
  }
  __syncthreads();
  if (s < S) {
    const int t = s / k;
    const bool held = is_held(s);
    int row = -1;
    if (held) {
      row = offset_of[leader[s]] + rank_of[s];
      a.x_rows[row] = t;
    }
    a.pos[s] = row;
    a.weight[s] = prob[s];
    if (held && leader[s] == s) {
      const void* const* w = a.weights + 3 * (sel[s] - a.first);
      const int offset = offset_of[s];
      a.table[entry_of[s]] = {w[0], w[1], offset, offset, rows_of[s], 0};
      a.table[a.entries + entry_of[s]] = {w[2], nullptr, offset, offset, rows_of[s], 0};
    }
    if (a.counts != nullptr && counted(s)) {
      atomicAdd(a.counts + sel[s], 1ull);
      bool first = held;  // the expert's bytes once per step, for its first counted slot
      for (int q = 0; q < s && first; ++q) first = !(sel[q] == sel[s] && counted(q));
      if (first) atomicAdd(a.counts + E, static_cast<unsigned long long>(a.expert_bytes));
    }
  }
  if (s >= used && s < a.entries) a.table[s] = a.table[a.entries + s] = ExpertSlice{};
  if (s < T && a.shared_logit != nullptr) {
    a.shared_ids[s] = s;
    a.shared_gate[s] = 1.f / (1.f + expf(-a.shared_logit[s]));
  }
}

}  // namespace

void launch_moe_route(const MoeRouteArgs& args, const Launch& stream) {
  STRATA_CHECK(args.tokens >= 1 && args.tokens <= kMoeRouteMaxTokens && args.experts >= 1 &&
                   args.experts <= kMoeRouteMaxExperts && args.top_k >= 1 && args.top_k <= kMoeRouteMaxTopK &&
                   args.top_k <= args.experts && args.held >= 1 &&
                   args.entries == std::min(args.tokens * args.top_k, args.held),
               "launch_moe_route: ", args.tokens, " tokens, ", args.experts, " experts, top ", args.top_k, ", ",
               args.held, " held, ", args.entries, " entries are outside what the kernel takes");
  launch_pdl(moe_route_kernel, dim3(1), dim3(256), 0, stream, args);
  CHECK_LAUNCH();
}

}  // namespace strata::cuda
