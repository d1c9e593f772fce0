// runtime/tokenizer/tokenizer_json_writer.cpp: writes TokenizerData as a Hugging Face tokenizer.json
// that `tokenizers` loads and encodes like Tokenizer does: SentencePiece-style data becomes BPE with
// byte_fallback and merges derived from the scores; byte-level data keeps its merges and split regex.
#include <algorithm>
#include <boost/json.hpp>
#include <fstream>
#include <tuple>

#include "runtime/error.h"
#include "runtime/tokenizer/bpe_merge.h"
#include "runtime/tokenizer/pretokenizer.h"
#include "runtime/tokenizer/tokenizer_files.h"
#include "runtime/tokenizer/unicode.h"

namespace strata {

namespace json = boost::json;

namespace {
constexpr const char* kSpaceMark = "\xE2\x96\x81";

TokenType type_of(const TokenizerData& data, size_t id) {
  return data.types.empty() ? TokenType::kNormal : static_cast<TokenType>(data.types[id]);
}

bool mergeable(TokenType t) { return t == TokenType::kNormal || t == TokenType::kUserDefined; }

// Every split of every piece into two pieces, ordered as the scores rank the merged piece: with these
// merges, rank-ordered BPE (tokenizers) merges in the same order as score-ordered BPE (sentencepiece).
std::vector<std::string> merges_from_scores(const TokenizerData& data) {
  bpe::PieceIndex index;
  for (size_t id = 0; id < data.tokens.size(); ++id)
    if (mergeable(type_of(data, id))) index.emplace(data.tokens[id], static_cast<int32_t>(id));
  std::vector<std::tuple<float, int32_t, int32_t, int32_t>> found;  // -score, merged, left, right
  for (size_t id = 0; id < data.tokens.size(); ++id) {
    if (!mergeable(type_of(data, id))) continue;
    const std::string_view piece = data.tokens[id];
    for (size_t k = unicode::char_length(piece, 0); k < piece.size(); k += unicode::char_length(piece, k)) {
      auto left = index.find(piece.substr(0, k));
      auto right = index.find(piece.substr(k));
      if (left == index.end() || right == index.end()) continue;
      const float score = data.scores.empty() ? 0.0f : data.scores[id];
      found.emplace_back(-score, static_cast<int32_t>(id), left->second, right->second);
    }
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> merges;
  merges.reserve(found.size());
  for (const auto& [neg_score, merged, left, right] : found)
    merges.push_back(data.tokens[left] + " " + data.tokens[right]);
  return merges;
}

json::object special_token_entry(const std::string& piece) {
  return json::object{{"id", piece}, {"ids", json::array{}}, {"tokens", json::array{piece}}};
}

json::value post_processor(const TokenizerData& data) {
  if (!data.add_bos && !data.add_eos) return nullptr;
  json::array single, pair;
  json::object specials;
  auto add_special = [&](int32_t id, int type_id, json::array& out) {
    const std::string& piece = data.tokens[id];
    out.push_back(json::object{{"SpecialToken", json::object{{"id", piece}, {"type_id", type_id}}}});
    json::object entry = special_token_entry(piece);
    entry["ids"].as_array().push_back(id);
    specials[piece] = std::move(entry);
  };
  auto sequence = [](const char* which, int type_id) {
    return json::object{{"Sequence", json::object{{"id", which}, {"type_id", type_id}}}};
  };
  if (data.add_bos) add_special(data.bos_id, 0, single);
  single.push_back(sequence("A", 0));
  if (data.add_eos) add_special(data.eos_id, 0, single);
  if (data.add_bos) add_special(data.bos_id, 0, pair);
  pair.push_back(sequence("A", 0));
  if (data.add_eos) add_special(data.eos_id, 0, pair);
  if (data.add_bos) add_special(data.bos_id, 1, pair);
  pair.push_back(sequence("B", 1));
  if (data.add_eos) add_special(data.eos_id, 1, pair);
  return json::object{{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
}
}  // namespace

std::string tokenizer_json_text(const TokenizerData& data) {
  STRATA_CHECK(!data.tokens.empty(), "write_tokenizer_json: the tokenizer has no tokens");
  const bool sentencepiece = data.kind == TokenizerKind::kSentencePiece;
  json::object vocab;
  json::array added;
  bool space_in_piece = false;
  for (size_t id = 0; id < data.tokens.size(); ++id) {
    const std::string& piece = data.tokens[id];
    STRATA_CHECK(!vocab.contains(piece), "write_tokenizer_json: piece '", piece, "' appears twice (ids ",
                 vocab.at(piece).as_int64(), " and ", id, "); tokenizer.json needs unique pieces");
    vocab[piece] = static_cast<int64_t>(id);
    space_in_piece |= piece.find(' ') != std::string::npos;
    const TokenType t = type_of(data, id);
    if (t == TokenType::kControl || t == TokenType::kUnknown || t == TokenType::kUserDefined)
      added.push_back(json::object{{"id", static_cast<int64_t>(id)}, {"content", piece}, {"single_word", false},
                                   {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                                   {"special", t != TokenType::kUserDefined}});
  }
  const std::vector<std::string> merge_list =
      (sentencepiece && data.merges.empty()) ? merges_from_scores(data) : data.merges;
  json::array merges;
  for (const std::string& m : merge_list) {
    if (!space_in_piece) {
      merges.push_back(json::string(m));
      continue;
    }
    // Pieces with spaces need the [left, right] form; take the split whose halves both exist.
    for (size_t s = m.find(' '); s != std::string::npos; s = m.find(' ', s + 1)) {
      if (vocab.contains(m.substr(0, s)) && vocab.contains(m.substr(s + 1))) {
        merges.push_back(json::array{json::string(m.substr(0, s)), json::string(m.substr(s + 1))});
        break;
      }
    }
  }

  json::object model{{"type", "BPE"},
                     {"dropout", nullptr},
                     {"unk_token", data.unk_id >= 0 ? json::value(data.tokens[data.unk_id]) : json::value(nullptr)},
                     {"continuing_subword_prefix", nullptr},
                     {"end_of_word_suffix", nullptr},
                     {"fuse_unk", sentencepiece},
                     {"byte_fallback", sentencepiece},
                     {"ignore_merges", data.ignore_merges}};
  model["vocab"] = std::move(vocab);
  model["merges"] = std::move(merges);

  json::value normalizer = nullptr, pre_tokenizer = nullptr, decoder = nullptr;
  if (sentencepiece) {
    json::array decoders{json::object{{"type", "Replace"}, {"pattern", json::object{{"String", kSpaceMark}}}, {"content", " "}},
                         json::object{{"type", "ByteFallback"}}, json::object{{"type", "Fuse"}}};
    if (data.add_space_prefix)
      decoders.push_back(json::object{{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    decoder = json::object{{"type", "Sequence"}, {"decoders", decoders}};
    if (data.add_space_prefix && data.space_prefix_rule == SpacePrefixRule::kAlways) {
      normalizer = json::object{
          {"type", "Sequence"},
          {"normalizers",
           json::array{json::object{{"type", "Prepend"}, {"prepend", kSpaceMark}},
                       json::object{{"type", "Replace"}, {"pattern", json::object{{"String", " "}}}, {"content", kSpaceMark}}}}};
    } else {
      const char* scheme = !data.add_space_prefix ? "never"
                           : data.space_prefix_rule == SpacePrefixRule::kFirstIfMissing ? "first" : "always";
      pre_tokenizer = json::object{{"type", "Metaspace"}, {"replacement", kSpaceMark}, {"prepend_scheme", scheme}, {"split", false}};
    }
  } else {
    const SplitFamily family = split_family_from_name(data.pre_tokenizer);
    json::object byte_level{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                            {"use_regex", family == SplitFamily::kGpt2 || family == SplitFamily::kSmollm}};
    decoder = byte_level;
    if (family == SplitFamily::kGpt2) {
      pre_tokenizer = byte_level;
    } else if (family == SplitFamily::kSmollm) {
      json::object digits{{"type", "Digits"}, {"individual_digits", true}};
      pre_tokenizer = json::object{{"type", "Sequence"}, {"pretokenizers", json::array{digits, byte_level}}};
    } else {
      json::object split{{"type", "Split"}, {"pattern", json::object{{"Regex", split_pattern(family)}}},
                         {"behavior", "Isolated"}, {"invert", false}};
      pre_tokenizer = json::object{{"type", "Sequence"}, {"pretokenizers", json::array{split, byte_level}}};
    }
  }
  json::object root{{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}};
  root["added_tokens"] = std::move(added);
  root["normalizer"] = std::move(normalizer);
  root["pre_tokenizer"] = std::move(pre_tokenizer);
  root["post_processor"] = post_processor(data);
  root["decoder"] = std::move(decoder);
  root["model"] = std::move(model);
  return json::serialize(root);
}

void write_tokenizer_json(const TokenizerData& data, const std::string& path) {
  const std::string text = tokenizer_json_text(data);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) STRATA_THROW(ErrorKind::kIo, "cannot create tokenizer.json '", path, "'");
  out << text;
  out.close();
  if (!out) STRATA_THROW(ErrorKind::kIo, "cannot write tokenizer.json '", path, "' (disk full?)");
}

}  // namespace strata
