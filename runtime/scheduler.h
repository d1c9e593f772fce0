// runtime/scheduler.h: the driver's continuous-batching decisions for one replica: FCFS admission
// under a per-step token budget and the KV blocks left, decodes first then prefill chunks, prefix
// cache hits at admission, preemption by recompute when a decode finds no block. It builds the
// StepBatch; it runs nothing and talks to no rank (the Engine does both).
#pragma once
#include <cstdint>
#include <deque>
#include <limits>
#include <functional>
#include <vector>

#include "runtime/kv_cache.h"
#include "runtime/prefix_cache.h"
#include "runtime/request.h"
#include "runtime/step.h"

namespace strata {

// One request's state. Every rank of the replica keeps request/history/generated identical (the
// sampler needs them); the scheduling fields are the driver's.
struct Sequence {
  EngineRequest request;
  int32_t handle = -1;           // replica-wide id of the sequence (StepBatch::seq_ids)
  std::vector<int32_t> history;  // prompt, then generated tokens
  int64_t generated = 0;

  // Driver only.
  int64_t processed = 0;               // leading history tokens whose KV is in `blocks`
  std::vector<int32_t> blocks;         // block table
  std::vector<uint64_t> block_hashes;  // chain hash of each full block of `blocks` seen so far
  int64_t admitted_at = -1;            // admission tick while running, -1 while waiting
  bool announced = false;              // the replica has been told about it
  // In a batch still on its way through an interleaved pipeline: not scheduled again (nor admitted)
  // until that batch has left the last stage.
  bool in_flight = false;
  // Speculative tokens to verify after the last one in its next decode (runtime/speculative.h); the
  // scheduler takes as many as the step's budget and the free blocks allow, none when it preempts.
  std::vector<int32_t> draft;
};

struct SchedulerOptions {
  int64_t max_step_tokens = 2048;
  int64_t max_running = 64;
  bool prefix_caching = true;
  // Fill the batch when weights stream (offload.batch_wait_ms; the engine sets it only on ranks whose
  // weights stream). A streamed decode step costs about the same for 1 sequence as for 64: every
  // weight crosses the host link once per step either way, so each sequence that joins a step rides
  // along almost free, while a step run half empty spends a whole pass of the link on few tokens.
  // So while requests are arriving (the last one came less than batch_wait_s ago), a step of decodes
  // alone with room for more sequences is held, up to batch_wait_s, until one arrives. The price is
  // latency: every held step starts up to batch_wait_s later, for the running sequences too; hence
  // the bound, and no hold at all when nobody arrived lately (a closed batch, a quiet server).
  double batch_wait_s = 0;
  // The hold's clock (seconds) and how it waits: returns early when a request or cancellation
  // arrives. The engine passes its inbox's wait; tests pass a fake clock and no wait.
  std::function<double()> clock;
  std::function<void(double seconds)> wait_for_arrivals;
};

// What the driver decided for one step.
struct ScheduledStep {
  StepBatch batch;
  std::vector<Sequence*> seqs;      // per batch sequence
  std::vector<int64_t> counts;      // tokens each contributes
  std::vector<int64_t> admitted_at; // each one's admission tick when scheduled (complete() skips any
                                    // preempted or re-admitted since)
  std::vector<int64_t> drafts;      // of each sequence's tokens, speculative ones (the last `drafts`)
  std::vector<Sequence*> announce;  // admitted for the first time: the replica must learn them
  int64_t preempted = 0;
  int64_t prefix_hit_tokens = 0;
  bool held = false;  // nothing scheduled: the batch is being held for arrivals (batch_wait_s)
};

class Scheduler {
 public:
  Scheduler(KvCache& kv, const SchedulerOptions& options);

  void enqueue(Sequence* seq);  // waiting tail (FCFS)
  // Drops a sequence wherever it is (cancelled or finished) and releases its blocks.
  void remove(Sequence* seq);
  // The next step; an empty one (held set) while the fill-the-batch policy holds it. The caller
  // simply asks again: arrivals meanwhile are enqueued first and join the step. At most `max_seqs`
  // sequences (an interleaved pipeline spreads the running ones over its stages this way).
  ScheduledStep schedule(int64_t max_seqs = std::numeric_limits<int64_t>::max());
  // After the step ran: the KV of the scheduled tokens now exists; full blocks join the prefix cache.
  // A speculative decode's count is what verification kept (1 + accepted drafts, its history already
  // grown by them): the rejected drafts' positions are free again and blocks past the history go back.
  void complete(const ScheduledStep& step);

  int64_t waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t running() const { return static_cast<int64_t>(running_.size()); }
  // Tokens still to compute or generate over every sequence (the DP router's load measure).
  int64_t outstanding_tokens() const;
  int64_t held_steps() const { return held_steps_; }  // schedule() calls that held the batch
  BlockPool& pool() { return pool_; }
  const BlockPool& pool() const { return pool_; }

 private:
  bool grow(Sequence& seq, int64_t tokens);  // blocks for `tokens` slots; false when none are left
  void release_blocks(Sequence& seq);
  void trim_blocks(Sequence& seq);  // blocks past the history's slots go back (rejected drafts)
  void preempt(Sequence& seq);
  // Reuses cached full blocks of the history's prefix (never the block of its last token).
  void attach_prefix(Sequence& seq);
  void publish_full_blocks(Sequence& seq);
  // The fill-the-batch policy (SchedulerOptions::batch_wait_s): true when this step should wait.
  bool hold_for_arrivals();
  double now() const;

  KvCache& kv_;
  SchedulerOptions options_;
  BlockPool pool_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;  // admission order: the back is the first to be preempted
  int64_t tick_ = 0;
  double last_arrival_ = -1;   // clock time of the latest enqueue
  double hold_began_ = -1;     // when the current hold started; -1 while not holding
  int64_t held_steps_ = 0;
};

}  // namespace strata
