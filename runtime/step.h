// runtime/step.h: the host-side description of one forward step (what the driver broadcasts to its
// replica): the tokens of every scheduled sequence, their positions and KV block tables, and which
// rows need logits. Prefill chunks and decodes mix freely: a sequence contributes 1..n tokens.
#pragma once
#include <cstdint>
#include <vector>

namespace strata {

struct StepBatch {
  std::vector<int32_t> tokens;        // [T] input ids (used by the first stage)
  std::vector<int32_t> positions;     // [T]
  std::vector<int32_t> token_seq;     // [T] index into the step's sequences
  std::vector<int32_t> block_tables;  // [n_seqs * max_blocks], -1 padded
  std::vector<int32_t> logit_rows;    // token rows whose logits are wanted, in order
  std::vector<int32_t> seq_ids;       // [n_seqs] caller's id of each sequence of the step
  int64_t n_seqs = 0;
  int64_t max_blocks = 0;

  int64_t n_tokens() const { return static_cast<int64_t>(tokens.size()); }
  // Serialises to / from a flat i32 buffer (for broadcast over the replica).
  std::vector<int32_t> pack() const;
  static StepBatch unpack(const std::vector<int32_t>& flat);
};

}  // namespace strata
