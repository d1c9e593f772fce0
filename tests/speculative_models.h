// tests/speculative_models.h: the draft models of the speculative-decoding tests: a random-weight model
// with stories260K's tokenizer (its Hugging Face copy's files), a poor but valid draft whose guesses the
// target mostly rejects.
#pragma once
#include <filesystem>
#include <string>

#include "single_rank_reference.h"
#include "test_util.h"

namespace strata::test {

inline std::string stories260k() { return shared_model("stories260K/stories260K.bin"); }

// Written by each rank into its own folder (`rank`); empty when ../shared/models is absent.
inline std::string random_stories_draft(int rank) {
  if (stories260k().empty()) return "";
  ModelConfig c;
  c.vocab_size = 512, c.hidden = 32, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 8;
  c.ffn = 64, c.max_seq = 512;
  const std::string dir = layout_model("draft512", "speculative", rank, c);
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    std::filesystem::remove(dir + "/" + name);  // make-model's synthetic tokenizer goes
    std::filesystem::copy_file(shared_model(std::string("stories260K-hf/") + name), dir + "/" + name);
  }
  return dir;
}

}  // namespace strata::test
