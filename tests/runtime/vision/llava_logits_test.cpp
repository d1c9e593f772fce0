// tests/runtime/vision/llava_logits_test.cpp: a whole LLaVA prompt (text, the image file decoded,
// preprocessed and encoded, its features spliced at the expanded placeholder) through the language model
// on the CPU, against transformers' LlavaForConditionalGeneration logits at every position
// (tools/reference/make_vision_fixtures.py): transformers 5 and 4 tensor names.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <fstream>
#include <sstream>

#include "launcher/image_input.h"
#include "launcher/model_session.h"
#include "runtime/error.h"
#include "test_util.h"

namespace strata {
namespace {

std::vector<int32_t> ids_of(const std::string& dir, const char* key) {
  std::ifstream in(dir + "/ids.json");
  std::stringstream s;
  s << in.rdbuf();
  std::vector<int32_t> ids;
  const boost::json::value v = boost::json::parse(s.str());  // kept alive: the loop reads into it
  for (const auto& x : v.at(key).as_array()) ids.push_back(static_cast<int32_t>(x.to_number<int64_t>()));
  return ids;
}

class LlavaLogits : public ::testing::TestWithParam<std::string> {};

TEST_P(LlavaLogits, EveryPositionMatchesTransformers) {
  const std::string dir = test::fixture("vision/" + GetParam());
  const test::NpyArray expected = test::read_npy(dir + "/logits.npy");
  launcher::SessionOptions options;
  options.model_path = dir;
  launcher::ModelSession session(options);
  // The prompt as a user writes it: one placeholder, expanded to one token per image feature.
  const ImagePrompt prompt =
      launcher::image_prompt(options, session, ids_of(dir, "prompt_ids"), {dir + "/image.png"});
  EXPECT_EQ(prompt.ids, ids_of(dir, "ids"));
  session.prepare(256);
  const Tensor logits = session.generator().score(prompt.ids, &prompt.splice);
  ASSERT_EQ(logits.dim(0), expected.shape[0]);
  ASSERT_EQ(logits.dim(1), expected.shape[1]);
  const double err = test::max_rel_error(logits.data<float>(), expected.data.data(), expected.data.size());
  std::printf("%s: %lld positions, max relative error %.3g\n", GetParam().c_str(),
              static_cast<long long>(expected.shape[0]), err);
  EXPECT_LT(err, 1e-4);

  // Without the image the placeholder tokens' own embeddings are used: the positions from the first
  // placeholder on must differ, so the splice is what matched.
  const Tensor plain = session.generator().score(prompt.ids);
  const int64_t V = logits.dim(1), first = prompt.splice.positions.front();
  EXPECT_GT(test::max_rel_error(plain.data<float>() + first * V, expected.data.data() + first * V, V), 1e-2);
  EXPECT_LT(test::max_rel_error(plain.data<float>(), expected.data.data(), first * V), 1e-4);
}

TEST_P(LlavaLogits, GreedyContinuationMatchesTransformersGenerate) {
  const std::string dir = test::fixture("vision/" + GetParam());
  launcher::SessionOptions options;
  options.model_path = dir;
  launcher::ModelSession session(options);
  const ImagePrompt prompt =
      launcher::image_prompt(options, session, ids_of(dir, "prompt_ids"), {dir + "/image.png"});
  session.prepare(256);
  GenerationRequest r;
  r.prompt = prompt.ids;
  r.max_new_tokens = 8;
  const auto out = session.generator().generate({r}, {}, &prompt.splice);
  EXPECT_EQ(out[0].tokens, ids_of(dir, "greedy_continuation"));
  // The same prompt without its image afterwards: the prefix cache must not hand back the image's KV.
  const auto text_only = session.generator().generate({r});
  const Tensor plain = session.generator().score(prompt.ids);
  const int64_t V = plain.dim(1), last = plain.dim(0) - 1;
  const float* row = plain.data<float>() + last * V;
  EXPECT_EQ(text_only[0].tokens.front(), static_cast<int32_t>(std::max_element(row, row + V) - row));
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, LlavaLogits, ::testing::Values("llava_t5", "llava_t4"));

TEST(LlavaPrompt, PlaceholderCountsMustMatchTheImages) {
  const std::string dir = test::fixture("vision/llava_t5");
  launcher::SessionOptions options;
  options.model_path = dir;
  launcher::ModelSession session(options);
  std::vector<int32_t> two = ids_of(dir, "prompt_ids");
  two.push_back(159);
  EXPECT_THROW(launcher::image_prompt(options, session, two, {dir + "/image.png"}), Error);
  EXPECT_THROW(launcher::image_prompt(options, session, {1, 5, 6}, {dir + "/image.png"}), Error);
  // A text-only checkpoint is refused with a clear message.
  launcher::SessionOptions text_only = options;
  text_only.model_path = test::fixture("hf/llama_mha");
  EXPECT_THROW(launcher::image_prompt(text_only, session, {1, 2}, {dir + "/image.png"}), Error);
}

}  // namespace
}  // namespace strata
