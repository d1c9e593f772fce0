// tests/runtime/tokenizer/tokenizer_files_test.cpp: tokenizer file readers on malformed input (clear
// kFormat errors, never a crash), write_tokenizer_json round trips, and the synthetic vocabulary
// (checked against Hugging Face `tokenizers` loading what we wrote, via fixtures/tokenizer/synthetic.json).
#include <gtest/gtest.h>

#include <chrono>
#include <set>

#include "runtime/error.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/tokenizer_files.h"
#include "tests/runtime/tokenizer/tokenizer_fixture.h"

namespace strata {
namespace {

std::string write_temp(const std::string& name, const std::string& bytes) {
  const std::string path = test::test_tmp() + "/" + name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

// Runs `fn`, expects a strata::Error of kind kFormat whose message holds every one of `parts`.
template <typename Fn>
void expect_format_error(Fn&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kFormat) << e.what();
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(TokenizerFiles, TruncatedSentencePieceModelsFailCleanly) {
  const std::string path = test::shared_models() + "/stories260K/tok512.model";
  STRATA_REQUIRE_FILE(path);
  const std::string bytes = test::read_text(path);
  // Every prefix that cuts a field short must throw kFormat; the rest may parse (fewer pieces).
  int errors = 0;
  for (size_t n = 0; n < bytes.size(); n += 7) {
    try {
      const TokenizerData d = parse_sentencepiece_model(std::string_view(bytes).substr(0, n), "cut.model");
      Tokenizer::create(d);
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kFormat) << e.what();
      EXPECT_NE(std::string(e.what()).find("cut.model"), std::string::npos) << e.what();
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
  expect_format_error([&] { load_sentencepiece_model(write_temp("cut.model", bytes.substr(0, 1000))); },
                      {"cut.model", "runs past the end"});
  expect_format_error([&] { parse_sentencepiece_model("\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "x.model"); },
                      {"x.model", "varint"});
}

TEST(TokenizerFiles, UnigramModelIsRejected) {
  // One piece, trainer_spec without model_type: sentencepiece's default is UNIGRAM.
  const std::string proto = std::string("\x0a\x05\x0a\x03\x61\x62\x63", 7) + std::string("\x12\x00", 2);
  expect_format_error([&] { parse_sentencepiece_model(proto, "uni.model"); }, {"uni.model", "UNIGRAM"});
}

TEST(TokenizerFiles, BadTokenizerJson) {
  expect_format_error([] { parse_tokenizer_json("{\"model\": {", "bad.json"); }, {"bad.json", "not valid JSON"});
  expect_format_error([] { parse_tokenizer_json("[1, 2]", "arr.json"); }, {"arr.json", "not a JSON object"});
  expect_format_error([] { parse_tokenizer_json("{}", "empty.json"); }, {"empty.json", "'model'"});
  expect_format_error([] { parse_tokenizer_json(R"({"model": {"type": "Unigram", "vocab": []}})", "u.json"); },
                      {"u.json", "only BPE"});
  expect_format_error(
      [] { parse_tokenizer_json(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 2}, "merges": []},
                                   "pre_tokenizer": {"type": "ByteLevel"}})", "hole.json"); },
      {"hole.json", "token id 1 has no piece"});
  expect_format_error(
      [] { parse_tokenizer_json(R"({"model": {"type": "BPE", "vocab": {"a": -4}, "merges": []}})", "neg.json"); },
      {"neg.json", "'a'"});
  expect_format_error(
      [] { parse_tokenizer_json(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [7]},
                                   "pre_tokenizer": {"type": "ByteLevel"}})", "m.json"); },
      {"m.json", "merges entry 0"});
  expect_format_error(
      [] { parse_tokenizer_json(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                                   "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\w+"}}})", "re.json"); },
      {"re.json", "unsupported Split pre-tokenizer pattern"});
  const std::string hf = test::shared_models() + "/stories260K-hf/tokenizer.json";
  STRATA_REQUIRE_FILE(hf);
  expect_format_error([&] { load_tokenizer_json(hf, write_temp("cfg.json", R"({"bos_token": "<nope>"})")); },
                      {"cfg.json", "bos_token '<nope>'"});
  try {
    load_tokenizer_json(test::test_tmp() + "/does-not-exist.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo);
    EXPECT_NE(std::string(e.what()).find("does-not-exist.json"), std::string::npos);
  }
}

TEST(TokenizerFiles, TruncatedLlama2cTokenizer) {
  const std::string path = test::shared_models() + "/stories260K/tok512.bin";
  STRATA_REQUIRE_FILE(path);
  const std::string bytes = test::read_text(path);
  expect_format_error([&] { load_llama2c_tokenizer(write_temp("cut.bin", bytes.substr(0, 5000)), 512); },
                      {"cut.bin", "truncated", "of token"});
  expect_format_error([&] { load_llama2c_tokenizer(write_temp("tiny.bin", bytes.substr(0, 3000)), 512); },
                      {"tiny.bin", "expected 512 tokens"});
  expect_format_error([&] { load_llama2c_tokenizer(path, 500); }, {"tok512.bin", "bytes left after 500 tokens"});
  expect_format_error([&] { load_llama2c_tokenizer(path, 100000); }, {"tok512.bin", "expected 100000 tokens"});
  EXPECT_EQ(load_llama2c_tokenizer(path, 0).tokens.size(), 512u);  // 0: as many as the file holds
  std::string long_piece = bytes;
  const int32_t huge = 1000;
  std::memcpy(long_piece.data() + 8, &huge, 4);  // token 0's length
  expect_format_error([&] { parse_llama2c_tokenizer(long_piece, 512, "len.bin"); }, {"len.bin", "token 0 has length 1000"});
  for (size_t n = 0; n < bytes.size(); n += 13)
    EXPECT_THROW(parse_llama2c_tokenizer(std::string_view(bytes).substr(0, n), 512, "p.bin"), Error);
}

TEST(SyntheticTokenizer, ExactSizeUniqueDeterministic) {
  for (int64_t n : {259, 300, 512, 4096, 32000}) {
    const auto start = std::chrono::steady_clock::now();
    const TokenizerData data = make_synthetic_tokenizer(n);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::cout << "make_synthetic_tokenizer(" << n << "): " << ms << " ms\n";
    ASSERT_EQ(static_cast<int64_t>(data.tokens.size()), n);
    EXPECT_EQ(std::set<std::string>(data.tokens.begin(), data.tokens.end()).size(), data.tokens.size());
    EXPECT_EQ(data.tokens[0], "<unk>");
    EXPECT_EQ(data.tokens[1], "<s>");
    EXPECT_EQ(data.tokens[3], "<0x00>");
    EXPECT_EQ(data.tokens[258], "<0xFF>");
    for (size_t id = 260; id < data.scores.size(); ++id) ASSERT_LT(data.scores[id], data.scores[id - 1]);
    EXPECT_EQ(make_synthetic_tokenizer(n).tokens, data.tokens);
    if (n < 512) continue;  // smaller ones lack U+2581 and ASCII pieces: all byte fallback
    auto tok = Tokenizer::create(data);
    const std::string text = "The children walk to the harbor at 7:45, caf\xC3\xA9 \xF0\x9F\x98\x80!";
    EXPECT_EQ(tok->decode(tok->encode(text)), text);
  }
  EXPECT_THROW(make_synthetic_tokenizer(100), Error);
}

// write_tokenizer_json -> load_tokenizer_json gives a tokenizer that encodes identically; the files
// are left in $STRATA_TEST_TMP/tokenizer for make_tokenizer_fixtures.py --synthetic-dir.
TEST(SyntheticTokenizer, TokenizerJsonRoundTripAndHuggingFace) {
  const auto stories = test::read_json(test::fixture_dir() + "/stories260K.json");
  const std::string fixture_path = test::fixture_dir() + "/synthetic.json";
  const bool have_hf = std::filesystem::exists(fixture_path);
  const auto hf = have_hf ? test::read_json(fixture_path) : boost::json::value();
  for (int64_t n : {512, 32000}) {
    const TokenizerData data = make_synthetic_tokenizer(n);
    const std::string dir = test::test_tmp() + "/synthetic_" + std::to_string(n);
    std::filesystem::create_directories(dir);
    write_tokenizer_json(data, dir + "/tokenizer.json");
    auto ours = Tokenizer::create(data);
    auto reloaded = Tokenizer::create(load_tokenizer_json(dir + "/tokenizer.json"));
    EXPECT_EQ(reloaded->vocab_size(), n);
    const auto& cases = stories.at("cases").as_array();
    for (size_t i = 0; i < cases.size(); ++i) {
      const std::string text = test::str_of(cases[i].at("text"));
      const auto ids = ours->encode(text);
      EXPECT_EQ(reloaded->encode(text), ids) << n << " '" << text << "'";
      EXPECT_EQ(reloaded->decode(ids), ours->decode(ids));
      if (have_hf) {
        const auto& expected = hf.at(std::to_string(n)).as_array()[i];
        EXPECT_EQ(ids, test::ids_of(expected.at("ids"))) << "HF tokenizers differs on '" << text << "'";
        EXPECT_EQ(ours->decode(ids), test::str_of(expected.at("decoded"))) << text;
      }
    }
  }
  if (!have_hf) std::cout << "no " << fixture_path << ": HF comparison of the synthetic tokenizer skipped\n";
}

}  // namespace
}  // namespace strata
