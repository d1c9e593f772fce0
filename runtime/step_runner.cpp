// runtime/step_runner.cpp: micro-batch split of a step and the pipeline send/recv around each part.
#include "runtime/step_runner.h"

#include <algorithm>
#include <cstring>

#include "runtime/error.h"

namespace strata {

StepRunner::StepRunner(LlamaModel& model, StageLink& link, Backend& backend, int micro_batches)
    : model_(model), link_(link), backend_(backend), micro_batches_(micro_batches) {
  STRATA_CHECK(micro_batches >= 1, "micro_batches must be >= 1, got ", micro_batches);
}

template <typename OnLogits>
void StepRunner::run_groups(const StepBatch& step, OnLogits&& on_logits) {
  const ShardSpec& spec = model_.spec();
  const int64_t D = model_.config().hidden;
  int64_t logit_row0 = 0;  // index among the step's logit rows of the group's first

  // Micro-batches split the step's sequences into contiguous groups; stage s works on group m
  // while stage s+1 works on group m-1. Every rank derives the same groups from the same step, so
  // the tags of sends and receives match.
  const int64_t groups = std::max<int64_t>(1, std::min<int64_t>(micro_batches_, step.n_seqs));
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t s0 = step.n_seqs * g / groups, s1 = step.n_seqs * (g + 1) / groups;
    StepBatch sub;
    std::vector<int32_t> first_row(static_cast<size_t>(step.n_tokens()), -1);
    for (int64_t t = 0; t < step.n_tokens(); ++t) {
      const int32_t s = step.token_seq[static_cast<size_t>(t)];
      if (s < s0 || s >= s1) continue;
      first_row[static_cast<size_t>(t)] = static_cast<int32_t>(sub.tokens.size());
      sub.tokens.push_back(step.tokens[static_cast<size_t>(t)]);
      sub.positions.push_back(step.positions[static_cast<size_t>(t)]);
      sub.token_seq.push_back(static_cast<int32_t>(s - s0));
    }
    for (int32_t r : step.logit_rows)
      if (first_row[static_cast<size_t>(r)] >= 0) sub.logit_rows.push_back(first_row[static_cast<size_t>(r)]);
    sub.n_seqs = s1 - s0;
    sub.max_blocks = step.max_blocks;
    sub.block_tables.assign(step.block_tables.begin() + s0 * step.max_blocks,
                            step.block_tables.begin() + s1 * step.max_blocks);
    sub.seq_ids.assign(step.seq_ids.begin() + s0, step.seq_ids.begin() + s1);
    if (sub.tokens.empty()) continue;

    Tensor hidden;
    if (!spec.first_stage) {
      hidden = backend_.alloc({sub.n_tokens(), D}, backend_.activation_dtype());
      link_.recv_hidden(hidden, static_cast<int>(g));
    }
    model_.forward(sub, hidden);
    if (!spec.last_stage) {
      link_.send_hidden(hidden, static_cast<int>(g));
    } else if (!sub.logit_rows.empty()) {
      on_logits(sub, hidden, logit_row0);
      logit_row0 += static_cast<int64_t>(sub.logit_rows.size());
    }
  }
}

Tensor StepRunner::run(const StepBatch& step, bool share_logits) {
  const ShardSpec& spec = model_.spec();
  std::vector<Tensor> group_logits;
  run_groups(step, [&](const StepBatch& sub, const Tensor& hidden, int64_t) {
    group_logits.push_back(model_.logits(sub, hidden));
  });
  const int64_t rows = static_cast<int64_t>(step.logit_rows.size()), V = model_.config().vocab_size;
  Tensor logits = Tensor::empty({rows, V}, DType::kF32);
  if (spec.last_stage) {
    int64_t r = 0;  // logit rows are in sequence order, and so are the groups
    for (const Tensor& part : group_logits) {
      std::memcpy(logits.data<float>() + r * V, part.raw(), static_cast<size_t>(part.nbytes()));
      r += part.dim(0);
    }
  }
  if (share_logits) link_.broadcast_logits(logits);
  return logits;
}

}  // namespace strata

namespace strata {

void StepRunner::run_and_sample(const StepBatch& step, std::span<const SampleRow> rows, std::span<int32_t> tokens,
                                std::span<float> logprobs) {
  STRATA_CHECK_KIND(ErrorKind::kInternal,
                    rows.size() == step.logit_rows.size() && tokens.size() == rows.size() &&
                        logprobs.size() == rows.size(),
                    "run_and_sample: ", step.logit_rows.size(), " logit rows, ", rows.size(), " sampling rows");
  if (model_.sample_recorded(step, rows, tokens, logprobs)) return;
  run_groups(step, [&](const StepBatch& sub, const Tensor& hidden, int64_t first) {
    const size_t n = sub.logit_rows.size(), at = static_cast<size_t>(first);
    model_.sample(sub, hidden, rows.subspan(at, n), tokens.subspan(at, n), logprobs.subspan(at, n));
  });
}

}  // namespace strata
