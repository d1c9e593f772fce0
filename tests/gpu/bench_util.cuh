// tests/gpu/bench_util.cuh: what the GPU timing programs (kernel_bench, gemv_chain, attention_splits) share:
// random-looking 16-bit device data and the time of a recorded CUDA graph. Each program is one translation
// unit, so the definitions live here.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/cuda/check_cuda.h"

namespace strata::gpu_bench {

// Fills 16-bit words with a hash, as bf16 (or f16) values of magnitude in [2^-8, 2^-6) with random signs, so
// every weight, quantized scale and KV element is finite.
__global__ void fill16_kernel(uint16_t* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = static_cast<uint16_t>((h & 0x807fu) | (0x3c00u & 0x7f80u));  // exponent fixed, mantissa and sign random
  }
}

inline void fill16(void* p, int64_t words, uint32_t seed) {
  fill16_kernel<<<1024, 256>>>(static_cast<uint16_t*>(p), words, seed);
  CHECK_LAUNCH();
}

// Microseconds per replay of the graph `record` enqueues on s (captured once): the median of 5 blocks of 10
// replays, after 3 warm-up replays.
inline double graph_replay_us(cudaStream_t s, const std::function<void()>& record) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  record();
  CHECK_CUDA(cudaStreamEndCapture(s, &graph));
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 3; ++i) CHECK_CUDA(cudaGraphLaunch(exec, s));
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  std::vector<double> us;
  for (int rep = 0; rep < 5; ++rep) {
    CHECK_CUDA(cudaEventRecord(a, s));
    for (int i = 0; i < 10; ++i) CHECK_CUDA(cudaGraphLaunch(exec, s));
    CHECK_CUDA(cudaEventRecord(b, s));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    us.push_back(ms * 1e3 / 10);
  }
  std::sort(us.begin(), us.end());
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaGraphDestroy(graph));
  return us[2];
}

}  // namespace strata::gpu_bench
