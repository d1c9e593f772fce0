// tests/gpu/gemv_chain.cu: where a batch-1 decode step of the 7b shape loses time against the copy rate,
// measured on the backend's own kernels in CUDA graphs, without the rest of the runtime:
//   - each projection shape alone, 32 launches (one per layer, each its own weights) in one graph;
//   - the four projections of every layer in order (the GEMV chain of a step, 12.9 GB of weights);
//   - the same chain with the step's small kernels between the GEMVs (rmsnorm launches standing in for
//     norm, rope_kv_write and attention, plus the real SwiGLU), with and without programmatic launch;
//   - the gate/up GEMV with the SwiGLU in its epilogue, alone and in that chain;
//   - the greedy sampling kernel on one row of a 32000-token vocabulary (device time a step spends after
//     its recorded graph).
// Each row prints us per graph, GB/s of weights and the share of the device-to-device copy rate measured
// in the same run. Built with the CUDA build (target gemv_chain); run: build-gpu/tests/gemv_chain [layers=32].
// `--once` launches each shape once outside graphs, for ncu. `--rolling N` picks the one-row kernel as the
// backend's gemv_rolling kernel option does (runtime/cuda/launch.h).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "runtime/cuda/check_cuda.h"
#include "runtime/cuda/kernels.h"
#include "runtime/cuda/pdl.cuh"
#include "tests/gpu/bench_util.cuh"

namespace {

using strata::DType;
namespace cu = strata::cuda;
using strata::gpu_bench::graph_replay_us;

__nv_bfloat16* random_bf16(size_t n, uint32_t seed) {
  __nv_bfloat16* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, n * 2));
  strata::gpu_bench::fill16(p, static_cast<int64_t>(n), seed);
  return p;
}

struct Shape {
  const char* name;
  int64_t n, k;
};

// Device-to-device copy rate (bytes read + written per second) of cudaMemcpyAsync on a stream, timed with
// events outside graphs (as tools/bench/hf_peer.py times torch's copy): a memcpy node inside a graph read
// about a third lower on the H200.
double copy_gbs(cudaStream_t s) {
  const size_t bytes = size_t{2} << 30;
  void *a, *b;
  CHECK_CUDA(cudaMalloc(&a, bytes));
  CHECK_CUDA(cudaMalloc(&b, bytes));
  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));
  CHECK_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s));
  CHECK_CUDA(cudaEventRecord(e0, s));
  for (int i = 0; i < 10; ++i) CHECK_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s));
  CHECK_CUDA(cudaEventRecord(e1, s));
  CHECK_CUDA(cudaEventSynchronize(e1));
  float ms = 0;
  CHECK_CUDA(cudaEventElapsedTime(&ms, e0, e1));
  CHECK_CUDA(cudaEventDestroy(e0));
  CHECK_CUDA(cudaEventDestroy(e1));
  CHECK_CUDA(cudaFree(a));
  CHECK_CUDA(cudaFree(b));
  return 2.0 * bytes * 10 / (ms * 1e-3) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  const bool once = argc > 1 && std::strcmp(argv[1], "--once") == 0;
  const int layers = !once && argc > 1 && std::isdigit(static_cast<unsigned char>(argv[1][0])) ? std::atoi(argv[1]) : 32;
  const Shape shapes[] = {{"qkv 12288x4096", 12288, 4096},
                          {"o 4096x4096", 4096, 4096},
                          {"gate_up 22016x4096", 22016, 4096},
                          {"down 4096x11008", 4096, 11008}};
  // The one-row GEMV's form (CudaBackendOptions::gemv_rolling): --rolling 0 (by grid), 1 (never), 2 (always).
  cu::GemvRolling rolling = cu::GemvRolling::kByGrid;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--rolling") == 0) rolling = static_cast<cu::GemvRolling>(std::atoi(argv[i + 1]));
  bool pdl = true;
  cudaStream_t s;
  CHECK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  std::vector<std::vector<__nv_bfloat16*>> w(4);
  for (int i = 0; i < 4; ++i)
    for (int l = 0; l < (once ? 1 : layers); ++l)
      w[i].push_back(random_bf16(static_cast<size_t>(shapes[i].n * shapes[i].k), 17u * l + i));
  __nv_bfloat16* x = random_bf16(11008, 99);  // every GEMV input (K <= 11008)
  __nv_bfloat16* y = random_bf16(22016, 98);  // every GEMV output
  __nv_bfloat16* res = random_bf16(4096, 97);
  __nv_bfloat16* norm_w = random_bf16(4096, 96);
  __nv_bfloat16* h = random_bf16(4096, 95);
  __nv_bfloat16* f = random_bf16(11008, 94);
  CHECK_CUDA(cudaDeviceSynchronize());
  auto on = [&] { return cu::Launch(s, pdl, rolling); };  // the launch forms of the moment
  auto gemv = [&](int i, int l) {
    cu::launch_gemv(x, DType::kBF16, w[i][static_cast<size_t>(l)], DType::kBF16, nullptr, DType::kF32, y, DType::kBF16,
                    1, shapes[i].n, shapes[i].k, on());
  };
  if (once) {  // for ncu: one launch of each shape
    for (int i = 0; i < 4; ++i) gemv(i, 0);
    CHECK_CUDA(cudaStreamSynchronize(s));
    return 0;
  }
  const double copy = copy_gbs(s);
  std::printf("device copy %.0f GB/s; %d layers; one-row GEMV form %d (0: by grid, 1: plain, 2: pipelined)\n",
              copy, layers, static_cast<int>(rolling));
  std::printf("%-44s %10s %9s %8s\n", "graph", "us", "GB/s", "of copy");
  auto row = [&](const char* name, double bytes, double us) {
    std::printf("%-44s %10.1f %9.0f %7.1f%%\n", name, us, bytes / us / 1e3, 100.0 * bytes / us / 1e3 / copy);
  };
  double chain_bytes = 0;
  for (int i = 0; i < 4; ++i) {
    const double bytes = 2.0 * shapes[i].n * shapes[i].k * layers;
    chain_bytes += bytes;
    const double us = graph_replay_us(s, [&] {
      for (int l = 0; l < layers; ++l) gemv(i, l);
    });
    char name[64];
    std::snprintf(name, sizeof name, "%s x %d", shapes[i].name, layers);
    row(name, bytes, us);
    std::printf("%-44s %10.2f us per launch\n", "", us / layers);
  }
  // The gate/up GEMV with the SwiGLU in its epilogue (CudaBackendOptions::fuse_swiglu), alone and in place of
  // gate_up + swiglu in the chain below.
  auto gate_up_swiglu = [&](int l) {
    cu::launch_gemv_swiglu(x, DType::kBF16, w[2][static_cast<size_t>(l)], DType::kBF16, f, DType::kBF16, 1,
                           shapes[2].n / 2, shapes[2].k, on());
  };
  {
    const double us = graph_replay_us(s, [&] {
      for (int l = 0; l < layers; ++l) gate_up_swiglu(l);
    });
    char name[64];
    std::snprintf(name, sizeof name, "gate_up + SwiGLU epilogue x %d", layers);
    row(name, 2.0 * shapes[2].n * shapes[2].k * layers, us);
    std::printf("%-44s %10.2f us per launch\n", "", us / layers);
  }
  auto small = [&] {  // one row of 4096: a stand-in for each latency-bound kernel of a layer
    cu::launch_rmsnorm(x, DType::kBF16, res, DType::kBF16, norm_w, DType::kBF16, 1e-5f, 1, 4096, h, DType::kBF16,
                       on());
  };
  auto swiglu = [&] { cu::launch_swiglu(y, DType::kBF16, f, DType::kBF16, 1, 11008, on()); };
  for (bool with_pdl : {true, false}) {
    pdl = with_pdl;
    row(pdl ? "4 GEMVs per layer, PDL" : "4 GEMVs per layer, no PDL", chain_bytes, graph_replay_us(s, [&] {
          for (int l = 0; l < layers; ++l)
            for (int i = 0; i < 4; ++i) gemv(i, l);
        }));
    // The step's order; fused: the SwiGLU in the gate/up GEMV's epilogue instead of its own kernel.
    auto with_small_kernels = [&](bool fused) {
      return graph_replay_us(s, [&] {
        for (int l = 0; l < layers; ++l) {
          small();  // norm
          gemv(0, l);
          small();  // rope_kv_write
          small();  // attention
          gemv(1, l);
          small();  // norm
          if (fused) {
            gate_up_swiglu(l);
          } else {
            gemv(2, l);
            swiglu();
          }
          gemv(3, l);
        }
      });
    };
    row(pdl ? "+ 5 small kernels per layer, PDL" : "+ 5 small kernels per layer, no PDL", chain_bytes,
        with_small_kernels(false));
    if (pdl) row("+ 4 small kernels, SwiGLU in gate_up, PDL", chain_bytes, with_small_kernels(true));
    if (pdl) {
      // The step's sampling (greedy: argmax and log-partition of one row of 32000 f32 logits), which runs
      // after the recorded step: its device time is part of ms/step but not of the step's gpu ms.
      constexpr int64_t kVocab = 32000;
      float* logits = nullptr;
      cu::DeviceSampling* params = nullptr;
      int32_t* tokens = nullptr;
      float* logprobs = nullptr;
      CHECK_CUDA(cudaMalloc(&logits, kVocab * sizeof(float)));
      CHECK_CUDA(cudaMalloc(&params, sizeof(cu::DeviceSampling)));
      CHECK_CUDA(cudaMalloc(&tokens, sizeof(int32_t)));
      CHECK_CUDA(cudaMalloc(&logprobs, sizeof(float)));
      const cu::DeviceSampling greedy{};
      CHECK_CUDA(cudaMemcpy(params, &greedy, sizeof greedy, cudaMemcpyHostToDevice));
      strata::gpu_bench::fill16(logits, kVocab * 2, 93);  // finite values of random sign and mantissa
      const double us = graph_replay_us(s, [&] {
        for (int l = 0; l < layers; ++l) cu::launch_sample(logits, 1, kVocab, params, tokens, logprobs, on());
      });
      std::printf("%-44s %10.1f %9s %8s\n", "greedy sample 1 x 32000, PDL", us, "-", "-");
      std::printf("%-44s %10.2f us per launch\n", "", us / layers);
      for (void* p : {static_cast<void*>(logits), static_cast<void*>(params), static_cast<void*>(tokens),
                      static_cast<void*>(logprobs)})
        CHECK_CUDA(cudaFree(p));
    }
    row(pdl ? "5 small kernels per layer alone, PDL" : "5 small kernels per layer alone, no PDL", 0,
        graph_replay_us(s, [&] {
          for (int l = 0; l < layers; ++l) {
            small();
            small();
            small();
            small();
            swiglu();
          }
        }));
  }
  return 0;
}
