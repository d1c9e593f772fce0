// launcher/speculation.h: the speculative-decoding settings of a model command (--speculative,
// --spec-tokens, --spec-ngram, --draft-model, or a plan's speculative section) and what they build on
// a rank: the prompt-lookup proposer, or a draft model loaded whole on the driver next to the target.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "launcher/args.h"
#include "parallel/plan.h"
#include "runtime/backend.h"
#include "runtime/collective.h"
#include "runtime/formats/checkpoint.h"
#include "runtime/kv_cache.h"
#include "runtime/models/llama.h"
#include "runtime/speculative.h"
#include "runtime/weights.h"

namespace strata::launcher {

struct SpeculativeSettings {
  std::string method = "off";  // off | ngram | draft
  int tokens = 4;
  int ngram_min = 1, ngram_max = 3;
  std::string draft_model;
  bool on() const { return method != "off"; }
};

std::vector<FlagSpec> speculative_flags();
// The plan's section (when given), the flags (when given) over it; errors name the flag.
SpeculativeSettings speculative_settings(const Args* args, const parallel::Plan* plan);

// A draft model loaded whole on one rank, with its own KV cache.
struct DraftModel {
  std::unique_ptr<Checkpoint> checkpoint;
  std::unique_ptr<WeightSource> weights;
  LocalCollective tp;
  std::unique_ptr<KvCache> kv;
  std::unique_ptr<LlamaModel> model;
};

// What a rank's engine gets: the token count on every rank, a proposer on the driver. A draft model is
// loaded (into `holder`) on the driver only, on `backend`, with a KV cache of `kv_tokens` slots in `kv_dtype`
// (the target's, so --kv-cache-dtype fp8 halves both); its vocabulary must be the target's (size, and every
// piece when both checkpoints carry a tokenizer).
SpeculativeOptions make_speculation(const SpeculativeSettings& settings, const Checkpoint& target, Backend& backend,
                                    bool driver, int64_t kv_tokens, int64_t block_size, DType kv_dtype,
                                    std::unique_ptr<DraftModel>& holder);

// Throws naming both paths when the draft's vocabulary is not the target's.
void check_same_vocabulary(const Checkpoint& target, const Checkpoint& draft);

}  // namespace strata::launcher
