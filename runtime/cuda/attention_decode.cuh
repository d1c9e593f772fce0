// runtime/cuda/attention_decode.cuh: what the two decode attention kernels (attention_decode.cu, shared-memory
// tiles; attention_decode_warps.cu, per-warp registers) share: the keys a block's context split covers, and
// how a split hands its result on, normalised when it is the only one, else as the partial that
// attention_decode.cu's combine kernel merges ([T, H, splits, hd] unnormalised outputs, [T, H, splits, 2]
// running max and sum).
#pragma once
#include <cmath>
#include <cstdint>

#include "runtime/cuda/device_dtype.cuh"
#include "runtime/cuda/kernels.h"

namespace strata::cuda {

// The query heads a decode block is compiled for: `g` (query heads per KV head, or this block's share of
// them) rounded up to a power of two; both decode kernels instantiate these.
constexpr int heads_pow2(int64_t g) { return g <= 1 ? 1 : g <= 2 ? 2 : g <= 4 ? 4 : g <= 8 ? 8 : 16; }

// Keys [start, end) of split `split` of token t's context; empty (start >= end) when the split lies past it.
__device__ __forceinline__ void decode_split_keys(const AttentionArgs& a, int t, int split, int splits,
                                                  int keys_per_split, int& start, int& end) {
  const int keys = a.positions[t] + 1;
  if (a.split_by_length) {
    // This token's keys in equal grain-multiple pieces over all `splits`: a plan sized for the table's width (a
    // recorded step's) would otherwise leave every split past the token's context idle.
    const int per = (keys + splits - 1) / splits;
    keys_per_split = min(keys_per_split, (per + a.split_grain - 1) / a.split_grain * a.split_grain);
  }
  start = split * keys_per_split;
  end = min(keys, start + keys_per_split);
}

// The partial of an empty split for query heads [h0, h0 + count) (no keys: max -inf, sum 0).
__device__ __forceinline__ void write_empty_partial(const AttentionArgs& a, int t, int h0, int count, int split,
                                                    int splits, float* part_ml) {
  if (threadIdx.x < count) {
    const int64_t idx = (int64_t{t} * a.n_heads + h0 + threadIdx.x) * splits + split;
    part_ml[idx * 2] = -INFINITY;
    part_ml[idx * 2 + 1] = 0.f;
  }
}

// Element d of `head` (t * H + h): out / sum into a.out with one split, else the split's unnormalised
// output and, once per head, its (max, sum).
__device__ __forceinline__ void write_decode_result(const AttentionArgs& a, int64_t head, int d, int split,
                                                    int splits, float out, float max, float sum, float* part_o,
                                                    float* part_ml) {
  if (splits == 1) {
    store_elem(a.out, a.out_dt, head * a.head_dim + d, out / sum);
    return;
  }
  part_o[(head * splits + split) * a.head_dim + d] = out;
  if (d == 0) {
    part_ml[(head * splits + split) * 2] = max;
    part_ml[(head * splits + split) * 2 + 1] = sum;
  }
}

}  // namespace strata::cuda
