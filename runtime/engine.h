// runtime/engine.h: the serving engine of one model replica: a request queue, continuous batching
// over the paged KV cache (chunked prefill mixed with decodes under a token budget, preemption by
// recompute when blocks run out, prefix caching of full blocks), sampling, and token events.
// Every rank of the replica runs step() in lockstep; the driver decides each step and broadcasts it
// (with the new requests' prompts and sampling parameters, and cancellations) through the StageLink.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/kv_cache.h"
#include "runtime/models/llama.h"
#include "runtime/sampler.h"
#include "runtime/stage_link.h"

namespace strata {

struct EngineRequest {
  uint64_t id = 0;  // unique per request, chosen by the caller
  std::vector<int32_t> prompt;
  int64_t max_new_tokens = 16;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;  // end after emitting one of these
  int logprobs = 0;               // top alternatives to report per token (0: only the token's own)
};

struct TokenEvent {
  uint64_t request_id = 0;
  int32_t token = -1;    // -1 on events that carry no token (errors, cancellations)
  float logprob = 0.f;   // natural log of the sampled token's probability
  bool finished = false;
  std::string finish_reason;  // when finished: "stop" | "length" | "cancelled" | "error"
  std::string error;          // when finish_reason == "error"
};

struct EngineOptions {
  int64_t max_step_tokens = 2048;  // prefill chunks + decodes per step
  int64_t max_running = 64;        // sequences in flight
  int64_t max_queue = 256;         // waiting requests before submit() refuses
  int micro_batches = 1;           // pipeline micro-batches per step
  bool prefix_caching = true;
};

struct EngineStats {
  int64_t waiting = 0, running = 0;
  int64_t kv_blocks_used = 0, kv_blocks_total = 0;
  int64_t steps = 0, prompt_tokens = 0, generated_tokens = 0, preemptions = 0, prefix_hit_tokens = 0;
  int64_t last_batch_size = 0;
};

class Engine {
 public:
  Engine(LlamaModel& model, KvCache& kv, StageLink& link, Backend& backend, EngineOptions options = {});
  ~Engine();
  // Driver only, any thread: queue a request. Returns false (nothing queued) when the queue is full.
  // Throws kInvalidArgument for a request that can never run (empty prompt, ids outside the
  // vocabulary, prompt + max_new_tokens beyond the context or the whole KV cache).
  bool submit(EngineRequest request);
  // Driver only, any thread: the request ends with a "cancelled" event; its KV blocks are freed.
  void cancel(uint64_t request_id);
  // Driver only, any thread: after the current work, step() returns false on every rank.
  void shutdown();
  // One iteration on this rank (every rank of the replica calls it in lockstep). Appends the step's
  // events (driver; other ranks may leave it empty). Returns false once shut down. When there is
  // nothing to do the driver waits up to `idle_wait_ms` for a request before returning true.
  bool step(std::vector<TokenEvent>& events, int idle_wait_ms = 50);
  EngineStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata
