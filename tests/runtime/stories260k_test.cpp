// tests/runtime/stories260k_test.cpp: the trained stories260K checkpoint (../shared/models) in its
// three formats against llama2.c run.c's greedy ids and Hugging Face's teacher-forced logits.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "launcher/model_session.h"
#include "test_util.h"

namespace strata {
namespace {

using test::read_ids;

// run.c's 256 greedy ids after BOS, and the near-tie at generated index 185 (margin 0.004 in the
// README): an f32 implementation should follow all of them, but only up to that index is the
// outcome insensitive to summation order.
constexpr size_t kStableSteps = 185;

class Stories260K : public ::testing::TestWithParam<std::string> {};

TEST_P(Stories260K, GreedyContinuationFollowsRunC) {
  const std::string model = test::shared_model(GetParam());
  const std::string golden_path = test::shared_model("stories260K/run_c_greedy_ids.txt");
  if (model.empty() || golden_path.empty()) GTEST_SKIP() << "../shared/models is absent; stories260K tests skipped";
  const std::vector<int32_t> golden = read_ids(golden_path);
  ASSERT_EQ(golden.size(), 256u);
  launcher::SessionOptions options;
  options.model_path = model;
  launcher::ModelSession session(options);
  session.prepare(300);
  GenerationRequest r;
  r.prompt = {1};
  r.max_new_tokens = 256;
  const auto out = session.generator().generate({r});
  ASSERT_EQ(out[0].tokens.size(), 256u);
  const std::vector<int32_t> head(out[0].tokens.begin(), out[0].tokens.begin() + kStableSteps);
  EXPECT_EQ(head, std::vector<int32_t>(golden.begin(), golden.begin() + kStableSteps));
  size_t same = 0;
  while (same < 256 && out[0].tokens[same] == golden[same]) ++same;
  RecordProperty("matching_prefix", static_cast<int>(same));
  // The decoded story is run.c's text: coherent English, not noise.
  if (session.has_tokenizer()) {
    std::vector<int32_t> with_bos = {1};
    with_bos.insert(with_bos.end(), out[0].tokens.begin(), out[0].tokens.end());
    const std::string text = session.tokenizer().decode(with_bos);
    EXPECT_EQ(text.rfind("Once upon a time", 0), 0u) << text.substr(0, 80);
    EXPECT_NE(text.find("Lily"), std::string::npos);
  }
}

TEST_P(Stories260K, TeacherForcedLogitsMatchTransformers) {
  const std::string model = test::shared_model(GetParam());
  const std::string npy = test::shared_model("stories260K-hf/golden_logits_hf_fp32.npy");
  const std::string golden_path = test::shared_model("stories260K/run_c_greedy_ids.txt");
  if (model.empty() || npy.empty()) GTEST_SKIP() << "../shared/models is absent; stories260K tests skipped";
  std::vector<int32_t> ids = {1};
  for (int32_t id : read_ids(golden_path)) ids.push_back(id);
  const test::NpyArray expected = test::read_npy(npy);
  ASSERT_EQ(expected.shape[0], static_cast<int64_t>(ids.size()));
  launcher::SessionOptions options;
  options.model_path = model;
  launcher::ModelSession session(options);
  session.prepare(300);
  const Tensor logits = session.generator().score(ids);
  ASSERT_EQ(logits.numel(), static_cast<int64_t>(expected.data.size()));
  EXPECT_LT(test::max_rel_error(logits.data<float>(), expected.data.data(), expected.data.size()), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Formats, Stories260K,
                         ::testing::Values("stories260K/stories260K.bin", "stories260K/stories260K.gguf",
                                           "stories260K-hf"),
                         [](const auto& info) {
                           const std::string& p = info.param;
                           return p.find(".bin") != std::string::npos    ? std::string("llama2c")
                                  : p.find(".gguf") != std::string::npos ? std::string("gguf")
                                                                         : std::string("safetensors");
                         });

}  // namespace
}  // namespace strata
