// runtime/generator.h: runs batches of requests to completion on one model replica: chunked prefill
// mixed with decodes under a per-step token budget, paged KV blocks per sequence, pipeline
// micro-batches, sampling on the last stage. Every rank of the replica calls the same method with
// the same requests (SPMD); the driver builds each step and broadcasts it, the sampling rank shares
// the new tokens, so outputs are valid on every rank.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/kv_cache.h"
#include "runtime/models/llama.h"
#include "runtime/sampler.h"
#include "runtime/stage_link.h"

namespace strata {

struct GenerationRequest {
  std::vector<int32_t> prompt;
  int64_t max_new_tokens = 16;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;  // generation ends after emitting one of these (EOS by default)
};

struct GenerationOutput {
  std::vector<int32_t> tokens;
  std::string finish_reason;  // "length" | "stop"
};

struct GenerationStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t steps = 0;
  double prefill_seconds = 0;  // steps that carried prompt tokens
  double decode_seconds = 0;   // steps of decodes only
};

struct GeneratorOptions {
  int64_t max_step_tokens = 2048;  // token budget of one step (prefill chunks + decodes)
  int micro_batches = 1;           // pipeline micro-batches per step (split by sequence)
};

class Generator {
 public:
  using TokenCallback = std::function<void(size_t request, int32_t token)>;
  Generator(LlamaModel& model, KvCache& kv, StageLink& link, Backend& backend, GeneratorOptions options = {});

  std::vector<GenerationOutput> generate(const std::vector<GenerationRequest>& requests,
                                         const TokenCallback& on_token = {});
  // Teacher-forced logits [ids.size(), vocab] for every position of one sequence (f32, host), valid
  // on every rank. Used by `strata logits`, perplexity and the reference tests.
  Tensor score(const std::vector<int32_t>& ids);
  const GenerationStats& stats() const { return stats_; }

 private:
  struct Sequence;
  // Broadcasts the driver's step to the replica (an empty step means "done"); false when done.
  bool exchange_step(StepBatch& step);
  // Runs one step on this rank; returns logits of the step's logit rows (valid on every rank when
  // `share_logits`, else on the last stage only).
  Tensor run_step(const StepBatch& step, bool share_logits);

  LlamaModel& model_;
  KvCache& kv_;
  StageLink& link_;
  Backend& backend_;
  GeneratorOptions options_;
  GenerationStats stats_;
};

}  // namespace strata
