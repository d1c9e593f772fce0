// runtime/tokenizer/tokenizer.h: text <-> token ids for a model, built from TokenizerData whatever file
// it came from. SentencePiece-style (Llama-2) and byte-level BPE (GPT-2, Llama-3, Qwen2) are the two
// implementations (sentencepiece_tokenizer.cpp, byte_bpe_tokenizer.cpp); this is what callers see.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer/bpe_merge.h"
#include "runtime/tokenizer/tokenizer_data.h"

namespace strata {

class Tokenizer {
 public:
  // Validates `data` (sizes, ids in range, known pre-tokenizer) and throws strata::Error (kFormat).
  static std::unique_ptr<Tokenizer> create(const TokenizerData& data);
  virtual ~Tokenizer() = default;
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // `add_special`: BOS/EOS as the data says. `parse_special`: special and added tokens written in the
  // text (`<|im_start|>`, `<s>`) become their ids, as Hugging Face does; pass false for untrusted
  // user text so it cannot inject control tokens (then they are spelled out like any other text).
  std::vector<int32_t> encode(std::string_view text, bool add_special = true, bool parse_special = true) const;
  // Concatenated bytes of the tokens; control tokens (BOS, EOS, ...) and <unk> produce nothing. May be
  // invalid UTF-8 when ids end inside a multi-byte character (unicode::sanitize() fixes that up).
  std::string decode(const std::vector<int32_t>& ids) const;
  // The bytes token `id` adds after token `prev` (-1 at the start): decode(ids) is the concatenation of
  // decode_token(ids[i-1], ids[i]). SentencePiece drops the prefix space of the first word: after BOS
  // (llama2.c) or at the start / after any control token (Hugging Face, sentencepiece).
  std::string decode_token(int32_t prev, int32_t id) const;

  int32_t bos_id() const { return data_.bos_id; }
  int32_t eos_id() const { return data_.eos_id; }
  int32_t unk_id() const { return data_.unk_id; }
  int32_t pad_id() const { return data_.pad_id; }
  int64_t vocab_size() const { return static_cast<int64_t>(data_.tokens.size()); }
  TokenizerKind kind() const { return data_.kind; }
  const TokenizerData& data() const { return data_; }
  // Control and unknown tokens: the ones decode() drops and a generation loop may stop on.
  bool is_special(int32_t id) const;
  // The id of an exact piece as stored (`<|im_start|>`, `<s>`, `▁the`), -1 when there is none.
  int32_t token_to_id(std::string_view piece) const;
  // The piece as stored; throws for an id out of range.
  const std::string& id_to_piece(int32_t id) const;

 protected:
  explicit Tokenizer(const TokenizerData& data);
  // Encodes text that holds no special token; `at_text_start` says whether it begins the input.
  virtual void encode_segment(std::string_view segment, bool at_text_start, std::vector<int32_t>& out) const = 0;
  TokenType type(int32_t id) const;
  bool in_range(int32_t id) const { return id >= 0 && id < static_cast<int32_t>(data_.tokens.size()); }

  TokenizerData data_;
  bpe::PieceIndex piece_index_;             // every piece -> its first id
  std::vector<std::string> token_bytes_;    // what each id decodes to; subclasses fill it
  bool strip_first_space_ = false;          // SentencePiece with a space prefix
  bool strip_only_after_bos_ = false;       // llama2.c: only right after BOS

 private:
  std::vector<std::vector<int32_t>> special_by_first_byte_;  // longest first
};

// Streaming decoder: feed generated ids one at a time, get text that is safe to print now. Bytes of an
// unfinished UTF-8 character (byte-fallback or byte-level tokens split one) wait for the next ids, so
// the concatenation of push() results and flush() equals Tokenizer::decode of all ids.
class TokenStreamDecoder {
 public:
  explicit TokenStreamDecoder(const Tokenizer& tokenizer) : tokenizer_(&tokenizer) {}
  std::string push(int32_t id);
  // Returns what is still held back (a truncated character, verbatim) and starts a new sequence.
  std::string flush();
  // Continues after `id` (e.g. the last prompt token, already printed) without emitting anything, so
  // the next token gets the right leading-space treatment.
  void set_previous(int32_t id) {
    prev_ = id;
    pending_.clear();
  }
  // Held-back bytes, if any.
  const std::string& pending() const { return pending_; }

 private:
  const Tokenizer* tokenizer_;
  int32_t prev_ = -1;
  std::string pending_;
};

}  // namespace strata
