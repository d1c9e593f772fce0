// tests/runtime/hf_reference_test.cpp: logits of small random-weight models against Hugging Face
// transformers (fixtures from tools/reference/make_hf_fixtures.py): MHA, GQA with an untied head and
// Llama-3 RoPE scaling, Qwen2 biases, Mistral MQA. f32 throughout, so the bound is tight.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <fstream>
#include <sstream>

#include "launcher/model_session.h"
#include "hf_fixture.h"
#include "test_util.h"

namespace strata {
namespace {

class HfReference : public ::testing::TestWithParam<std::string> {};

TEST_P(HfReference, LogitsOfEveryPositionMatchTransformers) {
  const std::string dir = test::fixture("hf/" + GetParam());
  const test::HfFixture f = test::read_hf_fixture(dir);
  const test::NpyArray expected = test::read_npy(dir + "/logits.npy");
  launcher::SessionOptions options;
  options.model_path = dir;
  launcher::ModelSession session(options);
  session.prepare(256);
  const Tensor logits = session.generator().score(f.ids);
  ASSERT_EQ(logits.dim(0), expected.shape[0]);
  ASSERT_EQ(logits.dim(1), expected.shape[1]);
  const double err = test::max_rel_error(logits.data<float>(), expected.data.data(), expected.data.size());
  EXPECT_LT(err, 1e-4) << GetParam();
}

TEST_P(HfReference, GreedyContinuationMatchesTransformersGenerate) {
  const std::string dir = test::fixture("hf/" + GetParam());
  const test::HfFixture f = test::read_hf_fixture(dir);
  launcher::SessionOptions options;
  options.model_path = dir;
  launcher::ModelSession session(options);
  session.prepare(256);
  GenerationRequest r;
  r.prompt = f.greedy_prompt;
  r.max_new_tokens = static_cast<int64_t>(f.greedy.size());
  const auto out = session.generator().generate({r});
  EXPECT_EQ(out[0].tokens, f.greedy);
}

INSTANTIATE_TEST_SUITE_P(Configs, HfReference,
                         ::testing::Values("llama_mha", "llama_gqa_untied", "qwen2_bias", "mistral_mqa"));

}  // namespace
}  // namespace strata
