// runtime/engine.h: the serving engine of one model replica: a request queue, continuous batching
// over the paged KV cache (chunked prefill mixed with decodes under a token budget, preemption by
// recompute when blocks run out, prefix caching of full blocks), sampling, and token events.
// Every rank of the replica runs step() in lockstep; the driver decides each step and broadcasts it
// (with the new requests' prompts and sampling parameters, and cancellations) through the StageLink.
//
// Data-parallel routing is not here either: with several replicas, `strata serve` on world rank 0
// (launcher/http/replica_router.h) sends each request to the replica with the least
// stats().outstanding_tokens, through that replica's driver; each replica's Engine only sees its own.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/backend.h"
#include "runtime/image_encoder.h"
#include "runtime/kv_cache.h"
#include "runtime/models/llama.h"
#include "runtime/request.h"
#include "runtime/sampler.h"
#include "runtime/speculative.h"
#include "runtime/stage_link.h"

namespace strata {

struct EngineOptions {
  int64_t max_step_tokens = 2048;  // prefill chunks + decodes per step
  int64_t max_running = 64;        // sequences in flight
  int64_t max_queue = 256;         // waiting requests before submit() refuses
  int micro_batches = 1;           // pipeline micro-batches per step
  // Interleaved pipeline (plan parallel.schedule: interleaved): every step is a tick in which each stage
  // runs a different batch, the one that entered stage 0 `stage` ticks ago, and the last stage samples
  // one batch per tick. A sequence is in at most one batch in flight, so the running sequences spread
  // over the stages and no stage waits for another step's tokens. micro_batches is not used then.
  bool interleaved = false;
  int pipeline_stage = 0, pipeline_stages = 1;  // this rank's stage and the replica's stage count
  bool prefix_caching = true;
  // > 0 on ranks whose weights stream: hold a part-empty decode step up to this long while requests
  // are arriving (SchedulerOptions::batch_wait_s says when and why).
  double batch_wait_ms = 0;
  // Speculative decoding (runtime/speculative.h): `tokens` on every rank, the proposer on the driver.
  // Not with the interleaved schedule (a sequence's next drafts need its last verdict).
  SpeculativeOptions speculative;
};

struct EngineStats {
  int64_t waiting = 0, running = 0;
  int64_t kv_blocks_used = 0, kv_blocks_total = 0;
  int64_t kv_blocks_cached = 0;    // cached prefix blocks nobody references (evicted on demand)
  int64_t steps = 0, prompt_tokens = 0, generated_tokens = 0, preemptions = 0, prefix_hit_tokens = 0;
  int64_t last_batch_size = 0;
  int64_t outstanding_tokens = 0;  // prefill still to compute + tokens still to generate (DP routing)
  int64_t images_encoded = 0;     // request images run through the vision encoder (first stage)
  int64_t most_batches_in_flight = 0;  // interleaved pipeline: the most non-empty batches in flight at once
  int64_t decode_steps = 0;        // steps of decodes only (speculative ones included)
  // Speculative decoding: sequence-steps that verified drafts, the drafts they verified, how many the
  // target accepted, and the tokens those sequence-steps emitted (accepted + one of the target's own,
  // fewer where a stop token or the length limit ended the sequence).
  int64_t spec_verify_steps = 0, spec_draft_tokens = 0, spec_accepted_tokens = 0, spec_emitted_tokens = 0;
  double prefill_seconds = 0;      // steps that carried prompt (or recomputed) tokens
  double decode_seconds = 0;       // steps of decodes only
  // Where step time went (all steps): running the model up to logits on the host (the forward pass, its
  // communication and the logits copy), and sampling plus the token broadcast. The rest is scheduling.
  double forward_seconds = 0;
  double sample_seconds = 0;
  // Mixture-of-experts models: tokens routed to each expert so far, summed over every layer of the replica
  // (LlamaModel::expert_load of the driver's stage, read back every 32nd step and when the engine drains
  // where layers route on the device; the other stages' counts as of the last telemetry gather).
  std::vector<int64_t> expert_tokens;
  // Offloaded experts (the expert cache, runtime/expert_source.h): routed tokens that found their expert
  // on the device (hits) or had it fetched (misses, one copy each), per expert summed over the replica's
  // layers and per layer (global indices), and the bytes those copies moved (other ranks' as of the last
  // telemetry gather). Empty when experts are resident.
  std::vector<int64_t> expert_cache_hits, expert_cache_misses;  // [n_experts]
  std::vector<int64_t> expert_layer_hits, expert_layer_misses;  // [n_layers]
  int64_t expert_bytes_streamed = 0;
};

// A mixture-of-experts model's routed tokens per expert over the whole replica, on its driver (empty on the
// other ranks): each stage's count comes from one of its ranks, the first of its expert group (every rank of a
// stage routes every token of it). A collective over the replica: every rank calls it at the same point, e.g.
// right after Generator::generate. The serving Engine gathers the same counts with its telemetry.
std::vector<int64_t> gather_replica_expert_tokens(const LlamaModel& model, StageLink& link);

class Engine {
 public:
  static constexpr int kMaxLogprobs = 20;

  Engine(LlamaModel& model, KvCache& kv, StageLink& link, Backend& backend, EngineOptions options = {});
  ~Engine();
  // Driver only, any thread: queue a request. Returns false (nothing queued) when the queue is full
  // or the engine is shutting down. Throws kInvalidArgument for a request that can never run (see
  // validate()) or whose id is already in flight.
  bool submit(EngineRequest request);
  // Every rank, before the first step: the vision side of a vision-language model on the ranks of the
  // first pipeline stage (each keeps its own replica of the tower), null elsewhere. Without one on the
  // driver, requests with images are refused.
  void set_image_encoder(ImageEncoder* encoder);
  // Every rank, before the first step: `local` (may be empty; called on the step thread) gives this
  // rank's telemetry words (the launcher's encoding: its GPU's utilization and memory for /metrics).
  // Every `interval_s` (read on the driver; 0: never) one step gathers every rank's words onto the
  // driver, so a multi-node replica reports each rank's device, not only the driver host's.
  void set_telemetry(double interval_s, std::function<std::vector<int32_t>()> local);
  // Driver, any thread: every rank's words from the latest gather, in replica rank order (empty before).
  std::vector<std::vector<int32_t>> rank_telemetry() const;
  // Any rank, any thread: throws kInvalidArgument naming the problem for a request that can never
  // run (empty prompt, ids outside the vocabulary, bad sampling parameters, prompt + max_new_tokens
  // beyond the context or the whole KV cache, images the model cannot take or that do not fit their
  // prompt positions).
  void validate(const EngineRequest& request) const;
  // Driver only, any thread: the request ends with a "cancelled" event; its KV blocks are freed.
  // Unknown (e.g. already finished) ids are ignored.
  void cancel(uint64_t request_id);
  // Driver only, any thread: at the next step boundary every unfinished request ends "cancelled"
  // and step() returns false on every rank. With `drain`, new submits are refused but queued and
  // running requests finish first.
  void shutdown(bool drain = false);
  // One iteration on this rank (every rank of the replica calls it in lockstep). Appends the step's
  // events: the driver gets every event; other ranks get the same events for requests the replica
  // has started (not for those cancelled while still queued). Returns false once shut down. When
  // there is nothing to do the driver waits up to `idle_wait_ms` for a request before returning true.
  bool step(std::vector<TokenEvent>& events, int idle_wait_ms = 50);
  // Any thread. KV and queue figures are the driver's; token counts are kept on every rank.
  EngineStats stats() const;
  // Step thread only, between steps: returns the idle cached prefix blocks to the allocator (for
  // callers that allocate KV blocks directly, like Generator::score).
  void clear_prefix_cache();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata
