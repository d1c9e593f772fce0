// runtime/tokenizer/byte_bpe_tokenizer.h: byte-level BPE (GPT-2, Llama-3, Qwen2): the split regex cuts
// words, each byte becomes one printable character of the GPT-2 byte alphabet, ranked merges join them.
#pragma once
#include "runtime/tokenizer/pretokenizer.h"
#include "runtime/tokenizer/tokenizer.h"

namespace strata {

// The GPT-2 byte -> character table (printable Latin-1 bytes map to themselves, the rest to U+0100+),
// as UTF-8 strings, and its inverse (-1 for characters outside the alphabet).
const std::string& byte_level_char(unsigned char byte);
int byte_level_byte(uint32_t cp);

class ByteBpeTokenizer final : public Tokenizer {
 public:
  explicit ByteBpeTokenizer(const TokenizerData& data);

 protected:
  void encode_segment(std::string_view segment, bool at_text_start, std::vector<int32_t>& out) const override;

 private:
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  SplitFamily family_;
  bpe::MergeRanks ranks_;
  int32_t byte_ids_[256];
};

}  // namespace strata
