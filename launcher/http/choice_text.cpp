// launcher/http/choice_text.cpp: incremental text with stop strings.
#include "launcher/http/choice_text.h"

#include <algorithm>

#include "runtime/tokenizer/unicode.h"

namespace strata::launcher::http {

ChoiceText::ChoiceText(const Tokenizer* tokenizer, std::vector<std::string> stop, int32_t previous)
    : tokenizer_(tokenizer), stop_(std::move(stop)) {
  if (tokenizer_ != nullptr) {
    decoder_ = std::make_unique<TokenStreamDecoder>(*tokenizer_);
    if (previous >= 0) decoder_->set_previous(previous);
  }
}

std::string ChoiceText::token_text(int32_t previous, int32_t token) const {
  return unicode::sanitize(token_bytes(previous, token));
}

std::string ChoiceText::token_bytes(int32_t previous, int32_t token) const {
  return tokenizer_ != nullptr ? tokenizer_->decode_token(previous, token) : std::string();
}

std::string ChoiceText::push(int32_t token) {
  if (stopped_ || decoder_ == nullptr) return "";
  // The decoder holds back unfinished characters, so what it returns is whole characters or bytes
  // that never form one: those become U+FFFD (JSON needs valid UTF-8).
  return release(unicode::sanitize(decoder_->push(token)));
}

std::string ChoiceText::finish() {
  if (stopped_ || decoder_ == nullptr) return "";
  std::string out = release(unicode::sanitize(decoder_->flush()));
  out += held_;  // generation ended: nothing left can become a stop string
  text_ += held_;
  held_.clear();
  return out;
}

std::string ChoiceText::release(std::string chunk) {
  held_ += chunk;
  // The earliest stop string wins.
  size_t cut = std::string::npos;
  for (const std::string& s : stop_) cut = std::min(cut, held_.find(s));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, cut);
    held_.clear();
    text_ += out;
    return out;
  }
  // Keep back the longest tail that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const std::string& s : stop_)
    for (size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n)
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  text_ += out;
  return out;
}

}  // namespace strata::launcher::http
