// runtime/tokenizer/pretokenizer.h: the split regexes of byte-level BPE models, written out by hand
// (no regex engine): GPT-2, Llama-3, Qwen2, and SmolLM's digits-then-GPT-2. Each returns the words BPE then merges within.
#pragma once
#include <string_view>
#include <vector>

namespace strata {

enum class SplitFamily { kGpt2, kLlama3, kQwen2, kSmollm };

// "default"/"gpt2" -> kGpt2, "llama3"/"llama-bpe" -> kLlama3, "qwen2" -> kQwen2, "smollm" -> kSmollm
// (GGUF's tokenizer.ggml.pre names); anything else throws
// strata::Error (kFormat) listing the supported names.
SplitFamily split_family_from_name(std::string_view name);

// Splits `text` as the family's regex would with find-all (leftmost-first alternation, as Oniguruma
// and PCRE match it). The words cover the text exactly, in order; none is empty.
//   gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//           \s*[\r\n]+|\s+(?!\S)|\s+
//   qwen2:  as llama3 with \p{N} (one digit per word) instead of \p{N}{1,3}
//   smollm: every \p{N} a word of its own, then gpt2 within the text between them (Hugging Face's
//           Digits(individual_digits) before ByteLevel)
// Invalid UTF-8 bytes count as one "other" character each (neither letter, number nor space).
// (?i) folds ASCII only: the long s U+017F in "'ſ" is not taken for "'s" as Oniguruma would.
// The regex source text as Hugging Face tokenizer.json stores it in a Split pre-tokenizer (smollm: gpt2's,
// which its ByteLevel step applies).
std::string_view split_pattern(SplitFamily family);
const char* split_family_name(SplitFamily family);  // "gpt2", "llama3", "qwen2", "smollm"
// The family whose pattern is exactly `pattern`; false for any other regex.
bool split_family_from_pattern(std::string_view pattern, SplitFamily* family);

std::vector<std::string_view> split_words(std::string_view text, SplitFamily family);

}  // namespace strata
