// launcher/http/choice_text.h: the text of one generated choice as tokens arrive: incremental
// decoding (UTF-8 safe), stop strings (the text ends before the first match, which is trimmed) and
// hold-back of a tail that might still become a stop string, so streamed text never has to be
// taken back.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/tokenizer/tokenizer.h"

namespace strata::launcher::http {

class ChoiceText {
 public:
  // `tokenizer` may be null (a model without one): the text stays empty. `previous` is the last
  // prompt id (context for the first token's leading space).
  ChoiceText(const Tokenizer* tokenizer, std::vector<std::string> stop, int32_t previous);
  // Feeds one generated token; returns the text that is now final. Once a stop string matched,
  // stopped() is true and later tokens are ignored.
  std::string push(int32_t token);
  // The end of generation: returns whatever was held back.
  std::string finish();
  bool stopped() const { return stopped_; }
  const std::string& text() const { return text_; }  // everything returned so far
  // The text `token` contributes after `previous` (-1: none), leading space included (for logprobs'
  // token strings; their concatenation is the choice's text). token_bytes: the same, unsanitized.
  std::string token_text(int32_t previous, int32_t token) const;
  std::string token_bytes(int32_t previous, int32_t token) const;

 private:
  std::string release(std::string chunk);

  const Tokenizer* tokenizer_;
  std::vector<std::string> stop_;
  std::unique_ptr<TokenStreamDecoder> decoder_;
  std::string held_;  // decoded, not yet released: may be the start of a stop string
  std::string text_;
  bool stopped_ = false;
};

}  // namespace strata::launcher::http
