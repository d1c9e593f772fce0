// runtime/request.h: what a caller hands the serving engine (EngineRequest) and what it gets back per
// token (TokenEvent). Plain data, apart from the Engine, so the scheduler and the step messages
// (scheduler.h, word_codec.h, engine_control.h) need not include engine.h.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/sampling_params.h"
#include "runtime/tensor.h"

namespace strata {

// One image of a vision-language request, preprocessed: the first pipeline stage encodes it when the
// request is admitted, and its features replace the embeddings of prompt positions
// [position, position + length) (the image placeholder, expanded to one token per feature).
struct RequestImage {
  Tensor pixels;         // [channels, size, size] or [tiles, channels, size, size] f32, host: the tower's input
  int32_t height = 0;    // the decoded image's size in pixels: LLaVA-NeXT's tiles and features depend on it
  int32_t width = 0;
  uint64_t hash = 0;     // of the image's content: part of the prefix-cache key of the blocks it fills
  int32_t position = 0;  // first prompt position of its features
  int32_t length = 0;    // features it yields (ImageEncoder::features_for)
};

struct EngineRequest {
  uint64_t id = 0;  // unique among the requests in flight, chosen by the caller
  std::vector<int32_t> prompt;
  int64_t max_new_tokens = 16;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;  // end after emitting one of these
  int logprobs = 0;  // top alternatives to report per token, 0..Engine::kMaxLogprobs (0: only the token's own)
  std::vector<RequestImage> images;  // in prompt order, their position runs disjoint
};

struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0.f;
};

struct TokenEvent {
  uint64_t request_id = 0;
  int32_t token = -1;    // -1 on events that carry no token (errors, cancellations)
  // Natural log of the sampled token's probability under the model's raw logits (log-softmax before
  // repetition penalty, temperature and truncation: what the model predicts, not what the sampler
  // drew from; equal to the sampler's distribution for plain greedy or temperature-1 sampling).
  float logprob = 0.f;
  std::vector<TokenLogprob> top_logprobs;  // the request's `logprobs` best tokens, best first, same scale
  bool finished = false;
  std::string finish_reason;  // when finished: "stop" | "length" | "cancelled" | "error"
  std::string error;          // when finish_reason == "error"
};

}  // namespace strata
