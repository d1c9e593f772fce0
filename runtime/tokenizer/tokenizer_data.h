// runtime/tokenizer/tokenizer_data.h: a tokenizer's vocabulary as plain data, whatever file it came
// from (GGUF metadata, tokenizer.json, tokenizer.model, llama2.c tokenizer.bin). Formats fill it;
// runtime/tokenizer builds an encoder/decoder from it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace strata {

enum class TokenizerKind : uint8_t {
  kSentencePiece,  // Llama-2 style: scores, U+2581 for spaces, <0xXX> byte fallback
  kByteBpe,        // GPT-2 / Llama-3 style byte-level BPE with ranked merges
};

// Where a SentencePiece-style tokenizer puts its U+2581 prefix (when add_space_prefix is set). The text
// is first cut at special tokens found in it; "segment" means one piece of text between them.
enum class SpacePrefixRule : uint8_t {
  kAlways,          // sentencepiece / llama2.c / HF Prepend normalizer: every non-empty segment
  kIfMissing,       // HF Metaspace prepend_scheme "always": segments not already starting with U+2581
  kFirstIfMissing,  // HF Metaspace prepend_scheme "first": only a segment at the start of the text
};

// Token types as GGUF and SentencePiece number them.
enum class TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

struct TokenizerData {
  TokenizerKind kind = TokenizerKind::kSentencePiece;
  std::vector<std::string> tokens;  // id -> piece, as stored (U+2581 / byte-level unicode as in the file)
  std::vector<float> scores;        // SentencePiece scores (empty for BPE)
  std::vector<int32_t> types;       // TokenType per id (empty: all normal)
  std::vector<std::string> merges;  // BPE merges "a b", highest priority first
  std::string pre_tokenizer = "default";  // BPE split regex family: "gpt2", "llama3", "qwen2"
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  int32_t pad_id = -1;
  bool add_bos = true;
  bool add_eos = false;
  bool add_space_prefix = true;  // SentencePiece: prepend U+2581 to the text
  // llama2.c quirk: its tokenizer.bin stores BOS/EOS as "\n<s>\n" and decode strips a leading space
  // after BOS; set by the llama2.c reader.
  bool llama2c_decode = false;
  // Additions (tokenizer engineer): details that make encodings match the reference library exactly.
  SpacePrefixRule space_prefix_rule = SpacePrefixRule::kAlways;
  // sentencepiece normalizer_spec.remove_extra_whitespaces: drop leading/trailing spaces, collapse runs.
  bool remove_extra_whitespaces = false;
  // HF BPE ignore_merges (Llama-3): a pre-tokenized word that is itself a token is not split.
  bool ignore_merges = false;
};

}  // namespace strata
