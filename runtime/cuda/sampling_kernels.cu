// runtime/cuda/sampling_kernels.cu: token sampling on the GPU, one block per row of f32 logits, so a decode
// step copies a few bytes per sequence back to the host instead of a vocabulary of floats.
// It follows Sampler::sample (runtime/sampler.cpp) without the repetition penalty: greedy, or temperature
// with top-k, top-p and min-p, then one draw from the same stateless (seed, step) uniform. The host
// sorts the kept tokens; here every cut is found by a bitwise search over the logits' order-preserving
// 32-bit keys, each probe one block-wide pass (a count or a probability mass) over the row:
//   top-k  the largest key K with count(key >= K) >= k
//   top-p  the largest key K with mass(key >= K) >= top_p * mass(top-k set)
//   draw   the largest key K with mass(kept, key >= K) > u * mass(kept): the token the host's scan in
//          descending order stops at.
// Masses are summed in double, as on the host; they can differ from the host's sequential sums in the
// last bits, so a draw that falls within rounding of a boundary may pick the neighbouring token.
#include <cstdint>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/pdl.cuh"
#include "runtime/sampling_params.h"

namespace strata::cuda {
namespace {

constexpr int kThreads = 1024;

// Order-preserving map of a float to an unsigned key (larger float -> larger key).
__device__ __forceinline__ uint32_t key_of(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) != 0 ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Block-wide reduction; every thread gets the result. `scratch` holds one value per warp.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // the previous reduction's readers are done with scratch
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  T r = scratch[0];
  for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) r = op(r, scratch[w]);
  return r;
}

struct Sum {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
  __device__ uint64_t operator()(uint64_t a, uint64_t b) const { return a > b ? a : b; }
};
struct Min {
  __device__ uint64_t operator()(uint64_t a, uint64_t b) const { return a < b ? a : b; }
};

__global__ __launch_bounds__(kThreads) void sample_kernel(const float* __restrict__ logits, int64_t vocab,
                                                          const DeviceSampling* __restrict__ params,
                                                          int32_t* __restrict__ tokens, float* __restrict__ logprobs) {
  __shared__ double dscratch[32];
  __shared__ uint64_t uscratch[32];
  const int64_t row = blockIdx.x;
  // The host wrote the parameters before the launch, no kernel does: their read (over the bus when they
  // are in mapped host memory) overlaps the wait for the logits.
  const DeviceSampling p = params[row];
  pdl_wait();
  pdl_trigger();
  const float* z = logits + row * vocab;

  // The greedy path (argmax and the log-partition) is what every decode step pays: 16-byte loads, several
  // in flight per thread, and the exponentials in float (each term is at most 1): each thread sums its ~32
  // terms in float, the block adds those sums in double. Double-precision exp over the vocabulary cost
  // more than the rest of the kernel (the per-op profile with the copies: 45 us a call before, 27 after; H200).
  const bool vec = vocab % 4 == 0 && reinterpret_cast<uintptr_t>(z) % 16 == 0;
  const auto* z4 = reinterpret_cast<const float4*>(z);
  const int64_t n4 = vec ? vocab / 4 : 0;
  // Argmax, ties to the lower id: the key in the high word, the complemented id in the low word.
  uint64_t best = 0;
  const auto consider = [&](int64_t i, float v) {
    best = max(best, (uint64_t{key_of(v)} << 32) | (0xffffffffu - static_cast<uint32_t>(i)));
  };
#pragma unroll 8
  for (int64_t j = threadIdx.x; j < n4; j += blockDim.x) {
    const float4 v = z4[j];
    consider(4 * j, v.x), consider(4 * j + 1, v.y), consider(4 * j + 2, v.z), consider(4 * j + 3, v.w);
  }
  for (int64_t i = 4 * n4 + threadIdx.x; i < vocab; i += blockDim.x) consider(i, z[i]);
  best = block_reduce(best, Max{}, uscratch);
  const int64_t top = 0xffffffffu - static_cast<uint32_t>(best & 0xffffffffu);
  const float zmax = z[top];
  float part = 0.f;
#pragma unroll 8
  for (int64_t j = threadIdx.x; j < n4; j += blockDim.x) {
    const float4 v = z4[j];
    part += (expf(v.x - zmax) + expf(v.y - zmax)) + (expf(v.z - zmax) + expf(v.w - zmax));
  }
  for (int64_t i = 4 * n4 + threadIdx.x; i < vocab; i += blockDim.x) part += expf(z[i] - zmax);
  const double log_z = static_cast<double>(zmax) + log(block_reduce(static_cast<double>(part), Sum{}, dscratch));

  int64_t token = top;
  if (p.temperature >= kGreedyTemperature) {  // below it: greedy, as Sampler::sample
    const float t = p.temperature;
    const double smax = static_cast<double>(zmax / t);
    auto weight = [&](int64_t i) { return exp(static_cast<double>(z[i] / t) - smax); };
    // Bitwise search for the largest key K with pred(K) true, pred monotone (true at K = 0).
    auto largest_key = [&](auto&& pred) {
      uint32_t k = 0;
      for (int b = 31; b >= 0; --b) {
        const uint32_t cand = k | (1u << b);
        if (pred(cand)) k = cand;
      }
      return k;
    };
    auto count_at_least = [&](uint32_t k) {
      double c = 0;
      for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) c += key_of(z[i]) >= k ? 1.0 : 0.0;
      return block_reduce(c, Sum{}, dscratch);
    };
    auto mass_at_least = [&](uint32_t k, uint32_t floor_key, bool use_min_p) {
      double m = 0;
      for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
        const uint32_t key = key_of(z[i]);
        if (key < k || key < floor_key) continue;
        const double w = weight(i);
        if (use_min_p && w < static_cast<double>(p.min_p) && i != top) continue;
        m += w;
      }
      return block_reduce(m, Sum{}, dscratch);
    };

    uint32_t keep_key = 0;  // kept: key >= keep_key (and the min-p floor)
    if (p.top_k > 0 && p.top_k < vocab) {
      const double k = static_cast<double>(p.top_k);
      keep_key = largest_key([&](uint32_t cand) { return count_at_least(cand) >= k; });
    }
    if (p.top_p < 1.f) {
      const double target = static_cast<double>(p.top_p) * mass_at_least(keep_key, 0, false);
      keep_key = largest_key([&](uint32_t cand) { return mass_at_least(cand, keep_key, false) >= target; });
    }
    const bool use_min_p = p.min_p > 0.f;
    const double total = mass_at_least(0, keep_key, use_min_p);
    const double u = static_cast<double>(splitmix64(p.seed * 0x100000001b3ull ^ splitmix64(p.step)) >> 11) * 0x1.0p-53;
    const double target = u * total;
    const uint32_t drawn =
        largest_key([&](uint32_t cand) { return mass_at_least(cand, keep_key, use_min_p) > target; });
    // The kept token with that key (lowest id on ties); when rounding leaves none above the draw, the
    // host's scan ends on its last kept token, the smallest key: the lowest kept key then.
    uint64_t pick = ~uint64_t{0}, last = ~uint64_t{0};
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      const uint32_t key = key_of(z[i]);
      if (key < keep_key) continue;
      if (use_min_p && weight(i) < static_cast<double>(p.min_p) && i != top) continue;
      if (key == drawn) pick = min(pick, static_cast<uint64_t>(i));
      last = min(last, (uint64_t{key} << 32) | static_cast<uint32_t>(i));
    }
    pick = block_reduce(pick, Min{}, uscratch);
    last = block_reduce(last, Min{}, uscratch);
    token = pick != ~uint64_t{0} ? static_cast<int64_t>(pick) : static_cast<int64_t>(last & 0xffffffffu);
  }
  if (threadIdx.x == 0) {
    tokens[row] = static_cast<int32_t>(token);
    logprobs[row] = static_cast<float>(static_cast<double>(z[token]) - log_z);
  }
}

}  // namespace

void launch_sample(const float* logits, int64_t rows, int64_t vocab, const DeviceSampling* params, int32_t* tokens,
                   float* logprobs, const Launch& stream) {
  if (rows == 0) return;
  launch_pdl(sample_kernel, static_cast<unsigned>(rows), kThreads, 0, stream, logits, vocab, params, tokens, logprobs);
  CHECK_LAUNCH();
}

}  // namespace strata::cuda
