// launcher/speculation.cpp: speculative-decoding flags and the proposer a rank gets (see speculation.h).
#include "launcher/speculation.h"

#include "runtime/draft_model.h"
#include "runtime/error.h"
#include "runtime/log.h"

namespace strata::launcher {

std::vector<FlagSpec> speculative_flags() {
  const std::string group = "speculative decoding (off by default)";
  return {
      {"speculative", true, "ngram (prompt lookup, no second model), draft (needs --draft-model) or off", group},
      {"spec-tokens", true, "tokens drafted per step and sequence (default 4)", group},
      {"spec-ngram", true, "n-gram sizes MIN:MAX matched against the context (default 1:3)", group},
      {"draft-model", true, "smaller checkpoint with the model's vocabulary; implies --speculative draft", group},
  };
}

SpeculativeSettings speculative_settings(const Args* flags, const parallel::Plan* plan) {
  SpeculativeSettings s;
  if (plan != nullptr) {
    const parallel::SpeculativeSection& p = plan->speculative;
    s.method = p.method;
    s.tokens = p.tokens;
    s.ngram_min = p.ngram_min;
    s.ngram_max = p.ngram_max;
    s.draft_model = p.draft_model;
  }
  if (flags == nullptr) return s;
  const Args& args = *flags;
  if (args.has("draft-model")) {
    s.draft_model = args.str("draft-model");
    s.method = "draft";
  }
  if (args.has("speculative")) {
    s.method = args.str("speculative");
    STRATA_CHECK(s.method == "off" || s.method == "ngram" || s.method == "draft",
                 "--speculative must be ngram, draft or off, got '", s.method, "'");
  }
  if (args.has("spec-tokens")) s.tokens = static_cast<int>(args.integer("spec-tokens", 4, 1, 64));
  if (args.has("spec-ngram")) {
    const std::string text = args.str("spec-ngram");
    const size_t colon = text.find(':');
    try {
      s.ngram_min = std::stoi(text.substr(0, colon));
      s.ngram_max = colon == std::string::npos ? s.ngram_min : std::stoi(text.substr(colon + 1));
    } catch (const std::exception&) {
      STRATA_THROW(ErrorKind::kInvalidArgument, "--spec-ngram '", text, "' is not MIN:MAX (e.g. 1:3) or N");
    }
    STRATA_CHECK(s.ngram_min >= 1 && s.ngram_max >= s.ngram_min && s.ngram_max <= 64, "--spec-ngram '", text,
                 "' needs 1 <= MIN <= MAX <= 64");
  }
  STRATA_CHECK(s.method != "draft" || !s.draft_model.empty(),
               "--speculative draft needs --draft-model PATH (a smaller checkpoint with the model's vocabulary)");
  return s;
}

void check_same_vocabulary(const Checkpoint& target, const Checkpoint& draft) {
  const int64_t tv = target.config().vocab_size, dv = draft.config().vocab_size;
  STRATA_CHECK(tv == dv, "draft model ", draft.path(), " has a vocabulary of ", dv, " tokens, the model ",
               target.path(), " has ", tv, "; a draft model must use the same tokenizer as the model it drafts for");
  if (!target.tokenizer() || !draft.tokenizer()) return;  // token ids alone: the sizes agree
  const std::vector<std::string>& a = target.tokenizer()->tokens;
  const std::vector<std::string>& b = draft.tokenizer()->tokens;
  STRATA_CHECK(a.size() == b.size(), "draft model ", draft.path(), " has a tokenizer of ", b.size(),
               " pieces, the model ", target.path(), " has ", a.size(), "; use a draft with the same tokenizer");
  for (size_t i = 0; i < a.size(); ++i)
    STRATA_CHECK(a[i] == b[i], "draft model ", draft.path(), " spells token ", i, " '", b[i], "' where the model ",
                 target.path(), " has '", a[i], "'; a draft model must use the same tokenizer");
}

SpeculativeOptions make_speculation(const SpeculativeSettings& settings, const Checkpoint& target, Backend& backend,
                                    bool driver, int64_t kv_tokens, int64_t block_size, DType kv_dtype,
                                    std::unique_ptr<DraftModel>& holder) {
  SpeculativeOptions o;
  if (!settings.on()) return o;
  o.tokens = settings.tokens;
  if (!driver) return o;  // the drafts reach the other ranks as step tokens
  if (settings.method == "ngram") {
    o.proposer = make_ngram_proposer(settings.ngram_min, settings.ngram_max);
    return o;
  }
  holder.reset();
  auto d = std::make_unique<DraftModel>();
  d->checkpoint = open_checkpoint(settings.draft_model);
  check_same_vocabulary(target, *d->checkpoint);
  const ModelConfig& c = d->checkpoint->config();
  const ShardSpec whole = ShardSpec::make(c, 0, 1, 0, c.n_layers);
  d->weights = make_resident_weights(*d->checkpoint, whole, backend);
  KvCacheShape kv;
  kv.n_layers = c.n_layers;
  kv.block_size = block_size;
  kv.kv_heads = whole.kv_heads;
  kv.head_dim = c.head_dim;
  kv.num_blocks = std::max<int64_t>(1, (kv_tokens + block_size - 1) / block_size);
  d->kv = std::make_unique<KvCache>(backend, kv, kv_dtype);
  d->model = std::make_unique<LlamaModel>(c, whole, backend, *d->weights, d->tp, *d->kv);
  o.proposer = std::make_shared<DraftModelProposer>(*d->model, *d->kv);
  LOG_DEBUG("draft model ", settings.draft_model, ": ", c.n_layers, " layers, ", kv.num_blocks, " KV blocks");
  holder = std::move(d);
  return o;
}

}  // namespace strata::launcher
