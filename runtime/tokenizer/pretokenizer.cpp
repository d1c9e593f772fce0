// runtime/tokenizer/pretokenizer.cpp: hand-written matchers for the byte-level BPE split regexes. Each
// alternative of the regex is one step below, tried in the regex's order at the current position.
#include "runtime/tokenizer/pretokenizer.h"

#include <cstdint>

#include "runtime/error.h"
#include "runtime/tokenizer/unicode.h"

namespace strata {

SplitFamily split_family_from_name(std::string_view name) {
  if (name == "default" || name == "gpt2" || name == "gpt-2") return SplitFamily::kGpt2;
  if (name == "llama3" || name == "llama-bpe" || name == "llama-v3") return SplitFamily::kLlama3;
  if (name == "qwen2") return SplitFamily::kQwen2;
  if (name == "smollm") return SplitFamily::kSmollm;
  STRATA_THROW(ErrorKind::kFormat, "unsupported byte-level BPE pre-tokenizer '", name,
               "'; supported: gpt2 (default), llama3, qwen2, smollm");
}

std::string_view split_pattern(SplitFamily family) {
  switch (family) {
    case SplitFamily::kLlama3:
      return R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
    case SplitFamily::kQwen2:
      return R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
    case SplitFamily::kGpt2:
    case SplitFamily::kSmollm:
      break;
  }
  return R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
}

const char* split_family_name(SplitFamily family) {
  switch (family) {
    case SplitFamily::kLlama3: return "llama3";
    case SplitFamily::kQwen2: return "qwen2";
    case SplitFamily::kSmollm: return "smollm";
    case SplitFamily::kGpt2: break;
  }
  return "gpt2";
}

bool split_family_from_pattern(std::string_view pattern, SplitFamily* family) {
  for (SplitFamily f : {SplitFamily::kGpt2, SplitFamily::kLlama3, SplitFamily::kQwen2}) {
    if (pattern == split_pattern(f)) {
      *family = f;
      return true;
    }
  }
  return false;
}

namespace {

class Matcher {
 public:
  Matcher(std::string_view text, SplitFamily family) : text_(text), family_(family) {
    for (size_t pos = 0; pos < text.size();) {
      size_t length = 1;
      cps_.push_back(unicode::decode(text, pos, &length));
      offsets_.push_back(pos);
      pos += length;
    }
    offsets_.push_back(text.size());
  }

  std::vector<std::string_view> split() {
    std::vector<std::string_view> words;
    const size_t n = cps_.size();
    for (size_t i = 0; i < n;) {
      size_t end = match_at(i);
      if (end <= i) end = i + 1;  // unreachable: some alternative matches every character
      words.push_back(text_.substr(offsets_[i], offsets_[end] - offsets_[i]));
      i = end;
    }
    return words;
  }

 private:
  uint32_t cp(size_t i) const { return i < cps_.size() ? cps_[i] : 0; }
  bool letter(size_t i) const { return i < cps_.size() && unicode::is_letter(cps_[i]); }
  bool number(size_t i) const { return i < cps_.size() && unicode::is_number(cps_[i]); }
  bool space(size_t i) const { return i < cps_.size() && unicode::is_whitespace(cps_[i]); }
  bool other(size_t i) const { return i < cps_.size() && !space(i) && !letter(i) && !number(i); }
  bool newline(size_t i) const { return i < cps_.size() && (cps_[i] == '\r' || cps_[i] == '\n'); }
  size_t run(size_t i, bool (Matcher::*pred)(size_t) const) const {
    while ((this->*pred)(i)) ++i;
    return i;
  }

  // 's 't 're 've 'm 'll 'd; returns the end or 0.
  size_t contraction(size_t i, bool fold_case) const {
    if (cp(i) != '\'') return 0;
    auto lower = [&](size_t k) -> uint32_t {
      const uint32_t c = cp(k);
      return (fold_case && c >= 'A' && c <= 'Z') ? c + 32 : c;
    };
    const uint32_t a = lower(i + 1);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    const uint32_t b = lower(i + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return 0;
  }

  // \s+(?!\S) then \s+: a whitespace run gives up its last character to a following word.
  size_t whitespace(size_t i) const {
    const size_t j = run(i, &Matcher::space);
    if (j < cps_.size() && j - i >= 2) return j - 1;
    return j;
  }

  size_t match_at(size_t i) const { return family_ == SplitFamily::kGpt2 ? match_gpt2(i) : match_llama3(i); }

  size_t match_gpt2(size_t i) const {
    if (size_t end = contraction(i, false)) return end;
    const size_t k = cp(i) == ' ' ? i + 1 : i;  // the optional leading space of the next three
    if (letter(k)) return run(k, &Matcher::letter);
    if (number(k)) return run(k, &Matcher::number);
    if (other(k)) return run(k, &Matcher::other);
    return whitespace(i);
  }

  size_t match_llama3(size_t i) const {
    if (size_t end = contraction(i, true)) return end;
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (letter(i)) return run(i, &Matcher::letter);
    if (i < cps_.size() && !newline(i) && !number(i) && letter(i + 1)) return run(i + 1, &Matcher::letter);
    // \p{N}{1,3} (Qwen2: \p{N})
    if (number(i)) {
      const size_t limit = family_ == SplitFamily::kQwen2 ? 1 : 3;
      size_t j = i;
      while (j - i < limit && number(j)) ++j;
      return j;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    const size_t k = (cp(i) == ' ' && other(i + 1)) ? i + 1 : i;
    if (other(k)) return run(run(k, &Matcher::other), &Matcher::newline);
    // \s*[\r\n]+ : the whitespace run up to and including its last line break
    const size_t j = run(i, &Matcher::space);
    for (size_t m = j; m > i; --m)
      if (newline(m - 1)) return m;
    return whitespace(i);
  }

  std::string_view text_;
  SplitFamily family_;
  std::vector<uint32_t> cps_;
  std::vector<size_t> offsets_;
};

}  // namespace

std::vector<std::string_view> split_words(std::string_view text, SplitFamily family) {
  if (family != SplitFamily::kSmollm) return Matcher(text, family).split();
  // Each number character stands alone; the text between two of them is split as GPT-2 splits a whole
  // text (its last whitespace run sees the end, not the digit after it).
  std::vector<std::string_view> words;
  size_t begin = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t length = 1;
    const uint32_t c = unicode::decode(text, pos, &length);
    if (unicode::is_number(c)) {
      for (std::string_view w : Matcher(text.substr(begin, pos - begin), SplitFamily::kGpt2).split()) words.push_back(w);
      words.push_back(text.substr(pos, length));
      begin = pos + length;
    }
    pos += length;
  }
  for (std::string_view w : Matcher(text.substr(begin), SplitFamily::kGpt2).split()) words.push_back(w);
  return words;
}

}  // namespace strata
