// runtime/draft_model.h: speculative drafts from a smaller model with the target's vocabulary, run
// whole (one stage, no TP) on the driver with its own paged KV cache. Each sequence keeps the tokens
// whose KV the draft cache holds; a proposal first feeds what the draft has not seen (the tokens
// verified since, from where the last drafts parted from them), then K - 1 single-token steps, all
// sequences batched in each. Rejected drafts' KV is simply overwritten next time (positions reset).
#pragma once
#include <unordered_map>

#include "runtime/kv_cache.h"
#include "runtime/models/llama.h"
#include "runtime/speculative.h"

namespace strata {

class DraftModelProposer final : public Proposer {
 public:
  // `model` runs the whole draft model on `kv` (both outlive the proposer).
  DraftModelProposer(LlamaModel& model, KvCache& kv);
  std::vector<Draft> propose(std::span<const DraftRequest> requests) override;
  void forget(int32_t handle) override;

 private:
  struct State {
    std::vector<int32_t> fed;     // tokens whose KV is in `blocks`, from position 0
    std::vector<int32_t> blocks;  // block table in the draft cache
  };
  bool reserve(State& state, int64_t tokens);  // blocks for `tokens` slots; false when the cache is full
  void release(State& state);

  LlamaModel& model_;
  KvCache& kv_;
  std::unordered_map<int32_t, State> states_;
};

}  // namespace strata
