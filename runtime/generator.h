// runtime/generator.h: runs batches of requests to completion on one model replica through the
// Engine (runtime/engine.h: continuous batching, chunked prefill, preemption, prefix caching), and
// teacher-forced scoring. Every rank of the replica calls the same method with the same requests
// (SPMD); the driver schedules and broadcasts each step, the sampling rank shares the new tokens, so
// outputs are valid on every rank.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/engine.h"
#include "runtime/kv_cache.h"
#include "runtime/models/llama.h"
#include "runtime/sampler.h"
#include "runtime/stage_link.h"
#include "runtime/step_runner.h"

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
  double forward_seconds = 0;  // of all steps: the model up to host logits (EngineStats)
  double sample_seconds = 0;   // of all steps: sampling and the token broadcast
  int64_t decode_steps = 0;    // steps of decodes only
  // Speculative decoding (EngineStats): sequence-steps that verified drafts, drafts, accepted, emitted.
  int64_t spec_verify_steps = 0, spec_draft_tokens = 0, spec_accepted_tokens = 0, spec_emitted_tokens = 0;
};

struct GeneratorOptions {
  int64_t max_step_tokens = 2048;  // token budget of one step (prefill chunks + decodes)
  int micro_batches = 1;           // pipeline micro-batches per step (split by sequence)
  bool interleaved = false;        // EngineOptions::interleaved
  int pipeline_stage = 0, pipeline_stages = 1;
  // The engine's limits. generate() keeps every request in flight that the token budget and the KV
  // cache allow (as before the Engine); a server lowers them (EngineOptions has serving defaults).
  int64_t max_running = int64_t{1} << 30;
  int64_t max_queue = int64_t{1} << 30;
  bool prefix_caching = true;
  double batch_wait_ms = 0;  // EngineOptions::batch_wait_ms (ranks whose weights stream)
  SpeculativeOptions speculative;  // EngineOptions::speculative
};

class Generator {
 public:
  using TokenCallback = std::function<void(size_t request, int32_t token)>;
  Generator(LlamaModel& model, KvCache& kv, StageLink& link, Backend& backend, GeneratorOptions options = {});

  // With `splice` (a LLaVA prompt's image features), one request at most: its rows replace the
  // embeddings of the prompt positions they list, and the prefix cache is emptied before and after so no
  // other request shares KV blocks computed from the image.
  std::vector<GenerationOutput> generate(const std::vector<GenerationRequest>& requests,
                                         const TokenCallback& on_token = {}, const EmbeddingSplice* splice = nullptr);
  // Teacher-forced logits [ids.size(), vocab] for every position of one sequence (f32, host), valid
  // on every rank. Used by `strata logits`, perplexity and the reference tests. With `splice` (image
  // features of a LLaVA prompt), its rows replace the embeddings of the positions it lists.
  Tensor score(const std::vector<int32_t>& ids, const EmbeddingSplice* splice = nullptr);
  const GenerationStats& stats() const { return stats_; }
  // The engine generate() runs on, for callers that drive steps themselves (the server loop).
  // Do not mix: while one caller steps it, generate() and score() must not run.
  Engine& engine() { return *engine_; }

 private:
  LlamaModel& model_;
  KvCache& kv_;
  StageLink& link_;
  GeneratorOptions options_;
  GenerationStats stats_;
  StepRunner runner_;
  std::unique_ptr<Engine> engine_;
  uint64_t next_id_ = 0;  // request ids of generate(); advances identically on every rank
};

}  // namespace strata
