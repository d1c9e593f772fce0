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
};

}  // namespace strata
