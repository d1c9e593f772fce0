// tests/runtime/sampler_test.cpp: sampling against closed-form distributions.
#include "runtime/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "runtime/error.h"

namespace strata {
namespace {

TEST(Sampler, GreedyTakesTheFirstMaximum) {
  const std::vector<float> logits = {0.1f, 3.f, -1.f, 3.f};
  EXPECT_EQ(Sampler::sample(logits, {}, {}, 0), 1);
}

// Below kGreedyTemperature sampling is the argmax: logits / 1e-38 overflow float to inf (inf - inf is
// NaN, and the draw fell to the least likely token), and the distribution is one-hot anyway.
TEST(Sampler, TinyTemperaturesAreGreedy) {
  const std::vector<float> logits = {2.f, 9.f, -4.f, 8.5f, 30.f, 29.f};
  for (float t : {1e-6f, 1e-20f, 1e-38f, 1e-44f}) {
    SamplingParams p;
    p.temperature = t;
    for (uint64_t step = 0; step < 50; ++step) EXPECT_EQ(Sampler::sample(logits, p, {}, step), 4) << t << " " << step;
    p.repetition_penalty = 1.2f;  // the penalised path takes the same turn
    EXPECT_EQ(Sampler::sample(logits, p, std::vector<int32_t>{1}, 0), 4) << t;
  }
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  // Token 1 (2.0 -> 1.0) loses to token 0 (1.5) once penalised by 2.
  const std::vector<float> logits = {1.5f, 2.f, -0.5f};
  SamplingParams p;
  p.repetition_penalty = 2.f;
  const std::vector<int32_t> history = {1};
  EXPECT_EQ(Sampler::sample(logits, p, history, 0), 0);
}

TEST(Sampler, TemperatureSamplingFollowsSoftmax) {
  const std::vector<float> logits = {0.f, std::log(3.f)};  // p = 1/4, 3/4
  SamplingParams p;
  p.temperature = 1.f;
  p.seed = 7;
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ones += Sampler::sample(logits, p, {}, static_cast<uint64_t>(i)) == 1;
  EXPECT_NEAR(static_cast<double>(ones) / n, 0.75, 0.015);  // 5 sigma of a binomial at n = 20000
}

TEST(Sampler, TopKAndTopPAndMinPRestrictTheSupport) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p;
  p.temperature = 1.f;
  std::map<int32_t, int> seen;
  p.top_k = 2;
  for (int i = 0; i < 2000; ++i) seen[Sampler::sample(logits, p, {}, static_cast<uint64_t>(i))]++;
  EXPECT_EQ(seen.size(), 2u);
  seen.clear();
  p.top_k = 0;
  p.top_p = 0.7f;  // 0.5 + 0.3 reaches it
  for (int i = 0; i < 2000; ++i) seen[Sampler::sample(logits, p, {}, static_cast<uint64_t>(i))]++;
  EXPECT_EQ(seen.size(), 2u);
  seen.clear();
  p.top_p = 1.f;
  p.min_p = 0.2f;  // keeps p >= 0.1: tokens 0, 1, 2
  for (int i = 0; i < 4000; ++i) seen[Sampler::sample(logits, p, {}, static_cast<uint64_t>(i))]++;
  EXPECT_EQ(seen.size(), 3u);
}

TEST(Sampler, SameSeedAndStepGiveTheSameToken) {
  std::vector<float> logits(100);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i));
  SamplingParams p;
  p.temperature = 0.9f;
  p.seed = 42;
  for (uint64_t step = 0; step < 50; ++step)
    EXPECT_EQ(Sampler::sample(logits, p, {}, step), Sampler::sample(logits, p, {}, step));
}

TEST(Sampler, LogProbIsNormalised) {
  const std::vector<float> logits = {1.f, 2.f, 3.f};
  double total = 0;
  for (int32_t t = 0; t < 3; ++t) total += std::exp(Sampler::log_prob(logits, t));
  EXPECT_NEAR(total, 1.0, 1e-12);
}

TEST(Sampler, InvalidParametersAreRejected) {
  SamplingParams p;
  p.top_p = 0.f;
  EXPECT_THROW(p.validate(), Error);
  p = {};
  p.temperature = -1.f;
  EXPECT_THROW(p.validate(), Error);
}

}  // namespace
}  // namespace strata
