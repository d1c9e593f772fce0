// runtime/generator.cpp: the step loop (see generator.h).
#include "runtime/generator.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "runtime/error.h"

namespace strata {
namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

struct Generator::Sequence {
  const GenerationRequest* request = nullptr;
  std::vector<int32_t> history;  // prompt then generated tokens
  int64_t processed = 0;         // tokens already in the KV cache
  std::vector<int32_t> blocks;
  GenerationOutput output;
  bool finished = false;
};

Generator::Generator(LlamaModel& model, KvCache& kv, StageLink& link, Backend& backend, GeneratorOptions options)
    : model_(model), kv_(kv), link_(link), backend_(backend), options_(options) {
  STRATA_CHECK(options_.max_step_tokens > 0 && options_.micro_batches >= 1, "invalid generator options");
}

bool Generator::exchange_step(StepBatch& step) {
  std::vector<int32_t> message;
  if (link_.is_driver() && step.n_seqs > 0) message = step.pack();
  link_.broadcast_step(message);
  if (message.empty()) return false;
  if (!link_.is_driver()) step = StepBatch::unpack(message);
  return true;
}

Tensor Generator::run_step(const StepBatch& step, bool share_logits) {
  const ShardSpec& spec = model_.spec();
  const int64_t D = model_.config().hidden;

  // Micro-batches split the step's sequences into contiguous groups; stage s works on group m
  // while stage s+1 works on group m-1.
  const int64_t groups = std::max<int64_t>(1, std::min<int64_t>(options_.micro_batches, step.n_seqs));
  std::vector<Tensor> group_logits;
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
      group_logits.push_back(model_.logits(sub, hidden));
    }
  }
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

std::vector<GenerationOutput> Generator::generate(const std::vector<GenerationRequest>& requests,
                                                  const TokenCallback& on_token) {
  const ModelConfig& config = model_.config();
  std::vector<Sequence> seqs(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationRequest& r = requests[i];
    STRATA_CHECK(!r.prompt.empty(), "request ", i, " has an empty prompt");
    STRATA_CHECK(r.max_new_tokens >= 1, "request ", i, ": max_new_tokens must be >= 1");
    const int64_t need = static_cast<int64_t>(r.prompt.size()) + r.max_new_tokens;
    STRATA_CHECK(need <= config.max_seq, "request ", i, ": prompt of ", r.prompt.size(), " tokens plus ",
                 r.max_new_tokens, " new tokens exceeds the model's context of ", config.max_seq, " tokens");
    r.sampling.validate();
    for (int32_t id : r.prompt)
      STRATA_CHECK(id >= 0 && id < config.vocab_size, "request ", i, ": token id ", id, " is outside the vocabulary of ",
                   config.vocab_size);
    seqs[i].request = &r;
    seqs[i].history = r.prompt;
  }
  const int64_t bs = kv_.shape().block_size;
  const int64_t max_blocks = kv_.blocks_for(config.max_seq);

  while (true) {
    StepBatch step;
    step.max_blocks = max_blocks;
    std::vector<size_t> step_seq;  // request index per step sequence
    bool has_prefill = false;
    if (link_.is_driver()) {
      int64_t budget = options_.max_step_tokens;
      for (size_t i = 0; i < seqs.size() && budget > 0; ++i) {
        Sequence& s = seqs[i];
        if (s.finished) continue;
        const int64_t total = static_cast<int64_t>(s.history.size());
        const int64_t count = std::min(budget, total - s.processed);
        const int64_t need_blocks = kv_.blocks_for(s.processed + count);
        while (static_cast<int64_t>(s.blocks.size()) < need_blocks) {
          const int32_t b = kv_.blocks().allocate();
          STRATA_CHECK_KIND(ErrorKind::kOutOfMemory, b >= 0, "the KV cache (", kv_.shape().num_blocks, " blocks of ",
                            bs, " tokens) cannot hold this batch; give it more blocks or run fewer sequences");
          s.blocks.push_back(b);
        }
        const int32_t idx = static_cast<int32_t>(step_seq.size());
        for (int64_t p = s.processed; p < s.processed + count; ++p) {
          step.tokens.push_back(s.history[static_cast<size_t>(p)]);
          step.positions.push_back(static_cast<int32_t>(p));
          step.token_seq.push_back(idx);
        }
        has_prefill = has_prefill || count > 1 || s.processed < static_cast<int64_t>(s.request->prompt.size()) - 1;
        if (s.processed + count == total) step.logit_rows.push_back(static_cast<int32_t>(step.tokens.size() - 1));
        std::vector<int32_t> table(static_cast<size_t>(max_blocks), -1);
        std::copy(s.blocks.begin(), s.blocks.end(), table.begin());
        step.block_tables.insert(step.block_tables.end(), table.begin(), table.end());
        step.seq_ids.push_back(static_cast<int32_t>(i));
        step_seq.push_back(i);
        budget -= count;
      }
      step.n_seqs = static_cast<int64_t>(step_seq.size());
    }
    const double t0 = now_seconds();
    if (!exchange_step(step)) break;
    if (!link_.is_driver()) {
      step_seq.clear();
      for (int32_t id : step.seq_ids) step_seq.push_back(static_cast<size_t>(id));
    }
    const Tensor logits = run_step(step, false);

    // Which step sequences produced a token this step (their whole history is in the cache).
    std::vector<int32_t> new_tokens;
    std::vector<size_t> sampled_seq;
    {
      size_t row = 0;
      for (int64_t t = 0; t < step.n_tokens(); ++t) {
        if (row < step.logit_rows.size() && step.logit_rows[row] == t) {
          const size_t i = step_seq[static_cast<size_t>(step.token_seq[static_cast<size_t>(t)])];
          sampled_seq.push_back(i);
          if (link_.is_sampler()) {
            const Sequence& s = seqs[i];
            const std::span<const float> row_logits(logits.data<float>() + row * config.vocab_size,
                                                    static_cast<size_t>(config.vocab_size));
            const uint64_t index = s.output.tokens.size();
            new_tokens.push_back(Sampler::sample(row_logits, s.request->sampling, s.history, index));
          }
          ++row;
        }
      }
    }
    new_tokens.resize(sampled_seq.size());
    link_.broadcast_tokens(new_tokens);
    const double dt = now_seconds() - t0;
    (has_prefill ? stats_.prefill_seconds : stats_.decode_seconds) += dt;
    ++stats_.steps;

    // Advance every sequence of the step (all ranks keep the same state).
    for (int64_t s = 0; s < step.n_seqs; ++s) {
      Sequence& q = seqs[step_seq[static_cast<size_t>(s)]];
      int64_t count = 0;
      for (int32_t ts : step.token_seq) count += ts == s;
      if (q.processed < static_cast<int64_t>(q.request->prompt.size()))
        stats_.prompt_tokens += std::min<int64_t>(count, static_cast<int64_t>(q.request->prompt.size()) - q.processed);
      q.processed += count;
    }
    for (size_t k = 0; k < sampled_seq.size(); ++k) {
      Sequence& s = seqs[sampled_seq[k]];
      const int32_t token = new_tokens[k];
      s.history.push_back(token);
      s.output.tokens.push_back(token);
      ++stats_.generated_tokens;
      if (on_token) on_token(sampled_seq[k], token);
      const auto& stops = s.request->stop_ids;
      if (std::find(stops.begin(), stops.end(), token) != stops.end()) {
        s.finished = true;
        s.output.finish_reason = "stop";
      } else if (static_cast<int64_t>(s.output.tokens.size()) >= s.request->max_new_tokens) {
        s.finished = true;
        s.output.finish_reason = "length";
      }
      if (s.finished && link_.is_driver()) {
        for (int32_t b : s.blocks) kv_.blocks().free(b);
        s.blocks.clear();
      }
    }
  }
  std::vector<GenerationOutput> out;
  for (Sequence& s : seqs) out.push_back(std::move(s.output));
  return out;
}

Tensor Generator::score(const std::vector<int32_t>& ids) {
  const ModelConfig& config = model_.config();
  STRATA_CHECK(!ids.empty() && static_cast<int64_t>(ids.size()) <= config.max_seq, "score needs 1..", config.max_seq,
               " tokens, got ", ids.size());
  StepBatch step;
  std::vector<int32_t> blocks;
  step.max_blocks = kv_.blocks_for(static_cast<int64_t>(ids.size()));
  if (link_.is_driver()) {
    for (int64_t i = 0; i < step.max_blocks; ++i) {
      const int32_t b = kv_.blocks().allocate();
      STRATA_CHECK_KIND(ErrorKind::kOutOfMemory, b >= 0, "the KV cache is too small for ", ids.size(), " tokens");
      blocks.push_back(b);
    }
    for (size_t p = 0; p < ids.size(); ++p) {
      STRATA_CHECK(ids[p] >= 0 && ids[p] < config.vocab_size, "token id ", ids[p], " is outside the vocabulary");
      step.tokens.push_back(ids[p]);
      step.positions.push_back(static_cast<int32_t>(p));
      step.token_seq.push_back(0);
      step.logit_rows.push_back(static_cast<int32_t>(p));
    }
    step.block_tables = blocks;
    step.seq_ids = {0};
    step.n_seqs = 1;
  }
  STRATA_CHECK_KIND(ErrorKind::kInternal, exchange_step(step), "score step was not delivered");
  Tensor logits = run_step(step, true);
  if (link_.is_driver())
    for (int32_t b : blocks) kv_.blocks().free(b);
  return logits;
}

}  // namespace strata
