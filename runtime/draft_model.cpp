// runtime/draft_model.cpp: batched draft steps of a small model (see draft_model.h).
#include "runtime/draft_model.h"

#include <algorithm>

#include "runtime/error.h"
#include "runtime/sampler.h"

namespace strata {

DraftModelProposer::DraftModelProposer(LlamaModel& model, KvCache& kv) : model_(model), kv_(kv) {
  STRATA_CHECK(model.spec().first_stage && model.spec().last_stage && model.spec().tp_size == 1,
               "the draft model runs whole on one rank");
}

bool DraftModelProposer::reserve(State& state, int64_t tokens) {
  while (static_cast<int64_t>(state.blocks.size()) < kv_.blocks_for(tokens)) {
    const int32_t b = kv_.blocks().allocate();
    if (b < 0) return false;
    state.blocks.push_back(b);
  }
  return true;
}

void DraftModelProposer::release(State& state) {
  for (int32_t b : state.blocks) kv_.blocks().free(b);
  state.blocks.clear();
  state.fed.clear();
}

void DraftModelProposer::forget(int32_t handle) {
  const auto it = states_.find(handle);
  if (it == states_.end()) return;
  release(it->second);
  states_.erase(it);
}

std::vector<Draft> DraftModelProposer::propose(std::span<const DraftRequest> requests) {
  std::vector<Draft> out(requests.size());
  struct Active {
    size_t request;
    State* state;
    std::vector<int32_t> pending;  // tokens to feed this round
    std::vector<int32_t> context;  // history and drafts so far (the repetition penalty's view)
  };
  std::vector<Active> active;
  int64_t rounds = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const DraftRequest& r = requests[i];
    const int64_t len = static_cast<int64_t>(r.history.size());
    // Positions up to len + k - 2 are fed; the draft's context must hold them.
    if (r.max_tokens <= 0 || len < 1 || len + r.max_tokens - 1 > model_.config().max_seq) continue;
    State& st = states_[r.handle];
    size_t same = 0;
    while (same < st.fed.size() && same < r.history.size() && st.fed[same] == r.history[same]) ++same;
    st.fed.resize(std::min(same, r.history.size() - 1));  // the last token is fed again for its logits
    if (!reserve(st, len + r.max_tokens - 1)) {  // the draft cache is full: no drafts for it this step
      release(st);
      continue;
    }
    Active a{i, &st, {r.history.begin() + static_cast<std::ptrdiff_t>(st.fed.size()), r.history.end()},
             {r.history.begin(), r.history.end()}};
    active.push_back(std::move(a));
    rounds = std::max(rounds, r.max_tokens);
  }
  for (int64_t round = 0; round < rounds; ++round) {
    std::vector<Active*> now;
    for (Active& a : active)
      if (round < requests[a.request].max_tokens) now.push_back(&a);
    StepBatch step;
    step.n_seqs = static_cast<int64_t>(now.size());
    step.max_blocks = 1;
    for (const Active* a : now) step.max_blocks = std::max<int64_t>(step.max_blocks, a->state->blocks.size());
    for (size_t s = 0; s < now.size(); ++s) {
      Active& a = *now[s];
      for (size_t t = 0; t < a.pending.size(); ++t) {
        step.tokens.push_back(a.pending[t]);
        step.positions.push_back(static_cast<int32_t>(a.state->fed.size() + t));
        step.token_seq.push_back(static_cast<int32_t>(s));
      }
      step.logit_rows.push_back(static_cast<int32_t>(step.tokens.size() - 1));
      step.seq_ids.push_back(requests[a.request].handle);
      std::vector<int32_t> row(static_cast<size_t>(step.max_blocks), -1);
      std::copy(a.state->blocks.begin(), a.state->blocks.end(), row.begin());
      step.block_tables.insert(step.block_tables.end(), row.begin(), row.end());
    }
    Tensor hidden;
    model_.forward(step, hidden);
    const Tensor logits = model_.logits(step, hidden);
    const int64_t V = model_.config().vocab_size;
    for (size_t s = 0; s < now.size(); ++s) {
      Active& a = *now[s];
      const DraftRequest& r = requests[a.request];
      Draft& d = out[a.request];
      const std::span<const float> row(logits.data<float>() + static_cast<int64_t>(s) * V, static_cast<size_t>(V));
      int32_t token;
      if (r.sampling.greedy()) {
        token = Sampler::sample(row, r.sampling, a.context, 0);
      } else {
        const std::vector<double> q = Sampler::distribution(row, r.sampling, a.context);
        const uint64_t draw = r.first_draw + static_cast<uint64_t>(round);
        token = draw_from(q, Sampler::uniform(r.sampling.seed, draw, static_cast<uint64_t>(DrawStream::kDraft)));
        DraftDistribution sparse;
        for (size_t v = 0; v < q.size(); ++v)
          if (q[v] > 0.0) {
            sparse.ids.push_back(static_cast<int32_t>(v));
            sparse.probs.push_back(static_cast<float>(q[v]));
          }
        d.q.push_back(std::move(sparse));
      }
      a.state->fed.insert(a.state->fed.end(), a.pending.begin(), a.pending.end());
      a.pending = {token};
      a.context.push_back(token);
      d.tokens.push_back(token);
    }
  }
  return out;
}

}  // namespace strata
