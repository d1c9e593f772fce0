// tests/runtime/tokenizer/tokenizer_test.cpp: unit checks of the tokenizer pieces with hand-derivable
// answers: UTF-8 handling, streaming of split characters, the leading-space rules, BOS/EOS, and the
// encode time of a 100 KB text (printed, not asserted).
#include <gtest/gtest.h>

#include <chrono>

#include "runtime/error.h"
#include "runtime/tokenizer/pretokenizer.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/tokenizer_files.h"
#include "runtime/tokenizer/unicode.h"
#include "tests/runtime/tokenizer/tokenizer_fixture.h"

namespace strata {
namespace {

TEST(Unicode, DecodeIsLenient) {
  size_t n = 0;
  EXPECT_EQ(unicode::decode("\xC3\xA9", 0, &n), 0xE9u);
  EXPECT_EQ(n, 2u);
  EXPECT_EQ(unicode::decode("\xF0\x9F\x98\x80", 0, &n), 0x1F600u);
  EXPECT_EQ(n, 4u);
  EXPECT_EQ(unicode::decode("\xC0\x80", 0, &n), unicode::kInvalid);  // overlong
  EXPECT_EQ(n, 1u);
  EXPECT_EQ(unicode::decode("\xED\xA0\x80", 0, &n), unicode::kInvalid);  // surrogate
  EXPECT_EQ(unicode::decode("\xF0\x9F", 0, &n), unicode::kInvalid);  // truncated
  EXPECT_EQ(n, 1u);
}

TEST(Unicode, Classes) {
  EXPECT_TRUE(unicode::is_letter(U'é'));
  EXPECT_TRUE(unicode::is_letter(U'Ж'));
  EXPECT_TRUE(unicode::is_letter(U'λ'));
  EXPECT_TRUE(unicode::is_letter(U'日'));
  EXPECT_TRUE(unicode::is_letter(U'ア'));
  EXPECT_FALSE(unicode::is_letter(U'1'));
  EXPECT_FALSE(unicode::is_letter(0x0301));  // combining acute: a mark, not a letter
  EXPECT_TRUE(unicode::is_number(U'٣'));
  EXPECT_TRUE(unicode::is_number(U'Ⅻ'));
  EXPECT_TRUE(unicode::is_number(U'²'));
  EXPECT_FALSE(unicode::is_number(U'x'));
  EXPECT_TRUE(unicode::is_whitespace(0x3000));
  EXPECT_TRUE(unicode::is_whitespace(0xA0));
  EXPECT_FALSE(unicode::is_whitespace(0x200B));  // zero width space is not White_Space
}

TEST(Unicode, CompletePrefix) {
  EXPECT_EQ(unicode::complete_prefix_length("ab"), 2u);
  EXPECT_EQ(unicode::complete_prefix_length("a\xF0\x9F\x98"), 1u);
  EXPECT_EQ(unicode::complete_prefix_length("a\xF0\x9F\x98\x80"), 5u);
  EXPECT_EQ(unicode::complete_prefix_length("a\xC3"), 1u);
  EXPECT_EQ(unicode::complete_prefix_length("a\x80"), 2u);      // stray continuation: give it up now
  EXPECT_EQ(unicode::complete_prefix_length("a\xE0\x41"), 3u);  // broken sequence: nothing to wait for
  EXPECT_EQ(unicode::sanitize("a\xF0\x9F"), "a\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(PreTokenizer, HandDerivedSplits) {
  auto split = [](std::string_view text, SplitFamily f) {
    std::vector<std::string> out;
    for (auto w : split_words(text, f)) out.emplace_back(w);
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(split("Hello  world's 12345!!", SplitFamily::kGpt2), (V{"Hello", " ", " world", "'s", " 12345", "!!"}));
  EXPECT_EQ(split("Hello  world's 12345!!", SplitFamily::kLlama3), (V{"Hello", " ", " world", "'s", " ", "123", "45", "!!"}));
  EXPECT_EQ(split("12345", SplitFamily::kQwen2), (V{"1", "2", "3", "4", "5"}));
  EXPECT_EQ(split("a\n\n  b", SplitFamily::kLlama3), (V{"a", "\n\n", " ", " b"}));
  EXPECT_EQ(split("I'M", SplitFamily::kLlama3), (V{"I", "'M"}));
  EXPECT_EQ(split("I'M", SplitFamily::kGpt2), (V{"I", "'", "M"}));
  EXPECT_THROW(split_family_from_name("deepseek"), Error);
}

TEST(Tokenizer, BosEosAndValidation) {
  TokenizerData data = make_synthetic_tokenizer(512);
  data.add_eos = true;
  auto tok = Tokenizer::create(data);
  const auto ids = tok->encode("the harbor");
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  EXPECT_EQ(tok->encode("the harbor", false), std::vector<int32_t>(ids.begin() + 1, ids.end() - 1));
  EXPECT_EQ(tok->decode(ids), "the harbor");
  EXPECT_EQ(tok->decode({999999, -5}), "");  // out of range ids decode to nothing
  EXPECT_THROW(tok->id_to_piece(512), Error);
  data.bos_id = 600;
  EXPECT_THROW(Tokenizer::create(data), Error);
  data = make_synthetic_tokenizer(512);
  data.scores.pop_back();
  EXPECT_THROW(Tokenizer::create(data), Error);
}

TEST(Tokenizer, LeadingSpaceRules) {
  TokenizerData data = make_synthetic_tokenizer(512);
  auto hf_style = Tokenizer::create(data);
  const int32_t the = hf_style->token_to_id("\xE2\x96\x81the");
  ASSERT_GE(the, 0);
  // Hugging Face / sentencepiece: the first word loses its space, wherever the sequence starts.
  EXPECT_EQ(hf_style->decode_token(-1, the), "the");
  EXPECT_EQ(hf_style->decode_token(1, the), "the");
  EXPECT_EQ(hf_style->decode_token(the, the), " the");
  EXPECT_EQ(hf_style->decode({the, the}), "the the");
  // llama2.c run.c: only right after BOS.
  data.llama2c_decode = true;
  auto llama2c = Tokenizer::create(data);
  EXPECT_EQ(llama2c->decode_token(-1, the), " the");
  EXPECT_EQ(llama2c->decode_token(1, the), "the");
  EXPECT_EQ(llama2c->decode({1, the, the}), "the the");
}

TEST(TokenStreamDecoder, HoldsBackSplitCharacters) {
  auto tok = Tokenizer::create(make_synthetic_tokenizer(512));
  const auto ids = tok->encode("\xF0\x9F\x98\x80 \xE6\x97\xA5", false);  // emoji and a CJK char: byte fallback
  TokenStreamDecoder stream(*tok);
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(stream.push(id));
  EXPECT_EQ(pieces[0], "");  // first byte of the emoji waits
  std::string all;
  for (const auto& p : pieces) all += p;
  EXPECT_EQ(all + stream.flush(), tok->decode(ids));
  EXPECT_EQ(all, "\xF0\x9F\x98\x80 \xE6\x97\xA5");
  // A sequence cut off for good comes out at flush().
  TokenStreamDecoder cut(*tok);
  EXPECT_EQ(cut.push(tok->token_to_id("<0xF0>")), "");
  EXPECT_EQ(cut.pending(), "\xF0");
  EXPECT_EQ(cut.flush(), "\xF0");
}

TEST(Tokenizer, EncodesLongTextQuickly) {
  // ~100 KB with long unbroken runs, the worst case for naive merge loops.
  std::string text;
  for (int i = 0; text.size() < 100000; ++i) {
    text += "The old harbor town wakes before the sun, caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC " + std::to_string(i) + "\n";
    if (i % 50 == 0) text += std::string(2000, 'a') + std::string(1000, ' ');
  }
  auto sp = Tokenizer::create(make_synthetic_tokenizer(32000));
  const std::string dir = test::fixture_dir();
  auto bpe = Tokenizer::create(load_tokenizer_json(dir + "/bpe_llama3/tokenizer.json"));
  for (const Tokenizer* tok : {sp.get(), bpe.get()}) {
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tok->encode(text, false);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::cout << (tok == sp.get() ? "sentencepiece" : "byte-level") << ": " << text.size() << " bytes -> "
              << ids.size() << " tokens in " << ms << " ms\n";
    EXPECT_EQ(tok->decode(ids), text);
  }
}

}  // namespace
}  // namespace strata
