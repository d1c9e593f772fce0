// runtime/sampling_params.h: how one request wants its tokens drawn (runtime/sampler.h draws them on the
// host, Backend::sample on the device). Plain C++17 so CUDA sources can include it.
#pragma once
#include <cstdint>

namespace strata {

// Temperatures below this sample greedily: dividing logits by a smaller one overflows float (every
// candidate becomes inf - inf = NaN and the draw lands on an arbitrary token), and the distribution is
// already one-hot long before.
constexpr float kGreedyTemperature = 1e-5f;

struct SamplingParams {
  float temperature = 0.f;  // < kGreedyTemperature: greedy
  int top_k = 0;            // 0: off
  float top_p = 1.f;        // 1: off
  float min_p = 0.f;        // 0: off
  float repetition_penalty = 1.f;
  uint64_t seed = 0;
  bool greedy() const { return temperature < kGreedyTemperature; }
  // Throws kInvalidArgument naming the field when a value is out of range.
  void validate() const;
};

}  // namespace strata
