// runtime/engine_impl.h: the state behind Engine (runtime/engine.h), shared by the files that implement its
// step: engine.cpp (scheduling, control, the step itself) and engine_rows.cpp (images encoded, logits
// sampled and tokens applied for a batch's rows). Internal to runtime/: nothing outside includes it.
#pragma once
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "runtime/engine.h"
#include "runtime/engine_control.h"
#include "runtime/error.h"
#include "runtime/scheduler.h"
#include "runtime/step_runner.h"

namespace strata {

// Mixture-of-experts counters (EngineStats' expert_* fields) of one rank, or summed over several.
struct ExpertCounts {
  std::vector<int64_t> tokens;                   // [n_experts] routed tokens
  std::vector<int64_t> cache_hits, cache_misses;  // [n_experts] offloaded experts
  std::vector<int64_t> layer_hits, layer_misses;  // [n_layers]
  int64_t bytes_streamed = 0;
};

struct Engine::Impl {
  Impl(LlamaModel& m, KvCache& k, StageLink& l, Backend& b, const EngineOptions& o)
      : model(m), kv(k), link(l), backend(b), options(o), runner(m, l, b, o.micro_batches) {
    STRATA_CHECK(o.max_queue > 0, "max_queue must be > 0, got ", o.max_queue);
    if (link.is_driver()) {
      SchedulerOptions so;
      so.max_step_tokens = o.max_step_tokens;
      so.max_running = o.max_running;
      so.prefix_caching = o.prefix_caching;
      so.batch_wait_s = o.batch_wait_ms / 1e3;
      so.wait_for_arrivals = [this](double seconds) {  // the fill-the-batch hold ends at the next submit
        std::unique_lock<std::mutex> lock(mu);
        wake.wait_for(lock, std::chrono::duration<double>(seconds),
                      [&] { return !inbox.empty() || !cancels.empty() || shutdown; });
      };
      scheduler = std::make_unique<Scheduler>(kv, so);
    }
    STRATA_CHECK(o.speculative.tokens == 0 || !o.interleaved, "speculative decoding does not work with the "
                 "interleaved pipeline schedule (parallel.schedule: interleaved); use the default schedule or turn "
                 "speculation off");
    STRATA_CHECK(o.speculative.tokens >= 0 && o.speculative.tokens <= 64, "speculative tokens must be in 0..64, got ",
                 o.speculative.tokens);
    stats.kv_blocks_total = kv.shape().num_blocks;
    model.set_sequence_splices(&features);
  }
  ~Impl() { model.set_sequence_splices(nullptr); }

  // What every rank knows of a batch's logit rows when it starts (the sequences may end before its
  // tokens come back in an interleaved pipeline, so nothing here points at them).
  struct BatchRows {
    int64_t prompt_tokens = 0;
    bool prefill = false;           // anything but plain decodes
    std::vector<int32_t> handles;   // the sequence of each logit row
    std::vector<int> tops;          // alternatives each row reports
    std::vector<SampleRow> sample;  // sampling parameters and draw index of each row
    bool on_backend = false;        // sampled where the logits are
    // Speculative rows (a sequence with several logit rows): the draft each row verifies (-1: none, the
    // last row's bonus token), the row's place among its sequence's rows, and the draft's distribution
    // (index into q; -1: a point mass).
    bool speculative = false;
    std::vector<int32_t> drafts, offsets, q_index;
    std::vector<DraftDistribution> q;
  };
  // What applying a batch's tokens did.
  struct Applied {
    int64_t tokens = 0;
    int64_t verify_steps = 0, drafted = 0, accepted = 0, spec_emitted = 0;
    std::unordered_map<int32_t, int64_t> emitted;  // speculative sequences: tokens each emitted
  };
  // A batch on its way through an interleaved pipeline; every rank keeps the same queue.
  struct InFlight {
    StepBatch step;
    ScheduledStep scheduled;  // driver
    BatchRows rows;
    Tensor hidden;            // stages > 0: the previous stage's output, received the tick before
  };

  ControlMessage plan(std::vector<TokenEvent>& events, int idle_wait_ms, ScheduledStep& scheduled);
  void apply_control(const ControlMessage& msg, std::vector<TokenEvent>& events);
  // First stage, before the step runs: the vision encoder over the images of the step's sequences whose
  // tokens reach an image position for the first time, in one batch; each sequence keeps its features
  // for its later steps (and recomputes after a preemption).
  void encode_images(const StepBatch& step);
  void run(const ControlMessage& msg, const ScheduledStep& scheduled, std::vector<TokenEvent>& events);
  void tick(const ControlMessage& msg, const ScheduledStep& scheduled, std::vector<TokenEvent>& events);
  BatchRows rows_of(const StepBatch& step, const ControlMessage* msg = nullptr) const;
  // Driver: drafts for the decoding sequences (Sequence::draft), their distributions in draft_q.
  void propose();
  // Driver: the distributions of the drafts the scheduler took, by logit row, into the message.
  void attach_drafts(const ScheduledStep& scheduled, ControlMessage& msg);
  // The sampler's words for the rows: drawn on the backend already (`tokens`, `logprobs`) or from host
  // `logits` [rows, vocab]. Rows whose sequence has ended get placeholders nobody reads.
  std::vector<int32_t> sample_rows(const BatchRows& rows, const Tensor& logits, const std::vector<int32_t>& tokens,
                                   const std::vector<float>& logprobs) const;
  // Appends the broadcast tokens to their sequences and emits the events; returns tokens applied.
  Applied apply_tokens(const BatchRows& rows, const std::vector<int32_t>& words, std::vector<TokenEvent>& events);
  void complete(const ScheduledStep& scheduled);  // driver: the batch's KV exists on every stage now
  // Expert counters (engine_experts.cpp): this rank's (the routed tokens only where with_load); every rank
  // sends its own to the driver (a collective: all ranks call it on the same steps); the driver's stats from
  // its own counts (the routed tokens read again where read_load, else the last read) and the others'.
  ExpertCounts own_expert_counts(bool with_load) const;
  void gather_expert_counts();
  void refresh_expert_stats(bool read_load);
  void record(const BatchRows& rows, const StepBatch& step, const ScheduledStep& scheduled, const Applied& applied,
              double seconds, double forward_s, double sample_s);
  void forget(int32_t handle);

  LlamaModel& model;
  KvCache& kv;
  StageLink& link;
  Backend& backend;
  EngineOptions options;
  StepRunner runner;
  std::unique_ptr<Scheduler> scheduler;                // driver only
  std::map<int32_t, std::unique_ptr<Sequence>> seqs;   // by handle; the driver's include queued ones
  std::unordered_map<uint64_t, int32_t> handle_of;     // driver: request id -> handle
  int32_t next_handle = 0;
  bool stopped = false;
  ImageEncoder* encoder = nullptr;                          // first stage of a vision-language model
  std::unordered_map<int32_t, EmbeddingSplice> features;    // by handle: image features of live sequences
  std::function<std::vector<int32_t>()> local_telemetry;    // this rank's words (set_telemetry)
  double telemetry_interval_s = 0;                          // driver: 0 = never gather
  std::chrono::steady_clock::time_point last_telemetry;     // driver: when the last gather was asked for

  // Shared with the submitting threads (driver).
  mutable std::mutex mu;
  std::condition_variable wake;
  std::deque<EngineRequest> inbox;
  std::vector<uint64_t> cancels;
  bool shutdown = false, drain = false;
  std::unordered_set<uint64_t> live;  // submitted, not yet ended
  int64_t queued = 0;                 // the scheduler's waiting count after the last step
  EngineStats stats;
  int64_t expert_load_age = 0;  // steps since stats.expert_tokens was read from device counters
  std::vector<int64_t> own_expert_tokens;  // driver: its stage's routed tokens at the last read
  ExpertCounts other_ranks_experts;        // driver: the other ranks' counters at the last gather
  std::deque<InFlight> flight;        // interleaved: batches that entered in the last stages ticks
  std::unordered_map<int32_t, std::vector<DraftDistribution>> draft_q;  // driver: this step's proposals
  std::vector<std::vector<int32_t>> telemetry;  // driver: every rank's words from the last gather
};

}  // namespace strata
