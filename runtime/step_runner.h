// runtime/step_runner.h: runs one StepBatch through this rank's pipeline stage, split into
// micro-batches so every stage stays busy, and returns the logits of the step's logit rows. Shared by
// the Engine (serving, generate) and Generator::score (teacher-forced logits). It schedules nothing.
#pragma once
#include <span>

#include "runtime/backend.h"
#include "runtime/models/llama.h"
#include "runtime/stage_link.h"
#include "runtime/step.h"

namespace strata {

class StepRunner {
 public:
  StepRunner(LlamaModel& model, StageLink& link, Backend& backend, int micro_batches);
  // Every rank of the replica calls it with the same step. Returns logits [logit_rows, vocab] (f32,
  // host): valid on every rank when `share_logits`, else on the last stage only (zeros elsewhere).
  Tensor run(const StepBatch& step, bool share_logits);
  // The same step, but the last stage samples each logit row on the backend (LlamaModel::can_sample()
  // must hold there) with rows[i] for logit row i; tokens/logprobs (sized like rows) are filled on the
  // last stage only. Every rank of the replica calls it with the same step.
  void run_and_sample(const StepBatch& step, std::span<const SampleRow> rows, std::span<int32_t> tokens,
                      std::span<float> logprobs);

 private:
  // Runs every micro-batch; `on_logits(sub, hidden, first_row)` runs on the last stage for each group
  // with logit rows, first_row being the index of its first row among the step's logit rows.
  template <typename OnLogits>
  void run_groups(const StepBatch& step, OnLogits&& on_logits);

  LlamaModel& model_;
  StageLink& link_;
  Backend& backend_;
  int micro_batches_;
};

}  // namespace strata
