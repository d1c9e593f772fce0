// runtime/step_runner.h: runs one StepBatch through this rank's pipeline stage, split into
// micro-batches so every stage stays busy, and returns the logits of the step's logit rows. Shared by
// the Engine (serving, generate) and Generator::score (teacher-forced logits). It schedules nothing.
#pragma once
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

 private:
  LlamaModel& model_;
  StageLink& link_;
  Backend& backend_;
  int micro_batches_;
};

}  // namespace strata
