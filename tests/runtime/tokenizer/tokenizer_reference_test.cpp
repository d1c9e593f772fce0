// tests/runtime/tokenizer/tokenizer_reference_test.cpp: encodings and decodings checked against Hugging
// Face `tokenizers` and `sentencepiece` (fixtures) and against llama2.c run.c's own output (stories260K).
#include <gtest/gtest.h>

#include "runtime/tokenizer/pretokenizer.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/tokenizer_files.h"
#include "runtime/tokenizer/unicode.h"
#include "tests/runtime/tokenizer/tokenizer_fixture.h"

namespace strata {
namespace {

using test::ids_of;
using test::str_of;

std::string stories_hf() { return test::shared_models() + "/stories260K-hf"; }
std::string stories_bin() { return test::shared_models() + "/stories260K/tok512.bin"; }

// Streaming decode must equal the full decode, and emit only whole UTF-8 characters until flush().
void expect_streaming_matches(const Tokenizer& tok, const std::vector<int32_t>& ids, const std::string& label) {
  TokenStreamDecoder stream(tok);
  const std::string full = tok.decode(ids);
  const bool valid = unicode::sanitize(full) == full;  // invalid bytes are passed on as they are
  std::string text;
  for (int32_t id : ids) {
    const std::string piece = stream.push(id);
    if (valid) {
      EXPECT_EQ(unicode::sanitize(piece), piece) << label << ": streamed a partial character";
    }
    text += piece;
  }
  text += stream.flush();
  EXPECT_EQ(text, full) << label;
}

class Stories260K : public ::testing::Test {
 protected:
  void SetUp() override {
    STRATA_REQUIRE_FILE(stories_hf() + "/tokenizer.json");
    STRATA_REQUIRE_FILE(stories_bin());
    json_ = Tokenizer::create(load_tokenizer_json(stories_hf() + "/tokenizer.json", stories_hf() + "/tokenizer_config.json"));
    model_ = Tokenizer::create(load_sentencepiece_model(stories_hf() + "/tokenizer.model"));
    bin_ = Tokenizer::create(load_llama2c_tokenizer(stories_bin(), 512));
    fixture_ = test::read_json(test::fixture_dir() + "/stories260K.json");
  }
  std::unique_ptr<Tokenizer> json_, model_, bin_;
  boost::json::value fixture_;
};

TEST_F(Stories260K, OnceUponATimeFromAllThreeFiles) {
  const std::vector<int32_t> expected = {1, 403, 407, 261, 378};  // run.c and HF agree on this
  EXPECT_EQ(json_->encode("Once upon a time"), expected);
  EXPECT_EQ(model_->encode("Once upon a time"), expected);
  EXPECT_EQ(bin_->encode("Once upon a time"), expected);
  for (const Tokenizer* t : {json_.get(), model_.get(), bin_.get()}) {
    EXPECT_EQ(t->vocab_size(), 512);
    EXPECT_EQ(t->bos_id(), 1);
    EXPECT_EQ(t->eos_id(), 2);
    EXPECT_EQ(t->token_to_id("<s>"), 1);
    EXPECT_TRUE(t->is_special(1));
    EXPECT_FALSE(t->is_special(403));
  }
}

TEST_F(Stories260K, MatchesHuggingFaceTokenizersOnTokenizerJson) {
  for (const auto& c : fixture_.at("cases").as_array()) {
    const std::string text = str_of(c.at("text"));
    const auto ids = ids_of(c.at("hf_ids"));
    EXPECT_EQ(json_->encode(text), ids) << "text: '" << text << "'";
    EXPECT_EQ(json_->decode(ids), str_of(c.at("hf_decoded"))) << "text: '" << text << "'";
    expect_streaming_matches(*json_, ids, text);
  }
}

TEST_F(Stories260K, MatchesSentencepieceOnTokenizerModel) {
  for (const auto& c : fixture_.at("cases").as_array()) {
    const std::string text = str_of(c.at("text"));
    EXPECT_EQ(model_->encode(text), ids_of(c.at("sp_ids"))) << "text: '" << text << "'";
  }
}

// run.c does not collapse whitespace; sentencepiece with remove_extra_whitespaces off is its reference.
TEST_F(Stories260K, Tok512BinEncodesLikeRunC) {
  for (const auto& c : fixture_.at("cases").as_array()) {
    const std::string text = str_of(c.at("text"));
    const auto ids = ids_of(c.at("sp_raw_ids"));
    EXPECT_EQ(bin_->encode(text), ids) << "text: '" << text << "'";
    EXPECT_EQ(bin_->decode(bin_->encode(text)), text) << "llama2.c decode strips only the BOS space";
    expect_streaming_matches(*bin_, ids, text);
  }
}

// The header of run_c_greedy_ids.txt quotes what run.c printed for these ids with the real tok512.bin.
TEST_F(Stories260K, DecodesRunCGreedyOutput) {
  const std::string path = test::shared_models() + "/stories260K/run_c_greedy_ids.txt";
  STRATA_REQUIRE_FILE(path);
  std::istringstream in(test::read_text(path));
  std::vector<int32_t> ids = {1};  // run.c's prompt is BOS
  std::string expected, line;
  bool in_story = false;
  while (std::getline(in, line)) {
    if (line.rfind("#", 0) != 0) {
      std::istringstream nums(line);
      for (int32_t id; nums >> id;) ids.push_back(id);
      continue;
    }
    if (line.find("The same run with the real tokenizer") != std::string::npos) {
      in_story = true;
    } else if (in_story && line.rfind("#   ", 0) == 0) {
      expected += (expected.empty() ? "" : "\n") + line.substr(4);
    } else if (in_story && line.find("(the story") == std::string::npos) {
      in_story = false;
    }
  }
  ASSERT_EQ(ids.size(), 257u);
  ASSERT_GT(expected.size(), 400u) << "could not find run.c's text in " << path;
  for (const Tokenizer* t : {json_.get(), model_.get(), bin_.get()}) {
    EXPECT_EQ(t->decode(ids), expected);
    expect_streaming_matches(*t, ids, "run.c greedy");
  }
  // And back: run.c's text encodes to the same ids with every file (it has no runs of spaces).
  EXPECT_EQ(bin_->encode(expected), ids);
  EXPECT_EQ(json_->encode(expected), ids);
  EXPECT_EQ(model_->encode(expected), ids);
}

TEST_F(Stories260K, SpecialTokensInTextFollowHuggingFace) {
  // tokenizers matches added tokens in the text; parse_special=false spells them out instead.
  EXPECT_EQ(json_->encode("x <s> y"), (std::vector<int32_t>{1, 410, 444, 410, 1, 348}));
  EXPECT_EQ(bin_->encode("<s>", true, false), model_->encode("<s>", true, false));
  EXPECT_NE(bin_->encode("<s>", true, false), (std::vector<int32_t>{1, 1}));
}

class ByteLevelBpe : public ::testing::TestWithParam<std::string> {};

TEST_P(ByteLevelBpe, MatchesHuggingFaceTokenizers) {
  const std::string name = GetParam();
  const std::string dir = test::fixture_dir();
  const TokenizerData data = load_tokenizer_json(dir + "/bpe_" + name + "/tokenizer.json");
  ASSERT_EQ(data.kind, TokenizerKind::kByteBpe);
  EXPECT_EQ(data.pre_tokenizer, name);
  auto tok = Tokenizer::create(data);
  const auto fixture = test::read_json(dir + "/bpe_" + name + ".json");
  const SplitFamily family = split_family_from_name(name);
  for (const auto& c : fixture.at("cases").as_array()) {
    const std::string text = str_of(c.at("text"));
    std::vector<std::string> words;
    for (std::string_view w : split_words(text, family)) words.emplace_back(w);
    std::vector<std::string> expected_words;
    for (const auto& w : c.at("words").as_array()) expected_words.push_back(str_of(w));
    EXPECT_EQ(words, expected_words) << name << " split of '" << text << "'";
    const auto ids = ids_of(c.at("ids"));
    EXPECT_EQ(tok->encode(text), ids) << name << " encode of '" << text << "'";
    EXPECT_EQ(tok->decode(ids), str_of(c.at("decoded"))) << name << " decode of '" << text << "'";
    expect_streaming_matches(*tok, ids, text);
  }
}

// SmolLM (GGUF pre type "smollm"): every number character alone, then the GPT-2 split; words from
// Hugging Face tokenizers (tools/reference/make_smollm_split_fixture.py), including non-ASCII numbers.
TEST(SmollmSplit, MatchesHuggingFaceTokenizers) {
  const auto fixture = test::read_json(test::fixture_dir() + "/smollm_split.json");
  int cases = 0;
  for (const auto& c : fixture.at("cases").as_array()) {
    const std::string text = str_of(c.at("text"));
    std::vector<std::string> words;
    for (std::string_view w : split_words(text, split_family_from_name("smollm"))) words.emplace_back(w);
    std::vector<std::string> expected;
    for (const auto& w : c.at("words").as_array()) expected.push_back(str_of(w));
    EXPECT_EQ(words, expected) << "smollm split of '" << text << "'";
    ++cases;
  }
  EXPECT_GE(cases, 10);
}

TEST_P(ByteLevelBpe, RoundTripsArbitraryBytes) {
  auto tok = Tokenizer::create(load_tokenizer_json(test::fixture_dir() + "/bpe_" + GetParam() + "/tokenizer.json"));
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes += static_cast<char>(i);
  bytes += "\xF0\x9F\x98\x80 cut: \xF0\x9F\x98";  // an emoji, then an unfinished one
  const auto ids = tok->encode(bytes, false, false);
  EXPECT_EQ(tok->decode(ids), bytes);
  expect_streaming_matches(*tok, ids, "all bytes");
}

INSTANTIATE_TEST_SUITE_P(Families, ByteLevelBpe, ::testing::Values("gpt2", "llama3", "qwen2"));

TEST(ByteLevelBpeChat, ChatTemplateTokensAreSingleIds) {
  auto tok = Tokenizer::create(load_tokenizer_json(test::fixture_dir() + "/bpe_qwen2/tokenizer.json"));
  const int32_t start = tok->token_to_id("<|im_start|>");
  ASSERT_GE(start, 0);
  EXPECT_TRUE(tok->is_special(start));
  const auto ids = tok->encode("<|im_start|>user\nhi<|im_end|>");
  EXPECT_EQ(ids.front(), start);
  EXPECT_EQ(ids.back(), tok->token_to_id("<|im_end|>"));
  // Untrusted text: the marker is spelled out byte by byte instead.
  const auto plain = tok->encode("<|im_start|>", true, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), start), 0);
  EXPECT_EQ(tok->decode(plain), "<|im_start|>");
  // A non-special added token decodes as itself.
  const int32_t tool = tok->token_to_id("<tool_call>");
  ASSERT_GE(tool, 0);
  EXPECT_FALSE(tok->is_special(tool));
  EXPECT_EQ(tok->decode({tool}), "<tool_call>");
}

}  // namespace
}  // namespace strata
