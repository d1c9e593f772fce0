// runtime/tokenizer/sentencepiece_tokenizer.h: Llama-2 style BPE: spaces become U+2581, adjacent
// symbols merge by the best score of the merged piece (or by merge rank when the data came with a
// Hugging Face merges list), characters outside the vocabulary fall back to <0xXX> byte tokens.
#pragma once
#include "runtime/tokenizer/tokenizer.h"

namespace strata {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const TokenizerData& data);

 protected:
  void encode_segment(std::string_view segment, bool at_text_start, std::vector<int32_t>& out) const override;

 private:
  bpe::PieceIndex mergeable_;                       // pieces BPE may produce: normal and user-defined
  bpe::MergeRanks ranks_;
  bool use_ranks_ = false;
  int32_t byte_ids_[256];                           // <0xXX> tokens, -1 where missing
};

}  // namespace strata
