// tests/gpu/gpu_cpu_logits.h: one model's logits on the CPU backend and on the CUDA backend, and how far
// apart they are, for the GPU tests that compare whole models.
#pragma once
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "launcher/model_session.h"
#include "runtime/sampler.h"

namespace strata::test {

struct CpuGpuLogits {
  Tensor cpu, gpu;  // [ids, vocab] each
};

// Every position's logits of `ids` from the model at `path`, once per backend (KV for 64 tokens).
inline CpuGpuLogits score_on_cpu_and_gpu(const std::string& path, const std::vector<int32_t>& ids) {
  launcher::SessionOptions options;
  options.model_path = path;
  options.device = "cpu";
  CpuGpuLogits out;
  {
    launcher::ModelSession cpu(options);
    cpu.prepare(64);
    out.cpu = cpu.generator().score(ids);
  }
  options.device = "cuda";
  launcher::ModelSession gpu(options);
  gpu.prepare(64);
  out.gpu = gpu.generator().score(ids);
  return out;
}

// worst: max |gpu - cpu|; spread: the largest max - min of a CPU row; decided: positions whose CPU top-2
// margin exceeds 5% of that row's range (a clear winner), agree: those where both argmaxes are equal.
struct LogitAgreement {
  double worst = 0, spread = 0;
  int agree = 0, decided = 0;
};

inline LogitAgreement compare_logits(const Tensor& ref, const Tensor& got) {
  LogitAgreement a;
  const int64_t V = ref.dim(1);
  for (int64_t t = 0; t < ref.dim(0); ++t) {
    const float* r = ref.data<float>() + t * V;
    const float* g = got.data<float>() + t * V;
    const auto [lo, hi] = std::minmax_element(r, r + V);
    a.spread = std::max(a.spread, static_cast<double>(*hi - *lo));
    for (int64_t v = 0; v < V; ++v) a.worst = std::max(a.worst, std::abs(static_cast<double>(r[v]) - g[v]));
    std::vector<float> sorted(r, r + V);
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    if (sorted[0] - sorted[1] > 0.05 * (*hi - *lo)) {  // a clear winner: bf16 noise cannot flip it
      ++a.decided;
      a.agree += Sampler::argmax({r, static_cast<size_t>(V)}) == Sampler::argmax({g, static_cast<size_t>(V)});
    }
  }
  return a;
}

}  // namespace strata::test
