// tests/runtime/quantized_stories_test.cpp: the trained stories260K (../shared/models, llama.cpp's own f32
// GGUF) quantized to each 32-element GGUF type the way llama-quantize leaves a file (every matrix whose rows
// split into whole blocks; ffn_down's 172-element rows and the norms stay f32), then run end to end: the
// embedding lookups read the quantized token_embd, the LM head the quantized output.weight. Checked against references
// nobody here wrote: Hugging Face's f32 logits teacher-forced on llama2.c run.c's greedy story. (The
// K-quants need 256-element rows; this model's are 64.)
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "launcher/model_session.h"
#include "runtime/formats/block_quant.h"
#include "runtime/formats/gguf.h"
#include "runtime/formats/mapped_file.h"
#include "test_util.h"

namespace strata {
namespace {

using test::read_ids;

// Rewrites the f32 GGUF at `src` with every 2-D tensor whose rows hold whole blocks quantized to `dt`.
int quantize_gguf(const std::string& src, const std::string& dst, DType dt) {
  MappedFile file(src);
  const GgufFile g = parse_gguf_buffer(file.data(), file.size(), src);
  std::vector<std::pair<std::string, Tensor>> tensors;
  int quantized = 0;
  for (const auto& info : g.tensors) {
    EXPECT_EQ(info.dtype, DType::kF32) << info.name;
    const bool fits = info.shape.size() == 2 && info.shape[1] % dtype_block_elems(dt) == 0;
    Tensor t = Tensor::empty(info.shape, fits ? dt : DType::kF32);
    if (fits) {
      quantize_row(dt, reinterpret_cast<const float*>(file.data() + info.offset), t.raw(), t.numel());
      ++quantized;
    } else {
      std::memcpy(t.raw(), file.data() + info.offset, info.nbytes);
    }
    tensors.emplace_back(info.name, std::move(t));
  }
  write_gguf(dst, g.metadata, tensors);
  return quantized;
}

struct Case {
  DType dtype;
  double min_agreement;  // teacher-forced argmax == run.c's next token, share of the 256 positions
};

class QuantizedStories : public ::testing::TestWithParam<Case> {};

// With f32 weights every position agrees (run.c's story is the f32 greedy path). Quantized weights move the
// logits by about the weights' relative error (8 bits: ~0.5%, 4 bits: ~8%); where run.c's top-2 margin is
// smaller the argmax may flip. The floors are what a quantizer of that many bits must at least keep on
// this model (measured on this build: q8_0 254/256, q5_0 and q5_1 246, q4_1 233, iq4_nl 226, q4_0 223),
// with about 10 positions of room; a broken kernel or layout lands near chance (1/512). The largest logit
// error is printed, not bounded: on 64-wide rows a 4-bit weight error does not average out (q4_0: 8.8 of 22).
TEST_P(QuantizedStories, TeacherForcedArgmaxFollowsTheF32Story) {
  const Case c = GetParam();
  const std::string model = test::shared_model("stories260K/stories260K.gguf");
  const std::string golden_path = test::shared_model("stories260K/run_c_greedy_ids.txt");
  const std::string npy = test::shared_model("stories260K-hf/golden_logits_hf_fp32.npy");
  if (model.empty() || golden_path.empty() || npy.empty()) GTEST_SKIP() << "../shared/models is absent";
  const std::string path = test::temp_dir("quantized_stories") + "/stories260K-" + dtype_name(c.dtype) + ".gguf";
  EXPECT_EQ(quantize_gguf(model, path, c.dtype), 2 + 5 * 6);  // token_embd, output + q, k, v, o, gate, up per layer

  std::vector<int32_t> ids = {1};
  for (int32_t id : read_ids(golden_path)) ids.push_back(id);
  launcher::SessionOptions options;
  options.model_path = path;
  launcher::ModelSession session(options);
  session.prepare(300);
  const Tensor logits = session.generator().score(ids);
  const test::NpyArray hf = test::read_npy(npy);
  const int64_t vocab = hf.shape[1], positions = static_cast<int64_t>(ids.size()) - 1;
  ASSERT_EQ(logits.numel(), static_cast<int64_t>(hf.data.size()));
  int agree = 0;
  double worst = 0, scale = 0;
  for (int64_t p = 0; p < positions; ++p) {
    const float* row = logits.data<float>() + p * vocab;
    agree += std::max_element(row, row + vocab) - row == ids[static_cast<size_t>(p + 1)];
    for (int64_t v = 0; v < vocab; ++v) {
      worst = std::max(worst, std::abs(double{row[v]} - hf.data[static_cast<size_t>(p * vocab + v)]));
      scale = std::max(scale, std::abs(double{hf.data[static_cast<size_t>(p * vocab + v)]}));
    }
  }
  const double agreement = static_cast<double>(agree) / static_cast<double>(positions);
  RecordProperty("agreement", std::to_string(agreement));
  RecordProperty("max_logit_error", std::to_string(worst));
  std::printf("%s: teacher-forced argmax agrees with run.c on %d of %lld positions; max |logit - HF f32| %.3f "
              "(logits up to %.1f)\n",
              dtype_name(c.dtype), agree, static_cast<long long>(positions), worst, scale);
  EXPECT_GE(agreement, c.min_agreement) << dtype_name(c.dtype);

  // And free-running greedy decoding still tells run.c's story at the start.
  GenerationRequest r;
  r.prompt = {1};
  r.max_new_tokens = 24;
  const auto out = session.generator().generate({r});
  std::vector<int32_t> with_bos = {1};
  with_bos.insert(with_bos.end(), out[0].tokens.begin(), out[0].tokens.end());
  const std::string text = session.tokenizer().decode(with_bos);
  EXPECT_EQ(text.rfind("Once upon a time", 0), 0u) << dtype_name(c.dtype) << ": " << text;
}

INSTANTIATE_TEST_SUITE_P(Gguf, QuantizedStories,
                         ::testing::Values(Case{DType::kQ8_0, 0.97}, Case{DType::kQ5_1, 0.93},
                                           Case{DType::kQ5_0, 0.93}, Case{DType::kQ4_1, 0.83},
                                           Case{DType::kQ4_0, 0.83}, Case{DType::kIQ4_NL, 0.83}),
                         [](const ::testing::TestParamInfo<Case>& p) { return std::string(dtype_name(p.param.dtype)); });

}  // namespace
}  // namespace strata
