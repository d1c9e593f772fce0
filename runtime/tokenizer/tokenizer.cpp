// runtime/tokenizer/tokenizer.cpp: what both tokenizer kinds share: validation, special-token
// matching before encoding, BOS/EOS, decoding with the leading-space rule, the streaming decoder.
#include "runtime/tokenizer/tokenizer.h"

#include <algorithm>

#include "runtime/error.h"
#include "runtime/tokenizer/byte_bpe_tokenizer.h"
#include "runtime/tokenizer/sentencepiece_tokenizer.h"
#include "runtime/tokenizer/unicode.h"

namespace strata {

namespace {
void validate(const TokenizerData& data) {
  const auto n = static_cast<int64_t>(data.tokens.size());
  STRATA_CHECK_KIND(ErrorKind::kFormat, n > 0, "tokenizer has no tokens");
  STRATA_CHECK_KIND(ErrorKind::kFormat, n < (int64_t{1} << 31), "tokenizer has too many tokens: ", n);
  STRATA_CHECK_KIND(ErrorKind::kFormat, data.scores.empty() || static_cast<int64_t>(data.scores.size()) == n,
                    "tokenizer has ", data.scores.size(), " scores for ", n, " tokens");
  STRATA_CHECK_KIND(ErrorKind::kFormat, data.types.empty() || static_cast<int64_t>(data.types.size()) == n,
                    "tokenizer has ", data.types.size(), " token types for ", n, " tokens");
  const std::pair<const char*, int32_t> ids[] = {
      {"bos_id", data.bos_id}, {"eos_id", data.eos_id}, {"unk_id", data.unk_id}, {"pad_id", data.pad_id}};
  for (const auto& [name, id] : ids)
    STRATA_CHECK_KIND(ErrorKind::kFormat, id >= -1 && id < n, "tokenizer ", name, " ", id,
                      " is outside the vocabulary of ", n, " tokens");
  STRATA_CHECK_KIND(ErrorKind::kFormat, !data.add_bos || data.bos_id >= 0,
                    "tokenizer asks to add BOS but has no bos_id");
  STRATA_CHECK_KIND(ErrorKind::kFormat, !data.add_eos || data.eos_id >= 0,
                    "tokenizer asks to add EOS but has no eos_id");
}
}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::create(const TokenizerData& data) {
  validate(data);
  if (data.kind == TokenizerKind::kByteBpe) return std::make_unique<ByteBpeTokenizer>(data);
  return std::make_unique<SentencePieceTokenizer>(data);
}

Tokenizer::Tokenizer(const TokenizerData& data) : data_(data), special_by_first_byte_(256) {
  const auto n = static_cast<int32_t>(data_.tokens.size());
  piece_index_.reserve(static_cast<size_t>(n));
  for (int32_t id = 0; id < n; ++id) {
    piece_index_.emplace(data_.tokens[id], id);  // keeps the first id of a duplicated piece
    const TokenType t = type(id);
    const bool matchable = t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown;
    if (matchable && !data_.tokens[id].empty())
      special_by_first_byte_[static_cast<unsigned char>(data_.tokens[id][0])].push_back(id);
  }
  for (auto& list : special_by_first_byte_)
    std::stable_sort(list.begin(), list.end(), [&](int32_t a, int32_t b) {
      return data_.tokens[a].size() > data_.tokens[b].size();
    });
  token_bytes_.resize(static_cast<size_t>(n));
}

TokenType Tokenizer::type(int32_t id) const {
  if (data_.types.empty()) return TokenType::kNormal;
  return static_cast<TokenType>(data_.types[static_cast<size_t>(id)]);
}

bool Tokenizer::is_special(int32_t id) const {
  if (!in_range(id)) return false;
  const TokenType t = type(id);
  return t == TokenType::kControl || t == TokenType::kUnknown;
}

int32_t Tokenizer::token_to_id(std::string_view piece) const {
  auto it = piece_index_.find(piece);
  return it == piece_index_.end() ? -1 : it->second;
}

const std::string& Tokenizer::id_to_piece(int32_t id) const {
  STRATA_CHECK(in_range(id), "token id ", id, " is outside the vocabulary of ", data_.tokens.size(), " tokens");
  return data_.tokens[static_cast<size_t>(id)];
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  if (add_special && data_.add_bos) ids.push_back(data_.bos_id);
  // Leftmost-longest match of special pieces, then the text between them is encoded normally.
  size_t segment_start = 0;
  if (parse_special) {
    for (size_t pos = 0; pos < text.size();) {
      int32_t found = -1;
      for (int32_t id : special_by_first_byte_[static_cast<unsigned char>(text[pos])]) {
        const std::string& piece = data_.tokens[static_cast<size_t>(id)];
        if (text.compare(pos, piece.size(), piece) == 0) {
          found = id;
          break;
        }
      }
      if (found < 0) {
        ++pos;
        continue;
      }
      if (pos > segment_start) encode_segment(text.substr(segment_start, pos - segment_start), segment_start == 0, ids);
      ids.push_back(found);
      pos += data_.tokens[static_cast<size_t>(found)].size();
      segment_start = pos;
    }
  }
  if (segment_start < text.size()) encode_segment(text.substr(segment_start), segment_start == 0, ids);
  if (add_special && data_.add_eos) ids.push_back(data_.eos_id);
  return ids;
}

std::string Tokenizer::decode_token(int32_t prev, int32_t id) const {
  if (!in_range(id)) return {};
  const std::string& bytes = token_bytes_[static_cast<size_t>(id)];
  if (strip_first_space_ && !bytes.empty() && bytes[0] == ' ') {
    const bool first_word = strip_only_after_bos_
                                ? (prev >= 0 && prev == data_.bos_id)
                                : (prev < 0 || is_special(prev));
    if (first_word) return bytes.substr(1);
  }
  return bytes;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  int32_t prev = -1;
  for (int32_t id : ids) {
    out += decode_token(prev, id);
    prev = id;
  }
  return out;
}

std::string TokenStreamDecoder::push(int32_t id) {
  pending_ += tokenizer_->decode_token(prev_, id);
  prev_ = id;
  const size_t ready = unicode::complete_prefix_length(pending_);
  std::string out = pending_.substr(0, ready);
  pending_.erase(0, ready);
  return out;
}

std::string TokenStreamDecoder::flush() {
  std::string out;
  out.swap(pending_);
  prev_ = -1;
  return out;
}

}  // namespace strata
