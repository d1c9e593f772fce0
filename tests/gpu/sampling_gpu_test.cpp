// tests/gpu/sampling_gpu_test.cpp: Backend::sample on the CUDA backend against the host Sampler (the
// reference) on the same f32 logits. Greedy must agree exactly. Temperature draws must agree on all but
// rounding ties: the GPU sums masses in another order than the host's sorted scan, so a draw within a
// few ulps of a boundary may land on the neighbouring token. Skips when no GPU is present.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "runtime/backend.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/sampler.h"

namespace strata {
namespace {

struct Case {
  const char* name;
  SamplingParams params;
};

TEST(SamplingOnGpu, MatchesTheHostSampler) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  auto gpu = make_cuda_backend(0);
  std::mt19937 gen(7);
  const int64_t R = 96, V = 32000;
  Tensor host = Tensor::empty({R, V}, DType::kF32);
  std::normal_distribution<float> dist(0.f, 3.f);
  for (int64_t i = 0; i < host.numel(); ++i) host.data<float>()[i] = dist(gen);
  // A tie for the maximum in row 0: both ends of the sampler must take the lower id.
  host.data<float>()[100] = host.data<float>()[7] = 50.f;
  Tensor dev = gpu->alloc({R, V}, DType::kF32);
  gpu->copy(host, dev);

  auto params = [](float t, int k, float p, float mp, uint64_t seed) {
    SamplingParams s;
    s.temperature = t, s.top_k = k, s.top_p = p, s.min_p = mp, s.seed = seed;
    return s;
  };
  const std::vector<Case> cases = {
      {"greedy", params(0.f, 0, 1.f, 0.f, 0)},         {"temperature", params(1.f, 0, 1.f, 0.f, 11)},
      {"hot", params(2.5f, 0, 1.f, 0.f, 12)},           {"top_k", params(0.8f, 40, 1.f, 0.f, 13)},
      {"top_p", params(1.f, 0, 0.9f, 0.f, 14)},         {"top_k_top_p", params(0.7f, 50, 0.8f, 0.f, 15)},
      {"min_p", params(1.f, 0, 1.f, 0.05f, 16)},        {"all", params(1.3f, 100, 0.95f, 0.02f, 17)},
      {"top_k_1", params(1.f, 1, 1.f, 0.f, 18)},
  };
  for (const Case& c : cases) {
    std::vector<SampleRow> rows(static_cast<size_t>(R));
    for (int64_t r = 0; r < R; ++r) rows[static_cast<size_t>(r)] = {c.params, static_cast<uint64_t>(r * 3 + 1)};
    std::vector<int32_t> tokens(static_cast<size_t>(R), -1), want(static_cast<size_t>(R));
    std::vector<float> logprobs(static_cast<size_t>(R), NAN);
    gpu->sample(dev, rows.data(), tokens.data(), logprobs.data());
    int agree = 0;
    for (int64_t r = 0; r < R; ++r) {
      const std::span<const float> row(host.data<float>() + r * V, static_cast<size_t>(V));
      want[static_cast<size_t>(r)] = Sampler::sample(row, c.params, {}, rows[static_cast<size_t>(r)].step);
      const int32_t got = tokens[static_cast<size_t>(r)];
      ASSERT_GE(got, 0) << c.name << " row " << r;
      ASSERT_LT(got, V) << c.name << " row " << r;
      agree += got == want[static_cast<size_t>(r)];
      // The reported log-probability is the drawn token's under the raw logits, whichever it is.
      EXPECT_NEAR(logprobs[static_cast<size_t>(r)], Sampler::log_prob(row, got), 1e-4) << c.name << " row " << r;
    }
    if (c.params.temperature == 0.f || c.params.top_k == 1) {
      EXPECT_EQ(agree, R) << c.name << ": greedy choices must be identical";
    } else {
      EXPECT_GE(agree, R - 2) << c.name << ": " << agree << " of " << R << " draws equal to the host's";
    }
  }
}

}  // namespace
}  // namespace strata
