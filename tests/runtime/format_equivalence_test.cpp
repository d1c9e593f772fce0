// tests/runtime/format_equivalence_test.cpp: the same random model written as a Hugging Face
// safetensors directory and as GGUF (where llama.cpp's layout permutes q/k rows for adjacent-pair
// RoPE) gives the same logits and the same greedy tokens.
#include <gtest/gtest.h>

#include "launcher/model_session.h"
#include "runtime/formats/model_writer.h"
#include "test_util.h"

namespace strata {
namespace {

class FormatEquivalence : public ::testing::TestWithParam<std::string> {};

TEST_P(FormatEquivalence, SafetensorsAndGgufGiveTheSameLogits) {
  const std::string preset = GetParam();
  std::vector<std::string> paths;
  for (const char* format : {"safetensors", "gguf"}) {
    MakeModelOptions o;
    o.preset = preset;
    o.format = format;
    o.dtype = "f32";
    o.seed = 11;
    o.out = test::temp_dir("format_equivalence_" + preset + "_" + format);
    make_model(o);
    paths.push_back(make_model_output_path(o));
  }
  const std::vector<int32_t> ids = {1, 40, 7, 300, 12, 99, 5, 250, 17};
  std::vector<Tensor> logits;
  std::vector<std::vector<int32_t>> greedy;
  for (const std::string& path : paths) {
    launcher::SessionOptions options;
    options.model_path = path;
    launcher::ModelSession session(options);
    session.prepare(128);
    logits.push_back(session.generator().score(ids));
    GenerationRequest r;
    r.prompt = ids;
    r.max_new_tokens = 16;
    greedy.push_back(session.generator().generate({r})[0].tokens);
  }
  ASSERT_EQ(logits[0].numel(), logits[1].numel());
  EXPECT_LT(test::max_rel_error(logits[1].data<float>(), logits[0].data<float>(), static_cast<size_t>(logits[0].numel())),
            1e-5);
  EXPECT_EQ(greedy[0], greedy[1]);
}

// The MoE presets: GGUF holds llama.cpp's stacked experts, safetensors one tensor per expert.
INSTANTIATE_TEST_SUITE_P(Presets, FormatEquivalence,
                         ::testing::Values("tiny", "qwen2-tiny", "mixtral-tiny", "qwen2-moe-tiny"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

}  // namespace
}  // namespace strata
