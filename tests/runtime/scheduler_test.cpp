// tests/runtime/scheduler_test.cpp: the scheduler on its own with made-up sequences (and the interleaved
// pipeline's cap and in-flight rules): the fill-the-batch
// policy of ranks whose weights stream (SchedulerOptions::batch_wait_s) holds a part-empty decode step
// only while requests are arriving, never longer than the bound, never when the batch is full, and
// admits arrivals into the step it held. A fake clock drives it; nothing sleeps or is timed.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "runtime/backend.h"
#include "runtime/scheduler.h"

namespace strata {
namespace {

class FillTheBatch : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = make_cpu_backend(1);
    KvCacheShape shape;
    shape.n_layers = 1, shape.num_blocks = 64, shape.block_size = 4, shape.kv_heads = 1, shape.head_dim = 4;
    kv_ = std::make_unique<KvCache>(*backend_, shape);
  }

  SchedulerOptions options(double wait_s, int64_t max_running = 8) {
    SchedulerOptions o;
    o.max_running = max_running;
    o.batch_wait_s = wait_s;
    o.clock = [this] { return now_; };
    o.wait_for_arrivals = [this](double s) { waits_.push_back(s); };
    return o;
  }

  Sequence* arrive(Scheduler& s, int prompt = 3) {
    auto seq = std::make_unique<Sequence>();
    seq->handle = static_cast<int32_t>(seqs_.size());
    seq->request.id = seqs_.size();
    for (int i = 0; i < prompt; ++i) seq->request.prompt.push_back(1 + i);
    seq->request.max_new_tokens = 32;
    seq->history = seq->request.prompt;
    s.enqueue(seq.get());
    seqs_.push_back(std::move(seq));
    return seqs_.back().get();
  }

  // Runs a step as the engine would: the scheduled tokens are computed, each sequence at the end of
  // its history gets one sampled token.
  ScheduledStep step(Scheduler& s) {
    ScheduledStep st = s.schedule();
    s.complete(st);
    for (Sequence* q : st.seqs)
      if (q->processed == static_cast<int64_t>(q->history.size())) q->history.push_back(7), ++q->generated;
    return st;
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<KvCache> kv_;
  std::vector<std::unique_ptr<Sequence>> seqs_;
  std::vector<double> waits_;
  double now_ = 100.0;
};

TEST_F(FillTheBatch, HoldsADecodeStepWhileRequestsArriveAndAdmitsTheArrival) {
  Scheduler s(*kv_, options(0.005));
  arrive(s);
  EXPECT_EQ(step(s).batch.n_seqs, 1);  // the prefill runs at once (nothing to hold for)
  now_ += 0.001;                        // the last arrival was 1 ms ago: more may be coming
  const ScheduledStep held = step(s);
  EXPECT_TRUE(held.held);
  EXPECT_EQ(held.batch.n_seqs, 0);
  ASSERT_EQ(waits_.size(), 1u);
  EXPECT_NEAR(waits_[0], 0.005, 1e-9);  // the whole bound is left: the hold began now
  now_ += 0.002;
  arrive(s);  // joins the step that was held
  const ScheduledStep next = step(s);
  EXPECT_FALSE(next.held);
  EXPECT_EQ(next.batch.n_seqs, 2);  // the decode and the newcomer's prefill, together
  EXPECT_EQ(s.held_steps(), 1);
}

TEST_F(FillTheBatch, AHoldEndsAtTheBoundAndDoesNotRepeatWithoutArrivals) {
  Scheduler s(*kv_, options(0.005));
  arrive(s);
  step(s);
  now_ += 0.001;
  EXPECT_TRUE(step(s).held);
  now_ += 0.002;
  EXPECT_TRUE(step(s).held);  // still inside the bound: held again, for what is left of it
  EXPECT_NEAR(waits_.back(), 0.003, 1e-9);
  now_ += 0.003;  // the bound is over and nobody came
  const ScheduledStep ran = step(s);
  EXPECT_FALSE(ran.held);
  EXPECT_EQ(ran.batch.n_seqs, 1);
  for (int i = 0; i < 3; ++i) {  // requests stopped arriving: later steps are never held
    now_ += 0.0001;
    EXPECT_FALSE(step(s).held);
  }
  EXPECT_EQ(s.held_steps(), 2);
}

TEST_F(FillTheBatch, NoHoldForAFullBatchAClosedBatchOrWithoutStreaming) {
  {  // max_running reached: the batch cannot grow
    Scheduler s(*kv_, options(0.005, 2));
    arrive(s), arrive(s);
    EXPECT_EQ(step(s).batch.n_seqs, 2);
    now_ += 0.001;
    EXPECT_FALSE(step(s).held);
  }
  {  // the last arrival is older than the bound (a closed batch, as generate() submits it)
    Scheduler s(*kv_, options(0.005));
    arrive(s);
    now_ += 0.010;
    step(s);
    EXPECT_FALSE(step(s).held);
  }
  {  // weights resident: batch_wait_s is 0 and nothing is ever held
    Scheduler s(*kv_, options(0));
    arrive(s);
    step(s);
    now_ += 0.001;
    EXPECT_FALSE(step(s).held);
    EXPECT_EQ(s.held_steps(), 0);
  }
  EXPECT_TRUE(waits_.empty());
}

TEST_F(FillTheBatch, PrefillWorkIsNeverHeld) {
  SchedulerOptions o = options(0.005);
  o.max_step_tokens = 4;  // a 10-token prompt prefills over three steps
  Scheduler s(*kv_, o);
  arrive(s, 10);
  for (int i = 0; i < 3; ++i) {
    now_ += 0.0005;
    const ScheduledStep st = step(s);
    EXPECT_FALSE(st.held) << "step " << i;
    EXPECT_EQ(st.batch.n_seqs, 1);
  }
  now_ += 0.0005;
  EXPECT_TRUE(step(s).held);  // now a decode step alone, 2 ms after the arrival
}

// The interleaved pipeline's use: a cap on sequences per step spreads them, a sequence in flight is
// neither scheduled nor re-admitted, and finishing a batch of a sequence preempted meanwhile leaves its
// (recomputed) state alone.
TEST_F(FillTheBatch, InFlightSequencesWaitAndTheCapSpreadsThem) {
  Scheduler s(*kv_, options(0));
  for (int i = 0; i < 4; ++i) arrive(s);
  ScheduledStep a = s.schedule(2);
  ASSERT_EQ(a.batch.n_seqs, 2);
  for (Sequence* q : a.seqs) q->in_flight = true;
  ScheduledStep b = s.schedule(2);
  ASSERT_EQ(b.batch.n_seqs, 2);
  for (Sequence* q : b.seqs) q->in_flight = true;
  EXPECT_EQ(s.schedule(2).batch.n_seqs, 0);  // everyone is in flight
  for (Sequence* q : a.seqs) EXPECT_TRUE(std::find(b.seqs.begin(), b.seqs.end(), q) == b.seqs.end());

  // A's batch leaves the pipeline: its sequences decode next, B's still wait.
  s.complete(a);
  for (Sequence* q : a.seqs) q->in_flight = false, q->history.push_back(7), ++q->generated;
  ScheduledStep c = s.schedule(8);
  EXPECT_EQ(c.seqs, a.seqs);
  EXPECT_EQ(c.batch.n_tokens(), 2);  // one decode each

  // A sequence removed (cancelled) while in flight: completing B must skip it, not touch freed state.
  Sequence* gone = b.seqs[0];
  s.remove(gone);
  EXPECT_EQ(gone->processed, 0);
  s.complete(b);  // b still lists it; admitted_at no longer matches
  EXPECT_EQ(gone->processed, 0);
  EXPECT_EQ(b.seqs[1]->processed, static_cast<int64_t>(b.seqs[1]->history.size()));
}

// Speculative drafts: a decoding sequence's step carries its last token and the drafts, each with a
// logit row; completing it with what verification kept (1 + accepted, the history already grown by
// those) rolls the rest back: the rejected drafts' block goes back to the pool.
TEST_F(FillTheBatch, DraftsRideAlongAndRejectedOnesGiveTheirBlocksBack) {
  Scheduler s(*kv_, options(0));
  Sequence* q = arrive(s, 3);
  step(s);  // prefill; the sampled token makes 4 history tokens, 3 computed: blocks_for(4) = 1 block
  ASSERT_EQ(q->blocks.size(), 1u);
  const int64_t free_before = s.pool().available();
  q->draft = {11, 12, 13, 14, 15};
  ScheduledStep st = s.schedule();
  ASSERT_EQ(st.seqs.size(), 1u);
  EXPECT_EQ(st.drafts[0], 5);
  EXPECT_EQ(st.batch.tokens, (std::vector<int32_t>{7, 11, 12, 13, 14, 15}));
  EXPECT_EQ(st.batch.positions, (std::vector<int32_t>{3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(st.batch.logit_rows, (std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(q->blocks.size(), 3u);  // 9 slots
  // Verification kept draft 11 and replaced 12 with 20: two tokens emitted, two positions stand.
  q->history.push_back(11), q->history.push_back(20), q->generated += 2;
  st.counts[0] = 2;
  s.complete(st);
  EXPECT_EQ(q->processed, 5);
  EXPECT_EQ(q->blocks.size(), 2u);  // 6 history tokens: the third block went back
  EXPECT_EQ(s.pool().available(), free_before - 1);
  // With no block to spare for them, drafts are dropped rather than preempting anything.
  q->draft = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  std::vector<int32_t> hoard;
  while (s.pool().available() > 1) hoard.push_back(kv_->blocks().allocate());
  st = s.schedule();
  ASSERT_EQ(st.seqs.size(), 1u);
  EXPECT_EQ(st.drafts[0], 0);
  EXPECT_EQ(st.preempted, 0);
  EXPECT_EQ(st.batch.tokens, std::vector<int32_t>{20});
}

}  // namespace
}  // namespace strata
