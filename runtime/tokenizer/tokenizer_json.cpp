// runtime/tokenizer/tokenizer_json.cpp: reads Hugging Face tokenizer.json (BPE models only) and
// tokenizer_config.json into TokenizerData. Unsupported pipelines fail loudly rather than tokenize
// differently from `tokenizers`.
#include <boost/json.hpp>

#include "runtime/error.h"
#include "runtime/tokenizer/file_bytes.h"
#include "runtime/tokenizer/pretokenizer.h"
#include "runtime/tokenizer/tokenizer_files.h"

namespace strata {

namespace json = boost::json;

namespace {
constexpr int64_t kMaxTokens = int64_t{1} << 24;  // far above any real vocabulary; bounds allocations

[[noreturn]] void bad(const std::string& name, const std::string& what) {
  STRATA_THROW(ErrorKind::kFormat, name, ": ", what);
}

json::value parse_json(std::string_view text, const std::string& name) {
  boost::system::error_code ec;
  json::value root = json::parse(text, ec);
  if (ec) bad(name, cat("not valid JSON (", ec.message(), ")"));
  if (!root.is_object()) bad(name, "the top level is not a JSON object");
  return root;
}

const json::value* field(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  return (it == o.end() || it->value().is_null()) ? nullptr : &it->value();
}

std::string_view string_field(const json::object& o, std::string_view key) {
  const json::value* v = field(o, key);
  return (v && v->is_string()) ? std::string_view(v->get_string()) : std::string_view();
}

bool bool_field(const json::object& o, std::string_view key, bool fallback) {
  const json::value* v = field(o, key);
  return (v && v->is_bool()) ? v->get_bool() : fallback;
}

// Calls `fn` on each component of a (possibly Sequence) pre_tokenizer / normalizer / post_processor.
template <typename Fn>
void for_each_component(const json::value* v, const std::string& name, const char* what, Fn&& fn) {
  if (v == nullptr) return;
  if (!v->is_object()) bad(name, cat(what, " is not an object"));
  const json::object& o = v->get_object();
  if (string_field(o, "type") == "Sequence") {
    for (const char* key : {"pretokenizers", "normalizers", "processors", "decoders"}) {
      if (const json::value* list = field(o, key)) {
        if (!list->is_array()) bad(name, cat(what, ".", key, " is not an array"));
        for (const json::value& item : list->get_array()) for_each_component(&item, name, what, fn);
      }
    }
    return;
  }
  fn(o);
}

int32_t token_id(const json::value& v, const std::string& name, const std::string& where) {
  if (!v.is_int64() && !v.is_uint64()) bad(name, cat(where, " is not an integer id"));
  const int64_t id = v.is_int64() ? v.get_int64() : static_cast<int64_t>(std::min<uint64_t>(v.get_uint64(), kMaxTokens));
  if (id < 0 || id >= kMaxTokens) bad(name, cat(where, " has id ", id, ", outside [0, ", kMaxTokens, ")"));
  return static_cast<int32_t>(id);
}

// tokenizer_config.json writes tokens as "<s>" or as {"content": "<s>", ...}.
std::string config_token(const json::object& config, std::string_view key) {
  const json::value* v = field(config, key);
  if (v == nullptr) return {};
  if (v->is_string()) return std::string(v->get_string());
  if (v->is_object()) return std::string(string_field(v->get_object(), "content"));
  return {};
}

void read_vocabulary(const json::object& root, const json::object& model, const std::string& name,
                     TokenizerData& data) {
  const json::value* vocab = field(model, "vocab");
  if (vocab == nullptr || !vocab->is_object()) bad(name, "model.vocab is missing or not an object");
  std::vector<std::pair<int32_t, std::string>> entries;
  std::vector<std::pair<int32_t, bool>> added;  // id, special
  for (const auto& kv : vocab->get_object())
    entries.emplace_back(token_id(kv.value(), name, cat("model.vocab entry '", std::string(kv.key()), "'")),
                         std::string(kv.key()));
  if (const json::value* list = field(root, "added_tokens")) {
    if (!list->is_array()) bad(name, "added_tokens is not an array");
    for (const json::value& item : list->get_array()) {
      if (!item.is_object()) bad(name, "an added_tokens entry is not an object");
      const json::object& t = item.get_object();
      const json::value* id = field(t, "id");
      const json::value* content = field(t, "content");
      if (id == nullptr || content == nullptr || !content->is_string())
        bad(name, "an added_tokens entry lacks an integer id or a string content");
      const int32_t i = token_id(*id, name, cat("added token '", std::string(content->get_string()), "'"));
      entries.emplace_back(i, std::string(content->get_string()));
      added.emplace_back(i, bool_field(t, "special", false));
    }
  }
  int32_t max_id = -1;
  for (const auto& e : entries) max_id = std::max(max_id, e.first);
  if (max_id < 0) bad(name, "model.vocab is empty");
  data.tokens.assign(static_cast<size_t>(max_id) + 1, std::string());
  std::vector<bool> seen(data.tokens.size(), false);
  for (auto& [id, piece] : entries) {
    if (seen[id] && data.tokens[id] != piece)
      bad(name, cat("token id ", id, " is given to both '", data.tokens[id], "' and '", piece, "'"));
    seen[id] = true;
    data.tokens[id] = std::move(piece);
  }
  for (size_t id = 0; id < seen.size(); ++id)
    if (!seen[id]) bad(name, cat("token id ", id, " has no piece (ids must run from 0 to ", max_id, ")"));
  data.types.assign(data.tokens.size(), static_cast<int32_t>(TokenType::kNormal));
  for (const auto& [id, special] : added)
    data.types[id] = static_cast<int32_t>(special ? TokenType::kControl : TokenType::kUserDefined);
}

void read_merges(const json::object& model, const std::string& name, TokenizerData& data) {
  const json::value* merges = field(model, "merges");
  if (merges == nullptr) return;
  if (!merges->is_array()) bad(name, "model.merges is not an array");
  for (const json::value& m : merges->get_array()) {
    if (m.is_string()) {
      data.merges.emplace_back(m.get_string());
    } else if (m.is_array() && m.get_array().size() == 2 && m.get_array()[0].is_string() &&
               m.get_array()[1].is_string()) {
      data.merges.push_back(cat(std::string(m.get_array()[0].get_string()), " ",
                                std::string(m.get_array()[1].get_string())));
    } else {
      bad(name, cat("model.merges entry ", data.merges.size(), " is neither \"a b\" nor [\"a\", \"b\"]"));
    }
  }
}

// Normalizers that change nothing we model: Prepend/Replace are how older Llama files spell the space
// prefix; NFC is accepted without being applied (texts are nearly always NFC already).
void read_normalizer(const json::object& root, const std::string& name, bool* prepends) {
  for_each_component(field(root, "normalizer"), name, "normalizer", [&](const json::object& n) {
    const std::string_view type = string_field(n, "type");
    if (type == "Prepend") {
      if (string_field(n, "prepend") != "\xE2\x96\x81") bad(name, "normalizer Prepend of something other than U+2581");
      *prepends = true;
    } else if (type == "Replace") {
      const json::value* pattern = field(n, "pattern");
      const bool spaces = pattern && pattern->is_object() && string_field(pattern->get_object(), "String") == " " &&
                          string_field(n, "content") == "\xE2\x96\x81";
      if (!spaces) bad(name, "unsupported normalizer Replace (only ' ' -> U+2581 is supported)");
    } else if (type != "NFC") {
      bad(name, cat("unsupported normalizer '", std::string(type), "' (supported: Prepend, Replace, NFC)"));
    }
  });
}

void read_pre_tokenizer(const json::object& root, const std::string& name, TokenizerData& data,
                        bool* byte_level) {
  bool split_seen = false;
  for_each_component(field(root, "pre_tokenizer"), name, "pre_tokenizer", [&](const json::object& p) {
    const std::string_view type = string_field(p, "type");
    if (type == "ByteLevel") {
      *byte_level = true;
      if (bool_field(p, "add_prefix_space", false))
        bad(name, "ByteLevel add_prefix_space=true is not supported");
      if (bool_field(p, "use_regex", true) && !split_seen) data.pre_tokenizer = "gpt2";
    } else if (type == "Split") {
      const json::value* pattern = field(p, "pattern");
      std::string_view regex;
      if (pattern && pattern->is_object()) regex = string_field(pattern->get_object(), "Regex");
      SplitFamily family;
      if (!split_family_from_pattern(regex, &family))
        bad(name, cat("unsupported Split pre-tokenizer pattern '", std::string(regex),
                      "'; supported: the GPT-2, Llama-3 and Qwen2 regexes"));
      data.pre_tokenizer = split_family_name(family);
      split_seen = true;
    } else if (type == "Digits") {
      // Digits one by one before a GPT-2 ByteLevel split: SmolLM's pre-tokenizer.
      if (!bool_field(p, "individual_digits", false)) bad(name, "Digits without individual_digits is not supported");
      data.pre_tokenizer = "smollm";
      split_seen = true;
    } else if (type == "Metaspace") {
      if (string_field(p, "replacement") != "\xE2\x96\x81") bad(name, "Metaspace replacement is not U+2581");
      const std::string_view scheme = string_field(p, "prepend_scheme");
      data.add_space_prefix = scheme.empty() ? bool_field(p, "add_prefix_space", true) : scheme != "never";
      data.space_prefix_rule = scheme == "first" ? SpacePrefixRule::kFirstIfMissing : SpacePrefixRule::kIfMissing;
    } else {
      bad(name, cat("unsupported pre_tokenizer '", std::string(type), "' (supported: ByteLevel, Split, Digits, Metaspace)"));
    }
  });
}

// TemplateProcessing "single": a SpecialToken first means BOS, last means EOS.
void read_post_processor(const json::object& root, const std::string& name, TokenizerData& data) {
  data.add_bos = false;
  data.add_eos = false;
  for_each_component(field(root, "post_processor"), name, "post_processor", [&](const json::object& p) {
    if (string_field(p, "type") != "TemplateProcessing") return;
    const json::value* single = field(p, "single");
    if (single == nullptr || !single->is_array()) bad(name, "post_processor.single is not an array");
    const json::array& items = single->get_array();
    auto special_id = [&](const json::value& item) -> int32_t {
      if (!item.is_object()) return -1;
      const json::value* s = field(item.get_object(), "SpecialToken");
      if (s == nullptr || !s->is_object()) return -1;
      const std::string piece(string_field(s->get_object(), "id"));
      for (size_t id = 0; id < data.tokens.size(); ++id)
        if (data.tokens[id] == piece) return static_cast<int32_t>(id);
      bad(name, cat("post_processor names special token '", piece, "', which is not in the vocabulary"));
    };
    if (!items.empty() && special_id(items.front()) >= 0) {
      data.add_bos = true;
      data.bos_id = special_id(items.front());
    }
    if (items.size() > 1 && special_id(items.back()) >= 0) {
      data.add_eos = true;
      data.eos_id = special_id(items.back());
    }
  });
}

int32_t find_piece(const TokenizerData& data, std::string_view piece) {
  if (piece.empty()) return -1;
  for (size_t id = 0; id < data.tokens.size(); ++id)
    if (data.tokens[id] == piece) return static_cast<int32_t>(id);
  return -1;
}
}  // namespace

TokenizerData parse_tokenizer_json(std::string_view json_text, const std::string& name,
                                   std::string_view config_text, const std::string& config_name) {
  const json::value root_value = parse_json(json_text, name);
  const json::object& root = root_value.get_object();
  const json::value* model_value = field(root, "model");
  if (model_value == nullptr || !model_value->is_object()) bad(name, "'model' is missing or not an object");
  const json::object& model = model_value->get_object();
  const std::string_view model_type = string_field(model, "type");
  if (model_type != "BPE" && !(model_type.empty() && field(model, "merges")))
    bad(name, cat("model.type is '", std::string(model_type), "'; only BPE tokenizers are supported"));

  TokenizerData data;
  read_vocabulary(root, model, name, data);
  read_merges(model, name, data);
  data.ignore_merges = bool_field(model, "ignore_merges", false);
  bool prepends = false;
  bool byte_level = false;
  data.add_space_prefix = false;
  read_normalizer(root, name, &prepends);
  read_pre_tokenizer(root, name, data, &byte_level);
  if (prepends) {
    data.add_space_prefix = true;
    data.space_prefix_rule = SpacePrefixRule::kAlways;
  }
  const bool byte_fallback = bool_field(model, "byte_fallback", false);
  if (byte_level && !byte_fallback) {
    data.kind = TokenizerKind::kByteBpe;
    if (data.pre_tokenizer == "default") data.pre_tokenizer = "gpt2";
  } else if (byte_fallback || data.add_space_prefix) {
    data.kind = TokenizerKind::kSentencePiece;
    for (size_t id = 0; id < data.tokens.size(); ++id) {
      const std::string& p = data.tokens[id];
      if (data.types[id] == static_cast<int32_t>(TokenType::kNormal) && p.size() == 6 && p.rfind("<0x", 0) == 0 &&
          p[5] == '>')
        data.types[id] = static_cast<int32_t>(TokenType::kByte);
    }
  } else {
    bad(name, "BPE model is neither byte-level (ByteLevel pre-tokenizer) nor SentencePiece-style "
              "(byte_fallback or Metaspace); this pipeline is not supported");
  }
  data.unk_id = find_piece(data, string_field(model, "unk_token"));
  if (data.unk_id >= 0) data.types[data.unk_id] = static_cast<int32_t>(TokenType::kUnknown);
  read_post_processor(root, name, data);

  if (!config_text.empty()) {
    const std::string& cname = config_name.empty() ? name : config_name;
    const json::value config_value = parse_json(config_text, cname);
    const json::object& config = config_value.get_object();
    data.add_bos = bool_field(config, "add_bos_token", data.add_bos);
    data.add_eos = bool_field(config, "add_eos_token", data.add_eos);
    const std::pair<const char*, int32_t*> specials[] = {
        {"bos_token", &data.bos_id}, {"eos_token", &data.eos_id}, {"unk_token", &data.unk_id}, {"pad_token", &data.pad_id}};
    for (const auto& [key, id] : specials) {
      const std::string piece = config_token(config, key);
      if (piece.empty()) continue;
      const int32_t found = find_piece(data, piece);
      if (found < 0) bad(cname, cat(key, " '", piece, "' is not in the vocabulary of ", name));
      *id = found;
    }
  }
  // Without a config, fall back to the conventional names of each family.
  if (data.bos_id < 0)
    for (const char* piece : {"<s>", "<|begin_of_text|>"})
      if ((data.bos_id = find_piece(data, piece)) >= 0) break;
  if (data.eos_id < 0)
    for (const char* piece : {"</s>", "<|end_of_text|>", "<|endoftext|>"})
      if ((data.eos_id = find_piece(data, piece)) >= 0) break;
  if (data.add_bos && data.bos_id < 0) bad(name, "add_bos_token is set but there is no BOS token");
  if (data.add_eos && data.eos_id < 0) bad(name, "add_eos_token is set but there is no EOS token");
  return data;
}

TokenizerData load_tokenizer_json(const std::string& path, const std::string& config_path) {
  const std::string text = read_file_bytes(path, "tokenizer.json");
  const std::string config = config_path.empty() ? std::string() : read_file_bytes(config_path, "tokenizer_config.json");
  return parse_tokenizer_json(text, path, config, config_path);
}

}  // namespace strata
