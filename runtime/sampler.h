// runtime/sampler.h: turns a row of logits into a token: greedy, temperature, top-k, top-p, min-p,
// repetition penalty. Stateless given (seed, step): the random draw for generated token i of a
// sequence depends only on its seed and i, so results are reproducible on any rank and batch.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "runtime/sampling_params.h"

namespace strata {

class Sampler {
 public:
  // `history` holds the sequence's tokens so far (prompt and generated) for the repetition penalty.
  static int32_t sample(std::span<const float> logits, const SamplingParams& params, std::span<const int32_t> history,
                        uint64_t step);
  // Index of the largest logit (first on ties).
  static int32_t argmax(std::span<const float> logits);
  // Natural-log softmax probability of `token` (for logprobs and perplexity).
  static double log_prob(std::span<const float> logits, int32_t token);
  // The distribution sample() draws from, over the whole vocabulary (zeros outside the kept tokens;
  // one-hot for greedy): what speculative verification compares drafts against.
  static std::vector<double> distribution(std::span<const float> logits, const SamplingParams& params,
                                          std::span<const int32_t> history);
  // The uniform in [0, 1) of (seed, step) on an independent `stream` (0 is sample()'s own draw).
  static double uniform(uint64_t seed, uint64_t step, uint64_t stream);
};

}  // namespace strata
