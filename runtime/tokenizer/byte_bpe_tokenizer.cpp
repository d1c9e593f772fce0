// runtime/tokenizer/byte_bpe_tokenizer.cpp: byte-level BPE encoding with ranked merges (lowest rank
// first, ties to the left, as Hugging Face `tokenizers` applies them) and byte-alphabet decoding.
#include "runtime/tokenizer/byte_bpe_tokenizer.h"

#include <array>

#include "runtime/error.h"
#include "runtime/tokenizer/unicode.h"

namespace strata {

namespace {
struct ByteAlphabet {
  std::array<std::string, 256> chars;
  std::array<int32_t, 324> bytes;  // indexed by code point; the alphabet ends at U+0143
  ByteAlphabet() {
    bytes.fill(-1);
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      // Visible Latin-1 keeps its code point; control bytes, space and soft hyphen are moved up to
      // U+0100.. so no token ever holds whitespace or an invisible character.
      const bool visible = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t cp = visible ? b : next++;
      unicode::append_utf8(chars[b], cp);
      bytes[cp] = static_cast<int32_t>(b);
    }
  }
};

const ByteAlphabet& alphabet() {
  static const ByteAlphabet table;
  return table;
}
}  // namespace

const std::string& byte_level_char(unsigned char byte) { return alphabet().chars[byte]; }

int byte_level_byte(uint32_t cp) { return cp < alphabet().bytes.size() ? alphabet().bytes[cp] : -1; }

ByteBpeTokenizer::ByteBpeTokenizer(const TokenizerData& data)
    : Tokenizer(data), family_(split_family_from_name(data.pre_tokenizer)) {
  const auto n = static_cast<int32_t>(data_.tokens.size());
  for (int b = 0; b < 256; ++b) byte_ids_[b] = token_to_id(byte_level_char(static_cast<unsigned char>(b)));
  for (int32_t id = 0; id < n; ++id) {
    const std::string& piece = data_.tokens[static_cast<size_t>(id)];
    const TokenType t = type(id);
    if (t == TokenType::kControl || t == TokenType::kUnknown || t == TokenType::kUnused) continue;
    if (t == TokenType::kUserDefined) {  // added tokens are stored as plain text, not byte-level
      token_bytes_[id] = piece;
      continue;
    }
    std::string bytes;
    for (size_t pos = 0; pos < piece.size();) {
      size_t length = 1;
      const uint32_t cp = unicode::decode(piece, pos, &length);
      const int byte = byte_level_byte(cp);
      if (byte >= 0) bytes += static_cast<char>(byte);
      else bytes.append(piece, pos, length);  // outside the alphabet: keep it as written
      pos += length;
    }
    token_bytes_[id] = std::move(bytes);
  }
  ranks_ = bpe::MergeRanks(data_.merges, [&](std::string_view piece) { return token_to_id(piece); });
}

void ByteBpeTokenizer::encode_segment(std::string_view segment, bool, std::vector<int32_t>& out) const {
  for (std::string_view word : split_words(segment, family_)) encode_word(word, out);
}

void ByteBpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (data_.ignore_merges) {
    std::string mapped;
    for (char c : word) mapped += byte_level_char(static_cast<unsigned char>(c));
    const int32_t id = token_to_id(mapped);
    if (id >= 0 && type(id) == TokenType::kNormal) {
      out.push_back(id);
      return;
    }
  }
  std::vector<bpe::Symbol> symbols(word.size());
  for (size_t i = 0; i < word.size(); ++i)
    symbols[i] = {byte_ids_[static_cast<unsigned char>(word[i])], static_cast<uint32_t>(i), 1, 0, 0};
  bpe::merge(symbols,
             [&](const bpe::Symbol& left, const bpe::Symbol& right) { return ranks_.pair(left.id, right.id); });
  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
    const int32_t id = symbols[i].id;
    if (id >= 0) out.push_back(id);
    else if (data_.unk_id >= 0) out.push_back(data_.unk_id);  // a byte the vocabulary lacks
  }
}

}  // namespace strata
