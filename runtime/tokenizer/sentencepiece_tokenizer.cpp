// runtime/tokenizer/sentencepiece_tokenizer.cpp: SentencePiece-style BPE as sentencepiece's
// bpe_model does it (and llama.cpp, llama2.c): best-scoring merge first, ties to the left.
#include "runtime/tokenizer/sentencepiece_tokenizer.h"

#include <cstdio>

#include "runtime/error.h"
#include "runtime/tokenizer/unicode.h"

namespace strata {

namespace {
constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581, what SentencePiece writes for ' '

// "<0x41>" -> 0x41; -1 for anything else.
int parse_byte_piece(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  int value = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = piece[i];
    int digit;
    if (c >= '0' && c <= '9') digit = c - '0';
    else if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    else if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    else return -1;
    value = value * 16 + digit;
  }
  return value;
}

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0;;) {
    const size_t hit = text.find(from, pos);
    if (hit == std::string_view::npos) {
      out.append(text.substr(pos));
      return out;
    }
    out.append(text.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
}

// sentencepiece's remove_extra_whitespaces: no leading or trailing spaces, runs collapsed to one.
std::string collapse_spaces(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
    out += c;
  }
  if (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}
}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(const TokenizerData& data) : Tokenizer(data) {
  const auto n = static_cast<int32_t>(data_.tokens.size());
  for (int& id : byte_ids_) id = -1;
  for (int32_t id = 0; id < n; ++id) {
    const std::string& piece = data_.tokens[static_cast<size_t>(id)];
    TokenType t = type(id);
    const int byte = parse_byte_piece(piece);
    // Files without types (llama2.c) still mark byte tokens by their spelling.
    if (data_.types.empty() && byte >= 0) t = TokenType::kByte;
    switch (t) {
      case TokenType::kByte:
        if (byte >= 0) {
          if (byte_ids_[byte] < 0) byte_ids_[byte] = id;
          token_bytes_[id] = std::string(1, static_cast<char>(byte));
        }
        break;
      case TokenType::kControl:
      case TokenType::kUnknown:
      case TokenType::kUnused:
        break;  // decode to nothing
      default:
        mergeable_.emplace(piece, id);
        token_bytes_[id] = replace_all(piece, kSpaceMark, " ");
    }
  }
  // A merges list (Hugging Face tokenizer.json) decides the order exactly as `tokenizers` would;
  // without one the scores do (sentencepiece, GGUF, llama2.c).
  use_ranks_ = !data_.merges.empty();
  ranks_ = bpe::MergeRanks(data_.merges, [&](std::string_view piece) { return token_to_id(piece); });
  strip_first_space_ = data_.add_space_prefix;
  strip_only_after_bos_ = data_.llama2c_decode;
}

void SentencePieceTokenizer::encode_segment(std::string_view segment, bool at_text_start,
                                            std::vector<int32_t>& out) const {
  std::string collapsed;
  if (data_.remove_extra_whitespaces) {
    collapsed = collapse_spaces(segment);
    segment = collapsed;
  }
  if (segment.empty()) return;
  std::string text = replace_all(segment, " ", kSpaceMark);
  if (data_.add_space_prefix) {
    const bool has_mark = text.compare(0, kSpaceMark.size(), kSpaceMark) == 0;
    bool prefix = true;
    if (data_.space_prefix_rule == SpacePrefixRule::kIfMissing) prefix = !has_mark;
    if (data_.space_prefix_rule == SpacePrefixRule::kFirstIfMissing) prefix = at_text_start && !has_mark;
    if (prefix) text.insert(0, kSpaceMark);
  }

  std::vector<bpe::Symbol> symbols;
  symbols.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    const size_t length = unicode::char_length(text, pos);
    auto it = mergeable_.find(std::string_view(text).substr(pos, length));
    symbols.push_back({it == mergeable_.end() ? -1 : it->second, static_cast<uint32_t>(pos),
                       static_cast<uint32_t>(length), 0, 0});
    pos += length;
  }
  const std::string_view view = text;
  bpe::merge(symbols, [&](const bpe::Symbol& left, const bpe::Symbol& right) {
    bpe::PairMerge m;
    if (use_ranks_) return ranks_.pair(left.id, right.id);
    auto it = mergeable_.find(view.substr(left.start, left.length + right.length));
    if (it == mergeable_.end()) return m;
    const double score = data_.scores.empty() ? 0.0 : data_.scores[static_cast<size_t>(it->second)];
    return bpe::PairMerge{true, score, it->second};
  });

  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
    const bpe::Symbol& s = symbols[i];
    if (s.id >= 0) {
      out.push_back(s.id);
      continue;
    }
    // Byte fallback, one token per UTF-8 byte; <unk> where the vocabulary has no byte tokens.
    for (uint32_t b = 0; b < s.length; ++b) {
      const int32_t byte_id = byte_ids_[static_cast<unsigned char>(text[s.start + b])];
      if (byte_id >= 0) {
        out.push_back(byte_id);
      } else if (data_.unk_id >= 0) {
        out.push_back(data_.unk_id);
        break;
      }
    }
  }
}

}  // namespace strata
