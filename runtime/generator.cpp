// runtime/generator.cpp: generate() over the Engine, and score() as one teacher-forced step.
#include "runtime/generator.h"

#include <algorithm>

#include "runtime/error.h"

namespace strata {
namespace {
EngineOptions engine_options(const GeneratorOptions& o) {
  EngineOptions e;
  e.max_step_tokens = o.max_step_tokens;
  e.micro_batches = o.micro_batches;
  e.interleaved = o.interleaved;
  e.pipeline_stage = o.pipeline_stage;
  e.pipeline_stages = o.pipeline_stages;
  e.max_running = o.max_running;
  e.max_queue = o.max_queue;
  e.prefix_caching = o.prefix_caching;
  e.batch_wait_ms = o.batch_wait_ms;
  e.speculative = o.speculative;
  return e;
}
}  // namespace

Generator::Generator(LlamaModel& model, KvCache& kv, StageLink& link, Backend& backend, GeneratorOptions options)
    : model_(model),
      kv_(kv),
      link_(link),
      options_(options),
      runner_(model, link, backend, options.micro_batches),
      engine_(std::make_unique<Engine>(model, kv, link, backend, engine_options(options))) {
  STRATA_CHECK(options_.max_step_tokens > 0 && options_.micro_batches >= 1, "invalid generator options");
}

namespace {
// Sets a model's embedding splice for a scope; with one, the prefix cache is emptied on entry and exit
// (its keys are token ids only, and placeholder ids say nothing about the image).
class SpliceScope {
 public:
  SpliceScope(LlamaModel& model, Engine& engine, bool driver, const EmbeddingSplice* splice)
      : model_(model), engine_(engine), driver_(driver && splice != nullptr) {
    if (driver_) engine_.clear_prefix_cache();
    model_.set_embedding_splice(splice);
  }
  ~SpliceScope() {
    model_.set_embedding_splice(nullptr);
    if (driver_) engine_.clear_prefix_cache();
  }
  SpliceScope(const SpliceScope&) = delete;
  SpliceScope& operator=(const SpliceScope&) = delete;

 private:
  LlamaModel& model_;
  Engine& engine_;
  bool driver_;
};
}  // namespace

std::vector<GenerationOutput> Generator::generate(const std::vector<GenerationRequest>& requests,
                                                  const TokenCallback& on_token, const EmbeddingSplice* splice) {
  STRATA_CHECK(splice == nullptr || requests.size() <= 1, "generate with image features takes one request, got ",
               requests.size());
  const SpliceScope scope(model_, *engine_, link_.is_driver(), splice);
  // Ids advance the same way on every rank, so every rank can map events back to requests.
  const uint64_t base = next_id_;
  next_id_ += requests.size();
  std::vector<EngineRequest> pending(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    EngineRequest& e = pending[i];
    e.id = base + i;
    e.prompt = requests[i].prompt;
    e.max_new_tokens = requests[i].max_new_tokens;
    e.sampling = requests[i].sampling;
    e.stop_ids = requests[i].stop_ids;
    // Every rank checks every request before any step, so a bad request fails on all ranks alike
    // instead of leaving the others waiting for a step that never comes.
    engine_->validate(e);
  }

  const EngineStats before = engine_->stats();
  std::vector<GenerationOutput> outputs(requests.size());
  size_t submitted = 0, unfinished = requests.size();
  std::vector<TokenEvent> events;
  while (unfinished > 0) {
    if (link_.is_driver())
      while (submitted < pending.size() && engine_->submit(pending[submitted])) ++submitted;
    events.clear();
    STRATA_CHECK_KIND(ErrorKind::kInternal, engine_->step(events, 0), "the engine was shut down during generate()");
    for (const TokenEvent& e : events) {
      STRATA_CHECK_KIND(ErrorKind::kInternal, e.request_id >= base && e.request_id - base < requests.size(),
                        "event for request ", e.request_id, " that generate() did not submit");
      const size_t i = static_cast<size_t>(e.request_id - base);
      GenerationOutput& out = outputs[i];
      if (e.token >= 0) {
        out.tokens.push_back(e.token);
        if (on_token) on_token(i, e.token);
      }
      if (e.finished) {
        STRATA_CHECK_KIND(ErrorKind::kInternal, e.finish_reason == "stop" || e.finish_reason == "length",
                          "request ", i, " ended with '", e.finish_reason, "': ", e.error);
        out.finish_reason = e.finish_reason;
        --unfinished;
      }
    }
  }
  const EngineStats after = engine_->stats();
  stats_.prompt_tokens += after.prompt_tokens - before.prompt_tokens;
  stats_.generated_tokens += after.generated_tokens - before.generated_tokens;
  stats_.steps += after.steps - before.steps;
  stats_.prefill_seconds += after.prefill_seconds - before.prefill_seconds;
  stats_.decode_seconds += after.decode_seconds - before.decode_seconds;
  stats_.forward_seconds += after.forward_seconds - before.forward_seconds;
  stats_.sample_seconds += after.sample_seconds - before.sample_seconds;
  stats_.decode_steps += after.decode_steps - before.decode_steps;
  stats_.spec_verify_steps += after.spec_verify_steps - before.spec_verify_steps;
  stats_.spec_draft_tokens += after.spec_draft_tokens - before.spec_draft_tokens;
  stats_.spec_accepted_tokens += after.spec_accepted_tokens - before.spec_accepted_tokens;
  stats_.spec_emitted_tokens += after.spec_emitted_tokens - before.spec_emitted_tokens;
  return outputs;
}

Tensor Generator::score(const std::vector<int32_t>& ids, const EmbeddingSplice* splice) {
  const ModelConfig& config = model_.config();
  STRATA_CHECK(!ids.empty() && static_cast<int64_t>(ids.size()) <= config.max_seq, "score needs 1..", config.max_seq,
               " tokens, got ", ids.size());
  for (int32_t id : ids)
    STRATA_CHECK(id >= 0 && id < config.vocab_size, "token id ", id, " is outside the vocabulary of ",
                 config.vocab_size);
  StepBatch step;
  std::vector<int32_t> blocks;
  step.max_blocks = kv_.blocks_for(static_cast<int64_t>(ids.size()));
  if (link_.is_driver()) {
    engine_->clear_prefix_cache();  // idle cached blocks hold allocator blocks this step needs
    for (int64_t i = 0; i < step.max_blocks; ++i) {
      const int32_t b = kv_.blocks().allocate();
      if (b < 0) {
        for (int32_t held : blocks) kv_.blocks().free(held);
        STRATA_THROW(ErrorKind::kOutOfMemory, "the KV cache (", kv_.shape().num_blocks, " blocks of ",
                     kv_.shape().block_size, " tokens) is too small to score ", ids.size(), " tokens");
      }
      blocks.push_back(b);
    }
    for (size_t p = 0; p < ids.size(); ++p) {
      step.tokens.push_back(ids[p]);
      step.positions.push_back(static_cast<int32_t>(p));
      step.token_seq.push_back(0);
      step.logit_rows.push_back(static_cast<int32_t>(p));
    }
    step.block_tables = blocks;
    step.seq_ids = {0};
    step.n_seqs = 1;
  }
  // score() has its own message (a bare StepBatch): every rank calls it at the same point.
  std::vector<int32_t> message;
  if (link_.is_driver()) message = step.pack();
  link_.broadcast_step(message);
  if (!link_.is_driver()) step = StepBatch::unpack(message);
  // The blocks go back whether the step returns or throws (a failed score leaves the cache as it found it).
  struct FreeBlocks {
    KvCache& kv;
    const std::vector<int32_t>& blocks;
    ~FreeBlocks() {
      for (int32_t b : blocks) kv.blocks().free(b);
    }
  } free_blocks{kv_, blocks};
  const SpliceScope scope(model_, *engine_, false, splice);  // the cache was emptied above
  return runner_.run(step, true);
}

}  // namespace strata
